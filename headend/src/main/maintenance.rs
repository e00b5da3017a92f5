//! The headend's maintenance commands (`headend user|audit|backup|restore`):
//! each opens the database, does one thing and exits. Part of the binary
//! (`main.rs` parses the command line).
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::{AuditCmd, Cmd, UserCmd};

fn read_password(file: Option<&PathBuf>) -> Result<String> {
    let text = match file {
        Some(f) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        None => {
            eprintln!("password (one line on stdin):");
            let mut s = String::new();
            std::io::stdin()
                .read_line(&mut s)
                .context("reading stdin")?;
            s
        }
    };
    Ok(text.lines().next().unwrap_or("").to_string())
}

pub async fn user_cmd(cmd: UserCmd, url: &str) -> Result<()> {
    use headend::services::admin;
    let db = headend::store::Db::connect(url, 2).await?;
    let guard = headend::services::access::Guard::default();
    let refusal = |e: headend::services::ServiceError| anyhow::anyhow!("{e}");
    // the command line runs as root on the headend's host: it grants anything
    let root = headend::domain::Grant::root();
    let disable = matches!(&cmd, UserCmd::Disable { .. });
    match cmd {
        UserCmd::Add {
            name,
            role,
            sites,
            password_file,
        } => {
            let password = read_password(password_file.as_ref())?;
            let u = admin::add_user(
                &db,
                &guard,
                &root,
                admin::NewUser {
                    user: name,
                    role,
                    password,
                    sites,
                },
            )
            .await
            .map_err(refusal)?;
            println!("added user {} ({}, sites {})", u.user_id, u.role, u.scope);
        }
        UserCmd::List => {
            let mut after = String::new();
            println!("{:<32} {:<11} {:<9} sites", "user", "role", "state");
            loop {
                let page = db.users().list(&after, 500).await?;
                for u in &page {
                    let state = if u.disabled_ms.is_some() {
                        "disabled"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<32} {:<11} {:<9} {}",
                        u.user_id,
                        u.role.as_str(),
                        state,
                        u.scope
                    );
                }
                match page.last() {
                    Some(u) if page.len() == 500 => after = u.user_id.clone(),
                    _ => break,
                }
            }
        }
        UserCmd::Disable { name } | UserCmd::Enable { name } => {
            let disabled = disable;
            let patch = admin::UserPatch {
                role: None,
                sites: None,
                disabled: Some(disabled),
            };
            admin::update_user(&db, &root, &name, patch)
                .await
                .map_err(refusal)?;
            println!(
                "{} {name}{}",
                if disabled { "disabled" } else { "enabled" },
                if disabled {
                    "; their sessions ended"
                } else {
                    ""
                }
            );
        }
        UserCmd::ResetPassword {
            name,
            password_file,
        } => {
            let password = read_password(password_file.as_ref())?;
            admin::reset_password(&db, &guard, &root, &name, password)
                .await
                .map_err(refusal)?;
            println!("password of {name} set; their sessions ended");
        }
        UserCmd::Unlock { name } => {
            let n = db.login_locks().unlock(&name).await?;
            println!("login locks of {name} lifted ({n} network(s) had failures)");
        }
    }
    Ok(())
}

pub async fn audit_cmd(cmd: AuditCmd, url: &str) -> Result<std::process::ExitCode> {
    let db = headend::store::Db::connect(url, 2).await?;
    match cmd {
        AuditCmd::Verify => verify_chain(&db).await,
    }
}

/// Walks the audit trail's hash chain and says what it found: exit 0
/// intact, 1 tampered (`headend audit verify`, and after a restore).
async fn verify_chain(db: &headend::store::Db) -> Result<std::process::ExitCode> {
    match db.audit().verify(1000).await? {
        Ok(n) => {
            println!("audit trail intact: {n} entries, hash chain verified");
            Ok(std::process::ExitCode::SUCCESS)
        }
        Err(b) => {
            println!("audit trail TAMPERED: {b}");
            Ok(std::process::ExitCode::FAILURE)
        }
    }
}

/// `headend backup` and `headend restore`. Exit 2: refused (nothing
/// changed); 1: restored, but its audit chain does not verify.
pub async fn backup_cmd(cmd: Cmd) -> Result<std::process::ExitCode> {
    use headend::store::backup;
    use std::process::ExitCode;
    match cmd {
        Cmd::Backup {
            to,
            to_dir,
            keep,
            database_url,
        } => {
            let t0 = std::time::Instant::now();
            let now = headend::wallclock::now_ms();
            let r = tokio::task::spawn_blocking(move || {
                let to = match (to, &to_dir) {
                    (Some(to), _) => to,
                    (None, Some(dir)) => dir.join(backup::scheduled_name(now)?),
                    (None, None) => {
                        return Err(headend::Error::Config(
                            "backup: --to FILE or --to-dir DIR".into(),
                        ));
                    }
                };
                let s = backup::backup(&database_url, &to)?;
                // the new one is whole: only now are older ones deleted
                let pruned = match (&to_dir, keep) {
                    (Some(dir), Some(n)) => backup::prune(dir, n as usize)?,
                    _ => Vec::new(),
                };
                Ok((s, to, pruned))
            })
            .await?;
            match r {
                Ok((s, to, pruned)) => {
                    println!(
                        "backup written to {} in {} ms: {s}",
                        to.display(),
                        t0.elapsed().as_millis()
                    );
                    for p in pruned {
                        println!("deleted {} (beyond --keep)", p.display());
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::from(2))
                }
            }
        }
        Cmd::Restore {
            from,
            replace,
            database_url,
        } => {
            let url = database_url.clone();
            let now = headend::wallclock::now_ms();
            let r = tokio::task::spawn_blocking(move || backup::restore(&from, &url, replace, now))
                .await?;
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(2));
                }
            };
            if let Some(k) = &r.kept {
                println!("the database it replaces is kept as {}", k.display());
            }
            println!("restored {}: {}", r.path.display(), r.summary);
            // this build's migrations, then the audit chain
            let db = headend::store::Db::connect(&database_url, 2).await?;
            verify_chain(&db).await
        }
        _ => Ok(ExitCode::from(2)),
    }
}

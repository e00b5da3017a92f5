//! Issue 36: `headend backup` copies a running headend's SQLite database
//! while an agent streams into it; `headend restore` puts the copy in
//! place for a new headend. Every reading committed before the backup
//! started, the command and the load made before it, and every audit
//! entry are in the restored database; `headend audit verify` passes on
//! it; the new headend takes the same agent (same certificate, same log)
//! and its readings flow again. A restore never replaces a database
//! unasked.
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::*;
use serde_json::json;

/// Runs the headend binary with `args`; its exit code and its output.
fn headend_cli(args: &[&str]) -> Result<(i32, String)> {
    let out = Command::new(bin("headend")).args(args).output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.code().unwrap_or(-1), text))
}

async fn count(db: &headend::store::Db, table: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(db.pool())
            .await?,
    )
}

/// A headend under ingest: the agent of `b` streaming, some readings
/// stored, and a load (its ETA is a command to the site; an audit entry).
async fn under_ingest(b: &Bench, reference: &str) -> Result<edge_agent::Agent> {
    b.sim.set_frozen(false);
    let agent = b.agent(&b.agent_yaml(b.he.grpc_addr, 100))?;
    eventually("readings stored", Duration::from_secs(20), || async {
        Ok((stored_seqs(&b.he.db, &b.site).await?.len() > 20).then_some(()))
    })
    .await?;
    let tank = b.sim.tanks()[0].id.clone();
    let eta = headend::wallclock::now_ms() + 3_600_000;
    let (st, load) = post_json(
        b.he.http_addr,
        "/api/v1/loads",
        &json!({"site": b.site, "reference": reference, "tanks": [tank], "product": "diesel",
                "planned_volume_l": 5000, "eta": eta, "eta_source": "manual"}),
    )
    .await?;
    ensure!(st == 201, "{st} {load}");
    Ok(agent)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_under_ingest_restores_whole_and_takes_the_same_agent() -> Result<()> {
    let b = Bench::start("site-bk", |_| {}).await?;
    let site = b.site.clone();
    let agent = under_ingest(&b, "PO-77").await?;
    api_key(&b.he.db, "viewer", None).await?;

    // the backup, while the agent streams
    let before = stored_seqs(&b.he.db, &site).await?;
    let (commands, loads, audit) = (
        count(&b.he.db, "commands").await?,
        count(&b.he.db, "loads").await?,
        count(&b.he.db, "audit_log").await?,
    );
    ensure!(
        commands >= 1 && loads == 1 && audit >= 1,
        "{commands} {loads} {audit}"
    );
    let url = sqlite_url(b.work.path());
    let file = b.work.path().join("backup.db");
    let (code, out) = headend_cli(&[
        "backup",
        "--to",
        &file.to_string_lossy(),
        "--database-url",
        &url,
    ])?;
    ensure!(code == 0 && out.contains("backup written"), "{code}: {out}");
    // (a small database is copied in a few ms: ingest is seen going on
    // once the copy is done, not necessarily during it)
    eventually("ingest goes on", Duration::from_secs(10), || async {
        Ok((stored_seqs(&b.he.db, &site).await?.len() > before.len()).then_some(()))
    })
    .await?;
    let (code, again) = headend_cli(&[
        "backup",
        "--to",
        &file.to_string_lossy(),
        "--database-url",
        &url,
    ])?;
    ensure!(
        code == 2 && again.contains("never overwrites"),
        "{code}: {again}"
    );

    // restore into a new place; the chain verifies
    let restored_dir = tempfile::tempdir()?;
    let url2 = sqlite_url(restored_dir.path());
    let (code, out) = headend_cli(&[
        "restore",
        "--from",
        &file.to_string_lossy(),
        "--database-url",
        &url2,
    ])?;
    ensure!(
        code == 0 && out.contains("audit trail intact"),
        "{code}: {out}"
    );
    let (code, out) = headend_cli(&["audit", "verify", "--database-url", &url2])?;
    ensure!(code == 0 && out.contains("intact"), "{code}: {out}");

    // the old headend goes; a new one on the restored database takes the agent
    let last_acked = stop_drained(agent).await?.acked_through;
    drop(b.he);
    let he2 = start_headend(headend_config(&b.pki, &url2, 0)).await?;
    let restored = stored_seqs(&he2.db, &site).await?;
    let missing: Vec<i64> = before
        .iter()
        .filter(|s| restored.binary_search(s).is_err())
        .copied()
        .collect();
    ensure!(
        missing.is_empty(),
        "{} readings committed before the backup are not in it (first {:?})",
        missing.len(),
        missing.first()
    );
    ensure!(
        count(&he2.db, "commands").await? >= commands
            && count(&he2.db, "loads").await? == loads
            && count(&he2.db, "audit_log").await? >= audit,
        "rows missing from the restore"
    );
    let (code, refused) = headend_cli(&[
        "restore",
        "--from",
        &file.to_string_lossy(),
        "--database-url",
        &url2,
    ])?;
    ensure!(
        code == 2 && refused.contains("--replace"),
        "{code}: {refused}"
    );

    let agent = edge_agent::start(agent_config(
        b.work.path(),
        &agent_yaml(
            &b.pki,
            &site,
            he2.grpc_addr,
            &b.work.path().join("log"),
            &b.sim,
            100,
        ),
    )?)?;
    eventually(
        "the agent's new readings in the restored headend",
        Duration::from_secs(30),
        || async {
            let s = stored_seqs(&he2.db, &site).await?;
            Ok(s.last()
                .is_some_and(|l| *l as u64 > last_acked)
                .then_some(()))
        },
    )
    .await
    .context("the restored headend did not take the agent")?;
    agent.stop().await?;
    Ok(())
}

/// The PostgreSQL procedure of docs/runbooks/restore-from-backup.md, as
/// written there: `pg_dump --format=custom` of a headend's database under
/// ingest, `pg_restore --no-owner` into an empty database, `headend audit
/// verify`, and a headend on the restored database with every row.
#[tokio::test(flavor = "multi_thread")]
async fn the_documented_postgres_dump_and_restore_keeps_every_row_and_the_chain() -> Result<()> {
    let src = pg::fresh_database().await?;
    let dst = pg::fresh_database().await?;
    let url = src.url.clone();
    let b = Bench::start("site-pgbk", |c| c.database_url = url.clone()).await?;
    let site = b.site.clone();
    let agent = under_ingest(&b, "PO-78").await?;
    let before = stored_seqs(&b.he.db, &site).await?;
    let doc = std::fs::read_to_string(repo().join("docs/runbooks/restore-from-backup.md"))?;
    ensure!(
        doc.contains("pg_dump --format=custom") && doc.contains("pg_restore --no-owner"),
        "the runbook no longer says what this test runs"
    );
    let dump = b.work.path().join("tankwatch.dump");
    let out = Command::new("pg_dump")
        .args(["--format=custom", "--file"])
        .arg(&dump)
        .arg(&src.url)
        .output()?;
    ensure!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("pg_restore")
        .args(["--no-owner", "--dbname", &dst.url])
        .arg(&dump)
        .output()?;
    ensure!(
        out.status.success(),
        "pg_restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, out) = headend_cli(&["audit", "verify", "--database-url", &dst.url])?;
    ensure!(code == 0 && out.contains("intact"), "{code}: {out}");
    stop_drained(agent).await?;
    drop(b.he);
    let he2 = start_headend(headend_config(&b.pki, &dst.url, 0)).await?;
    let restored = stored_seqs(&he2.db, &site).await?;
    ensure!(
        before.iter().all(|s| restored.binary_search(s).is_ok()),
        "readings missing after pg_restore"
    );
    ensure!(count(&he2.db, "loads").await? == 1, "the load");
    let (code, out) = headend_cli(&["backup", "--to", "/tmp/x.db", "--database-url", &dst.url])?;
    ensure!(code == 2 && out.contains("pg_dump"), "{code}: {out}");
    drop(he2);
    src.drop().await?;
    dst.drop().await?;
    Ok(())
}

/// Bytes free on the file system of `dir`.
fn free_bytes(dir: &std::path::Path) -> Result<u64> {
    let s = nix::sys::statvfs::statvfs(dir)?;
    Ok(s.blocks_available() as u64 * s.fragment_size() as u64)
}

/// The names in `dir`, sorted.
fn names(dir: &std::path::Path) -> Result<Vec<String>> {
    let mut v: Vec<String> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    v.sort();
    Ok(v)
}

/// The packaged timer's form (`--to-dir DIR --keep N`) into a real full
/// disk (a tmpfs) while an agent streams: the run that does not fit fails
/// with the reason, leaves no partial file and deletes no older backup;
/// the headend goes on storing; the first run after room is made again
/// succeeds and only then prunes.
#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_backup_on_a_full_disk_fails_cleanly_and_the_next_one_with_room_prunes()
-> Result<()> {
    let b = Bench::start("site-bkfull", |_| {}).await?;
    let agent = under_ingest(&b, "FULL-1").await?;
    let url = sqlite_url(b.work.path());
    // a backup's size, measured (most of a busy database is in its WAL)
    let probe = b.work.path().join("probe.db");
    let (code, out) = headend_cli(&[
        "backup",
        "--to",
        probe.to_str().context("path")?,
        "--database-url",
        &url,
    ])?;
    ensure!(code == 0, "{code}: {out}");
    let size = std::fs::metadata(&probe)?.len();
    let disk = Tmpfs::new(&format!("{}k", size * 3 / 1024 + 64))?;
    let dir = disk.path().to_str().context("tmpfs path")?.to_string();
    let run = || {
        headend_cli(&[
            "backup",
            "--to-dir",
            &dir,
            "--keep",
            "1",
            "--database-url",
            &url,
        ])
    };
    let (code, out) = run()?;
    ensure!(
        code == 0 && out.contains("backup written to"),
        "{code}: {out}"
    );
    let first = names(disk.path())?;
    ensure!(first.len() == 1, "{first:?}");
    // something else fills the disk: less room than one backup is left
    let filler = disk.path().join("other-program.dat");
    let room = free_bytes(disk.path())?;
    std::fs::write(&filler, vec![0u8; (room.saturating_sub(size / 3)) as usize])?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let seqs = stored_seqs(&b.he.db, &b.site).await?.len();
    let (code, out) = run()?;
    ensure!(
        code == 2
            && out.contains("disk is full")
            && out.contains(&format!("writing {dir}/headend-"))
            && out.contains("no older backup was touched"),
        "a full disk is a refusal that says so: {code}: {out}"
    );
    let mut want = first.clone();
    want.push("other-program.dat".into());
    want.sort();
    ensure!(
        names(disk.path())? == want,
        "no partial file left and no backup deleted: {:?}",
        names(disk.path())?
    );
    eventually("the headend stores on", Duration::from_secs(10), || async {
        Ok((stored_seqs(&b.he.db, &b.site).await?.len() > seqs).then_some(()))
    })
    .await?;
    // room again: the next run succeeds, then prunes to the newest one
    std::fs::remove_file(&filler)?;
    let (code, out) = run()?;
    ensure!(
        code == 0 && out.contains(&format!("deleted {dir}/{}", first[0])),
        "{code}: {out}"
    );
    let now = names(disk.path())?;
    ensure!(
        now.len() == 1 && now[0] > first[0],
        "{now:?} after {first:?}"
    );
    let (code, out) = headend_cli(&[
        "restore",
        "--from",
        &format!("{dir}/{}", now[0]),
        "--database-url",
        &sqlite_url(&b.work.path().join("restored")),
    ])?;
    ensure!(code == 0 && out.contains("intact"), "{code}: {out}");
    stop_drained(agent).await?;
    Ok(())
}

/// A restore run by mistake under a running headend (a process apart, as
/// an administrator's shell is) is refused before anything moves: the
/// headend would go on writing into the file moved aside, and lose it at
/// its next start. Once the headend stops, the same command restores.
#[tokio::test(flavor = "multi_thread")]
async fn a_restore_under_a_running_headend_is_refused_before_anything_moves() -> Result<()> {
    let b = Bench::start("site-bklock", |_| {}).await?;
    let url = sqlite_url(b.work.path());
    let copy = b.work.path().join("copy.db");
    let copy_s = copy.to_str().context("path")?;
    let (code, out) = headend_cli(&["backup", "--to", copy_s, "--database-url", &url])?;
    ensure!(code == 0, "{code}: {out}");
    let restore = || {
        headend_cli(&[
            "restore",
            "--from",
            copy_s,
            "--replace",
            "--database-url",
            &url,
        ])
    };
    let (code, out) = restore()?;
    ensure!(
        code == 2 && out.contains("a headend is serving") && out.contains("stop it first"),
        "{code}: {out}"
    );
    ensure!(
        !names(b.work.path())?.iter().any(|n| n.contains("replaced")),
        "nothing moved: {:?}",
        names(b.work.path())?
    );
    let Bench { he, .. } = b;
    he.stop().await;
    let (code, out) = restore()?;
    ensure!(code == 0 && out.contains("intact"), "{code}: {out}");
    Ok(())
}

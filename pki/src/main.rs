//! `pki`: create the root CA (its key optionally sealed with a
//! passphrase), the intermediate that issues, the headend's server
//! certificate and agent certificates.
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tankwatch_pki::{Ca, layout};

#[derive(Parser)]
#[command(
    name = "pki",
    version,
    about = "tankwatch PKI: CA, headend and agent certificates"
)]
struct Cli {
    /// Directory holding ca.pem / ca.key and where new files are written.
    #[arg(long, default_value = "pki")]
    dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a new root CA (refuses to overwrite an existing one). With
    /// --passphrase-file its key is sealed (encrypted PKCS#8): keep it
    /// offline; it is needed only to make an intermediate.
    InitCa {
        #[arg(long, default_value = "tankwatch root CA")]
        name: String,
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// A file holding the passphrase that seals the root key.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Create the intermediate CA (issuer.pem, issuer.key) that issues
    /// agent and server certificates; the headend holds only this key.
    Intermediate {
        #[arg(long, default_value = "tankwatch issuing CA")]
        name: String,
        #[arg(long, default_value_t = 1825)]
        days: u32,
        /// The passphrase of a sealed root key.
        #[arg(long)]
        passphrase_file: Option<PathBuf>,
    },
    /// Issue the headend's server certificate (by the intermediate if there is one) (localhost/127.0.0.1 always included).
    Server {
        /// Extra DNS names or IP addresses for the subjectAltName.
        #[arg(long = "name")]
        names: Vec<String>,
        #[arg(long, default_value_t = 397)]
        days: u32,
    },
    /// Issue an agent certificate for a site, with a key made here (by the
    /// intermediate if there is one). Prefer enrollment (`edge-agent
    /// enroll`): there the key never leaves the site.
    Agent {
        #[arg(long)]
        site: String,
        #[arg(long, default_value_t = 397)]
        days: u32,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let file = |stem: &str, ext: &str| cli.dir.join(format!("{stem}.{ext}"));
    let (ca_cert, ca_key) = (file(layout::CA, "pem"), file(layout::CA, "key"));
    let (issuer_cert, issuer_key) = (file(layout::ISSUER, "pem"), file(layout::ISSUER, "key"));
    let passphrase = |f: &Option<PathBuf>| -> Result<Option<Vec<u8>>> {
        f.as_ref()
            .map(|p| {
                std::fs::read(p)
                    .map(|b| b.strip_suffix(b"\n").map(<[u8]>::to_vec).unwrap_or(b))
                    .with_context(|| format!("reading the passphrase from {}", p.display()))
            })
            .transpose()
    };
    // the intermediate issues when there is one; the root otherwise
    let load = || {
        if issuer_key.exists() {
            Ca::load(&issuer_cert, &issuer_key).with_context(|| "loading the intermediate CA")
        } else {
            Ca::load(&ca_cert, &ca_key).with_context(|| "loading the CA (run `pki init-ca` first)")
        }
    };
    let (cert, key) = match cli.cmd {
        Cmd::InitCa {
            name,
            days,
            passphrase_file,
        } => {
            if ca_key.exists() {
                anyhow::bail!(tankwatch_pki::Error::Exists { path: ca_key });
            }
            let mut files = Ca::create(&name, days)?.1;
            if let Some(p) = passphrase(&passphrase_file)? {
                files.key_pem = tankwatch_pki::sealed::seal_key(&files.key_pem, &p)?;
            }
            files.write(&cli.dir, layout::CA)?
        }
        Cmd::Intermediate {
            name,
            days,
            passphrase_file,
        } => {
            if issuer_key.exists() {
                anyhow::bail!(tankwatch_pki::Error::Exists { path: issuer_key });
            }
            let root = Ca::load_sealed(&ca_cert, &ca_key, passphrase(&passphrase_file)?.as_deref())
                .with_context(|| "loading the root CA (run `pki init-ca` first)")?;
            root.create_intermediate(&name, days)?
                .1
                .write(&cli.dir, layout::ISSUER)?
        }
        Cmd::Server { names, days } => load()?
            .issue_server(&names, days)?
            .write(&cli.dir, layout::SERVER)?,
        Cmd::Agent { site, days } => load()?
            .issue_agent(&site, days)?
            .write(&cli.dir, &layout::agent(&site))?,
    };
    println!(
        "wrote {} and {} (key mode 0600)",
        cert.display(),
        key.display()
    );
    Ok(())
}

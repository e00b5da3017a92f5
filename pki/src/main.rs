//! `pki`: create the CA, the headend's server certificate and agent certificates.
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
    /// Create a new CA (refuses to overwrite an existing one).
    InitCa {
        #[arg(long, default_value = "tankwatch CA")]
        name: String,
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issue the headend's server certificate (localhost/127.0.0.1 always included).
    Server {
        /// Extra DNS names or IP addresses for the subjectAltName.
        #[arg(long = "name")]
        names: Vec<String>,
        #[arg(long, default_value_t = 397)]
        days: u32,
    },
    /// Issue an agent certificate for a site.
    Agent {
        #[arg(long)]
        site: String,
        #[arg(long, default_value_t = 397)]
        days: u32,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let ca_cert = cli.dir.join(format!("{}.pem", layout::CA));
    let ca_key = cli.dir.join(format!("{}.key", layout::CA));
    let load =
        || Ca::load(&ca_cert, &ca_key).with_context(|| "loading the CA (run `pki init-ca` first)");
    let (cert, key) = match cli.cmd {
        Cmd::InitCa { name, days } => {
            if ca_key.exists() {
                anyhow::bail!(tankwatch_pki::Error::Exists { path: ca_key });
            }
            Ca::create(&name, days)?.1.write(&cli.dir, layout::CA)?
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

//! `atg-sim`: run the simulated ATG on its own (see docs/atg-simulator.md).
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use atg_sim::{SimConfig, Simulator};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "atg-sim",
    version,
    about = "Simulated automatic tank gauge (Modbus TCP server; optionally a Veeder-Root TLS console)"
)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5020")]
    listen: SocketAddr,
    /// Number of tanks.
    #[arg(long, default_value_t = 4)]
    tanks: usize,
    /// Simulated seconds per real second.
    #[arg(long, default_value_t = 60.0)]
    speed: f64,
    /// The simulation's step, real milliseconds (with `--speed`, a poller
    /// N times as fast as 1 s sees what 1-s polls would at `--speed N`
    /// and `--tick-ms` 200 / N).
    #[arg(long, default_value_t = 200)]
    tick_ms: u64,
    /// Print the tanks as JSON every N seconds (0 = never).
    #[arg(long, default_value_t = 0)]
    print_every: u64,
    /// Also serve the tanks as a Veeder-Root TLS console (both formats) here.
    #[arg(long)]
    veeder_root: Option<SocketAddr>,
    /// Write the matching agent config fragment (assets + devices) to this file and continue.
    #[arg(long)]
    write_agent_config: Option<std::path::PathBuf>,
    /// Print, instead of serving, the history the tanks would have had
    /// for this many hours before now (CSV for `edge-agent backfill`) and exit.
    #[arg(long, value_name = "HOURS")]
    history_hours: Option<u32>,
    /// One reading per field this often in the history, seconds.
    #[arg(long, default_value_t = 300)]
    history_step_s: i64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let cli = Cli::parse();
    if let Some(hours) = cli.history_hours {
        let cfg = SimConfig {
            tanks: cli.tanks,
            ..SimConfig::default()
        };
        let now = jiff::Timestamp::now().as_millisecond();
        let mut out = String::from("asset,field,time,value,unit\n");
        for p in atg_sim::history::before_start(&cfg, now, hours, cli.history_step_s * 1000) {
            let t = jiff::Timestamp::from_millisecond(p.ts_ms)?;
            out.push_str(&format!(
                "{},{},{t},{},{}\n",
                p.asset, p.field, p.value, p.unit
            ));
        }
        print!("{out}");
        return Ok(());
    }
    let sim = Simulator::start(
        cli.listen,
        SimConfig {
            tanks: cli.tanks,
            speed: cli.speed,
            tick_ms: cli.tick_ms.clamp(1, 60_000),
            ..SimConfig::default()
        },
    )
    .await?;
    println!("atg-sim: {} tanks on modbus://{}", cli.tanks, sim.addr);
    if let Some(listen) = cli.veeder_root {
        let addr = sim.start_veeder_root(listen).await?;
        println!(
            "atg-sim: the same tanks on veeder-root://{addr} (i20100 computer, I20100 display)"
        );
    }
    if let Some(path) = cli.write_agent_config {
        std::fs::write(
            &path,
            atg_sim::agent_yaml_fragment(sim.addr, &sim.tanks(), 1000),
        )?;
    }
    loop {
        if cli.print_every == 0 {
            tokio::signal::ctrl_c().await?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(cli.print_every)).await;
        println!("{}", serde_json::to_string(&sim.tanks())?);
    }
}

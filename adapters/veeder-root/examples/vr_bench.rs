//! What reading a Veeder-Root console costs the agent, against the link's
//! own limit: a console's serial port runs at 9600 baud (8N1: 960 bytes/s),
//! so a reply takes (bytes x 10 / 9600) s on the wire. Measures the parse
//! time of the largest replies (16 tanks; 10 delivery records each) in both
//! formats, and the ratio parse time / wire time; and a whole probe round
//! trip (connect, command, reply, parse) over loopback TCP to the simulator.
//!
//! cargo run --release -p adapter-veeder-root --example vr_bench
use std::time::{Duration, Instant};

use adapter_veeder_root::frame::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let sim = atg_sim::Simulator::start(
            "127.0.0.1:0".parse()?,
            atg_sim::SimConfig {
                tanks: 16,
                ..atg_sim::SimConfig::default()
            },
        )
        .await?;
        sim.set_frozen(true);
        for t in 0..16 {
            for _ in 0..10 {
                sim.set_volume(t, 1000.0);
                sim.record_delivery(t, 500.0);
            }
        }
        println!("| reply | bytes | wire time at 9600 baud | parse time | parse / wire |");
        println!("|---|---:|---:|---:|---:|");
        for cmd in ["i20100", "I20100", "i20200", "I20200", "i20500", "I20500"] {
            let raw = sim.veeder_root_reply(cmd);
            let c = Command::parse(cmd).ok_or("command")?;
            let n = 2000;
            let t = Instant::now();
            for _ in 0..n {
                std::hint::black_box(adapter_veeder_root::decode(&c, std::hint::black_box(&raw))?);
            }
            let parse = t.elapsed() / n;
            let wire = Duration::from_secs_f64(raw.len() as f64 * 10.0 / 9600.0);
            println!(
                "| {cmd} (16 tanks) | {} | {:.0} ms | {:.1} µs | {:.1e} |",
                raw.len(),
                wire.as_secs_f64() * 1e3,
                parse.as_secs_f64() * 1e6,
                parse.as_secs_f64() / wire.as_secs_f64()
            );
        }
        let vr = sim.start_veeder_root("127.0.0.1:0".parse()?).await?.to_string();
        let mut times = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            adapter_veeder_root::probe::probe(&vr, "i20100", "", 2000).await?;
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "\nprobe round trip i20100, 16 tanks, loopback (connect + command + reply + parse): p50 {:.0} µs, p99 {:.0} µs",
            times[100].as_secs_f64() * 1e6,
            times[197].as_secs_f64() * 1e6
        );
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}

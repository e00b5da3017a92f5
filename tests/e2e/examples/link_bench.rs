//! The uplink on a slow link (issue 30): the demo site in its own network
//! namespace, its link limited by `tc tbf`, streaming to a headend.
//! Prints bytes on the wire per reading, how a backlog drains, session
//! drops and how long a command takes to show `active`.
//!
//! ```sh
//! cargo build --release --workspace --bins --examples
//! # live: 16 kbit/s, 3 minutes
//! target/release/examples/link_bench --kbit 16 --minutes 3
//! # a 1-hour backlog at 64 kbit/s, a command every 30 s, 10 link flaps
//! target/release/examples/link_bench --kbit 64 --backlog-min 60 --minutes 15 --commands 20 --flaps 10 --flap-every 8
//! ```
//! Options: `--uplink '{"linger_ms": 0}'` overrides the agent's uplink settings.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use e2e::slowlink::Site;

struct Opts {
    kbit: u32,
    backlog_min: u64,
    minutes: f64,
    flaps: u32,
    flap_every: u64,
    commands: u64,
    uplink: serde_json::Value,
}

fn opts() -> Result<Opts> {
    let mut o = Opts {
        kbit: 64,
        backlog_min: 0,
        minutes: 3.0,
        flaps: 0,
        flap_every: 10,
        commands: 0,
        uplink: serde_json::json!({}),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for w in args.chunks(2) {
        let v = w.get(1).map(String::as_str).unwrap_or("");
        match w[0].as_str() {
            "--kbit" => o.kbit = v.parse()?,
            "--backlog-min" => o.backlog_min = v.parse()?,
            "--minutes" => o.minutes = v.parse()?,
            "--flaps" => o.flaps = v.parse()?,
            "--flap-every" => o.flap_every = v.parse()?,
            "--commands" => o.commands = v.parse()?,
            "--uplink" => o.uplink = serde_json::from_str(v)?,
            other => anyhow::bail!("unknown option {other}"),
        }
    }
    Ok(o)
}

const SPEEDUP: u64 = 20;

#[tokio::main]
async fn main() -> Result<()> {
    let o = opts()?;
    let mut site = Site::start("bench").await?;
    if o.kbit > 0 {
        site.ns.shape(o.kbit)?;
    }
    println!(
        "link: {} kbit/s each way (tc tbf, 2 s queue); demo site (atg-sim, configs/site-demo.yaml) in netns {}",
        o.kbit, site.ns.name
    );
    let mut backlog0 = 0;
    if o.backlog_min > 0 {
        // the link is down while the agent polls SPEEDUP times as often
        site.ns.set_link(false)?;
        site.run_sim(SPEEDUP)?;
        site.run_agent(&site.yaml(SPEEDUP, &o.uplink)?)?;
        let secs = o.backlog_min * 60 / SPEEDUP;
        println!(
            "building a {}-minute backlog: {secs} s with the link down, the simulator and the polls {SPEEDUP}x as fast",
            o.backlog_min
        );
        site.wait_status(Duration::from_secs(20)).await?;
        tokio::time::sleep(Duration::from_secs(secs)).await;
        site.stop_agent();
        let log = sflog::Log::open(&site.work.path().join("log"), &sflog::Options::default())?;
        let st = log.stats();
        backlog0 = st.next_seq - 1 - st.acked_through;
        println!("backlog: {backlog0} entries in the log");
        drop(log);
        site.run_sim(1)?;
        site.ns.set_link(true)?;
    }
    let (up0, down0) = site.ns.bytes()?;
    let stored0 = site.stored().await?;
    let t0 = Instant::now();
    site.run_agent(&site.yaml(1, &o.uplink)?)?;
    site.wait_status(Duration::from_secs(20)).await?;
    let sessions0 = 0;
    let end = t0 + Duration::from_secs_f64(o.minutes * 60.0);
    let mut drained: Option<Duration> = None;
    let mut next_print = t0;
    let mut next_cmd = t0 + Duration::from_secs(o.commands.max(1));
    let flap_every = Duration::from_secs(o.flap_every);
    let mut next_flap = t0 + Duration::from_secs(15);
    let (mut flaps, mut cmd_times) = (0u32, Vec::new());
    let mut value = 50.0;
    println!("    t    stored  backlog  sessions  up kbit/s  down kbit/s  bytes/entry");
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_print {
            next_print += Duration::from_secs(15);
            let st = site.status().unwrap_or_default();
            let link = &st["uplink"]["link"];
            let stored = site.stored().await? - stored0;
            let backlog = link["backlog"].as_u64().unwrap_or(0);
            println!(
                "{:5.0} {:9} {:8} {:9} {:10.1} {:12.1} {:12.1}",
                t0.elapsed().as_secs_f64(),
                stored,
                backlog,
                st["uplink"]["sessions"].as_u64().unwrap_or(0),
                link["up_bytes_per_s"].as_f64().unwrap_or(0.0) * 8.0 / 1000.0,
                link["down_bytes_per_s"].as_f64().unwrap_or(0.0) * 8.0 / 1000.0,
                link["bytes_per_entry"].as_f64().unwrap_or(0.0),
            );
            if drained.is_none() && backlog0 > 0 && stored as u64 >= backlog0 && backlog < 100 {
                drained = Some(t0.elapsed());
                println!("backlog drained after {:.0} s", t0.elapsed().as_secs_f64());
            }
        }
        if o.commands > 0 && now >= next_cmd {
            next_cmd += Duration::from_secs(o.commands);
            value = if value == 50.0 { 45.0 } else { 50.0 };
            match site.command_active(value, Duration::from_secs(60)).await {
                Ok(d) => {
                    println!("command {value} kW active after {:.2} s", d.as_secs_f64());
                    cmd_times.push(d.as_secs_f64());
                }
                Err(e) => println!("command {value} kW: {e:#}"),
            }
        }
        if flaps < o.flaps && now >= next_flap {
            next_flap += flap_every;
            flaps += 1;
            site.ns.set_link(false)?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            site.ns.set_link(true)?;
            println!(
                "link flap {flaps} (3 s down) at {:.0} s",
                t0.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let (up1, down1) = site.ns.bytes()?;
    let stored = site.stored().await? - stored0;
    let st = site.status()?;
    let (up, down) = (up1 - up0, down1 - down0);
    println!("--");
    println!("{secs:.0} s: {stored} readings stored; {up} bytes up, {down} down on the veth");
    println!(
        "bytes per reading: {:.1} ({:.1} up, {:.1} down); link use {:.1} of {} kbit/s up",
        (up + down) as f64 / stored.max(1) as f64,
        up as f64 / stored.max(1) as f64,
        down as f64 / stored.max(1) as f64,
        up as f64 * 8.0 / secs / 1000.0,
        o.kbit
    );
    println!(
        "sessions: {} (drops: {}); backlog at start {backlog0}, now {}; drained: {}",
        st["uplink"]["sessions"],
        st["uplink"]["sessions"]
            .as_u64()
            .unwrap_or(1)
            .saturating_sub(1 + sessions0),
        st["uplink"]["link"]["backlog"],
        drained.map_or("no".to_string(), |d| format!(
            "after {:.0} s",
            d.as_secs_f64()
        ))
    );
    if !cmd_times.is_empty() {
        cmd_times.sort_by(f64::total_cmp);
        println!(
            "commands active after: median {:.2} s, max {:.2} s ({} commands)",
            cmd_times[cmd_times.len() / 2],
            cmd_times[cmd_times.len() - 1],
            cmd_times.len()
        );
    }
    let dup = site.duplicates().await?;
    println!("readings stored twice: {dup}");
    ensure!(dup == 0, "a reading was stored twice");
    // nothing lost: every acknowledged seq is stored or in a gap record,
    // every other one still in the log
    site.stop_agent();
    let log = sflog::Log::open(&site.work.path().join("log"), &sflog::Options::default())?;
    let mut st = log.stats();
    let tail = log.read_from(st.acked_through + 1, usize::MAX, usize::MAX)?;
    ensure!(tail.len() as u64 == st.next_seq - 1 - st.acked_through);
    st.next_seq = st.acked_through + 1;
    let gaps = e2e::assert_every_seq_accounted_for(&site.he.db, e2e::slowlink::SITE, &st).await?;
    println!(
        "every one of {} seqs acknowledged is stored or accounted for ({} gap records); {} unacknowledged still in the log",
        st.acked_through,
        gaps.len(),
        tail.len()
    );
    Ok(())
}

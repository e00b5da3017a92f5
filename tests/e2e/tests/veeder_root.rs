//! The Veeder-Root TLS adapter end to end: the simulator's console (both
//! reply formats) through the agent, mTLS gRPC and the headend to its REST
//! API; garbage from the console; the console's own delivery records; and
//! the computer format cross-checked with an independent parser (the PyPI
//! veeder-root-tls-socket-library).
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use atg_sim::veeder_root::{Fault, yaml_device};
use e2e::*;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);
const GAL: f64 = 3.785_411_784;

/// A headend and an agent whose devices are `devices` (YAML under `devices:`).
struct Site {
    _pki: TestPki,
    _work: tempfile::TempDir,
    he: headend::Running,
    agent: edge_agent::Agent,
    site: String,
}

impl Site {
    async fn start(
        site: &str,
        sim: &atg_sim::Simulator,
        devices: &str,
        extra: &str,
    ) -> Result<Site> {
        Site::start_on(site, sim, devices, extra, None).await
    }

    /// As `start`, with the headend on `db_url` (default: SQLite in the work dir).
    async fn start_on(
        site: &str,
        sim: &atg_sim::Simulator,
        devices: &str,
        extra: &str,
        db_url: Option<&str>,
    ) -> Result<Site> {
        let pki = TestPki::new(&[site])?;
        let work = tempfile::tempdir()?;
        let url = db_url.map_or_else(|| sqlite_url(work.path()), str::to_string);
        let he = e2e::start_headend(headend_config(&pki, &url, 0)).await?;
        let mut yaml = agent_head(
            &pki,
            site,
            he.grpc_addr,
            &work.path().join("log"),
            "127.0.0.1:0",
        );
        yaml += "assets:\n";
        for t in sim.tanks() {
            yaml += &format!(
                "  - {{ id: {}, kind: tank, capacity: {} }}\n",
                t.id, t.capacity
            );
        }
        yaml += extra;
        yaml += "devices:\n";
        yaml += devices;
        let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
        Ok(Site {
            _pki: pki,
            _work: work,
            he,
            agent,
            site: site.to_string(),
        })
    }

    fn http(&self) -> SocketAddr {
        self.he.http_addr
    }

    async fn wait_value(&self, asset: &str, field: &str, want: f64, tol: f64) -> Result<()> {
        wait_value(self.http(), &self.site, asset, field, want, tol).await
    }

    async fn device(&self, name: &str) -> Result<Value> {
        site_device(self.http(), &self.site, name).await
    }

    async fn stop(self) -> Result<()> {
        self.agent.stop().await?;
        self.he.stop().await;
        Ok(())
    }
}

async fn frozen_console(tanks: usize) -> Result<(atg_sim::Simulator, SocketAddr)> {
    let sim = atg_sim::Simulator::start(
        "127.0.0.1:0".parse()?,
        atg_sim::SimConfig {
            tanks,
            ..atg_sim::SimConfig::default()
        },
    )
    .await?;
    sim.set_frozen(true);
    let vr = sim.start_veeder_root("127.0.0.1:0".parse()?).await?;
    Ok((sim, vr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_reply_formats_of_the_simulated_console_reach_the_rest_api_in_canonical_units()
-> Result<()> {
    let _ = tracing_subscriber::fmt().with_env_filter("warn").try_init();
    let (sim, vr) = frozen_console(2).await?;
    let tanks = sim.tanks();
    // the display device asks its one tank alone (I20102), the other all (i20100)
    let devices = yaml_device("vr-computer", vr, &[(1, &tanks[0])], "computer", 1000)
        + &yaml_device("vr-display", vr, &[(2, &tanks[1])], "display", 1000).replace(
            "format: display",
            "format: display\n      per_tank_requests: true",
        );
    let s = Site::start("site-vr", &sim, &devices, "").await?;
    // computer format: f32 hex, gallons -> litres
    s.wait_value("tank-1", "volume", tanks[0].volume, 0.01 * GAL)
        .await?;
    s.wait_value("tank-1", "temperature", tanks[0].temperature, 0.001)
        .await?;
    s.wait_value("tank-1", "height", tanks[0].height(), 0.01)
        .await?;
    // display format: whole gallons, two decimals of inches and °F
    s.wait_value("tank-2", "volume", tanks[1].volume, 0.5 * GAL)
        .await?;
    s.wait_value("tank-2", "ullage", tanks[1].ullage(), 0.5 * GAL)
        .await?;
    s.wait_value(
        "tank-2",
        "water_height",
        tanks[1].water_height,
        0.005 * 25.4,
    )
    .await?;
    s.wait_value("tank-2", "temperature", tanks[1].temperature, 0.005 / 1.8)
        .await?;
    // alarms from i205 in both formats: a tank filled over 95 % raises high product
    s.wait_value("tank-1", "alarm.high_level", 0.0, 0.0).await?;
    sim.set_volume(1, tanks[1].capacity * 0.97);
    s.wait_value("tank-2", "alarm.high_level", 1.0, 0.0).await?;
    s.wait_value("tank-2", "volume", tanks[1].capacity * 0.97, 0.5 * GAL)
        .await?;
    let asked = sim.veeder_root_commands();
    for (cmd, want) in [
        ("i20100", true),
        ("I20102", true),
        ("I20502", true),
        ("I20100", false),
    ] {
        ensure!(asked.contains_key(cmd) == want, "{cmd}: {asked:?}");
    }
    for name in ["vr-computer", "vr-display"] {
        let d = s.device(name).await?;
        ensure!(d["kind"] == "veeder_root" && d["connected"] == true, "{d}");
        ensure!(d["malformed"] == 0, "{d}");
    }
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_checksums_cut_replies_a_dropped_connection_and_an_out_of_step_reply_are_counted_and_named_and_readings_resume()
-> Result<()> {
    let _ = tracing_subscriber::fmt().with_env_filter("warn").try_init();
    let (sim, vr) = frozen_console(1).await?;
    let tanks = sim.tanks();
    let devices = yaml_device("vr", vr, &[(1, &tanks[0])], "computer", 1000);
    let s = Site::start("site-vg", &sim, &devices, "").await?;
    s.wait_value("tank-1", "volume", tanks[0].volume, 0.01 * GAL)
        .await?;
    let mut malformed = 0;
    for (fault, named) in [
        (Fault::BadChecksum, "bad checksum"),
        (Fault::Truncated, "no && checksum"),
        (Fault::DropMidReply, "in the middle of the reply"),
        (Fault::OutOfStep, "out of step"),
    ] {
        sim.inject_veeder_root(fault);
        let d = eventually(&format!("{fault:?} counted"), T, || async {
            Ok(s.device("vr")
                .await
                .ok()
                .filter(|d| d["malformed"].as_u64() > Some(malformed)))
        })
        .await?;
        malformed = d["malformed"].as_u64().unwrap_or(0);
        ensure!(
            d["last_error"].as_str().is_some_and(|e| e.contains(named)),
            "{fault:?}: {d}"
        );
        // the points went bad, and come back by themselves
        let next = tanks[0].volume - 100.0 * f64::from(malformed as u32);
        sim.set_volume(0, next);
        s.wait_value("tank-1", "volume", next, 0.01 * GAL).await?;
    }
    // a console that stops answering: a timeout, a new connection, readings again
    sim.inject_veeder_root(Fault::Silent);
    eventually("the silent console timed out", T, || async {
        Ok(s.device("vr").await.ok().filter(|d| {
            d["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("no reply to i20100 within 2000 ms"))
        }))
    })
    .await?;
    sim.set_volume(0, 1234.0);
    s.wait_value("tank-1", "volume", 1234.0, 0.01 * GAL).await?;
    let d = s.device("vr").await?;
    ensure!(
        d["reconnects"].as_u64() >= Some(3),
        "a dropped, an out-of-step and a silent link: {d}"
    );
    ensure!(d["malformed"].as_u64() == Some(4), "{d}");
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_the_console_records_reaches_the_headend_with_its_source_and_beats_the_detector()
-> Result<()> {
    let _ = tracing_subscriber::fmt().with_env_filter("warn").try_init();
    // the detector settles in 1.5 s, before the console's next i202 poll (5 s)
    delivery_case(None, 1500).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_too_the_gauges_delivery_record_beats_the_detector() -> Result<()> {
    let _ = tracing_subscriber::fmt().with_env_filter("warn").try_init();
    let db = pg::fresh_database().await?;
    // the detector settles in 9 s, after the console's record came in
    let r = delivery_case(Some(&db.url), 9000).await;
    db.drop().await?;
    r
}

/// `settle_ms` of the detector orders the two sources: below the
/// console's delivery poll (5 s) the detector ends first, above it last.
async fn delivery_case(db_url: Option<&str>, settle_ms: u64) -> Result<()> {
    let (sim, vr) = frozen_console(1).await?;
    let tanks = sim.tanks();
    let devices = yaml_device("vr", vr, &[(1, &tanks[0])], "computer", 1000);
    let detector =
        format!("deliveries: {{ min_rise_l: 300, settle_ms: {settle_ms}, noise_l: 20 }}\n");
    sim.set_volume(0, 6000.0); // room for the delivery
    let s = Site::start_on("site-vd", &sim, &devices, &detector, db_url).await?;
    s.wait_value("tank-1", "volume", 6000.0, 0.01 * GAL).await?;
    let eta = adapter_api::now_ms();
    let (code, l) = post_json(
        s.http(),
        "/api/v1/loads",
        &json!({"site": "site-vd", "reference": "PO-1", "carrier": "C", "tanks": ["tank-1"],
                "product": "diesel", "planned_volume_l": 5000, "eta": eta, "eta_source": "manual"}),
    )
    .await?;
    ensure!(code == 201, "{code}: {l}");
    let load_id = l["load"]["load_id"]
        .as_str()
        .context("load id")?
        .to_string();
    wait_state(
        s.http(),
        l["command"]["command_id"].as_str().context("id")?,
        "active",
        T,
    )
    .await?;
    // the console records 5000 L; the tank shows 4800 L more (sales during
    // the drop): the detector sees 4800, the gauge's record says 5000.
    // Recorded just after a delivery poll, so that the next one comes ~5 s
    // later, whatever the phase of the polls (the order is the point).
    let polls = || -> u64 {
        sim.veeder_root_commands()
            .iter()
            .filter(|(c, _)| c.get(1..4) == Some("202"))
            .map(|(_, n)| n)
            .sum()
    };
    let before = polls();
    eventually("a delivery poll", T, || async {
        Ok((polls() > before).then_some(()))
    })
    .await?;
    let rec = sim.record_delivery(0, 5000.0).context("record")?;
    sim.set_volume(0, rec.start_volume + 4800.0);
    let deliveries = eventually("both sources reported", T, || async {
        let d = get_json(s.http(), "/api/v1/sites/site-vd/deliveries").await?;
        let ended: Vec<Value> = d
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|x| x["phase"] == "ended")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        Ok((ended.len() >= 2).then_some(ended))
    })
    .await?;
    let by = |src: &str| deliveries.iter().find(|d| d["source"] == src).cloned();
    let gauge = by("gauge").context("a gauge event")?;
    let det = by("detector").context("a detector event")?;
    let vol = |d: &Value| d["delivered_volume_l"].as_f64().unwrap_or(f64::NAN);
    ensure!((vol(&gauge) - 5000.0).abs() < 0.01 * GAL, "{gauge}");
    ensure!((vol(&det) - 4800.0).abs() < 0.01 * GAL, "{det}");
    let detector_first = det["reported"].as_str() < gauge["reported"].as_str();
    ensure!(
        detector_first == (settle_ms < 5000),
        "the order this case is about: {deliveries:?}"
    );
    ensure!(
        gauge["load_id"] == load_id.as_str() && det["load_id"] == load_id.as_str(),
        "{deliveries:?}"
    );
    ensure!(
        gauge["start"].as_str().is_some_and(|t| t.ends_with('Z')),
        "the console's times, read in its zone: {gauge}"
    );
    // whichever came first, the load carries the gauge's volume
    let load = get_json(s.http(), &format!("/api/v1/loads/{load_id}")).await?;
    ensure!(
        load["status"] == "delivered" && load["delivery_source"] == "gauge",
        "{load}"
    );
    ensure!(
        (load["delivered_volume_l"].as_f64().unwrap_or(0.0) - 5000.0).abs() < 0.01 * GAL,
        "{load}"
    );
    // two later records new at the same poll (as after an agent restart):
    // the console lists them newest first; both are reported, since the
    // adapter hands them over oldest first
    let h = 3_600_000;
    let now = adapter_api::now_ms();
    sim.record_delivery_at(0, 700.0, now + 2 * h, now + 2 * h + 600_000);
    sim.record_delivery_at(0, 900.0, now + 3 * h, now + 3 * h + 600_000);
    let gauge_events = |d: &Value| -> Vec<Value> {
        d.as_array()
            .map(|a| {
                a.iter()
                    .filter(|x| x["source"] == "gauge")
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    eventually("three gauge records", T, || async {
        let d = get_json(s.http(), "/api/v1/sites/site-vd/deliveries").await?;
        Ok((gauge_events(&d).len() >= 3).then_some(()))
    })
    .await?;
    // the console repeats its records at every poll: each reported once
    tokio::time::sleep(Duration::from_millis(6000)).await;
    let d = get_json(s.http(), "/api/v1/sites/site-vd/deliveries").await?;
    let g = gauge_events(&d);
    ensure!(g.len() == 3, "{d}");
    let mut vols: Vec<i64> = g.iter().map(|x| vol(x).round() as i64).collect();
    vols.sort();
    ensure!(vols == vec![700, 900, 5000], "{vols:?}");
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pypi_library_reads_our_simulators_computer_format_as_our_parser_does() -> Result<()> {
    let (sim, vr) = frozen_console(3).await?;
    // the library's limits: every tank needs a delivery record (it stops at
    // a tank without one) and at most one alarm (it reads one type)
    for t in 0..3 {
        sim.record_delivery(t, 1000.0 + 500.0 * t as f64)
            .context("record")?;
    }
    sim.record_delivery(1, 250.0).context("record")?;
    sim.set_volume(2, sim.tanks()[2].capacity * 0.05);
    let out = std::process::Command::new(python())
        .arg(peer_script("vr_crosscheck.py"))
        .arg("127.0.0.1")
        .arg(vr.port().to_string())
        .output()?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: Value = serde_json::from_slice(&out.stdout)?;
    use adapter_veeder_root::frame::{Command, Format, Function};
    use adapter_veeder_root::report::{Report, TankAlarm};
    let ours = |f: Function| {
        let cmd = Command::new(f, 0, Format::Computer);
        adapter_veeder_root::decode(&cmd, &sim.veeder_root_reply(&cmd.text()))
    };
    let close =
        |a: f64, b: &Value| (a - b.as_f64().unwrap_or(f64::NAN)).abs() < 1e-4 * a.abs().max(1.0);
    let Report::Inventory { at, tanks } = ours(Function::Inventory)? else {
        unreachable!()
    };
    let at = at.context("the computer format always has the console's time")?;
    ensure!(
        py["201"]["minute"] == at.minute && py["201"]["hour"] == at.hour,
        "{}",
        py["201"]
    );
    let pt = py["201"]["tanks"].as_array().context("tanks")?;
    ensure!(pt.len() == tanks.len() && tanks.len() == 3, "{pt:?}");
    for (t, p) in tanks.iter().zip(pt) {
        ensure!(
            p["tank_number"] == format!("{:02}", t.tank) && p["product_code"] == t.product,
            "{p}"
        );
        ensure!(p["tank_status_bits"] == t.status.unwrap_or(99), "{p}");
        for (ours, key) in [
            (t.volume, "volume"),
            (t.tc_volume, "tc_volume"),
            (t.ullage, "ullage"),
            (t.height, "height"),
            (t.water, "water"),
            (t.temperature, "temperature"),
            (t.water_volume.unwrap_or(f64::NAN), "water_volume"),
        ] {
            ensure!(
                close(ours, &p[key]),
                "tank {} {key}: ours {ours}, theirs {}",
                t.tank,
                p[key]
            );
        }
    }
    let Report::Deliveries { tanks, .. } = ours(Function::Deliveries)? else {
        unreachable!()
    };
    let pt = py["202"]["tanks"].as_array().context("tanks")?;
    ensure!(pt.len() == 3, "{pt:?}");
    for (t, p) in tanks.iter().zip(pt) {
        let pd = p["deliveries"].as_array().context("deliveries")?;
        ensure!(pd.len() == t.deliveries.len(), "tank {}: {pd:?}", t.tank);
        for (d, q) in t.deliveries.iter().zip(pd) {
            ensure!(
                q["start_hour"] == d.start.hour && q["end_minute"] == d.end.minute,
                "{q}"
            );
            for (ours, key) in [
                (d.start_volume, "starting_volume"),
                (d.end_volume, "ending_volume"),
                (d.start_tc_volume, "starting_tc_volume"),
                (d.end_temperature, "ending_temp"),
                (d.start_height, "starting_height"),
                (d.end_height, "ending_height"),
            ] {
                ensure!(
                    close(ours, &q[key]),
                    "tank {} {key}: ours {ours}, theirs {}",
                    t.tank,
                    q[key]
                );
            }
        }
    }
    ensure!(tanks[1].deliveries.len() == 2, "tank 2 has two records");
    let Report::Alarms { tanks, .. } = ours(Function::Alarms)? else {
        unreachable!()
    };
    let pa = py["205"]["alarms"].as_array().context("alarms")?;
    ensure!(pa.len() == 3, "{pa:?}");
    for (t, p) in tanks.iter().zip(pa) {
        ensure!(p["number_of_alarms"] == t.alarms.len(), "{p}");
        if let Some(TankAlarm::Known(code)) = t.alarms.first() {
            ensure!(p["alarm_type"] == format!("{code:02}"), "{p}");
        }
    }
    ensure!(
        tanks[2].alarms == vec![TankAlarm::Known(5)],
        "tank 3 is low: {:?}",
        tanks[2]
    );
    Ok(())
}

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test program
//! The Modbus adapter against the ATG simulator over real loopback TCP.
use std::time::Duration;

use adapter_api::{Adapter, Event, Health, Quality, Reading, Sink, WriteOutcome, WriteRequest};
use adapter_modbus::{ModbusAdapter, ModbusDevice};
use atg_sim::{SimConfig, Simulator};
use tokio::sync::{mpsc, watch};

fn device(name: &str, sim: &Simulator, extra_points: &str) -> ModbusDevice {
    let yaml = format!(
        "name: {name}\naddress: \"{}\"\npoll_interval_ms: 100\ntimeout_ms: 300\nmax_backoff_ms: 500\npoints:\n  - {{ asset: tank-1, field: volume, register: 0, type: f32, unit: L }}\n  - {{ asset: tank-1, field: temperature, register: 8, type: f32, unit: degC }}\n  - {{ asset: tank-2, field: volume, register: 20, type: f32, unit: m3, scale: 0.001 }}\n{extra_points}",
        sim.addr
    );
    serde_yaml::from_str(&yaml).expect("test yaml")
}

/// Runs `a` with its events forwarded as readings into `tx` (the adapter
/// waits when `tx` is full, as under the agent).
fn start(
    a: Box<ModbusAdapter>,
    tx: mpsc::Sender<Reading>,
    writes: mpsc::Receiver<WriteRequest>,
    stop: watch::Receiver<bool>,
) {
    let (etx, mut erx) = mpsc::channel(1);
    let sink = Sink::new(etx, a.when_full(), a.name(), Health::default());
    tokio::spawn(a.run(sink, writes, stop));
    tokio::spawn(async move {
        while let Some(e) = erx.recv().await {
            if let Event::Reading(r) = e
                && tx.send(r).await.is_err()
            {
                return;
            }
        }
    });
}

async fn sim() -> Simulator {
    let s = Simulator::start("127.0.0.1:0".parse().unwrap(), SimConfig::default())
        .await
        .unwrap();
    s.set_frozen(true);
    s
}

fn spawn(dev: ModbusDevice) -> (mpsc::Receiver<Reading>, watch::Sender<bool>) {
    let (rx, _writes, stop) = spawn_writable(dev);
    (rx, stop)
}

fn spawn_writable(
    dev: ModbusDevice,
) -> (
    mpsc::Receiver<Reading>,
    mpsc::Sender<WriteRequest>,
    watch::Sender<bool>,
) {
    let (tx, rx) = mpsc::channel(64);
    let (wtx, wrx) = mpsc::channel(4);
    let (stop_tx, stop_rx) = watch::channel(false);
    let a = Box::new(ModbusAdapter::new(dev).unwrap());
    start(a, tx, wrx, stop_rx);
    (rx, wtx, stop_tx)
}

async fn write(
    w: &mpsc::Sender<WriteRequest>,
    asset: &str,
    field: &str,
    value: f64,
) -> WriteOutcome {
    let (reply, rx) = tokio::sync::oneshot::channel();
    w.send(WriteRequest {
        asset_id: asset.into(),
        field: field.into(),
        value,
        reply,
    })
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .expect("answered within 5 s")
        .unwrap()
}

async fn next_matching(rx: &mut mpsc::Receiver<Reading>, f: impl Fn(&Reading) -> bool) -> Reading {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let r = rx.recv().await.expect("adapter alive");
            if f(&r) {
                return r;
            }
        }
    })
    .await
    .expect("reading within 10 s")
}

#[tokio::test]
async fn adapter_reads_simulator_floats_scales_and_converts_units() {
    let s = sim().await;
    let tanks = s.tanks();
    let (mut rx, _stop) = spawn(device("atg", &s, ""));
    let v1 = next_matching(&mut rx, |r| r.asset_id == "tank-1" && r.field == "volume").await;
    assert_eq!(v1.quality, Quality::Good);
    assert_eq!(v1.unit, "L");
    assert!(
        (v1.value - tanks[0].volume).abs() <= tanks[0].volume * 1e-6,
        "{} vs {}",
        v1.value,
        tanks[0].volume
    );
    assert!(
        v1.source.starts_with("modbus://127.0.0.1:"),
        "{}",
        v1.source
    );
    // register 20 read as m3 with scale 0.001 -> converted back to litres
    let v2 = next_matching(&mut rx, |r| r.asset_id == "tank-2" && r.field == "volume").await;
    assert!(
        (v2.value - tanks[1].volume).abs() <= tanks[1].volume * 1e-5,
        "{} vs {}",
        v2.value,
        tanks[1].volume
    );
    let t = next_matching(&mut rx, |r| r.field == "temperature").await;
    assert_eq!(t.unit, "degC");
}

#[tokio::test]
async fn modbus_exception_becomes_a_bad_reading_and_polling_goes_on() {
    let s = sim().await;
    // register 9000 is outside the simulator's map: IllegalDataAddress
    let (mut rx, _stop) = spawn(device(
        "atg",
        &s,
        "  - { asset: tank-9, field: volume, register: 9000, type: f32 }\n",
    ));
    let bad = next_matching(&mut rx, |r| r.asset_id == "tank-9").await;
    assert_eq!(bad.quality, Quality::Bad);
    assert!(bad.error.contains("IllegalDataAddress"), "{}", bad.error);
    // good points keep arriving after the exception
    for _ in 0..3 {
        let ok = next_matching(&mut rx, |r| r.asset_id == "tank-1").await;
        assert_eq!(ok.quality, Quality::Good);
    }
}

#[tokio::test]
async fn a_device_that_stops_answering_does_not_stop_another_device() {
    let a = sim().await;
    let b = sim().await;
    let (tx, mut rx) = mpsc::channel(256);
    let (_stop_tx, stop_rx) = watch::channel(false);
    for (name, s) in [("dev-a", &a), ("dev-b", &b)] {
        let ad = Box::new(ModbusAdapter::new(device(name, s, "")).unwrap());
        start(ad, tx.clone(), mpsc::channel(1).1, stop_rx.clone());
    }
    let from = |port: u16| {
        move |r: &Reading| r.source.contains(&format!(":{port}/")) && r.quality == Quality::Good
    };
    next_matching(&mut rx, from(a.addr.port())).await;
    next_matching(&mut rx, from(b.addr.port())).await;
    a.set_silent(true);
    // device a reports its failure ...
    next_matching(&mut rx, |r| {
        r.source.contains(&format!(":{}/", a.addr.port())) && r.quality == Quality::Bad
    })
    .await;
    // ... while device b goes on: 10 more good readings from b within the timeout
    for _ in 0..10 {
        next_matching(&mut rx, from(b.addr.port())).await;
    }
    // and a recovers once it answers again
    a.set_silent(false);
    next_matching(&mut rx, from(a.addr.port())).await;
}

#[tokio::test]
async fn an_unreachable_device_is_reported_bad_once_not_every_poll() {
    // nothing listens on this port
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let yaml = format!(
        "name: gone\naddress: \"127.0.0.1:{port}\"\npoll_interval_ms: 50\ntimeout_ms: 100\nmax_backoff_ms: 100\npoints:\n  - {{ asset: t, field: volume, register: 0, type: f32 }}\n"
    );
    let (mut rx, _stop) = spawn(serde_yaml::from_str(&yaml).unwrap());
    let first = next_matching(&mut rx, |_| true).await;
    assert_eq!(first.quality, Quality::Bad);
    // many reconnect attempts happen in 1 s; none repeats the same bad reading
    let more = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await;
    assert!(
        more.is_err(),
        "a repeated bad reading was emitted: {more:?}"
    );
}

#[tokio::test]
async fn status_bits_become_alarm_readings_reported_only_on_change() {
    let s = sim().await;
    let tank = &s.tanks()[0];
    let want_low = f64::from(u8::from(tank.volume / tank.capacity < 0.10));
    let (mut rx, _stop) = spawn(device(
        "atg",
        &s,
        "  - { asset: tank-1, field: alarm.low_level, register: 14, type: u16, bit: 1, unit: bool, class: alarm }\n",
    ));
    let a = next_matching(&mut rx, |r| r.field == "alarm.low_level").await;
    assert_eq!(
        (a.value, a.unit.as_str(), a.quality),
        (want_low, "bool", Quality::Good)
    );
    // the frozen simulator keeps the flag constant: 10 more polls, no second alarm reading
    let mut volumes = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1200);
    while let Ok(Some(r)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        assert_ne!(r.field, "alarm.low_level", "an unchanged alarm was re-sent");
        volumes += usize::from(r.field == "volume");
    }
    assert!(volumes >= 8, "polling went on ({volumes} volume readings)");
}

#[test]
fn a_bit_outside_the_type_or_of_a_float_is_a_config_error() {
    let yaml = |p: &str| format!("name: d\naddress: \"127.0.0.1:502\"\npoints:\n  - {p}\n");
    let dev: ModbusDevice = serde_yaml::from_str(&yaml(
        "{ asset: t, field: alarm.x, register: 0, type: u16, bit: 16 }",
    ))
    .unwrap();
    assert!(
        ModbusAdapter::new(dev)
            .err()
            .unwrap()
            .to_string()
            .contains("use 0 to 15")
    );
    let dev: ModbusDevice = serde_yaml::from_str(&yaml(
        "{ asset: t, field: alarm.x, register: 0, type: f32, bit: 1 }",
    ))
    .unwrap();
    assert!(
        ModbusAdapter::new(dev)
            .err()
            .unwrap()
            .to_string()
            .contains("integer type")
    );
}

const CONTROLLER: &str =
    "  - { asset: ctl, field: pump_enable, register: 1000, type: u16, writable: true }
  - { asset: ctl, field: power_limit, register: 1002, type: f32, unit: kW, writable: true }
  - { asset: ctl, field: locked, register: 1004, type: f32, writable: true }
  - { asset: ctl, field: pump_running, register: 1006, type: u16, bit: 0, unit: bool }
";

#[tokio::test]
async fn a_write_is_read_back_and_applied_on_the_device() {
    let s = sim().await;
    let (mut rx, w, _stop) = spawn_writable(device("ctl", &s, CONTROLLER));
    next_matching(&mut rx, |r| r.asset_id == "tank-1").await; // connected
    assert_eq!(
        write(&w, "ctl", "power_limit", 42.5).await,
        WriteOutcome::Applied { readback: 42.5 }
    );
    assert_eq!(
        s.controller_register(1002),
        Some(0x422a),
        "float32 42.5 = 0x422a0000, most significant word first"
    );
    assert_eq!(
        write(&w, "ctl", "pump_enable", 1.0).await,
        WriteOutcome::Applied { readback: 1.0 }
    );
    // the device's own status follows, and polling sees it
    next_matching(&mut rx, |r| r.field == "pump_running" && r.value == 1.0).await;
}

#[tokio::test]
async fn a_write_the_device_ignores_is_a_readback_mismatch() {
    let s = sim().await;
    let (mut rx, w, _stop) = spawn_writable(device("ctl", &s, CONTROLLER));
    next_matching(&mut rx, |r| r.asset_id == "tank-1").await;
    assert_eq!(
        write(&w, "ctl", "locked", 7.0).await,
        WriteOutcome::ReadbackMismatch {
            wrote: 7.0,
            read: 0.0
        }
    );
}

#[tokio::test]
async fn unknown_unrepresentable_and_unreachable_writes_are_answered_without_touching_the_device() {
    let s = sim().await;
    let (mut rx, w, _stop) = spawn_writable(device("ctl", &s, CONTROLLER));
    next_matching(&mut rx, |r| r.asset_id == "tank-1").await;
    assert_eq!(
        write(&w, "ctl", "pump_running", 1.0).await,
        WriteOutcome::UnknownPoint,
        "read-only point"
    );
    assert_eq!(
        write(&w, "tank-1", "volume", 1.0).await,
        WriteOutcome::UnknownPoint
    );
    assert!(matches!(
        write(&w, "ctl", "pump_enable", 70000.0).await,
        WriteOutcome::NotRepresentable(_)
    ));
    assert_eq!(s.writes(), 0, "none of these reached the device");
    s.set_silent(true);
    assert!(matches!(
        write(&w, "ctl", "pump_enable", 1.0).await,
        WriteOutcome::Unreachable(_)
    ));
    // while disconnected, a write is answered at once, not queued
    let t = std::time::Instant::now();
    assert!(matches!(
        write(&w, "ctl", "pump_enable", 1.0).await,
        WriteOutcome::Unreachable(_)
    ));
    assert!(t.elapsed() < Duration::from_secs(2));
}

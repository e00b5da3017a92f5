//! The Modbus adapter against an independent implementation: a pymodbus
//! server (PyPI) serving known values in both word orders.
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use adapter_api::Quality;
use adapter_modbus::{ModbusAdapter, ModbusDevice};
use anyhow::{Context, Result, bail};
use e2e::free_port;
use tokio::sync::{mpsc, watch};

struct Peer(std::process::Child);
impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the Modbus adapter for `dev`; returns its readings and its stop
/// switch (dropping it stops the adapter).
fn run_adapter(
    dev: ModbusDevice,
    health: adapter_api::Health,
) -> Result<(mpsc::Receiver<adapter_api::Reading>, watch::Sender<bool>)> {
    let (stop, stop_rx) = watch::channel(false);
    let adapter = Box::new(ModbusAdapter::new(dev)?);
    let rx = e2e::run_adapter(adapter, health, mpsc::channel(1).1, stop_rx);
    Ok((rx, stop))
}

fn start_peer(port: u16) -> Result<Peer> {
    start_script("modbus_float_server.py", port)
}

fn start_script(name: &str, port: u16) -> Result<Peer> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../peers")
        .join(name);
    let mut child = Command::new(e2e::python())
        .arg(script)
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the pymodbus peer")?;
    let stdout = child.stdout.take().context("peer stdout")?;
    let peer = Peer(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if !line.starts_with("READY") {
        bail!("pymodbus peer did not start: {line:?}");
    }
    Ok(peer)
}

#[tokio::test]
async fn modbus_adapter_decodes_float32_and_uint32_in_both_word_orders_from_pymodbus() -> Result<()>
{
    let port = free_port();
    let _peer = start_peer(port)?;
    let yaml = format!(
        r#"name: pymodbus
address: "127.0.0.1:{port}"
poll_interval_ms: 200
points:
  - {{ asset: p, field: f_abcd, register: 0, type: f32 }}
  - {{ asset: p, field: f_cdab, register: 2, type: f32, word_order: little }}
  - {{ asset: p, field: n_abcd, register: 4, type: f32 }}
  - {{ asset: p, field: n_cdab, register: 6, type: f32, word_order: little }}
  - {{ asset: p, field: u_abcd, register: 20, type: u32 }}
  - {{ asset: p, field: u_cdab, register: 22, type: u32, word_order: little }}
  - {{ asset: p, field: i16, register: 30, type: i16 }}
  - {{ asset: p, field: input, table: input, register: 10, type: f32 }}
"#
    );
    let dev: ModbusDevice = serde_yaml::from_str(&yaml)?;
    let (mut rx, _stop) = run_adapter(dev, adapter_api::Health::default())?;

    let want: Vec<(&str, f64)> = vec![
        ("f_abcd", f64::from(123.456_f32)),
        ("f_cdab", f64::from(123.456_f32)),
        ("n_abcd", f64::from(-98765.4321_f64 as f32)),
        ("n_cdab", f64::from(-98765.4321_f64 as f32)),
        ("u_abcd", 305_419_896.0),
        ("u_cdab", 305_419_896.0),
        ("i16", -1234.0),
        ("input", 2500.5),
    ];
    let mut got = std::collections::HashMap::new();
    tokio::time::timeout(Duration::from_secs(15), async {
        while got.len() < want.len() {
            let r = rx.recv().await.expect("adapter alive");
            assert_eq!(r.quality, Quality::Good, "{r:?}");
            got.insert(r.field.clone(), r.value);
        }
    })
    .await
    .context("all points read from pymodbus")?;
    for (field, v) in want {
        assert_eq!(got[field], v, "{field}");
    }
    Ok(())
}

/// Issue 8, item 6: points 0-1, 2, 5 and 10-11 are merged into one request
/// (holes of 2 and 4 registers), which the device refuses with exception 2
/// because registers 3-4 and 6-9 are unmapped. Before the fix all four
/// points were bad for ever; now the request is split and each is good.
#[tokio::test]
async fn a_merged_request_over_unmapped_registers_is_split_and_every_point_reads_good() -> Result<()>
{
    let port = free_port();
    let _peer = start_script("modbus_sparse_server.py", port)?;
    let yaml = format!(
        r#"name: sparse
address: "127.0.0.1:{port}"
poll_interval_ms: 200
points:
  - {{ asset: p, field: a, register: 0, type: f32 }}
  - {{ asset: p, field: b, register: 2, type: u16 }}
  - {{ asset: p, field: c, register: 5, type: u16 }}
  - {{ asset: p, field: d, register: 10, type: f32 }}
"#
    );
    let dev: ModbusDevice = serde_yaml::from_str(&yaml)?;
    assert_eq!(
        adapter_modbus::codec::plan_with_gap(&dev.points, dev.max_gap).len(),
        1,
        "the default plan merges them"
    );
    let health = adapter_api::Health::default();
    let (mut rx, _stop) = run_adapter(dev, health.clone())?;
    let want = [("a", 1500.25), ("b", 7.0), ("c", 42.0), ("d", -12.5)];
    let mut good = std::collections::HashMap::new();
    tokio::time::timeout(Duration::from_secs(15), async {
        while good.len() < want.len() {
            let r = rx.recv().await.expect("adapter alive");
            if r.quality == Quality::Good {
                good.insert(r.field.clone(), r.value);
            }
        }
    })
    .await
    .with_context(|| format!("every point good; got {good:?}, health {:?}", health.get()))?;
    for (f, v) in want {
        assert_eq!(good[f], v, "{f}");
    }
    let h = health.get();
    assert!(
        h.connected && h.exceptions >= 1 && h.split_requests == 1,
        "{h:?}"
    );
    // with max_gap: 0 nothing is merged over a hole in the first place
    let dev: ModbusDevice = serde_yaml::from_str(&yaml.replacen(
        "poll_interval_ms: 200",
        "poll_interval_ms: 200\nmax_gap: 0",
        1,
    ))?;
    assert_eq!(dev.max_gap, 0);
    assert_eq!(
        adapter_modbus::codec::plan_with_gap(&dev.points, dev.max_gap).len(),
        3,
        "0-2 contiguous, 5, 10-11"
    );
    Ok(())
}

/// Issue 29, item 14: coils (function 1) and discrete inputs (function 2),
/// where pump-running and alarm contacts live, read from pymodbus; a coil
/// written (function 5) and read back.
#[tokio::test]
async fn coils_and_discrete_inputs_are_read_and_a_coil_is_written_with_a_read_back() -> Result<()> {
    let port = free_port();
    let _peer = start_peer(port)?;
    let yaml = format!(
        r#"name: pymodbus
address: "127.0.0.1:{port}"
poll_interval_ms: 200
points:
  - {{ asset: p, field: pump_running, table: coil, register: 0, type: bool }}
  - {{ asset: p, field: coil_1, table: coil, register: 1, type: bool }}
  - {{ asset: p, field: valve, table: coil, register: 6, type: bool, writable: true }}
  - {{ asset: p, field: coil_7, table: coil, register: 7, type: bool }}
  - {{ asset: p, field: high_level_alarm, table: discrete_input, register: 1, type: bool }}
  - {{ asset: p, field: di_3, table: discrete_input, register: 3, type: bool }}
  - {{ asset: p, field: di_4, table: discrete_input, register: 4, type: bool }}
"#
    );
    let dev: ModbusDevice = serde_yaml::from_str(&yaml)?;
    let (stop, stop_rx) = watch::channel(false);
    let (wtx, wrx) = mpsc::channel(4);
    let mut rx = e2e::run_adapter(
        Box::new(ModbusAdapter::new(dev)?),
        adapter_api::Health::default(),
        wrx,
        stop_rx,
    );
    let want: Vec<(&str, f64)> = vec![
        ("pump_running", 1.0),
        ("coil_1", 0.0),
        ("valve", 0.0),
        ("coil_7", 1.0),
        ("high_level_alarm", 1.0),
        ("di_3", 0.0),
        ("di_4", 1.0),
    ];
    let mut got = std::collections::HashMap::new();
    tokio::time::timeout(Duration::from_secs(15), async {
        while got.len() < want.len() {
            let r = rx.recv().await.expect("adapter alive");
            assert_eq!(r.quality, Quality::Good, "{r:?}");
            got.insert(r.field.clone(), r.value);
        }
    })
    .await
    .context("every bit read from pymodbus")?;
    for (field, v) in want {
        assert_eq!(got[field], v, "{field}");
    }
    // open the valve: function 5, then read back with function 1
    let (reply, outcome) = tokio::sync::oneshot::channel();
    wtx.send(adapter_api::WriteRequest {
        asset_id: "p".into(),
        field: "valve".into(),
        value: 1.0,
        reply,
    })
    .await?;
    let o = tokio::time::timeout(Duration::from_secs(10), outcome).await??;
    assert_eq!(o, adapter_api::WriteOutcome::Applied { readback: 1.0 });
    // a coil is off or on
    let (reply, outcome) = tokio::sync::oneshot::channel();
    wtx.send(adapter_api::WriteRequest {
        asset_id: "p".into(),
        field: "valve".into(),
        value: 0.5,
        reply,
    })
    .await?;
    let o = tokio::time::timeout(Duration::from_secs(10), outcome).await??;
    assert!(
        matches!(&o, adapter_api::WriteOutcome::NotRepresentable(d) if d.contains("0 or 1")),
        "{o:?}"
    );
    let _ = stop.send(true);
    Ok(())
}

/// Issue 29, item 14: a device that closes a working connection (idle
/// timeout, a gateway restart) is reconnected at once, before its points
/// are marked bad: no bad reading when the reconnect works (before: every
/// point flipped bad at each such drop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_reconnected_at_once_before_any_point_turns_bad() -> Result<()> {
    let port = free_port();
    let _peer = start_peer(port)?;
    let proxy = e2e::TcpProxy::start(format!("127.0.0.1:{port}").parse()?).await?;
    let yaml = format!(
        "name: pymodbus\naddress: \"{}\"\npoll_interval_ms: 100\npoints:\n  - {{ asset: p, field: f, register: 0, type: f32 }}\n",
        proxy.addr
    );
    let health = adapter_api::Health::default();
    let (mut rx, _stop) = run_adapter(serde_yaml::from_str(&yaml)?, health.clone())?;
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await?
        .context("adapter alive")?;
    assert_eq!(first.quality, Quality::Good);
    // a session that has worked for a while (QUICK_RETRY_AFTER)
    let until = tokio::time::Instant::now()
        + adapter_api::runner::QUICK_RETRY_AFTER
        + Duration::from_millis(500);
    while tokio::time::Instant::now() < until {
        let _ = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await;
    }
    proxy.drop_connections();
    let after = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut readings = Vec::new();
    while tokio::time::Instant::now() < after {
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
            readings.push(r);
        }
    }
    let bad: Vec<_> = readings
        .iter()
        .filter(|r| r.quality != Quality::Good)
        .collect();
    assert!(
        bad.is_empty(),
        "points turned bad on a drop the reconnect fixed: {bad:?}"
    );
    assert!(readings.len() >= 10, "readings went on: {}", readings.len());
    let h = health.get();
    assert!(h.reconnects >= 1 && h.connected, "{h:?}");
    Ok(())
}

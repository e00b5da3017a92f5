//! The executor's tests: headend commands, local writes, gauge records.
use super::*;
use crate::store::{Note, PointState};
use adapter_api::WriteOutcome;
use prost::Message;

const YAML: &str = r#"site_id: site-1
headend: { address: "127.0.0.1:7443" }
tls: { cert: a.pem, key: a.key, ca: ca.pem }
assets:
  - { id: ctl, kind: controller }
  - { id: t1, kind: tank, capacity: 20000 }
devices:
  - modbus:
      name: dev
      address: 127.0.0.1:502
      points:
        - { asset: ctl, field: power_limit, register: 1002, type: f32, writable: true }
setpoints:
  - { asset: ctl, field: power_limit, min: 0, max: 80, default: 50 }
"#;

struct Harness {
    commands: mpsc::Sender<v1::Command>,
    records: mpsc::Receiver<Record>,
    device: mpsc::Receiver<WriteRequest>,
    _stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
    _readings: mpsc::Receiver<Event>,
    gauge: mpsc::Sender<GaugeDelivery>,
    local: mpsc::Sender<LocalWrite>,
    _latest: Arc<Latest>,
    metrics: CommandMetrics,
}

fn start() -> Harness {
    start_in(tempfile::tempdir().unwrap())
}

fn start_in(dir: tempfile::TempDir) -> Harness {
    start_with(dir, Arc::new(Latest::default()))
}

fn start_with(dir: tempfile::TempDir, latest: Arc<Latest>) -> Harness {
    let cfg = crate::config::parse("t.yaml", YAML).unwrap();
    let (dev_tx, device) = mpsc::channel(4);
    let (rec_tx, records) = mpsc::channel(64);
    let (read_tx, readings) = mpsc::channel(64);
    let (cmd_tx, cmd_rx) = mpsc::channel(4);
    let (gauge, gauge_rx) = mpsc::channel(4);
    let (local, local_rx) = mpsc::channel(4);
    let (stop, stop_rx) = watch::channel(false);
    let metrics = CommandMetrics::default();
    let ex = Executor {
        clock: Default::default(),
        cfg: Arc::new(cfg),
        store: Store::open(dir.path()).unwrap(),
        writes: HashMap::from([("dev".to_string(), dev_tx)]),
        latest: latest.clone(),
        records: rec_tx,
        readings: read_tx,
        metrics: metrics.clone(),
    };
    let inputs = Inputs {
        commands: cmd_rx,
        gauge: gauge_rx,
        local: local_rx,
    };
    tokio::spawn(ex.run(inputs, stop_rx));
    Harness {
        commands: cmd_tx,
        records,
        device,
        _stop: stop,
        _dir: dir,
        _readings: readings,
        gauge,
        local,
        _latest: latest,
        metrics,
    }
}

/// The next log record: an ack (id, reason) or a delivery event.
async fn next_record(h: &mut Harness) -> v1::log_record::Kind {
    let r = tokio::time::timeout(Duration::from_secs(5), h.records.recv())
        .await
        .expect("a record in time")
        .expect("records open");
    if let Some(d) = r.durable {
        let _ = d.send(()); // as the log writer does once it is on disk
    }
    v1::LogRecord::decode(r.payload.as_slice())
        .unwrap()
        .kind
        .expect("a record")
}

#[tokio::test]
async fn a_gauge_record_completes_the_nearest_expected_load_once_and_says_its_source() {
    let mut h = start();
    let now = now_ms();
    let eta = |load: &str, eta_ms: i64| v1::Command {
        command_id: format!("eta-{load}"),
        expires_at_ms: now + 600_000,
        issued_seq: 2,
        action: Some(v1::command::Action::Eta(v1::EtaAction {
            load_ref: load.into(),
            tanks: vec!["t1".into()],
            planned_volume_l: 5000.0,
            eta_ms,
            eta_source: "manual".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    // one load due now, one in two days (outside the 12 h window)
    for (load, at) in [("near", now), ("later", now + 48 * 3_600_000)] {
        h.commands.send(eta(load, at)).await.unwrap();
        assert_eq!(next_ack(&mut h).await.1, "received");
        assert_eq!(next_ack(&mut h).await.1, "applied");
    }
    let record = GaugeDelivery {
        device: "vr".into(),
        asset: "t1".into(),
        start_ms: now - 1_800_000,
        end_ms: now - 600_000,
        start_volume_l: 1000.0,
        end_volume_l: 6000.0,
        start_tc_volume_l: None,
        end_tc_volume_l: None,
        source: "veeder-root://x/tank1/i202".into(),
    };
    h.gauge.send(record.clone()).await.unwrap();
    let v1::log_record::Kind::CommandAck(a) = next_record(&mut h).await else {
        panic!("the load's ETA command completes first")
    };
    assert_eq!(
        (a.command_id.as_str(), a.reason.as_str()),
        ("eta-near", "completed")
    );
    assert!(a.detail.contains("tank gauge's record"), "{}", a.detail);
    let v1::log_record::Kind::Event(e) = next_record(&mut h).await else {
        panic!("then the delivery event")
    };
    let Some(v1::event::Kind::Delivery(d)) = e.kind else {
        panic!("{e:?}")
    };
    assert_eq!(d.source, v1::delivery_event::Source::Gauge as i32);
    assert_eq!(d.phase, v1::delivery_event::Phase::Ended as i32);
    assert_eq!(
        (d.load_ref.as_str(), d.delivered_volume_l),
        ("near", 5000.0)
    );
    // the gauge repeats it at its next poll: nothing new
    h.gauge.send(record.clone()).await.unwrap();
    // nor is an older record (it ends before the newest one reported)
    h.gauge
        .send(GaugeDelivery {
            asset: "t1".into(),
            end_ms: now - 700_000,
            ..record
        })
        .await
        .unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), h.records.recv())
            .await
            .is_err(),
        "a repeated or older record is not reported again"
    );
}

fn setpoint(id: &str, value: f64, expires_at_ms: i64) -> v1::Command {
    v1::Command {
        command_id: id.into(),
        expires_at_ms,
        issued_seq: 1,
        action: Some(v1::command::Action::Setpoint(v1::Setpoint {
            asset_id: "ctl".into(),
            field: "power_limit".into(),
            value,
            duration_ms: 0,
        })),
        ..Default::default()
    }
}

async fn next_ack(h: &mut Harness) -> (String, String) {
    let r = tokio::time::timeout(Duration::from_secs(5), h.records.recv())
        .await
        .expect("an ack in time")
        .expect("records open");
    if let Some(d) = r.durable {
        let _ = d.send(());
    }
    match v1::LogRecord::decode(r.payload.as_slice()).unwrap().kind {
        Some(v1::log_record::Kind::CommandAck(a)) => (a.command_id, a.reason),
        other => panic!("not an ack: {other:?}"),
    }
}

#[tokio::test]
async fn a_command_arriving_after_its_expiry_is_answered_expired_and_never_written() {
    let mut h = start();
    h.commands
        .send(setpoint("c1", 10.0, now_ms() - 1000))
        .await
        .unwrap();
    assert_eq!(next_ack(&mut h).await, ("c1".into(), "received".into()));
    assert_eq!(next_ack(&mut h).await, ("c1".into(), "expired".into()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(h.device.try_recv().is_err(), "nothing reached the device");
}

#[tokio::test]
async fn a_command_delivered_twice_is_written_once() {
    let mut h = start();
    let c = setpoint("c2", 10.0, now_ms() + 60_000);
    h.commands.send(c.clone()).await.unwrap();
    h.commands.send(c).await.unwrap();
    let w = tokio::time::timeout(Duration::from_secs(5), h.device.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(w.value, 10.0);
    let _ = w.reply.send(WriteOutcome::Applied { readback: 10.0 });
    assert_eq!(next_ack(&mut h).await.1, "received");
    assert_eq!(next_ack(&mut h).await.1, "applied");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(h.device.try_recv().is_err(), "written once");
    assert!(h.records.try_recv().is_err(), "answered once");
}

#[tokio::test]
async fn an_out_of_range_setpoint_is_rejected_before_the_device() {
    let mut h = start();
    h.commands
        .send(setpoint("c3", 81.0, now_ms() + 60_000))
        .await
        .unwrap();
    assert_eq!(next_ack(&mut h).await.1, "received");
    assert_eq!(next_ack(&mut h).await.1, "rejected_out_of_range");
    assert!(h.device.try_recv().is_err());
}

/// An agent that starts with setpoint `id` in force past its end (the
/// agent was down when it ended): the executor and its first write, the
/// revert.
async fn ended_setpoint_at_start(id: &str) -> (Harness, WriteRequest) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .insert_new(id, 1, "setpoint", "received", 0, 1, None, &[])
        .unwrap();
    store
        .set_point(
            &PointState {
                point: "ctl.power_limit".into(),
                command_id: Some(id.into()),
                issued_seq: 1,
                value: 70.0,
                applied_ms: now_ms() - 120_000,
                ends_ms: Some(now_ms() - 60_000),
            },
            1,
            None,
            &[],
        )
        .unwrap();
    drop(store);
    let mut h = start_in(dir);
    let w = tokio::time::timeout(Duration::from_secs(5), h.device.recv())
        .await
        .unwrap()
        .unwrap();
    (h, w)
}

#[tokio::test]
async fn a_duration_that_ended_while_the_agent_was_down_is_reverted_at_start() {
    let (mut h, w) = ended_setpoint_at_start("c4").await;
    assert_eq!(w.value, 50.0, "the configured default");
    let _ = w.reply.send(WriteOutcome::Applied { readback: 50.0 });
    assert_eq!(next_ack(&mut h).await, ("c4".into(), "completed".into()));
}

#[tokio::test]
async fn a_failing_revert_shows_as_pending_until_a_retry_succeeds() {
    let (mut h, w) = ended_setpoint_at_start("c5").await;
    let _ = w.reply.send(WriteOutcome::Unreachable("timeout".into()));
    let w = tokio::time::timeout(REVERT_RETRY * 3, h.device.recv())
        .await
        .expect("the revert retried")
        .unwrap();
    assert_eq!(h.metrics.revert_failures.get(), 1);
    assert_eq!(h.metrics.reverts_pending.get(), 1, "in force past its end");
    let _ = w.reply.send(WriteOutcome::Applied { readback: 50.0 });
    assert_eq!(next_ack(&mut h).await, ("c5".into(), "completed".into()));
    assert_eq!(h.metrics.reverts_pending.get(), 0, "reverted at last");
}

async fn local(h: &Harness, value: f64) -> tokio::sync::oneshot::Receiver<Outcome> {
    let (reply, rx) = tokio::sync::oneshot::channel();
    h.local
        .send(LocalWrite {
            asset: "ctl".into(),
            field: "power_limit".into(),
            value,
            origin: "opcua".into(),
            user: "alice".into(),
            client: "urn:scada".into(),
            refused: None,
            reply,
        })
        .await
        .unwrap();
    rx
}

/// The next record must be a LocalCommand event; returns its id and seq.
async fn next_local_command(h: &mut Harness) -> (String, i64) {
    let v1::log_record::Kind::Event(e) = next_record(h).await else {
        panic!("a local command event first")
    };
    let Some(v1::event::Kind::LocalCommand(c)) = e.kind else {
        panic!("{e:?}")
    };
    assert_eq!((c.origin.as_str(), c.user.as_str()), ("opcua", "alice"));
    (c.command_id, c.issued_seq)
}

#[tokio::test]
async fn a_local_write_takes_the_same_path_as_a_headend_command_and_is_recorded_as_one() {
    let mut h = start();
    // out of range: refused before the device, recorded with its reason
    let rx = local(&h, 81.0).await;
    let (id, _) = next_local_command(&mut h).await;
    assert_eq!(next_ack(&mut h).await, (id, "rejected_out_of_range".into()));
    assert_eq!(rx.await.unwrap().reason, AckReason::RejectedOutOfRange);
    assert!(h.device.try_recv().is_err(), "never reached the device");

    // a headend command (issued_seq 1) is in force ...
    h.commands
        .send(setpoint("c1", 20.0, now_ms() + 60_000))
        .await
        .unwrap();
    let w = h.device.recv().await.unwrap();
    let _ = w.reply.send(WriteOutcome::Applied { readback: 20.0 });
    assert_eq!(next_ack(&mut h).await.1, "received");
    assert_eq!(next_ack(&mut h).await.1, "applied");
    // ... a local write supersedes it, with the newest issued_seq seen
    let rx = local(&h, 30.0).await;
    let (id, seq) = next_local_command(&mut h).await;
    assert_eq!(seq, 1);
    let w = h.device.recv().await.unwrap();
    assert_eq!(w.value, 30.0);
    let _ = w.reply.send(WriteOutcome::Applied { readback: 30.0 });
    assert_eq!(next_ack(&mut h).await, (id.clone(), "applied".into()));
    assert_eq!(next_ack(&mut h).await, ("c1".into(), "superseded".into()));
    let out = rx.await.unwrap();
    assert_eq!((out.reason, out.readback), (AckReason::Applied, Some(30.0)));
    // a command the headend issued later beats the local write
    let mut later = setpoint("c2", 40.0, now_ms() + 60_000);
    later.issued_seq = 2;
    h.commands.send(later).await.unwrap();
    let w = h.device.recv().await.unwrap();
    let _ = w.reply.send(WriteOutcome::Applied { readback: 40.0 });
    assert_eq!(next_ack(&mut h).await.1, "received");
    assert_eq!(next_ack(&mut h).await, ("c2".into(), "applied".into()));
    assert_eq!(next_ack(&mut h).await, (id, "superseded".into()));
    // a device that does not answer the local write: the outcome says so
    let rx = local(&h, 45.0).await;
    let (id, _) = next_local_command(&mut h).await;
    let w = h.device.recv().await.unwrap();
    let _ = w
        .reply
        .send(WriteOutcome::Unreachable("connection refused".into()));
    assert_eq!(next_ack(&mut h).await, (id, "device_unreachable".into()));
    assert_eq!(rx.await.unwrap().reason, AckReason::DeviceUnreachable);
}

/// Issue 29, item 5: a write the OPC UA server refused itself (a
/// read-only user, say) is recorded as a local command rejected with the
/// server's status, and never reaches the device.
#[tokio::test]
async fn a_write_the_opcua_server_refused_is_recorded_as_a_rejected_local_command() {
    let mut h = start();
    let (reply, rx) = tokio::sync::oneshot::channel();
    h.local
        .send(LocalWrite {
            asset: "ctl".into(),
            field: "power_limit".into(),
            value: 30.0,
            origin: "opcua".into(),
            user: "alice".into(),
            client: "urn:scada".into(),
            refused: Some("BadUserAccessDenied: user alice may not write".into()),
            reply,
        })
        .await
        .unwrap();
    let (id, _) = next_local_command(&mut h).await;
    assert_eq!(next_ack(&mut h).await, (id, "rejected_invalid".into()));
    let out = rx.await.unwrap();
    assert!(out.detail.contains("BadUserAccessDenied"), "{}", out.detail);
    assert!(h.device.try_recv().is_err(), "never reached the device");
}

/// A store left by a crash: `c` stored in `state` with its body, and an
/// answer in the outbox whose log write was never confirmed.
fn crashed_store(c: &v1::Command, state: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let body = prost::Message::encode_to_vec(c);
    store
        .insert_new(
            &c.command_id,
            c.issued_seq,
            "setpoint",
            state,
            c.expires_at_ms,
            now_ms(),
            Some(&body),
            &[Note::Ack(ack(&c.command_id, AckReason::Received, "", None))],
        )
        .unwrap()
        .unwrap();
    dir
}

fn device_reading(value: f64) -> adapter_api::Reading {
    adapter_api::Reading {
        asset_id: "ctl".into(),
        field: "power_limit".into(),
        value,
        unit: "kW".into(),
        quality: adapter_api::Quality::Good,
        source_ts_ms: now_ms() + 1,
        received_ts_ms: now_ms() + 1,
        source: "test".into(),
        error: String::new(),
        class: adapter_api::DropClass::Telemetry,
    }
}

#[tokio::test]
async fn a_command_a_crash_left_received_is_acted_on_at_start_and_its_unconfirmed_answer_sent_again()
 {
    let c = setpoint("c-recv", 33.0, now_ms() + 600_000);
    let mut h = start_in(crashed_store(&c, "received"));
    assert_eq!(
        next_ack(&mut h).await,
        ("c-recv".into(), "received".into()),
        "the outbox is handed over again"
    );
    let w = tokio::time::timeout(Duration::from_secs(5), h.device.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(w.value, 33.0);
    let _ = w.reply.send(WriteOutcome::Applied { readback: 33.0 });
    assert_eq!(next_ack(&mut h).await, ("c-recv".into(), "applied".into()));
    // a redelivery now is a duplicate: settled, answered once
    h.commands.send(c).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(h.records.try_recv().is_err(), "answered once");
}

#[tokio::test]
async fn a_write_a_crash_interrupted_is_settled_by_what_the_device_holds() {
    // the device holds the command's value: recorded applied, not written again
    let c = setpoint("c-held", 44.0, now_ms() - 1_000); // expired since: irrelevant, it landed
    let latest = Arc::new(Latest::default());
    let mut h = start_with(crashed_store(&c, "writing"), latest.clone());
    assert_eq!(next_ack(&mut h).await.1, "received");
    latest.update(&device_reading(44.0));
    let r = tokio::time::timeout(Duration::from_secs(5), h.records.recv())
        .await
        .unwrap()
        .unwrap();
    let Some(v1::log_record::Kind::CommandAck(a)) =
        v1::LogRecord::decode(r.payload.as_slice()).unwrap().kind
    else {
        panic!()
    };
    assert_eq!(a.reason, "applied");
    assert!(a.detail.contains("settled after a restart"), "{}", a.detail);
    assert!(h.device.try_recv().is_err(), "not written again");

    // the device does not hold it: acted on again with every check (here: expired)
    let c = setpoint("c-lost", 45.0, now_ms() - 1_000);
    let latest = Arc::new(Latest::default());
    let mut h = start_with(crashed_store(&c, "writing"), latest.clone());
    assert_eq!(next_ack(&mut h).await.1, "received");
    latest.update(&device_reading(50.0));
    assert_eq!(next_ack(&mut h).await, ("c-lost".into(), "expired".into()));
    assert!(h.device.try_recv().is_err());
}

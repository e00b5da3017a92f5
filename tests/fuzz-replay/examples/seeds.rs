//! Writes the seed inputs of every fuzz target into fuzz/corpus/<target>/
//! (run once; the fuzzer grows the corpus from them, `cargo fuzz cmin`
//! keeps it small). `cargo run -p fuzz-replay --example seeds`
use std::path::PathBuf;

use prost::Message;
use tankwatch_proto::v1;

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(name), data).expect("seed");
}

fn main() {
    // console: a masked form token, a datetime-local, a chart window, an
    // upload with a bad row, chart points (16 bytes each: ms, value)
    write("console", "local.txt", b"2026-12-07T14:30");
    write("console", "range.txt", b"1y");
    write(
        "console",
        "upload.csv",
        b"reference,tanks,planned_volume_l,eta\nPO-1,tank-1,9000,2027-02-01T06:00:00Z\n\"PO,2\",tank-9,x,\n",
    );
    let points: Vec<u8> = (0..40i64)
        .flat_map(|i| {
            let mut b = (1_700_000_000_000 + i * 3_600_000).to_le_bytes().to_vec();
            b.extend((1000.0 + i as f64).to_le_bytes());
            b
        })
        .collect();
    write("console", "points.bin", &points);
    // enrollment: a token, fingerprints, a real CSR, an issued chain, garbage DER
    write(
        "enrollment",
        "token.txt",
        b"twe_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );
    write(
        "enrollment",
        "fingerprint.txt",
        b"sha256:ab:CD:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab:cd:ef:01:23:45:67:89",
    );
    let req = tankwatch_tls::csr::new_key_and_csr("s1").expect("csr");
    write("enrollment", "csr.der", &req.csr_der);
    let (ca, _) = tankwatch_pki::Ca::create("seed", 1).expect("ca");
    let chain = ca
        .sign_agent_csr(&req.csr_der, "s1", tankwatch_pki::Lifetime::days(1))
        .expect("chain");
    write("enrollment", "chain.pem", chain.as_bytes());
    let mut cut = req.csr_der.clone();
    cut.truncate(cut.len() / 2);
    write("enrollment", "csr-cut.der", &cut);
    write(
        "enrollment",
        "nested.der",
        &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x30, 0x80],
    );
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let demo = std::fs::read(root.join("configs/site-demo.yaml")).expect("demo config");
    write("agent_config", "demo.yaml", &demo);
    let small = b"site_id: s\nheadend: { address: 127.0.0.1:7443 }\ntls: { cert: a, key: b, ca: c }\nassets:\n  - { id: tank-1, kind: tank, capacity: 20000 }\ndevices:\n  - modbus:\n      name: atg\n      address: 127.0.0.1:502\n      max_gap: 0\n      points:\n        - { asset: tank-1, field: volume, register: 0, type: f32, unit: L, writable: true }\nsetpoints:\n  - { asset: tank-1, field: volume, min: 0, max: 10 }\n";
    write("agent_config", "small.yaml", small);
    write(
        "agent_config",
        "laughs.yaml",
        b"a: &a [lol, lol]\nb: [*a, *a]\n",
    );
    write(
        "agent_config",
        "deep.yaml",
        format!("k: {}{}", "[".repeat(40), "]".repeat(40)).as_bytes(),
    );
    write("agent_config", "nul.yaml", b"site_id: \"s\\0\"\n");
    write("agent_config", "block.yaml", b"x: |\n  &a *b\ny: 1\n");

    let reading = |seq: u64, field: &str| v1::Reading {
        seq,
        asset_id: "tank-1".into(),
        field: field.into(),
        value: 1234.5,
        unit: "L".into(),
        quality: v1::Quality::Good as i32,
        source_ts_ms: 1,
        received_ts_ms: 2,
        source: "modbus://atg".into(),
        error: String::new(),
    };
    let hello = v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Hello(v1::Hello {
            agent_version: "0.1.0".into(),
            site_id: "site-1".into(),
            log_id: 7,
            assets: vec![v1::Asset {
                asset_id: "ctl-1".into(),
                kind: v1::AssetKind::Controller as i32,
                writable: vec![v1::WritablePoint {
                    field: "power_limit".into(),
                    min: Some(0.0),
                    max: Some(80.0),
                    default: Some(50.0),
                }],
                ..Default::default()
            }],
            ..Default::default()
        })),
    };
    write("agent_message", "hello.pb", &hello.encode_to_vec());
    let batch = v1::AgentMessage {
        msg: Some(v1::agent_message::Msg::Batch(v1::TelemetryBatch {
            log_id: 7,
            first_seq: 1,
            last_seq: 4,
            readings: vec![reading(1, "volume"), reading(2, "alarm.high\u{0}")],
            gaps: vec![v1::Gap {
                seq: 3,
                log_id: 7,
                first_seq: 1,
                last_seq: 2,
                count: 1,
                reason: "disk_full".into(),
                class: "telemetry".into(),
                ..Default::default()
            }],
            command_acks: vec![v1::CommandAck {
                seq: 4,
                command_id: "cmd-1".into(),
                reason: "applied".into(),
                ..Default::default()
            }],
            ..Default::default()
        })),
    };
    write("agent_message", "batch.pb", &batch.encode_to_vec());
    let rec = v1::LogRecord {
        kind: Some(v1::log_record::Kind::Reading(reading(0, "volume"))),
    };
    write("agent_message", "record.pb", &rec.encode_to_vec());
    write("agent_message", "empty.pb", b"");
    write(
        "agent_message",
        "junk.pb",
        &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
    );

    for (name, body) in [
        (
            "setpoint.json",
            r#"{"kind":"setpoint","asset":"site-1/ctl-1","field":"power_limit","value":40,"duration_s":600,"idempotency_key":"t-1"}"#,
        ),
        (
            "split.json",
            r#"{"kind":"setpoint","site":"site-1","field":"power_limit","value":60,"step":0.5,"expires_in_s":60}"#,
        ),
        (
            "eta.json",
            r#"{"kind":"eta","load_id":"load-1","expires_at":"2026-11-24T00:00:00Z"}"#,
        ),
        (
            "load.json",
            r#"{"site":"site-1","reference":"PO-1","tanks":["tank-1"],"product":"diesel","planned_volume_l":5000,"eta":"2026-11-23T08:00:00Z","eta_source":"carrier_api"}"#,
        ),
        (
            "patch.json",
            r#"{"eta":253402300800000,"eta_source":"email","planned_volume_l":1e308,"status":"cancelled"}"#,
        ),
        ("nul.json", "{\"reference\":\"a\\u0000b\"}"),
        ("time.txt", "9999-12-31T23:59:59Z"),
    ] {
        write("rest_body", name, body.as_bytes());
    }
    write(
        "modbus_decode",
        "f32.bin",
        &[0x44, 0x9a, 0x52, 0x2b, 0, 0, 0, 0],
    );
    write(
        "modbus_decode",
        "nan.bin",
        &[0x7f, 0xc0, 0, 0, 0x7f, 0xf8, 0, 0],
    );
    write("modbus_decode", "one.bin", &[1, 2]);
    write("modbus_decode", "odd.bin", &[1, 2, 3]);
    write("modbus_decode", "empty.bin", b"");
    println!("seeds written to fuzz/corpus");
    // MQTT: plain, JSON, and Sparkplug B payloads (births, aliased data, a rebirth command)
    write("mqtt_payload", "plain.txt", b" 12.5\n");
    write(
        "mqtt_payload",
        "json.json",
        br#"{"a": [{"b": 1.5}], "ts": "2026-11-23T10:00:00.25+01:00"}"#,
    );
    let metric = |name: &str, alias: u64, v: f64| {
        sparkplug_b::Metric::new(name, sparkplug_b::MetricValue::Double(v)).with_alias(alias)
    };
    let birth = sparkplug_b::Payload::new()
        .with_timestamp(1)
        .with_seq(0)
        .with_metric(sparkplug_b::Metric::new(
            "bdSeq",
            sparkplug_b::MetricValue::UInt64(3),
        ))
        .with_metric(metric("Volume", 1, 100.0));
    write(
        "mqtt_payload",
        "nbirth.pb",
        &sparkplug_b::encode(&birth, sparkplug_b::EncodeOptions::birth()),
    );
    let data = sparkplug_b::Payload::new()
        .with_seq(1)
        .with_metric(sparkplug_b::Metric::aliased(
            1,
            sparkplug_b::MetricValue::Double(99.0),
        ));
    write(
        "mqtt_payload",
        "ddata.pb",
        &sparkplug_b::encode(&data, sparkplug_b::EncodeOptions::birth()),
    );
    write(
        "mqtt_payload",
        "rebirth.pb",
        &adapter_mqtt::sparkplug::rebirth_payload(5),
    );
    // Veeder-Root: the simulated console's replies in both formats, with
    // delivery records and an alarm, one cut short, and an error answer
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let sim = atg_sim::Simulator::start(
            "127.0.0.1:0".parse().expect("addr"),
            atg_sim::SimConfig {
                tanks: 3,
                ..atg_sim::SimConfig::default()
            },
        )
        .await
        .expect("sim");
        sim.set_frozen(true);
        sim.record_delivery(0, 1500.0);
        sim.record_delivery(0, 800.0);
        sim.set_volume(2, 100.0);
        for cmd in ["i20100", "i20200", "i20500", "I20100", "I20200", "I20500"] {
            let mut r = vec![1u8];
            r.extend(sim.veeder_root_reply(cmd));
            write("veeder_root_reply", &format!("{cmd}.bin"), &r);
        }
        let mut cut = sim.veeder_root_reply("i20200");
        cut.truncate(cut.len() / 2);
        cut.push(3);
        write("veeder_root_reply", "cut.bin", &cut);
    });
    write(
        "veeder_root_reply",
        "unsupported.bin",
        b"\x01\x019999FF1B\x03",
    );
}

//! One function per fuzz target: each takes arbitrary bytes and must never
//! panic, hang or allocate without bound. `fuzz/fuzz_targets/*.rs` call
//! them under libFuzzer (nightly); `tests/replay.rs` runs every file of the
//! committed corpus (`fuzz/corpus/<target>/`) through them on stable, in
//! `scripts/test.sh`.

/// The agent's YAML configuration: the size/anchor/nesting guard, then the
/// parser and every validation (`edge-agent check-config` without the
/// file-system checks).
pub fn agent_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = edge_agent::config::parse("fuzz.yaml", text);
    }
}

/// An agent's gRPC message as the headend decodes, validates and cleans it
/// before SQL (Hello, TelemetryBatch), and an agent log record.
pub fn agent_message(data: &[u8]) {
    headend::ingest::fuzz_agent_message(data);
}

/// Every REST JSON body (commands, loads, load patches) and the checks
/// behind them; time parsing and rendering.
pub fn rest_body(data: &[u8]) {
    headend::api::fuzz_bodies(data);
}

/// The Modbus register decoder, for every type and word/byte order.
pub fn modbus_decode(data: &[u8]) {
    use adapter_modbus::config::{DataType, Order};
    let regs: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    for ty in [
        DataType::Bool,
        DataType::U16,
        DataType::I16,
        DataType::U32,
        DataType::I32,
        DataType::F32,
        DataType::U64,
        DataType::I64,
        DataType::F64,
    ] {
        for wo in [Order::Big, Order::Little] {
            for bo in [Order::Big, Order::Little] {
                let _ = adapter_modbus::codec::decode(&regs, ty, wo, bo);
            }
        }
    }
}

/// What an MQTT broker delivers: the bytes as a plain and a JSON payload
/// of a `topic` point, and as a Sparkplug B payload of every message type
/// to an edge node that has been born (aliases known) and one that has not.
pub fn mqtt_payload(data: &[u8]) {
    use adapter_mqtt::sparkplug::Node;
    use sparkplug_b::MessageType as M;
    let point = |json: &str| -> adapter_mqtt::config::Point {
        serde_json::from_str(json).expect("a valid point")
    };
    let plain = point(r#"{"topic": "a/+", "asset": "t", "field": "v"}"#);
    let js = point(
        r#"{"topic": "a/#", "json_path": "a.0.b", "ts_path": "ts", "asset": "t", "field": "v"}"#,
    );
    let _ = adapter_mqtt::decode(&plain, data, 0);
    let _ = adapter_mqtt::decode(&js, data, 0);
    if let Ok(t) = std::str::from_utf8(data) {
        let _ = adapter_mqtt::topic::check_filter(t);
        let _ = adapter_mqtt::topic::matches(t, "a/b/c");
        let _ = adapter_mqtt::topic::matches("a/+/#", t);
        let _ = adapter_mqtt::json::rfc3339_ms(t);
    }
    let birth = adapter_mqtt::sparkplug::command_payload(
        "Volume",
        sparkplug_b::MetricValue::Double(1.0),
        0,
    );
    for device in [None, Some("atg")] {
        let mut born = Node::new(device.map(String::from));
        born.handle(M::NBirth, None, &birth, 0);
        let mut unborn = Node::new(device.map(String::from));
        for ty in [
            M::NBirth,
            M::NDeath,
            M::NData,
            M::DBirth,
            M::DDeath,
            M::DData,
            M::NCmd,
        ] {
            let _ = born.handle(ty, device, data, 1);
            let _ = unborn.handle(ty, device, data, 1);
        }
    }
}

/// A fuzz target: arbitrary bytes in, never a panic.
pub type Target = fn(&[u8]);

/// The targets by name (the corpus folder names).
/// What a Veeder-Root console (or whatever answers on its port) sends:
/// the bytes cut into replies by the framer (fed in pieces whose size the
/// first byte picks), each checked and parsed as the answer to every
/// function in both formats; and the bytes as report data directly.
pub fn veeder_root_reply(data: &[u8]) {
    use adapter_veeder_root::frame::{Command, Format, Framer, Function};
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut framer = Framer::new();
    let mut replies = Vec::new();
    for chunk in data.chunks(step) {
        let mut r = framer.push(chunk);
        while let Some(x) = r {
            replies.push(x);
            r = framer.next_reply();
        }
    }
    let commands: Vec<Command> = [Function::Inventory, Function::Deliveries, Function::Alarms]
        .into_iter()
        .flat_map(|f| {
            [
                Command::new(f, 0, Format::Computer),
                Command::new(f, 0, Format::Display),
            ]
        })
        .collect();
    for raw in replies.into_iter().flatten() {
        for c in &commands {
            let _ = adapter_veeder_root::decode(c, &raw);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        for c in &commands {
            let _ = adapter_veeder_root::computer::parse(c.function, text);
            let _ = adapter_veeder_root::display::parse(c.function, text);
        }
    }
}

/// What crosses the enrollment and renewal boundary: the token's and the
/// CA fingerprint's text forms, a CSR (DER) as the issuing CA signs it
/// (headend side), and an issued chain (PEM) as the agent checks it.
pub fn enrollment(data: &[u8]) {
    static CA: std::sync::OnceLock<Option<tankwatch_pki::Ca>> = std::sync::OnceLock::new();
    let text = String::from_utf8_lossy(data);
    let _ = headend::domain::secret::parse_enrollment_token(&text);
    let _ = tankwatch_tls::parse_fingerprint(&text);
    let _ = edge_agent::renew::check_issued(&text, b"key", "s1");
    let _ = tankwatch_tls::agent_cert(data);
    if let Some(ca) = CA.get_or_init(|| tankwatch_pki::Ca::create("fuzz", 1).ok().map(|c| c.0)) {
        let _ = ca.sign_agent_csr(data, "s1", tankwatch_pki::Lifetime::days(1));
    }
}

/// The CSV imports (observations and loads at the headend, a site's
/// history for `edge-agent backfill`): every row reported or parsed,
/// never a panic, whatever the bytes.
pub fn csv_import(data: &[u8]) {
    static SITE: std::sync::OnceLock<Option<edge_agent::AgentConfig>> = std::sync::OnceLock::new();
    let text = String::from_utf8_lossy(data);
    let now = 1_795_392_000_000;
    let _ = headend::services::observations::csv_rows("north", &text);
    let _ = headend::services::load_import::csv_rows("north", &text, now);
    let site = SITE.get_or_init(|| {
        edge_agent::config::parse(
            "fuzz.yaml",
            "site_id: s1\nheadend: { address: 127.0.0.1:7443 }\ntls: { cert: a.pem, key: a.key, ca: ca.pem }\nassets:\n  - { id: tank-1, kind: tank, capacity: 20000 }\ndevices:\n  - modbus:\n      name: atg\n      address: 127.0.0.1:502\n      points:\n        - { asset: tank-1, field: volume, register: 0, type: f32, unit: L }\n",
        )
        .ok()
    });
    if let Some(cfg) = site {
        let _ = edge_agent::backfill::parse(std::path::Path::new("h.csv"), &text, cfg, now);
    }
}

/// The inventory rules on arbitrary numbers: the bytes as hourly volumes,
/// the newest observation, deliveries and an ETA through the whole
/// assessment (NaN, infinities, negative and huge values included).
pub fn inventory_rules(data: &[u8]) {
    use headend::domain::assess::{Inputs, TankConfig, assess};
    use headend::domain::inventory::{Candidate, ObsSource, Observation};
    let nums: Vec<f64> = data
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    let Some((&cap, rest)) = nums.split_first() else {
        return;
    };
    const H: i64 = 3_600_000;
    let t0 = 1_795_392_000_000;
    let hourly: Vec<(i64, f64)> = rest
        .iter()
        .enumerate()
        .map(|(i, v)| (t0 + i as i64 * H, *v))
        .collect();
    let now = t0 + hourly.len() as i64 * H;
    let last = rest.last().copied().unwrap_or(0.0);
    let cands = [Candidate {
        source: ObsSource::Atg,
        obs: Observation {
            at_ms: now,
            volume_l: last,
            water_mm: rest.first().copied(),
        },
        confidence: 1.0,
    }];
    let deliveries = [(t0 + H, t0 + 2 * H, rest.get(1).copied())];
    let tank = TankConfig {
        capacity_l: cap,
        low_l: cap * 0.25,
        critical_l: cap * 0.1,
        floor_l: rest.get(2).copied().unwrap_or(0.0),
        water_limit_mm: Some(50.0),
    };
    // a holiday on a day the data picks (its hours walked as a Sunday's)
    let tz = headend::services::evaluate::zone("Europe/Berlin");
    let day = format!("2026-11-{:02}", (cap as i64).rem_euclid(28) + 1)
        .parse::<headend::domain::calendar::Holiday>()
        .map(|h| h.0);
    let cal = headend::domain::calendar::Calendar::new(tz).with_holidays(day.ok());
    let _ = assess(&Inputs {
        tank,
        stale_after_ms: 6 * H,
        cal: &cal,
        hourly: &hourly,
        candidates: &cands,
        deliveries: &deliveries,
        next_eta_ms: Some(now + 24 * H),
        flat_since_ms: rest.get(3).map(|v| now - v.abs().min(1e9) as i64),
        now_ms: now,
    });
    let samples: Vec<(i64, f64)> = hourly.iter().map(|(t, v)| (t / 60, *v)).collect();
    let _ = headend::domain::deliveries::verdict(&samples, last);
}

/// The operator console's own parsers (form token, `datetime-local`,
/// chart window, an upload shown against its report) and its chart.
pub fn console(data: &[u8]) {
    headend::api::console::fuzz(data);
}

pub const TARGETS: &[(&str, Target)] = &[
    ("console", console),
    ("csv_import", csv_import),
    ("inventory_rules", inventory_rules),
    ("enrollment", enrollment),
    ("agent_config", agent_config),
    ("agent_message", agent_message),
    ("rest_body", rest_body),
    ("modbus_decode", modbus_decode),
    ("mqtt_payload", mqtt_payload),
    ("veeder_root_reply", veeder_root_reply),
];

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
        DataType::U16,
        DataType::I16,
        DataType::U32,
        DataType::I32,
        DataType::F32,
        DataType::F64,
    ] {
        for wo in [Order::Big, Order::Little] {
            for bo in [Order::Big, Order::Little] {
                let _ = adapter_modbus::codec::decode(&regs, ty, wo, bo);
            }
        }
    }
}

/// A fuzz target: arbitrary bytes in, never a panic.
pub type Target = fn(&[u8]);

/// The targets by name (the corpus folder names).
pub const TARGETS: &[(&str, Target)] = &[
    ("agent_config", agent_config),
    ("agent_message", agent_message),
    ("rest_body", rest_body),
    ("modbus_decode", modbus_decode),
];

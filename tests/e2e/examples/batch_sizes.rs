//! Message sizes of an agent log's entries as the uplink sends them (issue
//! 30, ADR 0013): v1 `TelemetryBatch` against `CompactBatch`, in live-sized
//! and backlog-sized batches, gzip and zstd measured on the same bytes by
//! `scripts/compression.py` (the files this writes).
//!
//! ```sh
//! cargo run -p e2e --example batch_sizes -- LOG_DIR OUT_DIR [NOISE]
//! python3 scripts/compression.py OUT_DIR   # with `pip install zstandard`
//! ```
//! `NOISE` (litres or mm, e.g. 3): adds a gauge's reading noise, uniform in
//! ±NOISE, to every reading that is not 0 or 1 (the simulator has none;
//! real probes do, and noise is what compresses worst).

use anyhow::{Context, Result};
use prost::Message;
use tankwatch_proto::compact::Encoder;
use tankwatch_proto::v1;

fn batches(
    log: &sflog::Log,
    size: usize,
    limit: usize,
    noise: f64,
) -> Result<Vec<v1::TelemetryBatch>> {
    let mut rng = fastrand::Rng::with_seed(30);
    let mut out = Vec::new();
    let mut from = 1;
    while out.len() < limit {
        let entries = log.read_from(from, size, usize::MAX)?;
        let Some(last) = entries.last().map(|e| e.seq) else {
            break;
        };
        let mut b = v1::TelemetryBatch {
            log_id: log.log_id(),
            first_seq: entries[0].seq,
            last_seq: last,
            ..Default::default()
        };
        for e in entries {
            if let Ok(v1::LogRecord {
                kind: Some(v1::log_record::Kind::Reading(mut r)),
            }) = v1::LogRecord::decode(e.payload.as_slice())
            {
                r.seq = e.seq;
                if noise > 0.0 && r.value != 0.0 && r.value != 1.0 {
                    // as the f32 register a gauge would serve
                    r.value = f64::from((r.value + noise * (rng.f64() * 2.0 - 1.0)) as f32);
                }
                b.readings.push(r);
            }
        }
        from = last + 1;
        out.push(b);
    }
    Ok(out)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, out) = (
        args.first().context("LOG_DIR")?,
        args.get(1).context("OUT_DIR")?,
    );
    let noise: f64 = args.get(2).map(|n| n.parse()).transpose()?.unwrap_or(0.0);
    let log = sflog::Log::open(std::path::Path::new(dir), &sflog::Options::default())?;
    println!("batch  readings  v1 bytes/reading  compact bytes/reading");
    // live: ~2 s of the demo site (linger); backlog: 1000-reading batches
    for (name, size, limit) in [("live", 46, 200), ("backlog", 1000, 40)] {
        let path = std::path::Path::new(out).join(name);
        std::fs::create_dir_all(&path)?;
        let mut enc = Encoder::new();
        let (mut n, mut v1_bytes, mut compact_bytes) = (0usize, 0usize, 0usize);
        for (i, b) in batches(&log, size, limit, noise)?.into_iter().enumerate() {
            let c = enc.encode(&b).context("encodes")?;
            let msg = v1::AgentMessage {
                msg: Some(v1::agent_message::Msg::Compact(c)),
            };
            let bytes = msg.encode_to_vec();
            // the first batch defines the points: a session's one-off cost
            if i > 0 {
                n += b.readings.len();
                v1_bytes += v1::AgentMessage {
                    msg: Some(v1::agent_message::Msg::Batch(b)),
                }
                .encoded_len();
                compact_bytes += bytes.len();
            }
            std::fs::write(path.join(format!("{i:04}.bin")), bytes)?;
        }
        println!(
            "{name:7} {n:8} {:17.1} {:22.1}",
            v1_bytes as f64 / n.max(1) as f64,
            compact_bytes as f64 / n.max(1) as f64
        );
    }
    Ok(())
}

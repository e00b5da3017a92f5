//! A fleet's readings written straight through the headend's store (no
//! gRPC), time-major as agents send them: the store and backup benchmarks.
use headend::store::{Db, Group};
use tankwatch_proto::v1;

pub const MINUTE: i64 = 60_000;
pub const FIELDS: [(&str, &str); 6] = [
    ("volume", "L"),
    ("tc_volume", "L"),
    ("ullage", "L"),
    ("height", "mm"),
    ("water_height", "mm"),
    ("temperature", "degC"),
];
pub const SITES: usize = 10;
pub const TANKS: usize = 4;

pub fn site(i: usize) -> String {
    format!("site-{i:02}")
}

/// The fleet's sites and where each one's seqs stand.
pub struct Fleet {
    seq: [u64; SITES],
    pub t0: i64,
}

impl Fleet {
    /// Records the sites' hellos; readings start `minutes` before now.
    pub async fn new(db: &Db, minutes: u64) -> anyhow::Result<Fleet> {
        for s in 0..SITES {
            let h = v1::Hello {
                site_id: site(s),
                log_id: 7,
                ..Default::default()
            };
            db.record_hello(headend::store::HelloInfo {
                site: &site(s),
                hello: &h,
            })
            .await?;
        }
        let now = headend::wallclock::now_ms() / MINUTE * MINUTE;
        Ok(Fleet {
            seq: [0; SITES],
            t0: now - minutes as i64 * MINUTE,
        })
    }

    /// One commit: minutes `m..m + span` of every point of every site.
    pub async fn write(&mut self, db: &Db, m: u64, span: u64) -> anyhow::Result<()> {
        let mut groups = Vec::with_capacity(SITES);
        for (s, next) in self.seq.iter_mut().enumerate() {
            let mut readings = Vec::with_capacity((span as usize) * TANKS * FIELDS.len());
            for k in m..m + span {
                for tank in 0..TANKS {
                    for (f, unit) in FIELDS {
                        *next += 1;
                        readings.push(v1::Reading {
                            seq: *next,
                            asset_id: format!("tank-{}", tank + 1),
                            field: f.into(),
                            value: 20_000.0 - k as f64 * 0.5 + tank as f64,
                            unit: unit.into(),
                            quality: v1::Quality::Good as i32,
                            source_ts_ms: self.t0 + k as i64 * MINUTE,
                            received_ts_ms: self.t0 + k as i64 * MINUTE,
                            source: format!("modbus://10.0.0.{s}:502/unit1/hr{}", tank * 20),
                            error: String::new(),
                        });
                    }
                }
            }
            let first = readings.first().map(|r| r.seq).unwrap_or(1);
            groups.push(Group {
                site: headend::domain::SiteId::parse(&site(s)).expect("a site id"),
                batches: vec![v1::TelemetryBatch {
                    log_id: 7,
                    first_seq: first,
                    last_seq: *next,
                    readings,
                    ..Default::default()
                }],
            });
        }
        for r in db.ingest_groups(groups).await {
            r?;
        }
        Ok(())
    }

    /// Minutes per commit for ~2,000 readings per site and commit.
    pub fn per_commit() -> u64 {
        2_000 / (TANKS * FIELDS.len()) as u64
    }
}

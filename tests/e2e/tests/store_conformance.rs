//! The telemetry store's conformance suite: every test runs against both
//! backends (SQLite file, PostgreSQL database) through the same API and
//! must see the same answers.

use e2e::sid;
use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use e2e::pg;
use headend::domain::{Quality, UnixMs};
use headend::store::{Db, Group, ReadingQuery, Retention, RollupQuery};
use tankwatch_proto::v1;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

/// A store of each backend, fresh.
struct Stores {
    _dir: tempfile::TempDir,
    sqlite: Db,
    pg: Db,
    pg_db: pg::TempDb,
}

impl Stores {
    async fn new(retention: Retention) -> Result<Stores> {
        let dir = tempfile::tempdir()?;
        let sqlite = Db::connect_with(&e2e::sqlite_url(dir.path()), 4, retention).await?;
        let pg_db = pg::fresh_database().await?;
        let pg = Db::connect_with(&pg_db.url, 4, retention).await?;
        Ok(Stores {
            _dir: dir,
            sqlite,
            pg,
            pg_db,
        })
    }
    fn both(&self) -> [(&'static str, &Db); 2] {
        [("sqlite", &self.sqlite), ("postgres", &self.pg)]
    }
    async fn drop(self) -> Result<()> {
        self.pg.pool().close().await;
        self.pg_db.drop().await
    }
}

fn reading(seq: u64, asset: &str, field: &str, value: f64, ts: i64) -> v1::Reading {
    v1::Reading {
        seq,
        asset_id: asset.into(),
        field: field.into(),
        value,
        unit: "L".into(),
        quality: v1::Quality::Good as i32,
        source_ts_ms: ts,
        received_ts_ms: ts,
        source: "modbus://sim/hr0".into(),
        error: String::new(),
    }
}

fn batch(readings: Vec<v1::Reading>) -> v1::TelemetryBatch {
    let first = readings.iter().map(|r| r.seq).min().unwrap_or(1);
    let last = readings.iter().map(|r| r.seq).max().unwrap_or(1);
    v1::TelemetryBatch {
        log_id: 42,
        first_seq: first,
        last_seq: last,
        readings,
        ..Default::default()
    }
}

async fn hello(db: &Db, site: &str) -> Result<()> {
    let h = v1::Hello {
        site_id: site.into(),
        log_id: 42,
        agent_version: "test".into(),
        ..Default::default()
    };
    db.record_hello(headend::store::HelloInfo { site, hello: &h })
        .await?;
    Ok(())
}

fn all(
    site: &'static str,
    asset: &'static str,
    field: Option<&'static str>,
) -> ReadingQuery<'static> {
    ReadingQuery {
        site: Box::leak(Box::new(sid(site))),
        asset,
        field,
        from_ms: UnixMs::from_ms(i64::MIN),
        to_ms: UnixMs::from_ms(i64::MAX),
        limit: 100_000,
        newest_first: false,
    }
}

fn now() -> i64 {
    headend::wallclock::now_ms()
}

#[tokio::test]
async fn a_batch_delivered_twice_is_stored_once_and_rolled_up_once_on_both_backends() -> Result<()>
{
    let s = Stores::new(Retention::default()).await?;
    let t0 = now() / HOUR * HOUR - 2 * HOUR;
    for (name, db) in s.both() {
        hello(db, "s1").await?;
        let b = batch(
            (1..=120)
                .map(|i| reading(i, "tank-1", "volume", i as f64, t0 + i as i64 * 60_000))
                .collect(),
        );
        assert_eq!(db.ingest(&sid("s1"), &b).await?, 120, "{name}");
        // the same batch again (a redelivery after a lost ack) and a batch
        // overlapping it: nothing twice, the rollups unchanged by repeats
        assert_eq!(db.ingest(&sid("s1"), &b).await?, 120, "{name}");
        let overlap = batch(
            (100..=130)
                .map(|i| reading(i, "tank-1", "volume", i as f64, t0 + i as i64 * 60_000))
                .collect(),
        );
        assert_eq!(db.ingest(&sid("s1"), &overlap).await?, 130, "{name}");
        let rows = db.readings(&all("s1", "tank-1", None)).await?;
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (1..=130).collect::<Vec<_>>(), "{name}");
        let h = db
            .rollups(&RollupQuery {
                site: &sid("s1"),
                asset: "tank-1",
                field: Some("volume"),
                from_ms: UnixMs::from_ms(i64::MIN),
                to_ms: UnixMs::from_ms(i64::MAX),
                limit: 1000,
            })
            .await?;
        // minutes 1..=59 in hour 0, 60..=119 in hour 1, 120..=130 in hour 2
        let summary: Vec<(i64, i64, f64, f64, f64, f64)> = h
            .iter()
            .map(|r| (r.hour_ms.ms() - t0, r.n, r.min, r.max, r.mean, r.last))
            .collect();
        assert_eq!(
            summary,
            vec![
                (0, 59, 1.0, 59.0, 30.0, 59.0),
                (HOUR, 60, 60.0, 119.0, 89.5, 119.0),
                (2 * HOUR, 11, 120.0, 130.0, 125.0, 130.0),
            ],
            "{name}"
        );
    }
    s.drop().await
}

/// A long window's chart reads its hourly rollups merged in SQL into
/// buckets of whole hours (the console's 1-year chart: 13 h), with the
/// same counts, extremes and means on both backends.
#[tokio::test]
async fn hourly_rollups_merge_into_longer_buckets_alike_on_both_backends() -> Result<()> {
    let s = Stores::new(Retention::default()).await?;
    let twelve = 12 * HOUR;
    let t0 = now() / twelve * twelve - 2 * twelve;
    for (name, db) in s.both() {
        hello(db, "s1").await?;
        // every 10 minutes for 30 hours: 180 readings, value = index
        let b = batch(
            (0..180u64)
                .map(|i| reading(i + 1, "tank-1", "volume", i as f64, t0 + i as i64 * 600_000))
                .collect(),
        );
        db.ingest(&sid("s1"), &b).await?;
        let q = RollupQuery {
            site: &sid("s1"),
            asset: "tank-1",
            field: Some("volume"),
            from_ms: UnixMs::from_ms(t0),
            to_ms: UnixMs::from_ms(t0 + 3 * twelve),
            limit: 1000,
        };
        let got: Vec<(i64, i64, f64, f64, f64)> = db
            .rollup_buckets(&q, twelve)
            .await?
            .iter()
            .map(|r| (r.hour_ms.ms() - t0, r.n, r.min, r.max, r.mean))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 72, 0.0, 71.0, 35.5),
                (twelve, 72, 72.0, 143.0, 107.5),
                (2 * twelve, 36, 144.0, 179.0, 161.5),
            ],
            "{name}"
        );
        // an hour's bucket is the hourly rollups themselves
        let hourly = db.rollups(&q).await?;
        let merged = db.rollup_buckets(&q, HOUR).await?;
        assert_eq!(hourly.len(), 30, "{name}");
        assert!(
            hourly
                .iter()
                .zip(&merged)
                .all(|(a, b)| (a.hour_ms, a.n, a.min, a.max, a.mean)
                    == (b.hour_ms, b.n, b.min, b.max, b.mean)),
            "{name}"
        );
    }
    s.drop().await
}

#[tokio::test]
async fn bad_readings_keep_their_error_and_no_value_and_queries_filter_and_order_alike()
-> Result<()> {
    let s = Stores::new(Retention::default()).await?;
    let t0 = now() - HOUR;
    let mut answers = Vec::new();
    for (name, db) in s.both() {
        hello(db, "s2").await?;
        let mut bad = reading(3, "tank-1", "volume", 0.0, t0 + 3_000);
        bad.quality = v1::Quality::Bad as i32;
        bad.error = "modbus exception 2: illegal data address".into();
        let mut unsure = reading(4, "tank-1", "temperature", 15.5, t0 + 4_000);
        unsure.quality = v1::Quality::Uncertain as i32;
        unsure.unit = "degC".into();
        let b = batch(vec![
            reading(1, "tank-1", "volume", 100.0, t0 + 1_000),
            reading(2, "tank-1", "volume", 90.0, t0 + 2_000),
            bad,
            unsure,
            reading(5, "tank-2", "volume", 7.0, t0 + 5_000),
        ]);
        db.ingest(&sid("s2"), &b).await?;
        let rows = db.readings(&all("s2", "tank-1", None)).await?;
        assert_eq!(rows.len(), 4, "{name}");
        let bad = &rows[2];
        assert_eq!(
            (bad.value, bad.quality, bad.error.as_deref()),
            (
                None,
                Quality::Bad,
                Some("modbus exception 2: illegal data address")
            ),
            "{name}"
        );
        assert_eq!(
            (rows[3].quality, rows[3].unit.as_str()),
            (Quality::Uncertain, "degC")
        );
        let newest = db
            .readings(&ReadingQuery {
                limit: 1,
                newest_first: true,
                ..all("s2", "tank-1", Some("volume"))
            })
            .await?;
        assert_eq!(
            newest.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![3],
            "{name}"
        );
        let window = db
            .readings(&ReadingQuery {
                from_ms: UnixMs::from_ms(t0 + 2_000),
                to_ms: UnixMs::from_ms(t0 + 4_000),
                ..all("s2", "tank-1", None)
            })
            .await?;
        assert_eq!(
            window.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![2, 3, 4],
            "{name}"
        );
        answers.push(rows);
    }
    assert_eq!(answers[0], answers[1], "the backends answer alike");
    s.drop().await
}

#[tokio::test]
async fn retention_removes_raw_readings_past_the_window_and_keeps_rollups_and_everything_else()
-> Result<()> {
    let retention = Retention {
        raw: Duration::from_secs(3 * 86_400),
        rollups: Duration::from_secs(10 * 86_400),
    };
    let s = Stores::new(retention).await?;
    let now = now();
    for (name, db) in s.both() {
        hello(db, "s3").await?;
        // one reading an hour for 14 days back, two points
        let mut rs = Vec::new();
        for h in 0..(14 * 24) {
            let ts = now - h * HOUR - 1;
            rs.push(reading(2 * h as u64 + 1, "tank-1", "volume", h as f64, ts));
            rs.push(reading(2 * h as u64 + 2, "tank-2", "volume", h as f64, ts));
        }
        let mut b = batch(rs);
        b.gaps.push(v1::Gap {
            seq: 10_000,
            first_seq: 9_000,
            last_seq: 9_001,
            count: 2,
            class: "telemetry".into(),
            reason: "disk_full".into(),
            from_ts_ms: now - 13 * DAY,
            to_ts_ms: now - 13 * DAY,
            ..Default::default()
        });
        b.last_seq = 10_000;
        db.ingest(&sid("s3"), &b).await?;
        let before = db.readings(&all("s3", "tank-1", None)).await?.len();
        assert_eq!(before, 14 * 24, "{name}");
        let done = db.telemetry.retain(retention, now).await?;
        let raw_cut = now - 3 * DAY;
        for asset in ["tank-1", "tank-2"] {
            let rows = db
                .readings(&all(
                    "s3",
                    if asset == "tank-1" {
                        "tank-1"
                    } else {
                        "tank-2"
                    },
                    None,
                ))
                .await?;
            assert!(
                rows.iter().all(|r| r.source_ts_ms.ms() >= raw_cut),
                "{name}: old raw rows remain"
            );
            assert_eq!(
                rows.len(),
                3 * 24,
                "{name}: rows inside the window were removed"
            );
        }
        assert_eq!(done.readings, 2 * (14 * 24 - 3 * 24), "{name}");
        // rollups: 10 days kept (beyond the raw window), older ones gone
        let hours = db
            .rollups(&RollupQuery {
                site: &sid("s3"),
                asset: "tank-1",
                field: None,
                from_ms: UnixMs::from_ms(i64::MIN),
                to_ms: UnixMs::from_ms(i64::MAX),
                limit: 10_000,
            })
            .await?;
        assert!(
            hours
                .iter()
                .all(|h| h.hour_ms.ms() >= now - 10 * DAY - HOUR),
            "{name}"
        );
        assert!(
            hours.iter().any(|h| h.hour_ms.ms() < raw_cut - DAY),
            "{name}: rollups outlive raw rows"
        );
        assert!(hours.len() >= 10 * 24 - 1, "{name}: {} hours", hours.len());
        // nothing else touched: gaps, the latest values, the ack
        assert_eq!(db.gaps(&sid("s3"), 10).await?.len(), 1, "{name}");
        let assets = db.assets(&sid("s3")).await?;
        assert_eq!(
            assets.iter().map(|a| a.fields.len()).sum::<usize>(),
            2,
            "{name}"
        );
        assert_eq!(
            db.ingest(&sid("s3"), &batch(vec![])).await.ok(),
            Some(10_000),
            "{name}"
        );
        // a second pass finds nothing more
        assert_eq!(
            db.telemetry.retain(retention, now).await?.readings,
            0,
            "{name}"
        );
    }
    s.drop().await
}

#[tokio::test]
async fn the_two_backends_have_the_same_tables_and_columns() -> Result<()> {
    let s = Stores::new(Retention::default()).await?;
    let lite: Vec<(String, String)> = sqlx::query_as(
        "SELECT m.name, p.name FROM sqlite_master m JOIN pragma_table_info(m.name) p
         WHERE m.type IN ('table', 'view') AND m.name NOT LIKE 'sqlite_%' AND m.name NOT LIKE '_sqlx%'
         ORDER BY 1, 2",
    )
    .fetch_all(s.sqlite.pool())
    .await?;
    // partitions, and the packed form of finished days, are PostgreSQL's
    // storage details of `readings`
    let pg: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.table_name::text, c.column_name::text FROM information_schema.columns c
         WHERE c.table_schema = 'public' AND c.table_name NOT LIKE '_sqlx%'
           AND c.table_name NOT LIKE 'readings_p%' AND c.table_name <> 'readings_default'
           AND c.table_name NOT LIKE 'packed_readings%'
         ORDER BY 1, 2",
    )
    .fetch_all(s.pg.pool())
    .await?;
    let a: BTreeSet<_> = lite.into_iter().collect();
    let b: BTreeSet<_> = pg.into_iter().collect();
    assert!(a.len() > 50, "{a:?}");
    assert_eq!(
        a.symmetric_difference(&b).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "columns in one schema only"
    );
    s.drop().await
}

#[tokio::test]
async fn postgres_puts_readings_in_day_partitions_and_moves_early_arrivals_out_of_the_default()
-> Result<()> {
    let s = Stores::new(Retention::default()).await?;
    let db = &s.pg;
    hello(db, "s4").await?;
    let now = now();
    // today (partition made at start), 10 days ago (made on demand), and
    // 5 days ahead (outside the window made ahead: the default partition)
    let ahead = now + 5 * DAY;
    db.ingest(
        &sid("s4"),
        &batch(vec![
            reading(1, "tank-1", "volume", 1.0, now),
            reading(2, "tank-1", "volume", 2.0, now - 10 * DAY),
            reading(3, "tank-1", "volume", 3.0, ahead),
        ]),
    )
    .await?;
    let where_: Vec<(String, i64)> =
        sqlx::query_as("SELECT tableoid::regclass::text, seq FROM readings ORDER BY seq")
            .fetch_all(db.pool())
            .await?;
    let day = |t: i64| headend::store::rows::partition_name(headend::store::rows::day_of(t));
    assert_eq!(
        where_,
        vec![
            (day(now), 1),
            (day(now - 10 * DAY), 2),
            ("readings_default".to_string(), 3)
        ]
    );
    // time moves on: the day 5 days ahead gets its partition; its row moves in
    db.telemetry.prepare(ahead).await?;
    let moved: String =
        sqlx::query_scalar("SELECT tableoid::regclass::text FROM readings WHERE seq = 3")
            .fetch_one(db.pool())
            .await?;
    assert_eq!(moved, day(ahead));
    assert_eq!(db.readings(&all("s4", "tank-1", None)).await?.len(), 3);
    s.drop().await
}

/// Issue 27: login locks live in SQL, per name and network; a day-old
/// failure is forgotten, so a name's count starts over.
#[tokio::test]
async fn login_failures_lock_a_name_per_network_and_are_forgotten_after_a_day_on_both_backends()
-> Result<()> {
    use headend::domain::throttle::{FORGET_AFTER_MS, LOCK_AFTER};
    let s = Stores::new(Retention::default()).await?;
    let (here, there): (std::net::IpAddr, std::net::IpAddr) =
        ("203.0.113.9".parse()?, "198.51.100.4".parse()?);
    for (name, db) in s.both() {
        let l = db.login_locks();
        let t = 1_000_000_000;
        for i in 0..LOCK_AFTER - 1 {
            assert_eq!(
                l.failed("ann", here, t + i64::from(i)).await?,
                None,
                "{name}"
            );
        }
        assert_eq!(l.failed("ann", here, t + 10).await?, Some(30_000), "{name}");
        assert!(l.locked_for("ann", here, t + 11).await?.is_some(), "{name}");
        assert_eq!(
            l.locked_for("ann", there, t + 11).await?,
            None,
            "{name}: there"
        );
        // a day later the count starts over (and the old row is gone)
        let later = t + 10 + FORGET_AFTER_MS + 1;
        assert_eq!(l.failed("ann", there, later).await?, None, "{name}");
        assert_eq!(
            l.failed("ann", here, later).await?,
            None,
            "{name}: forgotten"
        );
        assert_eq!(l.unlock("ann").await?, 2, "{name}");
        assert_eq!(l.locked_for("ann", here, later).await?, None, "{name}");
    }
    s.drop().await
}

#[tokio::test]
async fn a_job_lease_is_held_by_one_replica_until_it_runs_out_on_both_backends() -> Result<()> {
    use headend::jobs::Lease;
    let s = Stores::new(Retention::default()).await?;
    for (name, db) in s.both() {
        let ttl = Duration::from_secs(10);
        let a = Lease::with_holder("retention", ttl, "replica-a".into());
        let b = Lease::with_holder("retention", ttl, "replica-b".into());
        let t = 1_000_000;
        assert!(a.hold_at(db, t).await?, "{name}: a takes the free lease");
        assert!(
            !b.hold_at(db, t + 1).await?,
            "{name}: b waits while a holds it"
        );
        assert!(a.hold_at(db, t + 9_000).await?, "{name}: a renews");
        assert!(
            !b.hold_at(db, t + 18_999).await?,
            "{name}: the renewal counts from 9 s"
        );
        assert!(
            b.hold_at(db, t + 19_001).await?,
            "{name}: a's lease ran out; b takes it"
        );
        assert!(
            !a.hold_at(db, t + 19_002).await?,
            "{name}: and a has lost it"
        );
        let other = Lease::with_holder("command-expiry", ttl, "replica-a".into());
        assert!(
            other.hold_at(db, t + 19_003).await?,
            "{name}: leases are per job"
        );
    }
    s.drop().await
}

#[tokio::test]
async fn on_sqlite_a_group_the_database_refuses_fails_alone_and_the_others_in_its_transaction_commit()
-> Result<()> {
    let s = Stores::new(Retention::default()).await?;
    let db = &s.sqlite;
    for site in ["good-1", "bad", "good-2"] {
        hello(db, site).await?;
    }
    // the database refuses anything of site "bad" (as a constraint would)
    sqlx::query(
        "CREATE TRIGGER refuse_bad BEFORE INSERT ON latest_values WHEN NEW.site_id = 'bad'
         BEGIN SELECT RAISE(ABORT, 'refused for the test'); END",
    )
    .execute(db.pool())
    .await?;
    let t = now();
    let group = |site: &str| Group {
        site: sid(site),
        batches: vec![batch(vec![reading(1, "tank-1", "volume", 5.0, t)])],
    };
    let out = db
        .ingest_groups(vec![group("good-1"), group("bad"), group("good-2")])
        .await;
    assert_eq!(out[0].as_ref().ok(), Some(&1));
    assert!(
        out[1]
            .as_ref()
            .is_err_and(|e| e.to_string().contains("refused for the test")),
        "{:?}",
        out[1].as_ref().err()
    );
    assert_eq!(out[2].as_ref().ok(), Some(&1));
    // the refused group left nothing behind: no reading, no point, no ack
    assert_eq!(db.readings(&all("good-1", "tank-1", None)).await?.len(), 1);
    assert_eq!(db.readings(&all("good-2", "tank-1", None)).await?.len(), 1);
    assert_eq!(db.readings(&all("bad", "tank-1", None)).await?.len(), 0);
    let bad_points: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM points WHERE site_id = 'bad'")
        .fetch_one(db.pool())
        .await?;
    let bad_acks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agent_logs WHERE site_id = 'bad'")
        .fetch_one(db.pool())
        .await?;
    assert_eq!((bad_points, bad_acks), (0, 0));
    // once the database takes it again, the same group goes in (its point id was not cached)
    sqlx::query("DROP TRIGGER refuse_bad")
        .execute(db.pool())
        .await?;
    assert_eq!(
        db.ingest_groups(vec![group("bad")])
            .await
            .pop()
            .and_then(|r| r.ok()),
        Some(1)
    );
    assert_eq!(db.readings(&all("bad", "tank-1", None)).await?.len(), 1);
    s.drop().await
}

/// The commands aggregate takes an agent's acks by the enum or, from a v1
/// agent, by the text; an ack whose reason this headend does not know is
/// refused (the command does not move, nothing is recorded for it) and the
/// rest of the batch is stored.
#[tokio::test]
async fn an_ack_with_an_unknown_reason_is_refused_and_the_rest_of_its_batch_is_stored() -> Result<()>
{
    use headend::domain::{AckReason, Actor, CommandKind, CommandState, Reason};
    use headend::store::commands::NewCommand;
    let s = Stores::new(Retention::default()).await?;
    let t = now();
    for (name, db) in s.both() {
        hello(db, "s1").await?;
        let cmd = NewCommand {
            command_id: "cmd-1".parse().unwrap(),
            idempotency_key: None,
            request: "{}".into(),
            parent_id: None,
            site_id: "s1".parse().unwrap(),
            asset_id: "ctl-1".into(),
            kind: CommandKind::Setpoint,
            field: "power_limit".into(),
            value: Some(10.0),
            duration_ms: 0,
            expires_at_ms: (t + HOUR).into(),
            payload: "{}".into(),
            load_id: None,
            policy_version: String::new(),
            warnings: "[]".into(),
            created_by: Actor::headend(),
        };
        db.commands().submit(&[cmd], None).await?;
        let t = now() + 1; // the ack comes after the submit
        let ack = |seq: u64, a: v1::CommandAck| v1::CommandAck { seq, ..a };
        let mut b = batch(vec![reading(1, "tank-1", "volume", 1.0, t)]);
        b.last_seq = 4;
        b.command_acks = vec![
            ack(
                2,
                v1::CommandAck::new("cmd-1", AckReason::Received, "", t, None),
            ),
            // a newer agent's reason, as text only and as a number only
            v1::CommandAck {
                seq: 3,
                command_id: "cmd-1".into(),
                reason: "paused".into(),
                ts_ms: t,
                ..Default::default()
            },
            v1::CommandAck {
                seq: 4,
                command_id: "cmd-1".into(),
                code: 99,
                ts_ms: t,
                ..Default::default()
            },
        ];
        assert_eq!(db.ingest(&sid("s1"), &b).await?, 4, "{name}");
        let c = db.commands().get("cmd-1").await?.expect("the command");
        assert_eq!(c.state, CommandState::Acked, "{name}");
        let reasons: Vec<Reason> = db
            .commands()
            .events("cmd-1")
            .await?
            .iter()
            .map(|e| e.reason)
            .collect();
        assert_eq!(reasons, [Reason::Submitted, Reason::Received], "{name}");
        assert_eq!(db.readings(&all("s1", "tank-1", None)).await?.len(), 1);
        // a v1 agent's text-only ack still moves it
        let mut b = batch(vec![reading(5, "tank-1", "volume", 2.0, t + 1)]);
        b.command_acks = vec![v1::CommandAck {
            seq: 6,
            command_id: "cmd-1".into(),
            reason: "applied".into(),
            ts_ms: t,
            readback: Some(10.0),
            ..Default::default()
        }];
        b.last_seq = 6;
        db.ingest(&sid("s1"), &b).await?;
        let c = db.commands().get("cmd-1").await?.expect("the command");
        assert_eq!(
            (c.state, c.reason, c.readback),
            (CommandState::Active, Reason::Applied, Some(10.0)),
            "{name}"
        );
    }
    s.drop().await
}

/// Every delivery event is stored with its source; an older agent's
/// unspecified source is the detector's; a source this headend does not
/// know is not stored (never a guess), and the rest of the batch is.
#[tokio::test]
async fn delivery_events_keep_their_source_and_an_unknown_source_is_refused_on_both_backends()
-> Result<()> {
    use headend::domain::DeliverySource;
    use v1::delivery_event::{Phase, Source};
    let s = Stores::new(Retention::default()).await?;
    let t = now();
    for (name, db) in s.both() {
        hello(db, "s1").await?;
        let event = |seq: u64, source: i32| v1::Event {
            ts_ms: t,
            seq,
            kind: Some(v1::event::Kind::Delivery(v1::DeliveryEvent {
                phase: Phase::Ended as i32,
                tank: "tank-1".into(),
                start_ms: t - 600_000 - seq as i64,
                end_ms: t,
                start_volume_l: 1000.0,
                end_volume_l: 6000.0,
                delivered_volume_l: 5000.0,
                source,
                ..Default::default()
            })),
        };
        let mut b = batch(vec![reading(1, "tank-1", "volume", 6000.0, t)]);
        b.events = vec![
            event(2, Source::Gauge as i32),
            event(3, Source::Unspecified as i32),
            event(4, 99),
        ];
        b.last_seq = 4;
        assert_eq!(db.ingest(&sid("s1"), &b).await?, 4, "{name}");
        let mut got: Vec<DeliverySource> = db
            .delivery_events(&sid("s1"), 10)
            .await?
            .into_iter()
            .map(|d| d.source)
            .collect();
        got.sort_by_key(|s| s.as_str());
        assert_eq!(
            got,
            vec![DeliverySource::Detector, DeliverySource::Gauge],
            "{name}"
        );
    }
    s.drop().await
}

/// A setpoint written at the site (OPC UA) becomes a command of that site
/// with its actor, moved by its own acks in the same batch; a redelivered
/// batch stores it once; a record of an origin this headend does not know
/// is refused, never guessed.
#[tokio::test]
async fn a_local_command_from_a_site_is_recorded_with_its_actor_and_lifecycle_on_both_backends()
-> Result<()> {
    let s = Stores::new(Retention::default()).await?;
    let t = now();
    for (name, db) in s.both() {
        hello(db, "s1").await?;
        let local = |seq: u64, id: &str, origin: &str| v1::Event {
            ts_ms: t,
            seq,
            kind: Some(v1::event::Kind::LocalCommand(v1::LocalCommand {
                command_id: id.into(),
                origin: origin.into(),
                user: "alice".into(),
                client: "urn:scada".into(),
                issued_seq: 7,
                setpoint: Some(v1::Setpoint {
                    asset_id: "ctl-1".into(),
                    field: "power_limit".into(),
                    value: 42.0,
                    duration_ms: 0,
                }),
            })),
        };
        let mut b = batch(vec![reading(1, "tank-1", "volume", 6000.0, t)]);
        b.events = vec![
            local(2, "local-1", "opcua"),
            local(3, "local-2", "modbus-hmi"),
        ];
        let mut applied = v1::CommandAck::new(
            "local-1",
            v1::AckReason::Applied,
            "ctl-1.power_limit = 42",
            t,
            Some(42.0),
        );
        applied.seq = 4;
        let mut other = v1::CommandAck::new("local-2", v1::AckReason::Applied, "", t, Some(42.0));
        other.seq = 5;
        b.command_acks = vec![applied, other];
        b.last_seq = 5;
        assert_eq!(db.ingest(&sid("s1"), &b).await?, 5, "{name}");
        assert_eq!(db.ingest(&sid("s1"), &b).await?, 5, "{name}: redelivered");
        let rows: Vec<(String, String, String, Option<f64>)> = sqlx::query_as(
            "SELECT command_id, state, created_by, readback FROM commands WHERE site_id = 's1' ORDER BY command_id",
        )
        .fetch_all(db.pool())
        .await?;
        assert_eq!(
            rows,
            vec![(
                "local-1".to_string(),
                "active".to_string(),
                "opcua_user alice at s1".to_string(),
                Some(42.0)
            )],
            "{name}"
        );
        let timeline: Vec<String> = sqlx::query_scalar(
            "SELECT reason FROM command_events WHERE command_id = 'local-1' ORDER BY at_ms, reason",
        )
        .fetch_all(db.pool())
        .await?;
        assert_eq!(timeline, vec!["applied", "received"], "{name}: once each");
        // the site's write is in the audit trail once, with its site actor
        let audit: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT actor, action, target FROM audit_log WHERE target LIKE 'local-%' ORDER BY seq",
        )
        .fetch_all(db.pool())
        .await?;
        assert_eq!(
            audit,
            vec![(
                "opcua_user alice at s1".to_string(),
                "commands.local_setpoint".to_string(),
                "local-1".to_string()
            )],
            "{name}"
        );
        assert_eq!(db.audit().verify(10).await?.ok(), Some(1), "{name}");
    }
    s.drop().await
}

/// A reconnecting agent's hello that says what the stored one said costs
/// no write (a reconnect storm of thousands of sessions is reads only); a
/// hello that changes an asset is written.
#[tokio::test]
async fn a_repeated_hello_is_answered_by_a_read_and_a_changed_one_is_written() -> Result<()> {
    let s = Stores::new(Retention::default()).await?;
    for (name, db) in s.both() {
        let h = v1::Hello {
            site_id: "s1".into(),
            log_id: 42,
            agent_version: "1.0".into(),
            assets: vec![v1::Asset {
                asset_id: "tank-1".into(),
                kind: v1::AssetKind::Tank as i32,
                capacity: 1000.0,
                details: [("a", "1"), ("b", "2"), ("c", "3")]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let info = |h| headend::store::HelloInfo {
            site: "s1",
            hello: h,
        };
        db.record_hello(info(&h)).await?;
        let seen = || async {
            let v: i64 = sqlx::query_scalar("SELECT last_seen_ms FROM sites WHERE site_id = 's1'")
                .fetch_one(db.pool())
                .await?;
            anyhow::Ok(v)
        };
        let first = seen().await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
        db.record_hello(info(&h)).await?;
        assert_eq!(seen().await?, first, "{name}: a repeated hello wrote");
        let mut changed = h.clone();
        changed.assets[0].capacity = 2000.0;
        db.record_hello(info(&changed)).await?;
        assert!(
            seen().await? > first,
            "{name}: a changed hello was not written"
        );
        let cap: f64 = sqlx::query_scalar("SELECT capacity FROM assets WHERE site_id = 's1'")
            .fetch_one(db.pool())
            .await?;
        assert_eq!(cap, 2000.0, "{name}");
    }
    s.drop().await
}

/// Everything a query can tell about one site's tank: all readings both
/// ways, a mid-hour window, the newest few, and the hourly rollups.
async fn answers(db: &Db, site: &'static str) -> Result<Vec<String>> {
    let q = all(site, "tank-1", None);
    let mut out = vec![
        format!("{:?}", db.readings(&q).await?),
        format!(
            "{:?}",
            db.readings(&ReadingQuery {
                newest_first: true,
                limit: 7,
                ..q.clone()
            })
            .await?
        ),
        format!(
            "{:?}",
            db.readings(&ReadingQuery {
                from_ms: UnixMs::from_ms(now() - 50 * HOUR + 25 * 60_000),
                to_ms: UnixMs::from_ms(now() - 30 * HOUR + 5 * 60_000),
                ..q.clone()
            })
            .await?
        ),
    ];
    let hours = db
        .rollups(&RollupQuery {
            site: &sid(site),
            asset: "tank-1",
            field: None,
            from_ms: UnixMs::from_ms(i64::MIN),
            to_ms: UnixMs::from_ms(i64::MAX),
            limit: 10_000,
        })
        .await?;
    out.push(format!("{hours:?}"));
    Ok(out)
}

#[tokio::test]
async fn finished_days_packed_on_postgres_read_back_alike_and_late_or_redelivered_readings_and_retention_stay_exact()
-> Result<()> {
    let retention = Retention {
        raw: Duration::from_secs(5 * 86_400),
        rollups: Duration::from_secs(30 * 86_400),
    };
    let s = Stores::new(retention).await?;
    let now = now();
    // three days of a reading every 10 minutes of two fields, with bad
    // readings (an error, no value) and two readings of one millisecond
    let mut rs = Vec::new();
    let mut seq = 0;
    for i in 0..(3 * 24 * 6) {
        let ts = now - 3 * DAY + i * 600_000 + 7;
        seq += 1;
        let mut v = reading(seq, "tank-1", "volume", 1000.0 - i as f64, ts);
        if i % 17 == 0 {
            v.quality = v1::Quality::Bad as i32;
            v.error = format!("timeout {}", i % 3);
        }
        rs.push(v);
        seq += 1;
        let mut t = reading(seq, "tank-1", "temperature", 15.0 + (i % 5) as f64, ts);
        t.unit = "degC".into();
        rs.push(t);
    }
    seq += 1;
    rs.push(reading(seq, "tank-1", "volume", 555.0, now - 2 * DAY + 7));
    let b = batch(rs);
    let mut before = Vec::new();
    for (_, db) in s.both() {
        hello(db, "s6").await?;
        db.ingest(&sid("s6"), &b).await?;
        before.push(answers(db, "s6").await?);
        db.telemetry.compact(now).await?;
    }
    assert_eq!(before[0], before[1], "the backends answer alike");
    let packed: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(n), 0)::int8 FROM packed_readings")
        .fetch_one(s.pg.pool())
        .await?;
    let raw_left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM readings")
        .fetch_one(s.pg.pool())
        .await?;
    let finished = headend::store::rows::day_of(now - HOUR);
    let unfinished = b
        .readings
        .iter()
        .filter(|r| r.source_ts_ms >= finished)
        .count();
    assert_eq!(
        (packed, raw_left),
        ((b.readings.len() - unfinished) as i64, unfinished as i64),
        "finished days packed, the others left raw"
    );
    assert_eq!(
        answers(&s.pg, "s6").await?,
        before[1],
        "packed days read back as before"
    );

    // the whole batch again (a lost ack) and a late reading into a packed day
    let late = batch(vec![reading(
        seq + 1,
        "tank-1",
        "volume",
        444.0,
        now - 2 * DAY + 60_007,
    )]);
    let mut after = Vec::new();
    for (name, db) in s.both() {
        db.ingest(&sid("s6"), &b).await?;
        db.ingest(&sid("s6"), &late).await?;
        let a = answers(db, "s6").await?;
        assert_eq!(a[0].matches("seq:").count(), b.readings.len() + 1, "{name}");
        // the raw key cannot see packed rows: PostgreSQL's increments count
        // the redelivery until the next packing recomputes those hours
        db.telemetry.compact(now).await?;
        after.push(answers(db, "s6").await?);
    }
    assert_eq!(
        after[0], after[1],
        "readings and rollups alike once repacked"
    );
    let again: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(n), 0)::int8 FROM packed_readings")
        .fetch_one(s.pg.pool())
        .await?;
    assert_eq!(
        again,
        packed + 1,
        "the late reading packed, the redelivery not"
    );

    // retention with its cutoff inside a packed hour: the hour is trimmed
    let later = now - 2 * DAY + 5 * DAY + 25 * 60_000;
    let cutoff = retention.raw_cutoff(later);
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    for (name, db) in s.both() {
        removed.push(db.telemetry.retain(retention, later).await?.readings);
        let rows = db.readings(&all("s6", "tank-1", None)).await?;
        assert!(rows.iter().all(|r| r.source_ts_ms.ms() >= cutoff), "{name}");
        assert!(
            rows.iter()
                .any(|r| r.source_ts_ms.ms() < cutoff + HOUR - 25 * 60_000),
            "{name}: the rest of the cut hour is kept"
        );
        kept.push(format!("{rows:?}"));
    }
    assert_eq!(removed[0], removed[1], "both removed as many");
    assert_eq!(kept[0], kept[1], "both keep the same readings");
    s.drop().await
}

#[tokio::test]
async fn on_postgres_a_commit_of_a_thousand_readings_never_waits_for_a_delayed_ack() -> Result<()> {
    // sqlx 0.9 leaves Nagle's algorithm on: a COPY's CopyDone, written
    // after data that fit in one segment, waited ~40 ms for the server's
    // delayed ACK on nearly every such commit (the first ones of a
    // connection escape it: TCP quick-ACKs at first). Measured: 47 ms by
    // COPY, 5 ms by insert.
    let s = Stores::new(Retention::default()).await?;
    let db = &s.pg;
    hello(db, "s7").await?;
    let t0 = now() - HOUR;
    let mut took = Vec::new();
    for k in 0..15u64 {
        let b = batch(
            (0..1000u64)
                .map(|i| {
                    let n = k * 1000 + i + 1;
                    reading(n, "tank-1", "volume", n as f64, t0 + n as i64)
                })
                .collect(),
        );
        let t = std::time::Instant::now();
        db.ingest(&sid("s7"), &b).await?;
        took.push(t.elapsed());
    }
    took.sort();
    assert!(
        took[took.len() / 2] < Duration::from_millis(25),
        "commits of 1,000 readings took {took:?}"
    );
    s.drop().await
}

#[tokio::test]
async fn a_headend_on_postgres_packs_finished_days_by_itself() -> Result<()> {
    // The hourly job was documented to reorganise finished days and did
    // not: nothing but a benchmark ever called it. This runs the real job.
    let db = pg::fresh_database().await?;
    let now = now();
    {
        let store = Db::connect(&db.url, 4).await?;
        hello(&store, "s8").await?;
        store
            .ingest(
                &sid("s8"),
                &batch(vec![
                    reading(1, "tank-1", "volume", 1.0, now - 3 * DAY),
                    reading(2, "tank-1", "volume", 2.0, now),
                ]),
            )
            .await?;
        store.pool().close().await;
    }
    let pki = e2e::TestPki::new(&["s8"])?;
    let he = e2e::start_headend(e2e::headend_config(&pki, &db.url, 0)).await?;
    let packed = e2e::eventually("the old day packed", Duration::from_secs(20), || async {
        let n: i64 = sqlx::query_scalar("SELECT COALESCE(SUM(n), 0)::int8 FROM packed_readings")
            .fetch_one(he.db.pool())
            .await?;
        Ok((n > 0).then_some(n))
    })
    .await?;
    assert_eq!(packed, 1, "the reading of three days ago, not today's");
    assert_eq!(he.db.readings(&all("s8", "tank-1", None)).await?.len(), 2);
    he.db.pool().close().await;
    he.stop().await;
    db.drop().await
}

#[tokio::test]
async fn the_certificate_store_redeems_a_token_once_and_builds_the_same_revocation_list_on_both_backends()
-> Result<()> {
    use headend::domain::enrollment::IssuedVia;
    use headend::domain::{Actor, UnixMs};
    use headend::store::certs::{CertRow, CertStatusRow, TokenRow};
    let s = Stores::new(Retention::default()).await?;
    let cert = |serial: &str, site: &str, via, issued_ms, from: Option<&str>| CertRow {
        serial: serial.into(),
        site_id: site.into(),
        via,
        issued_ms,
        not_after_ms: issued_ms.plus_ms(DAY),
        renewed_from: from.map(str::to_string),
        revoked_ms: None,
        revoked_by: None,
        reason: None,
    };
    let admin = Actor::headend();
    for (name, db) in s.both() {
        let c = db.certs();
        let t = UnixMs::from_ms(1_000_000);
        c.add_token(&TokenRow {
            token_id: "t1".into(),
            site_id: "s1".into(),
            secret_hash: "h".into(),
            created_by: admin.clone(),
            created_ms: t,
            expires_ms: t.plus_ms(60_000),
            used_ms: None,
            used_serial: None,
        })
        .await?;
        let first = cert("aa", "s1", IssuedVia::Enrollment, t.plus_ms(1), None);
        assert!(
            c.redeem("t1", t.plus_ms(1), &first).await?.is_some(),
            "{name}: first use"
        );
        let again = cert("bb", "s1", IssuedVia::Enrollment, t.plus_ms(2), None);
        assert!(
            c.redeem("t1", t.plus_ms(2), &again).await?.is_none(),
            "{name}: a token buys one certificate"
        );
        assert!(
            c.cert("bb").await?.is_none(),
            "{name}: and nothing is recorded for the loser"
        );
        assert_eq!(
            c.token("t1").await?.and_then(|r| r.used_serial).as_deref(),
            Some("aa")
        );
        // a renewal lineage aa -> cc -> dd
        c.record(&cert(
            "cc",
            "s1",
            IssuedVia::Renewal,
            t.plus_ms(3),
            Some("aa"),
        ))
        .await?;
        c.record(&cert(
            "dd",
            "s1",
            IssuedVia::Renewal,
            t.plus_ms(4),
            Some("cc"),
        ))
        .await?;
        assert_eq!(
            c.renewals_of("aa").await?,
            vec!["cc".to_string(), "dd".to_string()],
            "{name}"
        );
        assert!(
            c.revoke_serial("aa", Some("s1"), &admin, "stolen", t.plus_ms(5))
                .await?
        );
        assert!(
            !c.revoke_serial("aa", Some("s1"), &admin, "again", t.plus_ms(6))
                .await?,
            "{name}: once"
        );
        assert!(c.is_revoked("aa").await? && !c.is_revoked("cc").await?);
        // a revoked site admits only what was issued after the cut
        c.revoke_site(&sid("s2"), &admin, "closed", t.plus_ms(10))
            .await?;
        c.revoke_site(&sid("s2"), &admin, "closed again", t.plus_ms(20))
            .await?;
        c.record(&cert(
            "ee",
            "s2",
            IssuedVia::Enrollment,
            t.plus_ms(15),
            None,
        ))
        .await?;
        c.record(&cert(
            "ff",
            "s2",
            IssuedVia::Enrollment,
            t.plus_ms(25),
            None,
        ))
        .await?;
        let set = c.revocations().await?;
        assert_eq!(
            set.serials,
            ["aa".to_string()].into_iter().collect(),
            "{name}"
        );
        assert_eq!(
            set.sites.get("s2"),
            Some(&["ff".to_string()].into_iter().collect()),
            "{name}: the cut moved to the second revocation"
        );
        assert_eq!(
            c.site_revocation(&sid("s2"))
                .await?
                .map(|r| r.reason)
                .as_deref(),
            Some("closed again")
        );
        let page = c.of_site(&sid("s1"), UnixMs::from_ms(i64::MAX), 10).await?;
        assert_eq!(
            page.iter()
                .map(|r| (r.serial.as_str(), r.revoked_ms.is_some()))
                .collect::<Vec<_>>(),
            vec![("dd", false), ("cc", false), ("aa", true)],
            "{name}: newest first, with revocations"
        );
        for failures in [1, 0] {
            c.set_status(&CertStatusRow {
                site_id: "s1".into(),
                serial: "dd".into(),
                not_after_ms: t.plus_ms(DAY),
                renew_at_ms: t,
                failures,
                last_error: "x".into(),
                reported_ms: t,
            })
            .await?;
        }
        assert_eq!(
            c.status(&sid("s1")).await?.map(|r| r.failures),
            Some(0),
            "{name}: replaced"
        );
        // enrolling the site again supersedes its earlier certificates
        // (issue 27: five demo runs left five valid certificates)
        c.add_token(&TokenRow {
            token_id: "t2".into(),
            site_id: "s1".into(),
            secret_hash: "h".into(),
            created_by: admin.clone(),
            created_ms: t.plus_ms(29),
            expires_ms: t.plus_ms(60_000),
            used_ms: None,
            used_serial: None,
        })
        .await?;
        let again = cert("gg", "s1", IssuedVia::Enrollment, t.plus_ms(30), None);
        assert_eq!(
            c.redeem("t2", t.plus_ms(30), &again).await?,
            Some(2),
            "{name}: cc and dd revoked (aa was already)"
        );
        assert!(c.is_revoked("cc").await? && c.is_revoked("dd").await?);
        assert!(!c.is_revoked("gg").await?, "{name}: the new one stands");
        assert!(!c.is_revoked("ff").await?, "{name}: other sites untouched");
    }
    s.drop().await
}

/// Issue 28, item 3: a delivery is recorded before it goes out, in a
/// transition that fails when the command was expired or cancelled
/// meanwhile (then nothing is sent); a `sent` command the site never
/// answers is expired a week after its expiry.
#[tokio::test]
async fn a_delivery_is_recorded_before_it_is_sent_and_never_for_a_command_that_ended_meanwhile()
-> Result<()> {
    use headend::domain::{Actor, CommandKind, CommandState, Reason};
    use headend::store::commands::{NewCommand, UNANSWERED_AFTER_MS};
    let s = Stores::new(Retention::default()).await?;
    let t = now();
    for (name, db) in s.both() {
        hello(db, "s1").await?;
        let cmd = |id: &str, expires_at_ms: i64| NewCommand {
            command_id: id.parse().unwrap(),
            idempotency_key: None,
            request: "{}".into(),
            parent_id: None,
            site_id: "s1".parse().unwrap(),
            asset_id: format!("ctl-{id}"),
            kind: CommandKind::Setpoint,
            field: "power_limit".into(),
            value: Some(10.0),
            duration_ms: 0,
            expires_at_ms: expires_at_ms.into(),
            payload: "{}".into(),
            load_id: None,
            policy_version: String::new(),
            warnings: "[]".into(),
            created_by: Actor::headend(),
        };
        let c = db.commands();
        let h = Actor::headend();
        let state = |id: &'static str| async move {
            Ok::<_, anyhow::Error>(c.get(id).await?.map(|r| r.state))
        };
        // cancelled before it went out: not sent
        c.submit(&[cmd("a", t + HOUR)], None).await?;
        assert!(c.request_cancel("a", &h).await?);
        assert!(!c.mark_sent("a", &h, Reason::Sent).await?, "{name}");
        assert_eq!(state("a").await?, Some(CommandState::Cancelled), "{name}");
        // expired by the sweeper first: not sent
        c.submit(&[cmd("b", t - 1)], None).await?;
        c.expire_unsent(t).await?;
        assert!(!c.mark_sent("b", &h, Reason::Sent).await?, "{name}");
        assert_eq!(state("b").await?, Some(CommandState::Expired), "{name}");
        // recorded, then sent; a redelivery is recorded too
        c.submit(&[cmd("c", t + HOUR)], None).await?;
        assert!(c.mark_sent("c", &h, Reason::Sent).await?, "{name}");
        assert!(c.mark_sent("c", &h, Reason::Redelivered).await?, "{name}");
        assert_eq!(state("c").await?, Some(CommandState::Sent), "{name}");
        // a sent command waits for the site's answer...
        c.expire_unsent(t + 2 * HOUR).await?;
        assert_eq!(state("c").await?, Some(CommandState::Sent), "{name}");
        // so does a received one (the site's answer is on its way)...
        c.submit(&[cmd("d", t + HOUR)], None).await?;
        assert!(c.mark_sent("d", &h, Reason::Sent).await?, "{name}");
        let mut b = batch(vec![reading(1, "tank-1", "volume", 1.0, t)]);
        let mut received = v1::CommandAck::new("d", v1::AckReason::Received, "", t + 1, None);
        received.seq = 2;
        b.command_acks = vec![received];
        b.last_seq = 2;
        db.ingest(&sid("s1"), &b).await?;
        assert_eq!(state("d").await?, Some(CommandState::Acked), "{name}");
        // ...but neither for ever
        let mut ids = c.expire_unsent(t + HOUR + UNANSWERED_AFTER_MS + 1).await?;
        ids.sort();
        assert_eq!(ids, vec!["c".to_string(), "d".to_string()], "{name}");
        let row = c.get("c").await?.expect("c");
        assert_eq!(row.state, CommandState::Expired, "{name}");
    }
    s.drop().await
}

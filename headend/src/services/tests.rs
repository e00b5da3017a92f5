//! Service tests against a real database: a temporary SQLite file and a
//! fresh PostgreSQL database (the local one CI starts), each test on both.
//! They sit under the REST API (no HTTP) and over the stores, where the
//! rules of the services live: refusals naming the field, scope,
//! idempotency, ETA ranks, the inventory job's escalations.

use serde_json::json;

use super::commands::{CommandRequest, Outcome};
use super::loads::{LoadPatch, LoadRequest};
use super::*;
use crate::domain::{Actor, Scope};
use crate::store::{Db, HelloInfo};

/// Alarm rules (site severities) and escalation acknowledge and snooze.
mod rules;

/// A site's holidays, set, walked and corrupted.
mod calendar;

/// The databases a test runs on: (name, URL, the PostgreSQL database to
/// drop after, the SQLite file's directory).
pub(super) async fn databases() -> Vec<(&'static str, String, Option<String>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("t.db").display());
    let (pg, name) = crate::store::testing::fresh_postgres().await;
    vec![
        ("sqlite", sqlite, None, dir),
        ("postgres", pg, Some(name), tempfile::tempdir().unwrap()),
    ]
}

pub(super) async fn drop_database(name: Option<String>) {
    if let Some(name) = name {
        crate::store::testing::drop_postgres(&name).await;
    }
}

pub(super) fn ctx(db: &Db, scope: Scope) -> Context {
    Context {
        db: db.clone(),
        reads: db.clone(),
        metrics: crate::metrics::Metrics::default(),
        dispatcher: Dispatcher::default(),
        touched: Default::default(),
        scope,
    }
}

/// A site id the test knows is one.
pub(super) fn sid(site: &str) -> crate::domain::SiteId {
    crate::domain::SiteId::parse(site).unwrap()
}

/// A site with one 20,000 L tank whose `pump_limit` is writable from 0 to 100.
pub(super) async fn site(db: &Db, site: &str) {
    let h = tankwatch_proto::fixtures::tank_hello(site, &[("pump_limit", 0.0, 100.0)]);
    db.record_hello(HelloInfo { site, hello: &h })
        .await
        .unwrap();
}

/// Site B, made by an operator, with a 30,000 L tank that never reported
/// (the inventory job finds it stale).
pub(super) async fn site_b_with_a_tank_that_never_reported(c: &Context) {
    inventory::create_site(
        c,
        serde_json::from_value(json!({"site": "site-b", "name": "B"})).unwrap(),
    )
    .await
    .unwrap();
    inventory::put_tank(
        c,
        &sid("site-b"),
        "tank-9",
        serde_json::from_value(json!({"product": "diesel", "capacity_l": 30000})).unwrap(),
    )
    .await
    .unwrap();
}

fn operator() -> Actor {
    Actor::Headend {
        task: Some("test".into()),
    }
}

fn setpoint(value: f64) -> CommandRequest {
    serde_json::from_value(json!({"kind": "setpoint", "asset": "site-a/tank-1", "field": "pump_limit", "value": value}))
        .unwrap()
}

pub(super) fn refusal(e: ServiceError) -> (Refused, String) {
    match e {
        ServiceError::Refused { kind, field, .. } => (kind, field),
        ServiceError::Store(e) => panic!("a store error, not a refusal: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setpoint_outside_its_writable_range_is_refused_naming_the_value_and_a_keyed_repeat_is_the_first()
 {
    for (name, url, pg, _dir) in databases().await {
        let db = Db::connect(&url, 4).await.unwrap();
        site(&db, "site-a").await;
        let c = ctx(&db, Scope::All);
        let e = commands::submit(&c, setpoint(500.0), None, operator())
            .await
            .err()
            .unwrap_or_else(|| panic!("{name}: 500 accepted"));
        assert_eq!(
            refusal(e),
            (Refused::Unprocessable, "value".into()),
            "{name}"
        );
        let first = match commands::submit(&c, setpoint(42.0), Some("k-1".into()), operator())
            .await
            .unwrap()
        {
            Outcome::Created(v) => v.row.command_id,
            Outcome::Repeated(_) => panic!("{name}: a first request repeated"),
        };
        match commands::submit(&c, setpoint(42.0), Some("k-1".into()), operator())
            .await
            .unwrap()
        {
            Outcome::Repeated(v) => assert_eq!(v.row.command_id, first, "{name}"),
            Outcome::Created(_) => panic!("{name}: a keyed repeat made a second command"),
        }
        // the same key for another request is refused naming the key, not the first command
        let e = commands::submit(&c, setpoint(43.0), Some("k-1".into()), operator())
            .await
            .err()
            .unwrap_or_else(|| panic!("{name}: a reused key accepted"));
        assert_eq!(
            refusal(e),
            (Refused::Unprocessable, "idempotency_key".into()),
            "{name}"
        );
        drop(db);
        drop_database(pg).await;
    }
}

fn load(eta_ms: i64, source: &str) -> LoadRequest {
    serde_json::from_value(
        json!({"site": "site-a", "reference": "PO-1", "tanks": ["tank-1"],
        "planned_volume_l": 5000.0, "eta": eta_ms, "eta_source": source}),
    )
    .unwrap()
}

fn eta_patch(eta_ms: i64, source: &str) -> LoadPatch {
    serde_json::from_value(json!({"eta": eta_ms, "eta_source": source})).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lower_ranked_eta_is_kept_as_history_and_a_higher_one_replaces_it_with_a_push() {
    for (name, url, pg, _dir) in databases().await {
        let db = Db::connect(&url, 4).await.unwrap();
        site(&db, "site-a").await;
        let c = ctx(&db, Scope::All);
        let now = crate::wallclock::now_ms();
        let made = loads::create(&c, load(now + 3_600_000, "carrier_api"), operator())
            .await
            .unwrap();
        assert!(made.command.is_some(), "{name}: the ETA was pushed");
        let id = made.load.load.load_id.clone();
        // email ranks below the carrier's API: history only, nothing pushed
        let p = loads::patch(&c, &id, eta_patch(now + 7_200_000, "email"), operator())
            .await
            .unwrap();
        assert_eq!(p.eta_applied, Some(false), "{name}");
        assert!(p.command.is_none(), "{name}: a lower rank pushed a command");
        assert_eq!(p.load.load.eta_ms.ms(), now + 3_600_000, "{name}");
        // a person's word ranks above: it replaces it and is pushed
        let p = loads::patch(&c, &id, eta_patch(now + 5_400_000, "manual"), operator())
            .await
            .unwrap();
        assert_eq!(p.eta_applied, Some(true), "{name}");
        assert!(p.command.is_some(), "{name}");
        assert_eq!(p.load.load.eta_ms.ms(), now + 5_400_000, "{name}");
        assert_eq!(p.load.load.tank_ids(), vec!["tank-1".to_string()], "{name}");
        drop(db);
        drop_database(pg).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_of_a_site_outside_the_callers_scope_is_not_found_and_cannot_be_made() {
    for (name, url, pg, _dir) in databases().await {
        let db = Db::connect(&url, 4).await.unwrap();
        site(&db, "site-a").await;
        let all = ctx(&db, Scope::All);
        let now = crate::wallclock::now_ms();
        let id = loads::create(&all, load(now + 3_600_000, "manual"), operator())
            .await
            .unwrap()
            .load
            .load
            .load_id;
        let other = ctx(&db, Scope::Sites(["site-b".to_string()].into()));
        let e = loads::get(&other, &id)
            .await
            .err()
            .unwrap_or_else(|| panic!("{name}: seen"));
        assert_eq!(refusal(e).0, Refused::OutOfScope, "{name}");
        let e = loads::create(&other, load(now + 3_600_000, "manual"), operator())
            .await
            .err()
            .unwrap_or_else(|| panic!("{name}: made out of scope"));
        assert_eq!(refusal(e).0, Refused::OutOfScope, "{name}");
        drop(db);
        drop_database(pg).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_job_opens_one_stale_escalation_for_a_tank_without_data_and_keeps_it_open_once()
 {
    for (name, url, pg, _dir) in databases().await {
        let db = Db::connect(&url, 4).await.unwrap();
        site(&db, "site-a").await;
        let c = ctx(&db, Scope::All);
        site_b_with_a_tank_that_never_reported(&c).await;
        let now = crate::wallclock::now_ms();
        let s = evaluate::Settings::default();
        let r = evaluate::run(&db, now, s).await.unwrap();
        assert!(r.tanks >= 1, "{name}: {r:?}");
        let open = db.escalations().open().await.unwrap();
        let stale: Vec<_> = open
            .iter()
            .filter(|o| o.site_id == "site-b" && o.cause == crate::domain::escalation::Cause::Stale)
            .collect();
        assert_eq!(stale.len(), 1, "{name}: {r:?}");
        let again = evaluate::run(&db, now + 60_000, s).await.unwrap();
        assert_eq!(again.opened, 0, "{name}: {again:?}");
        assert_eq!(
            db.escalations().open().await.unwrap().len(),
            open.len(),
            "{name}"
        );
        drop(db);
        drop_database(pg).await;
    }
}

/// A batch of log 1 with alarm readings `(seq, field, value, ts_ms, good)`.
pub(super) fn alarm_batch(
    log_id: u64,
    rs: &[(u64, &str, f64, i64, bool)],
) -> tankwatch_proto::v1::TelemetryBatch {
    use tankwatch_proto::v1;
    let readings: Vec<v1::Reading> = rs
        .iter()
        .map(|&(seq, field, value, ts, good)| v1::Reading {
            seq,
            asset_id: "tank-1".into(),
            field: field.into(),
            value,
            unit: "bool".into(),
            quality: if good {
                v1::Quality::Good
            } else {
                v1::Quality::Bad
            } as i32,
            source_ts_ms: ts,
            received_ts_ms: ts,
            source: "modbus://sim/di1".into(),
            error: String::new(),
        })
        .collect();
    v1::TelemetryBatch {
        log_id,
        first_seq: rs.first().map_or(1, |r| r.0),
        last_seq: rs.last().map_or(1, |r| r.0),
        readings,
        ..Default::default()
    }
}

pub(super) fn alarm_query(state: Option<crate::domain::alarm::AlarmState>) -> alarms::ListQuery {
    alarms::ListQuery {
        state,
        limit: 100,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leak_raised_and_cleared_at_the_gauge_is_one_episode_even_when_its_batches_come_twice() {
    use crate::domain::alarm::{AlarmState, AlarmType, Severity};
    for (name, url, pg, _dir) in databases().await {
        let db = Db::connect(&url, 4).await.unwrap();
        site(&db, "site-a").await;
        let c = ctx(&db, Scope::All);
        let raise = alarm_batch(
            7,
            &[
                (1, "volume", 12_000.0, 1_000, true),
                (2, "alarm.leak", 1.0, 2_000, true),
                (3, "alarm.overfill", 1.0, 2_000, false), // unreadable: no episode
                (4, "alarm.count", 3.0, 2_000, true),     // a number, not a condition
            ],
        );
        db.ingest(&sid("site-a"), &raise).await.unwrap();
        db.ingest(&sid("site-a"), &raise).await.unwrap();
        let open = alarms::list(&c, &alarm_query(Some(AlarmState::Active)))
            .await
            .unwrap();
        assert_eq!(open.len(), 1, "{name}: {open:?}");
        let e = &open[0];
        assert_eq!(
            (e.alarm_type, e.severity),
            (AlarmType::Leak, Severity::Critical),
            "{name}"
        );
        assert_eq!(
            (e.raised_ms.ms(), e.raised_value, e.source.as_str()),
            (2_000, 1.0, "modbus://sim/di1")
        );
        // the agent restarted and sent the state again; then the gauge cleared it
        let clear = alarm_batch(
            7,
            &[
                (9, "alarm.leak", 1.0, 5_000, true),
                (10, "alarm.leak", 0.0, 62_000, true),
            ],
        );
        db.ingest(&sid("site-a"), &clear).await.unwrap();
        db.ingest(&sid("site-a"), &raise).await.unwrap();
        db.ingest(&sid("site-a"), &clear).await.unwrap();
        let all = alarms::list(&c, &alarm_query(None)).await.unwrap();
        assert_eq!(all.len(), 1, "{name}: {all:?}");
        assert_eq!(all[0].cleared_ms.map(|t| t.ms()), Some(62_000), "{name}");
        assert_eq!(
            all[0].state(crate::wallclock::now_ms()),
            AlarmState::Cleared
        );
        let (_, events) = alarms::get(&c, &all[0].episode_id).await.unwrap();
        let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["raised", "cleared"], "{name}");
        drop(db);
        drop_database(pg).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_is_acknowledged_once_shelved_for_a_time_and_listed_by_its_state_in_scope_only() {
    use crate::domain::alarm::AlarmState;
    for (name, url, pg, _dir) in databases().await {
        let db = Db::connect(&url, 4).await.unwrap();
        site(&db, "site-a").await;
        let c = ctx(&db, Scope::All);
        let b = alarm_batch(
            1,
            &[
                (1, "alarm.water", 1.0, 1_000, true),
                (2, "alarm.leak", 1.0, 1_000, true),
            ],
        );
        db.ingest(&sid("site-a"), &b).await.unwrap();
        let open = alarms::list(&c, &alarm_query(Some(AlarmState::Active)))
            .await
            .unwrap();
        assert_eq!(open.len(), 2, "{name}");
        let by_field = |f: &str| {
            open.iter()
                .find(|e| e.field == f)
                .map(|e| e.episode_id.clone())
                .unwrap()
        };
        let (water, leak) = (&by_field("alarm.water"), &by_field("alarm.leak"));
        let ack = || alarms::AckRequest {
            note: "seen, truck on its way".into(),
        };
        let a = alarms::acknowledge(&c, water, ack(), "user:ann")
            .await
            .unwrap();
        assert_eq!(a.acked_by.as_deref(), Some("user:ann"));
        let (kind, _) = refusal(
            alarms::acknowledge(&c, water, ack(), "user:bob")
                .await
                .err()
                .unwrap(),
        );
        assert_eq!(kind, Refused::Conflict, "{name}: a second acknowledgement");
        let until = crate::wallclock::now_ms() + 3_600_000;
        let shelve = |until: i64, reason: &str| alarms::ShelveRequest {
            until: json!(until),
            reason: reason.into(),
        };
        let (kind, field) = refusal(
            alarms::shelve(&c, leak, shelve(until, " "), "user:ann")
                .await
                .err()
                .unwrap(),
        );
        assert_eq!(
            (kind, field.as_str()),
            (Refused::Invalid, "reason"),
            "{name}"
        );
        let (kind, field) = refusal(
            alarms::shelve(&c, leak, shelve(until + 8 * 86_400_000, "x"), "user:ann")
                .await
                .err()
                .unwrap(),
        );
        assert_eq!(
            (kind, field.as_str()),
            (Refused::Invalid, "until"),
            "{name}"
        );
        alarms::shelve(&c, leak, shelve(until, "probe being replaced"), "user:ann")
            .await
            .unwrap();
        let count = |s| {
            let c = c.clone();
            async move { alarms::list(&c, &alarm_query(Some(s))).await.unwrap().len() }
        };
        assert_eq!(
            (
                count(AlarmState::Active).await,
                count(AlarmState::Acknowledged).await,
                count(AlarmState::Shelved).await
            ),
            (0, 1, 1),
            "{name}"
        );
        alarms::unshelve(&c, leak, "user:ann").await.unwrap();
        let (kind, _) = refusal(alarms::unshelve(&c, leak, "user:ann").await.err().unwrap());
        assert_eq!(kind, Refused::Conflict, "{name}: not shelved any more");
        assert_eq!(count(AlarmState::Active).await, 1, "{name}");
        // the gauge clears the water alarm: shelving it is refused now
        db.ingest(
            &sid("site-a"),
            &alarm_batch(1, &[(3, "alarm.water", 0.0, 9_000, true)]),
        )
        .await
        .unwrap();
        let (kind, _) = refusal(
            alarms::shelve(&c, water, shelve(until, "x"), "user:ann")
                .await
                .err()
                .unwrap(),
        );
        assert_eq!(
            kind,
            Refused::Conflict,
            "{name}: a cleared alarm is not shelved"
        );
        // a caller scoped to another site sees none of it
        let other = ctx(&db, Scope::Sites(["site-b".to_string()].into()));
        assert!(
            alarms::list(&other, &alarm_query(None))
                .await
                .unwrap()
                .is_empty(),
            "{name}"
        );
        let (kind, _) = refusal(alarms::get(&other, leak).await.err().unwrap());
        assert_eq!(kind, Refused::OutOfScope, "{name}");
        let (kind, _) = refusal(
            alarms::acknowledge(&other, leak, ack(), "user:eve")
                .await
                .err()
                .unwrap(),
        );
        assert_eq!(kind, Refused::OutOfScope, "{name}");
        drop(db);
        drop_database(pg).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalation_resolved_while_its_cause_persists_reopens_as_the_same_case_and_a_cleared_one_does_not()
 {
    use crate::domain::escalation::{Cause, EscState};
    for (name, url, pg, _dir) in databases().await {
        let db = Db::connect(&url, 4).await.unwrap();
        let c = ctx(&db, Scope::All);
        site_b_with_a_tank_that_never_reported(&c).await;
        let now = crate::wallclock::now_ms();
        let s = evaluate::Settings::default();
        let stale = |db: Db| async move {
            db.escalations()
                .open()
                .await
                .unwrap()
                .into_iter()
                .find(|o| o.site_id == "site-b" && o.cause == Cause::Stale)
        };
        evaluate::run(&db, now, s).await.unwrap();
        let first = stale(db.clone()).await.expect("a stale escalation");
        let id = first.escalation_id.clone();
        let mv = |state: &str, assignee: Option<&str>| escalations::MoveRequest {
            state: state.into(),
            assignee: assignee.map(str::to_string),
            note: String::new(),
        };
        escalations::move_to(&c, &id, mv("assigned", Some("dana")), "user:ann", false)
            .await
            .unwrap();
        escalations::add_note(
            &c,
            &id,
            escalations::NoteRequest {
                note: "gauge cable?".into(),
            },
            "user:dana",
        )
        .await
        .unwrap();
        escalations::move_to(&c, &id, mv("resolved", None), "user:dana", false)
            .await
            .unwrap();
        // the tank is still stale: the same case opens again, assigned
        let r = evaluate::run(&db, now + 1_000, s).await.unwrap();
        assert_eq!((r.opened, r.reopened), (0, 1), "{name}: {r:?}");
        let again = stale(db.clone()).await.expect("open again");
        assert_eq!(again.escalation_id, id, "{name}: the same case");
        let (e, events) = escalations::get(&c, &id).await.unwrap();
        assert_eq!(
            (e.state, e.assignee.as_deref(), e.resolved_ms),
            (EscState::Assigned, Some("dana"), None),
            "{name}"
        );
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            ["opened", "moved", "note", "moved", "reopened"],
            "{name}"
        );
        // fresh data clears it (the job's own clear); stale again later is a new case
        super::observations::push(
            &c,
            serde_json::from_value(json!({"observations": [
                {"site": "site-b", "tank": "tank-9", "at": now + 2_000, "volume_l": 12000}]}))
            .unwrap(),
            "user:ann",
        )
        .await
        .unwrap();
        let r = evaluate::run(&db, now + 3_000, s).await.unwrap();
        assert!(
            r.cleared >= 1 && stale(db.clone()).await.is_none(),
            "{name}: {r:?}"
        );
        let r = evaluate::run(&db, now + 30 * 3_600_000, s).await.unwrap();
        let later = stale(db.clone()).await.expect("stale again");
        assert_ne!(
            later.escalation_id, id,
            "{name}: a cause that cleared and came back is a new case ({r:?})"
        );
        drop(db);
        drop_database(pg).await;
    }
}

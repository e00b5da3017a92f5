//! A site's own alarm severities, and escalations acknowledged and
//! snoozed: on SQLite and PostgreSQL.

use serde_json::json;

use super::*;
use crate::domain::alarm::{AlarmType, Severity};
use crate::domain::escalation::{Cause, EscState};

fn severities(v: serde_json::Value) -> alarms::SeveritiesRequest {
    serde_json::from_value(json!({ "severities": v })).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sites_own_severity_grades_its_new_alarms_and_a_critical_one_escalates_while_other_sites_keep_the_default()
 {
    for (name, url, pg, _dir) in databases().await {
        let db = Db::connect(&url, 4).await.unwrap();
        site(&db, "site-a").await;
        site(&db, "site-c").await;
        let c = ctx(&db, Scope::All);
        let set = alarms::set_severities(
            &c,
            &sid("site-a"),
            severities(json!([
                {"type": "high_water", "severity": "critical"},
                {"type": "leak", "severity": "critical"},        // its default: no rule
                {"type": "device_offline", "severity": "warning"},
            ])),
        )
        .await
        .unwrap();
        let of = |t: AlarmType| set.iter().find(|x| x.0 == t).copied().unwrap();
        assert_eq!(
            of(AlarmType::HighWater),
            (AlarmType::HighWater, Severity::Critical, false),
            "{name}"
        );
        assert_eq!(
            of(AlarmType::Leak),
            (AlarmType::Leak, Severity::Critical, true),
            "{name}: a type set to its default is the default"
        );
        assert_eq!(
            set.len(),
            AlarmType::ALL.len(),
            "{name}: every type is listed"
        );
        let water = alarm_batch(3, &[(1, "alarm.high_water", 1.0, 1_000, true)]);
        db.ingest(&sid("site-a"), &water).await.unwrap();
        db.ingest(&sid("site-c"), &water).await.unwrap();
        let all = alarms::list(&c, &alarm_query(None)).await.unwrap();
        let sev = |s: &str| {
            all.iter()
                .find(|e| e.site_id == s)
                .map(|e| e.severity)
                .unwrap()
        };
        assert_eq!(
            (sev("site-a"), sev("site-c")),
            (Severity::Critical, Severity::Major),
            "{name}"
        );
        let open = db.escalations().open().await.unwrap();
        let critical: Vec<_> = open
            .iter()
            .filter(|o| o.cause == Cause::CriticalAlarm)
            .map(|o| o.site_id.to_string())
            .collect();
        assert_eq!(
            critical,
            ["site-a"],
            "{name}: only the site that made it critical escalates"
        );
        // refusals name the field; another site is not found
        let e = alarms::set_severities(
            &c,
            &sid("site-a"),
            severities(json!([
                {"type": "overfill", "severity": "major"},
                {"type": "overfill", "severity": "minor"},
            ])),
        )
        .await
        .unwrap_err();
        assert_eq!(
            refusal(e),
            (Refused::Invalid, "severities[1].type".into()),
            "{name}"
        );
        let scoped = ctx(&db, Scope::Sites(["site-c".to_string()].into()));
        let e = alarms::severities(&scoped, &sid("site-a"))
            .await
            .unwrap_err();
        assert!(
            matches!(refusal(e).0, Refused::NotFound | Refused::OutOfScope),
            "{name}"
        );
        // clearing the list brings the defaults back
        let back = alarms::set_severities(&c, &sid("site-a"), severities(json!([])))
            .await
            .unwrap();
        assert!(back.iter().all(|x| x.2), "{name}: {back:?}");
        drop(db);
        drop_database(pg).await;
    }
}

/// The webhook notifications queued for an escalation (none is sent
/// here), by event.
async fn webhooks(db: &Db, id: &str) -> Vec<String> {
    db.outbox()
        .pending(1_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.escalation_id == id)
        .map(|r| r.event)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalation_is_acknowledged_once_its_snooze_holds_back_update_webhooks_and_a_reopened_case_is_awake()
 {
    for (name, url, pg, _dir) in databases().await {
        let db = Db::connect(&url, 4).await.unwrap();
        let c = ctx(&db, Scope::All);
        site_b_with_a_tank_that_never_reported(&c).await;
        let now = crate::wallclock::now_ms();
        let s = evaluate::Settings::default();
        evaluate::run(&db, now, s).await.unwrap();
        let id = db
            .escalations()
            .open()
            .await
            .unwrap()
            .into_iter()
            .find(|o| o.site_id == "site-b" && o.cause == Cause::Stale)
            .expect("a stale escalation")
            .escalation_id;
        let ack = |note: &str| escalations::EscAckRequest { note: note.into() };
        let e = escalations::acknowledge(&c, &id, ack("on it"), "user:ann", true)
            .await
            .unwrap();
        assert_eq!(
            (e.acked_by.as_deref(), e.state),
            (Some("user:ann"), EscState::Created),
            "{name}: acknowledging does not move it"
        );
        let again = escalations::acknowledge(&c, &id, ack(""), "user:bob", true)
            .await
            .unwrap_err();
        assert_eq!(refusal(again).0, Refused::Conflict, "{name}");
        assert_eq!(webhooks(&db, &id).await, ["acknowledged"], "{name}");
        // snoozed: an update stays on the timeline but sends nothing
        let snooze = |until: i64| escalations::SnoozeRequest {
            until: json!(until),
            reason: "tank out of service".into(),
        };
        for bad in [now - 1, now + 8 * 86_400_000] {
            let e = escalations::snooze(&c, &id, snooze(bad), "user:ann")
                .await
                .unwrap_err();
            assert_eq!(refusal(e), (Refused::Invalid, "until".into()), "{name}");
        }
        let until = crate::wallclock::now_ms() + 3_600_000;
        let e = escalations::snooze(&c, &id, snooze(until), "user:ann")
            .await
            .unwrap();
        assert!(e.facts().snoozed(until - 1), "{name}");
        let finding = |detail: &str| crate::store::escalations::Finding {
            site_id: "site-b".into(),
            tank_id: "tank-9".into(),
            cause: Cause::Stale,
            subject: "stale".into(),
            detail: detail.into(),
            context: "{}".into(),
        };
        db.escalations()
            .apply(&finding("older still"), "esc-x", until - 1, true)
            .await
            .unwrap();
        assert_eq!(
            webhooks(&db, &id).await,
            ["acknowledged"],
            "{name}: held back"
        );
        db.escalations()
            .apply(&finding("older again"), "esc-x", until + 1, true)
            .await
            .unwrap();
        assert_eq!(
            webhooks(&db, &id).await,
            ["acknowledged", "updated"],
            "{name}: the snooze ran out by itself"
        );
        // resolved while stale: it reopens awake, to be acknowledged again
        let mv = escalations::MoveRequest {
            state: "resolved".into(),
            assignee: None,
            note: String::new(),
        };
        escalations::move_to(&c, &id, mv, "user:ann", false)
            .await
            .unwrap();
        let e = escalations::snooze(&c, &id, snooze(until), "user:ann")
            .await
            .unwrap_err();
        assert_eq!(refusal(e).0, Refused::Conflict, "{name}: resolved");
        evaluate::run(&db, now + 2_000, s).await.unwrap();
        let (e, events) = escalations::get(&c, &id).await.unwrap();
        assert_eq!(
            (e.state, e.acked_ms, e.snoozed_until_ms),
            (EscState::Created, None, None),
            "{name}"
        );
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "opened",
                "acknowledged",
                "snoozed",
                "updated",
                "updated",
                "moved",
                "reopened"
            ],
            "{name}"
        );
        escalations::acknowledge(&c, &id, ack(""), "user:bob", false)
            .await
            .unwrap();
        drop(db);
        drop_database(pg).await;
    }
}

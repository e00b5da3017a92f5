//! A site's holidays: set and refused through the service, walked by the
//! inventory job, and a corrupt stored list refused at the read and left
//! out of the job for that site alone. On SQLite and PostgreSQL.

use serde_json::json;

use super::*;
use crate::store::inventory::TankFilter;

const H: i64 = 3_600_000;
/// Monday 2026-11-23 00:00 UTC.
const MONDAY: i64 = 1_795_392_000_000;

fn patch(v: serde_json::Value) -> inventory::SiteRequest {
    serde_json::from_value(v).unwrap()
}

/// Three weeks of hourly volumes at `tank-1`: 100 L/h on weekdays and
/// Saturdays, 10 L/h on Sundays, ending at `MONDAY + 21 days`.
fn three_weeks(log_id: u64) -> tankwatch_proto::v1::TelemetryBatch {
    use tankwatch_proto::v1;
    let start = MONDAY;
    let mut v = 60_000.0;
    let readings: Vec<v1::Reading> = (0..21 * 24)
        .map(|i| {
            v -= if i % 168 >= 6 * 24 { 10.0 } else { 100.0 };
            let ts = start + (i + 1) * H - 60_000;
            v1::Reading {
                seq: i as u64 + 1,
                asset_id: "tank-1".into(),
                field: evaluate::VOLUME_FIELD.into(),
                value: v,
                unit: "L".into(),
                quality: v1::Quality::Good as i32,
                source_ts_ms: ts,
                received_ts_ms: ts,
                source: "modbus://sim/hr1".into(),
                error: String::new(),
            }
        })
        .collect();
    v1::TelemetryBatch {
        log_id,
        first_seq: 1,
        last_seq: readings.len() as u64,
        readings,
        ..Default::default()
    }
}

async fn runout(db: &Db) -> Option<i64> {
    let f = TankFilter {
        site: Some("site-a"),
        q: None,
        product: None,
        risk: None,
        freshness: None,
        sites: None,
        after: None,
        limit: 10,
    };
    let rows = db.inventory().list(&f).await.unwrap();
    rows.first()
        .and_then(|(_, st)| st.as_ref()?.runout_ms)
        .map(|t| t.ms())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sites_holidays_are_walked_at_the_sundays_rates_and_a_corrupt_list_is_that_sites_alone() {
    for (name, url, pg, _dir) in databases().await {
        let db = Db::connect(&url, 4).await.unwrap();
        site(&db, "site-a").await;
        let c = ctx(&db, Scope::All);
        site_b_with_a_tank_that_never_reported(&c).await;
        inventory::put_tank(
            &c,
            &sid("site-a"),
            "tank-1",
            serde_json::from_value(json!({"product": "diesel", "capacity_l": 60000, "floor_l": 0}))
                .unwrap(),
        )
        .await
        .unwrap();
        db.ingest(&sid("site-a"), &three_weeks(1)).await.unwrap();
        let now = MONDAY + 21 * 24 * H;
        let s = evaluate::Settings::default();
        evaluate::run(&db, now, s).await.unwrap();
        let plain = runout(&db).await.expect("a runout");

        // the next day a holiday: the tank lasts longer
        let (_, after) = inventory::update_site(
            &c,
            &sid("site-a"),
            patch(json!({"holidays": ["2026-12-15", "2026-12-15"]})),
        )
        .await
        .unwrap();
        let shown: Vec<String> = after.holidays.iter().map(|h| h.to_string()).collect();
        assert_eq!(shown, ["2026-12-15"], "{name}");
        evaluate::run(&db, now + 1_000, s).await.unwrap();
        let with = runout(&db).await.expect("a runout");
        assert!(
            with > plain + 12 * H,
            "{name}: a Tuesday selling like a Sunday puts the runout later: {plain} → {with}"
        );

        // refused, naming the field, and nothing changed
        for bad in [json!(["2026-12-32"]), json!(["2026-12-15", "15.12.2026"])] {
            let r =
                inventory::update_site(&c, &sid("site-a"), patch(json!({ "holidays": bad }))).await;
            match r {
                Err(e) => assert_eq!(refusal(e).1, "holidays", "{name}"),
                Ok(_) => panic!("{name}: {bad} accepted"),
            }
        }
        let many: Vec<String> = (0..=crate::domain::calendar::MAX_HOLIDAYS)
            .map(|d| format!("2027-{:02}-{:02}", d / 28 % 12 + 1, d % 28 + 1))
            .collect();
        let r =
            inventory::update_site(&c, &sid("site-a"), patch(json!({ "holidays": many }))).await;
        assert_eq!(refusal(r.err().unwrap()).1, "holidays", "{name}");
        assert_eq!(
            inventory::site(&c, &sid("site-a"))
                .await
                .unwrap()
                .holidays
                .len(),
            1,
            "{name}"
        );

        // a corrupt stored list: the read says so, the job goes on for
        // every site, and walks this one without its holidays
        crate::store::testing::corrupt(
            &db,
            "sites",
            "holidays",
            "site_id",
            "site-a",
            r#"["someday"]"#,
        )
        .await;
        let e = inventory::site(&c, &sid("site-a"))
            .await
            .expect_err("corrupt");
        assert!(matches!(e, ServiceError::Store(_)), "{name}: {e:?}");
        let r = evaluate::run(&db, now + 2_000, s).await.unwrap();
        assert!(r.tanks >= 2, "{name}: {r:?}");
        assert_eq!(runout(&db).await, Some(plain), "{name}");
        // the lists of every site (zones, freshness) still answer
        let zones = inventory::site_settings(&c).await.unwrap();
        assert!(
            zones.contains_key("site-a") && zones.contains_key("site-b"),
            "{name}"
        );
        // a change that leaves the list alone cannot be made on it; one that
        // replaces it repairs it
        let r = inventory::update_site(&c, &sid("site-a"), patch(json!({"name": "A"}))).await;
        assert!(matches!(r, Err(ServiceError::Store(_))), "{name}");
        let (before, after) = inventory::update_site(
            &c,
            &sid("site-a"),
            patch(json!({"holidays": ["2026-12-24"]})),
        )
        .await
        .unwrap();
        assert!(
            before.holidays.is_empty(),
            "{name}: the unreadable list shows as none"
        );
        assert_eq!(after.holidays.len(), 1, "{name}");
        assert_eq!(
            inventory::site(&c, &sid("site-a"))
                .await
                .unwrap()
                .holidays
                .0,
            after.holidays.0,
            "{name}"
        );
        drop(db);
        drop_database(pg).await;
    }
}

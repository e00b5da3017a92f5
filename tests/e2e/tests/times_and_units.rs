//! Issue 27, item 6: times and units that were silently misread. A valid
//! RFC 3339 time with an offset was refused while one without any zone
//! was taken as UTC (loads, both CSV imports, readings and audit
//! filters); a tank whose capacity came in `litre` or `m3` never reached
//! `/tanks`. Over real REST and SQL, on both backends.
use anyhow::{Result, ensure};
use e2e::*;
use serde_json::json;
use tankwatch_proto::v1;

const SITE: &str = "u-1";

fn tank(id: &str, capacity: f64, unit: &str) -> v1::Asset {
    v1::Asset {
        asset_id: id.into(),
        kind: v1::AssetKind::Tank as i32,
        name: id.into(),
        capacity,
        capacity_unit: unit.into(),
        ..Default::default()
    }
}

async fn times_and_units(url: &str) -> Result<()> {
    let pki = TestPki::new(&[])?;
    let he = start_headend(headend_config(&pki, url, 0)).await?;
    let http = he.http_addr;
    let root = token_of(http);
    // an older agent's Hello: each tank's capacity in its configured unit
    let hello = v1::Hello {
        site_id: SITE.into(),
        log_id: 1,
        agent_version: "old".into(),
        assets: vec![
            tank("t-litre", 1000.0, "litre"),
            tank("t-m3", 20.0, "m3"),
            tank("t-gal", 100.0, "gal"),
            tank("t-bbl", 10.0, "bbl"),
        ],
        ..Default::default()
    };
    he.db
        .record_hello(headend::db::HelloInfo {
            site: SITE,
            hello: &hello,
        })
        .await?;
    let tanks = get_json(http, &format!("/api/v1/tanks?site={SITE}")).await?;
    let cap = |id: &str| {
        tanks
            .as_array()
            .and_then(|a| a.iter().find(|t| t["tank"] == id || t["tank_id"] == id))
            .and_then(|t| t["capacity_l"].as_f64())
    };
    ensure!(cap("t-litre") == Some(1000.0), "{tanks}");
    ensure!(cap("t-m3") == Some(20_000.0), "{tanks}");
    ensure!(
        cap("t-gal").is_some_and(|c| (c - 378.541_178_4).abs() < 1e-6),
        "{tanks}"
    );
    ensure!(
        cap("t-bbl").is_none(),
        "a unit the headend cannot read sets nothing up: {tanks}"
    );

    // an ETA with an offset is that instant; one without a zone is refused
    let eta_ms = headend::db::now_ms() + 86_400_000;
    let eta = |text: &str| {
        json!({"site": SITE, "reference": format!("PO-{text}"), "tanks": ["t-litre"], "product": "diesel",
            "planned_volume_l": 500, "eta": text, "eta_source": "manual"})
    };
    // a time a day ahead, written with +01:00
    let ahead = jiff::Timestamp::from_millisecond(eta_ms)?
        .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(1)))
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    let (st, v) = as_bearer(http, &root, "POST", "/api/v1/loads", Some(&eta(&ahead))).await?;
    ensure!(st == 201, "{ahead}: {st} {v}");
    ensure!(
        (v["load"]["eta_ms"].as_i64().unwrap_or(0) - eta_ms).abs() < 1000,
        "{ahead} is {eta_ms}: {v}"
    );
    let naive = ahead[..19].to_string();
    let (st, v) = as_bearer(http, &root, "POST", "/api/v1/loads", Some(&eta(&naive))).await?;
    ensure!(
        st == 400 && v["error"]["field"] == "eta",
        "{naive} (no zone) must be refused: {st} {v}"
    );

    // both CSV imports: a row without a zone is refused and named
    let loads_csv = format!(
        "reference,tanks,planned_volume_l,eta\nPO-A,t-litre,1000,{ahead}\nPO-B,t-litre,1000,{naive}\n"
    );
    let (st, r) = as_bearer(
        http,
        &root,
        "POST",
        &format!("/api/v1/sites/{SITE}/loads/import"),
        Some(&json!({ "csv": loads_csv })),
    )
    .await?;
    ensure!(
        st == 200 && r["added"] == 1 && r["rejected"] == 1,
        "{st} {r}"
    );
    ensure!(
        r["problems"][0]["row"] == 3 && r["problems"][0]["column"] == "eta",
        "{r}"
    );
    let at = headend::db::now_ms() - 3_600_000;
    let at_text = jiff::Timestamp::from_millisecond(at)?
        .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(-5)))
        .strftime("%Y-%m-%dT%H:%M:%S%:z")
        .to_string();
    let obs_csv = format!(
        "tank,at,volume_l\nt-litre,{at_text},500\nt-litre,{},400\n",
        &at_text[..19]
    );
    let (st, r) = as_bearer(
        http,
        &root,
        "POST",
        &format!("/api/v1/sites/{SITE}/inventory/import"),
        Some(&json!({ "csv": obs_csv })),
    )
    .await?;
    ensure!(
        st == 200 && r["added"] == 1 && r["rejected"] == 1,
        "{st} {r}"
    );
    ensure!(r["problems"][0]["column"] == "at", "{r}");

    // query filters: readings and the audit trail
    for path in [
        format!("/api/v1/sites/{SITE}/assets/t-litre/readings?from="),
        "/api/v1/audit?from=".to_string(),
    ] {
        let (st, v) = as_bearer(
            http,
            &root,
            "GET",
            &format!("{path}2026-12-05T08:00:00%2B01:00"),
            None,
        )
        .await?;
        ensure!(st == 200, "{path} with an offset: {st} {v}");
        let (st, v) = as_bearer(
            http,
            &root,
            "GET",
            &format!("{path}2026-12-05T08:00:00"),
            None,
        )
        .await?;
        ensure!(
            st == 400 && v["error"]["field"] == "from",
            "{path} without a zone: {st} {v}"
        );
    }
    he.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_with_offsets_are_read_and_zoneless_ones_refused_and_every_volume_unit_reaches_the_tank_list_on_sqlite()
-> Result<()> {
    let work = tempfile::tempdir()?;
    times_and_units(&sqlite_url(work.path())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_with_offsets_are_read_and_zoneless_ones_refused_and_every_volume_unit_reaches_the_tank_list_on_postgres()
-> Result<()> {
    let db = pg::fresh_database().await?;
    times_and_units(&db.url).await?;
    db.drop().await
}

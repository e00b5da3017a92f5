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
        .record_hello(headend::store::HelloInfo {
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
    let eta_ms = headend::wallclock::now_ms() + 86_400_000;
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
    let at = headend::wallclock::now_ms() - 3_600_000;
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

    // loads by status and ETA window (issue 27, item 8)
    let from = jiff::Timestamp::from_millisecond(eta_ms - 60_000)?;
    let to = jiff::Timestamp::from_millisecond(eta_ms + 60_000)?;
    let (st, v) = as_bearer(
        http,
        &root,
        "GET",
        &format!("/api/v1/loads?site={SITE}&status=planned&eta_from={from}&eta_to={to}"),
        None,
    )
    .await?;
    let refs: Vec<&str> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["reference"].as_str())
        .collect();
    ensure!(
        st == 200 && refs.len() == 2 && refs.iter().all(|r| r.starts_with("PO-")),
        "the load posted and the one imported, both due then: {st} {v}"
    );
    let (st, v) = as_bearer(
        http,
        &root,
        "GET",
        &format!("/api/v1/loads?site={SITE}&status=delivered"),
        None,
    )
    .await?;
    ensure!(st == 200 && v == json!([]), "{v}");
    let (st, v) = as_bearer(http, &root, "GET", "/api/v1/loads?status=lost", None).await?;
    ensure!(st == 400 && v["error"]["field"] == "status", "{v}");
    let (st, _) = as_bearer(
        http,
        &root,
        "GET",
        &format!("/api/v1/loads?eta_to={}", &ahead[..19]),
        None,
    )
    .await?;
    ensure!(st == 400, "a window end without a zone is refused");

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

/// Issue 27, item 8: refusals outside the one error shape, and bodies
/// whose meaning depends on the parser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_and_a_key_given_twice_are_refused_in_the_one_error_shape() -> Result<()>
{
    let pki = TestPki::new(&[])?;
    let work = tempfile::tempdir()?;
    let he = start_headend(headend_config(&pki, &sqlite_url(work.path()), 0)).await?;
    let http = he.http_addr;
    let root = token_of(http);
    tank_site(&he.db, SITE).await?;
    // over the 64 KiB body limit: 413, as JSON
    let big = json!({"site": SITE, "note": "x".repeat(100_000)});
    let (st, v) = as_bearer(
        http,
        &root,
        "POST",
        "/api/v1/inventory/observations",
        Some(&big),
    )
    .await?;
    ensure!(
        st == 413 && v["error"]["code"] == "too_large" && v["error"]["message"].is_string(),
        "{st} {v}"
    );
    // an over-long target and over-large headers: 414 and 431, as JSON
    let long = format!("/api/v1/sites?q={}", "x".repeat(9 * 1024));
    let (st, v) = as_bearer(http, &root, "GET", &long, None).await?;
    ensure!(
        st == 414 && v["error"]["code"] == "uri_too_long",
        "{st} {v}"
    );
    let r = reqwest::Client::new()
        .get(format!("http://{http}/api/v1/sites"))
        .header("authorization", format!("Bearer {root}"))
        .header("x-padding", "y".repeat(40 * 1024))
        .send()
        .await?;
    let st = r.status().as_u16();
    let v: serde_json::Value = r.json().await?;
    ensure!(
        st == 431 && v["error"]["code"] == "headers_too_large",
        "{st} {v}"
    );
    let mut many = reqwest::Client::new()
        .get(format!("http://{http}/api/v1/sites"))
        .header("authorization", format!("Bearer {root}"));
    for i in 0..150 {
        many = many.header(format!("x-h{i}"), "1");
    }
    let r = many.send().await?;
    let st = r.status().as_u16();
    let v: serde_json::Value = r.json().await?;
    ensure!(
        st == 431 && v["error"]["code"] == "headers_too_large",
        "150 headers: {st} {v}"
    );
    // a key given twice: which one wins differs between parsers, so neither does
    let r = reqwest::Client::new()
        .post(format!("http://{http}/api/v1/loads"))
        .header("authorization", format!("Bearer {root}"))
        .header("content-type", "application/json")
        .body(r#"{"site":"u-1","site":"other","reference":"PO-D","tanks":["tank-1"],"planned_volume_l":1,"eta":1,"eta_source":"manual"}"#)
        .send()
        .await?;
    let st = r.status().as_u16();
    let v: serde_json::Value = r.json().await?;
    ensure!(
        st == 400
            && v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("given twice")),
        "{st} {v}"
    );
    // a CSV import as JSON takes as much as text/csv does (not 1,000 characters)
    let mut csv = String::from("tank,at,volume_l\n");
    let at = headend::wallclock::now_ms() - 7_200_000;
    for i in 0..200 {
        csv.push_str(&format!("tank-1,{},{}\n", at + i * 1000, 9000 - i));
    }
    let (st, r) = as_bearer(
        http,
        &root,
        "POST",
        &format!("/api/v1/sites/{SITE}/inventory/import"),
        Some(&json!({ "csv": csv })),
    )
    .await?;
    ensure!(st == 200 && r["added"] == 200, "{st} {r}");
    he.stop().await;
    Ok(())
}

//! Issue 8, items 2, 4 and 5, from outside, over real HTTP: values that
//! used to be stored and then broke every read, cross-site requests, NUL
//! bytes, on SQLite and PostgreSQL; and a property test: arbitrary JSON on
//! every write route gives only 2xx/4xx, and every read route still answers.
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, ensure};
use e2e::*;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

/// A headend with one connected site (tanks and a controller).
struct Rig {
    _pki: TestPki,
    _work: tempfile::TempDir,
    he: headend::Running,
    agent: edge_agent::Agent,
    _sim: atg_sim::Simulator,
    http: SocketAddr,
}

async fn rig(site: &str, db_url: Option<String>) -> Result<Rig> {
    let pki = TestPki::new(&[site])?;
    let work = tempfile::tempdir()?;
    let url = db_url.unwrap_or_else(|| sqlite_url(work.path()));
    let he = e2e::start_headend(headend_config(&pki, &url, 0)).await?;
    let sim = fast_sim().await?;
    sim.set_frozen(true);
    let base = agent_yaml(
        &pki,
        site,
        he.grpc_addr,
        &work.path().join("log"),
        &sim,
        100,
    );
    let yaml = with_controllers(
        &base,
        &[("ctl-1", 100.0, &sim)],
        "  - { asset: ctl-1, field: power_limit, min: 0, max: 80, default: 50 }\n",
        "",
    );
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    let http = he.http_addr;
    eventually("the site's tanks", T, || async {
        let a = get_json(http, &format!("/api/v1/sites/{site}/assets")).await;
        Ok(a.ok()
            .filter(|a| a.as_array().is_some_and(|v| v.len() >= 2))
            .map(|_| ()))
    })
    .await?;
    Ok(Rig {
        _pki: pki,
        _work: work,
        he,
        agent,
        _sim: sim,
        http,
    })
}

impl Rig {
    async fn stop(self) -> Result<()> {
        self.agent.stop().await?;
        self.he.stop().await;
        Ok(())
    }
}

/// A raw request: (status, body text).
async fn raw(
    http: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String)> {
    let (ak, av) = auth(http);
    let mut r = reqwest::Client::new()
        .request(method.parse()?, format!("http://{http}{path}"))
        .header(ak, av);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.body(body.to_string()).send().await?;
    Ok((r.status().as_u16(), r.text().await?))
}

fn load(site: &str, eta: Value, volume: Value) -> Value {
    json!({"site": site, "reference": "PO-1", "tanks": ["tank-1"], "product": "diesel",
           "planned_volume_l": volume, "eta": eta, "eta_source": "manual"})
}

async fn refuses_bad_values_and_never_breaks_reads(r: &Rig, site: &str) -> Result<()> {
    let http = r.http;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    for (body, field) in [
        (
            load(site, json!(253_402_300_800_000_i64), json!(5000)),
            "eta",
        ),
        (load(site, json!(i64::MIN), json!(5000)), "eta"),
        (
            load(site, json!("9999-12-31T23:59:59Z"), json!(5000)),
            "eta",
        ),
        (load(site, json!(now), json!(1e308)), "planned_volume_l"),
        (load(site, json!(now), json!(-5)), "planned_volume_l"),
        (
            json!({"kind": "setpoint", "asset": "ctl-1", "field": "power_limit", "value": 10, "expires_at": "2099-01-01T00:00:00Z"}),
            "expires_at",
        ),
        (
            json!({"kind": "setpoint", "asset": "ctl-1", "field": "power_limit", "value": 1e308}),
            "value",
        ),
        (
            json!({"kind": "setpoint", "site": site, "field": "power_limit", "value": 10, "step": 0}),
            "step",
        ),
    ] {
        let path = if body.get("kind").is_some() {
            "/api/v1/commands"
        } else {
            "/api/v1/loads"
        };
        let (code, e) = post_json(http, path, &body).await?;
        ensure!(
            (400..500).contains(&code) && e["error"]["field"] == field,
            "{body}: {code} {e}"
        );
    }
    // a valid load, then the same row poisoned behind the API's back (as
    // an older headend stored it): reads still answer
    let (code, l) = post_json(http, "/api/v1/loads", &load(site, json!(now), json!(5000))).await?;
    ensure!(code == 201, "{code}: {l}");
    let id = l["load"]["load_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    sqlx::query("UPDATE loads SET eta_ms = $1 WHERE load_id = $2")
        .bind(253_402_300_800_000_i64)
        .bind(&id)
        .execute(r.he.db.pool())
        .await?;
    sqlx::query("UPDATE commands SET expires_at_ms = $1")
        .bind(i64::MAX)
        .execute(r.he.db.pool())
        .await?;
    // the list carries each load's own events (fetched in one query for all)
    for v in [6000, 7000] {
        let (code, l) = post_json(http, "/api/v1/loads", &load(site, json!(now), json!(v))).await?;
        ensure!(code == 201, "{code}: {l}");
        let id = l["load"]["load_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let (code, p) = send_json(
            http,
            reqwest::Method::PATCH,
            &format!("/api/v1/loads/{id}"),
            &json!({"planned_volume_l": v + 1}),
        )
        .await?;
        ensure!(code == 200, "{code}: {p}");
    }
    let list = get_json(http, "/api/v1/loads").await?;
    ensure!(list.as_array().is_some_and(|a| a.len() >= 3), "{list}");
    for l in list.as_array().into_iter().flatten() {
        let id = l["load_id"].as_str().unwrap_or_default();
        let one = get_json(http, &format!("/api/v1/loads/{id}")).await?;
        ensure!(
            l["events"] == one["events"],
            "list vs get for {id}: {l} / {one}"
        );
    }
    let one = get_json(http, &format!("/api/v1/loads/{id}")).await?;
    ensure!(one["eta"].is_null() && one["eta_ms"].is_i64(), "{one}");
    get_json(http, "/api/v1/commands").await?;
    Ok(())
}

async fn refuses_nul_bytes_with_a_4xx_not_a_database_error(r: &Rig, site: &str) -> Result<()> {
    let http = r.http;
    for path in [
        "/api/v1/loads/a%00b".to_string(),
        "/api/v1/commands/x%00".to_string(),
        "/api/v1/loads?site=%00".to_string(),
        format!("/api/v1/sites/{site}%00/assets"),
        format!("/api/v1/sites/{site}/assets/tank-1/readings?field=vol%00ume"),
    ] {
        let (code, text) = raw(http, "GET", &path, &[], "").await?;
        ensure!(code == 400, "{path}: {code} {text}");
        ensure!(!text.to_lowercase().contains("database"), "{path}: {text}");
    }
    let mut body = load(site, json!("2026-11-23T08:00:00Z"), json!(5000));
    body["reference"] = json!("PO\u{0}1");
    let (code, e) = post_json(http, "/api/v1/loads", &body).await?;
    ensure!(
        (code, e["error"]["field"].as_str()) == (400, Some("reference")),
        "{code} {e}"
    );
    let (code, e) = post_json(
        http,
        "/api/v1/commands",
        &json!({"kind": "setpoint", "asset": "ctl\u{0}1", "field": "power_limit", "value": 1}),
    )
    .await?;
    ensure!(
        (code, e["error"]["field"].as_str()) == (400, Some("asset")),
        "{code} {e}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_times_and_numbers_are_refused_and_a_poisoned_row_cannot_break_a_read_on_sqlite()
-> Result<()> {
    let r = rig("site-v", None).await?;
    refuses_bad_values_and_never_breaks_reads(&r, "site-v").await?;
    refuses_nul_bytes_with_a_4xx_not_a_database_error(&r, "site-v").await?;
    a_stored_value_this_build_does_not_know_is_an_error_naming_it(&r).await?;
    r.stop().await
}

/// A state written behind the API's back (a newer build, a hand edit) is
/// never read as some default: the read fails with a 500 that says which
/// value, and the rest of the API still answers.
async fn a_stored_value_this_build_does_not_know_is_an_error_naming_it(r: &Rig) -> Result<()> {
    let http = r.http;
    let (code, c) = post_json(
        http,
        "/api/v1/commands",
        &json!({"kind": "setpoint", "asset": "ctl-1", "field": "power_limit", "value": 10}),
    )
    .await?;
    ensure!(code == 201, "{code}: {c}");
    let id = c["command_id"].as_str().unwrap_or_default().to_string();
    sqlx::query("UPDATE commands SET state = 'paused' WHERE command_id = $1")
        .bind(&id)
        .execute(r.he.db.pool())
        .await?;
    let (code, text) = raw(http, "GET", &format!("/api/v1/commands/{id}"), &[], "").await?;
    let e: Value = serde_json::from_str(&text)?;
    ensure!(
        code == 500
            && e["error"]["code"] == "stored_value_invalid"
            && e["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("command state") && m.contains("paused")),
        "{code}: {text}"
    );
    // the store's other reads are untouched
    ensure!(get_json(http, "/api/v1/sites").await?.is_array());
    sqlx::query("UPDATE commands SET state = 'rejected' WHERE command_id = $1")
        .bind(&id)
        .execute(r.he.db.pool())
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_values_and_nul_bytes_are_refused_with_a_4xx_on_postgres() -> Result<()> {
    let db = pg::fresh_database().await?;
    let r = rig("site-w", Some(db.url.clone())).await?;
    refuses_bad_values_and_never_breaks_reads(&r, "site-w").await?;
    refuses_nul_bytes_with_a_4xx_not_a_database_error(&r, "site-w").await?;
    r.stop().await?;
    db.drop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_and_foreign_hosts_are_refused_and_a_public_listen_address_too()
-> Result<()> {
    let r = rig("site-x", None).await?;
    let http = r.http;
    let cmd = r#"{"kind":"setpoint","asset":"ctl-1","field":"power_limit","value":40}"#;
    // what a web page can send without a CORS preflight
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let (code, text) = raw(
            http,
            "POST",
            "/api/v1/commands",
            &[("content-type", ct)],
            cmd,
        )
        .await?;
        ensure!(code == 415, "{ct}: {code} {text}");
    }
    let (code, _) = raw(http, "POST", "/api/v1/commands", &[], cmd).await?;
    ensure!(code == 415, "no content type: {code}");
    let list = get_json(http, "/api/v1/commands").await?;
    ensure!(
        list.as_array().is_some_and(|a| a.is_empty()),
        "nothing was created: {list}"
    );
    // DNS rebinding: the page's own name arrives as Host
    let json_ct = [
        ("content-type", "application/json"),
        ("host", "evil.example"),
    ];
    let (code, _) = raw(http, "POST", "/api/v1/commands", &json_ct, cmd).await?;
    ensure!(code == 421, "foreign host on a write: {code}");
    let (code, _) = raw(
        http,
        "GET",
        "/api/v1/sites",
        &[("host", "evil.example:8080")],
        "",
    )
    .await?;
    ensure!(code == 421, "foreign host on a read: {code}");
    let (code, _) = raw(
        http,
        "GET",
        "/api/v1/sites",
        &[("host", "localhost:8080")],
        "",
    )
    .await?;
    ensure!(code == 200, "localhost: {code}");
    // the real thing still works
    let (code, c) = post_json(http, "/api/v1/commands", &serde_json::from_str(cmd)?).await?;
    ensure!(code == 201, "{code}: {c}");
    let metrics = get_text(http, "/metrics").await?;
    ensure!(
        metric(
            &metrics,
            "tankwatch_headend_http_refused_total{reason=\"content_type\"}"
        ) == Some(4.0),
        "{metrics}"
    );
    // no authentication yet: a non-loopback REST address is refused at start
    let pki = TestPki::new(&["site-y"])?;
    let work = tempfile::tempdir()?;
    let mut cfg = headend_config(&pki, &sqlite_url(work.path()), 0);
    cfg.http_listen = "0.0.0.0:0".parse()?;
    let e = match e2e::start_headend(cfg).await {
        Ok(h) => {
            h.stop().await;
            anyhow::bail!("a headend started with its REST API on 0.0.0.0");
        }
        Err(e) => e.to_string(),
    };
    ensure!(e.contains("loopback"), "{e}");
    r.stop().await
}

/// A random JSON value, biased toward what breaks parsers and databases.
fn arbitrary(rng: &mut fastrand::Rng, depth: u32) -> Value {
    let strings = [
        "",
        "\u{0}",
        "a\u{0}b",
        "tank-1",
        "ctl-1",
        "site-p",
        "power_limit",
        "setpoint",
        "eta",
        "manual",
        "9999-12-31T23:59:59Z",
        "-1",
        "1e308",
        "NaN",
        "😀",
        "' OR 1=1 --",
        "2026-11-23T08:00:00Z",
        "cancelled",
        "site-p/ctl-1",
    ];
    match rng.u8(0..if depth > 3 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.bool()),
        2 => json!(rng.i64(..)),
        3 => json!([0.0, -0.0, 1e308, -1e308, 5e-324, 40.0, 80.000001][rng.usize(0..7)]),
        4 => json!(strings[rng.usize(0..strings.len())]),
        5 => json!("x".repeat(rng.usize(0..2000))),
        6 => Value::Array(
            (0..rng.usize(0..4))
                .map(|_| arbitrary(rng, depth + 1))
                .collect(),
        ),
        _ => {
            let mut o = serde_json::Map::new();
            for _ in 0..rng.usize(0..5) {
                let k = strings[rng.usize(0..strings.len())].to_string();
                o.insert(k, arbitrary(rng, depth + 1));
            }
            Value::Object(o)
        }
    }
}

/// A value that may well be valid for `field`, so that requests get past
/// the first check and deeper paths (SQL, dispatch) are exercised too.
fn plausible(rng: &mut fastrand::Rng, field: &str) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    match field {
        "kind" => json!(["setpoint", "eta"][rng.usize(0..2)]),
        "site" => json!("site-p"),
        "asset" => json!(["ctl-1", "site-p/ctl-1", "tank-1"][rng.usize(0..3)]),
        "field" => json!("power_limit"),
        "value" => json!(rng.f64() * 100.0),
        "duration_s" => json!(rng.u32(1..1000)),
        "expires_in_s" => json!(rng.u32(1..100_000)),
        "expires_at" => json!(now + rng.i64(-1000..10_000_000)),
        "step" => json!([0.1, 1.0, 5.0][rng.usize(0..3)]),
        "idempotency_key" => json!(format!("k-{}", rng.u8(0..5))),
        "reference" => json!(format!("PO-{}", rng.u16(..))),
        "carrier" => json!("acme"),
        "tanks" => json!(["tank-1"]),
        "product" => json!("diesel"),
        "planned_volume_l" => json!(rng.f64() * 50_000.0),
        "eta" => json!(now + rng.i64(-100_000_000..100_000_000)),
        "eta_source" => json!(["manual", "email", "csv", "carrier_api"][rng.usize(0..4)]),
        "status" => json!("cancelled"),
        _ => Value::Null,
    }
}

/// A body with the route's real field names and arbitrary values.
fn body_for(rng: &mut fastrand::Rng, fields: &[&str]) -> Value {
    if rng.u8(0..10) == 0 {
        return arbitrary(rng, 0);
    }
    let mode = rng.u8(0..3);
    let odd = rng.usize(0..fields.len());
    let mut o = serde_json::Map::new();
    for (i, f) in fields.iter().enumerate() {
        if mode > 0 {
            // all plausible, or all but one
            let v = if mode == 2 && i == odd {
                arbitrary(rng, 1)
            } else {
                plausible(rng, f)
            };
            if !(f == &"load_id" || f == &"expires_at" || f == &"idempotency_key") || rng.bool() {
                o.insert(f.to_string(), v);
            }
            continue;
        }
        match rng.u8(0..6) {
            0 => {}
            1 | 2 => {
                o.insert(f.to_string(), arbitrary(rng, 1));
            }
            _ => {
                o.insert(f.to_string(), plausible(rng, f));
            }
        }
    }
    Value::Object(o)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_json_on_every_write_route_gets_only_2xx_or_4xx_and_every_read_route_still_answers()
-> Result<()> {
    let r = rig("site-p", None).await?;
    let http = r.http;
    let seed = std::env::var("PROPTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("seed {seed} (PROPTEST_SEED={seed} repeats this run)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let (code, l) = post_json(
        http,
        "/api/v1/loads",
        &load("site-p", json!(now), json!(5000)),
    )
    .await?;
    ensure!(code == 201, "{code}: {l}");
    let load_id = l["load"]["load_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let cmd_id = l["command"]["command_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let command_fields = [
        "kind",
        "site",
        "asset",
        "field",
        "value",
        "duration_s",
        "expires_in_s",
        "expires_at",
        "load_id",
        "step",
        "idempotency_key",
    ];
    let load_fields = [
        "site",
        "reference",
        "carrier",
        "tanks",
        "product",
        "planned_volume_l",
        "eta",
        "eta_source",
    ];
    let patch_fields = ["eta", "eta_source", "planned_volume_l", "status"];
    let mut codes = std::collections::BTreeMap::<u16, u32>::new();
    let mut loads = vec![load_id.clone()];
    for i in 0..400 {
        let (method, path, body) = match i % 4 {
            0 => (
                "POST",
                "/api/v1/commands".to_string(),
                body_for(&mut rng, &command_fields),
            ),
            1 => (
                "POST",
                "/api/v1/loads".to_string(),
                body_for(&mut rng, &load_fields),
            ),
            2 => (
                "PATCH",
                format!("/api/v1/loads/{}", loads[rng.usize(0..loads.len())]),
                body_for(&mut rng, &patch_fields),
            ),
            _ => (
                "POST",
                format!("/api/v1/commands/{cmd_id}/cancel"),
                arbitrary(&mut rng, 2),
            ),
        };
        let text = body.to_string();
        let (code, answer) = raw(
            http,
            method,
            &path,
            &[("content-type", "application/json")],
            &text,
        )
        .await?;
        *codes.entry(code).or_default() += 1;
        if code == 201
            && let Some(id) = serde_json::from_str::<Value>(&answer)
                .ok()
                .and_then(|v| v["load"]["load_id"].as_str().map(String::from))
        {
            loads.push(id);
        }
        ensure!(
            (200..500).contains(&code),
            "{method} {path} {text} -> {code} {answer} (seed {seed})"
        );
    }
    eprintln!("status codes: {codes:?}");
    ensure!(
        codes.keys().any(|c| *c < 300),
        "some requests were valid: {codes:?}"
    );
    for path in [
        "/health".to_string(),
        "/ready".to_string(),
        "/metrics".to_string(),
        "/api/v1/sites".to_string(),
        "/api/v1/sites/site-p/assets".to_string(),
        "/api/v1/sites/site-p/assets/tank-1/readings?limit=5".to_string(),
        "/api/v1/sites/site-p/gaps".to_string(),
        "/api/v1/commands".to_string(),
        format!("/api/v1/commands/{cmd_id}"),
        "/api/v1/loads".to_string(),
        format!("/api/v1/loads/{load_id}"),
    ] {
        let (code, text) = raw(http, "GET", &path, &[], "").await?;
        ensure!(code == 200, "{path} -> {code} {text} (seed {seed})");
    }
    r.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_can_be_read_newest_first_and_a_point_never_good_shows_no_value() -> Result<()> {
    let pki = TestPki::new(&["site-h"])?;
    let work = tempfile::tempdir()?;
    let he = e2e::start_headend(headend_config(&pki, &sqlite_url(work.path()), 0)).await?;
    let sim = fast_sim().await?;
    let base = agent_yaml(
        &pki,
        "site-h",
        he.grpc_addr,
        &work.path().join("log"),
        &sim,
        100,
    );
    // a point at an address the simulator does not map: always bad
    let yaml = base.replacen(
        "devices:\n",
        &format!(
            "devices:\n  - modbus:\n      name: ghost\n      address: \"{}\"\n      poll_interval_ms: 100\n      points:\n        - {{ asset: tank-1, field: ghost, register: 9000, type: u16 }}\n",
            sim.addr
        ),
        1,
    );
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    let http = he.http_addr;
    let assets = eventually("both points reported", T, || async {
        let a = get_json(http, "/api/v1/sites/site-h/assets").await;
        Ok(a.ok().filter(|a| {
            let t = a
                .as_array()
                .and_then(|v| v.iter().find(|x| x["asset_id"] == "tank-1"));
            t.is_some_and(|t| t["fields"]["ghost"].is_object() && t["fields"]["volume"].is_object())
        }))
    })
    .await?;
    let tank = assets
        .as_array()
        .and_then(|v| v.iter().find(|x| x["asset_id"] == "tank-1"))
        .cloned()
        .unwrap_or_default();
    let ghost = &tank["fields"]["ghost"];
    ensure!(
        ghost["value"].is_null() && ghost["quality"] == "bad" && ghost["last_good_ts"].is_null(),
        "a point that was never good has no value, not 0: {ghost}"
    );
    ensure!(tank["fields"]["volume"]["value"].is_f64(), "{tank}");
    // enough history, then the newest reading is one request away
    tokio::time::sleep(Duration::from_millis(800)).await;
    let path = "/api/v1/sites/site-h/assets/tank-1/readings?field=volume";
    // readings keep arriving: the whole history first, so that the newest
    // read after it is at least its last (read before it, a reading that
    // arrived in between failed this under load)
    let all = get_json(http, &format!("{path}&limit=10000")).await?;
    let oldest = get_json(http, &format!("{path}&limit=1")).await?;
    let newest = get_json(http, &format!("{path}&limit=1&order=desc")).await?;
    let seqs: Vec<i64> = all
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["seq"].as_i64()).collect())
        .unwrap_or_default();
    ensure!(seqs.len() >= 3, "{all}");
    ensure!(
        oldest[0]["seq"].as_i64() == seqs.first().copied(),
        "{oldest}"
    );
    ensure!(
        newest[0]["seq"].as_i64() >= seqs.last().copied(),
        "order=desc gives the newest: {newest} vs {seqs:?}"
    );
    let ghosts = get_json(
        http,
        "/api/v1/sites/site-h/assets/tank-1/readings?field=ghost&limit=1",
    )
    .await?;
    ensure!(
        ghosts[0]["value"].is_null(),
        "a bad reading has no value: {ghosts}"
    );
    let (code, _) = raw(http, "GET", &format!("{path}&order=sideways"), &[], "").await?;
    ensure!(code == 400, "order=sideways: {code}");
    agent.stop().await?;
    he.stop().await;
    Ok(())
}

#[tokio::test]
async fn rest_answers_at_once_while_the_sessions_hold_every_connection_of_their_pool() -> Result<()>
{
    // A reconnect storm of 10,000 hellos held the shared pool for seconds
    // and REST waited behind it (BENCHMARKS, "Sessions at scale"); the
    // operator API has a pool of its own.
    let pki = TestPki::new(&["site-p"])?;
    let work = tempfile::tempdir()?;
    let he = e2e::start_headend(headend_config(&pki, &sqlite_url(work.path()), 0)).await?;
    let max = he.db.pool().options().get_max_connections();
    let mut held = Vec::new();
    for _ in 0..max {
        held.push(he.db.pool().acquire().await?);
    }
    let t = std::time::Instant::now();
    let sites = get_text(he.http_addr, "/api/v1/sites").await?;
    ensure!(
        t.elapsed() < Duration::from_secs(2),
        "REST took {:?} with the sessions' pool taken",
        t.elapsed()
    );
    ensure!(sites.starts_with('['), "{sites}");
    drop(held);
    he.stop().await;
    Ok(())
}

//! Issue 31: a stored value that does not parse is an error with a stable
//! code, never a default. Each JSON column, each typed (enum) column of
//! the command, load and escalation aggregates, a user's and an API key's
//! role, a delivery's phase, source and verdict, a certificate's `via`
//! and an audit entry's outcome is corrupted in SQL under a running headend; the REST read
//! that uses it answers 500 `stored_value_invalid` naming the column, and
//! once the value is put back the same read answers 200 again (the
//! corruption, not something else, failed it). A corrupt observation
//! source, which only the inventory job reads, is left out of its tank's
//! assessment and counted, without stopping the others'. On both
//! databases.
use e2e::sid;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::*;
use serde_json::{Value, json};

const SITE: &str = "site-c";
const USER: &str = "corrupt-user";

/// One column to corrupt: where it is, what to write, which read uses it.
struct Case {
    column: &'static str,
    table: &'static str,
    key_col: &'static str,
    key: String,
    bad: &'static str,
    /// A read: (method, path, body for a POST).
    method: &'static str,
    path: String,
    body: Option<Value>,
    /// What the error message names (the column, or the enum's value).
    names: &'static str,
}

async fn fixtures(he: &headend::Running) -> Result<(String, String, String, String, String)> {
    let mut h = tankwatch_proto::fixtures::tank_hello(SITE, &[("pump_limit", 0.0, 100.0)]);
    h.assets[0].details = [("vendor".to_string(), "acme".to_string())].into();
    he.db
        .record_hello(headend::store::HelloInfo {
            site: SITE,
            hello: &h,
        })
        .await?;
    let http = he.http_addr;
    let (code, c) = post_json(
        http,
        "/api/v1/commands",
        &json!({"kind": "setpoint", "asset": format!("{SITE}/tank-1"), "field": "pump_limit", "value": 42}),
    )
    .await?;
    ensure!(code == 201, "setpoint: {code} {c}");
    let command = c["command_id"].as_str().context("command_id")?.to_string();
    let eta = headend::wallclock::now_ms() + 3_600_000;
    let (code, l) = post_json(
        http,
        "/api/v1/loads",
        &json!({"site": SITE, "reference": "PO-1", "tanks": ["tank-1"], "product": "diesel",
                "planned_volume_l": 5000, "eta": eta, "eta_source": "manual"}),
    )
    .await?;
    ensure!(code == 201, "load: {code} {l}");
    let load = l["load"]["load_id"]
        .as_str()
        .context("load_id")?
        .to_string();
    let eta_command = l["command"]["command_id"]
        .as_str()
        .context("eta command")?
        .to_string();
    // a user (its role is an enum; creating it writes an audit entry)
    let (code, u) = post_json(
        http,
        "/api/v1/users",
        &json!({"user": USER, "role": "viewer", "password": "a long enough password"}),
    )
    .await?;
    ensure!(code == 201, "user: {code} {u}");
    let esc = "esc-corrupt-1".to_string();
    he.db
        .escalations()
        .apply(
            &headend::store::escalations::Finding {
                // a tank and a cause the headend's own inventory job never
                // opens or clears (it runs beside this test)
                site_id: SITE.into(),
                tank_id: "tank-x".into(),
                cause: headend::domain::escalation::Cause::CommandFailed,
                subject: "cmd-x".into(),
                detail: "command cmd-x failed".into(),
                context: json!({"at_ms": 1}).to_string(),
            },
            &esc,
            headend::wallclock::now_ms(),
            true,
        )
        .await?;
    // an integration's API key (its role is an enum)
    let (code, k) = post_json(
        http,
        "/api/v1/api-keys",
        &json!({"name": "corrupt-key", "role": "viewer"}),
    )
    .await?;
    ensure!(code == 201, "api key: {code} {k}");
    // a delivery the agent reported and the headend judged (phase, source
    // and verdict are enums)
    sqlx::query(
        "INSERT INTO delivery_events (site_id, log_id, seq, phase, load_id, tank, start_ms, end_ms, start_volume_l,
           end_volume_l, delivered_volume_l, ingested_ms, source, verdict)
         VALUES ($1, 7, 1, 'ended', '', 'tank-1', 1, 2, 100, 5100, 5000, 2, 'detector', 'confirmed')",
    )
    .bind(SITE)
    .execute(he.db.pool())
    .await?;
    // a certificate the headend issued (how: an enum)
    sqlx::query(
        "INSERT INTO agent_certificates (serial, site_id, via, issued_ms, not_after_ms, renewed_from)
         VALUES ('c0ffee01', $1, 'enrollment', 1, 4102444800000, NULL)",
    )
    .bind(SITE)
    .execute(he.db.pool())
    .await?;
    // a point's latest value (its quality is stored as text)
    let now = headend::wallclock::now_ms();
    sqlx::query(
        "INSERT INTO latest_values (site_id, asset_id, field, value, unit, quality, error, source_ts_ms, received_ts_ms, good_ts_ms, source)
         VALUES ($1, 'tank-1', 'temperature', 15.5, 'degC', 'good', '', $2, $2, $2, 'gauge')",
    )
    .bind(SITE)
    .bind(now)
    .execute(he.db.pool())
    .await?;
    // the notification it queued, given up (a dead letter to read)
    sqlx::query("UPDATE webhook_outbox SET state = 'dead', done_ms = $1 WHERE escalation_id = $2")
        .bind(headend::wallclock::now_ms())
        .bind(&esc)
        .execute(he.db.pool())
        .await?;
    // a tank's evaluated state (its source and freshness are enums): a dip
    // pushed through the API is evaluated at once
    let (code, r) = post_json(
        http,
        "/api/v1/inventory/observations",
        &json!({"site": SITE, "tank": "tank-1", "at": headend::wallclock::now_ms(),
                "volume_l": 9000, "source": "manual"}),
    )
    .await?;
    ensure!((200..300).contains(&code), "observation: {code} {r}");
    let tank = format!("/api/v1/sites/{SITE}/tanks/tank-1");
    eventually("the tank's state", Duration::from_secs(10), || async {
        let v = get_json(http, &tank).await?;
        Ok((v["source"] == "manual").then_some(()))
    })
    .await?;
    // a leak alarm episode (its type, severity and timeline kinds are enums)
    he.db.ingest(&sid(SITE), &leak_raised()).await?;
    let alarm: String =
        sqlx::query_scalar("SELECT episode_id FROM alarm_episodes WHERE site_id = $1")
            .bind(SITE)
            .fetch_one(he.db.pool())
            .await?;
    // a site's mail recipient, and a mail in the outbound log
    let (code, r) = send_json(
        http,
        reqwest::Method::PUT,
        &format!("/api/v1/sites/{SITE}/alarm-recipients"),
        &json!({"recipients": [{"address": "ops@fuel.test", "min_severity": "major"}]}),
    )
    .await?;
    ensure!(code == 200, "recipients: {code} {r}");
    let (code, r) = send_json(
        http,
        reqwest::Method::PUT,
        &format!("/api/v1/sites/{SITE}/alarm-severities"),
        &json!({"severities": [{"type": "high_water", "severity": "critical"}]}),
    )
    .await?;
    ensure!(code == 200, "severities: {code} {r}");
    sqlx::query(
        "INSERT INTO mail_outbox (episode_id, site_id, recipient, kind, subject, body, state, attempts, next_ms, last_error, created_ms)
         VALUES ($1, $2, 'ops@fuel.test', 'raised', 's', 'b', 'sent', 1, 1, '', 1)",
    )
    .bind(&alarm)
    .bind(SITE)
    .execute(he.db.pool())
    .await?;
    Ok((command, eta_command, load, esc, alarm))
}

fn cases(command: &str, eta_command: &str, load: &str, esc: &str, alarm: &str) -> Vec<Case> {
    let get = |path: String| ("GET", path, None);
    let c = |column,
             table,
             key_col,
             key: &str,
             bad,
             read: (&'static str, String, Option<Value>),
             names| Case {
        column,
        table,
        key_col,
        key: key.to_string(),
        bad,
        method: read.0,
        path: read.1,
        body: read.2,
        names,
    };
    let setpoint = (
        "POST",
        "/api/v1/commands".to_string(),
        Some(
            json!({"kind": "setpoint", "asset": format!("{SITE}/tank-1"), "field": "pump_limit", "value": 7}),
        ),
    );
    vec![
        // JSON columns
        c(
            "writable",
            "assets",
            "site_id",
            SITE,
            "[{\"field\":",
            setpoint,
            "assets.writable",
        ),
        c(
            "details",
            "assets",
            "site_id",
            SITE,
            "\"a string\"",
            get(format!("/api/v1/sites/{SITE}/assets")),
            "details",
        ),
        c(
            "holidays",
            "sites",
            "site_id",
            SITE,
            "[\"2026-02-30\"]",
            get(format!("/api/v1/sites/{SITE}")),
            "holidays",
        ),
        c(
            "payload",
            "commands",
            "command_id",
            command,
            "not json",
            get(format!("/api/v1/commands/{command}")),
            "payload",
        ),
        c(
            "payload",
            "commands",
            "command_id",
            eta_command,
            "",
            get(format!("/api/v1/commands/{eta_command}")),
            "payload",
        ),
        c(
            "warnings",
            "commands",
            "command_id",
            command,
            "{\"not\": \"a list\"}",
            get(format!("/api/v1/commands/{command}")),
            "warnings",
        ),
        c(
            "tanks",
            "loads",
            "load_id",
            load,
            "[\"tank-1\"",
            get(format!("/api/v1/loads/{load}")),
            "loads.tanks",
        ),
        c(
            "context",
            "escalations",
            "escalation_id",
            esc,
            "null",
            get(format!("/api/v1/escalations/{esc}")),
            "context",
        ),
        c(
            "context",
            "escalation_events",
            "escalation_id",
            esc,
            "{",
            get(format!("/api/v1/escalations/{esc}")),
            "context",
        ),
        c(
            "payload",
            "webhook_outbox",
            "escalation_id",
            esc,
            "3",
            get("/api/v1/webhooks/dead".into()),
            "payload",
        ),
        // typed (enum) columns
        c(
            "alarm_type",
            "alarm_episodes",
            "episode_id",
            alarm,
            "gremlin",
            get(format!("/api/v1/alarms/{alarm}")),
            "gremlin",
        ),
        c(
            "severity",
            "alarm_episodes",
            "episode_id",
            alarm,
            "apocalyptic",
            get(format!("/api/v1/alarms/{alarm}")),
            "apocalyptic",
        ),
        c(
            "min_severity",
            "alarm_recipients",
            "site_id",
            SITE,
            "dire",
            get(format!("/api/v1/sites/{SITE}/alarm-recipients")),
            "dire",
        ),
        c(
            "source",
            "tank_state",
            "site_id",
            SITE,
            "telepathy",
            get(format!("/api/v1/sites/{SITE}/tanks/tank-1")),
            "telepathy",
        ),
        c(
            "freshness",
            "tank_state",
            "site_id",
            SITE,
            "crisp",
            get(format!("/api/v1/tanks?site={SITE}")),
            "crisp",
        ),
        c(
            "severity",
            "alarm_severities",
            "site_id",
            SITE,
            "catastrophic",
            get(format!("/api/v1/sites/{SITE}/alarm-severities")),
            "catastrophic",
        ),
        c(
            "alarm_type",
            "alarm_severities",
            "site_id",
            SITE,
            "volcano",
            get(format!("/api/v1/sites/{SITE}/alarm-severities")),
            "volcano",
        ),
        c(
            "state",
            "mail_outbox",
            "site_id",
            SITE,
            "lost_in_the_post",
            get(format!("/api/v1/mails?site={SITE}")),
            "lost_in_the_post",
        ),
        c(
            "kind",
            "alarm_events",
            "episode_id",
            alarm,
            "wobbled",
            get(format!("/api/v1/alarms/{alarm}")),
            "wobbled",
        ),
        c(
            "state",
            "commands",
            "command_id",
            command,
            "half_done",
            get(format!("/api/v1/commands/{command}")),
            "half_done",
        ),
        c(
            "eta_source",
            "loads",
            "load_id",
            load,
            "pigeon",
            get(format!("/api/v1/loads/{load}")),
            "pigeon",
        ),
        c(
            "cause",
            "escalations",
            "escalation_id",
            esc,
            "gremlins",
            get(format!("/api/v1/escalations/{esc}")),
            "gremlins",
        ),
        c(
            "reason",
            "command_events",
            "command_id",
            command,
            "because",
            get(format!("/api/v1/commands/{command}")),
            "because",
        ),
        c(
            "role",
            "users",
            "user_id",
            USER,
            "overlord",
            get("/api/v1/users".into()),
            "overlord",
        ),
        c(
            "outcome",
            "audit_log",
            "action",
            "users.create",
            "meh",
            get("/api/v1/audit".into()),
            "meh",
        ),
        c(
            "quality",
            "latest_values",
            "site_id",
            SITE,
            "splendid",
            get(format!("/api/v1/sites/{SITE}/assets")),
            "splendid",
        ),
        c(
            "kind",
            "commands",
            "command_id",
            command,
            "teleport",
            get(format!("/api/v1/commands/{command}")),
            "teleport",
        ),
        c(
            "status",
            "loads",
            "load_id",
            load,
            "vanished",
            get(format!("/api/v1/loads/{load}")),
            "vanished",
        ),
        c(
            "kind",
            "load_events",
            "load_id",
            load,
            "rumour",
            get(format!("/api/v1/loads/{load}")),
            "rumour",
        ),
        c(
            "state",
            "escalations",
            "escalation_id",
            esc,
            "limbo",
            get(format!("/api/v1/escalations/{esc}")),
            "limbo",
        ),
        c(
            "kind",
            "escalation_events",
            "escalation_id",
            esc,
            "shrug",
            get(format!("/api/v1/escalations/{esc}")),
            "shrug",
        ),
        c(
            "state",
            "escalation_events",
            "escalation_id",
            esc,
            "nowhere",
            get(format!("/api/v1/escalations/{esc}")),
            "nowhere",
        ),
        c(
            "role",
            "api_keys",
            "name",
            "corrupt-key",
            "emperor",
            get("/api/v1/api-keys".to_string()),
            "emperor",
        ),
        c(
            "phase",
            "delivery_events",
            "site_id",
            SITE,
            "halfway",
            get(format!("/api/v1/sites/{SITE}/deliveries")),
            "halfway",
        ),
        c(
            "source",
            "delivery_events",
            "site_id",
            SITE,
            "hearsay",
            get(format!("/api/v1/sites/{SITE}/deliveries")),
            "hearsay",
        ),
        c(
            "via",
            "agent_certificates",
            "serial",
            "c0ffee01",
            "carrier_pigeon",
            get(format!("/api/v1/sites/{SITE}/certificates")),
            "carrier_pigeon",
        ),
        c(
            "verdict",
            "delivery_events",
            "site_id",
            SITE,
            "maybe",
            get(format!("/api/v1/sites/{SITE}/deliveries")),
            "maybe",
        ),
    ]
}

async fn read(http: SocketAddr, c: &Case) -> Result<(u16, Value)> {
    match (c.method, &c.body) {
        ("POST", Some(b)) => post_json(http, &c.path, b).await,
        _ => {
            let r = get(http, &c.path).await?;
            let status = r.status().as_u16();
            let text = r.text().await?;
            Ok((
                status,
                serde_json::from_str(&text).unwrap_or(Value::String(text)),
            ))
        }
    }
}

async fn every_corrupt_column_is_refused_by_name(url: &str) -> Result<()> {
    let pki = TestPki::new(&[SITE])?;
    let mut cfg = headend_config(&pki, url, 0);
    cfg.webhook_url = None;
    let he = start_headend(cfg).await?;
    let http = he.http_addr;
    let (command, eta_command, load, esc, alarm) = fixtures(&he).await?;
    for c in cases(&command, &eta_command, &load, &esc, &alarm) {
        let what = format!("{}.{} of {}", c.table, c.column, c.key);
        let (before_code, before) = read(http, &c).await?;
        ensure!(
            before_code < 300,
            "{what}: the read works before: {before_code} {before}"
        );
        let saved: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM {} WHERE {} = $1",
            c.column, c.table, c.key_col
        )))
        .bind(&c.key)
        .fetch_all(he.db.pool())
        .await?;
        ensure!(!saved.is_empty(), "{what}: no row");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {} SET {} = $1 WHERE {} = $2",
            c.table, c.column, c.key_col
        )))
        .bind(c.bad)
        .bind(&c.key)
        .execute(he.db.pool())
        .await?;
        let (code, v) = read(http, &c).await?;
        let message = v["error"]["message"].as_str().unwrap_or_default();
        ensure!(
            code == 500 && v["error"]["code"] == "stored_value_invalid",
            "{what} = {:?}: {code} {v}",
            c.bad
        );
        ensure!(
            message.contains(c.names),
            "{what}: the message names {:?}: {message}",
            c.names
        );
        // put back (every row had the same value for these keys)
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {} SET {} = $1 WHERE {} = $2",
            c.table, c.column, c.key_col
        )))
        .bind(&saved[0])
        .bind(&c.key)
        .execute(he.db.pool())
        .await?;
        if c.method == "GET" {
            let (code, after) = read(http, &c).await?;
            ensure!(
                code == 200,
                "{what}: restored, the read works: {code} {after}"
            );
        }
    }
    a_corrupt_observation_is_left_out_and_counted_not_the_whole_evaluation(&he).await?;
    he.stop().await;
    Ok(())
}

/// observations.source is read by the inventory job, not by a REST read:
/// a corrupt row is refused (logged, counted) and its tank assessed on the
/// rest; the evaluation of every other tank and observation goes on.
async fn a_corrupt_observation_is_left_out_and_counted_not_the_whole_evaluation(
    he: &headend::Running,
) -> Result<()> {
    let http = he.http_addr;
    sqlx::query("UPDATE observations SET source = 'hearsay' WHERE site_id = $1")
        .bind(SITE)
        .execute(he.db.pool())
        .await?;
    let (code, r) = post_json(
        http,
        "/api/v1/inventory/observations",
        &json!({"site": SITE, "tank": "tank-1", "at": headend::wallclock::now_ms(),
                "volume_l": 8000, "source": "manual"}),
    )
    .await?;
    ensure!((200..300).contains(&code), "observation: {code} {r}");
    let tank = format!("/api/v1/sites/{SITE}/tanks/tank-1");
    eventually(
        "the new dip, assessed beside the corrupt one",
        Duration::from_secs(10),
        || async {
            let v = get_json(http, &tank).await?;
            Ok((v["source"] == "manual" && v["volume_l"] == json!(8000.0)).then_some(()))
        },
    )
    .await?;
    let m = get_text(http, "/metrics").await?;
    let refused = metric(&m, "tankwatch_headend_observations_refused_total").unwrap_or(0.0);
    ensure!(refused >= 1.0, "the corrupt row is counted: {refused}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_corrupt_json_or_enum_column_is_a_stored_value_invalid_error_naming_it_on_sqlite()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    every_corrupt_column_is_refused_by_name(&sqlite_url(dir.path())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_corrupt_json_or_enum_column_is_a_stored_value_invalid_error_naming_it_on_postgres()
-> Result<()> {
    let db = pg::fresh_database().await?;
    let r = every_corrupt_column_is_refused_by_name(&db.url).await;
    db.drop().await?;
    r
}

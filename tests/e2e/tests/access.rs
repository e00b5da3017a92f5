//! Operator access over real sockets and SQL: the role matrix (every
//! route × every role × in/out of scope gets the answer
//! docs/operator-access.md gives), the audit trail (one entry per write
//! and per denial, append-only, tampering found by `headend audit
//! verify` on both backends), tokens (expiry, revocation, refresh-token
//! reuse), login lockout, the CLI, and HTTPS with certificate reload.
use e2e::sid;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use e2e::*;
use headend::api::access::{Need, rules};
use serde_json::{Value, json};

const NORTH: &str = "n-1";
const SOUTH: &str = "s-1";

/// The documented table (docs/operator-access.md), independent of the code's.
fn may(role: &str, perm: &str) -> bool {
    match role {
        "admin" => true,
        "manager" => perm != "admin",
        "dispatcher" => ["read", "command", "loads", "metrics"].contains(&perm),
        "viewer" => ["read", "metrics"].contains(&perm),
        _ => false,
    }
}

fn load_body(site: &str) -> Value {
    let eta = headend::wallclock::now_ms() + 3_600_000;
    json!({"site": site, "reference": "PO-1", "tanks": ["tank-1"], "product": "diesel",
           "planned_volume_l": 5000, "eta": eta, "eta_source": "manual"})
}

/// A request with a bearer credential and a request id: (status, body, request id).
async fn call(
    http: SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value, String)> {
    let rid = format!("t-{:016x}", fastrand::u64(..));
    let mut r = reqwest::Client::new()
        .request(method.parse()?, format!("http://{http}{path}"))
        .header("x-request-id", &rid);
    if !token.is_empty() {
        r = r.header("authorization", format!("Bearer {token}"));
    }
    if let Some(b) = body {
        r = r.json(b);
    } else if method != "GET" {
        r = r.json(&json!({}));
    }
    let r = r.send().await?;
    let status = r.status().as_u16();
    ensure!(
        r.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            == Some(rid.as_str()),
        "{method} {path}: the response carries the request id"
    );
    let text = r.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        rid,
    ))
}

async fn audit_count(db: &headend::store::Db, rid: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE request_id = $1")
            .bind(rid)
            .fetch_one(db.pool())
            .await?,
    )
}

/// Fills a route's path for a target site: ids of things at that site.
struct Fixture {
    command: std::collections::HashMap<&'static str, String>,
    load: std::collections::HashMap<&'static str, String>,
    cert: std::collections::HashMap<&'static str, String>,
    escalation: std::collections::HashMap<&'static str, String>,
    alarm: std::collections::HashMap<&'static str, String>,
}

fn concrete(path: &str, target: &'static str, f: &Fixture) -> (String, bool) {
    let sited = path.contains("{site}")
        || path.starts_with("/api/v1/commands")
        || path.starts_with("/api/v1/loads")
        || path.starts_with("/api/v1/certificates/")
        || path.starts_with("/api/v1/inventory/")
        || path.starts_with("/api/v1/escalations/")
        || path.starts_with("/api/v1/alarms")
        || path == "/api/v1/tanks"
        || path == "/api/v1/risk";
    let mut p = path
        .replace("{site}", target)
        .replace("{asset}", "tank-1")
        .replace("{user}", "nobody")
        .replace("/auth/sessions/{id}", "/auth/sessions/ses-none")
        .replace("/api-keys/{id}", "/api-keys/0000000000000000");
    if p.starts_with("/api/v1/commands/") {
        p = p.replace("{id}", &f.command[target]);
    }
    if p.starts_with("/api/v1/loads/") {
        p = p.replace("{id}", &f.load[target]);
    }
    p = p.replace("{serial}", &f.cert[target]);
    p = p.replace("{tank}", "tank-1");
    if p.starts_with("/api/v1/escalations/") {
        p = p.replace("{id}", &f.escalation[target]);
    }
    if p.starts_with("/api/v1/alarms/") {
        p = p.replace("{id}", &f.alarm[target]);
    }
    if p == "/api/v1/commands"
        || p == "/api/v1/loads"
        || p == "/api/v1/alarms"
        || p == "/api/v1/tanks"
        || p == "/api/v1/risk"
    {
        p = format!("{p}?site={target}");
    }
    (p, sited)
}

fn body_for(method: &str, path: &str, target: &str) -> Option<Value> {
    if method == "GET" {
        return None;
    }
    Some(match path {
        "/api/v1/commands" => {
            json!({"kind": "setpoint", "asset": format!("{target}/tank-1"), "field": "volume", "value": 1})
        }
        "/api/v1/loads" => load_body(target),
        "/api/v1/loads/{id}" => json!({"planned_volume_l": 4000}),
        "/api/v1/users" => json!({"user": format!("u{:08x}", fastrand::u32(..)), "role": "viewer",
                                   "password": "a long enough password"}),
        "/api/v1/users/{user}" => json!({"disabled": true}),
        "/api/v1/users/{user}/password" => json!({"password": "another long password"}),
        "/api/v1/api-keys" => json!({"name": "k", "role": "viewer"}),
        "/api/v1/sites/{site}/revoke" | "/api/v1/certificates/{serial}/revoke" => {
            json!({"reason": "role matrix"})
        }
        "/api/v1/sites" => json!({"site": format!("s{:08x}", fastrand::u32(..))}),
        "/api/v1/sites/{site}" => json!({"name": "renamed"}),
        "/api/v1/sites/{site}/tanks/{tank}" => json!({"product": "diesel", "capacity_l": 20000}),
        "/api/v1/inventory/observations" => json!({"site": target, "tank": "tank-1",
            "at": headend::wallclock::now_ms(), "volume_l": 9000}),
        "/api/v1/sites/{site}/inventory/import" => {
            json!({"csv": "tank,at,volume_l\ntank-1,1795392000000,9000\n"})
        }
        "/api/v1/sites/{site}/loads/import" => json!({"csv": format!(
            "reference,tanks,planned_volume_l,eta\nPO-M,tank-1,1000,{}\n", headend::wallclock::now_ms() + 3_600_000)}),
        "/api/v1/escalations/{id}/move" => json!({"state": "assigned", "assignee": "dana"}),
        "/api/v1/escalations/{id}/notes" => json!({"note": "role matrix"}),
        "/api/v1/escalations/{id}/acknowledge" => json!({"note": "role matrix"}),
        "/api/v1/escalations/{id}/snooze" => {
            json!({"until": headend::wallclock::now_ms() + 3_600_000,
                                                    "reason": "role matrix"})
        }
        "/api/v1/sites/{site}/alarm-severities" => {
            json!({"severities": [{"type": "high_water", "severity": "critical"}]})
        }
        "/api/v1/alarms/{id}/acknowledge" => json!({"note": "role matrix"}),
        "/api/v1/alarms/{id}/shelve" => json!({"until": headend::wallclock::now_ms() + 3_600_000,
                                               "reason": "role matrix"}),
        "/api/v1/alarms/{id}/notes" => json!({"note": "role matrix"}),
        "/api/v1/sites/{site}/alarm-recipients" => {
            json!({"recipients": [{"address": "ops@fuel.test", "min_severity": "major"}]})
        }
        _ => json!({}),
    })
}

async fn role_matrix(url: &str) -> Result<()> {
    let pki = TestPki::new(&[])?;
    let he = start_headend(headend_config(&pki, url, 0)).await?;
    let http = he.http_addr;
    let admin = token_of(http);
    tank_site(&he.db, NORTH).await?;
    tank_site(&he.db, SOUTH).await?;
    let mut f = Fixture {
        command: Default::default(),
        load: Default::default(),
        cert: Default::default(),
        escalation: Default::default(),
        alarm: Default::default(),
    };
    for s in [NORTH, SOUTH] {
        let f_ = headend::store::escalations::Finding {
            site_id: s.into(),
            tank_id: "tank-1".into(),
            cause: headend::domain::escalation::Cause::CommandFailed,
            subject: "cmd".into(),
            detail: "role matrix".into(),
            context: "{}".into(),
        };
        let id = format!("esc-matrix-{s}");
        he.db.escalations().apply(&f_, &id, 1, false).await?;
        f.escalation.insert(s, id);
    }
    for s in [NORTH, SOUTH] {
        he.db.ingest(&sid(s), &leak_raised()).await?;
        let id: String =
            sqlx::query_scalar("SELECT episode_id FROM alarm_episodes WHERE site_id = $1")
                .bind(s)
                .fetch_one(he.db.pool())
                .await?;
        f.alarm.insert(s, id);
    }
    for (s, serial) in [(NORTH, "0a01"), (SOUTH, "0a02")] {
        sqlx::query("INSERT INTO agent_certificates (serial, site_id, via, issued_ms, not_after_ms) VALUES ($1, $2, 'enrollment', 1, 2)")
            .bind(serial)
            .bind(s)
            .execute(he.db.pool())
            .await?;
        f.cert.insert(s, serial.to_string());
    }
    for s in [NORTH, SOUTH] {
        let (st, v) = post_json(http, "/api/v1/loads", &load_body(s)).await?;
        ensure!(st == 201, "{v}");
        f.load
            .insert(s, v["load"]["load_id"].as_str().unwrap_or_default().into());
        f.command.insert(
            s,
            v["command"]["command_id"]
                .as_str()
                .unwrap_or_default()
                .into(),
        );
    }
    let mut checked = 0;
    for role in ["admin", "manager", "dispatcher", "viewer"] {
        for scoped in [false, true] {
            let sites = scoped.then(|| vec![NORTH.to_string()]);
            let key = api_key(&he.db, role, sites).await?;
            for rule in rules() {
                let perm = match rule.need {
                    Need::Public => continue,
                    Need::Signed => None,
                    Need::Perm(p) => Some(p.as_str()),
                };
                for target in [NORTH, SOUTH] {
                    let (mut path, sited) = concrete(rule.path, target, &f);
                    if rule.method == "DELETE" {
                        // deleting is idempotent: a tank that is not there (the
                        // others' requests need tank-1)
                        path = path.replace("tank-1", "tank-gone");
                    }
                    let mut body = body_for(rule.method, rule.path, target);
                    // a scoped credential grants only within its sites
                    // (tests/access_scoped.rs tries the wider grants)
                    if scoped
                        && rule.method == "POST"
                        && ["/api/v1/users", "/api/v1/api-keys"].contains(&rule.path)
                        && let Some(b) = body.as_mut()
                    {
                        b["sites"] = json!([NORTH]);
                    }
                    let (status, v, rid) =
                        call(http, &key, rule.method, &path, body.as_ref()).await?;
                    let what = format!(
                        "{role} (scoped: {scoped}) {} {path}: {status} {v}",
                        rule.method
                    );
                    let out_of_scope = scoped && sited && target == SOUTH;
                    let denied = match perm {
                        Some(p) if !may(role, p) => {
                            ensure!(status == 403, "{what}: expected 403");
                            true
                        }
                        Some("configure") if scoped && rule.path == "/api/v1/sites" => {
                            ensure!(
                                status == 400,
                                "{what}: creating a site needs an unscoped credential"
                            );
                            false
                        }
                        Some("metrics") if scoped => {
                            ensure!(
                                status == 403,
                                "{what}: metrics are for unscoped credentials"
                            );
                            true
                        }
                        _ if out_of_scope => {
                            ensure!(status == 404, "{what}: a site outside the scope is 404");
                            ensure!(v["error"]["code"] == "not_found", "{what}");
                            true
                        }
                        _ => {
                            ensure!(
                                ![401, 403].contains(&status) && status < 500,
                                "{what}: expected to be allowed"
                            );
                            ensure!(!(sited && status == 404), "{what}: in scope, it exists");
                            false
                        }
                    };
                    let want = i64::from(rule.method != "GET" || denied);
                    ensure!(
                        audit_count(&he.db, &rid).await? == want,
                        "{what}: {want} audit entries"
                    );
                    checked += 1;
                }
            }
        }
    }
    eprintln!("role matrix: {checked} requests checked");
    // no credential, a malformed one, a revoked key: 401, each audited
    let (_, rk) = (0, api_key(&he.db, "viewer", None).await?);
    let id = rk.split('_').nth(1).unwrap_or_default().to_string();
    let (st, _, _) = call(
        http,
        &admin,
        "POST",
        &format!("/api/v1/api-keys/{id}/revoke"),
        None,
    )
    .await?;
    ensure!(st == 200);
    for token in ["", "nonsense", rk.as_str()] {
        let (st, v, rid) = call(http, token, "GET", "/api/v1/sites", None).await?;
        ensure!(
            st == 401 && v["error"]["code"] == "unauthenticated",
            "{token:?}: {st} {v}"
        );
        ensure!(
            audit_count(&he.db, &rid).await? == 1,
            "a denied read is audited"
        );
    }
    // the trail reads back through the API, filtered, and verifies
    let denied = get_json(http, "/api/v1/audit?outcome=denied&limit=5").await?;
    ensure!(denied.as_array().map(Vec::len) == Some(5), "{denied}");
    ensure!(
        denied[0]["outcome"] == "denied" && denied[0]["hash"].as_str().map(str::len) == Some(64)
    );
    ensure!(he.db.audit().verify(100).await?.is_ok());
    he.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_role_in_and_out_of_scope_as_documented_and_audits_on_sqlite()
-> Result<()> {
    let work = tempfile::tempdir()?;
    role_matrix(&sqlite_url(work.path())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_role_in_and_out_of_scope_as_documented_and_audits_on_postgres()
-> Result<()> {
    let db = pg::fresh_database().await?;
    role_matrix(&db.url).await?;
    db.drop().await
}

fn headend_cli(url: &str, args: &[&str], stdin: Option<&str>) -> Result<(i32, String)> {
    use std::io::Write;
    let mut c = Command::new(bin("headend"))
        .args(args)
        .args(["--database-url", url])
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    if let (Some(text), Some(mut i)) = (stdin, c.stdin.take()) {
        i.write_all(text.as_bytes())?;
    }
    let o = c.wait_with_output()?;
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok((o.status.code().unwrap_or(-1), out))
}

async fn login(http: SocketAddr, user: &str, pw: &str) -> Result<(u16, Value)> {
    let (st, v, _) = call(
        http,
        "",
        "POST",
        "/api/v1/auth/login",
        Some(&json!({"user": user, "password": pw})),
    )
    .await?;
    Ok((st, v))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_and_revoke_a_reused_refresh_token_ends_its_session_and_guessing_locks_the_name()
-> Result<()> {
    let pki = TestPki::new(&[])?;
    let work = tempfile::tempdir()?;
    let url = sqlite_url(work.path());
    // the first admin comes from the CLI; a short password is refused there
    let (code, out) = headend_cli(
        &url,
        &["user", "add", "ann", "--role", "admin"],
        Some("short\n"),
    )?;
    ensure!(code != 0 && out.contains("at least 12"), "{out}");
    let (code, out) = headend_cli(
        &url,
        &["user", "add", "ann", "--role", "admin"],
        Some("correct horse battery\n"),
    )?;
    ensure!(code == 0, "{out}");
    let he = start_headend(headend_config(&pki, &url, 0)).await?;
    let http = he.http_addr;
    let (st, t) = login(http, "ann", "correct horse battery").await?;
    ensure!(
        st == 200 && t["token_type"] == "Bearer" && t["expires_in"] == 900,
        "{t}"
    );
    let (access, refresh) = (
        t["access_token"].as_str().unwrap_or_default(),
        t["refresh_token"].as_str().unwrap_or_default(),
    );
    let (st, me, _) = call(http, access, "GET", "/api/v1/auth/me", None).await?;
    ensure!(
        st == 200 && me["id"] == "ann" && me["role"] == "admin" && me["sites"] == "*",
        "{me}"
    );
    // a refresh rotates: new tokens, the old refresh token is spent
    let (st, t2, _) = call(
        http,
        "",
        "POST",
        "/api/v1/auth/refresh",
        Some(&json!({"refresh_token": refresh})),
    )
    .await?;
    ensure!(st == 200 && t2["session_id"] == t["session_id"], "{t2}");
    let access2 = t2["access_token"].as_str().unwrap_or_default().to_string();
    ensure!(call(http, &access2, "GET", "/api/v1/sites", None).await?.0 == 200);
    // the spent one again (a thief, or a replay): 401, and the whole session ends
    let (st, v, rid) = call(
        http,
        "",
        "POST",
        "/api/v1/auth/refresh",
        Some(&json!({"refresh_token": refresh})),
    )
    .await?;
    ensure!(
        st == 401
            && v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("revoked"),
        "{v}"
    );
    ensure!(audit_count(&he.db, &rid).await? == 1);
    ensure!(
        call(http, &access2, "GET", "/api/v1/sites", None).await?.0 == 401,
        "the family is revoked"
    );
    let (st, _, _) = call(
        http,
        "",
        "POST",
        "/api/v1/auth/refresh",
        Some(&json!({"refresh_token": t2["refresh_token"]})),
    )
    .await?;
    ensure!(st == 401, "its newest refresh token too");
    // logout ends the session
    let (_, t3) = login(http, "ann", "correct horse battery").await?;
    let a3 = t3["access_token"].as_str().unwrap_or_default().to_string();
    ensure!(
        call(http, &a3, "POST", "/api/v1/auth/logout", None)
            .await?
            .0
            == 204
    );
    ensure!(call(http, &a3, "GET", "/api/v1/sites", None).await?.0 == 401);
    // an expired access token is refused
    let (_, t4) = login(http, "ann", "correct horse battery").await?;
    let a4 = t4["access_token"].as_str().unwrap_or_default().to_string();
    ensure!(call(http, &a4, "GET", "/api/v1/sites", None).await?.0 == 200);
    sqlx::query("UPDATE access_tokens SET expires_ms = 1")
        .execute(he.db.pool())
        .await?;
    let (st, v, _) = call(http, &a4, "GET", "/api/v1/sites", None).await?;
    ensure!(st == 401, "{v}");
    // an admin sees and revokes sessions
    let (_, t5) = login(http, "ann", "correct horse battery").await?;
    let a5 = t5["access_token"].as_str().unwrap_or_default().to_string();
    let (st, list, _) = call(http, &a5, "GET", "/api/v1/auth/sessions", None).await?;
    ensure!(
        st == 200 && list.as_array().map(Vec::len) == Some(2),
        "live: the one whose access token expired (its refresh token is good) and this one: {list}"
    );
    let path = format!(
        "/api/v1/auth/sessions/{}/revoke",
        t5["session_id"].as_str().unwrap_or("")
    );
    ensure!(call(http, &a5, "POST", &path, None).await?.0 == 200);
    ensure!(call(http, &a5, "GET", "/api/v1/sites", None).await?.0 == 401);
    // five wrong passwords lock the name: 429 with Retry-After, even with the right one
    for _ in 0..5 {
        ensure!(login(http, "ann", "wrong password!!").await?.0 == 401);
    }
    let r = reqwest::Client::new()
        .post(format!("http://{http}/api/v1/auth/login"))
        .json(&json!({"user": "ann", "password": "correct horse battery"}))
        .send()
        .await?;
    ensure!(
        r.status() == 429 && r.headers().contains_key("retry-after"),
        "{}",
        r.status()
    );
    // ...but only from there: the real user elsewhere still logs in (a lock
    // per name alone let a guesser keep the admin out, issue 27)
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()?;
    let r = elsewhere
        .post(format!("http://{http}/api/v1/auth/login"))
        .json(&json!({"user": "ann", "password": "correct horse battery"}))
        .send()
        .await?;
    ensure!(r.status() == 200, "from another address: {}", r.status());
    let t6: Value = r.json().await?;
    let a6 = t6["access_token"].as_str().unwrap_or_default().to_string();
    // the lock is the database's: another replica refuses it too
    let other = start_headend(headend_config(&pki, &url, 0)).await?;
    ensure!(
        login(other.http_addr, "ann", "correct horse battery")
            .await?
            .0
            == 429,
        "a lock taken through one replica holds on another"
    );
    // and an admin lifts the lock, everywhere
    let (st, v, _) = call(http, &a6, "POST", "/api/v1/users/ann/unlock", None).await?;
    ensure!(st == 200 && v["locks_lifted"] == 1, "{st} {v}");
    ensure!(
        login(other.http_addr, "ann", "correct horse battery")
            .await?
            .0
            == 200
    );
    // so does the command line
    for _ in 0..5 {
        ensure!(login(http, "ann", "wrong password!!").await?.0 == 401);
    }
    ensure!(login(http, "ann", "correct horse battery").await?.0 == 429);
    let (code, out) = headend_cli(&url, &["user", "unlock", "ann"], None)?;
    ensure!(code == 0 && out.contains("lifted (1 network"), "{out}");
    ensure!(login(http, "ann", "correct horse battery").await?.0 == 200);
    other.stop().await;
    // an unknown name answers like a wrong password
    let (st, v) = login(http, "nobody", "whatever password").await?;
    ensure!(
        st == 401 && v["error"]["message"] == "wrong user name or password",
        "{v}"
    );
    // a disabled user cannot log in; the CLI lists them
    let (code, out) = headend_cli(
        &url,
        &[
            "user", "add", "bob", "--role", "viewer", "--sites", "n-1,n-2",
        ],
        Some("bob's long password\n"),
    )?;
    ensure!(code == 0, "{out}");
    ensure!(login(http, "bob", "bob's long password").await?.0 == 200);
    let (code, out) = headend_cli(&url, &["user", "disable", "bob"], None)?;
    ensure!(code == 0, "{out}");
    ensure!(login(http, "bob", "bob's long password").await?.0 == 401);
    let (_, out) = headend_cli(&url, &["user", "list"], None)?;
    ensure!(
        out.contains("bob") && out.contains("disabled") && out.contains("n-1,n-2"),
        "{out}"
    );
    // no secret in the log: the passwords and tokens never appear in what the audit holds
    let trail: Vec<String> = sqlx::query_scalar("SELECT summary || actor || target FROM audit_log")
        .fetch_all(he.db.pool())
        .await?;
    ensure!(
        !trail
            .iter()
            .any(|t| t.contains("correct horse") || t.contains("twa_") || t.contains("twr_"))
    );
    he.stop().await;
    Ok(())
}

async fn tamper_is_named(url: &str, alter: &str) -> Result<()> {
    let pki = TestPki::new(&[])?;
    let he = start_headend(headend_config(&pki, url, 0)).await?;
    let http = he.http_addr;
    tank_site(&he.db, NORTH).await?;
    for _ in 0..3 {
        let (st, v) = post_json(http, "/api/v1/loads", &load_body(NORTH)).await?;
        ensure!(st == 201, "{v}");
    }
    // the API has no way to change or remove an entry
    let admin = token_of(http);
    for (m, p) in [
        ("PUT", "/api/v1/audit"),
        ("PATCH", "/api/v1/audit"),
        ("DELETE", "/api/v1/audit"),
        ("DELETE", "/api/v1/audit/1"),
        ("PATCH", "/api/v1/audit/1"),
        ("POST", "/api/v1/audit"),
    ] {
        let (st, _, rid) = call(http, &admin, m, p, None).await?;
        ensure!(st == 405 || st == 404, "{m} {p}: {st}");
        if st == 405 {
            // trying to change the trail is itself in the trail (issue 27)
            ensure!(audit_count(&he.db, &rid).await? == 1, "{m} {p} audited");
        }
    }
    let (code, out) = headend_cli(url, &["audit", "verify"], None)?;
    ensure!(
        code == 0 && out.contains("intact: 7 entries"),
        "three writes and four refused methods: {out}"
    );
    sqlx::query(sqlx::AssertSqlSafe(alter.to_string()))
        .execute(he.db.pool())
        .await?;
    let (code, out) = headend_cli(url, &["audit", "verify"], None)?;
    ensure!(code == 1 && out.contains("audit entry 2:"), "{out}");
    he.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_is_append_only_and_verify_names_a_row_altered_in_sql_on_both_backends()
-> Result<()> {
    let work = tempfile::tempdir()?;
    let alter = "UPDATE audit_log SET actor = 'operator mallory from 10.6.6.6' WHERE seq = 2";
    tamper_is_named(&sqlite_url(work.path()), alter).await?;
    let db = pg::fresh_database().await?;
    tamper_is_named(&db.url, alter).await?;
    db.drop().await?;
    let work = tempfile::tempdir()?;
    tamper_is_named(
        &sqlite_url(work.path()),
        "DELETE FROM audit_log WHERE seq = 2",
    )
    .await
}

/// HTTPS from a client that trusts only the CA: served, and a new
/// certificate written over the files is used without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_served_from_certificate_files_and_a_renewed_certificate_is_picked_up_without_restart()
-> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = TestPki::new(&[])?;
    let work = tempfile::tempdir()?;
    let ca = tankwatch_pki::Ca::load(&pki.path().join("ca.pem"), &pki.path().join("ca.key"))?;
    let (cert, key) = ca.issue_server(&[], 30)?.write(work.path(), "rest")?;
    let mut cfg = headend_config(&pki, &sqlite_url(work.path()), 0);
    cfg.http_listen = "0.0.0.0:0".parse()?; // not loopback: allowed with TLS
    cfg.http_tls = Some(headend::listen::rest::HttpsFiles {
        cert: cert.clone(),
        key: key.clone(),
    });
    let he = headend::start(cfg).await?;
    let port = he.http_addr.port();
    let client = std::sync::Arc::new(tankwatch_tls::anonymous_client_config(
        &pki.path().join("ca.pem"),
    )?);
    let fetch = || {
        let client = client.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            let name = rustls::pki_types::ServerName::try_from("localhost")?;
            let mut tls = tokio_rustls::TlsConnector::from(client)
                .connect(name, tcp)
                .await?;
            let serial = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.to_vec());
            tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                .await?;
            let mut out = Vec::new();
            tls.read_to_end(&mut out).await.ok();
            anyhow::Ok((
                String::from_utf8_lossy(&out).to_string(),
                serial.context("a peer certificate")?,
            ))
        }
    };
    let (resp, first) = fetch().await?;
    ensure!(
        resp.starts_with("HTTP/1.1 200") && resp.ends_with("ok"),
        "{resp}"
    );
    ca.issue_server(&[], 30)?.write(work.path(), "rest")?;
    let second = eventually(
        "the renewed certificate served",
        Duration::from_secs(10),
        || async {
            let (_, c) = fetch().await?;
            Ok((c != first).then_some(c))
        },
    )
    .await?;
    ensure!(second != first);
    // a broken file is refused; the last good certificate keeps serving
    std::fs::write(&cert, "not a certificate")?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (resp, still) = fetch().await?;
    ensure!(
        resp.starts_with("HTTP/1.1 200") && still == second,
        "{resp}"
    );
    // plain HTTP on that port is not served
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await??;
    ensure!(
        !String::from_utf8_lossy(&buf[..n]).contains("200"),
        "no plain answer"
    );
    he.stop().await;
    Ok(())
}

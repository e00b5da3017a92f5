//! Scoped administration over real sockets and SQL (issue 27): a
//! site-scoped admin is an admin of its sites and nothing more. It cannot
//! mint an unscoped key, widen its own scope, make or manage a wider
//! user, or enroll another site; a key never outgrows its maker as the
//! maker stands now; an API key sees no one's sessions; a scoped reader
//! of the audit trail sees only its sites' entries.
use anyhow::{Result, ensure};
use e2e::*;
use serde_json::{Value, json};

const NORTH: &str = "n-1";
const SOUTH: &str = "s-1";
const PW: &str = "a long enough password";

fn user_body(name: &str, role: &str, sites: Option<&[&str]>) -> Value {
    let mut v = json!({"user": name, "role": role, "password": PW});
    if let Some(s) = sites {
        v["sites"] = json!(s);
    }
    v
}

async fn scoped_admin(url: &str) -> Result<()> {
    let pki = TestPki::new(&[])?;
    let he = start_headend(headend_config(&pki, url, 0)).await?;
    let http = he.http_addr;
    let root = token_of(http);
    tank_site(&he.db, NORTH).await?;
    tank_site(&he.db, SOUTH).await?;
    for (name, role, sites) in [
        ("na", "admin", Some(&[NORTH][..])),
        ("full", "admin", None),
        ("sm", "manager", Some(&[SOUTH][..])),
    ] {
        let (st, v) = as_bearer(
            http,
            &root,
            "POST",
            "/api/v1/users",
            Some(&user_body(name, role, sites)),
        )
        .await?;
        ensure!(st == 201, "{name}: {st} {v}");
    }
    // a wrong password is counted in SQL on either backend; the right one clears it
    let (st, _) = as_bearer(
        http,
        "",
        "POST",
        "/api/v1/auth/login",
        Some(&json!({"user": "na", "password": "not the password"})),
    )
    .await?;
    ensure!(st == 401, "{st}");
    let na = login_token(http, "na", PW).await?;
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM login_failures WHERE user_id = 'na'")
        .fetch_one(he.db.pool())
        .await?;
    ensure!(left == 0, "a success clears the failures");
    let call = |token: String, method: &'static str, path: String, body: Option<Value>| async move {
        as_bearer(http, &token, method, &path, body.as_ref()).await
    };
    let na_call = |method: &'static str, path: &str, body: Option<Value>| {
        call(na.clone(), method, path.to_string(), body)
    };

    // 1. keys: never wider than the maker
    for body in [
        json!({"name": "k", "role": "admin", "sites": ["*"]}),
        json!({"name": "k", "role": "viewer", "sites": [NORTH, SOUTH]}),
        json!({"name": "k", "role": "viewer", "sites": [SOUTH]}),
    ] {
        let (st, v) = na_call("POST", "/api/v1/api-keys", Some(body.clone())).await?;
        ensure!(
            st == 403 && v["error"]["code"] == "forbidden",
            "{body}: {st} {v}"
        );
    }
    let (st, k) = na_call(
        "POST",
        "/api/v1/api-keys",
        Some(json!({"name": "k", "role": "admin"})),
    )
    .await?;
    ensure!(
        st == 201 && k["sites"] == json!([NORTH]),
        "a scoped admin's key without sites gets the admin's: {k}"
    );
    let na_key = k["api_key"].as_str().unwrap_or_default().to_string();

    // 2. its own scope and role stay where they are
    for body in [
        json!({"sites": ["*"]}),
        json!({"sites": [NORTH, SOUTH]}),
        json!({"sites": [SOUTH]}),
    ] {
        let (st, v) = na_call("PATCH", "/api/v1/users/na", Some(body.clone())).await?;
        ensure!(st == 403, "widening itself {body}: {st} {v}");
    }

    // 3. new users: within its role and sites only
    let (st, v) = na_call(
        "POST",
        "/api/v1/users",
        Some(user_body("x1", "admin", None)),
    )
    .await?;
    ensure!(st == 403 && v["error"]["field"] == "sites", "{st} {v}");
    let (st, v) = na_call(
        "POST",
        "/api/v1/users",
        Some(user_body("x2", "viewer", Some(&[SOUTH]))),
    )
    .await?;
    ensure!(st == 403, "{st} {v}");
    let (st, v) = na_call(
        "POST",
        "/api/v1/users",
        Some(user_body("nm", "manager", Some(&[NORTH]))),
    )
    .await?;
    ensure!(st == 201, "{st} {v}");
    // ...and what it made, it manages
    let (st, v) = na_call("PATCH", "/api/v1/users/nm", Some(json!({"role": "viewer"}))).await?;
    ensure!(st == 200 && v["role"] == "viewer", "{st} {v}");

    // 4. wider users do not exist for it: read, change, reset, unlock, list
    for (method, path, body) in [
        ("GET", "/api/v1/users/full", None),
        (
            "PATCH",
            "/api/v1/users/full",
            Some(json!({"disabled": true})),
        ),
        (
            "POST",
            "/api/v1/users/full/password",
            Some(json!({"password": "taken over password"})),
        ),
        ("POST", "/api/v1/users/full/unlock", None),
        ("GET", "/api/v1/users/sm", None),
        ("GET", "/api/v1/auth/sessions?user=full", None),
    ] {
        let (st, v) = na_call(method, path, body).await?;
        ensure!(st == 404, "{method} {path}: {st} {v}");
    }
    ensure!(
        login_token(http, "full", PW).await.is_ok(),
        "the full admin is untouched"
    );
    let (_, users) = na_call("GET", "/api/v1/users", None).await?;
    let names: Vec<&str> = users
        .as_array()
        .map(|a| a.iter().filter_map(|u| u["user"].as_str()).collect())
        .unwrap_or_default();
    ensure!(
        names == ["na", "nm"],
        "it lists only whom it manages: {names:?}"
    );
    let (_, keys) = na_call("GET", "/api/v1/api-keys", None).await?;
    ensure!(
        keys.as_array().map(Vec::len) == Some(1),
        "only its own key, not the root key: {keys}"
    );

    // 5. enrollment only for its sites
    let (st, _) = na_call(
        "POST",
        &format!("/api/v1/sites/{SOUTH}/enrollment-tokens"),
        Some(json!({})),
    )
    .await?;
    ensure!(st == 404, "{st}");
    let (st, v) = na_call(
        "POST",
        &format!("/api/v1/sites/{NORTH}/enrollment-tokens"),
        Some(json!({})),
    )
    .await?;
    ensure!(st == 201, "{st} {v}");

    // 5b. webhook dead letters: only its sites', paged by id
    for (site, n) in [(NORTH, 3), (SOUTH, 2)] {
        let f = headend::store::escalations::Finding {
            site_id: site.into(),
            tank_id: "tank-1".into(),
            cause: headend::domain::escalation::Cause::CommandFailed,
            subject: "cmd".into(),
            detail: "dead letters".into(),
            context: "{}".into(),
        };
        let id = format!("esc-dead-{site}");
        he.db.escalations().apply(&f, &id, 1, false).await?;
        for _ in 0..n {
            sqlx::query(
                "INSERT INTO webhook_outbox (escalation_id, event, payload, created_ms, attempts, next_ms, state, last_error, done_ms)
                 VALUES ($1, 'opened', '{}', 1, 8, 1, 'dead', 'refused', 2)",
            )
            .bind(&id)
            .execute(he.db.pool())
            .await?;
        }
    }
    let (st, page1) = na_call("GET", "/api/v1/webhooks/dead?limit=2", None).await?;
    ensure!(
        st == 200 && page1.as_array().map(Vec::len) == Some(2),
        "{page1}"
    );
    let last = page1[1]["id"].as_i64().unwrap_or(0);
    let cursor = headend::api::page::encode(&last.to_string());
    let (_, page2) = na_call(
        "GET",
        &format!("/api/v1/webhooks/dead?limit=2&cursor={cursor}"),
        None,
    )
    .await?;
    let all: Vec<&Value> = page1
        .as_array()
        .into_iter()
        .flatten()
        .chain(page2.as_array().into_iter().flatten())
        .collect();
    ensure!(
        all.len() == 3 && all.iter().all(|d| d["escalation"] == "esc-dead-n-1"),
        "its three, none of the south's: {page1} {page2}"
    );

    // 6. a key is the lesser of itself and its maker, as the maker stands now
    let (st, me) = call(na_key.clone(), "GET", "/api/v1/auth/me".into(), None).await?;
    ensure!(
        st == 200 && me["role"] == "admin" && me["sites"] == json!([NORTH]),
        "{me}"
    );
    // a key made by that key dies with it
    let (st, child) = call(
        na_key.clone(),
        "POST",
        "/api/v1/api-keys".into(),
        Some(json!({"name": "child", "role": "viewer"})),
    )
    .await?;
    ensure!(st == 201, "{child}");
    let child_key = child["api_key"].as_str().unwrap_or_default().to_string();
    let (st, _) = as_bearer(
        http,
        &root,
        "PATCH",
        "/api/v1/users/na",
        Some(&json!({"role": "viewer"})),
    )
    .await?;
    ensure!(st == 200);
    let (st, me) = call(na_key.clone(), "GET", "/api/v1/auth/me".into(), None).await?;
    ensure!(
        st == 200 && me["role"] == "viewer",
        "a demoted maker demotes the key: {me}"
    );
    let (st, v) = call(
        na_key.clone(),
        "POST",
        "/api/v1/users".into(),
        Some(user_body("x3", "viewer", Some(&[NORTH]))),
    )
    .await?;
    ensure!(st == 403, "the demoted key cannot add users: {st} {v}");
    let (st, _) = as_bearer(
        http,
        &root,
        "PATCH",
        "/api/v1/users/na",
        Some(&json!({"disabled": true})),
    )
    .await?;
    ensure!(st == 200);
    for k in [&na_key, &child_key] {
        let (st, v) = call(k.to_string(), "GET", "/api/v1/sites".into(), None).await?;
        ensure!(
            st == 401,
            "a disabled maker's keys (and theirs) are refused: {st} {v}"
        );
    }

    // 7. an API key has no sessions and sees nobody's
    let (st, v) = as_bearer(http, &root, "GET", "/api/v1/auth/sessions", None).await?;
    ensure!(
        st == 200 && v.as_array().is_some_and(|a| !a.is_empty()),
        "the root key is an unscoped admin: it sees every session: {v}"
    );
    let viewer = api_key(&he.db, "viewer", None).await?;
    let (st, v) = as_bearer(http, &viewer, "GET", "/api/v1/auth/sessions", None).await?;
    ensure!(
        st == 200 && v == json!([]),
        "a viewer key lists no one's sessions: {v}"
    );

    // 8. the audit trail by site: a manager of the south sees the south only
    let (st, v) = as_bearer(
        http,
        &root,
        "POST",
        "/api/v1/loads",
        Some(&json!({"site": NORTH, "reference": "PO-N", "tanks": ["tank-1"], "product": "diesel",
            "planned_volume_l": 5000, "eta": headend::wallclock::now_ms() + 3_600_000, "eta_source": "manual"})),
    )
    .await?;
    ensure!(st == 201, "{v}");
    let (st, v) = as_bearer(
        http,
        &root,
        "POST",
        "/api/v1/loads",
        Some(&json!({"site": SOUTH, "reference": "PO-S", "tanks": ["tank-1"], "product": "diesel",
            "planned_volume_l": 5000, "eta": headend::wallclock::now_ms() + 3_600_000, "eta_source": "manual"})),
    )
    .await?;
    ensure!(st == 201, "{v}");
    let sm = login_token(http, "sm", PW).await?;
    let (st, trail) = as_bearer(http, &sm, "GET", "/api/v1/audit?limit=500", None).await?;
    let entries = trail.as_array().cloned().unwrap_or_default();
    ensure!(st == 200 && !entries.is_empty(), "{st} {trail}");
    ensure!(
        entries.iter().all(|e| e["site"] == SOUTH),
        "only entries about its site: {trail}"
    );
    ensure!(
        entries.iter().any(|e| e["action"] == "loads.create"),
        "the south load is there: {trail}"
    );
    let (st, _) = as_bearer(http, &sm, "GET", "/api/v1/audit?site=n-1", None).await?;
    ensure!(st == 404, "another site's trail does not exist for it");
    let (st, all) = as_bearer(http, &root, "GET", "/api/v1/audit?limit=500", None).await?;
    ensure!(
        st == 200
            && all
                .as_array()
                .is_some_and(|a| a.iter().any(|e| e["site"] == NORTH)),
        "{all}"
    );
    // by user, from whatever address
    let (st, by_na) =
        as_bearer(http, &root, "GET", "/api/v1/audit?user=na&limit=500", None).await?;
    let by_na = by_na.as_array().cloned().unwrap_or_default();
    ensure!(
        st == 200
            && by_na.len() > 10
            && by_na.iter().all(|e| e["actor"]
                .as_str()
                .is_some_and(|a| a.starts_with("operator na from "))),
        "{by_na:?}"
    );
    ensure!(he.db.audit().verify(100).await?.is_ok());
    he.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_scoped_admin_cannot_make_itself_or_anyone_a_full_admin_on_sqlite() -> Result<()> {
    let work = tempfile::tempdir()?;
    scoped_admin(&sqlite_url(work.path())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_scoped_admin_cannot_make_itself_or_anyone_a_full_admin_on_postgres() -> Result<()> {
    let db = pg::fresh_database().await?;
    scoped_admin(&db.url).await?;
    db.drop().await
}

//! The console's working pages (issue 34) over a real socket and SQL:
//! a site's page and its trend, the setpoint form with its preview, a
//! command's page, loads (plan, search, ETA, cancel, CSV upload with its
//! per-row report), Today, and administration (users, keys, enrollment).
//! Each write is checked for role and for scope: a viewer's forged post
//! is refused, another site is not found by URL, by form field or by
//! upload, and a scoped admin cannot enroll or hand out another site.
use anyhow::{Context, Result, ensure};
use e2e::sid;
use e2e::*;
use serde_json::json;

use crate::console::{Browser, NORTH, PW, SOUTH, fleet, logged_in};

/// `(status, body)` for `ensure!` messages.
fn said(a: &crate::console::Answer) -> String {
    format!("{} {}", a.status, a.body)
}

/// Role and scope on every new page and form, for a viewer and a
/// dispatcher of the north site, on SQLite: what each sees, what each may
/// post, and what another site answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_working_pages_check_role_and_scope_on_every_read_and_write() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let users = [("nora", "viewer"), ("dina", "dispatcher")];
    let (he, _pki) = fleet(&sqlite_url(dir.path()), &users).await?;
    let http = he.http_addr;
    // the north tank takes a power limit (0 to 80), as a hello says
    tank_site_with(&he.db, NORTH, &[("power_limit", 0.0, 80.0)]).await?;

    // a viewer: every page reads, no write control, forged posts refused
    let (mut nora, vtoken) = logged_in(http, "nora").await?;
    let a = nora.get(&format!("/sites/{NORTH}")).await?;
    ensure!(a.status == 200, "{}", said(&a));
    for part in ["Assets", "Trend", "Devices", "Certificates", "tank-1"] {
        ensure!(
            a.body.contains(part),
            "the site page lacks {part}: {}",
            a.body
        );
    }
    ensure!(
        !a.body.contains("Send a setpoint") && !a.body.contains("/revoke"),
        "{}",
        a.body
    );
    // the holidays its runouts walk as Sundays: the coming ones only
    ensure!(a.body.contains("none named"), "{}", a.body);
    let (st, v) = send_json(
        http,
        reqwest::Method::PATCH,
        &format!("/api/v1/sites/{NORTH}"),
        &serde_json::json!({"holidays": ["2000-01-03", "2099-12-25"]}),
    )
    .await?;
    ensure!(st == 200, "{st} {v}");
    let a = nora.get(&format!("/sites/{NORTH}")).await?;
    ensure!(
        a.body.contains("2099-12-25") && !a.body.contains("2000-01-03"),
        "{}",
        a.body
    );
    // a corrupt stored list: the page still answers, and says so
    sqlx::query("UPDATE sites SET holidays = 'nope' WHERE site_id = $1")
        .bind(NORTH)
        .execute(he.db.pool())
        .await?;
    let a = nora.get(&format!("/sites/{NORTH}")).await?;
    ensure!(
        a.status == 200 && a.body.contains("unreadable") && a.body.contains("holidays"),
        "{}",
        said(&a)
    );
    for page in ["/", "/tanks"] {
        let a = nora.get(page).await?;
        ensure!(
            a.status == 200,
            "{page} with one corrupt list: {}",
            said(&a)
        );
    }
    let (st, v) = send_json(
        http,
        reqwest::Method::PATCH,
        &format!("/api/v1/sites/{NORTH}"),
        &serde_json::json!({"holidays": []}),
    )
    .await?;
    ensure!(st == 200, "replacing the list repairs it: {st} {v}");
    let a = nora.get(&format!("/sites/{SOUTH}")).await?;
    ensure!(
        a.status == 404 && !a.body.contains("tank-1"),
        "{}",
        said(&a)
    );
    let a = nora.get(&format!("/sites/{NORTH}?range=2y")).await?;
    ensure!(
        a.status == 422 && a.body.contains("24h, 7d, 30d or 1y"),
        "{}",
        said(&a)
    );
    for page in ["/", "/commands", "/loads", "/sites", "/tanks"] {
        let a = nora.get(page).await?;
        ensure!(a.status == 200, "{page}: {}", said(&a));
        ensure!(
            a.body.matches("method=\"post\"").count() == 1,
            "{page}: a viewer sees only the logout form: {}",
            a.body
        );
    }
    let a = nora.get("/commands/new").await?;
    ensure!(a.status == 403, "{}", said(&a));
    let a = nora.get("/admin").await?;
    ensure!(a.status == 403, "{}", said(&a));
    let forged: [(&str, &[(&str, &str)]); 5] = [
        (
            "/commands/new",
            &[
                ("site", NORTH),
                ("field", "power_limit"),
                ("value", "10"),
                ("go", "send"),
            ],
        ),
        ("/loads", &[("site", NORTH), ("reference", "PO-1")]),
        ("/admin/users", &[("user", "eve"), ("role", "admin")]),
        (
            "/sites/n-1/tanks/tank-1/settings",
            &[("product", "x"), ("capacity_l", "1")],
        ),
        ("/sites/n-1/holidays", &[("holidays", "2099-12-25")]),
    ];
    for (path, form) in forged {
        let mut f = vec![("csrf", vtoken.as_str())];
        f.extend_from_slice(form);
        let a = nora.post(path, &f, None).await?;
        ensure!(a.status == 403, "a viewer's post to {path}: {}", said(&a));
    }
    let a = nora
        .upload(
            "/loads/import",
            &[("csrf", &vtoken), ("site", NORTH)],
            ("file", "l.csv", "x"),
        )
        .await?;
    ensure!(a.status == 403, "a viewer's upload: {}", said(&a));

    // a dispatcher: the setpoint form shows the point's limits; the
    // preview checks them and sends nothing; another site is not found
    let (mut dina, token) = logged_in(http, "dina").await?;
    let a = dina.get(&format!("/commands/new?site={NORTH}")).await?;
    ensure!(
        a.status == 200 && a.body.contains("power_limit") && a.body.contains(">80<"),
        "{}",
        said(&a)
    );
    // the setpoint form, with the session's token, for `site`
    let form = |site: &'static str, value: &'static str, go: &'static str| {
        vec![
            ("csrf", token.as_str()),
            ("site", site),
            ("asset", "tank-1"),
            ("field", "power_limit"),
            ("value", value),
            ("go", go),
            ("key", "console-test-key-1"),
        ]
    };
    let f = form(NORTH, "95", "preview");
    let a = dina.post("/commands/new", &f, None).await?;
    ensure!(
        a.status == 200 && a.body.contains("outside its limits (0 to 80)"),
        "{}",
        said(&a)
    );
    let f = form(NORTH, "95", "send");
    let a = dina.post("/commands/new", &f, None).await?;
    ensure!(
        a.status == 422 && a.body.contains("outside the limits"),
        "{}",
        said(&a)
    );
    let f = form(NORTH, "60", "preview");
    let a = dina.post("/commands/new", &f, None).await?;
    ensure!(
        a.status == 200 && a.body.contains("within its limits"),
        "{}",
        said(&a)
    );
    let listed = get_json(http, &format!("/api/v1/commands?site={NORTH}")).await?;
    ensure!(
        listed.as_array().is_some_and(Vec::is_empty),
        "a preview sent nothing: {listed}"
    );
    let f = form(NORTH, "60", "send");
    let a = dina.post("/commands/new", &f, None).await?;
    ensure!(
        a.status == 303 && a.location.starts_with("/commands/"),
        "{}",
        said(&a)
    );
    // the same form posted twice is one command (its key)
    let again = dina.post("/commands/new", &f, None).await?;
    ensure!(
        again.location == a.location,
        "{} then {}",
        a.location,
        again.location
    );
    let listed = get_json(http, &format!("/api/v1/commands?site={NORTH}")).await?;
    ensure!(listed.as_array().map(Vec::len) == Some(1), "{listed}");
    let page = dina.get(&a.location).await?;
    ensure!(
        page.status == 200
            && page.body.contains("power_limit = 60")
            && page.body.contains("data-live"),
        "{}",
        said(&page)
    );
    let a = dina
        .post("/commands/new", &form(SOUTH, "60", "send"), None)
        .await?;
    ensure!(a.status == 404, "another site's setpoint: {}", said(&a));
    let a = dina.get(&format!("/commands/new?site={SOUTH}")).await?;
    ensure!(a.status == 404, "{}", said(&a));

    // loads: plan one, find it, move its ETA, cancel it
    let a = dina
        .post(
            "/loads",
            &[
                ("csrf", &token),
                ("site", NORTH),
                ("reference", "PO-4711"),
                ("carrier", "Hauler AG"),
                ("tanks", "tank-1"),
                ("product", "diesel"),
                ("planned_volume_l", "12000"),
                ("eta", "2027-01-02T08:30"),
                ("eta_source", "manual"),
            ],
            None,
        )
        .await?;
    ensure!(
        a.status == 303 && a.location.starts_with("/loads/"),
        "{}",
        said(&a)
    );
    let load = a.location.clone();
    let a = dina.get("/loads?q=hauler").await?;
    ensure!(a.body.contains("PO-4711"), "found by carrier: {}", a.body);
    let a = dina.get("/loads?q=nothing-like-it").await?;
    ensure!(
        !a.body.contains("PO-4711") && a.body.contains("No load matches"),
        "{}",
        a.body
    );
    let a = dina
        .post(
            &load,
            &[
                ("csrf", &token),
                ("eta", "2027-01-03T09:00"),
                ("eta_source", "carrier_api"),
            ],
            None,
        )
        .await?;
    ensure!(a.status == 303, "{}", said(&a));
    let a = dina.get(&load).await?;
    ensure!(
        a.body.contains("carrier_api") && a.body.matches("<tr>").count() >= 3,
        "{}",
        a.body
    );
    let a = dina
        .post(
            &load,
            &[
                ("csrf", &token),
                ("eta", "not a time"),
                ("eta_source", "manual"),
            ],
            None,
        )
        .await?;
    ensure!(
        a.status == 422 && a.body.contains("not a date and time"),
        "{}",
        said(&a)
    );
    let a = dina
        .post(&format!("{load}/cancel"), &[("csrf", &token)], None)
        .await?;
    ensure!(a.status == 303, "{}", said(&a));
    let a = dina.get(&load).await?;
    ensure!(
        a.body.contains("cancelled") && !a.body.contains("Update the ETA"),
        "{}",
        a.body
    );

    // an upload: the good row planned, the bad one named against its row
    let csv = "reference,tanks,planned_volume_l,eta,eta_source\nPO-1,tank-1,9000,2027-02-01T06:00:00Z,csv\nPO-2,tank-9,9000,2027-02-01T06:00:00Z,csv\n";
    let a = dina
        .upload(
            "/loads/import",
            &[("csrf", &token), ("site", NORTH)],
            ("file", "loads.csv", csv),
        )
        .await?;
    ensure!(a.status == 200, "{}", said(&a));
    ensure!(a.body.contains("2 rows: 1 planned"), "{}", a.body);
    let row3 = a
        .body
        .split("<tr class=\"rejected\">")
        .nth(1)
        .context("a rejected row")?;
    let row3 = &row3[..row3.find("</tr>").unwrap_or(row3.len())];
    ensure!(
        row3.contains(">3<")
            && row3.contains("PO-2")
            && row3.contains("tanks")
            && row3.contains("tank-9"),
        "row 3 named with its problem: {row3}"
    );
    let a = dina
        .upload(
            "/loads/import",
            &[("csrf", &token), ("site", SOUTH)],
            ("file", "loads.csv", csv),
        )
        .await?;
    ensure!(a.status == 404, "another site's upload: {}", said(&a));
    let a = dina
        .upload(
            "/loads/import",
            &[("site", NORTH)],
            ("file", "loads.csv", csv),
        )
        .await?;
    ensure!(
        a.status == 403,
        "an upload without the form token: {}",
        said(&a)
    );
    let a = dina
        .upload(
            "/loads/import",
            &[("csrf", &token), ("site", NORTH)],
            ("file", "loads.csv", "reference\nx\n"),
        )
        .await?;
    ensure!(
        a.status == 422 && a.body.contains("role=\"alert\""),
        "a bad header: {}",
        said(&a)
    );

    // pages go out gzipped to a client that takes it (the form token in
    // them masked afresh each time: two answers never share its bytes)
    let r = dina
        .client
        .get(format!("http://{http}/loads"))
        .header("cookie", dina.cookie_header())
        .header("accept-encoding", "gzip")
        .send()
        .await?;
    ensure!(
        r.headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok())
            == Some("gzip"),
        "{:?}",
        r.headers()
    );
    let (t1, t2) = (
        crate::console::token_in(&dina.get("/loads").await?.body),
        crate::console::token_in(&dina.get("/loads").await?.body),
    );
    ensure!(t1.is_some() && t1 != t2, "{t1:?} {t2:?}");

    // Today lists the failed or stale, linking where each is fixed
    let a = dina.get("/").await?;
    for part in [
        "Open escalations",
        "Devices down",
        "Certificates expiring within 14 days",
    ] {
        ensure!(a.body.contains(part), "Today lacks {part}: {}", a.body);
    }
    // a tank page: the trend, the observations, no settings for a dispatcher
    let a = dina
        .get(&format!("/sites/{NORTH}/tanks/tank-1?range=30d"))
        .await?;
    ensure!(
        a.status == 200 && a.body.contains("Observations") && a.body.contains("<svg"),
        "{}",
        said(&a)
    );
    ensure!(!a.body.contains("/settings"), "{}", a.body);

    // audited: the console's writes under their own actions
    let (st, v) = as_bearer(
        http,
        &token_of(http),
        "GET",
        "/api/v1/audit?limit=500",
        None,
    )
    .await?;
    ensure!(st == 200, "{st} {v}");
    let e = v.as_array().cloned().unwrap_or_default();
    let n = |action: &str, outcome: &str| {
        e.iter()
            .filter(|x| x["action"] == action && x["outcome"] == outcome)
            .count()
    };
    // refused by the gate (role, token): denied; by the service (another
    // site, a bad value or file): refused
    ensure!(n("console.setpoint", "denied") == 1, "the viewer's: {e:#?}");
    ensure!(
        n("console.setpoint", "refused") == 2,
        "95, the south: {e:#?}"
    );
    ensure!(
        n("console.loads_import", "denied") == 2,
        "viewer, no token: {e:#?}"
    );
    ensure!(
        n("console.loads_import", "refused") == 2,
        "south, header: {e:#?}"
    );
    ensure!(
        n("console.loads_import", "ok") == 1,
        "the file with a bad row: {e:#?}"
    );
    ensure!(n("console.load_create", "ok") == 1, "{e:#?}");
    he.stop().await;
    Ok(())
}

/// Administration on PostgreSQL: an admin adds a user, changes them,
/// resets their password, makes and revokes an API key, and enrolls a
/// site (the installer's command shown); an admin scoped to the north
/// site cannot enroll the south one, give a user the south site, or see
/// the south site's users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_manages_users_keys_and_enrollment_within_their_scope() -> Result<()> {
    let db = pg::fresh_database().await?;
    let (he, _pki) = fleet(&db.url, &[("sam", "admin")]).await?;
    let http = he.http_addr;
    let (st, v) = as_bearer(
        http,
        &token_of(http),
        "POST",
        "/api/v1/users",
        Some(&json!({"user": "ada", "role": "admin", "password": PW})),
    )
    .await?;
    ensure!(st == 201, "{st} {v}");
    let (st, v) = as_bearer(
        http,
        &token_of(http),
        "POST",
        "/api/v1/users",
        Some(&json!({"user": "sol", "role": "viewer", "password": PW, "sites": [SOUTH]})),
    )
    .await?;
    ensure!(st == 201, "{st} {v}");

    let (mut ada, token) = logged_in(http, "ada").await?;
    let a = ada.get("/admin").await?;
    ensure!(
        a.status == 200 && a.body.contains("sol") && a.body.contains("Webhook dead letters"),
        "{}",
        said(&a)
    );
    let a = ada
        .post(
            "/admin/users",
            &[
                ("csrf", &token),
                ("user", "zed"),
                ("role", "viewer"),
                ("sites", NORTH),
                ("password", "short"),
            ],
            None,
        )
        .await?;
    ensure!(
        a.status == 422 && a.body.contains("password"),
        "{}",
        said(&a)
    );
    let a = ada
        .post(
            "/admin/users",
            &[
                ("csrf", &token),
                ("user", "zed"),
                ("role", "viewer"),
                ("sites", NORTH),
                ("password", PW),
            ],
            None,
        )
        .await?;
    ensure!(
        a.status == 303 && a.location == "/admin/users/zed",
        "{}",
        said(&a)
    );
    let a = ada
        .post(
            "/admin/users/zed",
            &[
                ("csrf", &token),
                ("role", "dispatcher"),
                ("sites", NORTH),
                ("state", "active"),
            ],
            None,
        )
        .await?;
    ensure!(a.status == 303, "{}", said(&a));
    let a = ada
        .post(
            "/admin/users/zed/password",
            &[("csrf", &token), ("password", "another long password")],
            None,
        )
        .await?;
    ensure!(a.status == 303, "{}", said(&a));
    let z = login_token(http, "zed", "another long password").await?;
    ensure!(!z.is_empty());
    let a = ada.get("/admin/users/zed").await?;
    ensure!(a.body.contains("dispatcher"), "{}", a.body);

    let a = ada
        .post(
            "/admin/keys",
            &[
                ("csrf", &token),
                ("name", "erp"),
                ("role", "dispatcher"),
                ("sites", ""),
            ],
            None,
        )
        .await?;
    ensure!(
        a.status == 201 && a.body.contains("twk_"),
        "the key shown once: {}",
        said(&a)
    );
    let key_id = a
        .body
        .split("/admin/keys/")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .context("a revoke form")?
        .to_string();
    let a = ada
        .post(
            &format!("/admin/keys/{key_id}/revoke"),
            &[("csrf", &token)],
            None,
        )
        .await?;
    ensure!(a.status == 303, "{}", said(&a));
    let a = ada.get("/admin").await?;
    ensure!(
        !a.body.contains("twk_"),
        "the key is never shown again: {}",
        a.body
    );

    let a = ada
        .post(
            "/admin/enroll",
            &[
                ("csrf", &token),
                ("site", "new-9"),
                ("expires_minutes", "30"),
            ],
            None,
        )
        .await?;
    ensure!(
        a.status == 201
            && a.body.contains("edge-agent enroll")
            && a.body.contains("--token twe_")
            && a.body.contains("data-copy=\"command\""),
        "{}",
        said(&a)
    );
    let a = ada
        .post(
            "/admin/enroll",
            &[
                ("csrf", &token),
                ("site", "no spaces"),
                ("expires_minutes", "30"),
            ],
            None,
        )
        .await?;
    ensure!(a.status == 422, "{}", said(&a));

    // an admin scoped to the north site
    let (mut sam, stoken) = logged_in(http, "sam").await?;
    let a = sam.get("/admin").await?;
    ensure!(
        a.status == 200 && !a.body.contains(">sol<"),
        "a south user is absent: {}",
        a.body
    );
    let a = sam.get("/admin/users/sol").await?;
    ensure!(a.status == 404, "{}", said(&a));
    let a = sam
        .post(
            "/admin/enroll",
            &[
                ("csrf", &stoken),
                ("site", SOUTH),
                ("expires_minutes", "30"),
            ],
            None,
        )
        .await?;
    ensure!(
        a.status == 404,
        "a scoped admin enrolls another site: {}",
        said(&a)
    );
    let a = sam
        .post(
            "/admin/users",
            &[
                ("csrf", &stoken),
                ("user", "max"),
                ("role", "viewer"),
                ("sites", SOUTH),
                ("password", PW),
            ],
            None,
        )
        .await?;
    ensure!(
        a.status == 403 || a.status == 422,
        "a south user from a north admin: {}",
        said(&a)
    );
    let a = sam
        .post(
            "/admin/users",
            &[
                ("csrf", &stoken),
                ("user", "max"),
                ("role", "viewer"),
                ("sites", ""),
                ("password", PW),
            ],
            None,
        )
        .await?;
    ensure!(
        a.status != 303,
        "an all-sites user from a north admin: {}",
        said(&a)
    );
    let a = sam
        .post(
            "/admin/enroll",
            &[
                ("csrf", &stoken),
                ("site", NORTH),
                ("expires_minutes", "30"),
            ],
            None,
        )
        .await?;
    ensure!(a.status == 201, "{}", said(&a));
    let mut other = Browser::new(http)?;
    let a = other.get("/admin").await?;
    ensure!(a.status == 303, "no session: {}", said(&a));
    he.stop().await;
    db.drop().await?;
    Ok(())
}

/// An operator's tasks in Chromium against a site streaming through a
/// real agent (two simulated controllers of 100 and 50 kW, a frozen tank
/// simulator): the site's page with its trend; a site-level power limit
/// previewed (60 and 30 of 90), sent, and followed live on its page until
/// both shares are active and read back; a loads CSV whose bad row is
/// named; an enrollment with the installer's command
/// (`tests/peers/console_operate.py`). Screenshots as the other browser
/// test's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sends_a_site_setpoint_uploads_loads_and_enrolls_a_site_in_chromium()
-> Result<()> {
    let site = "site-op";
    let pki = TestPki::new(&[site])?;
    let work = tempfile::tempdir()?;
    let he = start_headend(headend_config(&pki, &sqlite_url(work.path()), 0)).await?;
    let (sim1, sim2) = (fast_sim().await?, fast_sim().await?);
    sim1.set_frozen(true);
    let base = agent_yaml(
        &pki,
        site,
        he.grpc_addr,
        &work.path().join("log"),
        &sim1,
        200,
    );
    let setpoints = "  - { asset: ctl-1, field: power_limit, min: 0, max: 80, default: 50 }\n  - { asset: ctl-2, field: power_limit, min: 0, max: 40, default: 20 }\n";
    let yaml = with_controllers(
        &base,
        &[("ctl-1", 100.0, &sim1), ("ctl-2", 50.0, &sim2)],
        setpoints,
        "",
    );
    let _agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    let http = he.http_addr;
    let t = std::time::Duration::from_secs(30);
    eventually("the controllers and the tank reporting", t, || async {
        let a = get_json(http, &format!("/api/v1/sites/{site}/assets")).await?;
        let good = |id: &str, field: &str| {
            a.as_array()
                .into_iter()
                .flatten()
                .any(|x| x["asset_id"] == id && x["fields"][field]["quality"] == "good")
        };
        Ok((good("ctl-1", "power_limit")
            && good("ctl-2", "power_limit")
            && good("tank-1", "volume"))
        .then_some(()))
    })
    .await?;
    // the day before the agent came: tank-1 draining 150 L/h, refilled
    // 10 hours ago (readings of another log, as a backfill stores them)
    history(&he.db, site).await?;
    let (st, v) = as_bearer(
        http,
        &token_of(http),
        "POST",
        "/api/v1/users",
        Some(&json!({"user": "ada", "role": "admin", "password": PW})),
    )
    .await?;
    ensure!(st == 201, "{st} {v}");
    let args = [
        "--user",
        "ada",
        "--password",
        PW,
        "--site",
        site,
        "--total",
        "90",
        "--shares",
        "ctl-1=60,ctl-2=30",
    ];
    let pages = ["site", "setpoint", "command", "upload", "enroll", "admin"];
    crate::console::in_chromium("console_operate.py", http, &args, work.path(), &pages).await?;
    // what the browser did reached the devices and the database
    ensure!(
        (sim1.power_limit(), sim2.power_limit()) == (60.0, 30.0),
        "the controllers hold the shares"
    );
    let loads = get_json(http, &format!("/api/v1/loads?site={site}")).await?;
    ensure!(
        loads
            .as_array()
            .is_some_and(|l| l.len() == 1 && l[0]["reference"] == "PO-100"),
        "{loads}"
    );
    he.stop().await;
    Ok(())
}

/// 24 hours of `tank-1` volume at `site`, every 5 minutes, up to 10
/// minutes ago: draining 150 L/h, refilled by 12,000 L 10 hours ago.
async fn history(db: &headend::store::Db, site: &str) -> Result<()> {
    use tankwatch_proto::v1;
    let now = headend::wallclock::now_ms();
    let step = 300_000;
    let readings: Vec<v1::Reading> = (0..288i64)
        .map(|i| {
            let at = now - 600_000 - (287 - i) * step;
            let ago = (287 - i) as f64 * step as f64 / 3_600_000.0 + 600_000.0 / 3_600_000.0;
            let sold = 150.0 * (24.0 - ago);
            let refill = if ago > 10.0 { 0.0 } else { 12_000.0 };
            v1::Reading {
                seq: i as u64 + 1,
                asset_id: "tank-1".into(),
                field: "volume".into(),
                value: 9_000.0 - sold + refill,
                unit: "L".into(),
                quality: v1::Quality::Good as i32,
                source_ts_ms: at,
                received_ts_ms: at,
                source: "modbus://history".into(),
                error: String::new(),
            }
        })
        .collect();
    let b = v1::TelemetryBatch {
        log_id: 424_242,
        first_seq: 1,
        last_seq: readings.len() as u64,
        readings,
        ..Default::default()
    };
    db.ingest(&sid(site), &b).await?;
    Ok(())
}

/// A manager of the north site names its holidays in the console: the
/// form replaces the list (refusing a bad date by name), the page then
/// names them, the change is audited with its before and after; a viewer
/// has no form and is refused, the south site (outside the manager's
/// scope) is not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_names_a_sites_holidays_in_the_console_and_role_and_scope_are_checked()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    let users = [("mona", "manager"), ("nora", "viewer")];
    let (he, _pki) = fleet(&sqlite_url(dir.path()), &users).await?;
    let http = he.http_addr;
    let (mut mona, token) = logged_in(http, "mona").await?;
    let a = mona.get(&format!("/sites/{NORTH}")).await?;
    ensure!(
        a.status == 200 && a.body.contains("Change the holidays"),
        "{}",
        said(&a)
    );
    let path = format!("/sites/{NORTH}/holidays");
    let a = mona
        .post(
            &path,
            &[
                ("csrf", &token),
                ("holidays", "2099-12-26, 2099-12-25\n2099-12-25"),
            ],
            None,
        )
        .await?;
    ensure!(a.status == 303, "{}", said(&a));
    let v = get_json(http, &format!("/api/v1/sites/{NORTH}")).await?;
    ensure!(v["holidays"] == json!(["2099-12-25", "2099-12-26"]), "{v}");
    let a = mona.get(&format!("/sites/{NORTH}")).await?;
    ensure!(
        a.body.contains("2099-12-25") && a.body.contains("2099-12-26"),
        "{}",
        a.body
    );
    let a = mona
        .post(&path, &[("csrf", &token), ("holidays", "2099-13-01")], None)
        .await?;
    ensure!(
        (400..500).contains(&a.status) && a.body.contains("2099-13-01"),
        "{}",
        said(&a)
    );
    let v = get_json(http, &format!("/api/v1/sites/{NORTH}")).await?;
    ensure!(v["holidays"] == json!(["2099-12-25", "2099-12-26"]), "{v}");
    // scope: the south site is not found
    let a = mona
        .post(
            &format!("/sites/{SOUTH}/holidays"),
            &[("csrf", &token), ("holidays", "2099-12-25")],
            None,
        )
        .await?;
    ensure!(a.status == 404, "{}", said(&a));
    let v = get_json(http, &format!("/api/v1/sites/{SOUTH}")).await?;
    ensure!(v["holidays"] == json!([]), "{v}");
    // a text that is no site id names no site: not found, as a site
    // that does not exist, on the form and on the site's page
    let a = mona
        .post(
            "/sites/North-Site/holidays",
            &[("csrf", &token), ("holidays", "2099-12-25")],
            None,
        )
        .await?;
    ensure!(a.status == 404, "{}", said(&a));
    let a = mona.get("/sites/North-Site").await?;
    ensure!(a.status == 404, "{}", said(&a));
    // and on a tank's page and its forms (the same path check)
    let a = mona.get("/sites/North-Site/tanks/tank-1").await?;
    ensure!(
        a.status == 404 && a.body.contains("no site"),
        "{}",
        said(&a)
    );
    let a = mona
        .post(
            "/sites/North-Site/tanks/tank-1/dip",
            &[("csrf", &token), ("volume_l", "100")],
            None,
        )
        .await?;
    ensure!(a.status == 404, "{}", said(&a));
    // role: a viewer sees no form and is refused
    let (mut nora, vtoken) = logged_in(http, "nora").await?;
    let a = nora.get(&format!("/sites/{NORTH}")).await?;
    ensure!(!a.body.contains("Change the holidays"), "{}", a.body);
    let a = nora
        .post(&path, &[("csrf", &vtoken), ("holidays", "")], None)
        .await?;
    ensure!(a.status == 403, "{}", said(&a));
    // audited: the change with its before and after, the refusals
    let (st, v) = as_bearer(
        http,
        &token_of(http),
        "GET",
        "/api/v1/audit?action=console.site_holidays&limit=50",
        None,
    )
    .await?;
    ensure!(st == 200, "{st} {v}");
    let e = v.as_array().cloned().unwrap_or_default();
    let done: Vec<&serde_json::Value> = e.iter().filter(|x| x["status"] == 303).collect();
    ensure!(
        done.len() == 1
            && done[0]["summary"]["before"]["holidays"] == json!([])
            && done[0]["summary"]["after"]["holidays"] == json!(["2099-12-25", "2099-12-26"]),
        "{e:#?}"
    );
    ensure!(
        e.iter().any(|x| x["status"] == 403) && e.iter().any(|x| x["status"] == 404),
        "{e:#?}"
    );
    he.stop().await;
    Ok(())
}

//! The operator console (issue 34) over a real socket and SQL, as a
//! browser drives it: the login with the API's own users, the session
//! cookies and their server-side refresh, the form token and the origin
//! check on every write, the site scope (another site's tanks are absent,
//! its filter not found), the security headers, and the audit trail of
//! what it wrote or refused.
use std::net::SocketAddr;

use anyhow::{Context, Result, ensure};
use e2e::*;
use reqwest::redirect::Policy;
use serde_json::json;

pub(crate) const NORTH: &str = "n-1";
pub(crate) const SOUTH: &str = "s-1";
pub(crate) const PW: &str = "a long enough password";

pub(crate) struct Browser {
    pub(crate) http: SocketAddr,
    pub(crate) client: reqwest::Client,
    /// The cookies it holds: (name, value).
    pub(crate) jar: Vec<(String, String)>,
}

pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) location: String,
    pub(crate) set_cookies: Vec<String>,
    pub(crate) csp: String,
    pub(crate) body: String,
}

impl Browser {
    pub(crate) fn new(http: SocketAddr) -> Result<Browser> {
        Ok(Browser {
            http,
            client: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()?,
            jar: Vec::new(),
        })
    }

    pub(crate) fn cookie_header(&self) -> String {
        self.jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Keeps what `Set-Cookie` says (an empty value with Max-Age=0 removes).
    fn keep(&mut self, set: &[String]) {
        for c in set {
            let Some((k, rest)) = c.split_once('=') else {
                continue;
            };
            let v = rest.split(';').next().unwrap_or_default().to_string();
            self.jar.retain(|(n, _)| n != k);
            if !v.is_empty() {
                self.jar.push((k.to_string(), v));
            }
        }
    }

    async fn send(&mut self, r: reqwest::RequestBuilder) -> Result<Answer> {
        let r = if self.jar.is_empty() {
            r
        } else {
            r.header("cookie", self.cookie_header())
        };
        let resp = r.send().await?;
        let h = resp.headers();
        let text = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let set_cookies: Vec<String> = h
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let (location, csp) = (text("location"), text("content-security-policy"));
        let status = resp.status().as_u16();
        let body = resp.text().await?;
        self.keep(&set_cookies);
        Ok(Answer {
            status,
            location,
            set_cookies,
            csp,
            body,
        })
    }

    pub(crate) async fn get(&mut self, path: &str) -> Result<Answer> {
        let r = self.client.get(format!("http://{}{path}", self.http));
        self.send(r).await
    }

    /// A form post from this origin (or `origin`).
    pub(crate) async fn post(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
        origin: Option<&str>,
    ) -> Result<Answer> {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let origin = origin.map_or_else(|| format!("http://{}", self.http), str::to_string);
        let r = self
            .client
            .post(format!("http://{}{path}", self.http))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", origin)
            .body(body);
        self.send(r).await
    }

    /// A `multipart/form-data` post from this origin: `fields`, then one
    /// file part `file` named `filename` holding `content` (a file input).
    pub(crate) async fn upload(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        (file, filename, content): (&str, &str, &str),
    ) -> Result<Answer> {
        let boundary = "tw-test-boundary-7MA4YWxkTrZu0gW";
        let mut body = String::new();
        for (k, v) in fields {
            body.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
            ));
        }
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{file}\"; filename=\"{filename}\"\r\nContent-Type: text/csv\r\n\r\n{content}\r\n--{boundary}--\r\n"
        ));
        let r = self
            .client
            .post(format!("http://{}{path}", self.http))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .header("origin", format!("http://{}", self.http))
            .body(body);
        self.send(r).await
    }
}

/// The form token in a page (the logout form's hidden field).
pub(crate) fn token_in(page: &str) -> Option<String> {
    let at = page.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    let rest = &page[at..];
    Some(rest[..rest.find('"')?].to_string())
}

async fn a_dip(http: SocketAddr, site: &str, litres: f64) -> Result<()> {
    let (code, r) = post_json(
        http,
        "/api/v1/inventory/observations",
        &json!({"site": site, "tank": "tank-1", "at": headend::wallclock::now_ms(),
                "volume_l": litres, "source": "manual"}),
    )
    .await?;
    ensure!((200..300).contains(&code), "observation: {code} {r}");
    let path = format!("/api/v1/sites/{site}/tanks/tank-1");
    eventually(
        "the dip assessed",
        std::time::Duration::from_secs(10),
        || async {
            let v = get_json(http, &path).await?;
            Ok((v["source"] == "manual").then_some(()))
        },
    )
    .await
}

/// A headend with two sites' tanks, each dipped, and `users` (name,
/// role) scoped to the north site.
pub(crate) async fn fleet(
    url: &str,
    users: &[(&str, &str)],
) -> Result<(headend::Running, TestPki)> {
    let pki = TestPki::new(&[])?;
    let he = start_headend(headend_config(&pki, url, 0)).await?;
    let http = he.http_addr;
    tank_site(&he.db, NORTH).await?;
    tank_site(&he.db, SOUTH).await?;
    a_dip(http, NORTH, 9_000.0).await?;
    a_dip(http, SOUTH, 7_000.0).await?;
    for (name, role) in users {
        let (st, v) = as_bearer(
            http,
            &token_of(http),
            "POST",
            "/api/v1/users",
            Some(&json!({"user": name, "role": role, "password": PW, "sites": [NORTH]})),
        )
        .await?;
        ensure!(st == 201, "{st} {v}");
    }
    Ok((he, pki))
}

/// A browser logged in as `user`, and its form token.
pub(crate) async fn logged_in(http: SocketAddr, user: &str) -> Result<(Browser, String)> {
    let mut b = Browser::new(http)?;
    let a = b
        .post(
            "/login",
            &[("user", user), ("password", PW), ("next", "/")],
            None,
        )
        .await?;
    ensure!(a.status == 303, "{user}: {} {}", a.status, a.body);
    let a = b.get("/").await?;
    let token = token_in(&a.body).context("the page has a form token")?;
    Ok((b, token))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_logs_in_sees_only_their_sites_and_every_write_needs_this_sessions_token()
-> Result<()> {
    let dir = tempfile::tempdir()?;
    let (he, _pki) = fleet(&sqlite_url(dir.path()), &[("nora", "viewer")]).await?;
    let http = he.http_addr;
    let root = token_of(http);

    let mut b = Browser::new(http)?;
    // no session: to the login page, and back after it
    let a = b.get("/tanks?risk=low").await?;
    ensure!(a.status == 303, "{} {}", a.status, a.body);
    ensure!(
        a.location == "/login?next=%2Ftanks%3Frisk%3Dlow",
        "{}",
        a.location
    );
    let a = b.get("/login").await?;
    ensure!(
        a.status == 200 && a.body.contains("name=\"password\""),
        "{}",
        a.body
    );
    ensure!(
        a.csp.contains("default-src 'none'") && a.csp.contains("frame-ancestors 'none'"),
        "CSP: {}",
        a.csp
    );
    // a wrong password: the form again, saying so, and no cookie
    let a = b
        .post(
            "/login",
            &[("user", "nora"), ("password", "wrong"), ("next", "/")],
            None,
        )
        .await?;
    ensure!(
        a.status == 401 && a.body.contains("Wrong user name or password"),
        "{} {}",
        a.status,
        a.body
    );
    ensure!(b.jar.is_empty(), "{:?}", b.jar);
    // the right one: the session's cookies, HttpOnly and SameSite=Strict;
    // an absolute `next` is not followed (an open redirect)
    let a = b
        .post(
            "/login",
            &[
                ("user", "nora"),
                ("password", PW),
                ("next", "https://evil.test/"),
            ],
            None,
        )
        .await?;
    ensure!(
        a.status == 303 && a.location == "/",
        "{} {}",
        a.status,
        a.location
    );
    for c in &a.set_cookies {
        ensure!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict"),
            "{c}"
        );
    }
    ensure!(b.jar.len() == 2, "{:?}", b.jar);

    // the tank list: its own site's tank, not the other's
    let a = b.get("/tanks").await?;
    ensure!(a.status == 200, "{} {}", a.status, a.body);
    ensure!(
        a.body.contains(NORTH) && a.body.contains("9000"),
        "{}",
        a.body
    );
    ensure!(
        !a.body.contains(SOUTH) && !a.body.contains("7000"),
        "another site shows: {}",
        a.body
    );
    // a viewer has no write control but the logout
    ensure!(a.body.matches("method=\"post\"").count() == 1, "{}", a.body);
    // another site by its filter: not found, as in the API
    let a = b.get(&format!("/tanks?site={SOUTH}")).await?;
    ensure!(
        a.status == 404 && !a.body.contains("7000"),
        "{} {}",
        a.status,
        a.body
    );
    let a = b.get(&format!("/tanks?site={NORTH}&risk=purple")).await?;
    ensure!(
        a.status == 400 && a.body.contains("risk"),
        "{} {}",
        a.status,
        a.body
    );
    let a = b.get("/").await?;
    ensure!(
        a.status == 200 && a.body.contains("Today"),
        "{} {}",
        a.status,
        a.body
    );
    let token = token_in(&a.body).context("the page has a form token")?;
    // a viewer may not read the audit trail: no link to it, refused by URL
    ensure!(!a.body.contains("href=\"/audit\""), "{}", a.body);
    let r = b.get("/audit").await?;
    ensure!(r.status == 403, "{} {}", r.status, r.body);

    // writes: without the token, with another's, from another origin
    let a = b.post("/logout", &[], None).await?;
    ensure!(a.status == 403, "no token: {} {}", a.status, a.body);
    let a = b.post("/logout", &[("csrf", "twf_forged")], None).await?;
    ensure!(a.status == 403, "a forged token: {} {}", a.status, a.body);
    let a = b
        .post("/logout", &[("csrf", &token)], Some("http://evil.test"))
        .await?;
    ensure!(a.status == 403, "another origin: {} {}", a.status, a.body);
    // a console form sent as JSON is refused at the edge
    let r = b
        .client
        .post(format!("http://{http}/logout"))
        .header("cookie", b.cookie_header())
        .json(&json!({"csrf": token}))
        .send()
        .await?;
    ensure!(r.status().as_u16() == 415, "{}", r.status());

    // an expired access token is refreshed server-side from the refresh
    // cookie; a second browser request with the same refresh cookie at
    // once (another tab) is not taken for a replay
    let refresh_only: Vec<(String, String)> = b
        .jar
        .iter()
        .filter(|(k, _)| k == "tw_refresh")
        .cloned()
        .collect();
    let mut tab = Browser::new(http)?;
    tab.jar = refresh_only.clone();
    let a = tab.get("/tanks").await?;
    ensure!(a.status == 200, "refreshed: {} {}", a.status, a.location);
    ensure!(
        a.set_cookies.iter().any(|c| c.starts_with("tw_access=")),
        "{:?}",
        a.set_cookies
    );
    let mut tab2 = Browser::new(http)?;
    tab2.jar = refresh_only;
    let a = tab2.get("/tanks").await?;
    ensure!(a.status == 200, "a second tab: {} {}", a.status, a.location);

    // logging out ends the session on the server: the old cookies are
    // worth nothing after it
    let kept = b.jar.clone();
    let a = b.post("/logout", &[("csrf", &token)], None).await?;
    ensure!(
        a.status == 303 && a.location == "/login",
        "{} {}",
        a.status,
        a.location
    );
    ensure!(b.jar.is_empty(), "cleared: {:?}", b.jar);
    let mut stale = Browser::new(http)?;
    stale.jar = kept;
    let a = stale.get("/tanks").await?;
    ensure!(
        a.status == 303 && a.location.starts_with("/login"),
        "{} {}",
        a.status,
        a.location
    );

    // the audit trail has the login, the refused writes and the logout
    let (st, v) = as_bearer(http, &root, "GET", "/api/v1/audit?limit=200", None).await?;
    ensure!(st == 200, "{st} {v}");
    let entries = v.as_array().cloned().unwrap_or_default();
    let count = |action: &str, outcome: &str| {
        entries
            .iter()
            .filter(|e| e["action"] == action && e["outcome"] == outcome)
            .count()
    };
    ensure!(count("console.login", "ok") == 1, "{entries:#?}");
    ensure!(count("console.login", "denied") == 1, "{entries:#?}");
    ensure!(count("console.logout", "denied") == 3, "{entries:#?}");
    ensure!(count("console.logout", "ok") == 1, "{entries:#?}");
    he.stop().await;
    Ok(())
}

/// The manual dip, a write through the same service and rules as `POST
/// /api/v1/inventory/observations`: a viewer sees no form and a forged
/// post of theirs is refused by role; a dispatcher's dip is stored and
/// shown; another site's tank is not found, by URL or by post. On
/// PostgreSQL (the other test runs on SQLite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_records_a_dip_a_viewer_cannot_and_another_sites_tank_is_not_found()
-> Result<()> {
    let db = pg::fresh_database().await?;
    let users = [
        ("nora", "viewer"),
        ("dina", "dispatcher"),
        ("mona", "manager"),
    ];
    let (he, _pki) = fleet(&db.url, &users).await?;
    let http = he.http_addr;
    let tank = format!("/sites/{NORTH}/tanks/tank-1");
    let dip = format!("{tank}/dip");

    let (mut viewer, vtoken) = logged_in(http, "nora").await?;
    let a = viewer.get(&tank).await?;
    ensure!(
        a.status == 200 && a.body.contains("9000 L"),
        "{} {}",
        a.status,
        a.body
    );
    ensure!(
        !a.body.contains("/dip"),
        "a viewer sees no dip form: {}",
        a.body
    );
    let a = viewer
        .post(&dip, &[("csrf", &vtoken), ("volume_l", "100")], None)
        .await?;
    ensure!(
        a.status == 403,
        "a viewer's forged dip: {} {}",
        a.status,
        a.body
    );

    let (mut disp, dtoken) = logged_in(http, "dina").await?;
    let a = disp.get(&tank).await?;
    ensure!(
        a.body.contains("/dip"),
        "a dispatcher has the form: {}",
        a.body
    );
    let a = disp
        .post(&dip, &[("csrf", &dtoken), ("volume_l", "ten")], None)
        .await?;
    ensure!(
        a.status == 422 && a.body.contains("not a number"),
        "{} {}",
        a.status,
        a.body
    );
    let a = disp
        .post(
            &dip,
            &[("csrf", &dtoken), ("volume_l", "8500"), ("note", "stick")],
            None,
        )
        .await?;
    ensure!(
        a.status == 303 && a.location == tank,
        "{} {}",
        a.status,
        a.location
    );
    eventually(
        "the dip shown",
        std::time::Duration::from_secs(10),
        || async {
            let a = Browser {
                jar: disp.jar.clone(),
                ..Browser::new(http)?
            }
            .get(&tank)
            .await?;
            Ok(a.body.contains("8500 L").then_some(()))
        },
    )
    .await?;
    // another site: not found, whether read or written
    let south = format!("/sites/{SOUTH}/tanks/tank-1");
    let a = disp.get(&south).await?;
    ensure!(
        a.status == 404 && !a.body.contains("7000"),
        "{} {}",
        a.status,
        a.body
    );
    let a = disp
        .post(
            &format!("{south}/dip"),
            &[("csrf", &dtoken), ("volume_l", "1")],
            None,
        )
        .await?;
    ensure!(a.status == 404, "{} {}", a.status, a.body);
    let v = get_json(http, &format!("/api/v1/sites/{SOUTH}/tanks/tank-1")).await?;
    ensure!(
        v["volume_l"] == json!(7000.0),
        "the other site's tank is untouched: {v}"
    );

    // a manager of the north site reads its trail: the dips, none of the
    // south's; the south by filter is not found; the CSV export has them
    let (mut mona, _) = logged_in(http, "mona").await?;
    let a = mona.get("/audit?action=console.dip").await?;
    ensure!(
        a.status == 200 && a.body.contains("console.dip"),
        "{} {}",
        a.status,
        a.body
    );
    ensure!(
        a.body.contains(&format!("/sites/{NORTH}/tanks/tank-1/dip")),
        "{}",
        a.body
    );
    ensure!(
        !a.body.contains(&format!("/sites/{SOUTH}/")),
        "another site's entry: {}",
        a.body
    );
    let a = mona.get(&format!("/audit?site={SOUTH}")).await?;
    ensure!(a.status == 404, "{} {}", a.status, a.body);
    let a = mona.get("/audit?from=yesterday").await?;
    ensure!(
        a.status == 400 && a.body.contains("RFC 3339"),
        "{} {}",
        a.status,
        a.body
    );
    let a = mona.get("/audit.csv?action=console.dip").await?;
    ensure!(a.status == 200, "{} {}", a.status, a.body);
    let mut lines = a.body.lines();
    ensure!(
        lines.next().is_some_and(|h| h.starts_with("seq,at,actor,")),
        "{}",
        a.body
    );
    let rows: Vec<&str> = lines.collect();
    // the viewer's forged dip, the dispatcher's unreadable one and the dip
    ensure!(
        rows.len() == 3 && rows.iter().all(|r| r.contains(",console.dip,")),
        "{}",
        a.body
    );
    ensure!(rows.iter().all(|r| !r.contains(SOUTH)), "{}", a.body);

    // audited: the dip done, the viewer's and the out-of-scope one denied
    let (st, v) = as_bearer(
        http,
        &token_of(http),
        "GET",
        "/api/v1/audit?action=console.dip&limit=50",
        None,
    )
    .await?;
    ensure!(st == 200, "{st} {v}");
    let e = v.as_array().cloned().unwrap_or_default();
    let n = |outcome: &str, status: i64| {
        e.iter()
            .filter(|x| x["outcome"] == outcome && x["status"] == status)
            .count()
    };
    ensure!(
        n("ok", 303) == 1 && n("denied", 403) == 1 && n("denied", 404) == 1,
        "{e:#?}"
    );
    he.stop().await;
    db.drop().await?;
    Ok(())
}

/// The console in headless Chromium (Debian's, driven by Selenium through
/// chromium-driver: `tests/peers/console_browser.py`): a manager logs
/// in with the keyboard and walks every page by its links; no page logs a
/// browser error (a CSP violation is one), overflows at 1280x800 or
/// 390x844, takes a control out of the tab order, or has a serious or
/// critical axe-core finding (run inside the page); logging out ends
/// it; without JavaScript the login and the tank list work. With
/// `TANKWATCH_SHOTS=1` the screenshots go to docs/console/ (committed),
/// else to a temporary directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_chromium_with_and_without_javascript() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (he, _pki) = fleet(&sqlite_url(dir.path()), &[("mona", "manager")]).await?;
    an_escalation(&he, NORTH, "cmd-7f3a").await?;
    let args = [
        "--user",
        "mona",
        "--password",
        PW,
        "--sees",
        NORTH,
        "--not-sees",
        SOUTH,
    ];
    let pages = [
        "today",
        "sites",
        "tanks",
        "commands",
        "loads",
        "escalations",
        "audit",
        "tank",
        "escalation",
    ];
    in_chromium(
        "console_browser.py",
        he.http_addr,
        &args,
        dir.path(),
        &pages,
    )
    .await?;
    he.stop().await;
    Ok(())
}

/// Runs the browser script `script` (in `tests/peers/`) against the
/// console at `http` with `args`, axe-core and a screenshot directory
/// (docs/console/ with `TANKWATCH_SHOTS=1`, else under `tmp`); it must
/// print PASS, and have shot each of `pages` at both sizes.
pub(crate) async fn in_chromium(
    script: &str,
    http: SocketAddr,
    args: &[&str],
    tmp: &std::path::Path,
    pages: &[&str],
) -> Result<()> {
    let shots = if std::env::var("TANKWATCH_SHOTS").is_ok_and(|v| v == "1") {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/console")
    } else {
        tmp.join("shots")
    };
    let out = tokio::process::Command::new(python())
        .arg(peer_script(script))
        .args(["--url", &format!("http://{http}")])
        .args(args)
        .arg("--shots")
        .arg(&shots)
        .arg("--axe")
        .arg(node_modules().join("axe-core/axe.min.js"))
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    ensure!(
        out.status.success() && stdout.contains("PASS"),
        "the browser run failed:\n{stdout}\n{stderr}"
    );
    for page in pages {
        for size in ["desktop", "phone"] {
            let f = shots.join(format!("{page}-{size}.png"));
            ensure!(
                f.metadata().map(|m| m.len() > 1_000).unwrap_or(false),
                "{}",
                f.display()
            );
        }
    }
    Ok(())
}

/// An escalation of `site`, opened as the inventory job would (a cause
/// that job never opens or clears, so it cannot race this test).
pub(crate) async fn an_escalation(he: &headend::Running, site: &str, id: &str) -> Result<()> {
    he.db
        .escalations()
        .apply(
            &headend::store::escalations::Finding {
                site_id: site.into(),
                tank_id: "tank-x".into(),
                cause: headend::domain::escalation::Cause::CommandFailed,
                subject: format!("{id} failed"),
                detail: format!("command {id} failed at the device"),
                context: json!({"command": id}).to_string(),
            },
            id,
            headend::wallclock::now_ms(),
            true,
        )
        .await?;
    Ok(())
}

/// A dispatcher works an escalation to resolved from the queue (assign
/// to me, investigating, a note, resolved), each step on its timeline and
/// audited; a viewer sees it without the forms; another site's
/// escalation is neither listed nor reachable by URL or by post.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_works_an_escalation_to_resolved_and_another_sites_is_not_found() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let users = [("nora", "viewer"), ("dina", "dispatcher")];
    let (he, _pki) = fleet(&sqlite_url(dir.path()), &users).await?;
    let http = he.http_addr;
    an_escalation(&he, NORTH, "esc-north").await?;
    an_escalation(&he, SOUTH, "esc-south").await?;

    let (mut viewer, _) = logged_in(http, "nora").await?;
    let a = viewer.get("/escalations/esc-north").await?;
    ensure!(
        a.status == 200 && a.body.contains("esc-north failed"),
        "{} {}",
        a.status,
        a.body
    );
    ensure!(
        !a.body.contains("/move"),
        "a viewer has no forms: {}",
        a.body
    );

    let (mut d, token) = logged_in(http, "dina").await?;
    let a = d.get("/escalations").await?;
    ensure!(
        a.status == 200 && a.body.contains("esc-north failed"),
        "{}",
        a.body
    );
    ensure!(!a.body.contains("esc-south"), "another site's: {}", a.body);
    let a = d.get("/escalations/esc-south").await?;
    ensure!(a.status == 404, "{} {}", a.status, a.body);
    let a = d
        .post(
            "/escalations/esc-south/move",
            &[("csrf", &token), ("state", "assigned")],
            None,
        )
        .await?;
    ensure!(a.status == 404, "{} {}", a.status, a.body);

    let steps: [&[(&str, &str)]; 3] = [
        &[("state", "assigned"), ("note", "")],
        &[("state", "investigating"), ("note", "calling the site")],
        &[("state", "resolved"), ("note", "valve reset")],
    ];
    for step in steps {
        let mut form = vec![("csrf", token.as_str())];
        form.extend_from_slice(step);
        let a = d.post("/escalations/esc-north/move", &form, None).await?;
        ensure!(a.status == 303, "{step:?}: {} {}", a.status, a.body);
        if step[0].1 == "investigating" {
            let a = d
                .post(
                    "/escalations/esc-north/notes",
                    &[("csrf", &token), ("note", "pump 2 too")],
                    None,
                )
                .await?;
            ensure!(a.status == 303, "note: {} {}", a.status, a.body);
        }
    }
    // resolved cannot move again: said on the page, not a server error
    let a = d
        .post(
            "/escalations/esc-north/move",
            &[("csrf", &token), ("state", "investigating")],
            None,
        )
        .await?;
    ensure!(
        a.status == 422 && a.body.contains("cannot move"),
        "{} {}",
        a.status,
        a.body
    );
    let v = get_json(http, "/api/v1/escalations/esc-north").await?;
    ensure!(v["state"] == "resolved" && v["assignee"] == "dina", "{v}");
    let notes: Vec<&str> = v["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["note"].as_str())
        .collect();
    for n in ["calling the site", "pump 2 too", "valve reset"] {
        ensure!(notes.contains(&n), "{n}: {v}");
    }
    let a = d.get("/escalations").await?;
    ensure!(
        !a.body.contains("esc-north failed"),
        "resolved leaves the queue: {}",
        a.body
    );
    let a = d.get("/escalations?show=all").await?;
    ensure!(a.body.contains("esc-north failed"), "{}", a.body);
    he.stop().await;
    Ok(())
}

/// Refusals are audited, but at most as many a minute per client as the
/// API's gate audits (`DENIED_PER_MINUTE`); past that a client is told to
/// wait (429) and the trail does not grow. A HEAD of a page is its GET's
/// rule, not a missing one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refused_console_posts_is_throttled_and_does_not_flood_the_trail() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    let (he, _pki) = fleet(&sqlite_url(dir.path()), &[]).await?;
    let http = he.http_addr;
    let mut b = Browser::new(http)?;
    let r = b.client.head(format!("http://{http}/login")).send().await?;
    ensure!(r.status().as_u16() == 200, "HEAD /login: {}", r.status());
    let limit = headend::api::access::DENIED_PER_MINUTE as usize;
    let mut statuses = Vec::new();
    for _ in 0..limit + 5 {
        statuses.push(b.post("/logout", &[("csrf", "x")], None).await?.status);
    }
    ensure!(statuses[..limit].iter().all(|s| *s == 401), "{statuses:?}");
    ensure!(statuses[limit..].iter().all(|s| *s == 429), "{statuses:?}");
    let (st, v) = as_bearer(
        http,
        &token_of(http),
        "GET",
        "/api/v1/audit?action=console.logout&limit=500",
        None,
    )
    .await?;
    ensure!(st == 200, "{st} {v}");
    let n = v.as_array().map_or(0, Vec::len);
    ensure!(n == limit, "{n} entries for {} refusals", limit + 5);
    he.stop().await;
    Ok(())
}

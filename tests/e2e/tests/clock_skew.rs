//! Issue 28, item 4: the agent as a process whose clock is two hours off
//! (libfaketime; the monotonic clock is left alone, as NTP would). Before
//! the fix, 2 h ahead stored readings 2 h in the future and expired every
//! command on arrival; 2 h behind refused the fresh certificate ("not
//! valid yet", back-dated by only an hour). Now the headend measures the
//! skew at the Hello, shows it on `/sites` and corrects the session's
//! times; the agent judges expiry by the headend's clock; certificates are
//! back-dated up to two days; a clock off by more than a day is refused
//! with the fix named.
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Result, ensure};
use e2e::*;
use serde_json::{Value, json};

const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
const T: Duration = Duration::from_secs(30);
const SETPOINTS: &str = "  - { asset: ctl-1, field: power_limit, min: 0, max: 80, default: 50 }\n";

struct Skewed {
    _pki: TestPki,
    _work: tempfile::TempDir,
    he: headend::Running,
    sim: atg_sim::Simulator,
    _agent: KillOnDrop,
    status: std::net::SocketAddr,
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A headend, a simulator with a controller, and the agent process with
/// its clock moved by `offset` (libfaketime syntax, e.g. "+2h").
async fn skewed_site(site: &str, offset: &str) -> Result<Skewed> {
    ensure!(
        std::path::Path::new(FAKETIME_LIB).exists(),
        "libfaketime is missing (apt-get install faketime; scripts/test.sh does)"
    );
    let pki = TestPki::new(&[site])?;
    let work = tempfile::tempdir()?;
    let he = e2e::start_headend(headend_config(&pki, &sqlite_url(work.path()), 0)).await?;
    let sim = fast_sim().await?;
    sim.set_frozen(true);
    let status_port = free_port();
    let base = agent_yaml(
        &pki,
        site,
        he.grpc_addr,
        &work.path().join("log"),
        &sim,
        100,
    )
    .replace("127.0.0.1:0", &format!("127.0.0.1:{status_port}"));
    let yaml = with_controllers(&base, &[("ctl-1", 100.0, &sim)], SETPOINTS, "");
    let config = work.path().join("site.yaml");
    std::fs::write(&config, yaml)?;
    let agent = Command::new(bin("edge-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .env("LD_PRELOAD", FAKETIME_LIB)
        .env("FAKETIME", offset)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    Ok(Skewed {
        _pki: pki,
        _work: work,
        he,
        sim,
        _agent: KillOnDrop(agent),
        status: format!("127.0.0.1:{status_port}").parse()?,
    })
}

async fn site_row(http: std::net::SocketAddr, site: &str) -> Result<Value> {
    let v = get_json(http, "/api/v1/sites").await?;
    let items = v["items"]
        .as_array()
        .or(v.as_array())
        .cloned()
        .unwrap_or_default();
    items
        .into_iter()
        .find(|s| s["site_id"] == site)
        .ok_or_else(|| anyhow::anyhow!("no site {site} in {v}"))
}

async fn two_hours_off_is_measured_corrected_and_commands_still_apply(
    site: &str,
    offset: &str,
    skew_ms: i64,
) -> Result<()> {
    let s = skewed_site(site, offset).await?;
    let db = s.he.db.clone();
    // readings arrive, stamped with the headend's idea of the time
    let newest: i64 = eventually("readings from the skewed agent", T, || async {
        Ok(sqlx::query_scalar::<_, Option<i64>>(
            "SELECT MAX(ts_ms) FROM readings_wide WHERE site_id = $1",
        )
        .bind(site)
        .fetch_one(db.pool())
        .await?)
    })
    .await?;
    let now = headend::wallclock::now_ms();
    assert!(
        (newest - now).abs() < 15_000,
        "reading times are corrected: newest {newest}, now {now} (off by {} ms)",
        newest - now
    );
    // the skew is on the site list
    let row = site_row(s.he.http_addr, site).await?;
    let measured = row["clock"]["skew_ms"].as_i64().unwrap_or(0);
    assert!(
        (measured - skew_ms).abs() < 5_000,
        "the site list shows the skew: {row}"
    );
    assert_eq!(row["clock"]["corrected"], json!(true), "{row}");
    // and on the agent's status
    let st = get_json(s.status, "/status").await?;
    let off = st["clock"]["headend_offset_ms"].as_i64().unwrap_or(0);
    assert!((off + skew_ms).abs() < 5_000, "the agent knows: {st}");
    let m = get_text(s.he.http_addr, "/metrics").await?;
    assert!(
        metric(&m, "tankwatch_headend_clock_corrected_sessions_total").unwrap_or(0.0) >= 1.0,
        "counted"
    );
    // a command with the default expiry is applied, not "expired on arrival"
    let (code, c) = post_json(
        s.he.http_addr,
        "/api/v1/commands",
        &json!({"kind": "setpoint", "asset": format!("{site}/ctl-1"), "field": "power_limit", "value": 61}),
    )
    .await?;
    ensure!(code == 201, "{code}: {c}");
    let id = c["command_id"].as_str().unwrap_or_default();
    let done = wait_state(s.he.http_addr, id, "active", T).await?;
    assert_eq!(s.sim.power_limit(), 61.0, "{done}");
    s.he.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_two_hours_ahead_is_corrected_and_its_commands_do_not_expire_on_arrival()
-> Result<()> {
    two_hours_off_is_measured_corrected_and_commands_still_apply("site-ahead", "+2h", 7_200_000)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_two_hours_behind_accepts_its_certificate_and_is_corrected() -> Result<()> {
    two_hours_off_is_measured_corrected_and_commands_still_apply("site-behind", "-2h", -7_200_000)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_thirty_hours_ahead_is_refused_with_the_fix_named() -> Result<()> {
    let s = skewed_site("site-far", "+30h").await?;
    let st = eventually("the agent reports the refusal", T, || async {
        let st = get_json(s.status, "/status").await.ok();
        Ok(st.filter(|st| {
            st["uplink"]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("clock"))
        }))
    })
    .await?;
    let e = st["uplink"]["last_error"].as_str().unwrap_or_default();
    assert!(
        e.contains(" h ") && e.contains("ahead of the headend") && e.contains("NTP"),
        "{e}"
    );
    let stored: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM readings_wide WHERE site_id = 'site-far'")
            .fetch_one(s.he.db.pool())
            .await?;
    assert_eq!(stored, 0, "nothing stored with times a day off");
    let m = get_text(s.he.http_addr, "/metrics").await?;
    assert!(metric(&m, "tankwatch_headend_clock_refused_sessions_total").unwrap_or(0.0) >= 1.0);
    s.he.stop().await;
    Ok(())
}

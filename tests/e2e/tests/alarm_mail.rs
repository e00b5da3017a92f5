//! Issue 32: alarm mails to a real SMTP server (aiosmtpd, from PyPI, run
//! by the test: tests/peers/smtp_sink.py). A critical leak at the gauge is
//! mailed at once to the site's recipients and again until someone
//! acknowledges it; with the server down, mails are retried and given up
//! where people see them, while readings keep flowing; a flapping alarm
//! sends at most the recipient's limit and then one digest.
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use e2e::*;
use serde_json::{Value, json};

/// A headend mailing through `smtp` with `rules`, an agent on the
/// simulator (Modbus polled every 100 ms), and the site's recipients.
struct Site {
    he: headend::Running,
    agent: edge_agent::Agent,
    sim: atg_sim::Simulator,
    tank: String,
    _pki: TestPki,
    _work: tempfile::TempDir,
}

const SITE: &str = "site-mail";

async fn site(
    smtp: &SmtpSink,
    rules: headend::domain::notify::Rules,
    attempts: i64,
) -> Result<Site> {
    let pki = TestPki::new(&[SITE])?;
    let url = format!("smtp://127.0.0.1:{}", smtp.port);
    site_with(pki, &url, rules, attempts, |_| {}).await
}

/// [`site`] with a PKI made beforehand, an SMTP URL, and more settings.
async fn site_with(
    pki: TestPki,
    smtp_url: &str,
    rules: headend::domain::notify::Rules,
    attempts: i64,
    more: impl FnOnce(&mut headend::Config),
) -> Result<Site> {
    let work = tempfile::tempdir()?;
    let mut cfg = headend_config(&pki, &sqlite_url(work.path()), 0);
    cfg.smtp_url = Some(smtp_url.to_string());
    more(&mut cfg);
    cfg.mail_from = Some("Tankwatch <alarms@tankwatch.test>".into());
    cfg.mail_max_attempts = attempts;
    cfg.alarm_rules = rules;
    let he = start_headend(cfg).await?;
    let sim =
        atg_sim::Simulator::start("127.0.0.1:0".parse()?, atg_sim::SimConfig::default()).await?;
    sim.set_frozen(true);
    let y = agent_yaml(
        &pki,
        SITE,
        he.grpc_addr,
        &work.path().join("log"),
        &sim,
        100,
    );
    let agent = edge_agent::start(agent_config(work.path(), &y)?)?;
    let tank = sim.tanks()[1].id.clone();
    wait_value(he.http_addr, SITE, &tank, "alarm.leak", 0.0, 0.0).await?;
    let (st, v) = send_json(
        he.http_addr,
        reqwest::Method::PUT,
        &format!("/api/v1/sites/{SITE}/alarm-recipients"),
        &json!({"recipients": [
            {"address": "ops@fuel.test", "min_severity": "critical"},
            {"address": "lowlevel@fuel.test", "min_severity": "minor"},
        ]}),
    )
    .await?;
    ensure!(
        st == 200 && v["recipients"].as_array().map(Vec::len) == Some(2),
        "{st} {v}"
    );
    Ok(Site {
        he,
        agent,
        sim,
        tank,
        _pki: pki,
        _work: work,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_leak_is_mailed_at_once_to_a_real_smtp_server_and_again_until_acknowledged()
-> Result<()> {
    let smtp = SmtpSink::start()?;
    let rules = headend::domain::notify::Rules {
        critical_repeat_ms: 3_000,
        major_after_ms: 2_000,
        per_recipient: 100,
        window_ms: 60_000,
    };
    let s = site(&smtp, rules, 8).await?;
    let http = s.he.http_addr;
    // a bad recipient list is refused naming the entry
    let (st, v) = send_json(
        http,
        reqwest::Method::PUT,
        &format!("/api/v1/sites/{SITE}/alarm-recipients"),
        &json!({"recipients": [{"address": "ops@fuel.test\r\nBcc: x@evil.test", "min_severity": "critical"}]}),
    )
    .await?;
    ensure!(
        st == 400 && v["error"]["field"] == "recipients[0].address",
        "{st} {v}"
    );

    let raised = Instant::now();
    s.sim.set_leak(1, true);
    let first = eventually("the leak mail", Duration::from_secs(15), || async {
        Ok(smtp.to("ops@fuel.test")?.into_iter().next())
    })
    .await?;
    eprintln!(
        "mail at the SMTP server {:?} after the gauge raised the leak",
        raised.elapsed()
    );
    let subject = first["subject"].as_str().context("subject")?;
    ensure!(
        subject == format!("[CRITICAL] critical leak alarm on {} at {SITE}", s.tank),
        "{subject}"
    );
    ensure!(first["from"] == "alarms@tankwatch.test", "{first}");
    ensure!(
        first["body"]
            .as_str()
            .is_some_and(|b| b.contains("/acknowledge")),
        "{first}"
    );
    // a recipient of minor and above gets a critical alarm too
    eventually(
        "the leak mail to the second recipient",
        Duration::from_secs(15),
        || async { Ok(smtp.to("lowlevel@fuel.test")?.into_iter().next()) },
    )
    .await?;
    // unacknowledged: a reminder follows
    let reminder = eventually("a reminder", Duration::from_secs(15), || async {
        Ok(smtp.to("ops@fuel.test")?.into_iter().find(|m| {
            m["subject"]
                .as_str()
                .is_some_and(|s| s.contains("still not acknowledged"))
        }))
    })
    .await?;
    ensure!(
        reminder["subject"]
            .as_str()
            .is_some_and(|x| x.starts_with("[CRITICAL]"))
    );
    // acknowledged: the reminders stop
    let list = get_json(http, &format!("/api/v1/alarms?site={SITE}&state=active")).await?;
    let id = list
        .as_array()
        .and_then(|l| l.iter().find(|a| a["field"] == "alarm.leak"))
        .and_then(|a| a["id"].as_str())
        .context("the leak episode")?
        .to_string();
    let (st, _) = post_json(
        http,
        &format!("/api/v1/alarms/{id}/acknowledge"),
        &json!({"note": "on it"}),
    )
    .await?;
    ensure!(st == 200);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after_ack = smtp.to("ops@fuel.test")?.len();
    tokio::time::sleep(Duration::from_millis(2 * 3_000 + 1_000)).await;
    ensure!(
        smtp.to("ops@fuel.test")?.len() == after_ack,
        "no reminder after the acknowledgement"
    );
    // the outbound log shows them sent
    let log = get_json(http, &format!("/api/v1/mails?site={SITE}&state=sent")).await?;
    ensure!(log.as_array().is_some_and(|l| l.len() >= 2), "{log}");
    // a manager scoped to another site reads the log (it holds `audit`)
    // but sees none of this site's mails, and naming the site is a 404
    let other = api_key(&s.he.db, "manager", Some(vec!["site-elsewhere".into()])).await?;
    let (st, v) = as_bearer(http, &other, "GET", "/api/v1/mails", None).await?;
    ensure!(
        st == 200 && v.as_array().is_some_and(Vec::is_empty),
        "{st} {v}"
    );
    let (st, _) = as_bearer(
        http,
        &other,
        "GET",
        &format!("/api/v1/mails?site={SITE}"),
        None,
    )
    .await?;
    ensure!(st == 404, "another site's mail log by name: {st}");
    let (st, _) = as_bearer(
        http,
        &other,
        "GET",
        &format!("/api/v1/sites/{SITE}/alarm-recipients"),
        None,
    )
    .await?;
    ensure!(st == 404, "another site's recipients: {st}");
    s.agent.stop().await?;
    s.he.stop().await;
    Ok(())
}

/// Rules that mail a critical alarm at once and not again for a minute.
fn once() -> headend::domain::notify::Rules {
    headend::domain::notify::Rules {
        critical_repeat_ms: 60_000,
        major_after_ms: 60_000,
        per_recipient: 100,
        window_ms: 60_000,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mails_go_over_starttls_with_a_login_and_over_tls_to_a_relay_of_a_private_ca_and_never_to_one_whose_certificate_fails()
-> Result<()> {
    for (mode, scheme) in [
        ("--starttls", "smtp://127.0.0.1:{port}?tls=required"),
        ("--tls", "smtps://127.0.0.1:{port}"),
    ] {
        // the relay shows the headend's certificate (its SANs hold 127.0.0.1),
        // issued by the test CA, which no system trusts
        let pki = TestPki::new(&[SITE])?;
        let (cert, key, ca) = (
            pki.path().join("headend.pem"),
            pki.path().join("headend.key"),
            pki.path().join("ca.pem"),
        );
        let creds = pki.path().join("smtp-credentials");
        std::fs::write(&creds, "tankwatch\ns3cret pass\n")?;
        let smtp = SmtpSink::start_with(&[
            mode.into(),
            cert.display().to_string(),
            key.display().to_string(),
            "--auth".into(),
            "tankwatch:s3cret pass".into(),
        ])?;
        let url = scheme.replace("{port}", &smtp.port.to_string());
        let s = site_with(pki, &url, once(), 8, |c| {
            c.smtp_credentials_file = Some(creds.clone());
            c.smtp_ca_file = Some(ca.clone());
        })
        .await?;
        s.sim.set_leak(1, true);
        let m = eventually(
            &format!("the leak mail over {mode}"),
            Duration::from_secs(15),
            || async { Ok(smtp.to("ops@fuel.test")?.into_iter().next()) },
        )
        .await?;
        ensure!(m["tls"] == true && m["login"] == "tankwatch", "{mode}: {m}");
        s.agent.stop().await?;
        s.he.stop().await;
    }
    // without the CA, the same relay's certificate fails: nothing is sent
    // (in clear or otherwise), the mail is retried, then given up in view
    let pki = TestPki::new(&[SITE])?;
    let smtp = SmtpSink::start_with(&[
        "--starttls".into(),
        pki.path().join("headend.pem").display().to_string(),
        pki.path().join("headend.key").display().to_string(),
    ])?;
    let url = format!("smtp://127.0.0.1:{}?tls=required", smtp.port);
    let s = site_with(pki, &url, once(), 2, |_| {}).await?;
    let http = s.he.http_addr;
    s.sim.set_leak(1, true);
    let dead = eventually("the mail given up", Duration::from_secs(30), || async {
        let v = get_json(http, &format!("/api/v1/mails?site={SITE}&state=dead")).await?;
        Ok(v.as_array().and_then(|l| l.first().cloned()))
    })
    .await?;
    let why = dead["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    ensure!(
        why.contains("certificate") || why.contains("issuer"),
        "the error names the certificate: {dead}"
    );
    ensure!(smtp.mails()?.is_empty(), "nothing reached the relay");
    s.agent.stop().await?;
    s.he.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfixs_smtp_sink_takes_the_mail_with_a_login_and_a_recipient_refused_for_good_is_given_up_at_once()
-> Result<()> {
    // a second SMTP server implementation: Postfix's smtp-sink
    let sink = PostfixSink::start(&[]).await?;
    let pki = TestPki::new(&[SITE])?;
    let creds = pki.path().join("smtp-credentials");
    std::fs::write(&creds, "tankwatch\nanother s3cret\n")?;
    let url = format!("smtp://127.0.0.1:{}", sink.port);
    let s = site_with(pki, &url, once(), 8, |c| {
        c.smtp_credentials_file = Some(creds.clone())
    })
    .await?;
    s.sim.set_leak(1, true);
    let m = eventually(
        "the leak mail at smtp-sink",
        Duration::from_secs(15),
        || async {
            Ok(sink
                .mails()?
                .into_iter()
                .find(|m| m.rcpt.iter().any(|r| r == "ops@fuel.test")))
        },
    )
    .await?;
    ensure!(
        m.subject == format!("[CRITICAL] critical leak alarm on {} at {SITE}", s.tank),
        "{m:?}"
    );
    s.agent.stop().await?;
    s.he.stop().await;
    // a relay that refuses every recipient with a 5xx: given up at the
    // first attempt (retrying cannot help), the reply in view
    let refusing = PostfixSink::start(&["-f", "rcpt"]).await?;
    let url = format!("smtp://127.0.0.1:{}", refusing.port);
    let s = site_with(TestPki::new(&[SITE])?, &url, once(), 8, |_| {}).await?;
    let http = s.he.http_addr;
    s.sim.set_leak(1, true);
    let dead = eventually(
        "the refused mail given up",
        Duration::from_secs(15),
        || async {
            let v = get_json(http, &format!("/api/v1/mails?site={SITE}&state=dead")).await?;
            Ok(v.as_array().and_then(|l| l.first().cloned()))
        },
    )
    .await?;
    ensure!(dead["attempts"] == 1, "one attempt, not 8: {dead}");
    ensure!(
        dead["last_error"].as_str().is_some_and(|e| e.contains("5")),
        "the relay's reply: {dead}"
    );
    ensure!(refusing.mails()?.is_empty());
    s.agent.stop().await?;
    s.he.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_smtp_server_down_mails_are_retried_then_given_up_in_view_and_a_flapping_alarm_sends_a_digest()
-> Result<()> {
    let mut smtp = SmtpSink::start()?;
    let rules = headend::domain::notify::Rules {
        critical_repeat_ms: 3_600_000,
        major_after_ms: 3_600_000,
        per_recipient: 3,
        window_ms: 8_000,
    };
    let s = site(&smtp, rules, 2).await?;
    let http = s.he.http_addr;
    smtp.peer.cmd("stop")?;
    s.sim.set_leak(1, true);
    let dead = eventually("the mail given up", Duration::from_secs(30), || async {
        let l = get_json(http, &format!("/api/v1/mails?site={SITE}&state=dead")).await?;
        Ok(l.as_array().and_then(|l| l.first().cloned()))
    })
    .await?;
    ensure!(
        dead["attempts"] == 2 && !dead["last_error"].as_str().unwrap_or_default().is_empty(),
        "{dead}"
    );
    // meanwhile readings kept flowing
    let before = latest_value(http, SITE, &s.tank, "volume").await?;
    ensure!(
        before.is_some(),
        "readings still arrive while the SMTP server is down"
    );
    s.sim.set_leak(1, false);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // the server is back; the gauge flaps: the limit, then one digest
    smtp.peer.cmd("start")?;
    // the acceptance: 50 raises and clears (here in 70 s rather than 5 min)
    const FLAPS: usize = 50;
    // each state held for seven polls: a test run beside others must not
    // miss one (the gauge is read every 100 ms)
    const FLAP_HOLD: Duration = Duration::from_millis(700);
    let t0 = Instant::now();
    for _ in 0..FLAPS {
        s.sim.set_leak(1, true);
        tokio::time::sleep(FLAP_HOLD).await;
        s.sim.set_leak(1, false);
        tokio::time::sleep(FLAP_HOLD).await;
    }
    let episodes = get_json(
        http,
        &format!("/api/v1/alarms?site={SITE}&asset={}", s.tank),
    )
    .await?;
    let leaks = episodes.as_array().map_or(0, |l| {
        l.iter().filter(|a| a["field"] == "alarm.leak").count()
    });
    ensure!(leaks == FLAPS + 1, "every raise an episode: {leaks}");
    let is_digest = |m: &Value| {
        m["subject"]
            .as_str()
            .is_some_and(|s| s.contains("alarm notifications in the last"))
    };
    let listed = |mails: &[Value]| -> usize {
        mails
            .iter()
            .filter(|m| is_digest(m))
            .map(|d| {
                d["body"]
                    .as_str()
                    .map_or(0, |b| b.lines().filter(|l| l.starts_with("- ")).count())
            })
            .sum()
    };
    // each raise is mailed, or held and listed in a digest, exactly once
    let mails = eventually(
        "every raise mailed or in a digest",
        Duration::from_secs(40),
        || async {
            let mails = smtp.to("ops@fuel.test")?;
            let direct = mails.iter().filter(|m| !is_digest(m)).count();
            Ok((listed(&mails) + direct >= FLAPS).then_some(mails))
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mails = {
        let again = smtp.to("ops@fuel.test")?;
        if again.len() > mails.len() {
            again
        } else {
            mails
        }
    };
    let direct: Vec<i64> = mails
        .iter()
        .filter(|m| !is_digest(m))
        .filter_map(|m| m["at_ms"].as_i64())
        .collect();
    let digests = mails.len() - direct.len();
    eprintln!(
        "{} mails and {digests} digests for {FLAPS} flaps in {:?}",
        direct.len(),
        t0.elapsed()
    );
    ensure!(digests >= 1, "a digest went out");
    ensure!(
        listed(&mails) + direct.len() == FLAPS,
        "each raise mailed or listed in a digest, once: {} listed, {} mailed",
        listed(&mails),
        direct.len()
    );
    // within any window, at most the recipient's limit of direct mails
    // (timed at the server; a second of slack for the rounds)
    for &t in &direct {
        let within = direct
            .iter()
            .filter(|&&u| u <= t && u > t - (rules.window_ms - 1_000))
            .count();
        ensure!(
            within <= rules.per_recipient,
            "{within} mails within a window ending at {t}: {direct:?}"
        );
    }
    s.agent.stop().await?;
    s.he.stop().await;
    Ok(())
}

/// Issue 36, runbook drill: a mail given up fires `TankwatchNotificationsDead`
/// in a real Prometheus on the shipped rules (the dead-letter counter is
/// exported at 0 before, so `increase` sees it move), and the runbook's
/// first command, the dead mail list, gives the relay's refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_given_up_fires_the_notifications_alert_and_the_dead_list_gives_the_relays_reply()
-> Result<()> {
    let refusing = PostfixSink::start(&["-f", "rcpt"]).await?;
    let pki = TestPki::new(&[SITE])?;
    let ca = pki.path().join("ca.pem");
    let url = format!("smtp://127.0.0.1:{}", refusing.port);
    let s = site_with(pki, &url, once(), 8, |_| {}).await?;
    let http = s.he.http_addr;
    let key = api_key(&s.he.db, "viewer", None).await?;
    let dir = tempfile::tempdir()?;
    let prom = e2e::prometheus::Prometheus::start(dir.path(), &[http.to_string()], &[], &key, &ca)?;
    let t = Duration::from_secs(60);
    eventually("the headend scraped twice", t, || async {
        let v = prom
            .query("count_over_time(tankwatch_headend_mails_dead_total[1m]) >= 2")
            .await
            .unwrap_or_default();
        Ok((!v.is_empty()).then_some(()))
    })
    .await
    .with_context(|| prom.log())?;
    s.sim.set_leak(1, true);
    prom.fires("TankwatchNotificationsDead", t).await?;
    e2e::prometheus::runbook_says("notifications-dead.md", "/api/v1/mails?state=dead")?;
    let v = get_json(http, "/api/v1/mails?state=dead").await?;
    let dead = v
        .as_array()
        .and_then(|l| l.first().cloned())
        .context("a dead mail")?;
    ensure!(
        dead["last_error"].as_str().is_some_and(|e| e.contains("5")),
        "the relay's reply: {dead}"
    );
    drop(prom);
    s.agent.stop().await?;
    s.he.stop().await;
    Ok(())
}

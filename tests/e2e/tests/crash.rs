//! The agent as a real process, killed with SIGKILL and restarted: no
//! acknowledged reading is stored twice and no logged reading is lost.
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Result;
use e2e::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn sigkill(mut child: Child) -> Result<()> {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL)?;
    child.wait()?;
    Ok(())
}

fn spawn_agent(config: &std::path::Path) -> Result<Child> {
    Ok(Command::new(bin("edge-agent"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_agent_neither_duplicates_nor_loses_logged_readings() -> Result<()> {
    let pki = TestPki::new(&["site-k"])?;
    let work = tempfile::tempdir()?;
    let sim = fast_sim().await?;
    let he = e2e::start_headend(headend_config(&pki, &sqlite_url(work.path()), 0)).await?;
    let log_dir = work.path().join("log");
    let yaml = agent_yaml(&pki, "site-k", he.grpc_addr, &log_dir, &sim, 50);
    let config = work.path().join("site.yaml");
    std::fs::write(&config, yaml)?;

    let mut stored_before = 0;
    for round in 0..4 {
        let child = spawn_agent(&config)?;
        let db = he.db.clone();
        eventually(
            "the agent's readings are stored",
            Duration::from_secs(20),
            || async {
                Ok((stored_seqs(&db, "site-k").await?.len() > stored_before).then_some(()))
            },
        )
        .await?;
        // kill at a different moment each round
        tokio::time::sleep(Duration::from_millis(300 + 250 * round)).await;
        sigkill(child)?;
        stored_before = stored_seqs(&he.db, "site-k").await?.len();
    }
    // a last run that drains, then a graceful stop (flushes the log)
    let mut child = spawn_agent(&config)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
    let status = child.wait()?;
    assert!(status.success(), "graceful stop: {status}");

    let log = sflog::Log::open(&log_dir, &sflog::Options::default())?;
    let next = log.stats().next_seq;
    let in_log: BTreeSet<u64> = log
        .read_from(1, usize::MAX, usize::MAX)?
        .iter()
        .map(|e| e.seq)
        .collect();
    let seqs = stored_seqs(&he.db, "site-k").await?;
    let logs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agent_logs WHERE site_id = 'site-k'")
        .fetch_one(he.db.pool())
        .await?;
    assert_eq!(logs, 1, "the log kept its identity across kills");
    let unique: BTreeSet<u64> = seqs.iter().map(|&s| s as u64).collect();
    assert_eq!(unique.len(), seqs.len(), "a reading was stored twice");
    assert!(
        unique.iter().all(|&s| s < next),
        "SQL holds a seq the log never assigned"
    );
    let missing: Vec<u64> = (1..next)
        .filter(|s| !unique.contains(s) && !in_log.contains(s))
        .collect();
    assert!(
        missing.is_empty(),
        "logged readings lost: {} of {}, first {:?}",
        missing.len(),
        next - 1,
        &missing[..missing.len().min(10)]
    );
    assert!(
        unique.len() > 500,
        "enough traffic to mean something: {}",
        unique.len()
    );
    he.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sigkills_at_random_moments_with_the_headend_up_and_down_lose_and_duplicate_nothing()
-> Result<()> {
    let pki = TestPki::new(&["site-l"])?;
    let work = tempfile::tempdir()?;
    let db_url = sqlite_url(work.path());
    let port = free_port();
    let sim = fast_sim().await?;
    let log_dir = work.path().join("log");
    let yaml = agent_yaml(
        &pki,
        "site-l",
        format!("127.0.0.1:{port}").parse()?,
        &log_dir,
        &sim,
        20,
    );
    let config = work.path().join("site.yaml");
    std::fs::write(&config, yaml)?;

    let mut rng = fastrand::Rng::with_seed(20261122);
    let mut he: Option<headend::Running> = None;
    let mut ups = 0;
    for round in 0..20 {
        // the headend flips up or down at random between kills (up at least every third round)
        let want_up = rng.bool() || round % 3 == 0;
        match (want_up, he.is_some()) {
            (true, false) => {
                he = Some(e2e::start_headend(headend_config(&pki, &db_url, port)).await?);
                ups += 1;
            }
            (false, true) => {
                if let Some(h) = he.take() {
                    h.stop().await;
                }
            }
            _ => {}
        }
        let child = spawn_agent(&config)?;
        tokio::time::sleep(Duration::from_millis(rng.u64(150..1200))).await;
        sigkill(child)?;
    }
    assert!(ups >= 5, "the headend went up and down");
    let he = match he {
        Some(h) => h,
        None => e2e::start_headend(headend_config(&pki, &db_url, port)).await?,
    };
    // a last, orderly run that drains the log
    let mut child = spawn_agent(&config)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    sim.set_silent(true);
    // the device is silent: once the stored count stops moving, the log has drained
    let mut last = usize::MAX;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let n = stored_seqs(&he.db, "site-l").await?.len();
        if n == last {
            break;
        }
        last = n;
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
    assert!(child.wait()?.success());

    let log = sflog::Log::open(&log_dir, &sflog::Options::default())?;
    let next = log.stats().next_seq;
    let in_log: BTreeSet<u64> = log
        .read_from(1, usize::MAX, usize::MAX)?
        .iter()
        .map(|e| e.seq)
        .collect();
    let seqs = stored_seqs(&he.db, "site-l").await?;
    let stored: BTreeSet<u64> = seqs.iter().map(|&s| s as u64).collect();
    assert_eq!(stored.len(), seqs.len(), "SQL has duplicates");
    let gaps: Vec<(i64, i64, i64)> =
        sqlx::query_as("SELECT seq, first_seq, last_seq FROM gaps WHERE site_id = 'site-l'")
            .fetch_all(he.db.pool())
            .await?;
    let accounted = |s: u64| {
        stored.contains(&s)
            || in_log.contains(&s)
            || gaps
                .iter()
                .any(|g| g.0 as u64 == s || (g.1 as u64 <= s && s <= g.2 as u64))
    };
    let lost: Vec<u64> = (1..next).filter(|&s| !accounted(s)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} seqs neither in SQL nor in a gap: {:?}",
        lost.len(),
        next - 1,
        &lost[..lost.len().min(10)]
    );
    assert!(stored.len() > 2000, "enough traffic: {}", stored.len());
    he.stop().await;
    Ok(())
}

/// Issue 28, item 5: a second agent started on the same log directory (a
/// second unit, a hand-started copy) is refused at start with the
/// directory named; the first keeps its session and its log. Before the
/// fix, the second took over the site's session and died on
/// `UNIQUE constraint failed: entries.seq`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_the_same_log_directory_is_refused_naming_it() -> Result<()> {
    let pki = TestPki::new(&["site-2"])?;
    let work = tempfile::tempdir()?;
    let sim = fast_sim().await?;
    let he = e2e::start_headend(headend_config(&pki, &sqlite_url(work.path()), 0)).await?;
    let log_dir = work.path().join("log");
    let yaml = agent_yaml(&pki, "site-2", he.grpc_addr, &log_dir, &sim, 50);
    let config = work.path().join("site.yaml");
    std::fs::write(&config, yaml)?;
    let first = spawn_agent(&config)?;
    let db = he.db.clone();
    eventually(
        "the first agent streams",
        Duration::from_secs(20),
        || async { Ok((!stored_seqs(&db, "site-2").await?.is_empty()).then_some(())) },
    )
    .await?;
    let out = Command::new(bin("edge-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "the second agent is refused: {text}");
    assert!(
        text.contains("in use by another process") && text.contains(&*log_dir.to_string_lossy()),
        "the refusal names the directory: {text}"
    );
    // the first goes on
    let before = stored_seqs(&he.db, "site-2").await?.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(stored_seqs(&he.db, "site-2").await?.len() > before);
    sigkill(first)?;
    he.stop().await;
    Ok(())
}

/// Issue 29, item 1: the agent raises its open-files soft limit to the hard
/// one at start (systemd's default soft limit is 1,024, and every OPC UA
/// client, device and file holds a descriptor).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_raises_its_open_files_limit_at_start() -> Result<()> {
    let pki = TestPki::new(&["site-f"])?;
    let work = tempfile::tempdir()?;
    let sim = fast_sim().await?;
    let yaml = agent_yaml(
        &pki,
        "site-f",
        format!("127.0.0.1:{}", free_port()).parse()?,
        &work.path().join("log"),
        &sim,
        100,
    );
    let config = work.path().join("site.yaml");
    std::fs::write(&config, yaml)?;
    let child = Command::new("prlimit")
        .arg("--nofile=1024:8192")
        .arg(bin("edge-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let limits = format!("/proc/{}/limits", child.id());
    let soft = eventually("the limit raised", Duration::from_secs(10), || async {
        let text = std::fs::read_to_string(&limits)?;
        let line = text
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap_or_default()
            .to_string();
        let soft: u64 = line
            .split_whitespace()
            .nth(3)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        Ok((soft == 8192).then_some(soft))
    })
    .await?;
    assert_eq!(soft, 8192);
    sigkill(child)?;
    Ok(())
}

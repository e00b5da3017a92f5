//! Issue 27, item 7: state that misled after a restart or a repeat. A
//! restarted headend waited ~3 minutes for its dead predecessor's job
//! leases (so `/tanks` showed an old evaluation); re-enrolling a site left
//! its earlier certificates valid.
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use e2e::*;
use serde_json::json;

async fn lease(db: &headend::store::Db, job: &str) -> Result<Option<(String, i64)>> {
    Ok(
        sqlx::query_as("SELECT holder, until_ms FROM job_leases WHERE job = $1")
            .bind(job)
            .fetch_optional(db.pool())
            .await?,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_headend_restarted_in_place_takes_its_job_leases_back_at_once_and_a_clean_stop_releases_them()
-> Result<()> {
    let pki = TestPki::new(&[])?;
    let work = tempfile::tempdir()?;
    let url = sqlite_url(work.path());
    let port = free_port();
    let he = start_headend(headend_config(&pki, &url, port)).await?;
    let (holder, _) = eventually("the inventory lease", Duration::from_secs(10), || async {
        lease(&he.db, "inventory").await
    })
    .await?;
    ensure!(
        holder.ends_with(&format!("/127.0.0.1:{port}")),
        "a replica is its host and agent address: {holder}"
    );
    he.stop().await;
    // a clean stop gives the leases up
    let db = headend::store::Db::connect(&url, 2).await?;
    ensure!(
        lease(&db, "inventory").await?.is_none(),
        "released at a clean stop"
    );
    // a crash leaves them behind, held for an hour more
    let far = headend::wallclock::now_ms() + 3_600_000;
    for job in ["inventory", "retention"] {
        sqlx::query("INSERT INTO job_leases (job, holder, until_ms) VALUES ($1, $2, $3)")
            .bind(job)
            .bind(&holder)
            .bind(far)
            .execute(db.pool())
            .await?;
    }
    db.pool().close().await;
    let t = Instant::now();
    let he = start_headend(headend_config(&pki, &url, port)).await?;
    eventually(
        "the restarted headend renews its own lease",
        Duration::from_secs(10),
        || async {
            Ok(lease(&he.db, "inventory")
                .await?
                .filter(|(h, until)| *h == holder && *until < far))
        },
    )
    .await?;
    ensure!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    he.stop().await;
    // another replica's lease is still respected: a headend on another port waits
    let db = headend::store::Db::connect(&url, 2).await?;
    sqlx::query(
        "INSERT INTO job_leases (job, holder, until_ms) VALUES ('inventory', 'elsewhere/10.0.0.9:7443', $1)
         ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms",
    )
    .bind(far)
        .execute(db.pool())
        .await?;
    db.pool().close().await;
    let he = start_headend(headend_config(&pki, &url, 0)).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(
        lease(&he.db, "inventory").await?.map(|l| l.0).as_deref()
            == Some("elsewhere/10.0.0.9:7443"),
        "another replica's running lease is left alone"
    );
    he.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolling_a_site_again_revokes_its_earlier_certificates() -> Result<()> {
    let pki = TestPki::new(&[])?;
    let work = tempfile::tempdir()?;
    let he = start_headend(headend_config(&pki, &sqlite_url(work.path()), 0)).await?;
    let site = "site-again";
    let mut serials = Vec::new();
    for _ in 0..3 {
        let (st, t) = post_json(
            he.http_addr,
            &format!("/api/v1/sites/{site}/enrollment-tokens"),
            &json!({}),
        )
        .await?;
        ensure!(st == 201, "{t}");
        let key = tankwatch_tls::csr::new_key_and_csr(site)?;
        let e = he
            .issuing
            .enroll(
                &he.db,
                t["token"].as_str().unwrap_or_default(),
                site,
                &key.csr_der,
                "127.0.0.1",
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        serials.push(e.serial);
    }
    let certs = get_json(he.http_addr, &format!("/api/v1/sites/{site}/certificates")).await?;
    let revoked = |serial: &str| {
        certs
            .as_array()
            .and_then(|a| a.iter().find(|c| c["serial"] == serial))
            .map(|c| !c["revoked_at"].is_null())
    };
    ensure!(revoked(&serials[0]) == Some(true), "{certs}");
    ensure!(revoked(&serials[1]) == Some(true), "{certs}");
    ensure!(
        revoked(&serials[2]) == Some(false),
        "the newest stands: {certs}"
    );
    let list = he.db.certs().revocations().await?;
    ensure!(
        list.serials.contains(&serials[0]) && !list.serials.contains(&serials[2]),
        "the live revocation list has them"
    );
    he.stop().await;
    Ok(())
}

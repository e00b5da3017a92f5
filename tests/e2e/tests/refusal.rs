//! The headend refuses every agent that is not who it claims to be, and
//! stores nothing from it.

use anyhow::Result;
use e2e::*;

async fn nothing_stored(db: &headend::store::Db) -> Result<()> {
    let sites: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sites")
        .fetch_one(db.pool())
        .await?;
    let readings: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM readings")
        .fetch_one(db.pool())
        .await?;
    assert_eq!(
        (sites, readings),
        (0, 0),
        "something from a refused client was stored"
    );
    Ok(())
}

#[tokio::test]
async fn agents_without_a_valid_certificate_or_claiming_another_site_are_refused_and_nothing_is_stored()
-> Result<()> {
    let pki = TestPki::new(&["site-a"])?;
    let other = TestPki::new(&["site-a"])?; // same site name, different CA
    let dir = tempfile::tempdir()?;
    let he = e2e::start_headend(headend_config(&pki, &sqlite_url(dir.path()), 0)).await?;

    // 1. no client certificate at all
    let anon = tankwatch_tls::anonymous_client_config(&pki.path().join("ca.pem"))?;
    let r = attempt(he.grpc_addr, anon, "site-a").await;
    assert!(r.is_err(), "a client without a certificate was served");

    // 2. a certificate from another CA (trusting our server's CA so only client auth can fail)
    let mut files = other.agent_files("site-a");
    files.ca = pki.path().join("ca.pem");
    let r = attempt(
        he.grpc_addr,
        tankwatch_tls::client_config(&files)?,
        "site-a",
    )
    .await;
    assert!(r.is_err(), "a certificate from a foreign CA was accepted");

    // 3. a valid certificate for site-a whose hello claims site-b
    let good = tankwatch_tls::client_config(&pki.agent_files("site-a"))?;
    let r = attempt(he.grpc_addr, good.clone(), "site-b").await;
    let e = r.expect_err("a claim for another site was accepted");
    assert!(e.starts_with("PermissionDenied"), "{e}");
    nothing_stored(&he.db).await?;

    // 4. certificates of our CA that break the identity rule: no extended
    // key usage at all, or a second common name naming another site
    let ca = tankwatch_pki::Ca::load(&pki.path().join("ca.pem"), &pki.path().join("ca.key"))?;
    for (what, issued) in [
        (
            "no EKU",
            ca.issue_odd_agent_for_test("site-a", None, false)?,
        ),
        (
            "two CNs",
            ca.issue_odd_agent_for_test("site-a", Some("site-b"), true)?,
        ),
    ] {
        let d = tempfile::tempdir()?;
        let files = tankwatch_tls::TlsFiles {
            cert: d.path().join("a.pem"),
            key: d.path().join("a.key"),
            ca: pki.path().join("ca.pem"),
        };
        std::fs::write(&files.cert, &issued.cert_pem)?;
        std::fs::write(&files.key, &issued.key_pem)?;
        let r = attempt(
            he.grpc_addr,
            tankwatch_tls::client_config(&files)?,
            "site-a",
        )
        .await;
        assert!(
            r.is_err(),
            "a certificate with {what} was accepted as an agent"
        );
    }
    nothing_stored(&he.db).await?;

    // control: the same certificate claiming its own site is served and stored
    attempt(he.grpc_addr, good, "site-a")
        .await
        .expect("the legitimate agent is served");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM readings_wide WHERE site_id = 'site-a'")
        .fetch_one(he.db.pool())
        .await?;
    assert_eq!(n, 1);
    he.stop().await;
    Ok(())
}

//! The uplink on slow and metered links (issue 30), in a network
//! namespace whose link `tc tbf` limits, with the demo site (the real
//! `atg-sim` and `edge-agent` binaries): bytes on the wire per reading, a
//! backlog draining with 0 session drops through link flaps, a command
//! confirmed within seconds during the drain, nothing lost or stored twice.
//! The long runs (a 1-hour backlog, 15 minutes) are `examples/link_bench.rs`,
//! figures in docs/BENCHMARKS.md.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use e2e::slowlink::{SITE, Site};
use e2e::*;
use serde_json::json;
use tankwatch_proto::v1;

/// Devices polled this many times as often while the backlog builds.
const SPEEDUP: u64 = 20;

/// Wire bytes (veth, both ways) per reading stored over `secs` from now,
/// and whether the agent kept up (its backlog stayed below `max_backlog`).
async fn measure(site: &Site, secs: u64, max_backlog: u64) -> Result<f64> {
    let (up0, down0) = site.ns.bytes()?;
    let stored0 = site.stored().await?;
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let backlog = site.status()?["uplink"]["link"]["backlog"]
            .as_u64()
            .unwrap_or(0);
        ensure!(
            backlog < max_backlog,
            "the agent fell behind: {backlog} entries waiting"
        );
    }
    let (up1, down1) = site.ns.bytes()?;
    let stored = site.stored().await? - stored0;
    ensure!(stored > 0, "nothing stored");
    let per = (up1 - up0 + down1 - down0) as f64 / stored as f64;
    println!(
        "{stored} readings in {secs} s; {} bytes up, {} down: {per:.1} bytes per reading",
        up1 - up0,
        down1 - down0
    );
    Ok(per)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_readings_cost_under_20_bytes_each_and_16_kbit_keeps_up_with_room_to_spare()
-> Result<()> {
    slowlink::available()?;
    let mut site = Site::start("live").await?;
    site.ns.shape(16)?;
    site.run_agent(&site.yaml(1, &json!({}))?)?;
    site.connected(Duration::from_secs(30)).await?;
    let st = site.wait_status(Duration::from_secs(20)).await?;
    // past the session's setup (TLS, the Hello, the points' definitions)
    tokio::time::sleep(Duration::from_secs(15)).await;
    let st2 = site.status()?;
    ensure!(
        st2["uplink"]["compact"] == true && st2["uplink"]["gzip"] == true,
        "compact batches, gzip: {}",
        st2["uplink"]
    );
    // the demo's rate is ~23 readings/s; 2 s of linger is ~46 waiting
    let per = measure(&site, 60, 200).await?;
    ensure!(
        per <= 20.0,
        "{per:.1} bytes per reading at the live rate (goal 20)"
    );
    let up = site.status()?["uplink"]["link"]["up_bytes_per_s"]
        .as_f64()
        .unwrap_or(f64::MAX);
    ensure!(
        up * 8.0 < 16_000.0 * 0.5,
        "the live rate takes {up:.0} B/s of a 2,000 B/s link (room to spare: under half)"
    );
    ensure!(site.duplicates().await? == 0, "a reading stored twice");
    drop(st);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_at_64_kbit_through_link_flaps_with_commands_confirmed_in_seconds()
-> Result<()> {
    slowlink::available()?;
    let mut site = Site::start("drain").await?;
    site.ns.shape(64)?;
    // 20 minutes' worth of readings, made in 60 s with the link down
    site.ns.set_link(false)?;
    site.run_sim(SPEEDUP)?;
    site.run_agent(&site.yaml(SPEEDUP, &json!({}))?)?;
    site.wait_status(Duration::from_secs(20)).await?;
    tokio::time::sleep(Duration::from_secs(60)).await;
    site.stop_agent();
    site.run_sim(1)?;
    site.ns.set_link(true)?;
    let log_dir = site.work.path().join("log");
    let backlog = {
        let log = sflog::Log::open(&log_dir, &sflog::Options::default())?;
        let st = log.stats();
        st.next_seq - 1 - st.acked_through
    };
    ensure!(backlog > 15_000, "a backlog was built: {backlog} entries");
    let (up0, down0) = site.ns.bytes()?;
    let t0 = Instant::now();
    site.run_agent(&site.yaml(1, &json!({}))?)?;
    site.connected(Duration::from_secs(30)).await?;
    // a command while the backlog drains: active, read back, within 5 s
    tokio::time::sleep(Duration::from_secs(5)).await;
    let took = site
        .command_active(45.0, Duration::from_secs(30))
        .await
        .context("a command during the drain")?;
    println!("command active after {:.2} s", took.as_secs_f64());
    ensure!(
        took <= Duration::from_secs(5),
        "the command showed active after {took:?} (goal 5 s)"
    );
    // four flaps of 3 s while it drains
    for _ in 0..4 {
        site.ns.set_link(false)?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        site.ns.set_link(true)?;
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let drained = eventually("the backlog drained", Duration::from_secs(300), || async {
        let st = site.status()?;
        let b = st["uplink"]["link"]["backlog"].as_u64().unwrap_or(u64::MAX);
        Ok((site.stored().await? as u64 >= backlog && b < 200).then_some(()))
    })
    .await;
    let secs = t0.elapsed().as_secs_f64();
    drained?;
    let (up1, down1) = site.ns.bytes()?;
    let stored = site.stored().await?;
    let per = (up1 - up0 + down1 - down0) as f64 / stored as f64;
    let st = site.status()?;
    println!(
        "{backlog} entries of backlog drained in {secs:.0} s at 64 kbit/s, {per:.1} bytes per reading, {} sessions",
        st["uplink"]["sessions"]
    );
    ensure!(
        st["uplink"]["sessions"] == 1,
        "no session dropped: {}",
        st["uplink"]
    );
    ensure!(
        per <= 15.0,
        "{per:.1} bytes per reading with a backlog (goal 15)"
    );
    // the backlog drains at the link's rate minus the live rate: well
    // over 10x the live rate, so 20 minutes' worth goes in under 2
    ensure!(secs < 120.0, "drained in {secs:.0} s");
    // the headend shows the site's link as the agent measures it
    let sites = get_json(site.he.http_addr, "/api/v1/sites").await?;
    let link = &sites[0]["session"]["link"];
    ensure!(
        link["up_bytes_per_s"].as_f64().is_some() && link["bytes_per_reading"].as_f64().is_some(),
        "the site's link on REST: {sites}"
    );
    // nothing lost, nothing twice
    site.stop_agent();
    ensure!(site.duplicates().await? == 0, "a reading stored twice");
    // what the headend acknowledged is stored or accounted for by a gap
    // record; what it had not yet acknowledged (the live tail when the
    // agent stopped) is all still in the log
    let log = sflog::Log::open(&log_dir, &sflog::Options::default())?;
    let mut st = log.stats();
    let tail = log.read_from(st.acked_through + 1, usize::MAX, usize::MAX)?;
    ensure!(
        tail.len() as u64 == st.next_seq - 1 - st.acked_through,
        "every unacknowledged entry is still in the log"
    );
    st.next_seq = st.acked_through + 1;
    assert_every_seq_accounted_for(&site.he.db, SITE, &st).await?;
    Ok(())
}

#[tokio::test]
async fn an_agent_of_the_previous_protocol_streams_v1_batches_to_this_headend() -> Result<()> {
    let pki = TestPki::new(&["site-old"])?;
    let work = tempfile::tempdir()?;
    let he = start_headend(headend_config(&pki, &sqlite_url(work.path()), 0)).await?;
    let tls = tankwatch_tls::client_config(&pki.agent_files("site-old"))?;
    let ch = edge_agent::uplink::channel(&he.grpc_addr.to_string(), "localhost", tls, None).await?;
    // exactly what an agent before issue 30 sends: a Hello, v1 batches, uncompressed
    let mut client = v1::agent_link_client::AgentLinkClient::new(ch);
    let out = tokio_stream::StreamExt::chain(
        tokio_stream::iter(vec![hello("site-old"), batch()]),
        tokio_stream::pending(),
    );
    let mut inbound = client.session(out).await?.into_inner();
    let mut offered = None;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), inbound.message())
            .await
            .context("an answer")??
            .context("stream open")?;
        match m.msg {
            Some(v1::headend_message::Msg::HelloAck(h)) => offered = Some(h.compact),
            Some(v1::headend_message::Msg::Ack(a)) => {
                ensure!(a.acked_through_seq == 1, "{a:?}");
                break;
            }
            _ => {}
        }
    }
    ensure!(offered == Some(true), "the headend offers compact batches");
    ensure!(stored_seqs(&he.db, "site-old").await? == vec![1]);
    Ok(())
}

/// The headend's switch (`--no-compact-batches`): off, an agent of this
/// version sends v1 batches, uncompressed, as to a headend before issue
/// 30; on (the default), compact and gzip, after one reconnect to turn
/// gzip on that does not count as a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_sends_compact_gzip_batches_only_to_a_headend_that_offers_them() -> Result<()> {
    for offer in [false, true] {
        let site = "site-offer";
        let pki = TestPki::new(&[site])?;
        let work = tempfile::tempdir()?;
        let mut cfg = headend_config(&pki, &sqlite_url(work.path()), 0);
        cfg.compact_batches = offer;
        let he = start_headend(cfg).await?;
        let sim = fast_sim().await?;
        let yaml = agent_yaml(
            &pki,
            site,
            he.grpc_addr,
            &work.path().join("log"),
            &sim,
            100,
        );
        let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
        eventually("readings stored", Duration::from_secs(30), || async {
            Ok((stored_seqs(&he.db, site).await?.len() > 100).then_some(()))
        })
        .await?;
        let up = agent.uplink.borrow().clone();
        ensure!(
            (up.compact, up.gzip, up.sessions) == (offer, offer, 1),
            "offered {offer}: compact {}, gzip {}, {} sessions",
            up.compact,
            up.gzip,
            up.sessions
        );
        let page = get_text(he.http_addr, "/metrics").await?;
        let compact = metric(&page, "tankwatch_headend_compact_batches_total").unwrap_or(-1.0);
        ensure!(
            (compact > 0.0) == offer,
            "offered {offer}: {compact} compact batches"
        );
        let seqs = stored_seqs(&he.db, site).await?;
        let mut uniq = seqs.clone();
        uniq.dedup();
        ensure!(uniq.len() == seqs.len(), "a reading stored twice");
        agent.stop().await?;
        he.stop().await;
    }
    Ok(())
}

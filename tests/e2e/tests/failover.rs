//! Issue 35: an agent given several headend addresses (`headend.address`
//! as a list) starts at one, skips an address where nothing answers, and
//! moves to a live replica when its own dies, losing and doubling no
//! reading; `/status` and the metrics say which address it uses.
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use e2e::*;

const T: Duration = Duration::from_secs(30);

/// An address where nothing listens.
async fn dead_address() -> Result<std::net::SocketAddr> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    Ok(l.local_addr()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_given_three_addresses_skips_a_dead_one_and_moves_to_a_live_replica_when_its_own_dies_losing_no_reading()
-> Result<()> {
    let _ = tracing_subscriber::fmt().with_env_filter("warn").try_init();
    let db = pg::fresh_database().await?;
    let pki = TestPki::new(&["site-f"])?;
    let a = start_headend(headend_config(&pki, &db.url, 0)).await?;
    let b = start_headend(headend_config(&pki, &db.url, 0)).await?;
    // each replica behind a proxy the test can cut, as a replica dying
    // (its connections reset, new ones refused) looks from the site
    let (pa, pb) = (
        TcpProxy::start(a.grpc_addr).await?,
        TcpProxy::start(b.grpc_addr).await?,
    );
    let dead = dead_address().await?;
    let sim = fast_sim().await?;
    let dir = tempfile::tempdir()?;
    let one = agent_yaml(&pki, "site-f", pa.addr, &dir.path().join("log"), &sim, 100);
    // a name for one of them: resolved at each dial (localhost may give
    // ::1 first, where nothing listens; the next address of the name is tried)
    let list = format!(
        "address: [\"{dead}\", \"localhost:{}\", \"{}\"]",
        pa.addr.port(),
        pb.addr
    );
    let yaml = one.replace(&format!("address: \"{}\"", pa.addr), &list);
    ensure!(yaml.contains(&list), "{yaml}");
    let agent = edge_agent::start(agent_config(dir.path(), &yaml)?)?;
    let mut up = agent.uplink.clone();
    tokio::time::timeout(T, up.wait_for(|s| s.connected)).await??;
    let st = agent.uplink.borrow().clone();
    ensure!(st.addresses.len() == 3, "{st:?}");
    let on_a = st.address == format!("localhost:{}", pa.addr.port());
    ensure!(
        on_a || st.address == pb.addr.to_string(),
        "a live address, never the dead one: {}",
        st.address
    );
    let status = get_json(agent.status_addr.expect("status"), "/status").await?;
    ensure!(
        status["uplink"]["address"] == st.address.as_str()
            && status["uplink"]["addresses"].as_array().map(Vec::len) == Some(3),
        "{status}"
    );
    // readings flow; then the agent's replica dies
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sessions = st.sessions;
    let (mine, other) = if on_a { (&pa, &pb) } else { (&pb, &pa) };
    let t0 = Instant::now();
    mine.set_up(false);
    tokio::time::timeout(T, up.wait_for(|s| s.connected && s.sessions > sessions)).await??;
    let took = t0.elapsed();
    let st = agent.uplink.borrow().clone();
    eprintln!(
        "replica cut -> streaming through the other in {took:?} (failovers {})",
        st.failovers
    );
    ensure!(
        st.address == other.addr.to_string()
            || st.address.ends_with(&format!(":{}", other.addr.port())),
        "moved to the live replica: {st:?}"
    );
    ensure!(took < Duration::from_secs(15), "{took:?}");
    ensure!(st.failovers >= 1, "{st:?}");
    let page = get_text(agent.status_addr.expect("status"), "/metrics").await?;
    let gauge = format!(
        "tankwatch_agent_uplink_headend_address{{address=\"{}\"}}",
        st.address
    );
    ensure!(metric(&page, &gauge) == Some(1.0), "{gauge}: {page}");
    // every reading reaches the database once
    tokio::time::sleep(Duration::from_secs(1)).await;
    sim.set_silent(true);
    eventually("the log drains", T, || async {
        let s = agent.log.stats();
        Ok((s.acked_through + 1 == s.next_seq).then_some(()))
    })
    .await?;
    let log = stop_drained(agent).await?;
    let seqs = stored_seqs(&a.db, "site-f").await?;
    let mut unique = seqs.clone();
    unique.dedup();
    ensure!(unique.len() == seqs.len(), "no reading stored twice");
    assert_every_seq_accounted_for(&a.db, "site-f", &log).await?;
    a.stop().await;
    b.stop().await;
    db.drop().await
}

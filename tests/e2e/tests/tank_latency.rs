//! Issue 33, "seconds, not a minute": a gauge reading committed at the
//! headend shows in the tank list within seconds, evaluated on its commit,
//! not at the inventory job's next run (set to an hour here, so that only
//! the quick evaluation can show it).
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use e2e::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_gauge_reading_shows_in_the_tank_list_within_seconds_not_at_the_next_run()
-> Result<()> {
    let site = "site-quick";
    let b = Bench::start(site, |c| c.inventory_every = Duration::from_secs(3_600)).await?;
    let (http, sim) = (b.he.http_addr, &b.sim);
    let agent = b.agent(&b.agent_yaml(b.he.grpc_addr, 200))?;
    let tank = sim.tanks()[0].clone();
    let shown = |want: f64| {
        let path = format!("/api/v1/sites/{site}/tanks/{}", tank.id);
        async move {
            let v = get_json(http, &path).await?;
            Ok(v["volume_l"]
                .as_f64()
                .filter(|x| (x - want).abs() <= 1.0)
                .map(|_| ()))
        }
    };
    eventually("the tank's first volume", Duration::from_secs(20), || {
        shown(tank.volume)
    })
    .await?;
    let mut took = Vec::new();
    for i in 0..20 {
        let v = tank.volume - 50.0 * f64::from(i + 1);
        sim.set_volume(0, v);
        let t = Instant::now();
        eventually(
            &format!("{v} L in the tank list"),
            Duration::from_secs(10),
            || shown(v),
        )
        .await?;
        took.push(t.elapsed());
    }
    took.sort();
    let (p50, max) = (took[took.len() / 2], *took.last().context("some")?);
    eprintln!(
        "gauge to tank list: p50 {p50:?}, max {max:?} over {} changes",
        took.len()
    );
    // a 200 ms poll, the log's flush, the upload, the 250 ms debounce and
    // the evaluation: well under the 5 s bound
    ensure!(max < Duration::from_secs(5), "p50 {p50:?}, max {max:?}");
    agent.stop().await?;
    b.he.stop().await;
    Ok(())
}

/// One streaming site: a session, its Hello with `TANKS` tanks, and a
/// batch of one volume per tank every second; a value put in `next` goes
/// out in the next batch, and the time that batch left is sent back.
async fn streaming_site(
    addr: std::net::SocketAddr,
    tls: rustls::ClientConfig,
    site: String,
    mut next: tokio::sync::mpsc::Receiver<(usize, f64, tokio::sync::oneshot::Sender<Instant>)>,
) -> Result<()> {
    use tankwatch_proto::v1;
    let ch = edge_agent::uplink::channel(&addr.to_string(), "localhost", tls, None).await?;
    let mut client = v1::agent_link_client::AgentLinkClient::new(ch);
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let mut hello = e2e::hello(&site);
    if let Some(v1::agent_message::Msg::Hello(h)) = &mut hello.msg {
        h.assets = (0..TANKS)
            .map(|t| v1::Asset {
                asset_id: format!("tank-{t}"),
                kind: v1::AssetKind::Tank as i32,
                capacity: 30_000.0,
                capacity_unit: "L".into(),
                ..Default::default()
            })
            .collect();
    }
    tx.send(hello).await?;
    let mut inbound = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut seq = 0u64;
    let mut volumes = [20_000.0f64; TANKS];
    // the probed tank holds its value (the list must show exactly it)
    let mut held: Option<usize> = None;
    let mut waiting: Vec<tokio::sync::oneshot::Sender<Instant>> = Vec::new();
    loop {
        tokio::select! {
            m = inbound.message() => {
                if m?.is_none() {
                    anyhow::bail!("{site}: the session ended");
                }
            }
            Some((t, v, sent)) = next.recv() => {
                volumes[t] = v;
                held = Some(t);
                waiting.push(sent);
            }
            _ = tick.tick() => {
                let now = headend::wallclock::now_ms();
                let readings: Vec<v1::Reading> = volumes
                    .iter_mut()
                    .enumerate()
                    .map(|(t, v)| {
                        seq += 1;
                        let r = v1::Reading {
                            seq,
                            asset_id: format!("tank-{t}"),
                            field: "volume".into(),
                            value: *v,
                            unit: "L".into(),
                            quality: v1::Quality::Good as i32,
                            source_ts_ms: now,
                            received_ts_ms: now,
                            source: "sim://stream".into(),
                            ..Default::default()
                        };
                        if held != Some(t) {
                            *v -= 0.5; // selling: every reading differs
                        }
                        r
                    })
                    .collect();
                let b = v1::TelemetryBatch {
                    log_id: 42,
                    first_seq: seq + 1 - TANKS as u64,
                    last_seq: seq,
                    readings,
                    ..Default::default()
                };
                tx.send(v1::AgentMessage { msg: Some(v1::agent_message::Msg::Batch(b)) }).await?;
                let left = Instant::now();
                for w in waiting.drain(..) {
                    let _ = w.send(left);
                }
            }
        }
    }
}

const SITES: usize = 50;
const TANKS: usize = 6;

/// The bound, with 300 tanks streaming a reading a second each:
/// a reading is in the tank list within 5 s (p99) of the batch carrying it
/// leaving its agent (so the figure includes the link and the commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_300_tanks_streaming_a_reading_is_in_the_tank_list_within_5_s_p99() -> Result<()> {
    let names: Vec<String> = (0..SITES).map(|i| format!("stream-{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let pki = TestPki::new(&refs)?;
    let work = tempfile::tempdir()?;
    let mut cfg = headend_config(&pki, &sqlite_url(work.path()), 0);
    cfg.inventory_every = Duration::from_secs(3_600);
    let he = start_headend(cfg).await?;
    let http = he.http_addr;
    let mut control = Vec::new();
    for s in &names {
        let tls = tankwatch_tls::client_config(&pki.agent_files(s))?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(streaming_site(he.grpc_addr, tls, s.clone(), rx));
        control.push(tx);
    }
    // every tank in the list (its first readings evaluated)
    eventually(
        "300 tanks with a volume",
        Duration::from_secs(60),
        || async {
            let v = get_json(http, "/api/v1/tanks?limit=1000").await?;
            let n = v.as_array().map_or(0, |a| {
                a.iter().filter(|t| t["volume_l"].is_number()).count()
            });
            Ok((n == SITES * TANKS).then_some(()))
        },
    )
    .await?;
    let mut took = Vec::new();
    for i in 0..60 {
        let (s, t) = (fastrand::usize(..SITES), fastrand::usize(..TANKS));
        let v = 10_000.0 + f64::from(i);
        let (sent, left) = tokio::sync::oneshot::channel();
        control[s].send((t, v, sent)).await?;
        let left = left.await?;
        let path = format!("/api/v1/sites/{}/tanks/tank-{t}", names[s]);
        eventually(
            &format!("{v} L at {path}"),
            Duration::from_secs(20),
            || async {
                let x = get_json(http, &path).await?;
                Ok((x["volume_l"].as_f64() == Some(v)).then_some(()))
            },
        )
        .await?;
        took.push(left.elapsed());
    }
    took.sort();
    let p = |q: f64| took[((took.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "300 tanks streaming: batch sent to tank list p50 {:?}, p99 {:?}, max {:?} over {} readings",
        p(0.5),
        p(0.99),
        p(1.0),
        took.len()
    );
    ensure!(p(0.99) < Duration::from_secs(5), "p99 {:?}", p(0.99));
    he.stop().await;
    Ok(())
}

/// An observation pushed through the API (a dip, a CSV row) is evaluated
/// at once too, not at the next run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observation_pushed_through_the_api_shows_in_the_tank_list_within_seconds() -> Result<()>
{
    let pki = TestPki::new(&[])?;
    let work = tempfile::tempdir()?;
    let mut cfg = headend_config(&pki, &sqlite_url(work.path()), 0);
    cfg.inventory_every = Duration::from_secs(3_600);
    let he = start_headend(cfg).await?;
    let http = he.http_addr;
    let (st, v) = post_json(http, "/api/v1/sites", &serde_json::json!({"site": "dips"})).await?;
    ensure!(st == 201, "{st} {v}");
    let (st, v) = send_json(
        http,
        reqwest::Method::PUT,
        "/api/v1/sites/dips/tanks/tank-1",
        &serde_json::json!({"product": "diesel", "capacity_l": 20000}),
    )
    .await?;
    ensure!((200..300).contains(&st), "{st} {v}");
    let t = Instant::now();
    let (st, v) = post_json(
        http,
        "/api/v1/inventory/observations",
        &serde_json::json!({"site": "dips", "tank": "tank-1", "at": headend::wallclock::now_ms(),
                            "volume_l": 9000, "source": "manual", "note": "dip"}),
    )
    .await?;
    ensure!((200..300).contains(&st), "{st} {v}");
    eventually(
        "the dip in the tank list",
        Duration::from_secs(5),
        || async {
            let x = get_json(http, "/api/v1/sites/dips/tanks/tank-1").await?;
            Ok((x["volume_l"].as_f64() == Some(9000.0) && x["source"] == "manual").then_some(()))
        },
    )
    .await?;
    eprintln!(
        "a pushed observation in the tank list after {:?}",
        t.elapsed()
    );
    ensure!(t.elapsed() < Duration::from_secs(3));
    he.stop().await;
    Ok(())
}

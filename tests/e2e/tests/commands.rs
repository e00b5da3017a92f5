//! The command plane end to end: REST -> headend -> mTLS gRPC -> agent ->
//! safety limits -> Modbus write + read-back on the simulated controller ->
//! ack through the agent's log -> lifecycle on REST.
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, ensure};
use e2e::*;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

/// Limits of the simulated controller `ctl-1` (power limit 0..80 kW,
/// default 50; pump enable 0/1, not while tank-1 is at high level or a
/// delivery is in progress).
const SETPOINTS: &str = "  - { asset: ctl-1, field: power_limit, min: 0, max: 80, default: 50 }
  - asset: ctl-1
    field: pump_enable
    allowed: [0, 1]
    default: 0
    interlocks:
      - { asset: tank-1, field: alarm.high_level, equals: 1, reason: tank-1 at high level }
      - { asset: tank-1, field: delivery.in_progress, equals: 1, reason: delivery in progress }
";

/// Fast delivery detection for tests.
const DELIVERIES: &str = "deliveries: { min_rise_l: 300, settle_ms: 1500, noise_l: 20 }\n";

struct Site {
    _pki: TestPki,
    work: tempfile::TempDir,
    he: headend::Running,
    sim: atg_sim::Simulator,
    yaml: String,
    http: SocketAddr,
}

/// A headend, a frozen simulator with a controller, and the agent's YAML
/// (the agent dials through a cut-able proxy when `proxied`).
async fn site(
    name: &str,
    db_url: Option<String>,
    proxied: bool,
) -> Result<(Site, Option<TcpProxy>)> {
    let pki = TestPki::new(&[name])?;
    let work = tempfile::tempdir()?;
    let url = db_url.unwrap_or_else(|| sqlite_url(work.path()));
    let he = e2e::start_headend(headend_config(&pki, &url, 0)).await?;
    let sim = fast_sim().await?;
    sim.set_frozen(true); // volumes stay put unless a test moves them
    let (proxy, addr) = if proxied {
        let p = TcpProxy::start(he.grpc_addr).await?;
        let a = p.addr;
        (Some(p), a)
    } else {
        (None, he.grpc_addr)
    };
    let base = agent_yaml(&pki, name, addr, &work.path().join("log"), &sim, 100);
    let yaml = with_controllers(&base, &[("ctl-1", 100.0, &sim)], SETPOINTS, DELIVERIES);
    let http = he.http_addr;
    Ok((
        Site {
            _pki: pki,
            work,
            he,
            sim,
            yaml,
            http,
        },
        proxy,
    ))
}

impl Site {
    fn agent(&self) -> Result<edge_agent::Agent> {
        Ok(edge_agent::start(agent_config(
            self.work.path(),
            &self.yaml,
        )?)?)
    }

    /// Waits until the agent's session is the one it keeps and the
    /// headend knows the site's controller (the hello arrived). The first
    /// session after a start ends at its HelloAck when the headend takes
    /// compressed messages (ADR 0013), and the agent dials again at once:
    /// a test that cuts or holds the link as soon as the hello is stored
    /// would catch that second dial and leave the agent without a session.
    async fn connected(&self, agent: &edge_agent::Agent, site: &str) -> Result<()> {
        let mut up = agent.uplink.clone();
        tokio::time::timeout(T, up.wait_for(|s| s.connected))
            .await
            .map_err(|_| anyhow::anyhow!("the agent had no session within {T:?}"))??;
        eventually("the agent's hello", T, || async {
            let a = get_json(self.http, &format!("/api/v1/sites/{site}/assets")).await;
            Ok(a.ok()
                .filter(|a| {
                    a.as_array()
                        .is_some_and(|v| v.iter().any(|x| x["asset_id"] == "ctl-1"))
                })
                .map(|_| ()))
        })
        .await
    }

    async fn post(&self, body: Value) -> Result<(u16, Value)> {
        post_json(self.http, "/api/v1/commands", &body).await
    }

    /// Submits a command that the agent must refuse; checks the reason
    /// code and that the detail mentions `why`.
    async fn expect_rejected(&self, body: Value, reason: &str, why: &str) -> Result<()> {
        let (code, c) = self.post(body).await?;
        ensure!(code == 201, "{code}: {c}");
        let id = c["command_id"].as_str().unwrap_or_default();
        let r = wait_state(self.http, id, "rejected", T).await?;
        assert_eq!(r["reason"], reason, "{r}");
        assert!(r["detail"].as_str().unwrap_or("").contains(why), "{r}");
        Ok(())
    }
}

fn states(cmd: &Value) -> Vec<String> {
    cmd["timeline"]
        .as_array()
        .map(|t| {
            let mut v: Vec<String> = t
                .iter()
                .filter_map(|e| e["state"].as_str().map(String::from))
                .collect();
            v.dedup();
            v
        })
        .unwrap_or_default()
}

async fn setpoint_lifecycle(db: Option<String>) -> Result<()> {
    let _ = tracing_subscriber::fmt().with_env_filter("warn").try_init();
    let (s, _) = site("site-c", db, false).await?;
    let agent = s.agent()?;
    s.connected(&agent, "site-c").await?;
    let (code, c) = s
        .post(json!({"kind": "setpoint", "asset": "site-c/ctl-1", "field": "power_limit", "value": 40, "duration_s": 2}))
        .await?;
    ensure!(code == 201, "{code}: {c}");
    let id = c["command_id"].as_str().unwrap_or_default().to_string();
    let active = wait_state(s.http, &id, "active", T).await?;
    assert_eq!(s.sim.power_limit(), 40.0, "written to the device");
    assert_eq!(active["readback"], json!(40.0), "read back: {active}");
    assert_eq!(active["reason"], "applied");
    let done = wait_state(s.http, &id, "completed", T).await?;
    assert_eq!(
        s.sim.power_limit(),
        50.0,
        "reverted to the configured default"
    );
    assert_eq!(
        states(&done),
        ["submitted", "sent", "acked", "active", "completed"],
        "{done:#}"
    );
    let times: Vec<i64> = done["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["at_ms"].as_i64())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "timestamps in order: {times:?}"
    );
    let (active_at, done_at) = (
        done["timeline"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["state"] == "active")
            .and_then(|e| e["at_ms"].as_i64())
            .unwrap_or(0),
        *times.last().unwrap_or(&0),
    );
    assert!(
        done_at - active_at >= 2000,
        "active for its 2 s duration ({active_at} -> {done_at})"
    );
    assert!(
        done["detail"]
            .as_str()
            .unwrap_or("")
            .contains("reverted to default 50"),
        "{done}"
    );
    // an active setpoint cancelled early is reverted at once and ends cancelled
    let (_, c) = s
        .post(json!({"kind": "setpoint", "asset": "ctl-1", "field": "power_limit", "value": 30, "duration_s": 600}))
        .await?;
    let id = c["command_id"].as_str().unwrap_or_default().to_string();
    wait_state(s.http, &id, "active", T).await?;
    assert_eq!(s.sim.power_limit(), 30.0);
    let (code, r) = post_json(s.http, &format!("/api/v1/commands/{id}/cancel"), &json!({})).await?;
    assert_eq!(code, 202, "{r}");
    let done = wait_state(s.http, &id, "cancelled", T).await?;
    assert!(
        done["detail"]
            .as_str()
            .unwrap_or("")
            .starts_with("cancelled"),
        "{done}"
    );
    let listed = get_json(s.http, "/api/v1/commands?state=cancelled").await?;
    assert!(
        listed
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c["command_id"] == id.as_str())),
        "a cancelled command is found by its state: {listed}"
    );
    assert_eq!(s.sim.power_limit(), 50.0, "reverted to the default");
    let (code, r) = post_json(s.http, &format!("/api/v1/commands/{id}/cancel"), &json!({})).await?;
    assert_eq!(code, 409, "an ended command cannot be cancelled: {r}");
    agent.stop().await?;
    s.he.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setpoint_is_written_read_back_active_reverted_and_completed_with_a_timeline_on_sqlite()
-> Result<()> {
    setpoint_lifecycle(None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setpoint_is_written_read_back_active_reverted_and_completed_with_a_timeline_on_postgres()
-> Result<()> {
    let db = pg::fresh_database().await?;
    setpoint_lifecycle(Some(db.url.clone())).await?;
    db.drop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_setpoints_are_refused_by_the_headend_and_interlocked_ones_by_the_agent_and_neither_reaches_the_device()
-> Result<()> {
    let (s, _) = site("site-r", None, false).await?;
    // tank-1 at 97 %: its high-level alarm is the pump interlock's input
    let cap = s.sim.tanks()[0].capacity;
    s.sim.set_volume(0, cap * 0.97);
    let agent = s.agent()?;
    s.connected(&agent, "site-r").await?;
    eventually("tank-1 high level seen", T, || async {
        let a = get_json(s.http, "/api/v1/sites/site-r/assets").await?;
        let hl = a
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["asset_id"] == "tank-1")
            .map(|t| t["fields"]["alarm.high_level"]["value"].clone());
        Ok((hl == Some(json!(1.0))).then_some(()))
    })
    .await?;
    let writes = s.sim.writes();
    // outside the limits the agent reported in its Hello: refused at the
    // headend already (the agent's own check is the executor's unit test)
    for v in [120.0, 1e308, -1.0] {
        let (code, e) = s
            .post(json!({"kind": "setpoint", "asset": "ctl-1", "field": "power_limit", "value": v}))
            .await?;
        assert_eq!(
            (code, e["error"]["field"].as_str()),
            (422, Some("value")),
            "{v}: {e}"
        );
        assert!(
            e["error"]["message"].as_str().unwrap_or("").contains("80"),
            "{e}"
        );
    }
    s.expect_rejected(
        json!({"kind": "setpoint", "asset": "ctl-1", "field": "pump_enable", "value": 1}),
        "rejected_interlock",
        "high level",
    )
    .await?;
    assert_eq!(s.sim.writes(), writes, "nothing reached the device");
    assert_eq!(s.sim.controller_register(1000), Some(0));

    // the REST side: clear 4xx naming the field, and idempotency
    let bad = [
        (
            json!({"kind": "setpoint", "asset": "ctl-1", "field": "power_limit"}),
            400,
            "value",
        ),
        (
            json!({"kind": "setpoint", "asset": "ctl-1", "field": "power_limit", "value": "x"}),
            400,
            "value",
        ),
        (
            json!({"kind": "setpoint", "asset": "ctl-1", "field": "power_limit", "value": 1, "duration_s": -1}),
            400,
            "duration_s",
        ),
        (
            json!({"kind": "setpoint", "asset": "ctl-1", "field": "power_limit", "value": 1, "expires_in_s": 0}),
            400,
            "expires_in_s",
        ),
        (
            json!({"kind": "setpoint", "asset": "ctl-1", "field": "power_limit", "value": 1, "colour": "red"}),
            400,
            "colour",
        ),
        (json!({"kind": "reboot", "asset": "ctl-1"}), 400, "kind"),
        (
            json!({"kind": "setpoint", "field": "power_limit", "value": 1}),
            400,
            "asset",
        ),
        (
            json!({"kind": "setpoint", "asset": "ctl-9", "field": "power_limit", "value": 1}),
            404,
            "asset",
        ),
        (
            json!({"kind": "setpoint", "asset": "ctl-1", "field": "volume", "value": 1}),
            422,
            "field",
        ),
    ];
    for (body, code, field) in bad {
        let (got, e) = s.post(body.clone()).await?;
        assert_eq!(
            (got, e["error"]["field"].clone()),
            (code, json!(field)),
            "{body} -> {e}"
        );
        assert!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(field)),
            "{e}"
        );
    }
    let body = json!({"kind": "setpoint", "site": "site-r", "asset": "ctl-1", "field": "power_limit", "value": 30, "idempotency_key": "k-1"});
    let (c1, a) = s.post(body.clone()).await?;
    let (c2, b) = s.post(body).await?;
    assert_eq!((c1, c2), (201, 200));
    assert_eq!(
        a["command_id"], b["command_id"],
        "the same command, not a second one"
    );
    assert!(
        a["warnings"][0]
            .as_str()
            .unwrap_or("")
            .contains("asset wins"),
        "{a}"
    );
    let (c3, e) = s.post(json!({"kind": "setpoint", "asset": "ctl-1", "field": "power_limit", "value": 31, "idempotency_key": "k-1"})).await?;
    assert_eq!(
        (c3, e["error"]["field"].clone()),
        (422, json!("idempotency_key")),
        "{e}"
    );
    wait_state(s.http, a["command_id"].as_str().unwrap_or(""), "active", T).await?;
    let list = get_json(s.http, "/api/v1/commands?site=site-r&state=rejected").await?;
    // the interlocked one (out-of-range values never became commands)
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    agent.stop().await?;
    s.he.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_for_an_offline_agent_are_applied_after_reconnect_or_expire_without_touching_the_device()
-> Result<()> {
    let (s, _) = site("site-f", None, false).await?;
    let agent = s.agent()?;
    s.connected(&agent, "site-f").await?;
    agent.stop().await?;
    let writes = s.sim.writes();
    let (_, valid) = s.post(json!({"kind": "setpoint", "asset": "ctl-1", "field": "power_limit", "value": 33, "expires_in_s": 120})).await?;
    let (_, short) = s.post(json!({"kind": "setpoint", "asset": "ctl-1", "field": "pump_enable", "value": 1, "expires_in_s": 1})).await?;
    let (valid, short) = (
        valid["command_id"].as_str().unwrap_or("").to_string(),
        short["command_id"].as_str().unwrap_or("").to_string(),
    );
    let e = wait_state(s.http, &short, "expired", T).await?;
    assert_eq!(states(&e), ["submitted", "expired"], "never sent: {e:#}");
    let c = get_json(s.http, &format!("/api/v1/commands/{valid}")).await?;
    assert_eq!(c["state"], "submitted", "waits for the agent");
    // cancelled while the agent is away: never sent, never applied
    let (_, x) = s
        .post(json!({"kind": "setpoint", "asset": "ctl-1", "field": "pump_enable", "value": 1, "expires_in_s": 120}))
        .await?;
    let x = x["command_id"].as_str().unwrap_or("").to_string();
    let (code, r) = post_json(s.http, &format!("/api/v1/commands/{x}/cancel"), &json!({})).await?;
    assert_eq!(
        (code, r["state"].clone(), r["reason"].clone()),
        (202, json!("cancelled"), json!("cancelled")),
        "{r}"
    );

    let agent = s.agent()?;
    wait_state(s.http, &valid, "active", T).await?;
    assert_eq!(s.sim.power_limit(), 33.0);
    assert_eq!(
        s.sim.controller_register(1000),
        Some(0),
        "neither the expired nor the cancelled command reached the device"
    );
    assert_eq!(
        s.sim.writes() - writes,
        1,
        "only the valid command was written"
    );
    agent.stop().await?;
    s.he.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_delivered_twice_across_a_forced_reconnect_is_applied_once() -> Result<()> {
    let (s, proxy) = site("site-d", None, true).await?;
    let proxy = proxy.ok_or_else(|| anyhow::anyhow!("no proxy"))?;
    let agent = s.agent()?;
    s.connected(&agent, "site-d").await?;
    // the agent's answers are held back: it receives and applies, the headend hears nothing
    proxy.set_hold(true);
    let writes = s.sim.writes();
    let (_, c) = s
        .post(json!({"kind": "setpoint", "asset": "ctl-1", "field": "power_limit", "value": 44}))
        .await?;
    let id = c["command_id"].as_str().unwrap_or("").to_string();
    eventually("the device written", T, || async {
        Ok((s.sim.power_limit() == 44.0).then_some(()))
    })
    .await?;
    let c = get_json(s.http, &format!("/api/v1/commands/{id}")).await?;
    assert_eq!(c["state"], "sent", "no ack reached the headend yet");
    // forced reconnect: the headend delivers the command again
    proxy.set_up(false);
    proxy.set_hold(false);
    proxy.set_up(true);
    let c = wait_state(s.http, &id, "active", T).await?;
    let reasons: Vec<&str> = c["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(
        reasons.contains(&"sent") && reasons.contains(&"redelivered"),
        "delivered twice: {reasons:?}"
    );
    assert_eq!(s.sim.writes() - writes, 1, "applied once");
    let status = agent
        .status_addr
        .ok_or_else(|| anyhow::anyhow!("no status endpoint"))?;
    let page = get_text(status, "/metrics").await?;
    assert_eq!(
        metric(&page, "tankwatch_agent_commands_duplicate_total"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        metric(&page, "tankwatch_agent_device_writes_total"),
        Some(1.0)
    );
    let he_page = get_text(s.http, "/metrics").await?;
    assert_eq!(
        metric(&he_page, "tankwatch_headend_commands_sent_total"),
        Some(2.0),
        "sent, then redelivered after the reconnect"
    );
    agent.stop().await?;
    s.he.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eta_and_a_delivery_in_progress_survive_agent_restarts_and_the_load_is_marked_delivered()
-> Result<()> {
    let (s, _) = site("site-e", None, false).await?;
    let agent = s.agent()?;
    s.connected(&agent, "site-e").await?;
    let eta = adapter_api::now_ms() + 3_600_000;
    let (code, l) = post_json(
        s.http,
        "/api/v1/loads",
        &json!({
        "site": "site-e", "reference": "PO-4711", "carrier": "Haulage AG", "tanks": ["tank-1"],
        "product": "diesel", "planned_volume_l": 5000, "eta": eta, "eta_source": "carrier_api"}),
    )
    .await?;
    ensure!(code == 201, "{code}: {l}");
    let load_id = l["load"]["load_id"].as_str().unwrap_or("").to_string();
    let first = l["command"]["command_id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    wait_state(s.http, &first, "active", T).await?;
    // an email ETA does not beat the carrier's: history only, nothing pushed
    let (code, p) = send_json(
        s.http,
        reqwest::Method::PATCH,
        &format!("/api/v1/loads/{load_id}"),
        &json!({"eta": eta + 300_000, "eta_source": "email"}),
    )
    .await?;
    ensure!(
        code == 200 && p["eta_applied"] == false && p["command"].is_null(),
        "{code}: {p}"
    );
    // a manual ETA update supersedes the first push
    let (code, p) = send_json(
        s.http,
        reqwest::Method::PATCH,
        &format!("/api/v1/loads/{load_id}"),
        &json!({"eta": eta + 600_000, "eta_source": "manual"}),
    )
    .await?;
    ensure!(code == 200, "{code}: {p}");
    let second = p["command"]["command_id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    wait_state(s.http, &second, "active", T).await?;
    let f = wait_state(s.http, &first, "completed", T).await?;
    assert_eq!(f["reason"], "superseded");
    let (code, e) = send_json(
        s.http,
        reqwest::Method::PATCH,
        &format!("/api/v1/loads/{load_id}"),
        &json!({"eta": eta}),
    )
    .await?;
    assert_eq!(
        (code, e["error"]["field"].clone()),
        (400, json!("eta_source")),
        "{e}"
    );

    // restart: the agent still knows the delivery
    agent.stop().await?;
    s.sim.set_volume(0, 5000.0); // room for the delivery below

    let agent = s.agent()?;
    let status = agent
        .status_addr
        .ok_or_else(|| anyhow::anyhow!("no status endpoint"))?;
    let st = get_json(status, "/status").await?;
    let d = &st["deliveries"][0];
    assert_eq!(
        (
            d["load_ref"].as_str(),
            d["eta_ms"].as_i64(),
            d["state"].as_str()
        ),
        (
            Some(load_id.as_str()),
            Some(eta + 600_000),
            Some("expected")
        ),
        "{st:#}"
    );

    // the delivery: tank-1 rises by 5000 L over 4 s, then stays
    s.connected(&agent, "site-e").await?;
    tokio::time::sleep(Duration::from_millis(800)).await; // a baseline
    let v0 = s.sim.tanks()[0].volume;
    let sim = s.sim.clone();
    let ramp = tokio::spawn(async move {
        for i in 1..=10 {
            sim.set_volume(0, v0 + 500.0 * f64::from(i));
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    });
    // while it is in progress the pump interlock holds
    eventually("the load delivering", T, || async {
        let l = get_json(s.http, &format!("/api/v1/loads/{load_id}")).await?;
        Ok((l["status"] == "delivering").then_some(()))
    })
    .await?;
    s.expect_rejected(
        json!({"kind": "setpoint", "asset": "ctl-1", "field": "pump_enable", "value": 1}),
        "rejected_interlock",
        "delivery in progress",
    )
    .await?;
    // the agent restarts in the middle of the delivery: its detector
    // resumes (before the fix a fresh one reported a second start, and the
    // delivered volume only from the restart on)
    agent.stop().await?;
    let agent = s.agent()?;
    ramp.await?;
    let l = eventually("the load delivered", T, || async {
        let l = get_json(s.http, &format!("/api/v1/loads/{load_id}")).await?;
        Ok((l["status"] == "delivered").then_some(l))
    })
    .await?;
    let got = l["delivered_volume_l"].as_f64().unwrap_or(0.0);
    assert!(
        (got - 5000.0).abs() < 5000.0 * 0.02,
        "delivered volume {got} L: {l:#}"
    );
    wait_state(s.http, &second, "completed", T).await?;
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM delivery_events WHERE site_id = 'site-e' AND load_id = $1",
    )
    .bind(&load_id)
    .fetch_one(s.he.db.pool())
    .await?;
    assert_eq!(n, 2, "a start and an end event, each stored once");
    agent.stop().await?;
    s.he.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_level_power_limit_is_split_by_capacity_and_applied_on_each_controller() -> Result<()>
{
    let pki = TestPki::new(&["site-s"])?;
    let work = tempfile::tempdir()?;
    let he = e2e::start_headend(headend_config(&pki, &sqlite_url(work.path()), 0)).await?;
    let (sim1, sim2) = (fast_sim().await?, fast_sim().await?);
    let base = agent_yaml(
        &pki,
        "site-s",
        he.grpc_addr,
        &work.path().join("log"),
        &sim1,
        100,
    );
    let setpoints = "  - { asset: ctl-1, field: power_limit, min: 0, max: 80, default: 50 }\n  - { asset: ctl-2, field: power_limit, min: 0, max: 40, default: 20 }\n";
    let yaml = with_controllers(
        &base,
        &[("ctl-1", 100.0, &sim1), ("ctl-2", 50.0, &sim2)],
        setpoints,
        "",
    );
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    let http = he.http_addr;
    eventually("both controllers reporting", T, || async {
        let a = get_json(http, "/api/v1/sites/site-s/assets").await?;
        let good = |id: &str| {
            a.as_array()
                .into_iter()
                .flatten()
                .any(|x| x["asset_id"] == id && x["fields"]["power_limit"]["quality"] == "good")
        };
        Ok((good("ctl-1") && good("ctl-2")).then_some(()))
    })
    .await?;
    let (code, c) = post_json(
        http,
        "/api/v1/commands",
        &json!({"kind": "setpoint", "site": "site-s", "field": "power_limit", "value": 90}),
    )
    .await?;
    ensure!(code == 201, "{code}: {c}");
    assert_eq!(c["kind"], "split");
    assert_eq!(c["policy_version"], "capacity-weighted-v1");
    let shares: Vec<(String, f64)> = c["split"]["shares"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            (
                x["asset_id"].as_str().unwrap_or("").to_string(),
                x["value"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    assert_eq!(
        shares,
        [("ctl-1".to_string(), 60.0), ("ctl-2".to_string(), 30.0)]
    );
    let id = c["command_id"].as_str().unwrap_or("").to_string();
    wait_state(http, &id, "active", T).await?;
    assert_eq!((sim1.power_limit(), sim2.power_limit()), (60.0, 30.0));
    // the parent's state is stored with its children's: filters see it
    let ids = |v: Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["command_id"].as_str().map(str::to_string))
            .collect()
    };
    let active = get_json(http, "/api/v1/commands?site=site-s&state=active").await?;
    assert!(
        ids(active).contains(&id),
        "the split parent is listed as active"
    );
    let submitted = get_json(http, "/api/v1/commands?site=site-s&state=submitted").await?;
    assert!(!ids(submitted).contains(&id), "and no longer as submitted");
    // more than the controllers may take is refused, naming the value
    let (code, e) = post_json(
        http,
        "/api/v1/commands",
        &json!({"kind": "setpoint", "site": "site-s", "field": "power_limit", "value": 200}),
    )
    .await?;
    assert_eq!(
        (code, e["error"]["field"].clone()),
        (422, json!("value")),
        "{e}"
    );
    agent.stop().await?;
    he.stop().await;
    Ok(())
}

/// Issue 9, reconnect through a link that freezes: the proxy between agent
/// and headend stops forwarding on the open connection without closing it
/// (a NAT that forgot it, a dead link with no reset). The agent's HTTP/2
/// keepalive (10 s, 10 s to answer) gives the link up and dials again; the
/// new session takes over, `/sites` shows it, a command goes through it,
/// and the headend's own keepalive closes the frozen connection, all
/// within the 30 s bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_link_is_replaced_by_a_new_session_within_the_keepalive_bound_and_commands_follow()
-> Result<()> {
    const BOUND: Duration = Duration::from_secs(30);
    let (s, proxy) = site("site-f", None, true).await?;
    let proxy = proxy.expect("proxied");
    let agent = s.agent()?;
    s.connected(&agent, "site-f").await?;
    let http = s.http;
    let session = |v: &Value| v[0]["session"]["peer"].as_str().map(str::to_string);
    // the hello's assets are stored a moment before the session is listed
    let before = eventually("the session on /sites", T, || async {
        Ok(session(&get_json(http, "/api/v1/sites").await?))
    })
    .await?;
    let connections = || async {
        Ok::<_, anyhow::Error>(metric(
            &get_text(http, "/metrics").await?,
            "tankwatch_headend_agent_connections",
        ))
    };
    ensure!(connections().await? == Some(1.0));

    proxy.freeze_open();
    let frozen_at = std::time::Instant::now();
    // a new session (another peer port through the proxy) and only one connection left
    eventually(
        "a new session, the frozen connection closed",
        BOUND,
        || async {
            let sites = get_json(http, "/api/v1/sites").await?;
            let fresh =
                sites[0]["connected"] == true && session(&sites).is_some_and(|p| p != before);
            Ok((fresh && connections().await? == Some(1.0)).then_some(()))
        },
    )
    .await?;
    let took = frozen_at.elapsed();
    ensure!(took <= BOUND, "took {took:?}");
    // commands go through the new session
    let (code, c) = s
        .post(json!({"kind": "setpoint", "asset": "ctl-1", "field": "power_limit", "value": 42}))
        .await?;
    ensure!(code == 201, "{code}: {c}");
    let id = c["command_id"].as_str().unwrap_or("").to_string();
    wait_state(http, &id, "active", T).await?;
    assert_eq!(s.sim.power_limit(), 42.0);
    println!("frozen link: new session and the old connection closed {took:?} after the freeze");
    agent.stop().await?;
    s.he.stop().await;
    Ok(())
}

/// Issue 28, item 2: deleting the agent's state file while a temporary
/// setpoint is in force no longer loses its revert (before: the device kept
/// the value and the command stayed `active` for ever). The agent sees its
/// state is gone while its log shows it ran before, says so in its Hello,
/// and the headend sends the active setpoint again; its revert happens when
/// it was due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_state_file_does_not_lose_a_temporary_setpoints_revert() -> Result<()> {
    let (s, _) = site("site-s", None, false).await?;
    let agent = s.agent()?;
    s.connected(&agent, "site-s").await?;
    let (code, c) = s
        .post(json!({"kind": "setpoint", "asset": "site-s/ctl-1", "field": "power_limit", "value": 42, "duration_s": 8}))
        .await?;
    ensure!(code == 201, "{code}: {c}");
    let id = c["command_id"].as_str().unwrap_or_default().to_string();
    wait_state(s.http, &id, "active", T).await?;
    assert_eq!(s.sim.power_limit(), 42.0);
    agent.stop().await?;
    let dir = s.work.path().join("log");
    for f in ["state.sqlite", "state.sqlite-wal", "state.sqlite-shm"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    let agent = s.agent()?;
    let done = wait_state(s.http, &id, "completed", T).await?;
    assert_eq!(
        s.sim.power_limit(),
        50.0,
        "reverted to the default: {done:#}"
    );
    agent.stop().await?;
    Ok(())
}

/// When the command's `sent` event follows its `submitted` one.
fn sent_after(cmd: &Value) -> Option<i64> {
    let at = |state: &str| {
        cmd["timeline"]
            .as_array()?
            .iter()
            .find(|e| e["state"] == state)?["at_ms"]
            .as_i64()
    };
    Some(at("sent")? - at("submitted")?)
}

/// Issue 35: a replica wakes the session another replica holds through
/// PostgreSQL `NOTIFY`; the table is polled only every 30 s, so a command
/// that waited for the poll would take seconds, not milliseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_posted_to_one_replica_is_sent_at_once_by_the_replica_holding_the_session_and_so_is_its_cancel()
-> Result<()> {
    let db = pg::fresh_database().await?;
    across_replicas(&db.url).await?;
    db.drop().await
}

/// The same through PgBouncer in session mode (docs/deploy.md: the mode
/// that keeps `LISTEN`): the notes still wake the other replica's session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_pgbouncer_in_session_mode_a_command_reaches_another_replicas_session_as_fast()
-> Result<()> {
    let db = pg::fresh_database().await?;
    let name = db.url.rsplit('/').next().unwrap_or_default().to_string();
    let bouncer = Pgbouncer::start(&name, "session").await?;
    across_replicas(&bouncer.url()).await?;
    drop(bouncer);
    db.drop().await
}

/// Two replicas on `url`; commands posted to the one without the session.
async fn across_replicas(url: &str) -> Result<()> {
    let _ = tracing_subscriber::fmt().with_env_filter("warn").try_init();
    let (s, _) = site("site-r", Some(url.to_string()), false).await?;
    // the operator's replica; the agent's session is on the site's own
    let b = e2e::start_headend(headend_config(&s._pki, url, 0)).await?;
    let agent = s.agent()?;
    s.connected(&agent, "site-r").await?;
    eventually("both replicas listening", T, || async {
        let (a, b) = (
            get_text(s.http, "/metrics").await?,
            get_text(b.http_addr, "/metrics").await?,
        );
        let up = |p: &str| metric(p, "tankwatch_headend_listening") == Some(1.0);
        Ok((up(&a) && up(&b)).then_some(()))
    })
    .await?;
    // B shows the site connected, on A (where the session is)
    let listed = get_json(b.http_addr, "/api/v1/sites").await?;
    let on_b = &listed[0];
    ensure!(
        on_b["connected"] == true && on_b["session"]["replica"].is_string(),
        "another replica's session shows as connected there: {on_b}"
    );
    let mut delays = Vec::new();
    let mut last = String::new();
    for i in 0..10 {
        let (code, c) = post_json(
            b.http_addr,
            "/api/v1/commands",
            &json!({"kind": "setpoint", "asset": "site-r/ctl-1", "field": "power_limit", "value": 20 + i, "duration_s": 600}),
        )
        .await?;
        ensure!(code == 201, "{code}: {c}");
        last = c["command_id"].as_str().unwrap_or_default().to_string();
        let active = wait_state(b.http_addr, &last, "active", T).await?;
        delays.push(sent_after(&active).unwrap_or(i64::MAX));
    }
    delays.sort();
    eprintln!("submitted on B -> sent by A (ms): {delays:?}");
    ensure!(
        delays[delays.len() - 1] < 500,
        "each command sent within 500 ms of its submit on another replica: {delays:?}"
    );
    assert_eq!(s.sim.power_limit(), 29.0, "the last one is in force");
    let page = get_text(s.http, "/metrics").await?;
    let peer = metric(
        &page,
        "tankwatch_headend_dispatch_wakes_total{cause=\"peer\"}",
    );
    ensure!(
        peer.is_some_and(|n| n >= 10.0),
        "A's session woken by B's notes: {peer:?}"
    );
    // a cancel through B reaches the session on A as fast
    let t0 = std::time::Instant::now();
    let (code, r) = post_json(
        b.http_addr,
        &format!("/api/v1/commands/{last}/cancel"),
        &json!({}),
    )
    .await?;
    ensure!(code == 202, "{code}: {r}");
    wait_state(b.http_addr, &last, "cancelled", T).await?;
    let took = t0.elapsed();
    eprintln!("cancel on B -> cancelled on the device through A: {took:?}");
    ensure!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(s.sim.power_limit(), 50.0, "reverted to the default");
    agent.stop().await?;
    s.he.stop().await;
    b.stop().await;
    Ok(())
}

//! Issue 29, item 12: GasPot 2.2.0 (a widely used TLS-350 emulator, not on
//! PyPI, vendored as `tests/peers/gaspot.py` under CC0) as a second
//! independent Veeder-Root peer, display format. Before the fix its date
//! line (`12/04/2026 18:39`) made the whole inventory unreadable (0
//! readings, the device shown connected) and its I205 layout (`TANK
//! PRODUCT STATUS`) was refused.
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Result;
use e2e::*;

struct Peer(Child);
impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaspots_inventory_and_tank_status_are_read_in_the_display_format() -> Result<()> {
    let work = tempfile::tempdir()?;
    let port = free_port();
    std::fs::write(
        work.path().join("config.ini"),
        format!(
            "[host]\ntcp_ip = 127.0.0.1\ntcp_port = {port}\nbuffer_size = 1024\n\n[products]\nproduct1 = SUPER\nproduct2 = UNLEAD\nproduct3 = DIESEL\nproduct4 = PREMIUM\n\n[stations]\nlist = ['EXXON STATION\\n    12 Fake St\\n    Anytown, MO 12346']\n\n[parameters]\nlow_temperature = 50\nhigh_temperature = 60\nmin_h2o = 0\nmax_h2o = 9\nmin_height = 25\nmax_height = 75\nmin_vol = 1000\nmax_vol = 9050\nmin_ullage = 3000\nmax_ullage = 9999\n"
        ),
    )?;
    let _peer = Peer(
        Command::new("python3")
            .arg(peer_script("gaspot.py"))
            .args(["--config", "config.ini", "--log", "gaspot.log", "--quiet"])
            .current_dir(work.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    eventually("GasPot listens", Duration::from_secs(20), || async {
        Ok(tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ()))
    })
    .await?;

    let pki = TestPki::new(&["site-g"])?;
    let he = e2e::start_headend(headend_config(&pki, &sqlite_url(work.path()), 0)).await?;
    let head = agent_head(
        &pki,
        "site-g",
        he.grpc_addr,
        &work.path().join("log"),
        "127.0.0.1:0",
    );
    let yaml = format!(
        "{head}assets:\n  - {{ id: tank-1, kind: tank, capacity: 12000, capacity_unit: gal }}\n  - {{ id: tank-2, kind: tank, capacity: 12000, capacity_unit: gal }}\ndevices:\n  - veeder_root:\n      name: gaspot\n      address: \"127.0.0.1:{port}\"\n      format: display\n      timezone: America/Chicago\n      poll_interval_ms: 1000\n      delivery_poll_ms: 0\n      timeout_ms: 3000\n      points:\n        - {{ tank: 1, item: volume, asset: tank-1, field: volume, unit: gal }}\n        - {{ tank: 1, item: water, asset: tank-1, field: water_height, unit: in }}\n        - {{ tank: 2, item: volume, asset: tank-2, field: volume, unit: gal }}\n        - {{ tank: 1, item: alarm.high_water, asset: tank-1, field: alarm.water, unit: bool, class: alarm }}\n        - {{ tank: 2, item: alarm.count, asset: tank-2, field: alarm.count, class: alarm }}\n"
    );
    let agent = edge_agent::start(agent_config(work.path(), &yaml)?)?;
    let http = he.http_addr;
    for (asset, field) in [
        ("tank-1", "volume"),
        ("tank-2", "volume"),
        ("tank-1", "water_height"),
        ("tank-1", "alarm.water"),
        ("tank-2", "alarm.count"),
    ] {
        let v = eventually(
            &format!("{asset}.{field} from GasPot"),
            Duration::from_secs(30),
            || async { latest_value(http, "site-g", asset, field).await },
        )
        .await?;
        assert!(v.is_finite() && v >= 0.0, "{asset}.{field} = {v}");
        if field == "volume" {
            // GasPot's tanks hold up to about 12,000 gal: litres here
            assert!((100.0..=60_000.0).contains(&v), "{asset}.{field} = {v} L");
        }
    }
    let st = get_json(agent.status_addr.expect("status"), "/status").await?;
    let dev = &st["devices"]["gaspot"];
    assert_eq!(dev["connected"], serde_json::json!(true), "{dev}");
    assert_eq!(
        dev["malformed"],
        serde_json::json!(0),
        "every reply read: {dev}"
    );
    agent.stop().await?;
    he.stop().await;
    Ok(())
}

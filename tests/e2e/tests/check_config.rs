//! `edge-agent check-config` names the line, the column and the problem.
use std::process::Command;

use anyhow::Result;
use e2e::*;

const GOOD: &str = r#"site_id: site-c
headend:
  address: 127.0.0.1:7443
tls:
  cert: agent-site-c.pem
  key: agent-site-c.key
  ca: ca.pem
assets:
  - { id: tank-1, kind: tank, capacity: 20000 }
devices:
  - modbus:
      name: atg
      address: 127.0.0.1:502
      points:
        - { asset: tank-1, field: volume, register: 0, type: f32, unit: L }
"#;

fn check(dir: &std::path::Path, text: &str) -> Result<(i32, String, String)> {
    let p = dir.join("site.yaml");
    std::fs::write(&p, text)?;
    let out = Command::new(bin("edge-agent"))
        .arg("check-config")
        .arg(&p)
        .output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn check_config_accepts_a_good_file_and_points_at_each_broken_line() -> Result<()> {
    let pki = TestPki::new(&["site-c"])?;
    let dir = pki.path();
    let (code, out, err) = check(dir, GOOD)?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ok (site site-c, 1 assets, 1 devices)"),
        "{out}"
    );

    let cases = [
        // (broken text, expected "file:line:col", expected words)
        (
            GOOD.replace(
                "      address: 127.0.0.1:502",
                "      adress: 127.0.0.1:502",
            ),
            ":13:7",
            "unknown field `adress`",
        ),
        (
            GOOD.replace("register: 0", "register: -4"),
            ":15:53",
            "expected u16",
        ),
        (
            GOOD.replace("type: f32", "type: float"),
            ":15:",
            "unknown variant `float`",
        ),
        (
            GOOD.replace("asset: tank-1", "asset: tank-2"),
            ":15:",
            "not declared under `assets`",
        ),
        (
            GOOD.replace("site_id: site-c", "site_id: Site C"),
            ":1:",
            "lowercase",
        ),
        (
            GOOD.replace("ca: ca.pem", "ca: missing.pem"),
            ":7:",
            "does not exist",
        ),
        (
            GOOD.replace("  - { id: tank-1", "  - { id: tank-1 ,"),
            "",
            "site.yaml",
        ),
    ];
    for (text, at, words) in cases {
        let (code, _, err) = check(dir, &text)?;
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(&format!("site.yaml{at}")),
            "expected position {at} in: {err}"
        );
        assert!(err.contains(words), "expected {words:?} in: {err}");
    }
    Ok(())
}

#[test]
fn the_shipped_mqtt_example_config_is_valid() -> Result<()> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/site-mqtt.yaml");
    let cfg =
        edge_agent::config::parse("configs/site-mqtt.yaml", &std::fs::read_to_string(&path)?)?;
    assert_eq!(cfg.devices[0].kind(), "mqtt");
    assert_eq!(
        cfg.device_of_writable("tank-2", "fill_limit"),
        Some("site-broker"),
        "a writable Sparkplug metric"
    );
    Ok(())
}

#[test]
fn the_shipped_opcua_example_config_is_valid() -> Result<()> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/site-opcua.yaml");
    let cfg =
        edge_agent::config::parse("configs/site-opcua.yaml", &std::fs::read_to_string(&path)?)?;
    assert_eq!(cfg.devices[0].kind(), "opcua");
    assert_eq!(cfg.device_of_writable("ctl-1", "power_limit"), Some("plc"));
    Ok(())
}

#[test]
fn the_shipped_demo_config_is_valid_and_matches_the_simulator() -> Result<()> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/site-demo.yaml");
    let text = std::fs::read_to_string(&path)?;
    let cfg = edge_agent::config::parse("configs/site-demo.yaml", &text)?;
    let modbus = |name: &str| {
        cfg.devices
            .iter()
            .find_map(|d| match d {
                edge_agent::config::DeviceConfig::Modbus(m) if m.name == name => Some(m),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no device {name}"))
    };
    let m = modbus("atg");
    assert_eq!(
        m.address, "127.0.0.1:5020",
        "the demo script starts atg-sim there"
    );
    // the controller's writable points sit on the simulator's controller block
    let c = modbus("controller");
    let reg = |f: &str| {
        c.points
            .iter()
            .find(|p| p.field == f && p.writable)
            .map(|p| p.register)
    };
    assert_eq!(reg("pump_enable"), Some(atg_sim::CONTROLLER_BASE));
    assert_eq!(reg("power_limit"), Some(atg_sim::CONTROLLER_BASE + 2));
    assert_eq!(cfg.setpoints.len(), 2, "both writable points have limits");
    // every simulator field of every tank is mapped at its documented register
    let tanks = cfg
        .assets
        .iter()
        .filter(|a| a.kind == edge_agent::config::AssetKind::Tank);
    let vr = cfg
        .devices
        .iter()
        .find_map(|d| match d {
            edge_agent::config::DeviceConfig::VeederRoot(v) => Some(v),
            _ => None,
        })
        .expect("a veeder_root device");
    assert_eq!(
        vr.address, "127.0.0.1:10001",
        "the demo script starts the console there"
    );
    for (i, asset) in tanks.enumerate() {
        if asset.id == "tank-4" {
            // read from the simulator's Veeder-Root console instead, tank 4
            let items: Vec<String> = vr
                .points
                .iter()
                .filter(|p| p.asset == asset.id)
                .map(|p| {
                    assert_eq!(p.tank, 4);
                    p.item.name()
                })
                .collect();
            assert!(items.contains(&"volume".to_string()), "{items:?}");
            assert_eq!(items.len(), 9, "{items:?}");
            continue;
        }
        for (field, off, unit) in atg_sim::FIELDS.iter().filter(|f| f.0 != "capacity") {
            let p = m
                .points
                .iter()
                .find(|p| p.asset == asset.id && p.field == *field)
                .unwrap_or_else(|| panic!("{}.{field} is not mapped", asset.id));
            assert_eq!(p.register, i as u16 * atg_sim::TANK_STRIDE + off);
            assert_eq!(p.unit, *unit);
        }
    }
    Ok(())
}

#[test]
fn the_shipped_veeder_root_example_config_is_valid() -> Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs/site-veeder-root.yaml");
    let cfg = edge_agent::config::parse(
        "configs/site-veeder-root.yaml",
        &std::fs::read_to_string(&path)?,
    )?;
    assert_eq!(cfg.devices.len(), 1);
    assert_eq!(cfg.devices[0].kind(), "veeder_root");
    assert_eq!(cfg.devices[0].points().len(), 19);
    Ok(())
}

#[test]
fn the_shipped_opcua_server_example_config_is_valid() -> Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs/site-opcua-server.yaml");
    let cfg = edge_agent::config::parse(
        "configs/site-opcua-server.yaml",
        &std::fs::read_to_string(&path)?,
    )?;
    let o = cfg.opcua_server.as_ref().expect("the section");
    assert_eq!(o.users.len(), 2);
    assert!(!o.security.contains(&agent_opcua_server::Security::None));
    Ok(())
}

#[test]
fn an_opcua_server_section_with_a_plain_password_is_refused_with_its_line() -> Result<()> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs/site-opcua-server.yaml");
    let text = std::fs::read_to_string(&path)?.replacen(
        "password_hash: \"$argon2id$v=19$m=19456,t=2,p=1$uR9HF6QlZdVkpVapwVT+mA$cLpUbHNHPHAIb/r34oZONXIQvNWNJHKWTNyMQPzf0+I\"",
        "password_hash: hunter22",
        1,
    );
    let e = edge_agent::config::parse("site.yaml", &text).expect_err("a plain password");
    assert!(
        e.msg.contains("opcua_server.password_hash") && e.msg.contains("edge-agent opcua-password"),
        "{e}"
    );
    let line = text
        .lines()
        .position(|l| l.contains("hunter22"))
        .map(|i| i + 1);
    assert_eq!(e.line, line, "{e}");
    Ok(())
}

//! Reading a configuration: the file, the YAML guard, serde with the
//! line and column of the first problem, then the checks serde cannot do
//! (cross-references, ranges between keys, the OPC UA server's plan), each
//! pointing at the line of the key at fault.

use std::collections::HashSet;
use std::path::Path;

use super::{AgentConfig, ConfigError};

/// Finds where `key: value` (or `key: "value"`) first appears, for errors
/// that serde cannot place (cross-references).
fn locate(text: &str, key: &str, value: &str) -> (Option<usize>, Option<usize>) {
    for (i, line) in text.lines().enumerate() {
        let mut from = 0;
        while let Some(pos) = line[from..].find(key) {
            let at = from + pos;
            let rest = line[at + key.len()..].trim_start();
            if let Some(rest) = rest.strip_prefix(':') {
                let v = rest.trim_start().trim_start_matches(['"', '\'']);
                if v.starts_with(value) {
                    return (Some(i + 1), Some(at + 1));
                }
            }
            from = at + key.len();
        }
    }
    (None, None)
}

/// Reads, parses and validates a configuration file; the `tls:` files must exist.
pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
    load_with(path, true)
}

/// As [`load`], for `edge-agent enroll`, which writes the `tls:` files.
pub fn load_for_enroll(path: &Path) -> Result<AgentConfig, ConfigError> {
    load_with(path, false)
}

fn load_with(path: &Path, tls_must_exist: bool) -> Result<AgentConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: None,
        column: None,
        msg: format!("cannot read: {e}"),
    })?;
    let mut cfg = parse(&file, &text)?;
    let base = path.parent().unwrap_or(Path::new("."));
    for p in [
        &mut cfg.tls.cert,
        &mut cfg.tls.key,
        &mut cfg.tls.ca,
        &mut cfg.log.dir,
    ]
    .into_iter()
    .chain(cfg.opcua_server.as_mut().map(|o| &mut o.pki_dir))
    {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
    for d in &mut cfg.devices {
        d.resolve_paths(base);
    }
    for (key, p) in [
        ("cert", &cfg.tls.cert),
        ("key", &cfg.tls.key),
        ("ca", &cfg.tls.ca),
    ] {
        if tls_must_exist && !p.exists() {
            let (line, column) = locate(&text, key, "");
            return Err(ConfigError {
                file,
                line,
                column,
                msg: format!(
                    "tls.{key}: file {} does not exist (enroll the agent: `edge-agent enroll --config FILE --headend HOST:7444 --token … --ca-fingerprint …`, see docs/enrollment.md)",
                    p.display()
                ),
            });
        }
    }
    Ok(cfg)
}

/// Parses and validates configuration text (no file system checks).
pub fn parse(file: &str, text: &str) -> Result<AgentConfig, ConfigError> {
    crate::yamlguard::check(text).map_err(|r| ConfigError {
        file: file.to_string(),
        line: Some(r.line),
        column: Some(r.column),
        msg: r.msg,
    })?;
    let cfg: AgentConfig = serde_yaml::from_str(text)
        .map_err(|e| {
            let loc = e.location();
            ConfigError {
                file: file.to_string(),
                line: loc.as_ref().map(|l| l.line()),
                column: loc.as_ref().map(|l| l.column()),
                // serde_yaml appends "at line X column Y"; we print it in front instead
                msg: e
                    .to_string()
                    .split(" at line ")
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            }
        })
        .map_err(|mut e| {
            // serde_yaml places custom (range) errors at the enclosing map; point at the key instead
            if let Some((key, v)) = e
                .msg
                .split_once(" is out of range")
                .and_then(|(head, _)| head.rsplit_once(": "))
                .and_then(|(path, v)| Some((path.rsplit([' ', '.']).next()?, v)))
                && let (Some(l), c) = locate(text, key, v)
            {
                e.line = Some(l);
                e.column = c;
            }
            e
        })?;
    let at = At { file, text };
    check_headend(&cfg, &at)?;
    let ids = check_assets(&cfg, &at)?;
    check_devices(&cfg, &ids, &at)?;
    check_actions(&cfg, &at)?;
    Ok(cfg)
}

/// Where a key is in the configuration text, for an error that names its line.
struct At<'a> {
    file: &'a str,
    text: &'a str,
}

impl At<'_> {
    fn err(&self, key: &str, value: &str, msg: String) -> ConfigError {
        // a value written with escapes is not found as decoded: then the key's first place
        let (line, column) = match locate(self.text, key, value) {
            (None, _) => locate(self.text, key, ""),
            found => found,
        };
        ConfigError {
            file: self.file.to_string(),
            line,
            column,
            msg,
        }
    }
}

/// The site id, the headend's address and the uplink's backoff.
fn check_headend(cfg: &AgentConfig, at: &At) -> Result<(), ConfigError> {
    let err = |key: &str, value: &str, msg: String| at.err(key, value, msg);
    tankwatch_tls::validate_site_id(&cfg.site_id)
        .map_err(|e| err("site_id", &cfg.site_id, format!("site_id: {e}")))?;
    let addrs = cfg.headend.address.list();
    if addrs.is_empty() || addrs.len() > crate::config::Addresses::MAX {
        return Err(err(
            "address",
            "",
            format!(
                "headend.address: {} addresses; give 1 to {}",
                addrs.len(),
                crate::config::Addresses::MAX
            ),
        ));
    }
    for (i, a) in addrs.iter().enumerate() {
        if let Err(e) = adapter_api::validate::host_port(a) {
            return Err(err(
                "address",
                a,
                format!("headend.address {a:?}: {e} (e.g. headend.example.com:7443)"),
            ));
        }
        if addrs[..i].contains(a) {
            return Err(err(
                "address",
                a,
                format!("headend.address {a:?} is listed twice"),
            ));
        }
    }
    if let Some(n) = &cfg.headend.server_name {
        adapter_api::validate::dns_name(n)
            .or_else(|e| n.parse::<std::net::IpAddr>().map(|_| ()).map_err(|_| e))
            .map_err(|e| err("server_name", n, format!("headend.server_name: {e}")))?;
    }
    if cfg.uplink.backoff_initial_ms > cfg.uplink.backoff_max_ms {
        return Err(err(
            "backoff_initial_ms",
            "",
            format!(
                "uplink.backoff_initial_ms ({}) is above backoff_max_ms ({})",
                cfg.uplink.backoff_initial_ms, cfg.uplink.backoff_max_ms
            ),
        ));
    }
    Ok(())
}

/// Each asset: its id once, its texts, its capacity and unit. Returns the ids.
fn check_assets<'c>(cfg: &'c AgentConfig, at: &At) -> Result<HashSet<&'c str>, ConfigError> {
    let err = |key: &str, value: &str, msg: String| at.err(key, value, msg);
    let mut ids = HashSet::new();
    for a in &cfg.assets {
        adapter_api::validate::ident(&a.id)
            .map_err(|e| err("id", &a.id, format!("assets: id {e}")))?;
        if a.id == crate::selfwatch::ASSET {
            return Err(err(
                "id",
                &a.id,
                format!(
                    "assets: id {:?} is reserved for the agent's own conditions (alarms of the agent itself); rename the asset",
                    a.id
                ),
            ));
        }
        for (key, v) in [
            ("name", &a.name),
            ("product", &a.product),
            ("capacity_unit", &a.capacity_unit),
        ] {
            adapter_api::validate::text(v)
                .map_err(|e| err(key, v, format!("assets: {}: {key} {e}", a.id)))?;
        }
        for (k, v) in &a.details {
            adapter_api::validate::text(k)
                .and_then(|_| adapter_api::validate::text(v))
                .map_err(|e| err(k, v, format!("assets: {}: details.{k}: {e}", a.id)))?;
        }
        adapter_api::validate::finite_in(a.capacity, 0.0, 1e9)
            .map_err(|e| err("capacity", "", format!("assets: {}: capacity {e}", a.id)))?;
        // a unit the agent cannot convert would reach the headend as text
        // it does not know (a tank missing from every list, issue 27)
        let volume = |u: &str| adapter_api::units::conversion(u).is_some_and(|(c, _, _)| c == "L");
        let unit = a.capacity_unit.as_str();
        if a.kind == crate::config::AssetKind::Tank && !volume(unit) {
            let choices: Vec<&str> = adapter_api::units::KNOWN
                .iter()
                .copied()
                .filter(|u| volume(u))
                .collect();
            return Err(err(
                "capacity_unit",
                unit,
                format!(
                    "assets: {}: capacity_unit {unit:?} is not a volume unit; use one of {}",
                    a.id,
                    choices.join(", ")
                ),
            ));
        }
        if adapter_api::units::conversion(unit).is_none() {
            return Err(err(
                "capacity_unit",
                unit,
                format!(
                    "assets: {}: capacity_unit {unit:?} is not a unit this agent knows; use one of {}",
                    a.id,
                    adapter_api::units::KNOWN
                        .iter()
                        .filter(|u| !u.is_empty())
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if !ids.insert(a.id.as_str()) {
            return Err(err(
                "id",
                &a.id,
                format!("assets: id {:?} is declared twice", a.id),
            ));
        }
    }
    Ok(ids)
}

/// Each device: its name once, its own checks, each point on a declared
/// asset and each asset field from one source.
fn check_devices(cfg: &AgentConfig, ids: &HashSet<&str>, at: &At) -> Result<(), ConfigError> {
    let err = |key: &str, value: &str, msg: String| at.err(key, value, msg);
    let mut names = HashSet::new();
    let mut points = HashSet::new();
    for d in &cfg.devices {
        if !names.insert(d.name()) {
            return Err(err(
                "name",
                d.name(),
                format!("devices: name {:?} is used twice", d.name()),
            ));
        }
        adapter_api::validate::ident(d.name())
            .map_err(|e| err("name", d.name(), format!("devices: name {e}")))?;
        d.validate().map_err(|e| err("name", d.name(), e))?;
        for p in d.points() {
            if !ids.contains(p.asset.as_str()) {
                return Err(err(
                    "asset",
                    &p.asset,
                    format!(
                        "device {:?}: point {}.{} names asset {:?}, which is not declared under `assets` (declared: {})",
                        d.name(),
                        p.asset,
                        p.field,
                        p.asset,
                        cfg.assets
                            .iter()
                            .map(|a| a.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            if !points.insert((p.asset.clone(), p.field.clone())) {
                return Err(err(
                    "field",
                    &p.field,
                    format!(
                        "{}.{} is mapped twice; each asset field must have one source",
                        p.asset, p.field
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Deliveries, setpoints and the OPC UA server.
fn check_actions(cfg: &AgentConfig, at: &At) -> Result<(), ConfigError> {
    let err = |key: &str, value: &str, msg: String| at.err(key, value, msg);
    let d = &cfg.deliveries;
    if !(d.min_rise_l > 0.0 && d.noise_l >= 0.0 && d.settle_ms > 0 && d.window_ms > 0) {
        return Err(err(
            "deliveries",
            "",
            "deliveries: min_rise_l, settle_ms and window_ms must be > 0 and noise_l >= 0".into(),
        ));
    }
    for sp in &cfg.setpoints {
        if cfg.device_of_writable(&sp.asset, &sp.field).is_none() {
            return Err(err(
                "field",
                &sp.field,
                format!(
                    "setpoints: {}.{} is not a writable point of any device (mark its point `writable: true`)",
                    sp.asset, sp.field
                ),
            ));
        }
        if let (Some(lo), Some(hi)) = (sp.min, sp.max)
            && lo > hi
        {
            return Err(err(
                "min",
                "",
                format!(
                    "setpoints: {}.{}: min {lo} is above max {hi}",
                    sp.asset, sp.field
                ),
            ));
        }
    }
    if let Some(o) = &cfg.opcua_server {
        o.validate()
            .map_err(|p| err(p.key, &p.value, p.to_string()))?;
        agent_opcua_server::model::plan(&crate::opcua::site_model(cfg))
            .map_err(|e| err("opcua_server", "", format!("opcua_server: {e}")))?;
    }
    Ok(())
}

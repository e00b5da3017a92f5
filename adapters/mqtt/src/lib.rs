//! MQTT adapter on rumqttc: plain-number, JSON and Sparkplug B payloads
//! mapped to readings; writes by command topic or Sparkplug NCMD/DCMD, each
//! confirmed by the value the device publishes next.
//!
//! A push adapter: the broker decides the rate. The MQTT event loop runs in
//! its own task and is never made to wait (a stalled loop misses its
//! keepalives and the broker drops the client): it hands publishes to the
//! session through a bounded queue ([`INBOX`]). QoS 0: it sheds when that
//! is full, and the session sends readings with the shedding sink; every
//! shed run becomes a gap record. QoS 1 (issue 29, item 11): nothing is
//! shed; acknowledgements are manual, sent as a message enters the inbox
//! and held back while the inbox is full (the session waits on the agent),
//! so what the agent cannot take yet waits at the broker (its in-flight
//! window, then its queue: mosquitto's `max_queued_messages`). Malformed payloads (bad
//! JSON, not a number, unknown Sparkplug aliases, over `max_payload_bytes`)
//! are counted, logged at most every 10 s, and turn the affected point bad
//! (an oversized one is skipped); the connection is kept. A retained value
//! without a time of its own is uncertain (its age is unknown).
//!
//! Pure parts: [`topic`] (filters), [`json`] (paths, timestamps),
//! [`sparkplug`] (birth/death/seq/rebirth state). The rest is the shell.

mod broker;
pub mod config;
pub mod json;
pub mod probe;
mod pump;
pub mod sparkplug;
mod tls;
pub mod topic;

use adapter_api::runner::{self, Io, Points, Retry};
use adapter_api::{Adapter, AdapterError, BoxFuture, PointSpec, Sink, Stop, WhenFull, WriteRx};

pub use config::MqttDevice;

/// Publishes waiting between the MQTT event loop and the session; when
/// full, the event loop sheds (counted, then a gap record).
pub const INBOX: usize = 4096;

/// Topic filters per SUBSCRIBE packet.
pub(crate) const SUBSCRIBE_CHUNK: usize = 100;

/// A malformed payload is logged at most this often per device.
pub(crate) const MALFORMED_LOG_EVERY_MS: i64 = 10_000;

/// Configuration errors (broker and device failures become readings).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("device {device}: {detail}")]
    Config { device: String, detail: String },
    #[error("device {device}: point {point}: {detail}")]
    Point {
        device: String,
        point: String,
        detail: String,
    },
}

impl From<Error> for AdapterError {
    fn from(e: Error) -> Self {
        AdapterError::Config {
            adapter: "mqtt".into(),
            detail: e.to_string(),
        }
    }
}

/// `(tls, host, port)` of an `mqtt://` or `mqtts://` URL.
pub fn parse_url(url: &str) -> Result<(bool, String, u16), String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else {
        return Err(format!(
            "url {url:?}: use mqtt://host:port or mqtts://host:port"
        ));
    };
    let rest = rest.trim_end_matches('/');
    let hp = if rest.contains(':') || rest.starts_with('[') {
        rest.to_string()
    } else {
        format!("{rest}:{}", if tls { 8883 } else { 1883 })
    };
    adapter_api::validate::host_port(&hp).map_err(|e| format!("url {url:?}: {e}"))?;
    let (host, port) = hp.rsplit_once(':').unwrap_or((&hp, "1883"));
    let port = port.parse().map_err(|_| format!("url {url:?}: bad port"))?;
    Ok((tls, host.trim_matches(['[', ']']).to_string(), port))
}

/// Checks what serde cannot: the URL, TLS files named, filters, each
/// point's source (topic xor metric) and mapping.
pub fn validate(dev: &MqttDevice) -> Result<(), Error> {
    let cfg = |detail: String| Error::Config {
        device: dev.name.clone(),
        detail,
    };
    let (tls, _, _) = parse_url(&dev.url).map_err(cfg)?;
    if tls != dev.tls.is_some() {
        return Err(cfg(if tls {
            "an mqtts:// url needs a `tls:` section with at least `ca`".into()
        } else {
            "a `tls:` section needs an mqtts:// url".into()
        }));
    }
    if let Some(t) = &dev.tls
        && t.cert.is_some() != t.key.is_some()
    {
        return Err(cfg("tls: give both `cert` and `key`, or neither".into()));
    }
    if dev.password_file.is_some() && dev.username.is_none() {
        return Err(cfg("password_file needs a username".into()));
    }
    if let Some(id) = &dev.client_id {
        adapter_api::validate::text(id).map_err(|e| cfg(format!("client_id {e}")))?;
    }
    if let Some(s) = &dev.sparkplug {
        for (k, v) in [
            ("group_id", Some(&s.group_id)),
            ("edge_node_id", Some(&s.edge_node_id)),
            ("device_id", s.device_id.as_ref()),
            ("host_id", s.host_id.as_ref()),
        ] {
            if let Some(v) = v
                && (v.is_empty()
                    || v.contains(['/', '+', '#'])
                    || adapter_api::validate::text(v).is_err())
            {
                return Err(cfg(format!(
                    "sparkplug.{k} {v:?}: use text without '/', '+' or '#'"
                )));
            }
        }
    }
    if dev.points.is_empty() {
        return Err(cfg("has no points; add at least one under `points`".into()));
    }
    for (index, p) in dev.points.iter().enumerate() {
        let perr = |detail: String| Error::Point {
            device: dev.name.clone(),
            point: format!("{index} ({}.{})", p.asset, p.field),
            detail,
        };
        p.check_mapping().map_err(perr)?;
        match (&p.topic, &p.metric) {
            (Some(t), None) => {
                topic::check_filter(t).map_err(perr)?;
                if p.writable {
                    let c = p.command_topic.as_ref().ok_or_else(|| {
                        perr("a writable topic point needs `command_topic`".into())
                    })?;
                    topic::check_name(c).map_err(perr)?;
                }
                if p.command_topic.is_some() && !p.writable {
                    return Err(perr(
                        "`command_topic` is set but the point is not `writable: true`".into(),
                    ));
                }
            }
            (None, Some(m)) => {
                if dev.sparkplug.is_none() {
                    return Err(perr(format!(
                        "metric {m:?} needs the device's `sparkplug:` section"
                    )));
                }
                if p.json_path.is_some() || p.ts_path.is_some() || p.command_topic.is_some() {
                    return Err(perr("json_path, ts_path and command_topic belong to `topic` points, not `metric` ones".into()));
                }
                adapter_api::validate::text(m).map_err(|e| perr(format!("metric {e}")))?;
            }
            _ => return Err(perr("give either `topic` or `metric` (one of them)".into())),
        }
        if p.ts_path.is_some() && p.json_path.is_none() {
            return Err(perr("ts_path needs json_path (a JSON payload)".into()));
        }
    }
    Ok(())
}

/// The protocol-free points, in config order.
pub fn specs(dev: &MqttDevice) -> Vec<PointSpec> {
    let (_, host, port) = parse_url(&dev.url).unwrap_or((false, String::new(), 0));
    dev.points
        .iter()
        .map(|p| {
            let addr = match (&p.topic, &p.metric, &dev.sparkplug) {
                (Some(t), _, _) => t.clone(),
                (None, Some(m), Some(s)) => format!(
                    "spBv1.0/{}/{}{}#{m}",
                    s.group_id,
                    s.edge_node_id,
                    s.device_id
                        .as_ref()
                        .map(|d| format!("/{d}"))
                        .unwrap_or_default()
                ),
                _ => String::new(),
            };
            p.spec(format!("mqtt://{host}:{port}/{addr}"))
        })
        .collect()
}

/// The adapter for one broker connection.
pub struct MqttAdapter {
    dev: MqttDevice,
}

impl MqttAdapter {
    pub fn new(dev: MqttDevice) -> Result<Self, Error> {
        validate(&dev)?;
        Ok(Self { dev })
    }
}

impl Adapter for MqttAdapter {
    fn kind(&self) -> &'static str {
        "mqtt"
    }
    fn name(&self) -> &str {
        &self.dev.name
    }
    fn points(&self) -> Vec<PointSpec> {
        specs(&self.dev)
    }
    /// QoS 0: a push adapter that sheds and counts rather than stall the
    /// broker link. QoS 1: waits, holding its acknowledgements, so the
    /// broker holds what the agent cannot take yet (its in-flight window);
    /// the link itself never waits (the event loop runs on its own task).
    fn when_full(&self) -> WhenFull {
        if self.dev.qos == 0 {
            WhenFull::Shed
        } else {
            WhenFull::Block
        }
    }
    fn run(
        self: Box<Self>,
        sink: Sink,
        writes: WriteRx,
        stop: Stop,
    ) -> BoxFuture<Result<(), AdapterError>> {
        let retry = Retry {
            initial_ms: 500,
            max_ms: self.dev.max_backoff_ms,
        };
        let io = Io::new(sink, Points::new(specs(&self.dev)), writes, stop);
        Box::pin(runner::run(broker::Broker::new(self.dev), io, retry))
    }
}

/// Value and device time of a `topic` point from a plain or JSON payload
/// (`now` when the payload has no timestamp).
pub fn decode(p: &config::Point, payload: &[u8], now: i64) -> Result<(f64, i64), String> {
    let text = std::str::from_utf8(payload).map_err(|_| "not UTF-8".to_string())?;
    match &p.json_path {
        None => match text.trim() {
            "true" => Ok((1.0, now)),
            "false" => Ok((0.0, now)),
            t => t
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .map(|v| (v, now))
                .ok_or_else(|| format!("{:?} is not a number", truncate(t))),
        },
        Some(path) => {
            let v: serde_json::Value =
                serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
            let x = json::at(&v, path).ok_or_else(|| format!("JSON has no {path:?}"))?;
            let x = json::number(x).ok_or_else(|| format!("{path:?} is not a number"))?;
            let ts = match &p.ts_path {
                Some(tp) => json::at(&v, tp)
                    .and_then(json::timestamp)
                    .ok_or_else(|| format!("{tp:?} is not a timestamp (Unix ms or RFC 3339)"))?,
                None => now,
            };
            Ok((x, ts))
        }
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(yaml: &str) -> MqttDevice {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn urls_default_their_port_by_scheme() {
        assert_eq!(
            parse_url("mqtt://broker").unwrap(),
            (false, "broker".into(), 1883)
        );
        assert_eq!(
            parse_url("mqtts://10.0.0.2").unwrap(),
            (true, "10.0.0.2".into(), 8883)
        );
        assert_eq!(
            parse_url("mqtt://[::1]:1884").unwrap(),
            (false, "::1".into(), 1884)
        );
        for bad in ["tcp://x:1883", "mqtt://", "mqtt://a b:1883", "mqtt://x:0"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_point_names_one_source_and_writes_need_a_command_route() {
        let base = "name: b\nurl: mqtt://127.0.0.1:1883\npoints:\n";
        let ok = dev(&format!(
            "{base}  - {{ topic: 'x/+/v', asset: t, field: volume, unit: gal }}\n"
        ));
        assert!(validate(&ok).is_ok());
        assert_eq!(specs(&ok)[0].source, "mqtt://127.0.0.1:1883/x/+/v");
        for (p, want) in [
            ("{ asset: t, field: v }", "either `topic` or `metric`"),
            (
                "{ topic: a, metric: m, asset: t, field: v }",
                "either `topic` or `metric`",
            ),
            ("{ metric: m, asset: t, field: v }", "sparkplug"),
            ("{ topic: 'a/#/b', asset: t, field: v }", "'#'"),
            (
                "{ topic: a, asset: t, field: v, writable: true }",
                "command_topic",
            ),
            (
                "{ topic: a, asset: t, field: v, command_topic: b }",
                "not `writable",
            ),
            (
                "{ topic: a, asset: t, field: v, writable: true, command_topic: 'b/+' }",
                "wildcards",
            ),
            (
                "{ topic: a, asset: t, field: v, ts_path: ts }",
                "needs json_path",
            ),
            (
                "{ topic: a, asset: t, field: v, unit: barrels }",
                "unknown unit",
            ),
        ] {
            let e = validate(&dev(&format!("{base}  - {p}\n")))
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{p}: {e}");
        }
        let e = validate(&dev(
            "name: b\nurl: mqtts://h\npoints:\n  - { topic: a, asset: t, field: v }\n",
        ))
        .unwrap_err();
        assert!(e.to_string().contains("tls"), "{e}");
    }

    #[test]
    fn plain_and_json_payloads_decode_with_their_timestamps() {
        let d = dev(
            "name: b\nurl: mqtt://h\npoints:\n  - { topic: a, asset: t, field: v }\n  - { topic: j, json_path: level.volume, ts_path: ts, asset: t, field: w }\n",
        );
        assert_eq!(decode(&d.points[0], b" 12.5\n", 7), Ok((12.5, 7)));
        assert_eq!(decode(&d.points[0], b"true", 7), Ok((1.0, 7)));
        assert!(decode(&d.points[0], b"NaN", 7).is_err());
        assert!(
            decode(&d.points[0], b"\xff", 7)
                .unwrap_err()
                .contains("UTF-8")
        );
        assert_eq!(
            decode(
                &d.points[1],
                br#"{"level":{"volume":100},"ts":"1970-01-01T00:00:01Z"}"#,
                7
            ),
            Ok((100.0, 1000))
        );
        assert!(
            decode(&d.points[1], br#"{"level":{"volume":1}"#, 7)
                .unwrap_err()
                .contains("invalid JSON")
        );
        assert!(
            decode(&d.points[1], br#"{"level":{"volume":1}}"#, 7)
                .unwrap_err()
                .contains("\"ts\"")
        );
        assert!(
            decode(&d.points[1], br#"{"level":{}, "ts": 1}"#, 7)
                .unwrap_err()
                .contains("level.volume")
        );
    }
}

//! Sparkplug B host-side state of one edge node, sans IO.
//!
//! Fed every message of the configured edge node (its devices included,
//! since they share the node's seq), it says what the messages mean:
//! values of the configured node or device, the node or device going
//! offline, seq breaks (a gap, and a rebirth request), malformed payloads
//! and unknown aliases (counted, and a rebirth request). Rebirth requests
//! are rate limited. The socket shell publishes what it asks for.
//!
//! Rules (Sparkplug B 3.0): NBIRTH has seq 0 and sets the aliases and
//! datatypes; every later N/D message of the node carries seq + 1 mod 256;
//! NDEATH (no seq) counts only when its bdSeq equals the birth's; data seen
//! before a birth cannot be trusted (aliases unknown), so it is dropped and
//! a rebirth asked for.

use sparkplug_b::{
    AliasRegistry, DataType, EncodeOptions, MessageType, Metric, MetricValue, Payload, decode,
    encode,
};

/// At most one rebirth request per this many ms.
pub const REBIRTH_EVERY_MS: i64 = 5_000;

/// What a message means to the adapter.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// A numeric (or boolean: 1/0) value of metric `metric` at `ts`.
    Value { metric: String, value: f64, ts: i64 },
    /// A metric whose value is null or not a number.
    NotNumeric { metric: String, why: String },
    /// The node or the configured device went offline: every point is bad.
    Offline(String),
    /// Messages were lost between `expected` and `got`.
    Gap { expected: u8, got: u8 },
    /// Publish a rebirth request now (already rate limited).
    Rebirth(String),
    /// A message that could not be used, and why.
    Malformed(String),
}

/// Host-side state of one edge node.
pub struct Node {
    device: Option<String>,
    registry: AliasRegistry,
    next_seq: Option<u8>,
    bd_seq: Option<u64>,
    last_rebirth: Option<i64>,
}

/// How many messages a seq gap lost: the seqs from `expected` up to (not
/// including) `got`, modulo 256 (issue 29, item 11: it was recorded as 0).
pub fn missing(expected: u8, got: u8) -> u64 {
    u64::from(got.wrapping_sub(expected))
}

impl Node {
    /// `device`: the configured device, or `None` for the node's own metrics.
    pub fn new(device: Option<String>) -> Node {
        Node {
            device,
            registry: AliasRegistry::new(),
            next_seq: None,
            bd_seq: None,
            last_rebirth: None,
        }
    }

    /// The state after a new MQTT session: a birth is needed again.
    pub fn reset(&mut self) {
        self.next_seq = None;
        self.last_rebirth = None;
    }

    /// Whether a birth has been seen since the last reset, death or gap.
    pub fn is_born(&self) -> bool {
        self.next_seq.is_some()
    }

    /// A rebirth request, if none went out in the last [`REBIRTH_EVERY_MS`].
    pub fn ask_rebirth(&mut self, why: &str, now: i64) -> Option<Out> {
        if self
            .last_rebirth
            .is_some_and(|t| now - t < REBIRTH_EVERY_MS && now >= t)
        {
            return None;
        }
        self.last_rebirth = Some(now);
        Some(Out::Rebirth(why.to_string()))
    }

    /// One message of this node: `ty` from the topic, `device` the topic's
    /// device id (D messages), `now` the receive time (Unix ms).
    pub fn handle(
        &mut self,
        ty: MessageType,
        device: Option<&str>,
        payload: &[u8],
        now: i64,
    ) -> Vec<Out> {
        let mut out = Vec::new();
        let ours = device == self.device.as_deref();
        match ty {
            MessageType::NBirth => {
                let p = match decode(payload, None) {
                    Ok(p) => p,
                    Err(e) => return self.malformed(format!("NBIRTH: {e}"), now),
                };
                self.registry = AliasRegistry::new();
                for m in &p.metrics {
                    if let Some(name) = &m.name {
                        let _ = self.registry.try_bind(name, m.alias, m.value.datatype());
                    }
                }
                self.bd_seq = p
                    .metrics
                    .iter()
                    .find(|m| m.name.as_deref() == Some("bdSeq"))
                    .and_then(|m| int(&m.value));
                self.next_seq = Some(p.seq.unwrap_or(0).wrapping_add(1));
                if self.device.is_none() {
                    self.values(&p, now, &mut out);
                }
            }
            MessageType::NDeath => {
                let p = match decode(payload, None) {
                    Ok(p) => p,
                    Err(e) => return self.malformed(format!("NDEATH: {e}"), now),
                };
                let bd = p
                    .metrics
                    .iter()
                    .find(|m| m.name.as_deref() == Some("bdSeq"))
                    .and_then(|m| int(&m.value));
                if bd.is_some() && self.bd_seq.is_some() && bd != self.bd_seq {
                    // the will of an older session, delivered late
                    return out;
                }
                self.next_seq = None;
                out.push(Out::Offline("edge node offline (NDEATH)".into()));
            }
            MessageType::DBirth | MessageType::DDeath | MessageType::NData | MessageType::DData => {
                if !self.is_born() {
                    out.extend(self.ask_rebirth("data before the node's birth", now));
                    return out;
                }
                let p = match decode(payload, Some(&self.registry)) {
                    Ok(p) => p,
                    Err(e) => return self.malformed(format!("{}: {e}", name(ty)), now),
                };
                if let Some(exp) = self.next_seq {
                    let got = p.seq.unwrap_or(exp);
                    if got != exp {
                        out.push(Out::Gap { expected: exp, got });
                        out.extend(
                            self.ask_rebirth(&format!("seq gap: expected {exp}, got {got}"), now),
                        );
                    }
                    self.next_seq = Some(got.wrapping_add(1));
                }
                match ty {
                    MessageType::DBirth => {
                        for m in &p.metrics {
                            if let Some(name) = &m.name {
                                let _ = self.registry.try_bind(name, m.alias, m.value.datatype());
                            }
                        }
                        if ours {
                            self.values(&p, now, &mut out);
                        }
                    }
                    MessageType::DDeath if ours => {
                        out.push(Out::Offline("device offline (DDEATH)".into()))
                    }
                    MessageType::NData if self.device.is_none() => self.values(&p, now, &mut out),
                    MessageType::DData if ours => self.values(&p, now, &mut out),
                    _ => {}
                }
            }
            MessageType::NCmd | MessageType::DCmd | MessageType::State => {}
        }
        out
    }

    fn malformed(&mut self, why: String, now: i64) -> Vec<Out> {
        let mut out = vec![Out::Malformed(why.clone())];
        out.extend(self.ask_rebirth(&why, now));
        out
    }

    fn values(&mut self, p: &Payload, now: i64, out: &mut Vec<Out>) {
        let base = p.timestamp.map(|t| t as i64).unwrap_or(now);
        for m in &p.metrics {
            let metric = match (&m.name, m.alias) {
                (Some(n), _) => n.clone(),
                (None, Some(a)) => match self.registry.name_for_alias(a) {
                    Some(n) => n.to_string(),
                    None => {
                        out.push(Out::Malformed(format!("unknown alias {a}")));
                        out.extend(self.ask_rebirth(&format!("unknown alias {a}"), now));
                        continue;
                    }
                },
                (None, None) => {
                    out.push(Out::Malformed(
                        "a metric with neither name nor alias".into(),
                    ));
                    continue;
                }
            };
            let ts = m.timestamp.map(|t| t as i64).unwrap_or(base);
            match number(&m.value) {
                Ok(value) => out.push(Out::Value { metric, value, ts }),
                Err(why) => out.push(Out::NotNumeric { metric, why }),
            }
        }
    }

    /// The datatype the birth declared for `metric`.
    pub fn datatype(&self, metric: &str) -> Option<DataType> {
        self.registry.datatype_for_name(metric)
    }
}

fn name(ty: MessageType) -> &'static str {
    match ty {
        MessageType::NBirth => "NBIRTH",
        MessageType::NDeath => "NDEATH",
        MessageType::NData => "NDATA",
        MessageType::NCmd => "NCMD",
        MessageType::DBirth => "DBIRTH",
        MessageType::DDeath => "DDEATH",
        MessageType::DData => "DDATA",
        MessageType::DCmd => "DCMD",
        MessageType::State => "STATE",
    }
}

fn int(v: &MetricValue) -> Option<u64> {
    number(v).ok().filter(|x| *x >= 0.0).map(|x| x as u64)
}

/// A metric value as a number (booleans 1/0).
pub fn number(v: &MetricValue) -> Result<f64, String> {
    Ok(match v {
        MetricValue::Int8(x) => f64::from(*x),
        MetricValue::Int16(x) => f64::from(*x),
        MetricValue::Int32(x) => f64::from(*x),
        MetricValue::Int64(x) => *x as f64,
        MetricValue::UInt8(x) => f64::from(*x),
        MetricValue::UInt16(x) => f64::from(*x),
        MetricValue::UInt32(x) => f64::from(*x),
        MetricValue::UInt64(x) => *x as f64,
        MetricValue::Float(x) => f64::from(*x),
        MetricValue::Double(x) => *x,
        MetricValue::Boolean(b) => f64::from(u8::from(*b)),
        MetricValue::Null(_) => return Err("the value is null".into()),
        other => return Err(format!("a {:?} value is not a number", other.datatype())),
    })
}

/// A metric value of datatype `dt` holding `v`, for a command; `Err` when
/// `v` does not fit the type.
pub fn value_of(dt: DataType, v: f64) -> Result<MetricValue, String> {
    let int = |lo: f64, hi: f64| {
        if v.fract() == 0.0 && (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(format!("{v} does not fit the metric's type {dt:?}"))
        }
    };
    Ok(match dt {
        DataType::Int8 => MetricValue::Int8(int(-128.0, 127.0)? as i8),
        DataType::Int16 => MetricValue::Int16(int(-32768.0, 32767.0)? as i16),
        DataType::Int32 => MetricValue::Int32(int(-2_147_483_648.0, 2_147_483_647.0)? as i32),
        DataType::Int64 => MetricValue::Int64(int(-9.0e18, 9.0e18)? as i64),
        DataType::UInt8 => MetricValue::UInt8(int(0.0, 255.0)? as u8),
        DataType::UInt16 => MetricValue::UInt16(int(0.0, 65535.0)? as u16),
        DataType::UInt32 => MetricValue::UInt32(int(0.0, 4_294_967_295.0)? as u32),
        DataType::UInt64 => MetricValue::UInt64(int(0.0, 1.8e19)? as u64),
        DataType::Float if v.is_finite() && v.abs() <= f64::from(f32::MAX) => {
            MetricValue::Float(v as f32)
        }
        DataType::Double if v.is_finite() => MetricValue::Double(v),
        DataType::Boolean if v == 0.0 || v == 1.0 => MetricValue::Boolean(v == 1.0),
        other => {
            return Err(format!(
                "{v} cannot be written to a metric of type {other:?}"
            ));
        }
    })
}

/// The NCMD payload asking the node for a rebirth.
pub fn rebirth_payload(now: i64) -> Vec<u8> {
    let p = Payload::new()
        .with_timestamp(now.max(0) as u64)
        .with_metric(Metric::new(
            sparkplug_b::NODE_CONTROL_REBIRTH,
            MetricValue::Boolean(true),
        ));
    encode(&p, EncodeOptions::birth()).to_vec()
}

/// The NCMD/DCMD payload writing `metric`.
pub fn command_payload(metric: &str, value: MetricValue, now: i64) -> Vec<u8> {
    let p = Payload::new()
        .with_timestamp(now.max(0) as u64)
        .with_metric(Metric::new(metric, value));
    encode(&p, EncodeOptions::birth()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn birth(seq: u8, bd: u64, metrics: Vec<Metric>) -> Vec<u8> {
        let mut p = Payload::new().with_timestamp(1000).with_seq(seq);
        p = p.with_metric(Metric::new("bdSeq", MetricValue::UInt64(bd)));
        for m in metrics {
            p = p.with_metric(m);
        }
        encode(&p, EncodeOptions::birth()).to_vec()
    }

    fn data(seq: u8, metrics: Vec<Metric>) -> Vec<u8> {
        let mut p = Payload::new().with_timestamp(2000).with_seq(seq);
        for m in metrics {
            p = p.with_metric(m);
        }
        encode(&p, EncodeOptions::birth()).to_vec()
    }

    fn death(bd: u64) -> Vec<u8> {
        let p = Payload::new().with_metric(Metric::new("bdSeq", MetricValue::UInt64(bd)));
        encode(&p, EncodeOptions::birth()).to_vec()
    }

    fn volume(v: f64) -> Metric {
        Metric::new("Tank1/Volume", MetricValue::Double(v)).with_alias(7)
    }

    #[test]
    fn a_birth_then_aliased_data_gives_values_by_name() {
        let mut n = Node::new(None);
        let out = n.handle(
            MessageType::NBirth,
            None,
            &birth(0, 3, vec![volume(100.0)]),
            1,
        );
        assert!(
            out.contains(&Out::Value {
                metric: "Tank1/Volume".into(),
                value: 100.0,
                ts: 1000
            }),
            "{out:?}"
        );
        let out = n.handle(
            MessageType::NData,
            None,
            &data(1, vec![Metric::aliased(7, MetricValue::Double(99.5))]),
            2,
        );
        assert_eq!(
            out,
            vec![Out::Value {
                metric: "Tank1/Volume".into(),
                value: 99.5,
                ts: 2000
            }]
        );
        // seq wraps at 255
        n.next_seq = Some(255);
        assert!(
            n.handle(MessageType::NData, None, &data(255, vec![]), 3)
                .is_empty()
        );
        assert!(
            n.handle(MessageType::NData, None, &data(0, vec![]), 4)
                .is_empty()
        );
    }

    #[test]
    fn a_gap_counts_the_seqs_it_lost_across_the_wrap() {
        assert_eq!(missing(5, 6), 1);
        assert_eq!(missing(5, 9), 4);
        assert_eq!(missing(254, 1), 3, "254, 255, 0 lost");
        assert_eq!(missing(0, 255), 255);
    }

    #[test]
    fn a_seq_gap_is_a_gap_and_a_rate_limited_rebirth_request() {
        let mut n = Node::new(None);
        n.handle(
            MessageType::NBirth,
            None,
            &birth(0, 1, vec![volume(1.0)]),
            0,
        );
        let out = n.handle(
            MessageType::NData,
            None,
            &data(5, vec![volume(2.0)]),
            10_000,
        );
        assert_eq!(
            out[0],
            Out::Gap {
                expected: 1,
                got: 5
            }
        );
        assert!(
            matches!(&out[1], Out::Rebirth(w) if w.contains("seq gap")),
            "{out:?}"
        );
        assert!(
            out.iter()
                .any(|o| matches!(o, Out::Value { value, .. } if *value == 2.0)),
            "data still used"
        );
        // the next gap within 5 s does not ask again
        let out = n.handle(MessageType::NData, None, &data(9, vec![]), 11_000);
        assert_eq!(
            out,
            vec![Out::Gap {
                expected: 6,
                got: 9
            }]
        );
        let out = n.handle(MessageType::NData, None, &data(20, vec![]), 16_000);
        assert!(out.iter().any(|o| matches!(o, Out::Rebirth(_))));
    }

    #[test]
    fn data_before_a_birth_and_unknown_aliases_ask_for_a_rebirth() {
        let mut n = Node::new(None);
        let out = n.handle(MessageType::NData, None, &data(4, vec![volume(1.0)]), 0);
        assert!(
            matches!(&out[..], [Out::Rebirth(w)] if w.contains("before")),
            "{out:?}"
        );
        n.handle(
            MessageType::NBirth,
            None,
            &birth(0, 1, vec![volume(1.0)]),
            10_000,
        );
        let out = n.handle(
            MessageType::NData,
            None,
            &data(1, vec![Metric::aliased(99, MetricValue::Double(1.0))]),
            20_000,
        );
        assert_eq!(out[0], Out::Malformed("unknown alias 99".into()));
        assert!(matches!(out[1], Out::Rebirth(_)));
        let out = n.handle(MessageType::NData, None, b"\xff\xff\xff garbage", 30_000);
        assert!(
            matches!(&out[0], Out::Malformed(w) if w.starts_with("NDATA")),
            "{out:?}"
        );
    }

    #[test]
    fn a_death_with_the_births_bdseq_takes_the_node_offline_and_a_stale_one_does_not() {
        let mut n = Node::new(None);
        n.handle(
            MessageType::NBirth,
            None,
            &birth(0, 4, vec![volume(1.0)]),
            0,
        );
        assert!(
            n.handle(MessageType::NDeath, None, &death(3), 1).is_empty(),
            "older session's will"
        );
        assert!(n.is_born());
        let out = n.handle(MessageType::NDeath, None, &death(4), 2);
        assert!(matches!(&out[..], [Out::Offline(_)]));
        assert!(!n.is_born(), "a new birth is needed");
    }

    #[test]
    fn device_messages_share_the_node_seq_and_only_the_configured_device_gives_values() {
        let mut n = Node::new(Some("atg".into()));
        let out = n.handle(MessageType::NBirth, None, &birth(0, 1, vec![]), 0);
        assert!(out.is_empty(), "node metrics are not ours: {out:?}");
        let out = n.handle(
            MessageType::DBirth,
            Some("other"),
            &data(1, vec![Metric::new("x", MetricValue::Int32(1))]),
            0,
        );
        assert!(out.is_empty());
        let out = n.handle(
            MessageType::DBirth,
            Some("atg"),
            &data(2, vec![volume(5.0)]),
            0,
        );
        assert_eq!(
            out,
            vec![Out::Value {
                metric: "Tank1/Volume".into(),
                value: 5.0,
                ts: 2000
            }]
        );
        let out = n.handle(
            MessageType::DData,
            Some("atg"),
            &data(3, vec![Metric::aliased(7, MetricValue::Double(6.0))]),
            0,
        );
        assert_eq!(out.len(), 1);
        let out = n.handle(MessageType::DDeath, Some("atg"), &data(4, vec![]), 0);
        assert!(matches!(&out[..], [Out::Offline(w)] if w.contains("DDEATH")));
    }

    #[test]
    fn command_values_follow_the_births_datatype() {
        assert_eq!(value_of(DataType::Float, 2.5), Ok(MetricValue::Float(2.5)));
        assert_eq!(value_of(DataType::UInt16, 7.0), Ok(MetricValue::UInt16(7)));
        assert!(value_of(DataType::UInt16, 7.5).is_err());
        assert!(value_of(DataType::Int8, 300.0).is_err());
        assert_eq!(
            value_of(DataType::Boolean, 1.0),
            Ok(MetricValue::Boolean(true))
        );
        assert!(value_of(DataType::String, 1.0).is_err());
        let p = decode(&rebirth_payload(5), None).unwrap();
        assert_eq!(p.metrics[0].name.as_deref(), Some("Node Control/Rebirth"));
    }
}

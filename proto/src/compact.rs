//! The compact batch codec (`CompactBatch`, see the `.proto`): a
//! `TelemetryBatch` as columns, with point aliases, deltas and exact
//! decimal values, for slow and metered links. Sans-IO: the agent keeps an
//! [`Encoder`], the headend a [`Decoder`], one per session, fed batches in
//! stream order.
//!
//! `decode(encode(b)) == b` for every batch whose readings have finite
//! values (the headend refuses the others anyway), bit for bit: a value is
//! sent as decimal digits or a 32-bit float only when that gives back the
//! very same double.

use std::collections::HashMap;

use crate::v1::{CompactBatch, PointDef, Reading, ReadingError, TelemetryBatch};

/// Most points one session may define (the headend's memory per session is
/// bounded by it and [`MAX_TEXT`]).
pub const MAX_POINTS: usize = 20_000;
/// Longest text in a point definition, bytes.
pub const MAX_TEXT: usize = 512;
/// Most decimal places tried for an exact decimal value.
const MAX_SCALE: u32 = 6;
const F32: u32 = 7;
const F64: u32 = 8;
const REPEAT: u32 = 9;
/// Largest digits magnitude (integers up to 2^53 are exact doubles).
const MAX_DIGITS: i64 = 1 << 53;

const POW10: [f64; 7] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];

/// How a value travels: (encoding, digits) for a decimal, else the float.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Decimal { scale: u32, digits: i64 },
    F32(f32),
    F64(f64),
}

fn classify(v: f64) -> Value {
    if v.is_finite() {
        for (scale, p) in POW10.iter().enumerate().take(MAX_SCALE as usize + 1) {
            let d = (v * p).round();
            if d.abs() <= MAX_DIGITS as f64 {
                let digits = d as i64;
                if ((digits as f64) / p).to_bits() == v.to_bits() {
                    return Value::Decimal {
                        scale: scale as u32,
                        digits,
                    };
                }
            }
        }
        let f = v as f32;
        if f64::from(f).to_bits() == v.to_bits() {
            return Value::F32(f);
        }
    }
    Value::F64(v)
}

/// A point: the fields every reading of it shares.
type Key = (String, String, String, String);

fn key(r: &Reading) -> Key {
    (
        r.asset_id.clone(),
        r.field.clone(),
        r.unit.clone(),
        r.source.clone(),
    )
}

/// What the stream last carried for each alias.
#[derive(Debug, Default, Clone, Copy)]
struct Last {
    /// The value's bits (None before the first).
    value: Option<u64>,
    /// The last decimal value: (scale, digits).
    decimal: Option<(u32, i64)>,
    f32_bits: u32,
    f64_bits: u64,
}

#[derive(Debug, Default, Clone)]
struct Prev(Vec<Last>);

impl Prev {
    /// What goes in the digits column for `digits` at `scale`, updating the state.
    fn step(&mut self, alias: usize, scale: u32, digits: i64) -> i64 {
        let slot = &mut self.0[alias].decimal;
        let out = match *slot {
            Some((s, d)) if s == scale => digits.wrapping_sub(d),
            _ => digits,
        };
        *slot = Some((scale, digits));
        out
    }

    /// The digits a column value stands for, updating the state.
    fn undo(&mut self, alias: usize, scale: u32, column: i64) -> i64 {
        let slot = &mut self.0[alias].decimal;
        let digits = match *slot {
            Some((s, d)) if s == scale => column.wrapping_add(d),
            _ => column,
        };
        *slot = Some((scale, digits));
        digits
    }

    /// XOR of a 32-bit value with the alias's previous one; updates it.
    fn xor32(&mut self, alias: usize, bits: u32) -> u32 {
        let l = &mut self.0[alias];
        let x = bits ^ l.f32_bits;
        l.f32_bits = bits;
        x
    }

    fn xor64(&mut self, alias: usize, bits: u64) -> u64 {
        let l = &mut self.0[alias];
        let x = bits ^ l.f64_bits;
        l.f64_bits = bits;
        x
    }

    /// The bits a 32-bit XOR column value stands for; updates the state.
    fn unxor32(&mut self, alias: usize, x: u32) -> u32 {
        let l = &mut self.0[alias];
        l.f32_bits ^= x;
        l.f32_bits
    }

    fn unxor64(&mut self, alias: usize, x: u64) -> u64 {
        let l = &mut self.0[alias];
        l.f64_bits ^= x;
        l.f64_bits
    }

    fn same(&self, alias: usize, v: f64) -> bool {
        self.0[alias].value == Some(v.to_bits())
    }

    fn set(&mut self, alias: usize, v: f64) {
        self.0[alias].value = Some(v.to_bits());
    }

    fn last(&self, alias: usize) -> Option<f64> {
        self.0[alias].value.map(f64::from_bits)
    }
}

/// The agent's side of one session.
#[derive(Debug, Default)]
pub struct Encoder {
    aliases: HashMap<Key, u32>,
    prev: Prev,
    last_ts: i64,
}

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Points defined so far on this session.
    pub fn points(&self) -> usize {
        self.aliases.len()
    }

    /// Encodes a batch (its `log_id` is left out: it is the session's).
    /// Readings of points beyond [`MAX_POINTS`] or with texts longer than
    /// [`MAX_TEXT`] cannot be aliased: the caller sends such a batch as a
    /// `TelemetryBatch` (`None`).
    pub fn encode(&mut self, b: &TelemetryBatch) -> Option<CompactBatch> {
        let n = b.readings.len();
        let mut c = CompactBatch {
            first_seq: b.first_seq,
            span: b.last_seq.checked_sub(b.first_seq)?,
            preview: b.preview,
            alias: Vec::with_capacity(n),
            seq_step: Vec::with_capacity(n),
            ts_step: Vec::with_capacity(n),
            received_lag: Vec::with_capacity(n),
            form: Vec::with_capacity(n),
            gaps: b.gaps.clone(),
            command_acks: b.command_acks.clone(),
            events: b.events.clone(),
            ..Default::default()
        };
        // new points first, checked before any state changes
        let mut fresh: Vec<Key> = Vec::new();
        for r in &b.readings {
            let k = key(r);
            if !self.aliases.contains_key(&k) && !fresh.contains(&k) {
                if [&k.0, &k.1, &k.2, &k.3].iter().any(|s| s.len() > MAX_TEXT) {
                    return None;
                }
                fresh.push(k);
            }
        }
        if self.aliases.len() + fresh.len() > MAX_POINTS {
            return None;
        }
        // a seq below first_seq or out of order cannot be a step
        let mut prev_seq = b.first_seq;
        for r in &b.readings {
            if r.seq < prev_seq {
                return None;
            }
            prev_seq = r.seq;
        }
        for k in fresh {
            let alias = self.aliases.len() as u32;
            c.points.push(PointDef {
                asset_id: k.0.clone(),
                field: k.1.clone(),
                unit: k.2.clone(),
                source: k.3.clone(),
            });
            self.aliases.insert(k, alias);
            self.prev.0.push(Last::default());
        }
        let mut prev_seq = b.first_seq;
        for (i, r) in b.readings.iter().enumerate() {
            let alias = self.aliases[&key(r)];
            c.alias.push(alias);
            c.seq_step.push(r.seq - prev_seq);
            prev_seq = r.seq;
            c.ts_step.push(r.source_ts_ms.wrapping_sub(self.last_ts));
            self.last_ts = r.source_ts_ms;
            c.received_lag
                .push(r.received_ts_ms.wrapping_sub(r.source_ts_ms));
            let quality = (r.quality as u32) & 3;
            let a = alias as usize;
            let enc = if self.prev.same(a, r.value) {
                REPEAT
            } else {
                match classify(r.value) {
                    Value::Decimal { scale, digits } => {
                        c.digits.push(self.prev.step(a, scale, digits));
                        scale
                    }
                    Value::F32(f) => {
                        c.f32_xor.push(self.prev.xor32(a, f.to_bits()));
                        F32
                    }
                    Value::F64(f) => {
                        c.f64_xor.push(self.prev.xor64(a, f.to_bits()));
                        F64
                    }
                }
            };
            self.prev.set(a, r.value);
            c.form.push(quality | (enc << 2));
            if !r.error.is_empty() {
                c.errors.push(ReadingError {
                    index: i as u32,
                    text: r.error.clone(),
                });
            }
        }
        Some(c)
    }
}

/// Why a compact batch does not decode (the session ends with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "compact batch: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

fn err<T>(msg: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError(msg.into()))
}

/// The headend's side of one session.
#[derive(Debug, Default)]
pub struct Decoder {
    points: Vec<PointDef>,
    prev: Prev,
    last_ts: i64,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Points defined so far on this session.
    pub fn points(&self) -> usize {
        self.points.len()
    }

    /// Decodes a batch of the session's log `log_id`. On an error the
    /// decoder's state is unspecified: the session must end.
    pub fn decode(&mut self, c: CompactBatch, log_id: u64) -> Result<TelemetryBatch, DecodeError> {
        let n = c.alias.len();
        if [
            c.seq_step.len(),
            c.ts_step.len(),
            c.received_lag.len(),
            c.form.len(),
        ]
        .iter()
        .any(|&l| l != n)
        {
            return err("the per-reading columns differ in length");
        }
        let last_seq = c
            .first_seq
            .checked_add(c.span)
            .ok_or_else(|| DecodeError("first_seq + span overflows".into()))?;
        if self.points.len() + c.points.len() > MAX_POINTS {
            return err(format!("more than {MAX_POINTS} points on one session"));
        }
        for p in &c.points {
            if [&p.asset_id, &p.field, &p.unit, &p.source]
                .iter()
                .any(|s| s.len() > MAX_TEXT)
            {
                return err(format!("a point text is longer than {MAX_TEXT} bytes"));
            }
        }
        self.points.extend(c.points);
        self.prev.0.resize(self.points.len(), Last::default());
        let mut errors: HashMap<u32, String> = HashMap::with_capacity(c.errors.len());
        for e in c.errors {
            if e.index as usize >= n || errors.insert(e.index, e.text).is_some() {
                return err("an error names no reading, or a reading twice");
            }
        }
        let (mut digits, mut f32s, mut f64s) = (
            c.digits.into_iter(),
            c.f32_xor.into_iter(),
            c.f64_xor.into_iter(),
        );
        let mut readings = Vec::with_capacity(n);
        let mut seq = c.first_seq;
        for i in 0..n {
            let alias = c.alias[i] as usize;
            let Some(p) = self.points.get(alias) else {
                return err(format!("alias {alias} is not defined"));
            };
            seq = seq
                .checked_add(c.seq_step[i])
                .ok_or_else(|| DecodeError("seq overflows".into()))?;
            let ts = self.last_ts.wrapping_add(c.ts_step[i]);
            self.last_ts = ts;
            let form = c.form[i];
            let value = match form >> 2 {
                scale @ 0..=MAX_SCALE => {
                    let col = digits
                        .next()
                        .ok_or_else(|| DecodeError("too few digits".into()))?;
                    let d = self.prev.undo(alias, scale, col);
                    if d.unsigned_abs() > MAX_DIGITS as u64 {
                        return err("digits out of range");
                    }
                    (d as f64) / POW10[scale as usize]
                }
                F32 => {
                    let x = f32s
                        .next()
                        .ok_or_else(|| DecodeError("too few 32-bit values".into()))?;
                    f64::from(f32::from_bits(self.prev.unxor32(alias, x)))
                }
                F64 => {
                    let x = f64s
                        .next()
                        .ok_or_else(|| DecodeError("too few 64-bit values".into()))?;
                    f64::from_bits(self.prev.unxor64(alias, x))
                }
                REPEAT => self.prev.last(alias).ok_or_else(|| {
                    DecodeError(format!("alias {alias} repeats a value it never had"))
                })?,
                other => return err(format!("unknown value encoding {other}")),
            };
            self.prev.set(alias, value);
            readings.push(Reading {
                seq,
                asset_id: p.asset_id.clone(),
                field: p.field.clone(),
                value,
                unit: p.unit.clone(),
                quality: (form & 3) as i32,
                source_ts_ms: ts,
                received_ts_ms: ts.wrapping_add(c.received_lag[i]),
                source: p.source.clone(),
                error: errors.remove(&(i as u32)).unwrap_or_default(),
            });
        }
        if digits.next().is_some() || f32s.next().is_some() || f64s.next().is_some() {
            return err("more values than readings");
        }
        if seq > last_seq {
            return err(format!(
                "a reading's seq {seq} lies past the batch's last {last_seq}"
            ));
        }
        Ok(TelemetryBatch {
            log_id,
            first_seq: c.first_seq,
            last_seq,
            readings,
            gaps: c.gaps,
            preview: c.preview,
            command_acks: c.command_acks,
            events: c.events,
        })
    }
}

#[cfg(test)]
mod tests;

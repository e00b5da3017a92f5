//! Text from agents, made safe for every backend before it reaches SQL.
//!
//! PostgreSQL refuses a NUL byte in `text`; other control characters make
//! logs and JSON hard to read. A device's error message or a mistyped
//! asset name must never block a site's data, so instead of refusing the
//! batch (which the agent would resend for ever) every control character
//! (C0 but tab and newline, DEL, C1) is replaced with U+FFFD and counted
//! (`tankwatch_headend_sanitized_fields_total`). The agent's
//! `check-config` refuses such names at the source.
use tankwatch_proto::v1;

pub use crate::domain::text::is_forbidden;

/// Replaces forbidden characters in `s`; returns 1 if it changed.
pub fn text(s: &mut String) -> u64 {
    if !s.chars().any(is_forbidden) {
        return 0;
    }
    *s = s
        .chars()
        .map(|c| if is_forbidden(c) { '\u{fffd}' } else { c })
        .collect();
    1
}

/// Cleans every text field of a Hello; returns how many changed.
pub fn hello(h: &mut v1::Hello) -> u64 {
    let mut n = text(&mut h.agent_version) + text(&mut h.site_id);
    for a in &mut h.assets {
        n += text(&mut a.asset_id)
            + text(&mut a.name)
            + text(&mut a.product)
            + text(&mut a.capacity_unit);
        let details = std::mem::take(&mut a.details);
        for (mut k, mut v) in details {
            n += text(&mut k) + text(&mut v);
            a.details.insert(k, v);
        }
        for w in &mut a.writable {
            n += text(&mut w.field);
        }
    }
    n
}

/// Cleans the text fields of a device health report and bounds their
/// length (names 200 characters, an error 1,000); returns how many changed.
pub fn devices(h: &mut v1::DeviceHealth) -> u64 {
    let mut n = 0;
    for d in &mut h.devices {
        n += text(&mut d.device) + text(&mut d.kind) + text(&mut d.last_error);
        for (s, max) in [
            (&mut d.device, 200),
            (&mut d.kind, 200),
            (&mut d.last_error, 1000),
        ] {
            if let Some((i, _)) = s.char_indices().nth(max) {
                s.truncate(i);
                n += 1;
            }
        }
    }
    n
}

/// Cleans every text field of a batch; returns how many changed.
pub fn batch(b: &mut v1::TelemetryBatch) -> u64 {
    let mut n = 0;
    for r in &mut b.readings {
        n += text(&mut r.asset_id)
            + text(&mut r.field)
            + text(&mut r.unit)
            + text(&mut r.source)
            + text(&mut r.error);
    }
    for g in &mut b.gaps {
        n += text(&mut g.reason) + text(&mut g.class) + text(&mut g.device);
    }
    for a in &mut b.command_acks {
        n += text(&mut a.command_id) + text(&mut a.reason) + text(&mut a.detail);
    }
    for e in &mut b.events {
        match &mut e.kind {
            Some(v1::event::Kind::Notice(s)) => n += text(s),
            Some(v1::event::Kind::Delivery(d)) => {
                n += text(&mut d.load_ref) + text(&mut d.tank);
            }
            Some(v1::event::Kind::Gap(g)) => {
                n += text(&mut g.reason) + text(&mut g.class) + text(&mut g.device)
            }
            Some(v1::event::Kind::LocalCommand(l)) => {
                n += text(&mut l.command_id)
                    + text(&mut l.origin)
                    + text(&mut l.user)
                    + text(&mut l.client);
                if let Some(s) = &mut l.setpoint {
                    n += text(&mut s.asset_id) + text(&mut s.field);
                }
            }
            None => {}
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_replaced_and_counted_and_clean_text_is_untouched() {
        let cases = [
            ("tank-1", "tank-1", 0),
            ("tank\u{0}1", "tank\u{fffd}1", 1),
            ("a\u{1b}[31mred", "a\u{fffd}[31mred", 1),
            ("line\nnext\ttab", "line\nnext\ttab", 0),
            ("del\u{7f}", "del\u{fffd}", 1),
            ("c1\u{85}", "c1\u{fffd}", 1),
            ("Tankstelle Zürich ⛽", "Tankstelle Zürich ⛽", 0),
        ];
        for (input, want, changed) in cases {
            let mut s = input.to_string();
            assert_eq!(text(&mut s), changed, "{input:?}");
            assert_eq!(s, want, "{input:?}");
        }
    }

    #[test]
    fn every_text_field_of_a_batch_is_cleaned() {
        let mut b = v1::TelemetryBatch {
            readings: vec![v1::Reading {
                asset_id: "t\u{0}".into(),
                field: "f\u{0}".into(),
                unit: "L".into(),
                source: "s\u{0}".into(),
                error: "e\u{0}".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(batch(&mut b), 4);
        assert!(!b.readings[0].asset_id.contains('\0'));
    }
}

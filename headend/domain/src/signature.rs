//! Webhook signatures, pure. Every notification the headend POSTs carries
//! its send time and an HMAC-SHA256 of that time and the exact body under a
//! secret shared with the receiver:
//!
//! ```text
//! X-Tankwatch-Timestamp: 1796563489
//! X-Tankwatch-Signature: v1=<64 hex digits of HMAC-SHA256(secret, "1796563489." + body)>
//! ```
//!
//! The receiver recomputes the HMAC over the raw body it got, compares in
//! constant time and refuses a timestamp far from its clock (a replayed
//! notification). [`verify`] is that receiver, for tests and for people
//! writing one (docs/fuel-operations.md has it in Python).

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const TIMESTAMP_HEADER: &str = "X-Tankwatch-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Tankwatch-Signature";
/// A receiver's default tolerance between the timestamp and its clock.
pub const TOLERANCE_S: i64 = 300;
/// The shortest secret the headend takes (bytes).
pub const MIN_SECRET: usize = 16;

fn mac(secret: &[u8], ts_s: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it
    let mut m = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    };
    m.update(ts_s.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The `X-Tankwatch-Signature` value of `body` sent at `ts_s` (Unix seconds).
pub fn sign(secret: &[u8], ts_s: i64, body: &[u8]) -> String {
    let tag = mac(secret, ts_s, body).finalize().into_bytes();
    let mut s = String::with_capacity(3 + 64);
    s.push_str("v1=");
    for b in tag {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Why a receiver refuses a notification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the timestamp is not a number of seconds")]
    BadTimestamp,
    #[error("the timestamp is {0} s from now, beyond the tolerance")]
    Stale(i64),
    #[error("no v1= signature")]
    NoSignature,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Checks a notification as a receiver would: the timestamp within
/// `tolerance_s` of `now_s`, and a `v1=` signature (several may be given,
/// comma separated, during a secret rotation) matching the body.
pub fn verify(
    secret: &[u8],
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now_s: i64,
    tolerance_s: i64,
) -> Result<(), Refused> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Refused::BadTimestamp)?;
    if (now_s - ts).abs() > tolerance_s {
        return Err(Refused::Stale(now_s - ts));
    }
    let mut any = false;
    for part in signature.split(',') {
        let Some(hex) = part.trim().strip_prefix("v1=") else {
            continue;
        };
        any = true;
        let Some(tag) = unhex(hex) else { continue };
        if mac(secret, ts, body).verify_slice(&tag).is_ok() {
            return Ok(());
        }
    }
    Err(if any {
        Refused::Mismatch
    } else {
        Refused::NoSignature
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a shared webhook secret";

    #[test]
    fn a_signature_is_the_rfc_4231_hmac_of_the_timestamp_and_the_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
        // = "<ts>.<body>" with ts "what do ya want for nothing?" is not a
        // number, so check the HMAC itself through a split that concatenates
        // to the same data: "12." + body
        let want = {
            let mut m = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
            m.update(b"12.what do ya want for nothing?");
            m.finalize().into_bytes()
        };
        let got = sign(b"Jefe", 12, b"what do ya want for nothing?");
        let hex: String = want.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, format!("v1={hex}"));
        // and the RFC's own vector, to tie the HMAC to the standard
        let mut m = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        let rfc: String = m
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            rfc,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_receiver_takes_the_signed_body_and_refuses_any_change() {
        let body = br#"{"event":"alarm.raised","alarm":{"id":"alm-1"}}"#;
        let sig = sign(SECRET, 1_000, body);
        assert_eq!(
            verify(SECRET, "1000", &sig, body, 1_010, TOLERANCE_S),
            Ok(())
        );
        // (secret, timestamp, body, now, why refused)
        type Case<'a> = (&'a [u8], &'a str, &'a [u8], i64, Refused);
        let cases: &[Case] = &[
            (b"another secret", "1000", body, 1_000, Refused::Mismatch),
            (SECRET, "1001", body, 1_000, Refused::Mismatch),
            (
                SECRET,
                "1000",
                br#"{"event":"alarm.cleared","alarm":{"id":"alm-1"}}"#,
                1_000,
                Refused::Mismatch,
            ),
            (
                SECRET,
                "1000",
                body,
                1_000 + TOLERANCE_S + 1,
                Refused::Stale(TOLERANCE_S + 1),
            ),
            (SECRET, "soon", body, 1_000, Refused::BadTimestamp),
        ];
        for (secret, ts, b, now, want) in cases {
            assert_eq!(
                verify(secret, ts, &sig, b, *now, TOLERANCE_S),
                Err(want.clone()),
                "{ts} {now}"
            );
        }
        assert_eq!(
            verify(SECRET, "1000", "sha256=00", body, 1_000, 300),
            Err(Refused::NoSignature)
        );
        assert_eq!(
            verify(SECRET, "1000", "v1=zz", body, 1_000, 300),
            Err(Refused::Mismatch)
        );
        // during a rotation the sender may give two; either one does
        let two = format!("v1={}, {sig}", "00".repeat(32));
        assert_eq!(verify(SECRET, "1000", &two, body, 1_000, 300), Ok(()));
    }
}

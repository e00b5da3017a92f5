//! The audit trail's entries and their hash chain, pure.
//!
//! Each entry's `hash` is SHA-256 over the previous entry's hash and the
//! entry's own fields (each length-prefixed, so no two different entries
//! serialise alike); the first entry's previous hash is [`GENESIS`].
//! Changing, removing or reordering any stored entry breaks the chain at
//! that entry (or, for a removed last entry, leaves a count that the
//! `audit_head` row contradicts): [`Verifier`] names the first bad one.

use sha2::{Digest, Sha256};

use super::text_enum;
use crate::UnixMs;

/// The previous hash of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

text_enum!(
    /// How the audited request ended.
    AuditOutcome, "audit outcome" {
        /// Done (2xx).
        Ok => "ok",
        /// Refused for who asked: no or a bad credential (401), a role
        /// without the permission (403), a site outside the scope (404),
        /// throttled (429).
        Denied => "denied",
        /// Refused for what was asked (other 4xx).
        Refused => "refused",
        /// Failed inside the headend (5xx).
        Failed => "failed",
    }
);

impl AuditOutcome {
    pub fn of_status(status: u16) -> AuditOutcome {
        match status {
            200..=399 => AuditOutcome::Ok,
            500.. => AuditOutcome::Failed,
            _ => AuditOutcome::Refused,
        }
    }
}

/// One entry (what is hashed).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditEntry {
    pub seq: i64,
    pub at_ms: UnixMs,
    /// The actor's text form (`operator ann from 10.0.0.7`, `api_key k-1 from …`,
    /// `opcua_user alice at site-1`, or `unauthenticated from IP`).
    pub actor: String,
    /// The role the actor held, or `none`.
    pub role: String,
    /// `commands.create`, `auth.login`, …
    pub action: String,
    /// What it was about (an id, a path).
    pub target: String,
    pub outcome: AuditOutcome,
    pub status: i64,
    /// Before/after summary (JSON text), secrets never included.
    pub summary: String,
    pub client: String,
    pub request_id: String,
    /// The site it is about, if any (hashed when present).
    #[sqlx(rename = "site_id")]
    pub site: Option<String>,
}

impl AuditEntry {
    /// This entry's hash after `prev`.
    pub fn hash(&self, prev: &str) -> String {
        let mut h = Sha256::new();
        let mut field = |b: &[u8]| {
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        };
        field(prev.as_bytes());
        field(&self.seq.to_be_bytes());
        field(&self.at_ms.ms().to_be_bytes());
        field(self.actor.as_bytes());
        field(self.role.as_bytes());
        field(self.action.as_bytes());
        field(self.target.as_bytes());
        field(self.outcome.as_str().as_bytes());
        field(&self.status.to_be_bytes());
        field(self.summary.as_bytes());
        field(self.client.as_bytes());
        field(self.request_id.as_bytes());
        // absent on entries written before the column existed: they hash as then
        if let Some(site) = &self.site {
            field(b"site");
            field(site.as_bytes());
        }
        hex(&h.finalize())
    }
}

pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// A stored entry with its chain columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub entry: AuditEntry,
    pub prev_hash: String,
    pub hash: String,
}

/// Where and why the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit entry {seq}: {why}")]
pub struct Broken {
    pub seq: i64,
    pub why: String,
}

/// Walks the chain page by page, oldest first.
#[derive(Debug, Clone)]
pub struct Verifier {
    prev: String,
    next_seq: i64,
    pub checked: u64,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            prev: GENESIS.into(),
            next_seq: 1,
            checked: 0,
        }
    }
}

impl Verifier {
    /// The next seq expected (pages continue after it).
    pub fn next_seq(&self) -> i64 {
        self.next_seq
    }

    pub fn last_hash(&self) -> &str {
        &self.prev
    }

    /// Checks the next entries in order.
    pub fn feed(&mut self, page: &[Stored]) -> Result<(), Broken> {
        for s in page {
            let seq = s.entry.seq;
            let broken = |why: String| Broken { seq, why };
            if seq != self.next_seq {
                return Err(Broken {
                    seq: self.next_seq,
                    why: format!("missing (the next stored entry is {seq}): entries were removed"),
                });
            }
            if s.prev_hash != self.prev {
                return Err(broken(
                    "its previous hash is not the hash of the entry before it: an entry was replaced".into(),
                ));
            }
            if s.entry.hash(&self.prev) != s.hash {
                return Err(broken(
                    "its content does not match its hash: it was altered after it was written"
                        .into(),
                ));
            }
            self.prev = s.hash.clone();
            self.next_seq += 1;
            self.checked += 1;
        }
        Ok(())
    }

    /// After the last page: the head (count and last hash recorded
    /// apart from the entries) must be where the walk ended, or entries
    /// at the end were removed.
    pub fn finish(&self, head_seq: i64, head_hash: &str) -> Result<(), Broken> {
        if head_seq != self.next_seq - 1 {
            return Err(Broken {
                seq: self.next_seq,
                why: format!(
                    "the trail ends at entry {} but {head_seq} were written: entries at the end were removed",
                    self.next_seq - 1
                ),
            });
        }
        if head_hash != self.prev {
            return Err(Broken {
                seq: head_seq,
                why: "the last entry's hash is not the one recorded when it was written".into(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: i64) -> AuditEntry {
        AuditEntry {
            seq,
            at_ms: UnixMs::from_ms(1_700_000_000_000 + seq),
            actor: "operator ann from 10.0.0.7".into(),
            role: "admin".into(),
            action: "commands.create".into(),
            target: format!("cmd-{seq}"),
            outcome: AuditOutcome::Ok,
            status: 201,
            summary: "{}".into(),
            client: "10.0.0.7".into(),
            request_id: format!("req-{seq}"),
            site: (seq % 2 == 0).then(|| "n-1".to_string()),
        }
    }

    fn chain(n: i64) -> Vec<Stored> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let e = entry(seq);
                let hash = e.hash(&prev);
                let s = Stored {
                    entry: e,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                s
            })
            .collect()
    }

    type Tamper = Box<dyn Fn(&mut Vec<Stored>)>;
    type Change = Box<dyn Fn(&mut AuditEntry)>;

    fn verify(c: &[Stored], head: (i64, &str)) -> Result<u64, Broken> {
        let mut v = Verifier::default();
        for page in c.chunks(2) {
            v.feed(page)?;
        }
        v.finish(head.0, head.1)?;
        Ok(v.checked)
    }

    #[test]
    fn an_intact_chain_verifies_across_pages() {
        let c = chain(5);
        let head = c[4].hash.clone();
        assert_eq!(verify(&c, (5, &head)), Ok(5));
        assert_eq!(verify(&[], (0, GENESIS)), Ok(0));
    }

    #[test]
    fn each_kind_of_tampering_is_named_at_the_first_bad_entry() {
        let c = chain(5);
        let head = c[4].hash.clone();
        let cases: Vec<(&str, Tamper, i64)> = vec![
            (
                "a field altered",
                Box::new(|c| c[2].entry.summary = "{\"value\":1}".into()),
                3,
            ),
            (
                "an outcome altered",
                Box::new(|c| c[1].entry.outcome = AuditOutcome::Denied),
                2,
            ),
            (
                "a middle entry removed",
                Box::new(|c| {
                    c.remove(2);
                }),
                3,
            ),
            (
                "the last entry removed",
                Box::new(|c| {
                    c.pop();
                }),
                5,
            ),
            (
                "an entry and its hash rewritten",
                Box::new(|c| {
                    c[1].entry.actor = "operator mallory from 10.0.0.9".into();
                    c[1].hash = c[1].entry.hash(&c[1].prev_hash);
                }),
                3,
            ),
            ("two entries swapped", Box::new(|c| c.swap(0, 1)), 1),
        ];
        for (what, tamper, first_bad) in cases {
            let mut t = c.clone();
            tamper(&mut t);
            let e = verify(&t, (5, &head)).expect_err(what);
            assert_eq!(e.seq, first_bad, "{what}: {e}");
        }
    }

    #[test]
    fn every_field_is_in_the_hash() {
        let mut e = entry(1);
        e.site = Some("n-1".into());
        let base = e.hash(GENESIS);
        let changes: Vec<Change> = vec![
            Box::new(|e| e.seq = 2),
            Box::new(|e| e.at_ms = e.at_ms.plus_ms(1)),
            Box::new(|e| e.actor.push('x')),
            Box::new(|e| e.role = "viewer".into()),
            Box::new(|e| e.action.push('x')),
            Box::new(|e| e.target.push('x')),
            Box::new(|e| e.outcome = AuditOutcome::Failed),
            Box::new(|e| e.status = 500),
            Box::new(|e| e.summary.push(' ')),
            Box::new(|e| e.client.push('1')),
            Box::new(|e| e.request_id.push('x')),
            Box::new(|e| e.site = Some("s-1".into())),
            Box::new(|e| e.site = None),
            // moving a byte between neighbouring fields changes the hash too
            Box::new(|e| {
                e.role = "admi".into();
                e.action = "ncommands.create".into();
            }),
        ];
        for (i, c) in changes.iter().enumerate() {
            let mut x = e.clone();
            c(&mut x);
            assert_ne!(x.hash(GENESIS), base, "change {i}");
        }
        assert_ne!(e.hash("1"), base);
    }
}

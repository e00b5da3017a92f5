//! The wake-ups of the sessions' dispatchers (`ingest::dispatch`), on this
//! replica and across replicas (issue 35).
//!
//! A service that changes what a site's agent must receive (a command, a
//! cancel, a load's ETA) calls [`Dispatcher::nudge`]: the site's session
//! here wakes at once, and the site is queued for a note to the other
//! replicas (`store::notify`, PostgreSQL `NOTIFY`), one of which may hold
//! the site's session. The note names sites, never commands: a woken
//! session reads the table itself, so a lost note costs latency (the
//! safety net's period), never a command.
//!
//! Bounded: one [`Notify`] per site with a session here or a nudge, and a
//! set of sites waiting for their note (a site is in it once however many
//! nudges it had; the set is emptied at each note).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::domain::SiteId;
use crate::metrics::{CauseLabel, Metrics};

/// Why a session's dispatcher woke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A change made on this replica.
    Local,
    /// Another replica's note.
    Peer,
    /// The safety net's read of the commands table.
    Poll,
    /// This replica's listener lost its connection: every session here.
    Reconnect,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Local => "local",
            Cause::Peer => "peer",
            Cause::Poll => "poll",
            Cause::Reconnect => "reconnect",
        }
    }
}

/// Per-site wake-ups and the sites waiting to be announced to the others.
#[derive(Clone, Default)]
pub struct Dispatcher {
    sites: Arc<Mutex<HashMap<SiteId, Arc<Notify>>>>,
    outbox: Arc<Mutex<BTreeSet<SiteId>>>,
    outbox_ready: Arc<Notify>,
    metrics: Metrics,
}

impl Dispatcher {
    pub fn new(metrics: &Metrics) -> Dispatcher {
        Dispatcher {
            metrics: metrics.clone(),
            ..Dispatcher::default()
        }
    }

    pub(crate) fn notify_of(&self, site: &SiteId) -> Arc<Notify> {
        self.sites
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(site.clone())
            .or_default()
            .clone()
    }

    /// Wakes the site's session dispatcher here and queues a note for the
    /// other replicas (a new command, cancel or ETA).
    pub fn nudge(&self, site: &SiteId) {
        self.wake(site, Cause::Local);
        self.outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(site.clone());
        self.outbox_ready.notify_one();
    }

    /// Wakes the site's session here, if this replica has one (or had).
    pub fn wake(&self, site: &SiteId, cause: Cause) {
        let n = self
            .sites
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(site)
            .cloned();
        if let Some(n) = n {
            n.notify_one();
            self.count(cause, 1);
        }
    }

    /// Wakes every session here (notes may have been missed).
    pub fn wake_all(&self, cause: Cause) {
        let all: Vec<Arc<Notify>> = self
            .sites
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for n in &all {
            n.notify_one();
        }
        self.count(cause, all.len() as u64);
    }

    /// Waits until a site is queued for a note, and takes them all.
    pub async fn to_announce(&self) -> Vec<SiteId> {
        loop {
            let taken = std::mem::take(&mut *self.outbox.lock().unwrap_or_else(|p| p.into_inner()));
            if !taken.is_empty() {
                return taken.into_iter().collect();
            }
            self.outbox_ready.notified().await;
        }
    }

    /// Puts back sites whose note could not be sent.
    pub fn requeue(&self, sites: Vec<SiteId>) {
        self.outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(sites);
    }

    /// Counts one read of the commands table by dispatch.
    pub fn counted_query(&self) {
        self.metrics.dispatch_queries.inc();
    }

    fn count(&self, cause: Cause, n: u64) {
        self.metrics
            .dispatch_wakes
            .get_or_create(&CauseLabel {
                cause: cause.as_str(),
            })
            .inc_by(n);
    }
}

/// The notes that announce `sites` from `replica`: `replica site site …`,
/// each at most [`crate::store::notify::MAX_PAYLOAD`] bytes.
pub fn encode_note(replica: &str, sites: &[SiteId]) -> Vec<String> {
    let max = crate::store::notify::MAX_PAYLOAD;
    let mut out = Vec::new();
    let mut cur = String::from(replica);
    for s in sites {
        if cur.len() > replica.len() && cur.len() + 1 + s.len() > max {
            out.push(std::mem::replace(&mut cur, String::from(replica)));
        }
        cur.push(' ');
        cur.push_str(s);
    }
    if cur.len() > replica.len() {
        out.push(cur);
    }
    out
}

/// A note's sender and the sites it names; sites that are not site ids
/// are left out (and counted in the second value).
pub fn decode_note(payload: &str) -> (&str, Vec<SiteId>, usize) {
    let mut words = payload.split(' ').filter(|w| !w.is_empty());
    let from = words.next().unwrap_or("");
    let mut bad = 0;
    let sites = words
        .filter_map(|w| SiteId::parse(w).map_err(|_| bad += 1).ok())
        .collect();
    (from, sites, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(s: &str) -> SiteId {
        SiteId::parse(s).unwrap()
    }

    #[test]
    fn a_note_names_its_sender_and_sites_and_reads_back() {
        let notes = encode_note("10.0.0.1:7443", &[site("site-a"), site("site-b")]);
        assert_eq!(notes, vec!["10.0.0.1:7443 site-a site-b".to_string()]);
        let (from, sites, bad) = decode_note(&notes[0]);
        assert_eq!(from, "10.0.0.1:7443");
        assert_eq!(sites, vec![site("site-a"), site("site-b")]);
        assert_eq!(bad, 0);
    }

    #[test]
    fn many_sites_are_cut_into_notes_postgres_accepts_and_none_is_lost() {
        let sites: Vec<SiteId> = (0..5_000).map(|i| site(&format!("site-{i:05}"))).collect();
        let notes = encode_note("replica-1", &sites);
        assert!(notes.len() > 1);
        let mut back = Vec::new();
        for n in &notes {
            assert!(n.len() <= crate::store::notify::MAX_PAYLOAD, "{}", n.len());
            let (from, s, bad) = decode_note(n);
            assert_eq!((from, bad), ("replica-1", 0));
            back.extend(s);
        }
        assert_eq!(back, sites);
    }

    /// A note is read off the database from another replica: whatever its
    /// bytes, reading it never panics, and every site it yields is a site
    /// id; whatever the sites, encoding then decoding gives them back.
    #[test]
    fn any_note_reads_without_panic_and_any_sites_round_trip() {
        let alphabet: Vec<char> = "site-AZ_09 .\u{0}\u{7f}é\n".chars().collect();
        for _ in 0..5_000 {
            let len = fastrand::usize(0..200);
            let junk: String = (0..len)
                .map(|_| alphabet[fastrand::usize(..alphabet.len())])
                .collect();
            let (_, sites, _) = decode_note(&junk);
            for s in sites {
                assert!(SiteId::parse(&s).is_ok(), "{s:?}");
            }
            let ids: Vec<SiteId> = (0..fastrand::usize(0..50))
                .map(|i| site(&format!("s-{i}-{}", fastrand::u32(..))))
                .collect();
            let back: Vec<SiteId> = encode_note("r", &ids)
                .iter()
                .flat_map(|n| decode_note(n).1)
                .collect();
            assert_eq!(back, ids);
        }
    }

    #[test]
    fn no_sites_make_no_note() {
        assert!(encode_note("r", &[]).is_empty());
    }

    #[test]
    fn words_that_are_not_site_ids_are_left_out_and_counted() {
        let (from, sites, bad) = decode_note("r site-a Bad!Site  site-b");
        assert_eq!(from, "r");
        assert_eq!(sites, vec![site("site-a"), site("site-b")]);
        assert_eq!(bad, 1);
        assert_eq!(decode_note(""), ("", vec![], 0));
    }

    #[test]
    fn a_nudge_wakes_the_site_here_and_queues_one_note_however_many_nudges() {
        let d = Dispatcher::default();
        let n = d.notify_of(&site("site-a"));
        d.nudge(&site("site-a"));
        d.nudge(&site("site-a"));
        let taken = futures_now(d.to_announce());
        assert_eq!(taken, vec![site("site-a")]);
        // the permit was stored: the session's next wait returns at once
        futures_now(n.notified());
    }

    #[test]
    fn a_wake_for_a_site_without_a_session_here_creates_nothing() {
        let d = Dispatcher::default();
        d.wake(&site("elsewhere"), Cause::Peer);
        assert!(d.sites.lock().unwrap().is_empty());
    }

    /// Runs a future that must be ready now.
    fn futures_now<F: std::future::Future>(f: F) -> F::Output {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(std::time::Duration::from_millis(100), f)
                .await
                .expect("ready at once")
        })
    }
}

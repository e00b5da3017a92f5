//! Live sessions per site (one per site: a new one takes over) and the
//! sites whose data the database refuses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::domain::{SiteId, UnixMs};
use crate::wallclock::now;

/// Live sessions, for status (bounded by the number of connected agents).
#[derive(Clone, Default)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<SiteId, SessionInfo>>>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
    /// The last commit failure per site, until a commit of that site
    /// succeeds (bounded by the sites that have certificates): a site whose
    /// data the database refuses is flagged, never silently stuck.
    errors: Arc<Mutex<HashMap<SiteId, IngestError>>>,
    /// This replica's id (its sessions' rows in `agent_sessions` carry it).
    replica: Arc<String>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct IngestError {
    pub since_ms: UnixMs,
    pub last_ms: UnixMs,
    pub failures: u64,
    pub error: String,
}

/// A site's link as its agent measures it (`LinkReport`): throughput,
/// bytes on the wire per reading, its backlog and when it will be gone.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LinkInfo {
    /// When the agent measured it (the site's clock, corrected), Unix ms.
    pub reported_ms: UnixMs,
    pub up_bytes_per_s: Option<f64>,
    pub down_bytes_per_s: Option<f64>,
    pub bytes_per_reading: Option<f64>,
    pub live_per_s: Option<f64>,
    pub acked_per_s: Option<f64>,
    pub backlog: u64,
    /// Age of the oldest entry not yet acknowledged, seconds.
    pub backlog_age_s: Option<f64>,
    pub drain_eta_s: Option<f64>,
}

impl LinkInfo {
    /// From the agent's report; figures that are not finite and
    /// non-negative are left out (a bad agent cannot put NaN in the API).
    pub fn from_report(r: &tankwatch_proto::v1::LinkReport, shift_ms: i64, now_ms: i64) -> Self {
        let ok = |v: Option<f64>| v.filter(|x| x.is_finite() && *x >= 0.0);
        let reported_ms = UnixMs::from_ms(r.ts_ms.saturating_add(shift_ms));
        Self {
            reported_ms,
            up_bytes_per_s: ok(r.up_bytes_per_s),
            down_bytes_per_s: ok(r.down_bytes_per_s),
            bytes_per_reading: ok(r.bytes_per_entry),
            live_per_s: ok(r.live_per_s),
            acked_per_s: ok(r.acked_per_s),
            backlog: r.backlog,
            backlog_age_s: (r.oldest_ms > 0)
                .then(|| (now_ms - r.oldest_ms.saturating_add(shift_ms)) as f64 / 1000.0)
                .filter(|a| *a >= 0.0),
            drain_eta_s: ok(r.drain_eta_s),
        }
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SessionInfo {
    pub peer: String,
    pub since_ms: UnixMs,
    pub agent_version: String,
    pub acked_through: u64,
    /// The link as the agent last reported it (agents from issue 30 on).
    pub link: Option<LinkInfo>,
    /// Which session of the site this is (a newer one replaces it).
    #[serde(skip)]
    id: u64,
    /// Told why, when a newer session of the same site replaces this one.
    #[serde(skip)]
    replaced: Arc<tokio::sync::watch::Sender<Option<String>>>,
}

impl Sessions {
    /// The sessions of replica `replica`.
    pub fn of_replica(replica: &str) -> Sessions {
        Sessions {
            replica: Arc::new(replica.to_string()),
            ..Sessions::default()
        }
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SiteId, SessionInfo>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
    pub fn get(&self, site: &str) -> Option<SessionInfo> {
        self.lock().get(site).cloned()
    }

    /// Registers a new session of `site`: one session per site, so an
    /// older one is told it was replaced (and ends). Returns the session's
    /// id and where it will be told, and whether it took another's place.
    pub(crate) fn start(
        &self,
        site: &SiteId,
        peer: String,
        agent_version: String,
        acked_through: u64,
    ) -> (u64, tokio::sync::watch::Receiver<Option<String>>, bool) {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let (tx, rx) = tokio::sync::watch::channel(None);
        let why = format!("replaced by a newer session of site {site} from {peer}");
        let old = self.lock().insert(
            site.clone(),
            SessionInfo {
                peer,
                since_ms: now(),
                agent_version,
                acked_through,
                link: None,
                id,
                replaced: Arc::new(tx),
            },
        );
        if let Some(old) = &old {
            old.replaced.send_replace(Some(why));
        }
        (id, rx, old.is_some())
    }

    /// Session `id` of `site` ended: removed, unless a newer one took its place.
    pub(crate) fn end(&self, site: &SiteId, id: u64) {
        let mut m = self.lock();
        if m.get(site).is_some_and(|s| s.id == id) {
            m.remove(site);
        }
    }

    pub(crate) fn set_link(&self, site: &SiteId, id: u64, link: LinkInfo) {
        if let Some(s) = self.lock().get_mut(site).filter(|s| s.id == id) {
            s.link = Some(link);
        }
    }

    pub(crate) fn set_acked(&self, site: &SiteId, id: u64, acked: u64) {
        if let Some(s) = self.lock().get_mut(site).filter(|s| s.id == id) {
            s.acked_through = acked;
        }
    }
    fn errors(&self) -> std::sync::MutexGuard<'_, HashMap<SiteId, IngestError>> {
        self.errors.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// The site's data is failing to commit, if it is.
    pub fn ingest_error(&self, site: &str) -> Option<IngestError> {
        self.errors().get(site).cloned()
    }
    /// Sites whose last commit failed.
    pub fn failing_sites(&self) -> usize {
        self.errors().len()
    }
    pub(crate) fn commit_failed(&self, site: &SiteId, error: &str) {
        let now = now();
        let mut e = self.errors();
        let entry = e.entry(site.clone()).or_insert_with(|| IngestError {
            since_ms: now,
            last_ms: now,
            failures: 0,
            error: String::new(),
        });
        entry.last_ms = now;
        entry.failures += 1;
        entry.error = error.chars().take(500).collect();
    }
    pub(crate) fn commit_succeeded(&self, site: &SiteId) {
        let mut e = self.errors();
        if !e.is_empty() {
            e.remove(site);
        }
    }
}

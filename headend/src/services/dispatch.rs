//! The per-site nudges that wake a site's session dispatcher (a new
//! command, a cancel). The services nudge; the session that serves the
//! site (`ingest::dispatch`) waits on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Per-site nudges (bounded by the number of sites).
#[derive(Clone, Default)]
pub struct Dispatcher {
    sites: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
}

impl Dispatcher {
    pub(crate) fn notify_of(&self, site: &crate::domain::SiteId) -> Arc<Notify> {
        self.sites
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(site.to_string())
            .or_default()
            .clone()
    }

    /// Wakes the site's session dispatcher (a new command or cancel).
    pub fn nudge(&self, site: &crate::domain::SiteId) {
        self.notify_of(site).notify_one();
    }
}

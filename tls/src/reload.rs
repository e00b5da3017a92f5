//! A server config that follows its files: when a watched file changes,
//! the config is rebuilt and the next handshake uses it; open connections
//! keep theirs. A new set of files that does not load is refused with an
//! error in the log while the old config keeps serving. This is how the
//! headend's certificates rotate without a restart and without agent
//! downtime (agents trust the CA, not the leaf).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

/// How often the files are checked for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// The current server config, swappable while running.
#[derive(Clone)]
pub struct Reloading(Arc<RwLock<Arc<rustls::ServerConfig>>>);

impl Reloading {
    pub fn new(first: rustls::ServerConfig) -> Self {
        Reloading(Arc::new(RwLock::new(Arc::new(first))))
    }

    /// The config for the next handshake.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        match self.0.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn replace(&self, cfg: rustls::ServerConfig) {
        let mut c = match self.0.write() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        *c = Arc::new(cfg);
    }

    /// Checks `files` every [`RELOAD_CHECK`] and rebuilds with `build`
    /// when one changed, until `stop` says so. `what` names the config in
    /// the log.
    pub async fn follow<E: std::fmt::Display>(
        self,
        what: &'static str,
        files: Vec<PathBuf>,
        build: impl Fn() -> Result<rustls::ServerConfig, E>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mtimes = || -> Vec<Option<SystemTime>> {
            files
                .iter()
                .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
                .collect()
        };
        let mut seen = mtimes();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RELOAD_CHECK) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let now = mtimes();
            if now == seen {
                continue;
            }
            seen = now;
            match build() {
                Ok(cfg) => {
                    self.replace(cfg);
                    tracing::info!(what, "TLS certificate files changed; reloaded");
                }
                Err(e) => tracing::error!(what, error = %e,
                    "TLS certificate files changed but do not load; still serving the previous ones"),
            }
        }
    }
}

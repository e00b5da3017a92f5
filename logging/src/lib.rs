//! How the project's binaries log (the agent and the headend alike):
//! `tracing` to stdout, plain text (colour only at a terminal) or JSON on
//! request, filtered by `RUST_LOG` or the binary's default, and **rate
//! limited per call site**.
//!
//! # The rate limit (issue 28, item 6)
//! A fault that repeats (a full disk, a flood of connections, a device
//! that answers garbage) must not fill the disk with the process's own log.
//! Each call site (one `warn!` in the source) may write [`BURST`] lines per
//! [`WINDOW`] at `info`, `warn` and `error`; further lines in that window
//! are counted, not written. Every [`WINDOW`], one line per call site that
//! was held back says how many lines it suppressed and where they come
//! from (`repeated log lines suppressed`, with `suppressed`, `callsite`,
//! `file`, `line`). `debug` and `trace`, turned on by hand with `RUST_LOG`
//! to diagnose, are never limited. The process-wide count is
//! [`suppressed_total`] (a metric in both binaries).
//!
//! Bound: the limiter's table has one entry per call site that ever logged,
//! a fixed set compiled into the binary.
//!
//! # The open-files limit
//! [`raise_fd_limit`]: both binaries raise their soft limit to the hard
//! one at start. The systemd default soft limit is 1,024; every listener
//! connection (the headend's agents, the agent's OPC UA clients) holds a
//! descriptor, and running out of them stops a process accepting anything,
//! devices included.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Lines one call site may write per [`WINDOW`].
pub const BURST: u64 = 20;
/// The rate limit's window.
pub const WINDOW: Duration = Duration::from_secs(10);

static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// Lines suppressed by the rate limit since the process started.
pub fn suppressed_total() -> u64 {
    SUPPRESSED.load(Ordering::Relaxed)
}

struct Site {
    meta: &'static Metadata<'static>,
    window_start: Instant,
    written: u64,
    suppressed: u64,
}

/// A per-layer filter: at most `burst` lines per call site per `window`
/// (see the crate docs). Cheap to clone: the state is shared.
#[derive(Clone)]
pub struct RateLimit {
    inner: std::sync::Arc<Mutex<HashMap<Identifier, Site>>>,
    burst: u64,
    window: Duration,
}

impl RateLimit {
    pub fn new(burst: u64, window: Duration) -> RateLimit {
        RateLimit {
            inner: Default::default(),
            burst,
            window,
        }
    }

    fn admit(&self, meta: &'static Metadata<'static>, now: Instant) -> bool {
        if *meta.level() > Level::INFO {
            return true; // debug and trace: asked for by hand
        }
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let site = t.entry(meta.callsite()).or_insert(Site {
            meta,
            window_start: now,
            written: 0,
            suppressed: 0,
        });
        if now.duration_since(site.window_start) >= self.window {
            // what the last window held back is reported by `report`
            site.window_start = now;
            site.written = 0;
        }
        if site.written < self.burst {
            site.written += 1;
            true
        } else {
            site.suppressed += 1;
            SUPPRESSED.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Writes one line per call site that suppressed lines since the last
    /// report (through the global subscriber); returns how many sites.
    pub fn report(&self) -> usize {
        let held: Vec<(&'static Metadata<'static>, u64)> = {
            let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            t.values_mut()
                .filter(|s| s.suppressed > 0)
                .map(|s| (s.meta, std::mem::take(&mut s.suppressed)))
                .collect()
        };
        for (meta, n) in &held {
            tracing::warn!(
                target: "tankwatch::logging",
                suppressed = n,
                callsite = meta.name(),
                level = %meta.level(),
                file = meta.file().unwrap_or(""),
                line = meta.line().unwrap_or(0),
                message_target = meta.target(),
                "repeated log lines suppressed"
            );
        }
        held.len()
    }
}

impl<S> Filter<S> for RateLimit {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, _cx: &Context<'_, S>) -> bool {
        self.admit(event.metadata(), Instant::now())
    }
}

/// Raises the soft open-files limit to the hard one; returns the limit in
/// force (logged).
pub fn raise_fd_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                tracing::info!(from = soft, to = hard, "raised the open-files limit");
                Some(hard)
            }
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "could not raise the open-files limit");
                Some(soft)
            }
        },
        Ok((soft, _)) => Some(soft),
        Err(e) => {
            tracing::warn!(error = %e, "reading the open-files limit");
            None
        }
    }
}

/// Sets up logging for a binary: `RUST_LOG` or `default_filter`, JSON
/// when `json`, and the rate limit, whose reports a background thread
/// writes every [`WINDOW`]. Call once, first thing in `main`.
pub fn init(json: bool, default_filter: &str) {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let limit = RateLimit::new(BURST, WINDOW);
    let registry = tracing_subscriber::registry();
    let r = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_filter(filter().and(limit.clone())),
            )
            .try_init()
    } else {
        // colour only for a person at a terminal: never in files or the journal
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout())
            && std::env::var_os("NO_COLOR").is_none();
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_filter(filter().and(limit.clone())),
            )
            .try_init()
    };
    if r.is_err() {
        return; // a subscriber is set already (tests)
    }
    let spawned = std::thread::Builder::new()
        .name("log-rate-limit".into())
        .spawn(move || {
            loop {
                std::thread::sleep(WINDOW);
                limit.report();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "log rate limit reports: no thread; suppressed lines are only counted");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(s: &Sink) -> Vec<String> {
        String::from_utf8(s.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn warn_from_one_place(i: u32) {
        tracing::warn!(i, "the disk is full");
    }

    #[test]
    fn a_repeating_warning_is_written_burst_times_per_window_then_counted_and_reported() {
        let sink = Sink::default();
        let limit = RateLimit::new(5, Duration::from_secs(3600));
        let w = sink.clone();
        let sub = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || w.clone())
                .with_filter(limit.clone()),
        );
        let before = suppressed_total();
        tracing::subscriber::with_default(sub, || {
            for i in 0..1000 {
                warn_from_one_place(i);
            }
            tracing::error!("another place is not held back by the first");
            tracing::debug!("debug is never limited (and here filtered by nobody)");
            assert_eq!(limit.report(), 1, "one call site held lines back");
            assert_eq!(limit.report(), 0, "each held-back line is reported once");
        });
        let out = lines(&sink);
        assert_eq!(
            out.iter()
                .filter(|l| l.contains("the disk is full"))
                .count(),
            5,
            "{out:#?}"
        );
        assert!(out.iter().any(|l| l.contains("another place")));
        let summary: Vec<&String> = out
            .iter()
            .filter(|l| l.contains("repeated log lines suppressed"))
            .collect();
        assert_eq!(summary.len(), 1, "{out:#?}");
        assert!(
            summary[0].contains("suppressed=995") && summary[0].contains("lib.rs"),
            "the report says how many and where: {}",
            summary[0]
        );
        assert!(suppressed_total() - before >= 995);
    }

    #[test]
    fn a_call_site_writes_again_in_the_next_window() {
        let limit = RateLimit::new(2, Duration::from_millis(50));
        struct Cs;
        static CS: Cs = Cs;
        static META: Metadata<'static> = tracing::metadata!(
            name: "test",
            target: "test",
            level: Level::WARN,
            fields: &[],
            callsite: &CS,
            kind: tracing::metadata::Kind::EVENT
        );
        impl tracing::Callsite for Cs {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                &META
            }
        }
        let t0 = Instant::now();
        let admitted = |t: Instant| limit.admit(&META, t);
        assert!(admitted(t0) && admitted(t0));
        assert!(!admitted(t0), "the third in a window waits");
        assert!(admitted(t0 + Duration::from_millis(60)), "a new window");
    }
}

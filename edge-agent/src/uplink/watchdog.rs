//! The uplink's watchdog: a session that never comes back (no attempt
//! within its limit) is counted, and after [`STALL_FATAL`] ends the agent.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{SETUP_TIMEOUT, UplinkStatus};
use crate::config::AgentConfig;

/// The watchdog's limit: with no session, an attempt must start at least
/// this often (plus `backoff_max_ms`); a stall that lasts
/// [`STALL_FATAL`] ends the agent (its supervisor restarts it).
const STALL_SLACK: Duration = Duration::from_secs(5);
const STALL_FATAL: Duration = Duration::from_secs(300);

/// Watches the uplink's liveness: while it has no session, it must start
/// an attempt at least every `backoff_max_ms` (+ the setup deadline). A
/// stall is logged and counted (`uplink_stalls`); one that lasts
/// [`STALL_FATAL`] ends the agent, so that its supervisor restarts it.
pub async fn watchdog(
    cfg: Arc<AgentConfig>,
    status: watch::Receiver<UplinkStatus>,
    mut stop: watch::Receiver<bool>,
    metrics: crate::metrics::Metrics,
    fatal: crate::Fatal,
) {
    let limit = Duration::from_millis(cfg.uplink.backoff_max_ms) + SETUP_TIMEOUT + STALL_SLACK;
    let mut stalled_since: Option<tokio::time::Instant> = None;
    // a session that just ended was alive until then: the next attempt is
    // due within the limit from its end, not from its start (issue 29: a
    // session longer than the limit raised a false stall when it ended)
    let mut connected_seen: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
        let (connected, last) = {
            let s = status.borrow();
            (s.connected, s.last_attempt)
        };
        if connected {
            connected_seen = Some(tokio::time::Instant::now());
        }
        let since = last.max(connected_seen);
        let overdue = !connected && since.is_some_and(|t| t.elapsed() > limit);
        match (overdue, stalled_since) {
            (true, None) => {
                stalled_since = Some(tokio::time::Instant::now());
                metrics.uplink_stalls.inc();
                tracing::error!(
                    limit_s = limit.as_secs(),
                    "uplink stalled: no connection attempt within its limit"
                );
            }
            (true, Some(t)) if t.elapsed() > STALL_FATAL => {
                fatal.ended("uplink", "stalled: no connection attempt for 5 minutes");
                return;
            }
            (false, Some(_)) => stalled_since = None,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_stalled_uplink_is_counted_and_after_five_minutes_ends_the_agent() {
        let yaml = "site_id: s\nheadend: { address: 127.0.0.1:7443 }\ntls: { cert: a, key: b, ca: c }\nuplink: { backoff_max_ms: 1000 }\nassets: []\ndevices: []\n";
        let cfg = Arc::new(crate::config::parse("t.yaml", yaml).unwrap());
        let (status_tx, status) = watch::channel(UplinkStatus {
            last_attempt: Some(tokio::time::Instant::now()),
            ..Default::default()
        });
        let (_stop_tx, stop) = watch::channel(false);
        let metrics = crate::metrics::Metrics::default();
        let (fatal, mut fatal_rx) = crate::Fatal::new(stop.clone());
        let dog = tokio::spawn(watchdog(cfg, status, stop, metrics.clone(), fatal));
        // attempts keep coming: no stall
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            status_tx.send_modify(|s| s.last_attempt = Some(tokio::time::Instant::now()));
        }
        assert_eq!(metrics.uplink_stalls.get(), 0);
        // a session of 100 s ends; the next attempt follows within the limit: no stall
        status_tx.send_modify(|s| {
            s.connected = true;
            s.last_attempt = Some(tokio::time::Instant::now());
        });
        tokio::time::sleep(Duration::from_secs(100)).await;
        status_tx.send_modify(|s| s.connected = false);
        tokio::time::sleep(Duration::from_secs(3)).await;
        status_tx.send_modify(|s| s.last_attempt = Some(tokio::time::Instant::now()));
        assert_eq!(
            metrics.uplink_stalls.get(),
            0,
            "the end of a long session is no stall"
        );
        // no attempt for longer than backoff_max + setup deadline + slack
        tokio::time::sleep(Duration::from_secs(40)).await;
        assert_eq!(metrics.uplink_stalls.get(), 1, "counted once");
        assert!(fatal_rx.borrow().is_none(), "not fatal yet");
        tokio::time::sleep(Duration::from_secs(301)).await;
        fatal_rx.wait_for(|f| f.is_some()).await.unwrap();
        assert!(
            fatal_rx
                .borrow()
                .as_deref()
                .unwrap_or("")
                .contains("stalled")
        );
        dog.await.unwrap();
    }
}

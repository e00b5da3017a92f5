//! What the replicas tell each other (issue 35), on every replica (no
//! lease):
//!
//! * [`announce`]: sends the notes [`Dispatcher::nudge`] queued.
//! * [`listen`]: wakes the sessions here that another replica's note
//!   names, and reloads the revocation list when one changed anywhere.
//!   After a reconnect (notes may have been missed) it wakes every
//!   session and reloads.
//! * [`dispatch_safety_net`]: every [`SAFETY_NET`], one read of which
//!   sites have something to dispatch, and a wake for those with a
//!   session here: what a lost note costs (a crash between a commit and
//!   its note, a listener cut without a reset).

use std::time::Duration;

use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::services::Dispatcher;
use crate::services::dispatch::{Cause, decode_note, encode_note};
use crate::services::enrollment::SharedIssuing;
use crate::store::Db;
use crate::store::notify::{Channel, Heard};

/// The dispatch safety net's period (and the revocation list's reload).
pub const SAFETY_NET: Duration = Duration::from_secs(30);
/// Most sites the safety net wakes in one round.
const SAFETY_NET_SITES: i64 = 100_000;

/// Sends the queued notes; a failed note is retried each second.
pub async fn announce(
    db: Db,
    dispatcher: Dispatcher,
    metrics: Metrics,
    replica: String,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let sites = tokio::select! {
            s = dispatcher.to_announce() => s,
            _ = stop.wait_for(|s| *s) => return,
        };
        let mut failed = false;
        for note in encode_note(&replica, &sites) {
            if let Err(e) = db.notify(Channel::Dispatch, &note).await {
                tracing::warn!(error = %e, sites = sites.len(), "telling the other replicas failed; retried in 1 s (the 30 s safety net covers a loss)");
                metrics.notes_failed.inc();
                failed = true;
                break;
            }
        }
        if failed {
            // all again: a second note for a site costs one read
            dispatcher.requeue(sites);
            if !super::pause(Duration::from_secs(1), &mut stop).await {
                return;
            }
        }
    }
}

/// Listens to the other replicas' notes (PostgreSQL), reconnecting with
/// backoff and jitter; on SQLite, waits for shutdown.
pub async fn listen(
    db: Db,
    dispatcher: Dispatcher,
    issuing: SharedIssuing,
    metrics: Metrics,
    replica: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    loop {
        let listener = tokio::select! {
            l = db.listen() => l,
            _ = stop.wait_for(|s| *s) => return,
        };
        let mut listener = match listener {
            Ok(Some(l)) => l,
            Ok(None) => {
                let _ = stop.wait_for(|s| *s).await;
                return;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = backoff(failures, jitter());
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(error = %e, attempt = failures, wait_ms = wait.as_millis() as u64, "cannot listen to the other replicas; commands from them wait for the 30 s safety net");
                }
                if !super::pause(wait, &mut stop).await {
                    return;
                }
                continue;
            }
        };
        if failures > 0 {
            tracing::info!(attempts = failures, "listening to the other replicas again");
        }
        failures = 0;
        metrics.listening.set(1);
        // what was said while not listening is lost: catch up
        caught_up(&db, &dispatcher, &issuing).await;
        loop {
            let heard = tokio::select! {
                h = listener.next() => h,
                _ = stop.wait_for(|s| *s) => return,
            };
            match heard {
                Ok(Heard::Note {
                    channel: Channel::Dispatch,
                    payload,
                }) => {
                    let (from, sites, bad) = decode_note(&payload);
                    if bad > 0 {
                        tracing::warn!(
                            bad,
                            from,
                            "a note named words that are not site ids; left out"
                        );
                    }
                    if from == replica {
                        continue; // woken here when it was queued
                    }
                    for s in &sites {
                        dispatcher.wake(s, Cause::Peer);
                    }
                }
                Ok(Heard::Note {
                    channel: Channel::Revocations,
                    ..
                }) => issuing.refresh(&db).await,
                Ok(Heard::Lost) => {
                    tracing::warn!(
                        "the listening connection was lost and made again; waking every session"
                    );
                    caught_up(&db, &dispatcher, &issuing).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "listening to the other replicas stopped; reconnecting");
                    break;
                }
            }
        }
        metrics.listening.set(0);
    }
}

async fn caught_up(db: &Db, dispatcher: &Dispatcher, issuing: &SharedIssuing) {
    dispatcher.wake_all(Cause::Reconnect);
    issuing.refresh(db).await;
}

/// How often a replica says it is alive (its sessions' rows are believed
/// by the others while its beat is fresh:
/// [`crate::services::sites::PRESENCE_FRESH_MS`]).
pub const HEARTBEAT: Duration = Duration::from_secs(10);

/// Beats every [`HEARTBEAT`] (PostgreSQL; nothing on SQLite).
pub async fn heartbeat(db: Db, replica: String, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(e) = db
            .presence()
            .heartbeat(&replica, crate::wallclock::now_ms())
            .await
        {
            tracing::warn!(error = %e, "the replica's heartbeat was not recorded; other replicas show its sites disconnected after 30 s");
        }
        if !super::pause(HEARTBEAT, &mut stop).await {
            return;
        }
    }
}

/// Every [`SAFETY_NET`]: wakes the sessions here of the sites that have
/// something to dispatch (one query however many sessions).
pub async fn dispatch_safety_net(db: Db, dispatcher: Dispatcher, mut stop: watch::Receiver<bool>) {
    while super::pause(SAFETY_NET, &mut stop).await {
        dispatcher.counted_query();
        match db
            .commands()
            .sites_with_dispatchable(SAFETY_NET_SITES)
            .await
        {
            Ok(sites) => {
                for s in sites {
                    match crate::domain::SiteId::parse(&s) {
                        Ok(s) => dispatcher.wake(&s, Cause::Poll),
                        Err(e) => {
                            tracing::warn!(error = %e, "a stored command's site is not a site id")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the dispatch safety net could not read the commands")
            }
        }
    }
}

/// The wait before reconnect attempt `n` (from 1): 250 ms doubling to
/// 10 s, times `jitter` in [0.5, 1.5) so that replicas do not reconnect in
/// step after a database restart.
pub fn backoff(n: u32, jitter: f64) -> Duration {
    let base = 250u64
        .saturating_mul(1u64 << n.saturating_sub(1).min(6))
        .min(10_000);
    Duration::from_millis((base as f64 * jitter.clamp(0.5, 1.5)) as u64)
}

fn jitter() -> f64 {
    0.5 + fastrand::f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnects_back_off_from_a_quarter_second_to_ten_seconds() {
        let ms = |n| backoff(n, 1.0).as_millis();
        assert_eq!(ms(1), 250);
        assert_eq!(ms(2), 500);
        assert_eq!(ms(5), 4_000);
        assert_eq!(ms(7), 10_000);
        assert_eq!(ms(u32::MAX), 10_000);
    }

    #[test]
    fn jitter_spreads_a_wait_by_half_either_way_and_no_more() {
        assert_eq!(backoff(3, 0.5).as_millis(), 500);
        assert_eq!(backoff(3, 1.49).as_millis(), 1_490);
        assert_eq!(backoff(3, 9.0).as_millis(), 1_500);
        for _ in 0..1000 {
            let j = jitter();
            assert!((0.5..1.5).contains(&j), "{j}");
        }
    }
}

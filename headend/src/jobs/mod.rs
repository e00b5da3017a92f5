//! Background jobs. Each holds a database lease while it runs, so that
//! with several headend replicas on one database only one runs it; a
//! replica that dies loses its lease when the lease's time runs out.
//!
//! * [`sweep`]: commands that expired before they could be sent (every second).
//! * [`retention`]: raw readings and rollups past their windows; the
//!   PostgreSQL day partitions ahead, and finished days packed (one row
//!   per point and hour, ADR 0006) (every `RETENTION_EVERY`).
//! * [`revocations`]: every replica reloads the revocation list (every
//!   [`REVOCATION_POLL`], a safety net under the other replicas' notes;
//!   no lease: each replica needs it).
//! * [`replicas`]: the notes between replicas and the dispatch safety net
//!   (no lease).

pub mod lease;
pub mod mail;
pub mod replicas;
pub mod webhook;

use std::time::Duration;

use tokio::sync::watch;

use crate::store::Db;
use crate::wallclock::now_ms;
pub use lease::Lease;

/// How often the retention job runs.
pub const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// How often each replica reloads the revocation list whatever it heard:
/// a revocation made through another replica closes sessions here at its
/// note (PostgreSQL `NOTIFY`, milliseconds), or within this if the note
/// was lost.
pub const REVOCATION_POLL: Duration = replicas::SAFETY_NET;

/// Reloads the revocation list from SQL every [`REVOCATION_POLL`].
pub async fn revocations(
    db: Db,
    issuing: crate::services::enrollment::SharedIssuing,
    mut stop: watch::Receiver<bool>,
) {
    while pause(REVOCATION_POLL, &mut stop).await {
        issuing.refresh(&db).await;
    }
}

/// How often every replica checks that its database takes writes.
pub const DATABASE_WATCH: Duration = Duration::from_secs(5);

/// Checks the database every [`DATABASE_WATCH`]: the `database_ready`
/// metric, and one log line when it goes away or turns read-only and one
/// when it is back (not one per failed query).
pub async fn database_watch(
    db: Db,
    metrics: crate::metrics::Metrics,
    mut stop: watch::Receiver<bool>,
) {
    let mut was = crate::store::Readiness::Ready;
    let mut since = tokio::time::Instant::now();
    metrics.database_ready.set(1);
    loop {
        let now = match tokio::time::timeout(DATABASE_WATCH, db.readiness()).await {
            Ok(r) => r,
            Err(_) => crate::store::Readiness::Unavailable(format!(
                "no answer within {} s",
                DATABASE_WATCH.as_secs()
            )),
        };
        let ready = now == crate::store::Readiness::Ready;
        metrics.database_ready.set(i64::from(ready));
        if ready != (was == crate::store::Readiness::Ready) {
            if ready {
                tracing::warn!(
                    after_s = since.elapsed().as_secs(),
                    "the database takes writes again; ingest, commands and jobs resume"
                );
            } else {
                tracing::error!(reason = %now.reason(), "the database takes no writes: ingest stops acknowledging (agents keep their readings), REST answers 503, jobs wait");
            }
            since = tokio::time::Instant::now();
        }
        was = now;
        if !pause(DATABASE_WATCH, &mut stop).await {
            return;
        }
    }
}

/// Sleeps `d` or until shutdown; false at shutdown.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.wait_for(|s| *s) => false,
    }
}

/// Marks commands that expired before they could be sent.
pub async fn sweep(db: Db, replica: String, stop: watch::Receiver<bool>) {
    let lease = Lease::with_holder("command-expiry", Duration::from_secs(10), replica);
    lease
        .every(&db, Duration::from_secs(1), stop, || {
            let db = db.clone();
            async move {
                match db.commands().expire_unsent(now_ms()).await {
                    Ok(ids) if !ids.is_empty() => {
                        tracing::info!(count = ids.len(), ids = ?ids, "commands expired before they could be sent")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
                }
            }
        })
        .await;
}

/// Applies the retention windows (and makes partitions ahead), then packs
/// finished days.
pub async fn retention(
    db: Db,
    metrics: crate::metrics::Metrics,
    replica: String,
    stop: watch::Receiver<bool>,
) {
    let lease = Lease::with_holder("retention", RETENTION_EVERY * 2, replica);
    lease
        .every(&db, RETENTION_EVERY, stop, || {
            let (db, metrics) = (db.clone(), metrics.clone());
            async move { retain(&db, &metrics).await }
        })
        .await;
}

async fn retain(db: &Db, metrics: &crate::metrics::Metrics) {
    let t = std::time::Instant::now();
    match db.telemetry.retain(db.retention, now_ms()).await {
        Ok(r) => {
            metrics.retention_readings.inc_by(r.readings);
            metrics.retention_rollups.inc_by(r.rollups);
            tracing::info!(
                readings = r.readings,
                rollups = r.rollups,
                partitions_dropped = r.partitions_dropped,
                took_ms = t.elapsed().as_millis() as u64,
                "retention applied"
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "retention failed; retried at the next run")
        }
    }
    let t = std::time::Instant::now();
    match db.telemetry.compact(now_ms()).await {
        Ok(0) => {}
        Ok(days) => tracing::info!(
            days,
            took_ms = t.elapsed().as_millis() as u64,
            "finished days packed"
        ),
        Err(e) => {
            tracing::error!(error = %e, "packing failed; retried at the next run")
        }
    }
}

/// How often the inventory job evaluates every tank by default.
pub const INVENTORY_EVERY: Duration = Duration::from_secs(60);

/// Evaluates every tank (state, loads' timing, escalations) every `every`.
pub async fn inventory(
    db: Db,
    metrics: crate::metrics::Metrics,
    every: Duration,
    settings: crate::services::evaluate::Settings,
    replica: String,
    stop: watch::Receiver<bool>,
) {
    let lease = Lease::with_holder("inventory", every * 3 + Duration::from_secs(30), replica);
    lease
        .every(&db, every, stop, || {
            let (db, metrics) = (db.clone(), metrics.clone());
            async move {
                let t = std::time::Instant::now();
                match crate::services::evaluate::run(&db, now_ms(), settings).await {
                    Ok(r) => {
                        metrics.inventory_runs.inc();
                        metrics.observations_refused.inc_by(r.refused as u64);
                        metrics.escalations_opened.inc_by(r.opened as u64);
                        metrics.escalations_cleared.inc_by(r.cleared as u64);
                        tracing::debug!(
                            tanks = r.tanks,
                            opened = r.opened,
                            reopened = r.reopened,
                            updated = r.updated,
                            cleared = r.cleared,
                            took_ms = t.elapsed().as_millis() as u64,
                            "inventory evaluated"
                        );
                    }
                    Err(e) => {
                        metrics.inventory_failures.inc();
                        tracing::error!(error = %e, "inventory evaluation failed; retried at the next run")
                    }
                }
            }
        })
        .await;
}

/// How long the quick evaluator lets marks gather after the first one:
/// readings of other sessions committed meanwhile join the same round.
pub const QUICK_DEBOUNCE: Duration = Duration::from_millis(250);

/// Evaluates the tanks whose gauge readings were just committed (marked by
/// ingest), so that the tank list shows a reading within seconds; the
/// periodic [`inventory`] job stays the safety net. Every replica runs it
/// for what it ingested (a tank's state and escalations are upserts).
pub async fn quick_inventory(
    db: Db,
    metrics: crate::metrics::Metrics,
    touched: crate::services::touched::Touched,
    settings: crate::services::evaluate::Settings,
    mut stop: watch::Receiver<bool>,
) {
    use crate::services::touched::Round;
    loop {
        let round = tokio::select! {
            r = touched.next(QUICK_DEBOUNCE) => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        let t = std::time::Instant::now();
        let tanks = match &round {
            Round::Tanks(p) => Some(p),
            Round::Everything => None,
        };
        match crate::services::evaluate::run_tanks(&db, now_ms(), settings, tanks).await {
            Ok(r) => {
                metrics.inventory_quick_runs.inc();
                metrics.observations_refused.inc_by(r.refused as u64);
                metrics.escalations_opened.inc_by(r.opened as u64);
                metrics.escalations_cleared.inc_by(r.cleared as u64);
                tracing::debug!(
                    tanks = r.tanks,
                    took_ms = t.elapsed().as_millis() as u64,
                    "tanks evaluated on new readings"
                );
            }
            Err(e) => {
                metrics.inventory_failures.inc();
                tracing::warn!(error = %e, "quick evaluation failed; the periodic run covers it")
            }
        }
    }
}

/// Sends queued notifications (escalation and alarm changes) to the
/// webhook (every second), signed when a secret is set, retrying with
/// [`webhook::backoff_ms`] and giving up after [`webhook::MAX_ATTEMPTS`]
/// (the dead letters: `GET /api/v1/webhooks/dead`).
pub async fn webhooks(
    db: Db,
    metrics: crate::metrics::Metrics,
    target: webhook::Target,
    replica: String,
    stop: watch::Receiver<bool>,
) {
    let target = std::sync::Arc::new(target);
    let lease = Lease::with_holder("webhooks", Duration::from_secs(60), replica);
    lease
        .every(&db, Duration::from_secs(1), stop, || {
            let (db, metrics, target) = (db.clone(), metrics.clone(), target.clone());
            async move { deliver(&db, &metrics, &target).await }
        })
        .await;
}

/// Pending rows one round reads (each key's order is kept among them).
const ROUND: i64 = 200;

/// One round of webhook deliveries: the oldest pending rows in order; a
/// row whose key has an earlier row waiting (not due yet, or failed in
/// this round) waits too, so each key's changes arrive in order.
async fn deliver(db: &Db, metrics: &crate::metrics::Metrics, target: &webhook::Target) {
    use crate::domain::outbox::OutboxState;
    let rows = match db.outbox().pending(ROUND).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "webhook outbox read failed");
            return;
        }
    };
    let mut waiting: std::collections::HashSet<String> = std::collections::HashSet::new();
    for r in rows {
        if waiting.contains(&r.order_key) || r.next_ms > crate::wallclock::now() {
            waiting.insert(r.order_key);
            continue;
        }
        let (state, next, err) = match target.post(r.payload.0.0.to_string()).await {
            Ok(()) => {
                metrics.webhooks_delivered.inc();
                (OutboxState::Delivered, r.next_ms, String::new())
            }
            Err(e) if r.attempts + 1 >= webhook::MAX_ATTEMPTS => {
                metrics.webhooks_dead.inc();
                tracing::warn!(id = r.id, subject = %r.subject, of = %r.escalation_id, error = %e, "webhook notification given up (dead letter)");
                (OutboxState::Dead, r.next_ms, e)
            }
            Err(e) => {
                metrics.webhook_retries.inc();
                tracing::info!(id = r.id, attempt = r.attempts + 1, error = %e, "webhook notification failed; retried");
                waiting.insert(r.order_key.clone());
                (
                    OutboxState::Pending,
                    crate::wallclock::now().plus_ms(webhook::backoff_ms(r.attempts)),
                    e,
                )
            }
        };
        if let Err(e) = db
            .outbox()
            .attempt(r.id, state, r.attempts + 1, next, &err, now_ms())
            .await
        {
            tracing::warn!(error = %e, "webhook outbox update failed");
            // the row's state is unknown: keep its key's later rows back
            waiting.insert(r.order_key);
        }
    }
}

/// Alarm mails (every second, under a lease): the mails the rules call for
/// are queued (`services::notify::round`: at once, reminders, digests) and
/// the due ones sent, retried with [`webhook::backoff_ms`] and given up
/// after `max_attempts` (visible in `GET /api/v1/mails?state=dead`). A
/// server that is down or slow holds back this job only.
pub async fn alarm_mail(
    db: Db,
    metrics: crate::metrics::Metrics,
    mailer: mail::Mailer,
    rules: crate::domain::notify::Rules,
    max_attempts: i64,
    replica: String,
    stop: watch::Receiver<bool>,
) {
    let lease = Lease::with_holder("alarm-mail", Duration::from_secs(60), replica);
    lease
        .every(&db.clone(), Duration::from_secs(1), stop, move || {
            let (db, metrics, mailer) = (db.clone(), metrics.clone(), mailer.clone());
            async move { mail_round(&db, &metrics, &mailer, &rules, max_attempts).await }
        })
        .await;
}

/// Mails one round sends at most (each attempt is bounded by
/// [`mail::ATTEMPT_TIMEOUT`]).
const MAILS_PER_ROUND: i64 = 20;

async fn mail_round(
    db: &Db,
    metrics: &crate::metrics::Metrics,
    mailer: &mail::Mailer,
    rules: &crate::domain::notify::Rules,
    max_attempts: i64,
) {
    use crate::domain::notify::MailState;
    match crate::services::notify::round(db, now_ms(), rules).await {
        Ok(r) => {
            metrics.mails_held.inc_by(r.held as u64);
        }
        Err(e) => tracing::warn!(error = %e, "alarm mails: queueing failed; retried next round"),
    }
    let rows = match db.mail().due(now_ms(), MAILS_PER_ROUND).await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "mail outbox read failed");
            return;
        }
    };
    for m in rows {
        let (state, next, err) = match mailer.send(&m.recipient, &m.subject, &m.body).await {
            Ok(()) => {
                metrics.mails_sent.inc();
                (MailState::Sent, m.next_ms, String::new())
            }
            Err(e) if e.permanent => {
                metrics.mails_dead.inc();
                tracing::warn!(id = m.id, to = %m.recipient, error = %e, "alarm mail refused for good by the relay; given up");
                (MailState::Dead, m.next_ms, e.text)
            }
            Err(e) if m.attempts + 1 >= max_attempts => {
                metrics.mails_dead.inc();
                tracing::warn!(id = m.id, to = %m.recipient, error = %e, "alarm mail given up after its last attempt");
                (MailState::Dead, m.next_ms, e.text)
            }
            Err(e) => {
                metrics.mail_retries.inc();
                tracing::info!(id = m.id, to = %m.recipient, attempt = m.attempts + 1, error = %e, "alarm mail failed; retried");
                (
                    MailState::Pending,
                    crate::wallclock::now().plus_ms(webhook::backoff_ms(m.attempts)),
                    e.text,
                )
            }
        };
        if let Err(e) = db
            .mail()
            .attempt(m.id, state, m.attempts + 1, next, &err, now_ms())
            .await
        {
            tracing::warn!(error = %e, "mail outbox update failed");
        }
    }
}

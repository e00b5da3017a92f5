//! Listener shells: who gets a connection, and for how long. The rules
//! are the pure [`admission::Table`]; here they meet sockets: each kept
//! connection holds a [`Ticket`] whose eviction it must obey, and every
//! bound, closure and count is a metric (`tankwatch_headend_listener_*`).
//!
//! | listener | max | per address | idle evicted after | timeouts |
//! |---|---|---|---|---|
//! | REST (HTTP and HTTPS) | [`rest::MAX_CONNS`] | [`rest::MAX_PER_ADDRESS`] | 1 s idle | handshake 5 s, first request 10 s, keep-alive idle 60 s |
//! | enrollment | [`crate::ingest::enroll::MAX_CONNS`] | 8 | 1 s idle | handshake 5 s, lifetime 60 s |
//! | agent, before its handshake ends | [`crate::ingest::tls::MAX_PENDING`] | none (sites share carrier NATs) | 1 s | handshake 10 s |
//!
//! The agent listener's established connections have their own bounds
//! (a certificate each, per identity, a session deadline): see
//! [`crate::ingest::tls`].

pub mod admission;
pub mod rest;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::domain::throttle::client_net;
use crate::metrics::{LimitLabel, ListenerLabel, ListenerReason, Metrics};
use crate::wallclock::now_ms;
use admission::{Admit, Bounds, Table};

struct Inner {
    table: Table<IpAddr>,
    kills: HashMap<u64, watch::Sender<bool>>,
}

/// One listener's admission: its table, the kill switches of its
/// connections, and its metrics.
pub struct Admission {
    name: &'static str,
    inner: Mutex<Inner>,
    freed: Notify,
    metrics: Metrics,
}

impl Admission {
    pub fn new(name: &'static str, bounds: Bounds, metrics: Metrics) -> Arc<Admission> {
        let limit = |limit: &'static str, v: usize| {
            metrics
                .listener_limit
                .get_or_create(&LimitLabel {
                    listener: name,
                    limit,
                })
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        limit("max_connections", bounds.max_total);
        if bounds.max_per_key != usize::MAX {
            limit("max_per_address", bounds.max_per_key);
        }
        Arc::new(Admission {
            name,
            inner: Mutex::new(Inner {
                table: Table::new(bounds),
                kills: HashMap::new(),
            }),
            freed: Notify::new(),
            metrics,
        })
    }

    /// Records a timeout bound of this listener as a metric.
    pub fn timeout_metric(&self, limit: &'static str, d: Duration) {
        self.metrics
            .listener_limit
            .get_or_create(&LimitLabel {
                listener: self.name,
                limit,
            })
            .set(i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    }

    /// Counts a closure by its reason.
    pub fn closed(&self, reason: &'static str) {
        self.metrics
            .listener_closed
            .get_or_create(&ListenerReason {
                listener: self.name,
                reason,
            })
            .inc();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn gauge(&self, n: usize) {
        self.metrics
            .listener_connections
            .get_or_create(&ListenerLabel {
                listener: self.name,
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A place for a new connection from `peer`: evicts the oldest idle
    /// connection if that makes room, waits while the listener is full of
    /// busy or young ones, and answers `None` when `peer`'s network
    /// already holds its share (close the new connection).
    pub async fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Ticket> {
        let key = client_net(peer);
        loop {
            let freed = self.freed.notified();
            let answer = {
                let mut i = self.lock();
                let a = i.table.admit(&key, now_ms());
                if let Admit::Yes { id, evict } = &a {
                    for v in evict {
                        if let Some(k) = i.kills.remove(v) {
                            k.send_replace(true);
                        }
                    }
                    let (tx, rx) = watch::channel(false);
                    i.kills.insert(*id, tx);
                    self.gauge(i.table.len());
                    Some((*id, evict.len(), rx))
                } else {
                    drop(i);
                    if a == Admit::PerKeyFull {
                        self.closed("per_address_full");
                        tracing::debug!(listener = self.name, %peer, "connection refused: its address holds its share");
                        return None;
                    }
                    None
                }
            };
            match answer {
                Some((id, evicted, kill)) => {
                    for _ in 0..evicted {
                        self.closed("evicted_idle");
                    }
                    return Some(Ticket {
                        admission: self.clone(),
                        id,
                        kill,
                    });
                }
                None => {
                    // full of busy or young connections: wait for a place
                    // (or for one to age into evictable)
                    tokio::select! {
                        _ = freed => {}
                        _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    }
                }
            }
        }
    }
}

/// A kept connection's place; dropping it frees the place.
pub struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    kill: watch::Receiver<bool>,
}

impl Ticket {
    /// A request started: the connection is not evictable until [`Ticket::done`].
    pub fn busy(&self) {
        self.admission.lock().table.busy(self.id);
    }

    pub fn done(&self) {
        self.admission.lock().table.done(self.id, now_ms());
    }

    /// Resolves when the listener evicts this connection: close it then.
    pub async fn evicted(&self) {
        self.eviction().await
    }

    /// [`Ticket::evicted`] that owns what it needs (for an IO wrapper).
    pub fn eviction(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut k = self.kill.clone();
        async move {
            let _ = k.wait_for(|k| *k).await;
        }
    }

    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let n = {
            let mut i = self.admission.lock();
            i.table.remove(self.id);
            i.kills.remove(&self.id);
            i.table.len()
        };
        self.admission.gauge(n);
        self.admission.freed.notify_waiters();
    }
}

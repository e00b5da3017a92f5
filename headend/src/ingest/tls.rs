//! The agent-facing TLS listener. Every connection must present a client
//! certificate chaining to the project CA (rustls refuses it otherwise);
//! not revoked (the verifier consults the revocation list at each
//! handshake); the site id is then read from that certificate
//! ([`tankwatch_tls::agent_cert`]) and attached to the connection, where
//! the gRPC handlers find it. The server config is read for each
//! handshake from a [`Reloading`] holder, so a rotated server certificate
//! is used at once without a restart.
//!
//! An open connection closes itself when its certificate is revoked
//! (woken by the revocation list, so within the list's propagation: at
//! once on this headend, at the revoking replica's note on others, within
//! [`crate::jobs::REVOCATION_POLL`] if the note was lost) and
//! when its certificate expires.
//!
//! Bounded: at most [`MAX_PENDING`] connections are before the end of
//! their handshake; past that, the oldest of them that has been waiting a
//! second or more is closed for the new one ([`crate::listen`]: someone
//! holding 1,000 silent connections slowed real agents' connects to
//! 4–15 s, issue 27), and if all are younger (a reconnect storm of real
//! agents) the accept loop waits and the kernel backlog holds the rest.
//! At most `ACCEPT_QUEUE` finished handshakes wait for tonic. There is no
//! bound per client address here: many sites share a carrier's NAT.
//!
//! Connections are limited too, so that no certificate holder can take
//! the headend's file descriptors ([`Limits`]):
//! * at most `max_conns` agent connections at once (kept below the fd
//!   limit; `main` raises the soft limit to the hard one): past it a new
//!   TCP connection is closed at once;
//! * at most `max_per_site` per certificate identity: a new one evicts
//!   that identity's oldest connection that has no session yet, else its
//!   oldest (a reconnecting agent's previous connection is usually a dead
//!   one the network cut);
//! * a connection must start its session (a Hello) within
//!   [`SESSION_DEADLINE`] of its handshake, else it is closed; once in a
//!   session, HTTP/2 keepalive pings (every 10 s, 10 s to answer) find a
//!   dead peer within 20 s.
//!
//! Each closure is counted (`agent_connections_refused_total{reason}`).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tankwatch_tls::Revocations;
use tankwatch_tls::reload::Reloading;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

/// Agent connections before the end of their TLS handshake, at most.
pub const MAX_PENDING: usize = 1024;
const ACCEPT_QUEUE: usize = 64;
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// From the end of the TLS handshake to the session's Hello (the HTTP/2
/// preface, the stream and the Hello itself): a connection that says
/// nothing is closed after this.
pub const SESSION_DEADLINE: Duration = Duration::from_secs(20);
/// Default of `Config::max_conns_per_site`.
pub const DEFAULT_CONNS_PER_SITE: usize = 4;
/// Default of `Config::max_conns` (lowered to the fd limit at start).
pub const DEFAULT_MAX_CONNS: usize = 10_000;

/// Who is on the other end of an agent connection, from its certificate.
#[derive(Debug, Clone)]
pub struct AgentIdentity {
    /// From the certificate's name, checked once here.
    pub site_id: crate::domain::SiteId,
    /// The certificate's serial (lowercase hex) and end of validity (Unix ms).
    pub serial: String,
    pub not_after_ms: crate::domain::UnixMs,
    pub peer: SocketAddr,
    /// Set by the ingest service when the session's Hello arrived: the
    /// connection is then no longer idle.
    pub started: Arc<watch::Sender<bool>>,
}

/// Connection limits (see the module doc).
#[derive(Clone)]
pub struct Limits {
    pub max_conns: usize,
    pub max_per_site: usize,
    /// TLS handshake deadline ([`HANDSHAKE_TIMEOUT`] by default).
    pub handshake_timeout: Duration,
    /// From handshake to Hello ([`SESSION_DEADLINE`] by default).
    pub session_deadline: Duration,
    pub metrics: crate::metrics::Metrics,
    /// Consulted to close an open connection whose certificate is revoked.
    pub revocations: Revocations,
}

/// One connection of an identity: (id, its kill switch, whether its session started).
type SiteConn = (u64, watch::Sender<bool>, watch::Receiver<bool>);

/// Open connections: the total, and per identity the kill switches of its
/// connections, oldest first.
#[derive(Default)]
struct Open {
    total: usize,
    next_id: u64,
    /// (connection id, its kill switch, whether its session started)
    per_site: HashMap<String, Vec<SiteConn>>,
}

impl Open {
    /// Records a connection of `site`, first closing its oldest (idle
    /// first) while the site has `max_per_site` open; returns its id.
    fn admit(
        &mut self,
        site: &crate::domain::SiteId,
        max_per_site: usize,
        (kill, started): (watch::Sender<bool>, watch::Receiver<bool>),
        refused: impl Fn(),
    ) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let conns = self.per_site.entry(site.to_string()).or_default();
        while conns.len() >= max_per_site.max(1) {
            // the oldest idle one; a live session only if all are live
            let victim = conns.iter().position(|(_, _, s)| !*s.borrow()).unwrap_or(0);
            let (_, kill_it, _) = conns.remove(victim);
            kill_it.send_replace(true);
            refused();
            tracing::warn!(%site, max = max_per_site, "too many connections for one certificate identity; closing its oldest");
        }
        conns.push((id, kill, started));
        id
    }
}

/// A place in the open-connection table; dropping it frees the place.
struct Slot {
    open: Arc<Mutex<Open>>,
    site: Option<(String, u64)>,
    metrics: crate::metrics::Metrics,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut o = self.open.lock().unwrap_or_else(|p| p.into_inner());
        o.total = o.total.saturating_sub(1);
        if let Some((site, id)) = &self.site
            && let Some(v) = o.per_site.get_mut(site)
        {
            v.retain(|(i, _, _)| i != id);
            if v.is_empty() {
                o.per_site.remove(site);
            }
        }
        self.metrics.connections.dec();
    }
}

/// Why an open connection is closed by the headend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseReason {
    Evicted,
    Idle,
    Revoked,
    Expired,
}

impl CloseReason {
    fn text(self) -> &'static str {
        match self {
            CloseReason::Evicted => "evicted by a newer connection of the same identity",
            CloseReason::Idle => "no session started within the deadline after the handshake",
            CloseReason::Revoked => "its certificate was revoked",
            CloseReason::Expired => "its certificate expired",
        }
    }

    /// The `agent_connections_refused_total{reason}` label (an eviction
    /// is counted where it happens, as `per_identity`).
    fn label(self) -> Option<&'static str> {
        match self {
            CloseReason::Evicted => None,
            CloseReason::Idle => Some("idle"),
            CloseReason::Revoked => Some("revoked"),
            CloseReason::Expired => Some("expired"),
        }
    }
}

type Closer = Pin<Box<dyn Future<Output = CloseReason> + Send>>;

/// An authenticated agent connection.
pub struct AgentConn {
    stream: TlsStream<TcpStream>,
    identity: AgentIdentity,
    _slot: Slot,
    /// Resolves when the connection must close: evicted by a newer one of
    /// its identity, no session within [`SESSION_DEADLINE`], its
    /// certificate revoked or expired.
    closer: Closer,
    closed: Option<CloseReason>,
}

impl AgentConn {
    fn check_closed(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.closed.is_none()
            && let Poll::Ready(why) = self.closer.as_mut().poll(cx)
        {
            tracing::warn!(site = %self.identity.site_id, peer = %self.identity.peer, why = why.text(), "closing agent connection");
            if let Some(reason) = why.label() {
                self._slot
                    .metrics
                    .connections_refused
                    .get_or_create(&crate::metrics::ReasonLabel { reason })
                    .inc();
            }
            self.closed = Some(why);
        }
        match self.closed {
            Some(why) => Err(io::Error::new(io::ErrorKind::TimedOut, why.text())),
            None => Ok(()),
        }
    }
}

impl Connected for AgentConn {
    type ConnectInfo = AgentIdentity;
    fn connect_info(&self) -> AgentIdentity {
        self.identity.clone()
    }
}

impl AsyncRead for AgentConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(e) = self.check_closed(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for AgentConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Accepts TCP connections, runs the TLS handshakes concurrently (bounded)
/// and yields authenticated connections; the accept loop is returned for
/// the caller to spawn (and supervise).
pub fn incoming(
    listener: TcpListener,
    config: Reloading,
    limits: Limits,
) -> (
    mpsc::Receiver<io::Result<AgentConn>>,
    impl Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
    let pending = crate::listen::Admission::new(
        "agent_pending",
        crate::listen::admission::Bounds {
            max_total: MAX_PENDING,
            max_per_key: usize::MAX,
            min_idle_ms: 1_000,
        },
        limits.metrics.clone(),
    );
    pending.timeout_metric("handshake_timeout_seconds", limits.handshake_timeout);
    let open = Arc::new(Mutex::new(Open::default()));
    let refused = {
        let m = limits.metrics.clone();
        move |reason: &'static str| {
            m.connections_refused
                .get_or_create(&crate::metrics::ReasonLabel { reason })
                .inc();
        }
    };
    let task = async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(permit) = pending.admit(peer.ip()).await else {
                continue;
            };
            let mut slot = {
                let mut o = open.lock().unwrap_or_else(|p| p.into_inner());
                if o.total >= limits.max_conns {
                    drop(o);
                    refused("total");
                    tracing::warn!(%peer, max = limits.max_conns, "agent connection limit reached; closing a new connection");
                    continue; // dropping `tcp` closes it
                }
                o.total += 1;
                limits.metrics.connections.inc();
                Slot {
                    open: open.clone(),
                    site: None,
                    metrics: limits.metrics.clone(),
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(config.current());
            let tx = tx.clone();
            let revocations = limits.revocations.clone();
            let (open, max_per_site) = (open.clone(), limits.max_per_site);
            let (handshake_timeout, session_deadline) =
                (limits.handshake_timeout, limits.session_deadline);
            let refused = refused.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp));
                let r = tokio::select! {
                    r = handshake => r,
                    _ = permit.evicted() => {
                        refused("evicted_pending");
                        return;
                    }
                };
                drop(permit);
                let stream = match r {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::warn!(%peer, error = %e, "agent TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        refused("handshake_timeout");
                        tracing::debug!(%peer, "agent TLS handshake timed out (counted)");
                        return;
                    }
                };
                let cert = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| tankwatch_tls::agent_cert(c));
                match cert {
                    Some(Ok(cert)) => {
                        let Some(site_id) = certified_site(&cert.site, peer) else {
                            refused("bad_identity");
                            return;
                        };
                        tracing::debug!(%peer, %site_id, "agent authenticated");
                        let (kill_tx, kill) = watch::channel(false);
                        let (started_tx, started) = watch::channel(false);
                        let id = open.lock().unwrap_or_else(|p| p.into_inner()).admit(
                            &site_id,
                            max_per_site,
                            (kill_tx, started.clone()),
                            || refused("per_identity"),
                        );
                        slot.site = Some((site_id.to_string(), id));
                        let (serial, not_after_ms) = (cert.serial.clone(), cert.not_after_ms);
                        let closer = closer(kill, started, session_deadline, revocations, cert);
                        let conn = AgentConn {
                            stream,
                            identity: AgentIdentity {
                                site_id,
                                serial,
                                not_after_ms: crate::domain::UnixMs::from_ms(not_after_ms),
                                peer,
                                started: Arc::new(started_tx),
                            },
                            _slot: slot,
                            closer,
                            closed: None,
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(%peer, error = %e, "client certificate is not an agent identity; closing")
                    }
                    None => tracing::warn!(%peer, "no client certificate; closing"),
                }
            });
        }
    };
    (rx, task)
}

/// What closes an authenticated connection, whichever comes first: a
/// newer connection of its site evicts it (`kill`), no session started
/// within `deadline`, its certificate is revoked, or it expires.
fn closer(
    mut kill: watch::Receiver<bool>,
    started: watch::Receiver<bool>,
    deadline: Duration,
    revocations: Revocations,
    cert: tankwatch_tls::AgentCert,
) -> Closer {
    Box::pin(async move {
        let idle = async {
            tokio::time::sleep(deadline).await;
            if *started.borrow() {
                std::future::pending::<()>().await;
            }
        };
        let left = cert
            .not_after_ms
            .saturating_sub(crate::wallclock::now_ms())
            .max(0);
        tokio::select! {
            _ = kill.wait_for(|k| *k) => CloseReason::Evicted,
            _ = idle => CloseReason::Idle,
            _ = revocations.revoked(&cert) => CloseReason::Revoked,
            _ = tokio::time::sleep(Duration::from_millis(left as u64)) => CloseReason::Expired,
        }
    })
}

/// The site a verified agent certificate names, checked once here. The
/// CA signs only site ids; a certificate naming something else is not one
/// of ours (logged, closed).
fn certified_site(name: &str, peer: SocketAddr) -> Option<crate::domain::SiteId> {
    crate::domain::SiteId::parse(name)
        .inspect_err(
            |e| tracing::warn!(%peer, error = %e, "agent certificate names no site id; closed"),
        )
        .ok()
}

#[cfg(test)]
mod tests {
    /// One rule for a site id: what the CA signs (`tankwatch_tls`) is what
    /// the headend's `SiteId` takes, and nothing else.
    #[test]
    fn the_site_id_type_takes_exactly_what_the_certificate_rule_takes() {
        let long = "a".repeat(63);
        let too_long = "a".repeat(64);
        for s in [
            "site-a", "s", "0", "a_b", "a-", &long, &too_long, "", "-a", "_a", "A", "site a",
            "site/a", "ä", "a.b", "a\n", "site-A",
        ] {
            assert_eq!(
                crate::domain::SiteId::parse(s).is_ok(),
                tankwatch_tls::validate_site_id(s).is_ok(),
                "{s:?}"
            );
        }
    }
}

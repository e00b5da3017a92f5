//! The enrollment listener: gRPC `Enrollment.Enroll` over TLS that
//! authenticates only the headend (the agent has no certificate yet; it
//! pins the root CA by its fingerprint, so the headend presents its chain
//! up to and including the root). Kept apart from the agent listener,
//! whose handshake requires a client certificate, so that the port open
//! to certificate-less clients does one thing and can be firewalled or
//! turned off once a fleet is enrolled.
//!
//! Bounded ([`crate::listen`]): [`MAX_CONNS`] connections at once and
//! [`MAX_PER_ADDRESS`] from one client network; past either, the oldest
//! connection older than a second is closed for the new one (an
//! enrollment takes milliseconds; issue 27: 64 idle TLS connections
//! blocked all enrollment). A handshake has [`HANDSHAKE_TIMEOUT`], a
//! connection lives at most [`CONN_LIFETIME`], and each client address
//! may try [`PER_MINUTE`] enrollments a minute.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tankwatch_proto::v1;
use tankwatch_tls::reload::Reloading;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};

use crate::domain::throttle::RateLimit;
use crate::metrics::Metrics;
use crate::services::enrollment::{IssueError, SharedIssuing};
use crate::store::Db;
use crate::wallclock::now_ms;

pub const MAX_CONNS: usize = 256;
pub const MAX_PER_ADDRESS: usize = 8;
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
pub const CONN_LIFETIME: Duration = Duration::from_secs(60);
/// Enrollment attempts per client address a minute (burst 5).
pub const PER_MINUTE: u32 = 10;
/// Largest request accepted (a CSR is under 1 KiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// A TLS connection of the enrollment listener, with its peer address.
pub struct EnrollConn {
    stream: TlsStream<TcpStream>,
    peer: SocketAddr,
    _ticket: crate::listen::Ticket,
    deadline: Pin<Box<tokio::time::Sleep>>,
    evicted: Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl Connected for EnrollConn {
    type ConnectInfo = SocketAddr;
    fn connect_info(&self) -> SocketAddr {
        self.peer
    }
}

impl AsyncRead for EnrollConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "enrollment connection lifetime reached",
            )));
        }
        if self.evicted.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "enrollment connection evicted for a new one",
            )));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for EnrollConn {
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
}

/// Accepts and handshakes enrollment connections (bounded); the accept
/// loop is returned for the caller to supervise.
pub fn incoming(
    listener: TcpListener,
    config: Reloading,
    metrics: Metrics,
    mut stop: watch::Receiver<bool>,
) -> (
    mpsc::Receiver<io::Result<EnrollConn>>,
    impl std::future::Future<Output = ()> + Send + 'static,
) {
    let (tx, rx) = mpsc::channel(8);
    let admission = crate::listen::Admission::new(
        "enrollment",
        crate::listen::admission::Bounds {
            max_total: MAX_CONNS,
            max_per_key: MAX_PER_ADDRESS,
            min_idle_ms: 1_000,
        },
        metrics,
    );
    admission.timeout_metric("handshake_timeout_seconds", HANDSHAKE_TIMEOUT);
    admission.timeout_metric("lifetime_seconds", CONN_LIFETIME);
    let task = async move {
        loop {
            let (tcp, peer) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "enrollment accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            };
            let ticket = tokio::select! {
                t = admission.admit(peer.ip()) => match t {
                    Some(t) => t,
                    None => continue, // its network holds its share: dropping closes it
                },
                _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
            };
            let acceptor = TlsAcceptor::from(config.current());
            let tx = tx.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                let r = tokio::select! {
                    r = handshake => r,
                    _ = ticket.evicted() => return,
                };
                match r {
                    Ok(Ok(stream)) => {
                        let evicted = Box::pin(ticket.eviction());
                        let _ = tx
                            .send(Ok(EnrollConn {
                                stream,
                                peer,
                                _ticket: ticket,
                                deadline: Box::pin(tokio::time::sleep(CONN_LIFETIME)),
                                evicted,
                            }))
                            .await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%peer, error = %e, "enrollment TLS handshake failed")
                    }
                    Err(_) => {
                        ticket.admission().closed("handshake_timeout");
                        tracing::debug!(%peer, "enrollment TLS handshake timed out (counted)")
                    }
                }
            });
        }
    };
    (rx, task)
}

/// The `Enrollment` gRPC service.
#[derive(Clone)]
pub struct Enrollment {
    pub db: Db,
    pub issuing: SharedIssuing,
    pub metrics: Metrics,
    pub limit: Arc<Mutex<RateLimit<std::net::IpAddr>>>,
}

impl Enrollment {
    pub fn new(db: Db, issuing: SharedIssuing, metrics: Metrics) -> Self {
        Enrollment {
            db,
            issuing,
            metrics,
            limit: Arc::new(Mutex::new(RateLimit::new(PER_MINUTE, 5, 10_000))),
        }
    }
}

#[tonic::async_trait]
impl v1::enrollment_server::Enrollment for Enrollment {
    async fn enroll(
        &self,
        req: Request<v1::EnrollRequest>,
    ) -> Result<Response<v1::EnrollReply>, Status> {
        let peer = req
            .extensions()
            .get::<SocketAddr>()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        {
            let mut l = self.limit.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(wait) = l.take(&peer.ip(), now_ms()) {
                self.metrics.enrollments_refused.inc();
                return Err(Status::resource_exhausted(format!(
                    "too many enrollment attempts from {}; try again in {} s",
                    peer.ip(),
                    (wait + 999) / 1000
                )));
            }
        }
        let r = req.into_inner();
        match self
            .issuing
            .enroll(
                &self.db,
                &r.token,
                &r.site_id,
                &r.csr_der,
                &peer.to_string(),
            )
            .await
        {
            Ok(e) => {
                self.metrics.enrollments.inc();
                Ok(Response::new(v1::EnrollReply {
                    chain_pem: e.chain_pem,
                    ca_pem: self.issuing.root_pem.clone(),
                    site_id: r.site_id,
                    not_after_ms: e.not_after_ms.ms(),
                }))
            }
            Err(IssueError::Refused(why)) => {
                self.metrics.enrollments_refused.inc();
                tracing::warn!(%peer, site = %r.site_id, %why, "enrollment refused");
                Err(Status::failed_precondition(why))
            }
            Err(IssueError::Unavailable(why)) => Err(Status::unavailable(why)),
        }
    }
}

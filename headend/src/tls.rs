//! The agent-facing TLS listener. Every connection must present a client
//! certificate chaining to the project CA (rustls refuses it otherwise);
//! the site id is then read from that certificate ([`tankwatch_pki::site_from_cert`])
//! and attached to the connection, where the gRPC handlers find it.
//!
//! Bounded: at most `MAX_HANDSHAKES` handshakes run at once and at most
//! `ACCEPT_QUEUE` finished handshakes wait for tonic; when both are full
//! the accept loop stops accepting (the kernel backlog then holds or
//! refuses new connections), so a reconnect storm cannot exhaust memory.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

const MAX_HANDSHAKES: usize = 256;
const ACCEPT_QUEUE: usize = 64;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is on the other end of an agent connection, from its certificate.
#[derive(Debug, Clone)]
pub struct AgentIdentity {
    pub site_id: String,
    pub peer: SocketAddr,
}

/// An authenticated agent connection.
pub struct AgentConn {
    stream: TlsStream<TcpStream>,
    identity: AgentIdentity,
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
/// and yields authenticated connections.
pub fn incoming(
    listener: TcpListener,
    config: rustls::ServerConfig,
) -> (
    mpsc::Receiver<io::Result<AgentConn>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let task = tokio::spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let stream =
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, error = %e, "agent TLS handshake refused");
                            return;
                        }
                        Err(_) => {
                            tracing::warn!(%peer, "agent TLS handshake timed out");
                            return;
                        }
                    };
                let site = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| tankwatch_pki::site_from_cert(c));
                match site {
                    Some(Ok(site_id)) => {
                        tracing::debug!(%peer, %site_id, "agent authenticated");
                        let conn = AgentConn {
                            stream,
                            identity: AgentIdentity { site_id, peer },
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
    });
    (rx, task)
}

//! The uplink: one outbound mTLS gRPC session to the headend at a time,
//! streaming durable log entries and trimming the log on cumulative acks.
//!
//! Replay: every session starts after the highest ack known (the log's own
//! or the headend's HelloAck, whichever is higher) and sends the log in seq
//! order, up to `window` batches in flight. On any error the session ends,
//! and the next one starts after an exponential backoff with jitter; it
//! resends everything not yet acknowledged (duplicates are dropped by the
//! headend's (site, log_id, seq) key).

use std::sync::Arc;
use std::time::Duration;

use adapter_api::Backoff;
use sflog::Log;
use tankwatch_proto::v1;
use tokio::sync::{mpsc, watch};

use crate::config::AgentConfig;
use wire::WireBytes;

mod batch;
mod connect;
pub mod failover;
mod hello;
pub mod link;
pub mod pace;
mod session;
mod watchdog;
pub use connect::{channel, explain, tls_files};
pub mod wire;
pub use watchdog::watchdog;

const HELLO_ACK_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest time from dialling to the HelloAck: a headend that takes the
/// connection and then says nothing cannot hold the uplink.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// While a backlog drains, a preview batch of the newest entries goes out this often.
const PREVIEW_EVERY: Duration = Duration::from_secs(1);
/// The link's figures go to the headend this often.
const LINK_REPORT_EVERY: Duration = Duration::from_secs(30);
/// Most control entries (alarms, events, command answers) in one batch of the control lane.
const CONTROL_BATCH: usize = 256;

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("TLS setup: {0}")]
    Tls(#[from] tankwatch_tls::Error),
    #[error("connect: {0}")]
    Connect(String),
    #[error("headend: {0}")]
    Status(#[from] tonic::Status),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("log: {0}")]
    Log(#[from] sflog::Error),
    /// Not a failure: the certificate was renewed; reconnect with it at once.
    #[error("certificate renewed ({0}); reconnecting with it")]
    Renewed(String),
    /// Not a failure: the headend takes compressed messages and a backlog
    /// waits; reconnect at once, compressing.
    #[error("the headend takes compressed messages; reconnecting to send them compressed")]
    Compress,
}

/// Shared uplink state, for status and tests.
#[derive(Debug, Clone, Default)]
pub struct UplinkStatus {
    pub connected: bool,
    pub sessions: u64,
    pub last_error: String,
    /// When the uplink last started dialling (or was connected).
    pub last_attempt: Option<tokio::time::Instant>,
    /// The agent certificate and its renewal (None: not readable).
    pub certificate: Option<crate::renew::CertificateView>,
    /// The headend's clock minus ours (ms) and when it was measured (our
    /// clock, Unix ms), from the last HelloAck.
    pub clock_offset: Option<(i64, i64)>,
    /// Whether the session sends compact batches (the headend takes them).
    pub compact: bool,
    /// Whether the session's messages are gzip-compressed.
    pub gzip: bool,
    /// The link's measured figures.
    pub link: link::LinkView,
    /// The headend address dialled now, the list it is taken from, and
    /// the times the uplink moved to another.
    pub address: String,
    pub addresses: Vec<String>,
    pub failovers: u64,
    /// The version of the headend that answered the last Hello (empty:
    /// none yet, or a headend older than 0.2).
    pub headend_version: String,
}

/// What the uplink works with.
pub struct Uplink {
    pub cfg: Arc<AgentConfig>,
    pub log: Arc<Log>,
    /// The log's durable seq (the uplink sends up to it).
    pub durable: watch::Receiver<u64>,
    pub stop: watch::Receiver<bool>,
    pub status: watch::Sender<UplinkStatus>,
    pub metrics: crate::metrics::Metrics,
    /// Where commands from the headend go (the executor).
    pub commands: mpsc::Sender<v1::Command>,
    /// The devices whose health is reported to the headend.
    pub devices: Arc<Vec<crate::metrics::DeviceHealth>>,
    /// Certificate renewal (None until the certificate file reads).
    pub renewer: Option<crate::renew::Renewer>,
    /// The headend's clock, measured at each HelloAck (the executor judges expiry by it).
    pub clock: crate::clock::HeadendClock,
    /// The command state (whether it was lost: the Hello says so).
    pub store: crate::store::Store,
    /// Bytes on the wire, every session.
    pub wire: Arc<WireBytes>,
    /// The link's figures, over sessions.
    pub meter: link::LinkMeter,
    /// Whether the headend takes gzip-compressed messages (its last
    /// HelloAck offered compact batches; ADR 0013). Until a session has
    /// told, messages go uncompressed.
    pub compress: bool,
    /// Which headend address to dial.
    pub failover: failover::Failover,
}

/// Shows the address dialled on `/status` and in the metrics.
fn show_address(u: &Uplink) {
    let now = u.failover.current();
    for a in u.failover.addresses() {
        u.metrics
            .headend_address
            .get_or_create(&crate::metrics::AddressLabel { address: a.clone() })
            .set(i64::from(a == now));
    }
    let moves = u.failover.moves();
    u.status.send_if_modified(|s| {
        let changed = s.address != now || s.failovers != moves || s.addresses.is_empty();
        if changed {
            s.address = now.to_string();
            s.addresses = u.failover.addresses().to_vec();
            s.failovers = moves;
        }
        changed
    });
}

/// `d` times a random factor in [0.5, 1.5).
fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.5 + fastrand::f64())
}

/// Runs sessions until `stop`, reconnecting with exponential backoff and jitter.
pub async fn run(mut u: Uplink) {
    let mut backoff = Backoff::new(u.cfg.uplink.backoff_initial_ms, u.cfg.uplink.backoff_max_ms);
    let short = Duration::from_millis(u.cfg.uplink.backoff_initial_ms);
    loop {
        if *u.stop.borrow() {
            return;
        }
        show_address(&u);
        u.status
            .send_modify(|s| s.last_attempt = Some(tokio::time::Instant::now()));
        let sessions_before = u.status.borrow().sessions;
        let r = session::session(&mut u).await;
        let Uplink {
            status,
            metrics,
            stop,
            compress,
            failover,
            ..
        } = &mut u;
        status.send_modify(|s| s.connected = false);
        metrics.connected.set(0);
        metrics.in_flight.set(0);
        match r {
            Ok(()) => return,
            Err(SessionError::Renewed(serial)) => {
                tracing::info!(%serial, "reconnecting with the renewed certificate");
                backoff.reset();
                continue;
            }
            Err(e @ SessionError::Compress) => {
                tracing::info!("{e}");
                backoff.reset();
                continue;
            }
            Err(e) => {
                if let SessionError::Status(s) = &e
                    && s.code() == tonic::Code::Unimplemented
                    && *compress
                {
                    // a headend that no longer takes compressed messages
                    tracing::warn!(
                        "the headend refused a compressed message; sending uncompressed"
                    );
                    *compress = false;
                }
                let e = explain(&e.to_string());
                tracing::warn!(error = %e, "headend session ended");
                status.send_modify(|s| s.last_error = e);
            }
        }
        // a session that got as far as its HelloAck resets the backoff: the
        // next headend restart costs the initial delay again, not the cap;
        // it keeps its address, and a failed attempt moves on to the next
        let worked = status.borrow().sessions > sessions_before;
        let was = failover.current().to_string();
        let how = if worked {
            backoff.reset();
            failover.worked_then_ended()
        } else {
            failover.failed()
        };
        let wait = match how {
            failover::Wait::Short if !worked => jittered(short),
            _ => backoff.next_delay(),
        };
        if failover.current() != was {
            metrics.failovers.inc();
            tracing::warn!(from = %was, to = %failover.current(), "moving to another headend address");
        }
        tracing::info!(wait_ms = wait.as_millis() as u64, address = %failover.current(), "reconnecting to headend");
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

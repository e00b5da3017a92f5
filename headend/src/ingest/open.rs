//! A session's opening: its Hello checked and recorded, and where each
//! session is for the other replicas (`store::presence`).

use tankwatch_proto::v1::{self, AgentMessage, agent_message::Msg as In};
use tonic::{Status, Streaming};

use super::tls::AgentIdentity;
use super::{HELLO_TIMEOUT, Ingest, sanitize};
use crate::domain::SiteId;
use crate::domain::clock::ClockVerdict;
use crate::store::HelloInfo;
use crate::wallclock::now_ms;

impl Ingest {
    /// The session's first message, checked: a Hello within
    /// [`HELLO_TIMEOUT`], for the certificate's site, with a log id, a
    /// clock within bounds and asset kinds this headend knows (names
    /// cleaned of control characters); with the clock's verdict and when
    /// it arrived.
    pub(super) async fn hello(
        &self,
        who: &AgentIdentity,
        inbound: &mut Streaming<AgentMessage>,
    ) -> Result<(v1::Hello, ClockVerdict, i64), Status> {
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello within 15 s"))??;
        let mut hello = match first.and_then(|m| m.msg) {
            Some(In::Hello(h)) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of a session must be a Hello",
                ));
            }
        };
        if hello.site_id != who.site_id {
            self.metrics.sessions_refused.inc();
            tracing::warn!(peer = %who.peer, cert_site = %who.site_id, claimed = %hello.site_id, "hello claims another site; refused");
            return Err(Status::permission_denied(format!(
                "this certificate is for site {:?}, not {:?}",
                who.site_id, hello.site_id
            )));
        }
        if hello.log_id == 0 {
            return Err(Status::invalid_argument("hello.log_id must not be 0"));
        }
        let arrived_ms = now_ms();
        let clock = ClockVerdict::assess(hello.agent_time_ms, arrived_ms);
        if let ClockVerdict::Refused(skew) = clock {
            self.metrics.sessions_refused.inc();
            self.metrics.clock_refused.inc();
            tracing::warn!(site = %who.site_id, peer = %who.peer, skew_ms = skew, "the site's clock is too far off; session refused");
            return Err(Status::failed_precondition(format!(
                "the site's clock is {} the headend's (more than {} h off): set the site PC's clock (NTP); the agent reconnects by itself",
                crate::domain::clock::describe(skew),
                crate::domain::clock::MAX_SKEW_MS / 3_600_000
            )));
        }
        // the connection is in a session now: no longer subject to the idle deadline
        who.started.send_replace(true);
        if let Some((a, e)) = hello.assets.iter().find_map(|a| {
            crate::domain::AssetKind::from_proto(a.kind)
                .err()
                .map(|e| (a.asset_id.clone(), e))
        }) {
            return Err(Status::invalid_argument(format!(
                "asset {a}: {e}; this headend knows {} (upgrade the headend)",
                crate::domain::AssetKind::choices()
            )));
        }
        let cleaned = sanitize::hello(&mut hello);
        if cleaned > 0 {
            self.metrics.sanitized_fields.inc_by(cleaned);
            tracing::warn!(site = %who.site_id, fields = cleaned, "hello had control characters in names; replaced with U+FFFD (fix the agent's configuration)");
        }
        Ok((hello, clock, arrived_ms))
    }

    /// Records the Hello (and the site's clock): the sequence the site's
    /// log is acknowledged through. A database that refuses it refuses
    /// the session (the agent retries).
    pub(super) async fn record(
        &self,
        who: &AgentIdentity,
        hello: &v1::Hello,
        clock: ClockVerdict,
        arrived_ms: i64,
    ) -> Result<u64, Status> {
        let acked = match self
            .db
            .record_hello(HelloInfo {
                site: &who.site_id,
                hello,
            })
            .await
        {
            Ok(a) => a,
            Err(e) => {
                self.metrics.commit_failures.inc();
                self.sessions
                    .commit_failed(&who.site_id, &format!("hello: {e}"));
                tracing::error!(site = %who.site_id, error = %e, "recording the hello failed");
                return Err(Status::unavailable("database unavailable"));
            }
        };
        if let Some(skew) = clock.skew_ms() {
            if let Err(e) = self.db.record_clock(&who.site_id, skew, arrived_ms).await {
                tracing::warn!(site = %who.site_id, error = %e, "recording the site's clock skew failed");
            }
            if let ClockVerdict::Corrected(_) = clock {
                self.metrics.clock_corrected.inc();
                tracing::warn!(site = %who.site_id, skew_ms = skew, "the site's clock is {} the headend's; this session's times are corrected (set the site PC's clock)", crate::domain::clock::describe(skew));
            }
        }
        Ok(acked)
    }
}

/// Where each session is, for the other replicas' site lists
/// (`store::presence`; PostgreSQL).
impl Ingest {
    pub(super) async fn opened(&self, site: &SiteId, peer: &str, id: u64, version: &str) {
        let row = crate::store::presence::RemoteSession {
            site_id: site.to_string(),
            replica: self.sessions.replica().to_string(),
            session_id: id as i64,
            since_ms: crate::wallclock::now(),
            peer: peer.to_string(),
            agent_version: version.to_string(),
        };
        if let Err(e) = self.db.presence().opened(&row).await {
            tracing::warn!(%site, error = %e, "recording where the session is failed; other replicas show the site disconnected");
        }
    }

    pub(super) async fn closed(&self, site: &SiteId, id: u64) {
        let replica = self.sessions.replica();
        if let Err(e) = self.db.presence().closed(site, replica, id as i64).await {
            tracing::warn!(%site, error = %e, "recording the session's end failed; other replicas see it until this replica's heartbeat stops or it restarts");
        }
    }
}

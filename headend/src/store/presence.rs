//! Which replica holds each site's agent session (issue 35), so that a
//! replica's site list says "connected" for a session held by another.
//! A session row is believed while its replica's heartbeat is fresh.
//! PostgreSQL only: SQLite is one process, whose own sessions are all.

use crate::Error;
use crate::domain::SiteId;
use crate::domain::UnixMs;
use crate::store::{Backend, Db};

/// A session held by another replica, as its row says.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct RemoteSession {
    pub site_id: String,
    pub replica: String,
    #[serde(skip)]
    pub session_id: i64,
    pub since_ms: UnixMs,
    pub peer: String,
    pub agent_version: String,
}

/// The store of sessions' whereabouts.
pub struct Presence<'a>(&'a Db);

impl Db {
    pub fn presence(&self) -> Presence<'_> {
        Presence(self)
    }
}

impl Presence<'_> {
    fn off(&self) -> bool {
        self.0.backend != Backend::Postgres
    }

    /// This replica is alive at `now_ms`.
    pub async fn heartbeat(&self, replica: &str, now_ms: i64) -> Result<(), Error> {
        if self.off() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO replicas (replica, seen_ms) VALUES ($1, $2)
             ON CONFLICT (replica) DO UPDATE SET seen_ms = excluded.seen_ms",
        )
        .bind(replica)
        .bind(now_ms)
        .execute(self.0.pool())
        .await?;
        Ok(())
    }

    /// This replica starts: the sessions its earlier life held are gone.
    pub async fn forget(&self, replica: &str) -> Result<u64, Error> {
        if self.off() {
            return Ok(0);
        }
        Ok(sqlx::query("DELETE FROM agent_sessions WHERE replica = $1")
            .bind(replica)
            .execute(self.0.pool())
            .await?
            .rows_affected())
    }

    /// A session of `s.site_id` opened here (it replaces any row of the site).
    pub async fn opened(&self, s: &RemoteSession) -> Result<(), Error> {
        if self.off() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO agent_sessions (site_id, replica, session_id, since_ms, peer, agent_version)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (site_id) DO UPDATE SET replica = excluded.replica,
               session_id = excluded.session_id, since_ms = excluded.since_ms,
               peer = excluded.peer, agent_version = excluded.agent_version",
        )
        .bind(&s.site_id)
        .bind(&s.replica)
        .bind(s.session_id)
        .bind(s.since_ms)
        .bind(&s.peer)
        .bind(&s.agent_version)
        .execute(self.0.pool())
        .await?;
        Ok(())
    }

    /// Session `session_id` of `site` on `replica` ended (a row another
    /// session has taken since is left alone).
    pub async fn closed(&self, site: &SiteId, replica: &str, session_id: i64) -> Result<(), Error> {
        if self.off() {
            return Ok(());
        }
        sqlx::query(
            "DELETE FROM agent_sessions WHERE site_id = $1 AND replica = $2 AND session_id = $3",
        )
        .bind(site)
        .bind(replica)
        .bind(session_id)
        .execute(self.0.pool())
        .await?;
        Ok(())
    }

    /// Sessions held by other replicas whose heartbeat is at or after
    /// `fresh_ms`.
    pub async fn elsewhere(&self, me: &str, fresh_ms: i64) -> Result<Vec<RemoteSession>, Error> {
        if self.off() {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_as(
            "SELECT s.site_id, s.replica, s.session_id, s.since_ms, s.peer, s.agent_version
               FROM agent_sessions s JOIN replicas r ON r.replica = s.replica
              WHERE s.replica <> $1 AND r.seen_ms >= $2",
        )
        .bind(me)
        .bind(fresh_ms)
        .fetch_all(self.0.pool())
        .await?)
    }
}

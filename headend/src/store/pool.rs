//! The pool: the one handle on the database (no queries but the
//! readiness probe; they are in the stores beside this file). SQL storage through sqlx. One code path for both backends via sqlx's
//! `Any` driver: `sqlite://` (the embedded default) or `postgres://`,
//! selected by the URL scheme. Migrations are embedded per backend and run
//! at start. Queries use `$n` placeholders, which both backends accept.

use std::str::FromStr;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

use crate::Error;
use crate::store::{Retention, Telemetry, pg::PgTelemetry, sqlite::SqliteTelemetry};
use crate::wallclock::now_ms;

/// Which SQL backend a URL selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Backend, Error> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(Error::Config(format!(
                "database URL {url:?}: unsupported scheme; use sqlite://PATH or postgres://USER@HOST/DB"
            )))
        }
    }
}

/// What [`Db::readiness`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// It answers but takes no writes (a standby; a failover in progress).
    ReadOnly,
    /// It does not answer (the error).
    Unavailable(String),
}

impl Readiness {
    /// What `/ready` and the log say.
    pub fn reason(&self) -> String {
        match self {
            Readiness::Ready => "ready".into(),
            Readiness::ReadOnly => {
                "database: read-only (a standby, or a failover in progress); ingest and writes wait"
                    .into()
            }
            Readiness::Unavailable(e) => format!("database: {e}"),
        }
    }
}

/// The database handle shared by ingest and the REST API.
#[derive(Clone)]
pub struct Db {
    pub(in crate::store) pool: AnyPool,
    /// The URL the pool was opened with (for [`Db::with_own_pool`]).
    pub(in crate::store) url: String,
    pub backend: Backend,
    /// SQLite has one writer: transactions that write queue here, in
    /// process, instead of spinning in SQLite's busy handler (its sleeps
    /// of up to 100 ms made every commit wait behind the others).
    /// PostgreSQL writes concurrently (no permit needed).
    pub(in crate::store) writer: Option<std::sync::Arc<tokio::sync::Semaphore>>,
    /// The telemetry hot path, native per backend (store/).
    pub telemetry: Telemetry,
    pub retention: Retention,
    /// Whether changes are queued for the webhook (one is configured):
    /// alarm changes applied at ingest and people's moves.
    pub notify: bool,
}

/// A write transaction (holding the SQLite writer permit, if any).
pub type WriteTx = (
    Option<tokio::sync::OwnedSemaphorePermit>,
    sqlx::Transaction<'static, sqlx::Any>,
);

/// How long ingest and the jobs wait for a connection.
pub const INGEST_ACQUIRE: Duration = Duration::from_secs(10);
/// How long an operator's request waits for one.
pub const API_ACQUIRE: Duration = Duration::from_secs(1);

/// A pool on the database (SQLite: at most 4 connections; WAL, full sync
/// and a busy timeout on each).
async fn open_pool(
    url: &str,
    backend: Backend,
    max_connections: u32,
    acquire: Duration,
) -> Result<AnyPool, Error> {
    AnyPoolOptions::new()
        .max_connections(if backend == Backend::Sqlite {
            max_connections.min(4)
        } else {
            max_connections
        })
        .acquire_timeout(acquire)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    // WAL: readers never block the writer; FULL sync: an acked batch survives power loss.
                    sqlx::query("PRAGMA journal_mode=WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA synchronous=FULL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA busy_timeout=10000")
                        .execute(&mut *conn)
                        .await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await
        .map_err(|e| Error::Db(format!("connecting to {}: {e}", redact(url))))
}

impl Db {
    /// Connects, creating a SQLite file (and its directory) if needed, and runs migrations.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, Error> {
        Db::connect_with(url, max_connections, Retention::default()).await
    }

    /// [`Db::connect`] with the retention periods to keep.
    pub async fn connect_with(
        url: &str,
        max_connections: u32,
        retention: Retention,
    ) -> Result<Db, Error> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let mut url = url.to_string();
        if backend == Backend::Sqlite {
            let path = sqlite_path(&url);
            if path.is_empty() || path == ":memory:" {
                return Err(Error::Config(format!(
                    "database URL {url:?}: the headend needs a SQLite file (sqlite://PATH), not an in-memory database"
                )));
            }
            super::backup::interrupted_restore(std::path::Path::new(path))?;
            let dir = std::path::Path::new(path).parent();
            if let Some(dir) = dir.filter(|d| path != ":memory:" && !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::Config(format!("cannot create {}: {e}", dir.display())))?;
            }
            if !url.contains("mode=") {
                url.push_str(if url.contains('?') {
                    "&mode=rwc"
                } else {
                    "?mode=rwc"
                });
            }
        }
        let created =
            backend == Backend::Sqlite && !std::path::Path::new(sqlite_path(&url)).exists();
        let pool = open_pool(&url, backend, max_connections, INGEST_ACQUIRE).await?;
        if created {
            // password hashes and tokens: the service user's alone (its WAL
            // files take the same mode), whatever the umask of who made it
            use std::os::unix::fs::PermissionsExt;
            let path = sqlite_path(&url);
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| Error::Config(format!("{path}: setting its mode to 0600: {e}")))?;
        }
        let writer = (backend == Backend::Sqlite)
            .then(|| std::sync::Arc::new(tokio::sync::Semaphore::new(1)));
        migrate(&pool, backend).await?;
        let telemetry = match backend {
            Backend::Sqlite => {
                let path = sqlite_path(&url);
                Telemetry::Sqlite(std::sync::Arc::new(SqliteTelemetry::open(
                    std::path::Path::new(path),
                )?))
            }
            Backend::Postgres => Telemetry::Postgres(std::sync::Arc::new(
                PgTelemetry::open(&url, max_connections, retention).await?,
            )),
        };
        telemetry.prepare(now_ms()).await?;
        Ok(Db {
            pool,
            url,
            backend,
            writer,
            telemetry,
            retention,
            notify: false,
        })
    }

    /// The same database through a pool of its own (a bulkhead): the
    /// operator API's requests then never queue behind agent sessions for
    /// a connection (a reconnect storm of 10,000 hellos held the shared
    /// pool for seconds). SQLite writes still queue on the one writer.
    /// A copy on a pool of its own that gives up waiting for a connection
    /// after [`API_ACQUIRE`]: an operator (or a load balancer's check)
    /// gets a quick `503 database_unavailable` during an outage, not a
    /// request that hangs for 20 s (issue 27).
    pub async fn with_own_pool(&self, max_connections: u32) -> Result<Db, Error> {
        Ok(Db {
            pool: open_pool(&self.url, self.backend, max_connections, API_ACQUIRE).await?,
            ..self.clone()
        })
    }

    /// A handle on a PostgreSQL read replica (a streaming standby) of the
    /// primary's database, for reads only: no migrations (the primary
    /// runs them; the standby replays them), gives up waiting for a
    /// connection after [`API_ACQUIRE`].
    pub async fn connect_replica(url: &str, max_connections: u32) -> Result<Db, Error> {
        sqlx::any::install_default_drivers();
        if Backend::from_url(url)? != Backend::Postgres {
            return Err(Error::Config(format!(
                "read database URL {}: a read replica is a PostgreSQL standby (postgres://…)",
                redact(url)
            )));
        }
        let pool = open_pool(url, Backend::Postgres, max_connections, API_ACQUIRE).await?;
        let retention = Retention::default();
        let telemetry = Telemetry::Postgres(std::sync::Arc::new(
            PgTelemetry::open(url, max_connections, retention).await?,
        ));
        Ok(Db {
            pool,
            url: url.to_string(),
            backend: Backend::Postgres,
            writer: None,
            telemetry,
            retention,
            notify: false,
        })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begins a transaction that writes (queued behind other writers on SQLite).
    pub async fn begin_write(&self) -> Result<WriteTx, Error> {
        let permit = match &self.writer {
            Some(w) => Some(
                w.clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| Error::Db("writer closed".into()))?,
            ),
            None => None,
        };
        Ok((permit, self.pool.begin().await?))
    }

    /// `SELECT 1`: readiness probe.
    pub async fn ping(&self) -> Result<(), Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Whether the database takes writes now (`/ready`, the database
    /// watch): on PostgreSQL, a standby or a session default of
    /// read-only (a failover in progress) is [`Readiness::ReadOnly`].
    pub async fn readiness(&self) -> Readiness {
        let r = match self.backend {
            Backend::Sqlite => self.ping().await.map(|()| false),
            Backend::Postgres => sqlx::query_scalar::<_, i32>(
                "SELECT CASE WHEN pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on' THEN 1 ELSE 0 END",
            )
            .fetch_one(&self.pool)
            .await
            .map(|ro| ro == 1)
            .map_err(Error::from),
        };
        match r {
            Ok(false) => Readiness::Ready,
            Ok(true) => Readiness::ReadOnly,
            Err(e) if e.outage() == Some(crate::error::Outage::ReadOnly) => Readiness::ReadOnly,
            // the reason says "database: " once
            Err(e) => {
                Readiness::Unavailable(e.to_string().trim_start_matches("database: ").to_string())
            }
        }
    }
}

async fn migrate(pool: &AnyPool, backend: Backend) -> Result<(), Error> {
    let mut m = match backend {
        Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
        Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
    };
    // A rolling upgrade: the next release may have migrated the database
    // already (its migrations only expand the schema: they add what this
    // release ignores, docs/deploy.md); this release still runs on it.
    m.set_ignore_missing(true);
    let known = m.iter().map(|x| x.version).max().unwrap_or(0);
    m.run(pool)
        .await
        .map_err(|e| Error::Db(format!("migrations: {e}")))?;
    let applied: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await?;
    if let Some(v) = applied.filter(|v| *v > known) {
        tracing::warn!(
            schema = v,
            this_release = known,
            "the database was migrated by a newer release; running on it (a rolling upgrade: replace this replica with the new release)"
        );
    }
    Ok(())
}

/// The newest SQLite migration this build has (a backup made by a newer
/// headend is refused: `store::backup`).
pub fn sqlite_schema_version() -> i64 {
    sqlx::migrate!("./migrations/sqlite")
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0)
}

/// The file path of a `sqlite:` URL.
pub(crate) fn sqlite_path(url: &str) -> &str {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    path.split('?').next().unwrap_or("")
}

fn redact(url: &str) -> String {
    // never log a password embedded in a URL
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

impl FromStr for Backend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Backend::from_url(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The next release's expand step ran first (a rolling upgrade): this
    /// release still opens the database, on both backends.
    #[tokio::test]
    async fn a_database_migrated_by_a_newer_release_still_opens() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = format!("sqlite://{}", dir.path().join("h.db").display());
        let (pg, name) = crate::store::testing::fresh_postgres().await;
        for url in [sqlite.as_str(), pg.as_str()] {
            let db = Db::connect(url, 2).await.unwrap();
            sqlx::query(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
                 VALUES (99990001, 'from a newer release', TRUE, $1, 1)",
            )
            .bind(vec![0u8; 4])
            .execute(db.pool())
            .await
            .unwrap();
            db.pool().close().await;
            Db::connect(url, 2)
                .await
                .expect("this release runs on the newer schema");
        }
        crate::store::testing::drop_postgres(&name).await;
    }
}

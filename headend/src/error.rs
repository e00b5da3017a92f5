//! The headend library's one error type.

use std::net::SocketAddr;

use crate::domain;

/// Errors of the headend library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    /// A statement through sqlx failed (its source is kept).
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    /// The native SQLite store failed (its source is kept).
    #[error("database (sqlite): {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value this build does not know.
    #[error("database: a stored {0}")]
    Stored(#[from] domain::Unknown),
    /// A stored value that does not parse as what its column holds (a
    /// JSON column, a NULL where a value must be): never read as a default.
    #[error("database: {column} of {key:?} is corrupt: {detail}")]
    Corrupt {
        /// `table.column`
        column: &'static str,
        /// The row's key (an id).
        key: String,
        detail: String,
    },
    /// Anything else about the database (a writer that stopped, a row
    /// that vanished).
    #[error("database: {0}")]
    Db(String),
    #[error(transparent)]
    Pki(#[from] tankwatch_pki::Error),
    #[error(transparent)]
    Tls(#[from] tankwatch_tls::Error),
    #[error("{what} {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Grpc(String),
}

/// Why the database cannot serve a request now (issue 35): the REST API
/// answers 503 with this code, `/ready` says it, and nothing is lost (the
/// agents keep their readings until a commit is acknowledged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// Unreachable, restarting, or refusing connections.
    Unavailable,
    /// Answering, but read-only (a standby, or a failover in progress).
    ReadOnly,
}

impl Outage {
    /// The REST API's stable error code.
    pub fn code(self) -> &'static str {
        match self {
            Outage::Unavailable => "database_unavailable",
            Outage::ReadOnly => "database_read_only",
        }
    }
}

impl Error {
    /// Whether this failure is the database being away or read-only (not
    /// a bad request, not a bug).
    pub fn outage(&self) -> Option<Outage> {
        match self {
            Error::Sql(e) => sql_outage(e),
            _ => None,
        }
    }

    /// Whether this failure is a stored value of `column` (its name, as
    /// the row names it) that does not parse.
    pub fn is_corrupt(&self, column: &str) -> bool {
        match self {
            // sqlx names the column quoted (`"holidays"`)
            Error::Sql(sqlx::Error::ColumnDecode { index, .. }) => {
                index.trim_matches('"') == column
            }
            Error::Corrupt { column: c, .. } => c.rsplit('.').next() == Some(column),
            _ => false,
        }
    }
}

/// The classes of sqlx errors that mean the database is away.
pub fn sql_outage(e: &sqlx::Error) -> Option<Outage> {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => Some(Outage::Unavailable),
        sqlx::Error::Database(d) => {
            let code = d.code();
            match code.as_deref() {
                // read_only_sql_transaction
                Some("25006") => Some(Outage::ReadOnly),
                // admin_shutdown, crash_shutdown, cannot_connect_now,
                // too_many_connections, and connection exceptions (08…)
                Some("57P01" | "57P02" | "57P03" | "53300") => Some(Outage::Unavailable),
                Some(c) if c.starts_with("08") => Some(Outage::Unavailable),
                _ => None,
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_and_connection_failures_are_an_outage_and_a_bad_statement_is_not() {
        assert_eq!(
            Error::Sql(sqlx::Error::PoolTimedOut).outage(),
            Some(Outage::Unavailable)
        );
        assert_eq!(Error::Sql(sqlx::Error::RowNotFound).outage(), None);
        assert_eq!(Error::Db("x".into()).outage(), None);
        assert_eq!(Outage::ReadOnly.code(), "database_read_only");
    }
}

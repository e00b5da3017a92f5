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

//! Errors of the engine, grouped by what the caller can do about them.

use thiserror::Error;

/// What a client is told when the server's database cannot write for want
/// of disk space: nothing of its request was stored.
pub const DISK_FULL: &str =
    "the server's disk is full: nothing was stored; retry once its operator has freed space";

/// Everything that can go wrong in the engine's library code.
///
/// The variants are grouped by what a caller can do: fix its input
/// ([`Error::InvalidInput`], [`Error::NotFound`]), stay within its quota
/// ([`Error::QuotaExceeded`]), authenticate ([`Error::Unauthenticated`]),
/// resolve a conflict ([`Error::Conflict`]), or retry later (the rest). The
/// gRPC API maps them to status codes in one place (`api::grpc`).
#[derive(Debug, Error)]
pub enum Error {
    /// The request is malformed: the message says what was wrong and how to fix it.
    #[error("{0}")]
    InvalidInput(String),
    /// The thing named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A tenant quota would be exceeded; the message names the limit.
    #[error("{0}")]
    QuotaExceeded(String),
    /// No valid credentials (a missing, unknown or revoked API key).
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials of the wrong kind (a tenant's key on the admin
    /// API, an operator key on a tenant's).
    #[error("{0}")]
    PermissionDenied(String),
    /// The request contradicts the current state (e.g. approving an
    /// execution that is not waiting for that approval).
    #[error("{0}")]
    Conflict(String),
    /// A new execution's idempotency key is taken: by the execution named
    /// (a group commit's answer to a keyed creation; the start returns
    /// that execution instead).
    #[error("the idempotency key is taken by execution {0}")]
    KeyTaken(String),
    /// This node no longer owns the execution: another node claimed it
    /// (its fencing epoch moved on). The execution must be dropped here.
    #[error("lost ownership of execution {0}: it was claimed again under a newer lease")]
    LostOwnership(String),
    /// The database failed (a lost connection, a locked or full disk, an
    /// unexpected constraint); usually transient. The same for every
    /// backend and driver: the message says what failed.
    #[error("database error: {0}")]
    Store(String),
    /// An action was carried out, but its audit record could not be
    /// written (the message says which, for the client).
    #[error("{0}")]
    Unaudited(String),
    /// The database's disk is full: nothing of the write was stored. The
    /// server goes on (and writes again) once space is freed.
    #[error("the server's disk is full: {0}")]
    DiskFull(String),
    /// A server this process talks to (`--server`) could not be reached,
    /// or is shutting down: try again later.
    #[error("{0}")]
    Unavailable(String),
    /// A server this process talks to answered with an error of no other
    /// kind (an internal error), or with something this client cannot read.
    #[error("{0}")]
    Remote(String),
    /// A migration failed or the schema is newer than this binary.
    #[error("database schema: {0}")]
    Schema(String),
    /// Compiling or instantiating a component failed for an internal reason.
    #[error("runtime error: {0}")]
    Runtime(String),
    /// An I/O error outside the database (component cache, files).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(feature = "sqlx")]
impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        // SQLite's SQLITE_FULL (13; sqlx reports the extended code, and
        // SQLITE_FULL has none) and PostgreSQL's `disk_full` (53100).
        let full = e
            .as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|code| code == "13" || code == "53100");
        if full {
            Error::DiskFull(e.to_string())
        } else {
            Error::Store(e.to_string())
        }
    }
}

#[cfg(feature = "rusqlite")]
impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::sqlite("database write", e)
    }
}

impl Error {
    /// Whether trying the same thing again later may succeed (the database
    /// or the server was unavailable).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Store(_) | Error::DiskFull(_) | Error::Unavailable(_)
        )
    }

    /// The error of a write on SQLite's own connection (`rusqlite`), with
    /// what was being done: [`Error::DiskFull`] when the disk is.
    #[cfg(feature = "rusqlite")]
    pub fn sqlite(context: &str, e: rusqlite::Error) -> Self {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            Error::DiskFull(format!("{context}: {e}"))
        } else {
            Error::Store(format!("{context}: {e}"))
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result with the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

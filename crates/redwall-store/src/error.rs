//! The store's error type.

use std::fmt;

/// Everything the store can fail with.
///
/// `Display` never includes bound SQL parameters: sqlx does not put them in its
/// messages, and `Conflict` carries only a fixed description.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row the operation needs does not exist.
    #[error("not found")]
    NotFound,
    /// A unique constraint refused the write (e.g. the username is taken).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Any other database failure.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// Applying the embedded migrations failed.
    #[error("migration failed: {0}")]
    Migration(#[source] sqlx::migrate::MigrateError),
    /// The audit log could not be written, for the reason given, within the
    /// writer's retries; the fault was logged once where it was seen.
    #[error("database unavailable: {}", .0.describe())]
    Unavailable(crate::health::FaultCause),
    /// The database URL is not one the store understands.
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(ConflictDescription(db.constraint()).to_string())
            }
            _ => StoreError::Database(e),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Migration(e)
    }
}

struct ConflictDescription<'a>(Option<&'a str>);

impl fmt::Display for ConflictDescription<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(c) => write!(f, "unique constraint {c} violated"),
            None => f.write_str("unique constraint violated"),
        }
    }
}

/// True when the error is SQLite reporting a lock it could not take in time
/// (SQLITE_BUSY / SQLITE_LOCKED and their extended codes).
pub(crate) fn is_sqlite_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i64>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6)),
        _ => false,
    }
}

/// True when the error is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

//! What the audit writer knows about the database: whether appends are
//! failing, since when and why, told once in the log per fault and once
//! again when it recovers.
//!
//! A failed append means security actions are being refused (a request
//! whose entry cannot be written fails), so this is what `/readyz`, the
//! metrics and the console's banner for platform admins report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::{Backend, Micros};

/// Why the database refused, in words an operator acts on. Never carries
/// the database's own message (it may quote data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultCause {
    /// No space left for the database's files.
    DiskFull,
    /// The database or its files are read-only.
    ReadOnly,
    /// The database cannot be reached (stopped, restarting, network).
    Unreachable,
    /// The database did not answer in time (no free connection, a lock held
    /// elsewhere, a statement cancelled by timeout).
    Timeout,
    /// An input/output error under the database.
    Io,
    /// Anything else the database refused.
    Other,
}

impl FaultCause {
    /// A stable machine name (`/readyz`, logs).
    pub fn name(self) -> &'static str {
        match self {
            FaultCause::DiskFull => "disk_full",
            FaultCause::ReadOnly => "read_only",
            FaultCause::Unreachable => "unreachable",
            FaultCause::Timeout => "timeout",
            FaultCause::Io => "io_error",
            FaultCause::Other => "database_error",
        }
    }

    /// One sentence for people.
    pub fn describe(self) -> &'static str {
        match self {
            FaultCause::DiskFull => "the database's disk is full",
            FaultCause::ReadOnly => "the database is read-only",
            FaultCause::Unreachable => "the database cannot be reached",
            FaultCause::Timeout => "the database does not answer in time",
            FaultCause::Io => "the database reports an I/O error",
            FaultCause::Other => "the database refuses writes",
        }
    }

    /// Whether trying the same write again later can succeed. `Other` may be
    /// an entry the database will never take (a poison value), which the
    /// writer isolates by retrying entries one by one instead.
    pub fn is_transient(self) -> bool {
        !matches!(self, FaultCause::Other)
    }
}

/// Classifies a database error. SQLite reports (extended) result codes,
/// PostgreSQL SQLSTATEs; the two overlap as numbers, hence the backend.
pub fn classify(backend: Backend, e: &sqlx::Error) -> FaultCause {
    match e {
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            match backend {
                Backend::Sqlite => match code.parse::<i64>().map(|c| c & 0xff) {
                    Ok(13) => FaultCause::DiskFull,
                    Ok(8) => FaultCause::ReadOnly,
                    Ok(5 | 6) => FaultCause::Timeout,
                    Ok(10 | 14 | 11 | 26) => FaultCause::Io,
                    _ => FaultCause::Other,
                },
                Backend::Postgres => match code {
                    "53100" => FaultCause::DiskFull,
                    "25006" => FaultCause::ReadOnly,
                    "57014" | "55P03" | "40001" | "40P01" => FaultCause::Timeout,
                    c if c.starts_with("08") || c.starts_with("57P") => FaultCause::Unreachable,
                    c if c.starts_with("53") || c.starts_with("58") => FaultCause::Io,
                    _ => FaultCause::Other,
                },
            }
        }
        sqlx::Error::PoolTimedOut => FaultCause::Timeout,
        sqlx::Error::Io(io) if backend == Backend::Sqlite => match io.raw_os_error() {
            Some(28) => FaultCause::DiskFull, // ENOSPC
            Some(30) => FaultCause::ReadOnly, // EROFS
            _ => FaultCause::Io,
        },
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => FaultCause::Unreachable,
        _ => FaultCause::Other,
    }
}

/// The audit writer's failure, as reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub cause: FaultCause,
    /// When appends started failing, microseconds since the Unix epoch.
    pub since: Micros,
}

/// The audit writer's health, shared by its handle and its task.
#[derive(Debug, Default)]
pub struct AuditHealth {
    state: Mutex<Option<Failing>>,
    /// Entries whose append finally failed (the request was refused).
    entries_refused: AtomicU64,
    /// Append transactions (groups, single entries, probes) that failed,
    /// retries included.
    attempts_failed: AtomicU64,
}

#[derive(Debug)]
struct Failing {
    fault: Fault,
    started: Instant,
    refused: u64,
}

impl AuditHealth {
    /// The current fault, if appends are failing.
    pub fn fault(&self) -> Option<Fault> {
        self.lock().as_ref().map(|f| f.fault)
    }

    /// Entries refused since this process started.
    pub fn entries_refused(&self) -> u64 {
        self.entries_refused.load(Ordering::Relaxed)
    }

    /// Failed append attempts since this process started.
    pub fn attempts_failed(&self) -> u64 {
        self.attempts_failed.load(Ordering::Relaxed)
    }

    pub(crate) fn attempt_failed(&self, cause: FaultCause, error: &dyn std::fmt::Display) {
        self.attempts_failed.fetch_add(1, Ordering::Relaxed);
        let mut state = self.lock();
        match state.as_mut() {
            // The same fault goes on: said already.
            Some(f) if f.fault.cause == cause => {
                tracing::debug!(cause = cause.name(), %error, "audit append failed again");
            }
            Some(f) => {
                tracing::error!(
                    cause = cause.name(),
                    was = f.fault.cause.name(),
                    %error,
                    "audit log still cannot be written, now because {}",
                    cause.describe()
                );
                f.fault.cause = cause;
            }
            None => {
                tracing::error!(
                    cause = cause.name(),
                    %error,
                    "audit log cannot be written because {}: security actions are refused until it recovers",
                    cause.describe()
                );
                *state = Some(Failing {
                    fault: Fault {
                        cause,
                        since: now_micros(),
                    },
                    started: Instant::now(),
                    refused: 0,
                });
            }
        }
    }

    pub(crate) fn refused(&self, entries: usize) {
        self.entries_refused
            .fetch_add(entries as u64, Ordering::Relaxed);
        if let Some(f) = self.lock().as_mut() {
            f.refused += entries as u64;
        }
    }

    pub(crate) fn succeeded(&self) {
        let mut state = self.lock();
        if let Some(f) = state.take() {
            tracing::warn!(
                cause = f.fault.cause.name(),
                failing_for_ms = f.started.elapsed().as_millis() as u64,
                entries_refused = f.refused,
                "audit log writable again: security actions are served again"
            );
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Failing>> {
        // A panic while holding this lock leaves plain data: keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn now_micros() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as Micros)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn a_fault_is_reported_until_an_append_succeeds() {
        let h = AuditHealth::default();
        assert_eq!(h.fault(), None);
        h.attempt_failed(FaultCause::DiskFull, &"full");
        h.attempt_failed(FaultCause::DiskFull, &"full");
        h.refused(3);
        let f = h.fault().unwrap();
        assert_eq!(f.cause, FaultCause::DiskFull);
        assert_eq!(h.attempts_failed(), 2);
        assert_eq!(h.entries_refused(), 3);
        h.attempt_failed(FaultCause::ReadOnly, &"ro");
        assert_eq!(h.fault().unwrap().cause, FaultCause::ReadOnly);
        assert_eq!(h.fault().unwrap().since, f.since);
        h.succeeded();
        assert_eq!(h.fault(), None);
        assert_eq!(h.entries_refused(), 3);
    }

    #[test]
    fn pool_and_connection_errors_are_transient() {
        for e in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        ] {
            assert!(classify(Backend::Postgres, &e).is_transient(), "{e}");
        }
        assert_eq!(
            classify(Backend::Postgres, &sqlx::Error::RowNotFound),
            FaultCause::Other
        );
    }
}

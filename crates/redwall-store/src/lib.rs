//! Redwall's one data-access layer.
//!
//! A single code path serves both SQLite (the embedded default) and
//! PostgreSQL (production) through sqlx's `Any` driver. The schema lives in
//! `migrations/sqlite` and `migrations/postgres`; both are embedded in the
//! binary and applied by [`Store::connect`].
//!
//! Conventions shared by every table, because the `Any` driver maps few types:
//! ids are TEXT, times are integer microseconds since the Unix epoch
//! ([`Micros`]), booleans are integers 0/1, binary is BLOB/BYTEA and JSON is
//! TEXT. The store never reads the clock: callers pass "now" in.
//!
//! No secret plaintext is stored here: only digests and sealed (encrypted)
//! bytes.

mod account_changes;
mod agent_site;
mod agent_updates;
mod agents;
mod audit;
mod broker_clients;
mod change;
mod error;
mod git_settings;
mod health;
mod hub_nodes;
mod instance_changes;
mod instances;
mod invitations;
mod memberships;
pub mod notify;
mod pipelines;
mod retention;
mod sessions;
mod settings;
mod sign_in_changes;
mod snapshots;
mod sso;
mod teams;
pub mod testing;
mod tokens;
mod users;
mod verify;

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Connection, Row};

pub use agent_site::{AgentLogLine, EventStreamPosition, MAX_AGENT_LOG_LINES};
pub use agent_updates::{AgentBuild, AgentUpdate};
pub use agents::{Agent, AgentCommandRow, AgentToken};
pub use audit::{
    canonical_entry_bytes, AuditFilter, AuditRecord, AuditWriter, ChainProblem, ChainProblemKind,
    ChainReport, NewAuditEntry,
};
pub use broker_clients::BrokerClient;
pub use change::Change;
pub use error::StoreError;
pub use git_settings::GitSettingsRow;
pub use health::{AuditHealth, Fault, FaultCause};
pub use hub_nodes::HubNode;
pub use instances::{EnvEntry, Instance, InstanceApiKey};
pub use invitations::{Invitation, InvitationSide};
pub use memberships::{MemberChange, MembershipWrite};
pub use pipelines::{InstanceGroup, PipelineRow, Promotion};
pub use retention::{verify_export, AuditCut, ExportReport, PRUNED_EVENT};
pub use sessions::Session;
pub use snapshots::{Deployment, SigningKeyRow, SnapshotRow, SnapshotSummary};
pub use sso::OidcStateUse;
pub use teams::{Member, Team};
pub use tokens::ApiToken;
pub use users::{NewUser, User};

/// Microseconds since the Unix epoch.
pub type Micros = i64;

/// Which database the store talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The handle to the database. Cheap to clone: it wraps a connection pool.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// PostgreSQL's URL, for the connections LISTEN needs of its own.
    url: Option<std::sync::Arc<str>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections in the pool for a file-backed SQLite database. WAL lets readers
/// run alongside the one writer; writers queue on the busy timeout.
const SQLITE_POOL_SIZE: u32 = 8;
/// Connections in the pool for PostgreSQL.
const POSTGRES_POOL_SIZE: u32 = 16;
/// How long a PostgreSQL query waits for a connection, including the pool's
/// own reconnect attempts while the server is down: the request is then
/// refused instead of hanging for as long as the outage lasts.
const POSTGRES_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// Run on every new SQLite connection. The busy timeout is 5 s.
const SQLITE_PRAGMAS: [&str; 4] = [
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 5000",
];

impl Store {
    /// Connects to `url` and applies any pending migrations.
    ///
    /// * `sqlite://PATH` (also `sqlite:PATH`, `sqlite::memory:`): the file is
    ///   created when missing unless the URL sets `mode=` itself. Every
    ///   connection runs with WAL, `synchronous=NORMAL`, `foreign_keys=ON` and
    ///   a 5 s busy timeout.
    /// * `postgres://...` or `postgresql://...`.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url)?;
        let store = match backend {
            Backend::Sqlite => {
                let (url, in_memory) = sqlite_url(url);
                // Each connection to `:memory:` is its own database: keep one.
                let size = if in_memory { 1 } else { SQLITE_POOL_SIZE };
                // A SQLite connection is a file handle in this process; the
                // default ping before every acquire only doubles each query's
                // round trips to sqlx's worker thread.
                let file = url
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:");
                let watch = std::sync::Arc::new(WritableWatch {
                    file: file.split_once('?').map_or(file, |(p, _)| p).into(),
                    last_unwritable: std::sync::atomic::AtomicU64::new(0),
                });
                if !in_memory {
                    owners_alone(&watch.file, url.contains("mode=rwc"));
                }
                let opened_watch = watch.clone();
                let mut options = AnyPoolOptions::new()
                    .max_connections(size)
                    .test_before_acquire(false)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(move |conn, _meta| {
                        if !in_memory {
                            // Opened now: if the file is not writable, this
                            // connection is read-only for good.
                            opened_watch.keeps(Duration::ZERO);
                        }
                        Box::pin(async move {
                            for pragma in SQLITE_PRAGMAS {
                                sqlx::query(pragma).execute(&mut *conn).await?;
                            }
                            Ok(())
                        })
                    });
                if in_memory {
                    // Closing the one connection would lose the database.
                    options = options
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None);
                } else {
                    options = options.before_acquire(move |conn, meta| {
                        let keep = is_clean(conn) && watch.keeps(meta.age);
                        Box::pin(async move { Ok(keep) })
                    });
                }
                let pool = options.connect(&url).await?;
                let store = Store {
                    pool,
                    backend,
                    url: None,
                };
                SQLITE_MIGRATOR.run(&store.pool).await?;
                store
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(POSTGRES_POOL_SIZE)
                    .acquire_timeout(POSTGRES_ACQUIRE_TIMEOUT)
                    .before_acquire(|conn, _meta| Box::pin(async move { Ok(is_clean(conn)) }))
                    .connect(url)
                    .await?;
                let store = Store {
                    pool,
                    backend,
                    url: Some(url.into()),
                };
                POSTGRES_MIGRATOR.run(&store.pool).await?;
                store
            }
        };
        tracing::debug!(backend = ?store.backend, "store connected and migrated");
        Ok(store)
    }

    /// Which database this store talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Why this store's database refused, in words an operator acts on.
    pub fn fault_cause(&self, e: &StoreError) -> FaultCause {
        match e {
            StoreError::Database(db) => health::classify(self.backend, db),
            StoreError::Unavailable(cause) => *cause,
            _ => FaultCause::Other,
        }
    }

    /// Closes every connection in the pool. Further calls fail.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Begins a transaction that is going to write. On SQLite this takes the
    /// write lock up front (`BEGIN IMMEDIATE`, waiting on the busy timeout),
    /// so a read-then-write transaction can never fail half-way on a lock
    /// upgrade.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(self.begin_write_raw().await?)
    }

    pub(crate) async fn begin_write_raw(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// [`Store::begin_write`] on a connection the caller holds, so that it
    /// can drop the connection when the transaction fails in a way that
    /// leaves its state unknown ([`discard_unless_clean`]).
    pub(crate) async fn begin_write_on<'c>(
        &self,
        conn: &'c mut PoolConnection<Any>,
    ) -> Result<sqlx::Transaction<'c, Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => Connection::begin_with(&mut **conn, "BEGIN IMMEDIATE").await,
            Backend::Postgres => Connection::begin(&mut **conn).await,
        }
    }

    /// One write transaction on the audit append path (its lock, then a
    /// one-row write): whether an append would be written now. The row is a
    /// counter under a reserved settings key, so probing adds nothing to the
    /// audit log.
    pub(crate) async fn probe_audit_path(&self) -> Result<(), sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        let result = async {
            let mut tx = self.begin_write_on(&mut conn).await?;
            if self.backend == Backend::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(audit::PG_AUDIT_LOCK)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "INSERT INTO settings (key, value, updated_at) VALUES ($1, '0', 0) \
                 ON CONFLICT (key) DO UPDATE SET updated_at = settings.updated_at + 1",
            )
            .bind(WRITE_PROBE_KEY)
            .execute(&mut *tx)
            .await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = &result {
            discard_unless_clean(&mut conn, e);
        }
        result
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// SQLite opens a file it cannot open for writing (while it is immutable,
/// or its file system read-only) read-only, silently, and such a connection
/// refuses every write for its whole life: after the fault it would still
/// fail one request in every few. So every acquire checks that the file
/// opens for writing (one open(2), no I/O); while it does not, connections
/// serve on and fail fast, and the time is noted; once it does again, any
/// connection opened before that time is closed and replaced.
const UNWRITABLE_MARGIN_MS: u64 = 1_000;

#[derive(Debug)]
struct WritableWatch {
    file: std::path::PathBuf,
    /// When the file was last found not writable (0: never).
    last_unwritable: std::sync::atomic::AtomicU64,
}

impl WritableWatch {
    fn now_ms() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Whether a connection of age `age` may serve.
    fn keeps(&self, age: Duration) -> bool {
        use std::sync::atomic::Ordering;
        let now = Self::now_ms();
        let writable = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.file)
            .is_ok();
        if !writable {
            self.last_unwritable.store(now, Ordering::Relaxed);
            return true;
        }
        let opened = now.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
        // A connection's age is counted from a moment close to its opening,
        // not exact: one opened within a second of the last sighting is
        // replaced too (a healthy one costs only a reconnect).
        let kept = opened > self.last_unwritable.load(Ordering::Relaxed) + UNWRITABLE_MARGIN_MS;
        if !kept {
            tracing::info!("closing a database connection opened while the file was not writable");
        }
        kept
    }
}

/// The settings key the write probe counts under.
const WRITE_PROBE_KEY: &str = "health.write_probe";

/// Whether a pooled connection may serve the next caller: not one left
/// inside a transaction. After a failed COMMIT, SQLite may already have
/// rolled back by itself; sqlx's ROLLBACK on drop then fails and sqlx still
/// counts the connection as in a transaction, so every later `BEGIN` on it
/// fails ("attempted to call begin_with at non-zero transaction depth").
/// Such a connection is closed and replaced instead of wedging the pool.
fn is_clean(conn: &sqlx::AnyConnection) -> bool {
    let clean = !conn.is_in_transaction();
    if !clean {
        tracing::warn!("closing a database connection left inside a failed transaction");
    }
    clean
}

/// After a failed transaction: unless the failure is one that certainly
/// left the connection as it was (a unique violation, a busy database),
/// the connection is closed rather than returned to the pool.
pub(crate) fn discard_unless_clean(conn: &mut PoolConnection<Any>, e: &sqlx::Error) {
    if !(error::is_unique_violation(e) || error::is_sqlite_busy(e)) {
        conn.close_on_drop();
    }
}

fn backend_of(url: &str) -> Result<Backend, StoreError> {
    let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("sqlite") => Ok(Backend::Sqlite),
        Some("postgres" | "postgresql") => Ok(Backend::Postgres),
        // Never echo the URL: it may hold a password.
        _ => Err(StoreError::InvalidUrl(
            "expected a sqlite:// or postgres:// URL".to_owned(),
        )),
    }
}

/// Makes the database file its owner's alone before SQLite opens it: it
/// holds password hashes, token digests and the audit log, and the data
/// directory is traversable (instances' users pass through it), so the
/// umask's 0644 would let any local user read it. A missing file is created
/// 0600 (when it may be created); an existing one, and its WAL and shared
/// memory files, lose every group and other bit. SQLite gives the WAL and
/// shared memory files it creates the database file's mode.
fn owners_alone(file: &std::path::Path, create: bool) {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    if create && !file.exists() {
        if let Err(e) = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(file)
        {
            // SQLite will say what is wrong, if anything.
            tracing::debug!(error = %e, "creating the database file");
        }
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut path = file.as_os_str().to_owned();
        path.push(suffix);
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            let private = std::fs::Permissions::from_mode(mode & 0o700);
            if let Err(e) = std::fs::set_permissions(&path, private) {
                tracing::warn!(file = %std::path::Path::new(&path).display(), error = %e, "the database file stays readable by others");
            }
        }
    }
}

/// Adds `mode=rwc` (create when missing) unless the URL chooses a mode, and
/// tells whether the database lives in memory.
fn sqlite_url(url: &str) -> (String, bool) {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let params: Vec<&str> = query
        .map(|q| q.split('&').filter(|p| !p.is_empty()).collect())
        .unwrap_or_default();
    let in_memory = path == ":memory:" || path.is_empty() || params.contains(&"mode=memory");
    if in_memory || params.iter().any(|p| p.starts_with("mode=")) {
        return (url.to_owned(), in_memory);
    }
    let sep = if query.is_some() { '&' } else { '?' };
    (format!("{url}{sep}mode=rwc"), false)
}

/// Decodes a 0/1 integer column as a bool.
pub(crate) fn get_bool(row: &AnyRow, col: &str) -> Result<bool, sqlx::Error> {
    Ok(row.try_get::<i64, _>(col)? != 0)
}

/// An id that sorts by time: 48 bits of milliseconds from `at`, then 80
/// random bits, as 32 lowercase hex characters. Audit entries use it so the
/// unique index on their id grows at its right edge: random ids spread every
/// batch over the whole B-tree and made appends slower as the log grew
/// (BENCHMARKS.md, audit append on a long log).
pub(crate) fn time_ordered_id(at: Micros) -> String {
    let millis = (at.max(0) / 1_000) as u64 & 0xFFFF_FFFF_FFFF;
    let random: [u8; 10] = rand::random();
    format!("{millis:012x}{}", hex::encode(random))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn time_ordered_ids_sort_by_time() {
        let a = time_ordered_id(1_700_000_000_000_000);
        let b = time_ordered_id(1_700_000_000_001_000);
        assert_eq!(a.len(), 32);
        assert!(a < b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn scheme_selects_backend() {
        assert_eq!(backend_of("sqlite://x.db").unwrap(), Backend::Sqlite);
        assert_eq!(backend_of("sqlite::memory:").unwrap(), Backend::Sqlite);
        assert_eq!(backend_of("postgres://u@h/db").unwrap(), Backend::Postgres);
        assert_eq!(
            backend_of("PostgreSQL://u@h/db").unwrap(),
            Backend::Postgres
        );
        let err = backend_of("mysql://root:hunter2@h/db").unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }

    #[test]
    fn sqlite_url_adds_create_mode() {
        assert_eq!(
            sqlite_url("sqlite://a.db"),
            ("sqlite://a.db?mode=rwc".into(), false)
        );
        assert_eq!(
            sqlite_url("sqlite://a.db?cache=shared"),
            ("sqlite://a.db?cache=shared&mode=rwc".into(), false)
        );
        assert_eq!(
            sqlite_url("sqlite://a.db?mode=ro"),
            ("sqlite://a.db?mode=ro".into(), false)
        );
        assert!(sqlite_url("sqlite::memory:").1);
    }
}

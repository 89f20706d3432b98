//! Test support, for this crate's tests and the server's integration tests.
//!
//! [`TestDatabase`] makes a fresh, empty database on either backend;
//! [`with_backend`] and the [`both_backends!`](crate::both_backends) macro run
//! one test body against a fresh store on SQLite and on PostgreSQL.
//!
//! PostgreSQL comes from `REDWALL_TEST_POSTGRES_URL`, else
//! `postgres://postgres@127.0.0.1:5432/postgres`. Each test database is a
//! fresh schema selected through the URL's `options=-c search_path=...`.
//! When the server cannot be reached, tests fail if `CI=true` or the variable
//! is set, and are skipped with a one-line notice otherwise.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context as _};
use futures::FutureExt as _;
use sqlx::Connection as _;

use crate::{Backend, Store, StoreError};

/// The result type of test bodies run by [`with_backend`].
pub type TestResult = anyhow::Result<()>;

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const POSTGRES_URL_VAR: &str = "REDWALL_TEST_POSTGRES_URL";
const SCHEMA_PREFIX: &str = "rw_test_";
/// Test schemas older than this are left over from a crashed run: dropped.
const STALE_SCHEMA_SECS: u64 = 6 * 3600;

/// A fresh, empty database. Dropping it does nothing asynchronous: call
/// [`TestDatabase::cleanup`].
pub struct TestDatabase {
    /// The URL to pass to [`Store::connect`].
    pub url: String,
    backend: Backend,
    place: Place,
}

enum Place {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres { admin_url: String, schema: String },
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDatabase")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl TestDatabase {
    /// A new SQLite file in a temporary directory that lives as long as this
    /// value.
    pub async fn sqlite() -> anyhow::Result<TestDatabase> {
        let dir = tempfile::Builder::new()
            .prefix("redwall-store-test")
            .tempdir()
            .context("creating a temporary directory")?;
        let path = dir.path().join("redwall.db");
        let path = path
            .to_str()
            .ok_or_else(|| anyhow!("temporary path is not UTF-8"))?;
        Ok(TestDatabase {
            url: format!("sqlite://{path}"),
            backend: Backend::Sqlite,
            place: Place::Sqlite(dir),
        })
    }

    /// A new schema on the test PostgreSQL server, or `None` (after a notice
    /// on stderr) when the server is unreachable and neither `CI=true` nor
    /// `REDWALL_TEST_POSTGRES_URL` demands it.
    pub async fn postgres() -> anyhow::Result<Option<TestDatabase>> {
        let from_env = std::env::var(POSTGRES_URL_VAR)
            .ok()
            .filter(|u| !u.trim().is_empty());
        let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
        let required = ci || from_env.is_some();
        let admin_url = from_env.unwrap_or_else(|| DEFAULT_POSTGRES_URL.to_owned());
        TestDatabase::postgres_at(admin_url, required).await
    }

    /// [`TestDatabase::postgres`] on the server at `admin_url`; an
    /// unreachable server is an error when `required`.
    async fn postgres_at(
        admin_url: String,
        required: bool,
    ) -> anyhow::Result<Option<TestDatabase>> {
        let shown = redact_url(&admin_url);

        let mut conn = match admin_connect(&admin_url).await {
            Ok(conn) => conn,
            Err(e) if required => {
                return Err(anyhow!(
                    "PostgreSQL at {shown} unreachable: CI requires it \
                     (set {POSTGRES_URL_VAR} or start the server): {e}"
                ));
            }
            Err(e) => {
                eprintln!(
                    "note: PostgreSQL at {shown} unreachable ({e}); skipping PostgreSQL tests"
                );
                return Ok(None);
            }
        };

        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        drop_stale_schemas(&mut conn, now).await;
        let schema = format!(
            "{SCHEMA_PREFIX}{now}_{}",
            hex::encode(rand::random::<[u8; 6]>())
        );
        sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
            .execute(&mut conn)
            .await
            .with_context(|| format!("creating schema {schema} on {shown}"))?;
        let _ = conn.close().await;

        let sep = if admin_url.contains('?') { '&' } else { '?' };
        Ok(Some(TestDatabase {
            url: format!("{admin_url}{sep}options=-c%20search_path%3D{schema}"),
            backend: Backend::Postgres,
            place: Place::Postgres { admin_url, schema },
        }))
    }

    /// A fresh database on `backend`; `None` as for [`TestDatabase::postgres`].
    pub async fn new(backend: Backend) -> anyhow::Result<Option<TestDatabase>> {
        match backend {
            Backend::Sqlite => Ok(Some(TestDatabase::sqlite().await?)),
            Backend::Postgres => TestDatabase::postgres().await,
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Connects a store to this database (running migrations).
    pub async fn connect(&self) -> Result<Store, StoreError> {
        Store::connect(&self.url).await
    }

    /// Drops the schema (PostgreSQL) or the temporary directory (SQLite).
    /// Close the stores connected to it first.
    pub async fn cleanup(self) {
        match self.place {
            Place::Sqlite(dir) => {
                if let Err(e) = dir.close() {
                    eprintln!("note: removing a test database directory failed: {e}");
                }
            }
            Place::Postgres { admin_url, schema } => {
                let result = async {
                    let mut conn = admin_connect(&admin_url).await?;
                    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .execute(&mut conn)
                        .await?;
                    conn.close().await
                }
                .await;
                if let Err(e) = result {
                    eprintln!("note: dropping test schema {schema} failed: {e}");
                }
            }
        }
    }
}

async fn admin_connect(url: &str) -> Result<sqlx::PgConnection, sqlx::Error> {
    match tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(url)).await {
        Ok(result) => result,
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    }
}

/// Drops `rw_test_<secs>_*` schemas made more than six hours before `now`:
/// what a crashed or panicked run left behind. Best effort.
async fn drop_stale_schemas(conn: &mut sqlx::PgConnection, now: u64) {
    let names: Vec<String> = match sqlx::query_scalar(
        "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'rw\\_test\\_%'",
    )
    .fetch_all(&mut *conn)
    .await
    {
        Ok(names) => names,
        Err(_) => return,
    };
    for name in names {
        let made = name
            .strip_prefix(SCHEMA_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        let valid = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if let Some(made) = made {
            if valid && now.saturating_sub(made) > STALE_SCHEMA_SECS {
                let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE"))
                    .execute(&mut *conn)
                    .await;
            }
        }
    }
}

/// The URL with any password replaced by `***`.
fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

/// Runs `body` against a fresh, migrated store on `backend`, then closes the
/// store and drops the database, also when `body` fails or panics. On
/// PostgreSQL, returns `Ok` without running `body` when the server is absent
/// and not required (see [`TestDatabase::postgres`]).
pub async fn with_backend<F, Fut>(backend: Backend, body: F) -> TestResult
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = TestResult>,
{
    let Some(db) = TestDatabase::new(backend).await? else {
        return Ok(());
    };
    let store = match db.connect().await {
        Ok(store) => store,
        Err(e) => {
            db.cleanup().await;
            return Err(anyhow::Error::new(e)
                .context(format!("connecting to the {backend:?} test database")));
        }
    };
    let outcome = AssertUnwindSafe(body(store.clone())).catch_unwind().await;
    store.close().await;
    db.cleanup().await;
    match outcome {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs a SQL statement directly, bypassing the store's API: for tests that
/// need to tamper with the database (e.g. to check audit verification).
pub async fn execute_raw(store: &Store, sql: &str) -> Result<u64, StoreError> {
    Ok(sqlx::query(sql)
        .execute(store.pool())
        .await?
        .rows_affected())
}

/// Counts, from now on, every row updated in `table` (a trigger adds a row
/// to a table of its own per update), so a test can bound how often the
/// hub writes it; [`updates_counted`] reads the count.
pub async fn count_updates(store: &Store, table: &str) -> Result<(), StoreError> {
    let counter = format!("test_updates_of_{table}");
    let statements = match store.backend() {
        Backend::Sqlite => vec![
            format!("CREATE TABLE {counter} (n INTEGER)"),
            format!(
                "CREATE TRIGGER {counter}_trigger AFTER UPDATE ON {table} \
                 BEGIN INSERT INTO {counter} VALUES (1); END"
            ),
        ],
        Backend::Postgres => vec![
            format!("CREATE TABLE {counter} (n INTEGER)"),
            format!(
                "CREATE FUNCTION {counter}_fn() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN INSERT INTO {counter} VALUES (1); RETURN NULL; END $$"
            ),
            format!(
                "CREATE TRIGGER {counter}_trigger AFTER UPDATE ON {table} \
                 FOR EACH ROW EXECUTE FUNCTION {counter}_fn()"
            ),
        ],
    };
    for sql in &statements {
        execute_raw(store, sql).await?;
    }
    Ok(())
}

/// The rows updated in `table` since [`count_updates`].
pub async fn updates_counted(store: &Store, table: &str) -> Result<u64, StoreError> {
    count_raw(
        store,
        &format!("SELECT COUNT(*) FROM test_updates_of_{table}"),
    )
    .await
}

/// Runs a `SELECT COUNT(*) ...` directly, bypassing the store's API.
pub async fn count_raw(store: &Store, sql: &str) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar(sql).fetch_one(store.pool()).await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Drops the triggers that make `audit_log` append-only, as an attacker
/// with direct database access could, so a test can edit or delete entries.
pub async fn disable_audit_guards(store: &Store) -> Result<(), StoreError> {
    let statements: &[&str] = match store.backend() {
        Backend::Sqlite => &[
            "DROP TRIGGER IF EXISTS audit_log_no_update",
            "DROP TRIGGER IF EXISTS audit_log_no_delete",
        ],
        Backend::Postgres => &[
            "DROP TRIGGER IF EXISTS audit_log_no_update ON audit_log",
            "DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log",
        ],
    };
    for sql in statements {
        execute_raw(store, sql).await?;
    }
    Ok(())
}

/// Declares a test module `$name` with two Tokio tests, `$name::sqlite` and
/// `$name::postgres`, each running `$body` (a `FnOnce(Store) -> impl
/// Future<Output = anyhow::Result<()>>`, typically `|store| async move {
/// ... }`) against a fresh store via [`testing::with_backend`]. The calling
/// crate needs `tokio` (with `macros` and `rt-multi-thread`).
///
/// [`testing::with_backend`]: crate::testing::with_backend
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() -> $crate::testing::TestResult {
                $crate::testing::with_backend($crate::Backend::Sqlite, $body).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() -> $crate::testing::TestResult {
                $crate::testing::with_backend($crate::Backend::Postgres, $body).await
            }
        }
    };
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::{redact_url, TestDatabase};

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://rw:s3cret@db:5432/rw?sslmode=require"),
            "postgres://rw:***@db:5432/rw?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/postgres"),
            "postgres://postgres@127.0.0.1:5432/postgres"
        );
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
    }

    #[tokio::test]
    async fn unreachable_postgres_skips_or_fails() {
        // Port 1 on loopback: nothing listens there.
        let url = "postgres://postgres:pw@127.0.0.1:1/postgres".to_owned();
        let skipped = TestDatabase::postgres_at(url.clone(), false).await.unwrap();
        assert!(skipped.is_none());
        let err = TestDatabase::postgres_at(url, true).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("unreachable: CI requires it"), "{msg}");
        assert!(
            msg.contains("127.0.0.1:1") && !msg.contains(":pw@"),
            "{msg}"
        );
    }
}

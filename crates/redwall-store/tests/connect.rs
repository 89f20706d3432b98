//! Connecting: URLs, migrations, SQLite settings; and that the API's futures
//! and streams can be used from multi-threaded servers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use redwall_store::testing::TestDatabase;
use redwall_store::{AuditFilter, AuditWriter, Backend, Store, StoreError};
use sqlx::Connection as _;

#[tokio::test]
async fn rejects_unknown_schemes_without_echoing_the_url() {
    for url in ["mysql://root:hunter2@db/x", "hunter2", ""] {
        match Store::connect(url).await {
            Err(StoreError::InvalidUrl(msg)) => assert!(!msg.contains("hunter2")),
            Err(other) => panic!("{url}: {other:?}"),
            Ok(_) => panic!("{url}: connected"),
        }
    }
}

#[tokio::test]
async fn sqlite_file_is_created_in_wal_mode_and_reconnects() -> anyhow::Result<()> {
    let db = TestDatabase::sqlite().await?;
    let store = Store::connect(&db.url).await?;
    assert_eq!(store.backend(), Backend::Sqlite);
    user(&store, "u1", "alice").await;
    store.close().await;

    // Migrations are not re-applied (nor does anything fail) the second time.
    let store = Store::connect(&db.url).await?;
    assert_eq!(store.count_users().await?, 1);
    store.close().await;

    let mut conn = sqlx::SqliteConnection::connect(&db.url).await?;
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await?;
    assert_eq!(mode.to_lowercase(), "wal");
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await?;
    assert!(applied >= 1);
    conn.close().await?;
    db.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn sqlite_in_memory_keeps_one_database() -> anyhow::Result<()> {
    let store = Store::connect("sqlite::memory:").await?;
    user(&store, "u1", "alice").await;
    // Several calls, possibly on different pool connections, see one database.
    for _ in 0..5 {
        assert_eq!(store.count_users().await?, 1);
    }
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn postgres_reports_its_backend() -> anyhow::Result<()> {
    let Some(db) = TestDatabase::postgres().await? else {
        return Ok(());
    };
    let store = db.connect().await?;
    assert_eq!(store.backend(), Backend::Postgres);
    store.close().await;
    db.cleanup().await;
    Ok(())
}

fn assert_send<T: Send>(_: &T) {}

#[tokio::test]
async fn futures_and_streams_are_send() -> anyhow::Result<()> {
    let store = Store::connect("sqlite::memory:").await?;
    let k = key();
    assert_send(&store.verify_audit_chain(&k));
    assert_send(&store.append_audit(&k, &[]));
    assert_send(&store.list_audit(&AuditFilter::default()));
    assert_send(&store.stream_audit(AuditFilter::default()));
    assert_send(&store.create_user(new_user("u", "u", 1)));
    assert_send(&store.consume_setup_token_and_create_admin(b"d", 1, new_user("u", "u", 1)));
    assert_send(&store.touch_sessions(&[]));
    let writer = AuditWriter::spawn(store.clone(), k);
    assert_send(&writer.append(entry(1)));
    fn assert_sync_clone<T: Send + Sync + Clone>(_: &T) {}
    assert_sync_clone(&store);
    assert_sync_clone(&writer);
    store.close().await;
    Ok(())
}

/// The database holds password hashes, token digests and the audit log: only
/// its owner may read it, whatever the umask, and with it its WAL and shared
/// memory files. The data directory is traversable (instances' users pass
/// through it), so a world-readable file there was readable by any local
/// user (found: `redwall serve` left `redwall.db` 0644).
#[tokio::test]
async fn the_sqlite_files_are_the_owners_alone() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir()?;
    let fresh = dir.path().join("fresh.db");
    // An existing database made readable by an earlier version, WAL and all.
    let old = dir.path().join("old.db");
    let store = Store::connect(&format!("sqlite://{}", old.display())).await?;
    user(&store, "u1", "alice").await;
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", old.display());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    }
    let again = Store::connect(&format!("sqlite://{}", old.display())).await?;
    let store_fresh = Store::connect(&format!("sqlite://{}", fresh.display())).await?;
    user(&store_fresh, "u1", "alice").await;
    for db in [&fresh, &old] {
        for suffix in ["", "-wal", "-shm"] {
            let path = std::path::PathBuf::from(format!("{}{suffix}", db.display()));
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        }
    }
    store.close().await;
    again.close().await;
    store_fresh.close().await;
    Ok(())
}

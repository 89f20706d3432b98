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

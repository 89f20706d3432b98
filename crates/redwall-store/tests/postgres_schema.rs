//! The PostgreSQL test URL really selects the per-test schema.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use redwall_store::testing::TestDatabase;
use sqlx::Connection as _;

#[tokio::test]
async fn tables_land_in_the_test_schema() -> anyhow::Result<()> {
    let Some(db) = TestDatabase::postgres().await? else {
        return Ok(());
    };
    let store = db.connect().await?;
    store.close().await;
    let mut conn = sqlx::PgConnection::connect(&db.url).await?;
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(&mut conn)
        .await?;
    assert!(schema.starts_with("rw_test_"), "{schema}");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
    )
    .bind(&schema)
    .fetch_all(&mut conn)
    .await?;
    for t in [
        "_sqlx_migrations",
        "api_tokens",
        "audit_log",
        "sessions",
        "settings",
        "users",
    ] {
        assert!(
            tables.iter().any(|x| x == t),
            "{t} not in {schema}: {tables:?}"
        );
    }
    let in_public: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public' AND table_name = 'audit_log'",
    )
    .fetch_one(&mut conn)
    .await?;
    assert_eq!(in_public, 0);
    conn.close().await?;
    db.cleanup().await;
    Ok(())
}

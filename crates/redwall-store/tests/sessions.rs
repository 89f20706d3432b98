//! Sessions and API tokens, on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use redwall_store::{both_backends, StoreError};

both_backends!(session_roundtrip_and_listing, |store| async move {
    user(&store, "u1", "alice").await;
    let s1 = session("s1", "u1", 100, 100, 1_000);
    let mut s2 = session("s2", "u1", 200, 200, 2_000);
    s2.client_ip = None;
    s2.user_agent = None;
    s2.mfa_verified = false;
    store.create_session(&s1).await?;
    store.create_session(&s2).await?;
    let err = store.create_session(&s1).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    let got = store
        .get_session_by_digest(b"session-digest-s2")
        .await?
        .unwrap();
    assert_eq!(got.id, "s2");
    assert_eq!(got.user_id, "u1");
    assert_eq!(got.csrf_token_digest, b"csrf-digest-s2");
    assert_eq!(
        (got.created_at, got.last_seen_at, got.expires_at),
        (200, 200, 2_000)
    );
    assert!(got.client_ip.is_none() && got.user_agent.is_none());
    assert!(!got.mfa_verified);
    let got = store
        .get_session_by_digest(b"session-digest-s1")
        .await?
        .unwrap();
    assert!(got.mfa_verified);
    assert_eq!(got.client_ip.as_deref(), Some("192.0.2.1"));
    assert!(store.get_session_by_digest(b"nope").await?.is_none());

    let ids: Vec<_> = store
        .list_sessions("u1")
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, ["s2", "s1"], "newest first");

    assert!(store.delete_session("s1").await?);
    assert!(!store.delete_session("s1").await?);
    assert_eq!(store.list_sessions("u1").await?.len(), 1);
    Ok(())
});

both_backends!(delete_sessions_of_user_except_one, |store| async move {
    user(&store, "u1", "alice").await;
    user(&store, "u2", "bob").await;
    for (id, u) in [("a", "u1"), ("b", "u1"), ("c", "u1"), ("d", "u2")] {
        store.create_session(&session(id, u, 1, 1, 1_000)).await?;
    }
    let mut deleted = store.delete_sessions_of_user("u1", Some("b")).await?;
    deleted.sort();
    assert_eq!(deleted, ["a", "c"]);
    let left: Vec<_> = store
        .list_sessions("u1")
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, ["b"]);
    assert_eq!(store.delete_sessions_of_user("u1", None).await?, ["b"]);
    assert!(store.delete_sessions_of_user("u1", None).await?.is_empty());
    assert_eq!(store.list_sessions("u2").await?.len(), 1);
    Ok(())
});

both_backends!(session_touch_and_expiry, |store| async move {
    user(&store, "u1", "alice").await;
    // (id, created, last_seen, expires)
    store
        .create_session(&session("s1", "u1", 100, 100, 1_000))
        .await?;
    store
        .create_session(&session("s2", "u1", 200, 200, 5_000))
        .await?;
    store
        .create_session(&session("s3", "u1", 300, 300, 5_000))
        .await?;

    store
        .touch_sessions(&[
            ("s1".to_owned(), 500),
            ("s2".to_owned(), 150), // older than stored: ignored
            ("s3".to_owned(), 900),
            ("missing".to_owned(), 900),
        ])
        .await?;
    store.touch_sessions(&[]).await?;
    let seen = |id: &'static str| {
        let store = store.clone();
        async move {
            store
                .get_session_by_digest(format!("session-digest-{id}").as_bytes())
                .await
        }
    };
    assert_eq!(seen("s1").await?.unwrap().last_seen_at, 500);
    assert_eq!(seen("s2").await?.unwrap().last_seen_at, 200);
    assert_eq!(seen("s3").await?.unwrap().last_seen_at, 900);

    // now = 1000: s1 reached its absolute expiry; idle cutoff 400: s2 idle.
    let n = store.delete_expired_sessions(1_000, 400).await?;
    assert_eq!(n, 2);
    let left: Vec<_> = store
        .list_sessions("u1")
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(left, ["s3"]);
    assert_eq!(store.delete_expired_sessions(1_000, 400).await?, 0);
    Ok(())
});

both_backends!(api_tokens, |store| async move {
    user(&store, "u1", "alice").await;
    user(&store, "u2", "bob").await;
    let mut t1 = token("t1", "u1", 100);
    t1.team_id = Some("team-9".to_owned());
    store.create_api_token(&t1).await?;
    let mut t2 = token("t2", "u1", 200);
    t2.expires_at = None;
    store.create_api_token(&t2).await?;
    store.create_api_token(&token("t3", "u2", 300)).await?;
    let err = store.create_api_token(&t1).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    let got = store
        .get_api_token_by_digest(b"token-digest-t1")
        .await?
        .unwrap();
    assert_eq!(got.id, "t1");
    assert_eq!(got.name, "token t1");
    assert_eq!(got.display_prefix, "rw_abcd");
    assert_eq!(got.scope, "read");
    assert_eq!(got.team_id.as_deref(), Some("team-9"));
    assert_eq!(got.expires_at, Some(1_000_100));
    assert!(got.last_used_at.is_none());
    let got2 = store
        .get_api_token_by_digest(b"token-digest-t2")
        .await?
        .unwrap();
    assert!(got2.expires_at.is_none() && got2.team_id.is_none());

    let ids: Vec<_> = store
        .list_api_tokens("u1")
        .await?
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(ids, ["t2", "t1"]);

    store
        .touch_api_tokens(&[("t1".to_owned(), 700), ("t2".to_owned(), 800)])
        .await?;
    store.touch_api_tokens(&[("t1".to_owned(), 600)]).await?; // backwards: ignored
    assert_eq!(
        store
            .get_api_token_by_digest(b"token-digest-t1")
            .await?
            .unwrap()
            .last_used_at,
        Some(700)
    );
    assert_eq!(
        store
            .get_api_token_by_digest(b"token-digest-t2")
            .await?
            .unwrap()
            .last_used_at,
        Some(800)
    );

    // Only the owner can revoke.
    assert!(!store.revoke_api_token("u2", "t1").await?);
    assert!(store.revoke_api_token("u1", "t1").await?);
    assert!(!store.revoke_api_token("u1", "t1").await?);
    assert!(store
        .get_api_token_by_digest(b"token-digest-t1")
        .await?
        .is_none());

    assert_eq!(store.delete_api_tokens_of_user("u1").await?, ["t2"]);
    assert!(store.list_api_tokens("u1").await?.is_empty());
    assert_eq!(store.list_api_tokens("u2").await?.len(), 1);
    Ok(())
});

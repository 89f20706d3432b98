//! Users, MFA, recovery codes and the setup token, on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use redwall_store::{both_backends, StoreError};

both_backends!(create_and_duplicate_username, |store| async move {
    let u = store.create_user(new_user("u1", "Alice", 10)).await?;
    assert_eq!(u.username, "Alice");
    assert!(!u.is_admin && !u.suspended && !u.mfa_enabled);
    assert_eq!(u.password_changed_at, Some(10));

    for dup in ["alice", "ALICE", "Alice"] {
        let err = store
            .create_user(new_user("u2", dup, 11))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{dup}: {err:?}");
    }
    // Same id, different name: also a conflict.
    let err = store
        .create_user(new_user("u1", "bob", 11))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");

    let found = store.find_user_by_username("aLiCe").await?.unwrap();
    assert_eq!(found.id, "u1");
    assert_eq!(found.username, "Alice");
    assert_eq!(
        found.password_hash.as_deref(),
        Some("$argon2id$hash-of-Alice")
    );
    assert!(store.find_user_by_username("nobody").await?.is_none());
    assert_eq!(store.get_user("u1").await?.unwrap().username, "Alice");
    assert!(store.get_user("missing").await?.is_none());
    assert_eq!(store.count_users().await?, 1);
    Ok(())
});

both_backends!(list_users_keyset_pages, |store| async move {
    for (i, name) in ["delta", "Alpha", "charlie", "Bravo", "echo"]
        .iter()
        .enumerate()
    {
        store
            .create_user(new_user(&format!("u{i}"), name, 1))
            .await?;
    }
    let page1 = store.list_users(None, 2).await?;
    let names: Vec<_> = page1.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["Alpha", "Bravo"]);
    let page2 = store.list_users(Some("Bravo"), 2).await?;
    let names: Vec<_> = page2.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["charlie", "delta"]);
    let page3 = store.list_users(Some("delta"), 2).await?;
    let names: Vec<_> = page3.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(names, ["echo"]);
    assert!(store.list_users(Some("echo"), 2).await?.is_empty());
    assert_eq!(store.count_users().await?, 5);
    Ok(())
});

both_backends!(password_admin_and_flags, |store| async move {
    user(&store, "u1", "alice").await;
    assert!(store.set_password_hash("u1", "$argon2id$new", 50).await?);
    assert!(!store.set_password_hash("nope", "$argon2id$new", 50).await?);
    let u = store.get_user("u1").await?.unwrap();
    assert_eq!(u.password_hash.as_deref(), Some("$argon2id$new"));
    assert_eq!(u.password_changed_at, Some(50));
    assert_eq!(u.updated_at, 50);

    assert!(store.set_admin("u1", true, 60).await?);
    assert!(store.get_user("u1").await?.unwrap().is_admin);
    assert!(store.set_admin("u1", false, 61).await?);
    assert!(!store.get_user("u1").await?.unwrap().is_admin);
    assert!(!store.set_admin("nope", true, 60).await?);

    assert!(store.set_suspended("u1", true, 70).await?);
    assert!(store.get_user("u1").await?.unwrap().suspended);
    assert!(store.set_suspended("u1", false, 71).await?);
    assert!(!store.get_user("u1").await?.unwrap().suspended);
    assert!(!store.set_suspended("nope", true, 70).await?);
    Ok(())
});

both_backends!(suspend_deletes_sessions_and_tokens, |store| async move {
    user(&store, "u1", "alice").await;
    user(&store, "u2", "bob").await;
    store
        .create_session(&session("s1", "u1", 1, 1, 1_000))
        .await?;
    store
        .create_session(&session("s2", "u1", 2, 2, 1_000))
        .await?;
    store
        .create_session(&session("s3", "u2", 3, 3, 1_000))
        .await?;
    store.create_api_token(&token("t1", "u1", 1)).await?;
    store.create_api_token(&token("t2", "u2", 1)).await?;

    assert!(store.set_suspended("u1", true, 100).await?);
    assert!(store.list_sessions("u1").await?.is_empty());
    assert!(store.list_api_tokens("u1").await?.is_empty());
    assert!(store
        .get_session_by_digest(b"session-digest-s1")
        .await?
        .is_none());
    assert!(store
        .get_api_token_by_digest(b"token-digest-t1")
        .await?
        .is_none());
    // Others are untouched.
    assert_eq!(store.list_sessions("u2").await?.len(), 1);
    assert_eq!(store.list_api_tokens("u2").await?.len(), 1);

    // Reinstating does not bring anything back, and deletes nothing.
    store
        .create_session(&session("s4", "u1", 4, 4, 1_000))
        .await?;
    assert!(store.set_suspended("u1", false, 101).await?);
    assert_eq!(store.list_sessions("u1").await?.len(), 1);
    Ok(())
});

both_backends!(delete_user_cascades, |store| async move {
    user(&store, "u1", "alice").await;
    user(&store, "u2", "bob").await;
    store
        .create_session(&session("s1", "u1", 1, 1, 1_000))
        .await?;
    store.create_api_token(&token("t1", "u1", 1)).await?;
    store
        .create_session(&session("s2", "u2", 1, 1, 1_000))
        .await?;
    assert!(
        store
            .enable_mfa("u1", b"sealed", &[b"c1".to_vec(), b"c2".to_vec()], 5, 1)
            .await?
    );
    assert_eq!(store.count_recovery_codes("u1").await?, 2);

    assert!(store.delete_user("u1").await?);
    assert!(!store.delete_user("u1").await?);
    assert!(store.get_user("u1").await?.is_none());
    assert!(store
        .get_session_by_digest(b"session-digest-s1")
        .await?
        .is_none());
    assert!(store
        .get_api_token_by_digest(b"token-digest-t1")
        .await?
        .is_none());
    assert_eq!(store.count_recovery_codes("u1").await?, 0);
    assert!(store
        .get_session_by_digest(b"session-digest-s2")
        .await?
        .is_some());
    assert_eq!(store.count_users().await?, 1);
    // The username is free again.
    user(&store, "u3", "Alice").await;
    Ok(())
});

both_backends!(foreign_keys_are_enforced, |store| async move {
    // A session for a user that does not exist must be refused: proves
    // SQLite runs with foreign_keys=ON.
    let err = store
        .create_session(&session("s1", "ghost", 1, 1, 1_000))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");
    let err = store
        .create_api_token(&token("t1", "ghost", 1))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");
    Ok(())
});

both_backends!(setup_token_is_single_use, |store| async move {
    store.replace_setup_token(b"digest-1", 1_000).await?;
    let mut admin = new_user("a1", "root", 500);
    admin.is_admin = false; // forced to true by the store
    let created = store
        .consume_setup_token_and_create_admin(b"digest-1", 500, admin.clone())
        .await?
        .unwrap();
    assert!(created.is_admin);
    assert_eq!(created.username, "root");
    let stored = store.get_user("a1").await?.unwrap();
    assert!(stored.is_admin);

    // Second use: the token is gone.
    let again = store
        .consume_setup_token_and_create_admin(b"digest-1", 501, new_user("a2", "root2", 501))
        .await?;
    assert!(again.is_none());
    assert_eq!(store.count_users().await?, 1);
    Ok(())
});

both_backends!(
    setup_token_expired_or_wrong_is_refused,
    |store| async move {
        store.replace_setup_token(b"digest-1", 1_000).await?;
        // Wrong digest.
        assert!(store
            .consume_setup_token_and_create_admin(b"other", 10, new_user("a1", "root", 10))
            .await?
            .is_none());
        // Expired (expires_at must be strictly after now).
        assert!(store
            .consume_setup_token_and_create_admin(b"digest-1", 1_000, new_user("a1", "root", 1_000))
            .await?
            .is_none());
        // Replaced: the old digest no longer works, the new one does.
        store.replace_setup_token(b"digest-2", 5_000).await?;
        assert!(store
            .consume_setup_token_and_create_admin(b"digest-1", 10, new_user("a1", "root", 10))
            .await?
            .is_none());
        assert_eq!(store.count_users().await?, 0);
        assert!(store
            .consume_setup_token_and_create_admin(b"digest-2", 10, new_user("a1", "root", 10))
            .await?
            .is_some());
        Ok(())
    }
);

both_backends!(setup_token_refused_once_a_user_exists, |store| async move {
    user(&store, "u1", "alice").await;
    store.replace_setup_token(b"digest-1", 1_000).await?;
    assert!(store
        .consume_setup_token_and_create_admin(b"digest-1", 10, new_user("a1", "root", 10))
        .await?
        .is_none());
    assert_eq!(store.count_users().await?, 1);
    assert!(store.find_user_by_username("root").await?.is_none());
    // The refusal rolled back: nothing else changed, and the token is not
    // consumed either (harmless: it can never create a user now).
    store.delete_user("u1").await?;
    assert!(store
        .consume_setup_token_and_create_admin(b"digest-1", 10, new_user("a1", "root", 10))
        .await?
        .is_some());
    Ok(())
});

both_backends!(concurrent_setup_creates_one_admin, |store| async move {
    store.replace_setup_token(b"digest-1", 1_000).await?;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .consume_setup_token_and_create_admin(
                    b"digest-1",
                    10,
                    new_user(&format!("a{i}"), &format!("root{i}"), 10),
                )
                .await
        }));
    }
    let mut created = 0;
    for t in tasks {
        if t.await??.is_some() {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    assert_eq!(store.count_users().await?, 1);
    Ok(())
});

both_backends!(mfa_enrolment_and_totp_replay, |store| async move {
    user(&store, "u1", "alice").await;
    assert!(
        store
            .set_mfa_pending("u1", Some(b"pending-sealed"), 10)
            .await?
    );
    let u = store.get_user("u1").await?.unwrap();
    assert_eq!(
        u.mfa_pending_sealed.as_deref(),
        Some(&b"pending-sealed"[..])
    );
    assert!(!u.mfa_enabled);

    let codes: Vec<Vec<u8>> = (0..10).map(|i| format!("code-{i}").into_bytes()).collect();
    assert!(
        store
            .enable_mfa("u1", b"pending-sealed", &codes, 100, 20)
            .await?
    );
    assert!(!store.enable_mfa("nope", b"x", &codes, 100, 20).await?);
    let u = store.get_user("u1").await?.unwrap();
    assert!(u.mfa_enabled);
    assert_eq!(u.mfa_secret_sealed.as_deref(), Some(&b"pending-sealed"[..]));
    assert!(u.mfa_pending_sealed.is_none());
    assert_eq!(u.mfa_last_step, Some(100));
    assert_eq!(store.count_recovery_codes("u1").await?, 10);

    // The enrolment code's step cannot be replayed, nor an older one.
    assert!(!store.advance_mfa_step("u1", 100).await?);
    assert!(!store.advance_mfa_step("u1", 99).await?);
    assert!(store.advance_mfa_step("u1", 101).await?);
    assert!(!store.advance_mfa_step("u1", 101).await?);
    assert!(!store.advance_mfa_step("nope", 500).await?);
    assert_eq!(
        store.get_user("u1").await?.unwrap().mfa_last_step,
        Some(101)
    );

    // Concurrent use of the same code: exactly one wins.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.advance_mfa_step("u1", 102).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        if t.await?? {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);

    assert!(store.disable_mfa("u1", 30).await?);
    let u = store.get_user("u1").await?.unwrap();
    assert!(!u.mfa_enabled);
    assert!(u.mfa_secret_sealed.is_none() && u.mfa_pending_sealed.is_none());
    assert!(u.mfa_last_step.is_none());
    assert_eq!(store.count_recovery_codes("u1").await?, 0);
    // With no last step any step is accepted.
    assert!(store.advance_mfa_step("u1", 1).await?);
    Ok(())
});

both_backends!(recovery_codes_are_single_use, |store| async move {
    user(&store, "u1", "alice").await;
    user(&store, "u2", "bob").await;
    let codes = vec![b"c1".to_vec(), b"c2".to_vec(), b"c3".to_vec()];
    store.enable_mfa("u1", b"s", &codes, 1, 1).await?;
    store
        .enable_mfa("u2", b"s", &[b"c1".to_vec()], 1, 1)
        .await?;

    assert!(store.use_recovery_code("u1", b"c2", 5).await?);
    assert!(!store.use_recovery_code("u1", b"c2", 6).await?);
    assert!(!store.use_recovery_code("u1", b"unknown", 6).await?);
    assert_eq!(store.count_recovery_codes("u1").await?, 2);
    // Another user's code is not ours.
    assert_eq!(store.count_recovery_codes("u2").await?, 1);

    // Concurrent use: exactly one wins.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.use_recovery_code("u1", b"c1", 7).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        if t.await?? {
            wins += 1;
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.count_recovery_codes("u1").await?, 1);

    // Re-enrolment replaces the codes.
    store
        .enable_mfa("u1", b"s2", &[b"n1".to_vec(), b"n2".to_vec()], 2, 8)
        .await?;
    assert_eq!(store.count_recovery_codes("u1").await?, 2);
    assert!(!store.use_recovery_code("u1", b"c3", 9).await?);
    assert!(store.use_recovery_code("u1", b"n1", 9).await?);
    assert!(
        store
            .replace_recovery_codes("u1", &[b"r1".to_vec()], 10)
            .await?
    );
    assert!(
        !store
            .replace_recovery_codes("nope", &[b"r1".to_vec()], 10)
            .await?
    );
    assert_eq!(store.count_recovery_codes("u1").await?, 1);
    Ok(())
});

both_backends!(settings_upsert, |store| async move {
    assert!(store.get_setting("session").await?.is_none());
    store
        .put_setting("session", r#"{"idle_minutes":30}"#, 1)
        .await?;
    assert_eq!(
        store.get_setting("session").await?.as_deref(),
        Some(r#"{"idle_minutes":30}"#)
    );
    store
        .put_setting("session", r#"{"idle_minutes":15}"#, 2)
        .await?;
    assert_eq!(
        store.get_setting("session").await?.as_deref(),
        Some(r#"{"idle_minutes":15}"#)
    );
    Ok(())
});

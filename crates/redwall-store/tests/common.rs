//! Shared helpers for the store tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use redwall_crypto::chain::ChainKey;
use redwall_crypto::keyring::Keyring;
use redwall_store::{ApiToken, Micros, NewAuditEntry, NewUser, Session, Store, User};
use serde_json::json;

pub fn key() -> ChainKey {
    ChainKey::from_keyring(&Keyring::from_bytes([7u8; 32]))
}

pub fn new_user(id: &str, username: &str, now: Micros) -> NewUser {
    NewUser {
        id: id.to_owned(),
        username: username.to_owned(),
        password_hash: Some(format!("$argon2id$hash-of-{username}")),
        is_admin: false,
        now,
    }
}

pub async fn user(store: &Store, id: &str, username: &str) -> User {
    store
        .create_user(new_user(id, username, 1_000))
        .await
        .unwrap()
}

pub fn session(
    id: &str,
    user_id: &str,
    created: Micros,
    last_seen: Micros,
    expires: Micros,
) -> Session {
    Session {
        id: id.to_owned(),
        token_digest: format!("session-digest-{id}").into_bytes(),
        user_id: user_id.to_owned(),
        created_at: created,
        last_seen_at: last_seen,
        expires_at: expires,
        client_ip: Some("192.0.2.1".to_owned()),
        user_agent: Some("test-agent".to_owned()),
        csrf_token_digest: format!("csrf-digest-{id}").into_bytes(),
        mfa_verified: true,
    }
}

pub fn token(id: &str, user_id: &str, created: Micros) -> ApiToken {
    ApiToken {
        id: id.to_owned(),
        user_id: user_id.to_owned(),
        name: format!("token {id}"),
        token_digest: format!("token-digest-{id}").into_bytes(),
        display_prefix: "rw_abcd".to_owned(),
        scope: "read".to_owned(),
        team_id: None,
        permissions: None,
        created_at: created,
        expires_at: Some(created + 1_000_000),
        last_used_at: None,
    }
}

/// Entry `i` of a varied test log: actors alice (every third) and bob,
/// events auth.login (even) and flow.deploy (odd), team t1 every fifth,
/// at = 1000 + i.
pub fn entry(i: i64) -> NewAuditEntry {
    let alice = i % 3 == 0;
    NewAuditEntry {
        at: 1_000 + i,
        actor_id: Some(if alice { "u-alice" } else { "u-bob" }.to_owned()),
        actor_name: Some(if alice { "alice" } else { "bob" }.to_owned()),
        client_ip: Some("198.51.100.7".to_owned()),
        user_agent: None,
        event: if i % 2 == 0 {
            "auth.login"
        } else {
            "flow.deploy"
        }
        .to_owned(),
        target: Some(format!("target-{i}")),
        outcome: "success".to_owned(),
        details: json!({"i": i, "nested": {"z": [1, 2], "a": "quote\" and \\ and\nnewline"}}),
        team_id: (i % 5 == 0).then(|| "t1".to_owned()),
    }
}

/// Appends entries 1..=n in batches of `batch`.
pub async fn seed_audit(store: &Store, n: i64, batch: usize) {
    let entries: Vec<NewAuditEntry> = (1..=n).map(entry).collect();
    let mut expected = 1;
    for chunk in entries.chunks(batch) {
        let seqs = store.append_audit(&key(), chunk).await.unwrap();
        let want: Vec<i64> = (expected..expected + chunk.len() as i64).collect();
        assert_eq!(seqs, want);
        expected += chunk.len() as i64;
    }
}

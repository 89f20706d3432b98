//! What the hub's tests share: a hub on a test store.

use std::sync::Arc;

use redwall_crypto::chain::ChainKey;
use redwall_crypto::keyring::Keyring;
use redwall_crypto::password::Argon2Params;
use redwall_hub::clock::ManualClock;
use redwall_hub::instances::keys::new_sealed_keys;
use redwall_hub::{Hub, HubParts};
use redwall_policy::session_rules::SessionLifetimes;
use redwall_store::{AuditWriter, Instance, Store};

pub fn hub(store: &Store) -> Hub {
    let keyring = Keyring::generate();
    let audit = AuditWriter::spawn(store.clone(), ChainKey::from_keyring(&keyring));
    Hub::new(HubParts {
        store: store.clone(),
        audit,
        keyring,
        clock: Arc::new(ManualClock::default()),
        passwords: Argon2Params::default(),
        sessions: SessionLifetimes::default(),
        refusal_sources: 100,
    })
    .unwrap()
}

/// Every entry recorded so far is chained, and the chain verifies.
pub async fn chain_intact(hub: &Hub) -> u64 {
    hub.audit.flush().await.unwrap();
    let report = hub
        .store
        .verify_audit_chain(&ChainKey::from_keyring(&hub.keyring))
        .await
        .unwrap();
    assert!(report.problem.is_none(), "{:?}", report.problem);
    report.checked
}

/// A stopped instance `i1` called "plant" in team `t1`, with keys sealed by
/// the hub's keyring (not stored: the caller stores it).
pub fn plant_instance(hub: &Hub, created_by: Option<&str>) -> Instance {
    Instance {
        id: "i1".into(),
        name: "plant".into(),
        team_id: "t1".into(),
        port: 41_000,
        desired_state: "stopped".into(),
        options: "{}".into(),
        routes: "[]".into(),
        egress: "[]".into(),
        secrets: new_sealed_keys(&hub.keyring, 1, "i1"),
        created_by: created_by.map(str::to_string),
        created_at: 1,
        updated_at: 1,
        running_snapshot_id: None,
        agent_id: None,
    }
}

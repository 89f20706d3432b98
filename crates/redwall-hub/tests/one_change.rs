//! A hub operation stores its change and its audit entry together or not at
//! all. Here the database refuses every audit entry (a trigger on
//! `audit_pending`): each operation must fail and leave nothing behind.
//! Before the hub layer, settings, invitations, instance variables and
//! logouts wrote their change first and their entry in a second
//! transaction, so this left changes with no entry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::IpAddr;

use common::{chain_intact, hub, plant_instance};
use redwall_hub::audit::{Actor, Origin, Who};
use redwall_hub::instances::operations::EnvInput;
use redwall_hub::invitations::InvitationRequest;
use redwall_hub::settings::SettingsChange;
use redwall_hub::Hub;
use redwall_policy::audit_event::AuditEvent;
use redwall_store::testing::execute_raw;
use redwall_store::{both_backends, Backend, Instance, NewUser, Session, Store};

async fn refuse_audit_entries(store: &Store) {
    let statements: &[&str] = match store.backend() {
        Backend::Sqlite => &[
            "CREATE TRIGGER refuse_entries BEFORE INSERT ON audit_pending \
             BEGIN SELECT RAISE(ABORT, 'audit refused'); END",
        ],
        Backend::Postgres => &[
            "CREATE FUNCTION refuse_entries() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'audit refused'; END $$",
            "CREATE TRIGGER refuse_entries BEFORE INSERT ON audit_pending \
             FOR EACH ROW EXECUTE FUNCTION refuse_entries()",
        ],
    };
    for sql in statements {
        execute_raw(store, sql).await.unwrap();
    }
}

async fn accept_audit_entries(store: &Store) {
    execute_raw(
        store,
        match store.backend() {
            Backend::Sqlite => "DROP TRIGGER refuse_entries",
            Backend::Postgres => "DROP TRIGGER refuse_entries ON audit_pending",
        },
    )
    .await
    .unwrap();
}

async fn seed(store: &Store, hub: &Hub) -> Instance {
    for (id, name) in [("u1", "owner"), ("u2", "invitee")] {
        store
            .create_user(NewUser {
                id: id.into(),
                username: name.into(),
                password_hash: None,
                is_admin: false,
                now: 1,
            })
            .await
            .unwrap();
    }
    store.create_team("t1", "Ops", "u1", 1).await.unwrap();
    let instance = plant_instance(hub, Some("u1"));
    store.create_instance(&instance).await.unwrap();
    store
        .create_session(&Session {
            id: "s1".into(),
            token_digest: vec![1; 32],
            user_id: "u1".into(),
            created_at: 1,
            last_seen_at: 1,
            expires_at: i64::MAX,
            client_ip: None,
            user_agent: None,
            csrf_token_digest: vec![2; 32],
            mfa_verified: false,
        })
        .await
        .unwrap();
    instance
}

/// What the operations below change, as stored.
async fn stored(store: &Store) -> (Option<String>, usize, usize, usize, usize) {
    (
        store.get_setting("platform").await.unwrap(),
        store.list_team_invitations("t1").await.unwrap().len(),
        store.list_instance_env("i1").await.unwrap().len(),
        store.list_sessions("u1").await.unwrap().len(),
        store.list_teams_of_user("u1").await.unwrap().len(),
    )
}

async fn run_all(hub: &Hub, instance: &Instance) -> Vec<bool> {
    let actor = Actor::user("u1", "owner");
    let origin = Origin {
        ip: IpAddr::from([127, 0, 0, 1]),
        user_agent: None,
    };
    let who = Who::by(&actor, &origin);
    let settings = hub
        .change_settings(
            who,
            SettingsChange {
                require_mfa: Some(true),
                ..SettingsChange::default()
            },
        )
        .await;
    let invitation = hub
        .invite(
            who,
            "t1",
            "u1",
            InvitationRequest {
                username: "invitee".into(),
                role: "member".into(),
                expires_in_days: None,
            },
        )
        .await;
    let env = hub
        .set_instance_env(
            who,
            instance,
            vec![EnvInput {
                name: "GREETING".into(),
                value: Some("hello".into()),
                secret: false,
            }],
        )
        .await;
    let logout = hub
        .end_sessions_of_user(
            who,
            "u1",
            None,
            AuditEvent::LogoutEverywhere,
            serde_json::json!({}),
        )
        .await;
    let team = hub.create_team(who, "u1", "Second").await;
    vec![
        settings.is_ok(),
        invitation.is_ok(),
        env.is_ok(),
        logout.is_ok(),
        team.is_ok(),
    ]
}

both_backends!(
    a_change_whose_entry_cannot_be_stored_is_not_stored,
    |store: Store| async move {
        let hub = hub(&store);
        let instance = seed(&store, &hub).await;
        let before = stored(&store).await;
        assert_eq!(before, (None, 0, 0, 1, 1));

        refuse_audit_entries(&store).await;
        let refused = run_all(&hub, &instance).await;
        assert_eq!(refused, vec![false; 5], "every operation fails");
        assert_eq!(stored(&store).await, before, "and nothing of it is stored");
        assert_eq!(store.pending_audit_entries().await?, 0);

        accept_audit_entries(&store).await;
        let done = run_all(&hub, &instance).await;
        assert_eq!(done, vec![true; 5]);
        let after = stored(&store).await;
        assert!(after.0.is_some());
        assert_eq!((after.1, after.2, after.3, after.4), (1, 1, 0, 2));
        assert_eq!(chain_intact(&hub).await, 5, "one entry per change");
        Ok(())
    }
);

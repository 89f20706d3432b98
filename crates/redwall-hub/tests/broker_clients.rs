//! The team broker's clients as the hub keeps them: passwords that work
//! once created and stop at once when rotated or revoked, rules checked
//! before they are stored, each instance's own identity, and no way from
//! one team to another's clients.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::IpAddr;

use common::{chain_intact, hub, plant_instance};
use redwall_hub::audit::{Actor, Origin, Who};
use redwall_hub::HubError;
use redwall_policy::mqtt_acl::{decide, AclRule, Action, Actions, Effect};
use redwall_store::{both_backends, NewUser, Store};

fn rule(effect: Effect, actions: Actions, filter: &str) -> AclRule {
    AclRule {
        effect,
        actions,
        filter: filter.into(),
    }
}

async fn seed(store: &Store) {
    store
        .create_user(NewUser {
            id: "u1".into(),
            username: "owner".into(),
            password_hash: None,
            is_admin: false,
            now: 1,
        })
        .await
        .unwrap();
    store.create_team("t1", "Ops", "u1", 1).await.unwrap();
    store.create_team("t2", "Other", "u1", 1).await.unwrap();
}

both_backends!(
    a_client_connects_with_its_password_until_rotated_or_revoked,
    |store: Store| async move {
        seed(&store).await;
        let hub = hub(&store);
        let mut closed = hub.broker_revocations();
        let actor = Actor::user("u1", "owner");
        let origin = Origin {
            ip: IpAddr::from([127, 0, 0, 1]),
            user_agent: None,
        };
        let who = Who::by(&actor, &origin);
        let rules = vec![rule(Effect::Allow, Actions::Publish, "plant/#")];
        let (secret, client) = hub
            .create_broker_client(who, "t1", "u1", " gateway ", rules.clone())
            .await?;
        assert_eq!(client.name, "gateway");
        assert!(secret.expose().starts_with("rwb_"));
        assert_ne!(
            client.secret_digest,
            secret.expose().as_bytes(),
            "a digest is stored"
        );

        let id = hub
            .broker_login(&client.id, secret.expose().as_bytes())
            .await?
            .expect("its own password logs in");
        assert_eq!((id.team_id.as_str(), id.rules.clone()), ("t1", rules));
        assert_eq!(decide(&id.rules, Action::Publish, "plant/a"), Effect::Allow);
        assert_eq!(
            decide(&id.rules, Action::Subscribe, "plant/a"),
            Effect::Deny
        );
        for (user, pass) in [
            ("someone", secret.expose().as_bytes()),
            (client.id.as_str(), b"rwb_wrong".as_slice()),
            (client.id.as_str(), b"\xff\xfe".as_slice()),
            (client.id.as_str(), b"".as_slice()),
        ] {
            assert!(hub.broker_login(user, pass).await?.is_none(), "{user}");
        }

        // Same name twice in a team: refused; in another team: fine.
        let again = hub
            .create_broker_client(who, "t1", "u1", "gateway", Vec::new())
            .await;
        assert!(matches!(
            again,
            Err(HubError::Refused {
                code: "name_taken",
                ..
            })
        ));
        hub.create_broker_client(who, "t2", "u1", "gateway", Vec::new())
            .await?;

        // Rules are checked before anything is stored.
        let bad = hub
            .set_broker_rules(
                who,
                "t1",
                &client.id,
                vec![rule(Effect::Allow, Actions::Both, "a/#/b")],
                false,
            )
            .await;
        assert!(matches!(
            bad,
            Err(HubError::Refused {
                code: "invalid_filter",
                ..
            })
        ));
        assert_eq!(hub.broker_clients("t1").await?[0].rules, client.rules);

        // Another team's client is not found, whatever is asked.
        for result in [
            hub.rotate_broker_client(who, "t2", &client.id)
                .await
                .map(|_| ()),
            hub.revoke_broker_client(who, "t2", &client.id).await,
        ] {
            assert!(matches!(result, Err(HubError::NotFound)));
        }

        // Rotated: the old password stops at once, the new one works, and
        // the broker is told to close the client's connections.
        let fresh = hub.rotate_broker_client(who, "t1", &client.id).await?;
        assert_eq!(closed.recv().await?, client.id);
        assert!(hub
            .broker_login(&client.id, secret.expose().as_bytes())
            .await?
            .is_none());
        assert!(hub
            .broker_login(&client.id, fresh.expose().as_bytes())
            .await?
            .is_some());

        hub.set_broker_rules(who, "t1", &client.id, Vec::new(), false)
            .await?;
        assert_eq!(closed.recv().await?, client.id);
        let id = hub
            .broker_login(&client.id, fresh.expose().as_bytes())
            .await?
            .unwrap();
        assert_eq!(
            decide(&id.rules, Action::Publish, "plant/a"),
            Effect::Deny,
            "no rule: deny"
        );

        hub.revoke_broker_client(who, "t1", &client.id).await?;
        assert_eq!(closed.recv().await?, client.id);
        assert!(hub
            .broker_login(&client.id, fresh.expose().as_bytes())
            .await?
            .is_none());
        // created x2 (t1, t2), rotated, rules changed x1, revoked
        assert_eq!(chain_intact(&hub).await, 5);
        Ok(())
    }
);

both_backends!(
    an_instance_gets_its_own_identity_rotated_at_every_start,
    |store: Store| async move {
        seed(&store).await;
        let hub = hub(&store);
        let instance = plant_instance(&hub, None);
        store.create_instance(&instance).await?;
        let origin = Origin {
            ip: IpAddr::from([127, 0, 0, 1]),
            user_agent: Some("redwall-supervisor".into()),
        };
        let who = Who::anonymous(&origin);
        let (user, first) = hub.instance_broker_identity(who, &instance).await?;
        let id = hub
            .broker_login(&user, first.expose().as_bytes())
            .await?
            .unwrap();
        assert_eq!(id.instance_id.as_deref(), Some("i1"));
        assert_eq!(
            decide(&id.rules, Action::Subscribe, "#"),
            Effect::Allow,
            "the whole team tree"
        );
        assert_eq!(decide(&id.rules, Action::Publish, "$SYS/x"), Effect::Allow);

        let (again, second) = hub.instance_broker_identity(who, &instance).await?;
        assert_eq!(again, user, "the same identity");
        assert!(hub
            .broker_login(&user, first.expose().as_bytes())
            .await?
            .is_none());
        assert!(hub
            .broker_login(&user, second.expose().as_bytes())
            .await?
            .is_some());
        assert_eq!(hub.broker_clients("t1").await?.len(), 1);

        // Deleting the instance takes its identity along.
        store.delete_instance("i1").await?;
        assert!(hub
            .broker_login(&user, second.expose().as_bytes())
            .await?
            .is_none());
        assert!(hub.broker_clients("t1").await?.is_empty());
        Ok(())
    }
);

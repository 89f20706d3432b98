//! Instances, their environment and API keys, on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use redwall_store::{both_backends, EnvEntry, Instance, InstanceApiKey, StoreError};

fn instance(id: &str, name: &str, team: &str, port: u16) -> Instance {
    Instance {
        id: id.into(),
        name: name.into(),
        team_id: team.into(),
        port,
        desired_state: "running".into(),
        options: "{}".into(),
        routes: "[]".into(),
        egress: "[]".into(),
        secrets: format!("v1.sealed-{id}"),
        created_by: None,
        created_at: 10,
        updated_at: 10,
        running_snapshot_id: None,
        agent_id: None,
    }
}

fn env(name: &str, secret: bool, value: &str) -> EnvEntry {
    EnvEntry {
        name: name.into(),
        secret,
        value: value.into(),
        updated_at: 20,
    }
}

both_backends!(
    instances_belong_to_one_team_and_names_and_ports_are_unique,
    |store| async move {
        user(&store, "u1", "alice").await;
        store.create_team("t1", "Ops", "u1", 10).await?;
        store.create_team("t2", "Lab", "u1", 10).await?;
        store
            .create_instance(&instance("i1", "plant", "t1", 41000))
            .await?;
        for dup in [
            instance("i2", "plant", "t2", 41001),
            instance("i3", "other", "t2", 41000),
        ] {
            assert!(matches!(
                store.create_instance(&dup).await,
                Err(StoreError::Conflict(_))
            ));
        }
        assert_eq!(
            store.get_team_instance("t1", "plant").await?.unwrap().id,
            "i1"
        );
        assert_eq!(
            store.get_team_instance("t1", "i1").await?.unwrap().port,
            41000
        );
        assert!(
            store.get_team_instance("t2", "plant").await?.is_none(),
            "another team's id or name matches nothing"
        );
        assert_eq!(store.count_team_instances("t1").await?, 1);
        assert_eq!(store.used_instance_ports().await?, vec![41000]);
        assert!(
            store
                .set_instance_desired_state("i1", "stopped", 11)
                .await?
        );
        assert!(store.set_instance_routes("i1", "[{\"x\":1}]", 12).await?);
        let i = store.get_instance_by_name("plant").await?.unwrap();
        assert_eq!(
            (i.desired_state.as_str(), i.routes.as_str(), i.updated_at),
            ("stopped", "[{\"x\":1}]", 12)
        );
        assert_eq!(i.egress, "[]", "no egress exception by default");
        let rule = r#"[{"cidr":"10.0.0.0/24","protocol":"tcp","ports":"5432"}]"#;
        assert!(store.set_instance_egress("i1", rule, 13).await?);
        let i = store.get_instance_by_name("plant").await?.unwrap();
        assert_eq!((i.egress.as_str(), i.updated_at), (rule, 13));
        // A team with instances cannot disappear under them.
        assert!(store.delete_team("t1").await.is_err());
        assert!(store.delete_instance("i1").await?);
        assert!(store.delete_team("t1").await?);
        Ok(())
    }
);

both_backends!(
    environment_is_replaced_whole_and_keys_are_found_by_digest,
    |store| async move {
        user(&store, "u1", "alice").await;
        store.create_team("t1", "Ops", "u1", 10).await?;
        store
            .create_instance(&instance("i1", "plant", "t1", 41000))
            .await?;
        store
            .replace_instance_env("i1", &[env("A", false, "v1.a"), env("B", true, "v1.b")])
            .await?;
        store
            .replace_instance_env("i1", &[env("B", true, "v1.b2")])
            .await?;
        let e = store.list_instance_env("i1").await?;
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].name.as_str(), e[0].secret, e[0].value.as_str()),
            ("B", true, "v1.b2")
        );
        let key = InstanceApiKey {
            id: "k1".into(),
            instance_id: "i1".into(),
            name: "line".into(),
            key_digest: vec![7; 32],
            display_prefix: "rwk_abc".into(),
            path_prefix: Some("/api".into()),
            created_by: Some("u1".into()),
            created_at: 30,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        };
        store.create_instance_api_key(&key).await?;
        let found = store
            .get_instance_api_key_by_digest(&[7; 32])
            .await?
            .unwrap();
        assert_eq!(
            (found.id.as_str(), found.path_prefix.as_deref()),
            ("k1", Some("/api"))
        );
        assert!(
            !store.revoke_instance_api_key("other", "k1", 40).await?,
            "only through its own instance"
        );
        assert!(store.revoke_instance_api_key("i1", "k1", 40).await?);
        assert!(!store.revoke_instance_api_key("i1", "k1", 41).await?);
        assert_eq!(
            store
                .get_instance_api_key_by_digest(&[7; 32])
                .await?
                .unwrap()
                .revoked_at,
            Some(40)
        );
        // Re-sealing touches every sealed value in one go, or none.
        let n = store
            .reseal_instance_secrets(&|_, s: &str| Ok(s.replace("v1.", "v2.")))
            .await?
            .unwrap();
        assert_eq!(n, 2);
        assert!(store.list_instance_env("i1").await?[0]
            .value
            .starts_with("v2."));
        let failed = store
            .reseal_instance_secrets(&|row: &str, s: &str| {
                if row.contains('/') {
                    Err("bad".into())
                } else {
                    Ok(s.replace("v2.", "v3."))
                }
            })
            .await?;
        assert!(failed.is_err());
        assert!(
            store
                .get_instance_by_name("plant")
                .await?
                .unwrap()
                .secrets
                .starts_with("v2."),
            "a failed rotation changes nothing"
        );
        // Deleting the instance takes its environment and keys along.
        store.delete_instance("i1").await?;
        assert!(store.list_instance_env("i1").await?.is_empty());
        assert!(store
            .get_instance_api_key_by_digest(&[7; 32])
            .await?
            .is_none());
        Ok(())
    }
);

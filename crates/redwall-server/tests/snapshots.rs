//! Signed snapshots end to end, with a real Node-RED from npm: a deploy from
//! the editor is snapshotted, a rollback restores the flows and credentials
//! exactly (and can be undone), a snapshot changed in the database is
//! refused, and exports round-trip under their passphrase only.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod snapshot_kit;

use base64::Engine as _;
use common::*;
use serde_json::json;
use snapshot_kit::*;
use std::time::Duration;

#[tokio::test]
async fn an_editor_deploy_is_snapshotted_and_a_rollback_restores_it_exactly() {
    let s = instance_server().await;
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let member = s.user(&admin, "mia").await;
    let team = create_team(&owner, "Plant").await;
    join_team(&owner, &member, &team, "mia", "member").await;
    create_running(&owner, &team, "line").await;

    deploy_from_editor(&s, &owner, "line", flows("hello")).await;
    let first = snapshots(&owner, &team, "line", 1).await[0].clone();
    assert_eq!(first["kind"], "automatic", "{first}");
    let v1 = first["id"].as_str().unwrap().to_string();
    let instance = owner
        .get(&format!("/api/v1/teams/{team}/instances/line"))
        .await;
    assert_eq!(
        running_snapshot(&instance.body).as_deref(),
        Some(v1.as_str())
    );

    let detail = member
        .get(&format!("/api/v1/teams/{team}/snapshots/{v1}"))
        .await;
    assert_eq!(detail.status, 200, "{}", detail.body);
    assert_eq!(detail.body["nodes_with_credentials"], json!(["b1"]));
    assert!(!detail.text.contains("pw-hello"), "credentials shown");
    assert!(detail.body["signed_by"]
        .as_str()
        .unwrap()
        .starts_with("SHA256:"));

    deploy_from_editor(&s, &member, "line", flows("goodbye")).await;
    // The test clock stands still, so both have the same time: find the new one.
    let v2 = snapshots(&owner, &team, "line", 2)
        .await
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .find(|id| *id != v1)
        .unwrap();

    let diff = member
        .get(&format!("/api/v1/teams/{team}/snapshots/{v1}/diff?to={v2}"))
        .await;
    assert_eq!(diff.status, 200, "{}", diff.body);
    let text = diff.body["text"].as_str().unwrap();
    assert!(text.contains("msg.payload = 'hello, ' + who;"), "{text}");
    assert!(text.contains("msg.payload = 'goodbye, ' + who;"), "{text}");
    assert_eq!(diff.body["credentials_changed"], true);

    // Members take snapshots but do not roll back.
    let r = member
        .post(
            &format!("/api/v1/teams/{team}/instances/line/rollback"),
            json!({"snapshot": v1}),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);

    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/instances/line/rollback"),
            json!({"snapshot": v1}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "done", "{}", r.body);
    assert_eq!(r.body["previous_snapshot_id"], v2.as_str());

    // The instance serves exactly the snapshot's flows...
    let live = live_flows(&s, &owner, "line").await;
    assert_eq!(
        redwall_hub::snapshots::content::flows_sha256(&live),
        first["flows_sha256"].as_str().unwrap()
    );
    let instance = owner
        .get(&format!("/api/v1/teams/{team}/instances/line"))
        .await;
    assert_eq!(
        running_snapshot(&instance.body).as_deref(),
        Some(v1.as_str())
    );
    // ...and its credentials: a snapshot taken now holds the same content.
    let now = owner
        .post(
            &format!("/api/v1/teams/{team}/instances/line/snapshots"),
            json!({"note": "after rollback"}),
        )
        .await;
    assert_eq!(now.status, 201, "{}", now.body);
    assert_eq!(now.body["content_sha256"], first["content_sha256"]);
    // The rollback's own deploy took no automatic snapshot.
    let all = snapshots(&owner, &team, "line", 3).await;
    assert_eq!(
        all.iter().filter(|s| s["kind"] == "automatic").count(),
        2,
        "{all:?}"
    );

    // Undo: back to what ran before.
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/instances/line/rollback"),
            json!({"snapshot": v2}),
        )
        .await;
    assert_eq!(r.body["status"], "done", "{}", r.body);
    let live = live_flows(&s, &owner, "line").await;
    assert!(live.to_string().contains("goodbye"));

    let deployments = owner
        .get(&format!("/api/v1/teams/{team}/instances/line/deployments"))
        .await;
    assert_eq!(deployments.body.as_array().unwrap().len(), 2);
    assert!(!audit_events(&admin, "snapshot.deployed").await.is_empty());
    assert_eq!(audit_events(&admin, "snapshot.created").await.len(), 3);
    s.assert_audit_intact().await;
    s.stop().await;
}

#[tokio::test]
async fn tampered_snapshots_are_refused_and_exports_open_with_their_passphrase_only() {
    let s = instance_server().await;
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let team = create_team(&owner, "Plant").await;
    create_running(&owner, &team, "line").await;
    deploy_from_editor(&s, &owner, "line", flows("hello")).await;
    let original = snapshots(&owner, &team, "line", 1).await[0].clone();
    let v1 = original["id"].as_str().unwrap().to_string();

    // Export, then import into the same instance: signed by this hub, same
    // content.
    let passphrase = "correct horse battery staple";
    let answer = owner
        .http
        .post(s.url(&format!("/api/v1/teams/{team}/snapshots/{v1}/export")))
        .header("cookie", owner.cookie.clone().unwrap())
        .header("x-csrf-token", owner.csrf.clone().unwrap())
        .json(&json!({ "passphrase": passphrase }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let file = answer.bytes().await.unwrap().to_vec();
    assert!(!String::from_utf8_lossy(&file).contains("pw-hello"));
    let import = |file: Vec<u8>, passphrase: Option<&str>, accept: bool| {
        let owner = owner.clone();
        let team = team.clone();
        let passphrase = passphrase.map(str::to_string);
        async move {
            owner
                .post(
                    &format!("/api/v1/teams/{team}/instances/line/snapshots/import"),
                    json!({
                        "file": base64::engine::general_purpose::STANDARD.encode(file),
                        "passphrase": passphrase,
                        "accept_plaintext_credentials": accept,
                    }),
                )
                .await
        }
    };
    let r = import(file.clone(), Some(passphrase), false).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["provenance"], "this_hub");
    assert_eq!(
        r.body["snapshot"]["content_sha256"],
        original["content_sha256"]
    );
    let r = import(file.clone(), Some("a wrong passphrase"), false).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.code(), "wrong_passphrase");
    let mut damaged = file.clone();
    let last = damaged.len() - 5;
    damaged[last] ^= 1;
    let r = import(damaged, Some(passphrase), false).await;
    assert_eq!(r.status, 422, "{}", r.body);

    // A plain flows file with credentials in the clear: refused unless accepted.
    let plain = serde_json::to_vec(&flows("plain")).unwrap();
    let r = import(plain.clone(), None, false).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.code(), "plaintext_credentials");
    let r = import(plain, None, true).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["provenance"], "unsigned");

    // One byte changed behind Redwall's back: refused, and the refusal audited.
    let store = &s.running.state.hub.store;
    redwall_store::testing::execute_raw(store, "DROP TRIGGER snapshots_immutable")
        .await
        .unwrap();
    redwall_store::testing::execute_raw(
        store,
        &format!(
            "UPDATE snapshots SET content = replace(content, 'hello, ', 'hellp, ') WHERE id = '{v1}'"
        ),
    )
    .await
    .unwrap();
    let r = owner
        .get(&format!("/api/v1/teams/{team}/snapshots/{v1}"))
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.code(), "snapshot_invalid");
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/instances/line/rollback"),
            json!({"snapshot": v1}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    let refused = audit_events(&admin, "snapshot.refused").await;
    assert!(refused.len() >= 2, "{refused:?}");
    s.assert_audit_intact().await;
    s.stop().await;
}

/// A module Node-RED's palette installs from npm: tiny, no dependencies.
const MODULE: &str = "node-red-node-random";
const MODULE_VERSION: &str = "0.4.1";

#[tokio::test]
async fn a_rollback_installs_the_modules_its_snapshot_needs_where_the_palette_is_allowed() {
    // The instances reach npm's registry over the host's network.
    let s = instance_server_with(|c| c.instances.network_isolation = false).await;
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let team = create_team(&owner, "Plant").await;
    for name in ["source", "target", "locked"] {
        create_running(&owner, &team, name).await;
    }
    for name in ["source", "target"] {
        let r = owner
            .put(
                &format!("/api/v1/teams/{team}/instances/{name}/options"),
                json!({"allow_palette_install": true}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        let r = owner
            .post(
                &format!("/api/v1/teams/{team}/instances/{name}/restart"),
                json!({}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        wait_running(&owner, &team, name).await;
    }
    let mut editor = on_host(&s, &owner, "source").await;
    let host = editor
        .headers
        .iter()
        .find(|(k, _)| *k == "host")
        .map(|(_, v)| v.clone())
        .unwrap();
    editor.headers.push(("origin", format!("http://{host}")));
    let r = editor
        .post(
            "/editor/nodes",
            json!({"module": MODULE, "version": MODULE_VERSION}),
        )
        .await;
    assert_eq!(r.status, 200, "palette install: {}", r.text);
    let mut with_random = flows("hello");
    with_random.as_array_mut().unwrap().push(json!({
        "id": "rnd1", "type": "random", "z": "t1", "low": 1, "high": 6,
        "inte": "true", "property": "payload", "wires": [[]]
    }));
    deploy_from_editor(&s, &owner, "source", with_random).await;
    let snapshot = snapshots(&owner, &team, "source", 1).await[0].clone();
    let id = snapshot["id"].as_str().unwrap();
    let detail = owner
        .get(&format!("/api/v1/teams/{team}/snapshots/{id}"))
        .await;
    assert_eq!(
        detail.body["modules"][MODULE], MODULE_VERSION,
        "{}",
        detail.body
    );

    // Where the palette is off, the rollback says what is missing and changes nothing.
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/instances/locked/rollback"),
            json!({"snapshot": id}),
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.code(), "modules_differ");
    assert!(r.text.contains(MODULE), "{}", r.text);

    // Where it is on, the module is installed first, then the flows load.
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/instances/target/rollback"),
            json!({"snapshot": id}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "done", "{}", r.body);
    let live = live_flows(&s, &owner, "target").await;
    assert_eq!(
        redwall_hub::snapshots::content::flows_sha256(&live),
        snapshot["flows_sha256"].as_str().unwrap()
    );
    let now = owner
        .post(
            &format!("/api/v1/teams/{team}/instances/target/snapshots"),
            json!({}),
        )
        .await;
    let now_id = now.body["id"].as_str().unwrap();
    let detail = owner
        .get(&format!("/api/v1/teams/{team}/snapshots/{now_id}"))
        .await;
    assert_eq!(
        detail.body["modules"][MODULE], MODULE_VERSION,
        "{}",
        detail.body
    );
    s.assert_audit_intact().await;
    s.stop().await;
}

#[tokio::test]
async fn automatic_snapshots_beyond_the_retention_go_and_manual_ones_stay() {
    let s = instance_server().await;
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let team = create_team(&owner, "Plant").await;
    create_running(&owner, &team, "line").await;
    let r = admin
        .patch("/api/v1/settings", json!({"snapshot_keep_automatic": 0}))
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let r = admin
        .patch("/api/v1/settings", json!({"snapshot_keep_automatic": 2}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    deploy_from_editor(&s, &owner, "line", flows("one")).await;
    snapshots(&owner, &team, "line", 1).await;
    let manual = owner
        .post(
            &format!("/api/v1/teams/{team}/instances/line/snapshots"),
            json!({"note": "keep me"}),
        )
        .await;
    assert_eq!(manual.status, 201, "{}", manual.body);
    for (i, greeting) in ["two", "three", "four"].iter().enumerate() {
        // The test clock stands still: move it so "newest" means something.
        s.clock.advance_secs(1);
        deploy_from_editor(&s, &owner, "line", flows(greeting)).await;
        snapshots(&owner, &team, "line", (3 + i).min(4)).await;
    }
    // Once the fourth deploy's snapshot pruned: the one it runs, the two
    // newest automatic ones besides it, and the manual one.
    for _ in 0..100 {
        if !audit_events(&admin, "snapshot.pruned").await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list = owner
        .get(&format!("/api/v1/teams/{team}/snapshots?instance=line"))
        .await;
    let mut kinds: Vec<String> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap().to_string())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["automatic", "automatic", "automatic", "manual"]);
    let list = owner
        .get(&format!("/api/v1/teams/{team}/snapshots?instance=line"))
        .await;
    let notes: Vec<&str> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["note"].as_str().unwrap())
        .collect();
    assert!(notes.contains(&"keep me"));
    assert_eq!(audit_events(&admin, "snapshot.pruned").await.len(), 1);
    s.assert_audit_intact().await;
    s.stop().await;
}

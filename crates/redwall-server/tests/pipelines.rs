//! Pipelines, groups and deploy windows with real Node-RED instances: a
//! stage that needs approval deploys nothing until an Owner other than the
//! promoter approves, a later stage waits for the earlier one, and a deploy
//! held by its window starts only when the window opens.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
mod snapshot_kit;

use common::*;
use serde_json::{json, Value};
use snapshot_kit::*;
use std::time::Duration;

async fn instance(c: &Client, team: &str, name: &str) -> Value {
    let r = c
        .get(&format!("/api/v1/teams/{team}/instances/{name}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// The deployment held by its window (the test clock stands still, so the
/// list's order by time says nothing).
fn windowed(deployments: &Value) -> Value {
    deployments
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["reason"] == "deploy")
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn approval_and_windows_hold_deploys_back_until_they_allow_them() {
    let s = instance_server().await;
    let admin = s.admin().await;
    let olivia = s.user(&admin, "olivia").await;
    let oscar = s.user(&admin, "oscar").await;
    let mia = s.user(&admin, "mia").await;
    let team = create_team(&olivia, "Plant").await;
    join_team(&olivia, &oscar, &team, "oscar", "owner").await;
    join_team(&olivia, &mia, &team, "mia", "member").await;
    create_running(&olivia, &team, "dev").await;
    create_running(&olivia, &team, "prod").await;
    deploy_from_editor(&s, &mia, "dev", flows("hello")).await;
    let v1 = snapshots(&olivia, &team, "dev", 1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let pipeline = json!({
        "name": "release",
        "stages": [
            {"name": "dev", "target": {"kind": "instance", "name": "dev"}},
            {"name": "prod", "target": {"kind": "instance", "name": "prod"}, "requires_approval": true}
        ]
    });
    let r = mia
        .post(&format!("/api/v1/teams/{team}/pipelines"), pipeline.clone())
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = olivia
        .post(&format!("/api/v1/teams/{team}/pipelines"), pipeline)
        .await;
    assert_eq!(r.status, 201, "{}", r.body);

    let promote = |c: &Client, stage: &str, window: Value| {
        let c = c.clone();
        let team = team.clone();
        let body = json!({"snapshot": v1, "stage": stage, "window": window});
        async move {
            c.post(
                &format!("/api/v1/teams/{team}/pipelines/release/promote"),
                body,
            )
            .await
        }
    };
    // Not into prod before dev runs it.
    let r = promote(&olivia, "prod", Value::Null).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(r.code(), "previous_stage_not_done");
    let r = promote(&olivia, "dev", Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["state"], "done", "{}", r.body);

    // Into prod: held for approval, nothing deployed.
    let r = promote(&olivia, "prod", Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["state"], "awaiting_approval", "{}", r.body);
    let promotion = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        running_snapshot(&instance(&olivia, &team, "prod").await),
        None
    );
    assert!(!live_flows(&s, &olivia, "prod")
        .await
        .to_string()
        .contains("hello"));
    let approve = format!("/api/v1/teams/{team}/promotions/{promotion}/approve");
    let r = olivia.post(&approve, json!({})).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.code(), "approval_by_promoter");
    let r = mia.post(&approve, json!({})).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        running_snapshot(&instance(&olivia, &team, "prod").await),
        None
    );
    let r = oscar.post(&approve, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["state"], "done", "{}", r.body);
    assert_eq!(
        running_snapshot(&instance(&olivia, &team, "prod").await).as_deref(),
        Some(v1.as_str())
    );
    assert!(live_flows(&s, &olivia, "prod")
        .await
        .to_string()
        .contains("hello"));
    let r = oscar.post(&approve, json!({})).await;
    assert_eq!(r.status, 409, "approved twice: {}", r.body);

    // A deploy to a subset of a group, held until not_before.
    let r = olivia
        .put(
            &format!("/api/v1/teams/{team}/groups/fleet"),
            json!({"instances": ["dev", "prod"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    deploy_from_editor(&s, &mia, "dev", flows("bonjour")).await;
    let v2 = snapshots(&olivia, &team, "dev", 2)
        .await
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .find(|id| *id != v1)
        .unwrap();
    let now = redwall_hub::clock::Clock::now(&s.clock);
    let later = redwall_hub::clock::rfc3339(now + 20 * 60 * 1_000_000);
    let r = olivia
        .post(
            &format!("/api/v1/teams/{team}/deploys"),
            json!({
                "snapshot": v2,
                "target": {"kind": "group", "name": "fleet"},
                "only": ["prod"],
                "window": {"not_before": later},
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let deployments = r.body.as_array().unwrap();
    assert_eq!(deployments.len(), 1, "only prod: {}", r.body);
    assert_eq!(deployments[0]["status"], "waiting");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = olivia
        .get(&format!("/api/v1/teams/{team}/instances/prod/deployments"))
        .await;
    assert_eq!(windowed(&held.body)["status"], "waiting", "{}", held.body);
    let prod_snapshots = olivia
        .get(&format!("/api/v1/teams/{team}/snapshots?instance=prod"))
        .await;
    assert_eq!(
        running_snapshot(&instance(&olivia, &team, "prod").await).as_deref(),
        Some(v1.as_str()),
        "the window held the deploy back: v2 {v2}, deployments {}, prod's snapshots {}",
        held.body,
        prod_snapshots.body
    );
    s.clock.advance_secs(21 * 60);
    let mut status = Value::Null;
    for _ in 0..300 {
        let r = olivia
            .get(&format!("/api/v1/teams/{team}/instances/prod/deployments"))
            .await;
        status = windowed(&r.body)["status"].clone();
        if status == "done" || status == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "done");
    assert_eq!(
        running_snapshot(&instance(&olivia, &team, "prod").await).as_deref(),
        Some(v2.as_str())
    );
    // dev was not in the subset: it still runs its own latest deploy.
    assert_eq!(
        running_snapshot(&instance(&olivia, &team, "dev").await).as_deref(),
        Some(v2.as_str())
    );
    assert!(!audit_events(&admin, "pipeline.promotion_approved")
        .await
        .is_empty());
    s.assert_audit_intact().await;
    s.stop().await;
}

//! Teams and roles as people use them: invitations, role changes, the last
//! Owner, immediate loss of access, team MFA, scoped tokens, and isolation
//! between tenants.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use redwall_server::auth::guard::ADMIN_ACCESS_HEADER;
use serde_json::json;

async fn id_of(c: &Client) -> String {
    c.get("/api/v1/me").await.body["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The events in the team's log, newest first.
async fn team_events(owner: &Client, team: &str) -> Vec<String> {
    let log = owner.get(&format!("/api/v1/teams/{team}/audit")).await;
    log.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect()
}

async fn invitations_flow_from_invite_to_membership(s: &TestServer) {
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let bob = s.user(&admin, "bob").await;
    let team = create_team(&owner, "Ops").await;
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/invitations"),
            json!({"username": "bob", "role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let inv = r.body["id"].as_str().unwrap().to_string();
    assert!(r.body["expires_at"].as_str().unwrap() > r.body["created_at"].as_str().unwrap());
    // Before accepting, bob sees the invitation but not the team.
    let mine = bob.get("/api/v1/me/invitations").await;
    assert_eq!(mine.body[0]["team_name"], "Ops");
    assert_eq!(bob.get(&format!("/api/v1/teams/{team}")).await.status, 404);
    // Inviting him twice, or an unknown role, is refused.
    let again = owner
        .post(
            &format!("/api/v1/teams/{team}/invitations"),
            json!({"username": "bob", "role": "member"}),
        )
        .await;
    assert_eq!((again.status, again.code()), (409, "already_invited"));
    let bad = owner
        .post(
            &format!("/api/v1/teams/{team}/invitations"),
            json!({"username": "bob", "role": "superuser"}),
        )
        .await;
    assert_eq!((bad.status, bad.code()), (422, "invalid_role"));
    let ghost = owner
        .post(
            &format!("/api/v1/teams/{team}/invitations"),
            json!({"username": "ghost", "role": "viewer"}),
        )
        .await;
    assert_eq!(ghost.status, 422);

    let r = bob
        .post(&format!("/api/v1/me/invitations/{inv}/accept"), json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let t = bob.get(&format!("/api/v1/teams/{team}")).await;
    assert_eq!(t.body["my_role"], "viewer");
    assert!(t.body["my_permissions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == "instance:editor:read"));
    // Reused: the invitation is gone.
    assert_eq!(
        bob.post(&format!("/api/v1/me/invitations/{inv}/accept"), json!({}))
            .await
            .status,
        404
    );
    let again = owner
        .post(
            &format!("/api/v1/teams/{team}/invitations"),
            json!({"username": "bob", "role": "member"}),
        )
        .await;
    assert_eq!((again.status, again.code()), (409, "already_member"));
    let members = owner.get(&format!("/api/v1/teams/{team}/members")).await;
    assert_eq!(members.body.as_array().unwrap().len(), 2);
    let events = team_events(&owner, &team).await;
    assert!(
        ["team.member_invited", "team.member_joined", "team.created"]
            .iter()
            .all(|e| events.iter().any(|x| x == e))
    );
}

async fn invitations_expire_and_can_be_revoked(s: &TestServer) {
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    s.create_user(&admin, "bob").await;
    let carol = s.user(&admin, "carol").await;
    let team = create_team(&owner, "Ops").await;
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/invitations"),
            json!({"username": "bob", "role": "member", "expires_in_days": 1}),
        )
        .await;
    let inv = r.body["id"].as_str().unwrap().to_string();
    // Someone else's invitation cannot be accepted or declined, and the try is audited.
    assert_eq!(
        carol
            .post(&format!("/api/v1/me/invitations/{inv}/accept"), json!({}))
            .await
            .status,
        404
    );
    assert_eq!(
        carol
            .post(&format!("/api/v1/me/invitations/{inv}/decline"), json!({}))
            .await
            .status,
        404
    );
    let denied = audit_events(&admin, "access.denied").await;
    assert!(denied
        .iter()
        .any(|e| e["actor_name"] == "carol" && e["target"] == format!("invitation:{inv}")));
    s.clock.advance_secs(86_400);
    // A day later everyone logs in again (sessions idle out after an hour).
    let bob = s.login("bob", USER_PASSWORD).await;
    let owner = s.login("olivia", USER_PASSWORD).await;
    assert_eq!(
        bob.post(&format!("/api/v1/me/invitations/{inv}/accept"), json!({}))
            .await
            .status,
        404
    );
    assert_eq!(
        bob.get("/api/v1/me/invitations")
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        0
    );
    let listed = owner
        .get(&format!("/api/v1/teams/{team}/invitations"))
        .await;
    assert_eq!(listed.body[0]["expired"], true);

    // An expired invitation does not block a new one; a revoked one cannot be used.
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/invitations"),
            json!({"username": "bob", "role": "member"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let inv2 = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        owner
            .delete(&format!("/api/v1/teams/{team}/invitations/{inv2}"))
            .await
            .status,
        204
    );
    assert_eq!(
        bob.post(&format!("/api/v1/me/invitations/{inv2}/accept"), json!({}))
            .await
            .status,
        404
    );
    let r = owner
        .post(
            &format!("/api/v1/teams/{team}/invitations"),
            json!({"username": "bob", "role": "member"}),
        )
        .await;
    let inv3 = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        bob.post(&format!("/api/v1/me/invitations/{inv3}/decline"), json!({}))
            .await
            .status,
        204
    );
    assert_eq!(bob.get(&format!("/api/v1/teams/{team}")).await.status, 404);
}

async fn the_last_owner_can_neither_leave_nor_be_demoted(s: &TestServer) {
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let bob = s.user(&admin, "bob").await;
    let team = create_team(&owner, "Ops").await;
    let me = id_of(&owner).await;
    let r = owner
        .post(&format!("/api/v1/teams/{team}/leave"), json!({}))
        .await;
    assert_eq!((r.status, r.code()), (409, "last_owner"));
    let r = owner
        .put(
            &format!("/api/v1/teams/{team}/members/{me}"),
            json!({"role": "member"}),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "last_owner"));
    // The platform cannot delete her either: the team would be orphaned.
    let r = admin.delete(&format!("/api/v1/users/{me}")).await;
    assert_eq!((r.status, r.code()), (409, "last_owner"));
    join_team(&owner, &bob, &team, "bob", "owner").await;
    assert_eq!(
        owner
            .post(&format!("/api/v1/teams/{team}/leave"), json!({}))
            .await
            .status,
        204
    );
    assert_eq!(
        owner.get(&format!("/api/v1/teams/{team}")).await.status,
        404
    );
}

async fn members_cannot_promote_themselves_or_manage_others(s: &TestServer) {
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let bob = s.user(&admin, "bob").await;
    let team = create_team(&owner, "Ops").await;
    join_team(&owner, &bob, &team, "bob", "member").await;
    let bob_id = id_of(&bob).await;
    let owner_id = id_of(&owner).await;
    let r = bob
        .put(
            &format!("/api/v1/teams/{team}/members/{bob_id}"),
            json!({"role": "owner"}),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = bob
        .delete(&format!("/api/v1/teams/{team}/members/{owner_id}"))
        .await;
    assert_eq!(r.status, 403);
    let r = bob
        .post(
            &format!("/api/v1/teams/{team}/invitations"),
            json!({"username": "olivia", "role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = bob
        .patch(
            &format!("/api/v1/teams/{team}"),
            json!({"require_mfa": false}),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        bob.get(&format!("/api/v1/teams/{team}/audit")).await.status,
        403
    );
    assert_eq!(
        bob.get(&format!("/api/v1/teams/{team}")).await.body["my_role"],
        "member"
    );
    let denied = owner
        .get(&format!("/api/v1/teams/{team}/audit?event=access.denied"))
        .await;
    assert!(
        denied.body["entries"].as_array().unwrap().len() >= 5,
        "denials land in the team log"
    );
    let r = owner
        .put(
            &format!("/api/v1/teams/{team}/members/{bob_id}"),
            json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(r.status, 200);
    let changed = owner
        .get(&format!(
            "/api/v1/teams/{team}/audit?event=team.role_changed"
        ))
        .await;
    assert_eq!(changed.body["entries"][0]["details"]["from"], "member");
    assert_eq!(changed.body["entries"][0]["details"]["to"], "viewer");
}

async fn a_removed_member_loses_access_at_once(s: &TestServer) {
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let bob = s.user(&admin, "bob").await;
    let team = create_team(&owner, "Ops").await;
    join_team(&owner, &bob, &team, "bob", "member").await;
    let bob_token = s.token_client(&bob, "full").await;
    assert_eq!(
        bob.get(&format!("/api/v1/teams/{team}/members"))
            .await
            .status,
        200
    );
    assert_eq!(
        bob_token
            .get(&format!("/api/v1/teams/{team}/members"))
            .await
            .status,
        200
    );
    let bob_id = id_of(&bob).await;
    assert_eq!(
        owner
            .delete(&format!("/api/v1/teams/{team}/members/{bob_id}"))
            .await
            .status,
        204
    );
    // No clock movement: the very next request is refused.
    assert_eq!(
        bob.get(&format!("/api/v1/teams/{team}/members"))
            .await
            .status,
        404
    );
    assert_eq!(
        bob_token
            .get(&format!("/api/v1/teams/{team}/members"))
            .await
            .status,
        404
    );
    assert_eq!(
        bob.get("/api/v1/teams")
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

async fn a_role_change_takes_effect_at_once(s: &TestServer) {
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let bob = s.user(&admin, "bob").await;
    let team = create_team(&owner, "Ops").await;
    join_team(&owner, &bob, &team, "bob", "viewer").await;
    assert_eq!(
        bob.get(&format!("/api/v1/teams/{team}/members"))
            .await
            .status,
        200
    );
    let bob_id = id_of(&bob).await;
    owner
        .put(
            &format!("/api/v1/teams/{team}/members/{bob_id}"),
            json!({"role": "dashboard"}),
        )
        .await;
    assert_eq!(
        bob.get(&format!("/api/v1/teams/{team}/members"))
            .await
            .status,
        403
    );
    assert_eq!(bob.get(&format!("/api/v1/teams/{team}")).await.status, 200);
}

async fn tenants_cannot_see_each_other(s: &TestServer) {
    let admin = s.admin().await;
    let alice = s.user(&admin, "alice").await;
    let mallory = s.user(&admin, "mallory").await;
    let bob = s.user(&admin, "bob").await;
    let team_a = create_team(&alice, "A").await;
    let team_b = create_team(&mallory, "B").await;
    let r = alice
        .post(
            &format!("/api/v1/teams/{team_a}/invitations"),
            json!({"username": "bob", "role": "viewer"}),
        )
        .await;
    let inv_a = r.body["id"].as_str().unwrap().to_string();
    let alice_id = id_of(&alice).await;
    let nowhere = "0123456789abcdef0123456789abcdef";
    // Mallory, Owner of B, probes A's resources by id and through B's paths.
    let probes = [
        ("GET", format!("/api/v1/teams/{team_a}")),
        ("GET", format!("/api/v1/teams/{team_a}/members")),
        ("GET", format!("/api/v1/teams/{team_a}/invitations")),
        ("GET", format!("/api/v1/teams/{team_a}/audit")),
        ("GET", format!("/api/v1/teams/{team_a}/audit/export")),
        ("PATCH", format!("/api/v1/teams/{team_a}")),
        ("POST", format!("/api/v1/teams/{team_a}/leave")),
        (
            "DELETE",
            format!("/api/v1/teams/{team_a}/members/{alice_id}"),
        ),
        (
            "DELETE",
            format!("/api/v1/teams/{team_a}/invitations/{inv_a}"),
        ),
        (
            "DELETE",
            format!("/api/v1/teams/{team_b}/invitations/{inv_a}"),
        ),
        (
            "DELETE",
            format!("/api/v1/teams/{team_b}/members/{alice_id}"),
        ),
        ("PUT", format!("/api/v1/teams/{team_b}/members/{alice_id}")),
    ];
    let absent = mallory.get(&format!("/api/v1/teams/{nowhere}")).await;
    for (method, path) in &probes {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let body = (m != reqwest::Method::GET).then(|| json!({"role": "owner"}));
        let r = mallory.send(m, path, body).await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text);
        assert_eq!(
            r.body, absent.body,
            "{method} {path} differs from a missing team"
        );
    }
    // Nothing changed in A, and B's log holds nothing of A.
    assert_eq!(
        alice
            .get(&format!("/api/v1/teams/{team_a}/members"))
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        alice
            .get(&format!("/api/v1/teams/{team_a}/invitations"))
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        alice.get(&format!("/api/v1/teams/{team_a}")).await.body["name"],
        "A"
    );
    let b_log = mallory
        .get(&format!("/api/v1/teams/{team_b}/audit/export"))
        .await
        .text;
    assert!(!b_log.contains(&team_a) && !b_log.contains(&inv_a));
    assert!(mallory.get("/api/v1/teams").await.text.contains(&team_b));
    assert!(!mallory.get("/api/v1/teams").await.text.contains(&team_a));
    // A's Owner sees that someone probed.
    let probed = alice
        .get(&format!("/api/v1/teams/{team_a}/audit?event=access.denied"))
        .await;
    assert!(probed.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["actor_name"] == "mallory"));
    let _ = bob;
}

async fn team_limited_tokens_reach_only_their_team(s: &TestServer) {
    let admin = s.admin().await;
    let alice = s.user(&admin, "alice").await;
    let a = create_team(&alice, "A").await;
    let b = create_team(&alice, "B").await;
    let r = alice
        .post("/api/v1/me/tokens", json!({"name": "ci for A", "scope": "full", "team_id": a, "permissions": ["team:read", "team:members:read", "account:read"]}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["team_id"], a.as_str());
    let mut t = s.anonymous();
    t.bearer = Some(r.body["token"].as_str().unwrap().to_string());
    assert_eq!(t.get(&format!("/api/v1/teams/{a}")).await.status, 200);
    assert_eq!(
        t.get(&format!("/api/v1/teams/{a}/members")).await.status,
        200
    );
    assert_eq!(
        t.get(&format!("/api/v1/teams/{b}")).await.status,
        404,
        "another team is, to this token, a team that does not exist"
    );
    assert_eq!(
        t.get(&format!("/api/v1/teams/{a}/audit")).await.status,
        403,
        "not in its permission list"
    );
    assert_eq!(
        t.post("/api/v1/teams", json!({"name": "C"})).await.status,
        403
    );
    assert_eq!(t.get("/api/v1/me").await.status, 200);
    let r = t
        .post(
            "/api/v1/me/tokens",
            json!({"name": "more", "scope": "full"}),
        )
        .await;
    assert_eq!(r.status, 403, "account:write is not in its list");
    // Limits must make sense.
    for body in [
        json!({"name": "x", "scope": "full", "team_id": "0123456789abcdef0123456789abcdef"}),
        json!({"name": "x", "scope": "full", "permissions": ["root"]}),
        json!({"name": "x", "scope": "full", "team_id": a, "permissions": ["users:manage"]}),
        json!({"name": "x", "scope": "full", "permissions": []}),
    ] {
        let r = alice.post("/api/v1/me/tokens", body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {}", r.body);
    }
    // Deleting the team takes its tokens along.
    let r = alice
        .delete_with(&format!("/api/v1/teams/{a}"), json!({"confirm_name": "a"}))
        .await;
    assert_eq!((r.status, r.code()), (422, "confirmation_mismatch"));
    assert_eq!(
        alice
            .delete_with(&format!("/api/v1/teams/{a}"), json!({"confirm_name": "A"}))
            .await
            .status,
        204
    );
    assert_eq!(t.get("/api/v1/me").await.status, 401);
}

async fn team_mfa_holds_back_members_until_they_enrol(s: &TestServer) {
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let bob = s.user(&admin, "bob").await;
    let team = create_team(&owner, "Ops").await;
    join_team(&owner, &bob, &team, "bob", "member").await;
    // An Owner without MFA cannot require it: they would lock themselves out.
    let r = owner
        .patch(
            &format!("/api/v1/teams/{team}"),
            json!({"require_mfa": true}),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "enrol_mfa_first"));
    enrol_mfa(s, &owner).await;
    let r = owner.patch(&format!("/api/v1/teams/{team}"), json!({"require_mfa": true, "allowed_cidrs": ["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"]})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["allowed_cidrs"],
        json!(["10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32"])
    );
    let r = bob.get(&format!("/api/v1/teams/{team}")).await;
    assert_eq!((r.status, r.code()), (403, "team_mfa_required"));
    // Enrolling is still possible, and then the team opens up.
    enrol_mfa(s, &bob).await;
    assert_eq!(bob.get(&format!("/api/v1/teams/{team}")).await.status, 200);
    for bad in [
        json!({"allowed_cidrs": ["10.0.0.0/33"]}),
        json!({"allowed_cidrs": ["not-a-net"]}),
        json!({"name": ""}),
        json!({"require_mfa": "yes"}),
    ] {
        let r = owner
            .patch(&format!("/api/v1/teams/{team}"), bad.clone())
            .await;
        assert!(r.status == 422 || r.status == 400, "{bad}: {}", r.status);
    }
}

async fn platform_admins_enter_teams_only_explicitly_and_audited(s: &TestServer) {
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let team = create_team(&owner, "Ops").await;
    assert_eq!(
        admin.get(&format!("/api/v1/teams/{team}")).await.status,
        404
    );
    let mut acting = admin.clone();
    acting
        .headers
        .push((ADMIN_ACCESS_HEADER, "ticket 4711: owner locked out".into()));
    let r = acting.get(&format!("/api/v1/teams/{team}/members")).await;
    assert_eq!(r.status, 200);
    let log = owner
        .get(&format!(
            "/api/v1/teams/{team}/audit?event=admin.team_access"
        ))
        .await;
    let entry = &log.body["entries"][0];
    assert_eq!(entry["actor_name"], ADMIN);
    assert_eq!(entry["details"]["reason"], "ticket 4711: owner locked out");
    // A non-admin sending the header gains nothing.
    let mut pretender = s.user(&admin, "eve").await;
    pretender
        .headers
        .push((ADMIN_ACCESS_HEADER, "trust me".into()));
    assert_eq!(
        pretender.get(&format!("/api/v1/teams/{team}")).await.status,
        404
    );
    // Admins see every team's entries in the platform log.
    assert!(!audit_events(&admin, "team.created").await.is_empty());
}

async fn the_permission_table_is_published(s: &TestServer) {
    let admin = s.admin().await;
    let r = s.anonymous().get("/api/v1/permissions").await;
    assert_eq!(r.status, 200);
    let perms = r.body["permissions"].as_array().unwrap();
    let find = |name: &str| perms.iter().find(|p| p["name"] == name).unwrap().clone();
    assert_eq!(find("team:members:manage")["team_roles"], json!(["owner"]));
    assert_eq!(
        find("instance:dashboard")["team_roles"],
        json!(["dashboard", "viewer", "member", "owner"])
    );
    assert_eq!(find("users:manage")["platform_roles"], json!(["admin"]));
    assert!(r.body["routes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["path"] == "/api/v1/teams/{team}/members"
            && x["permission"] == "team:members:read"));
    let _ = admin;
}

/// The console sends every field of the team form at once: a change the
/// rules refuse must leave the whole team as it was, the name included, and
/// nothing may change without its audit entry.
async fn a_refused_team_change_changes_nothing(s: &TestServer) {
    let admin = s.admin().await;
    let owner = s.user(&admin, "olivia").await;
    let team = create_team(&owner, "Ops").await;
    let r = owner
        .patch(
            &format!("/api/v1/teams/{team}"),
            json!({"name": "Renamed", "require_mfa": true, "allowed_cidrs": ["10.0.0.0/8"]}),
        )
        .await;
    assert_eq!((r.status, r.code()), (422, "enrol_mfa_first"));
    let t = owner.get(&format!("/api/v1/teams/{team}")).await;
    assert_eq!(t.body["name"], "Ops", "the refused change renamed the team");
    assert_eq!(t.body["require_mfa"], false);
    assert_eq!(t.body["allowed_cidrs"], json!([]));
    let events = team_events(&owner, &team).await;
    assert!(
        !events
            .iter()
            .any(|e| e == "team.renamed" || e == "team.settings_changed"),
        "{events:?}"
    );
}

on_both_backends!(
    a_refused_team_change_changes_nothing,
    invitations_flow_from_invite_to_membership,
    invitations_expire_and_can_be_revoked,
    the_last_owner_can_neither_leave_nor_be_demoted,
    members_cannot_promote_themselves_or_manage_others,
    a_removed_member_loses_access_at_once,
    a_role_change_takes_effect_at_once,
    tenants_cannot_see_each_other,
    team_limited_tokens_reach_only_their_team,
    team_mfa_holds_back_members_until_they_enrol,
    platform_admins_enter_teams_only_explicitly_and_audited,
    the_permission_table_is_published,
);

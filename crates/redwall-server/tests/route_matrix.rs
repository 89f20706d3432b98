//! Walks every route of the API with every kind of caller and checks that
//! the request is allowed exactly when the permission table says so. A new
//! route is covered the moment it is added to the table.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod common;
use common::*;
use redwall_policy::access::{decide, Caller, Credential, Denial, TokenScope, TokenTeam};
use redwall_policy::permission::{Permission, PlatformRole, TeamRole};
use redwall_server::api::routes;
use redwall_server::auth::guard::{Access, ADMIN_ACCESS_HEADER};
use serde_json::json;

#[derive(Clone, Copy, Debug)]
enum Who {
    Anonymous,
    /// A signed-in user who is in no team.
    Stranger,
    Admin,
    AdminOverride,
    InTeam(TeamRole),
    OtherTeamOwner,
    Token(TeamRole, TokenScope),
    /// A Member's token limited to this team / to another team.
    TeamToken,
    OtherTeamToken,
    /// An Owner's token limited to `team:read`.
    PermissionToken,
    PendingMfa,
}

const UNKNOWN_ID: &str = "0123456789abcdef0123456789abcdef";
const LIMITED: [Permission; 1] = [Permission::TeamRead];

/// The caller as the policy sees it.
fn caller(who: Who) -> Option<Caller<'static>> {
    let session = Credential::Session {
        mfa_enrolment_pending: false,
    };
    let base = Caller {
        platform_role: PlatformRole::User,
        credential: session,
        team_role: None,
        admin_override: false,
        team_mfa_missing: false,
    };
    let token = |scope, team| Credential::Token {
        scope,
        team,
        permissions: None,
    };
    Some(match who {
        Who::Anonymous => return None,
        Who::Stranger | Who::OtherTeamOwner => base,
        Who::Admin => Caller {
            platform_role: PlatformRole::Admin,
            ..base
        },
        Who::AdminOverride => Caller {
            platform_role: PlatformRole::Admin,
            admin_override: true,
            ..base
        },
        Who::InTeam(role) => Caller {
            team_role: Some(role),
            ..base
        },
        Who::Token(role, scope) => Caller {
            team_role: Some(role),
            credential: token(scope, TokenTeam::Any),
            ..base
        },
        Who::TeamToken => Caller {
            team_role: Some(TeamRole::Member),
            credential: token(TokenScope::Full, TokenTeam::ThisTeam),
            ..base
        },
        Who::OtherTeamToken => Caller {
            team_role: Some(TeamRole::Member),
            credential: token(TokenScope::Full, TokenTeam::Elsewhere),
            ..base
        },
        Who::PermissionToken => Caller {
            team_role: Some(TeamRole::Owner),
            credential: Credential::Token {
                scope: TokenScope::Full,
                team: TokenTeam::Any,
                permissions: Some(&LIMITED),
            },
            ..base
        },
        Who::PendingMfa => Caller {
            credential: Credential::Session {
                mfa_enrolment_pending: true,
            },
            ..base
        },
    })
}

/// Platform routes address no team: a team role means nothing there.
fn expected(who: Who, access: Access, path: &str) -> Option<Result<(), Denial>> {
    let Access::Permission(p) = access else {
        return None;
    };
    let Some(mut c) = caller(who) else {
        return Some(Err(Denial::NotPermitted));
    };
    if !path.contains("{team}") {
        c.team_role = None;
        c.admin_override = false;
        if let Credential::Token {
            team: TokenTeam::ThisTeam,
            scope,
            permissions,
        } = c.credential
        {
            c.credential = Credential::Token {
                team: TokenTeam::Elsewhere,
                scope,
                permissions,
            };
        }
    }
    Some(decide(&c, p))
}

struct World {
    admin: Client,
    team: String,
    owner: Client,
    owner_name: String,
    other_team: String,
    other_owner: Client,
    other_owner_name: String,
}

async fn world(s: &TestServer, admin: &Client, n: usize) -> World {
    let owner_name = format!("own{n}");
    let other_owner_name = format!("oth{n}");
    let owner = s.user(admin, &owner_name).await;
    let team = create_team(&owner, "A").await;
    let other_owner = s.user(admin, &other_owner_name).await;
    let other_team = create_team(&other_owner, "B").await;
    World {
        admin: admin.clone(),
        team,
        owner,
        owner_name,
        other_team,
        other_owner,
        other_owner_name,
    }
}

/// Fresh sessions for the people the next caller is built with: the last
/// caller may have logged them out everywhere.
async fn refresh(s: &TestServer, w: &mut World, admin_has_mfa: bool) {
    if !admin_has_mfa && w.admin.get("/api/v1/me").await.status != 200 {
        w.admin = s.login(ADMIN, ADMIN_PASSWORD).await;
    }
    w.owner = s.login(&w.owner_name, USER_PASSWORD).await;
    w.other_owner = s.login(&w.other_owner_name, USER_PASSWORD).await;
}

async fn member(s: &TestServer, w: &World, role: TeamRole, name: &str) -> Client {
    let c = s.user(&w.admin, name).await;
    join_team(&w.owner, &c, &w.team, name, role.name()).await;
    c
}

async fn client_for(s: &TestServer, w: &World, who: Who, n: usize) -> Client {
    let name = format!("c{n}");
    match who {
        Who::Anonymous => s.anonymous(),
        Who::Stranger | Who::PendingMfa => s.user(&w.admin, &name).await,
        Who::Admin => s.login(ADMIN, ADMIN_PASSWORD).await,
        Who::AdminOverride => {
            let mut c = s.login(ADMIN, ADMIN_PASSWORD).await;
            c.headers.push((ADMIN_ACCESS_HEADER, "route matrix".into()));
            c
        }
        Who::InTeam(TeamRole::Owner) => s.login(&w.owner_name, USER_PASSWORD).await,
        Who::InTeam(role) => member(s, w, role, &name).await,
        Who::OtherTeamOwner => w.other_owner.clone(),
        Who::Token(role, scope) => {
            let holder = if role == TeamRole::Owner {
                w.owner.clone()
            } else {
                member(s, w, role, &name).await
            };
            s.token_client(
                &holder,
                if scope == TokenScope::Read {
                    "read"
                } else {
                    "full"
                },
            )
            .await
        }
        Who::TeamToken | Who::OtherTeamToken => {
            let holder = member(s, w, TeamRole::Member, &name).await;
            join_team(&w.other_owner, &holder, &w.other_team, &name, "member").await;
            let team = if matches!(who, Who::TeamToken) {
                &w.team
            } else {
                &w.other_team
            };
            let r = holder
                .post(
                    "/api/v1/me/tokens",
                    json!({"name": "team", "scope": "full", "team_id": team}),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.body);
            let mut c = s.anonymous();
            c.bearer = Some(r.body["token"].as_str().unwrap().to_string());
            c
        }
        Who::PermissionToken => {
            let r = w
                .owner
                .post(
                    "/api/v1/me/tokens",
                    json!({"name": "narrow", "scope": "full", "permissions": ["team:read"]}),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.body);
            let mut c = s.anonymous();
            c.bearer = Some(r.body["token"].as_str().unwrap().to_string());
            c
        }
    }
}

async fn walk(s: &TestServer, everyone: &[Who], require_mfa: bool) {
    let mut admin = s.admin().await;
    if require_mfa {
        // Enrol the admin first, so only the new users are held back.
        enrol_mfa(s, &admin).await;
    }
    let mut require_set = false;
    let mut kept: Option<World> = None;
    for (r_i, route) in routes().into_iter().enumerate() {
        // A fresh pair of teams per route: some routes delete or leave them.
        if !require_mfa && admin.get("/api/v1/me").await.status != 200 {
            admin = s.login(ADMIN, ADMIN_PASSWORD).await;
        }
        // Under required MFA nobody else can create teams once it is on:
        // build the world once, before switching it on.
        let mut w = match kept.take() {
            Some(w) => w,
            None => world(s, &admin, r_i).await,
        };
        if require_mfa && !require_set {
            let r = admin
                .patch("/api/v1/settings", json!({"require_mfa": true}))
                .await;
            assert_eq!(r.status, 200);
            require_set = true;
            s.clock.advance_secs(3);
        }
        for (c_i, &who) in everyone.iter().enumerate() {
            let n = r_i * 100 + c_i;
            refresh(s, &mut w, require_mfa).await;
            let client = client_for(s, &w, who, n).await;
            let path = route
                .path
                .replace("{team}", &w.team)
                .replace("{id}", UNKNOWN_ID)
                .replace("{instance}", "no-such-instance")
                .replace("{group}", "no-such-group")
                .replace("{pipeline}", "no-such-pipeline");
            let body = (route.method != reqwest::Method::GET).then(|| json!({}));
            let r = client.send(route.method.clone(), &path, body).await;
            let what = format!(
                "{who:?} {} {} -> {} {}",
                route.method, route.path, r.status, r.text
            );
            assert!(r.status < 500, "{what}");
            // A route naming one thing may answer 404 for a thing that is not there.
            let has_id = ["{id}", "{instance}", "{group}", "{pipeline}", "{agent}"]
                .iter()
                .any(|p| route.path.contains(p));
            match expected(who, route.access, route.path) {
                None => assert!(
                    r.status != 403 && r.code() != "unauthenticated",
                    "public route refused: {what}"
                ),
                Some(Ok(())) => {
                    assert!(
                        r.status != 401 && r.status != 403,
                        "should be allowed: {what}"
                    );
                    // An admin acting on a team is not a member of it, so
                    // "leave" finds no membership to end.
                    let not_a_member =
                        matches!(who, Who::AdminOverride) && route.path.ends_with("/leave");
                    if !has_id && !not_a_member {
                        assert!(r.status != 404, "should be allowed: {what}");
                    }
                }
                Some(Err(Denial::NotFound)) => {
                    assert_eq!(r.status, 404, "should look absent: {what}")
                }
                Some(Err(_)) => assert!(
                    r.status == 401 || r.status == 403,
                    "should be refused: {what}"
                ),
            }
        }
        if require_mfa {
            kept = Some(w);
        }
    }
}

async fn every_route_answers_every_caller_as_the_table_says(s: &TestServer) {
    walk(
        s,
        &[
            Who::Anonymous,
            Who::Stranger,
            Who::Admin,
            Who::AdminOverride,
            Who::InTeam(TeamRole::Dashboard),
            Who::InTeam(TeamRole::Viewer),
            Who::InTeam(TeamRole::Member),
            Who::InTeam(TeamRole::Owner),
            Who::OtherTeamOwner,
            Who::Token(TeamRole::Viewer, TokenScope::Full),
            Who::Token(TeamRole::Owner, TokenScope::Read),
            Who::TeamToken,
            Who::OtherTeamToken,
            Who::PermissionToken,
        ],
        false,
    )
    .await;
}

async fn a_user_who_must_enrol_reaches_only_mfa_and_logout(s: &TestServer) {
    walk(s, &[Who::PendingMfa], true).await;
}

on_both_backends!(
    every_route_answers_every_caller_as_the_table_says,
    a_user_who_must_enrol_reaches_only_mfa_and_logout,
);

#[test]
fn every_route_is_in_the_openapi_document_with_its_permission() {
    let doc = serde_json::to_value(redwall_server::api::openapi::document()).unwrap();
    for route in routes() {
        let op = &doc["paths"][route.path][route.method.as_str().to_lowercase()];
        assert!(
            op.is_object(),
            "{} {} missing from the OpenAPI document",
            route.method,
            route.path
        );
        match route.access {
            Access::Public => assert!(op.get("x-permission").is_none()),
            Access::Permission(p) => assert_eq!(op["x-permission"], p.name()),
        }
        let declared: Vec<&str> = op["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["in"] == "path")
                    .filter_map(|p| p["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        for segment in route.path.split('/').filter(|s| s.starts_with('{')) {
            let name = segment.trim_matches(|c| c == '{' || c == '}');
            assert!(
                declared.contains(&name),
                "{} {} does not declare {name}",
                route.method,
                route.path
            );
        }
    }
}

#[test]
fn routes_are_unique_and_team_routes_carry_team_permissions() {
    let mut seen = std::collections::HashSet::new();
    for r in routes() {
        assert!(
            seen.insert((r.method.clone(), r.path)),
            "{} {} twice",
            r.method,
            r.path
        );
        if let Access::Permission(p) = r.access {
            let under_team = r.path.contains("{team}");
            let team_scoped = p.scope() == redwall_policy::permission::Scope::Team;
            assert_eq!(
                under_team,
                team_scoped,
                "{} {} needs {}",
                r.method,
                r.path,
                p.name()
            );
        }
    }
}

//! Team pages: create, members and roles, invitations, settings, leave,
//! delete, the team audit log; and the invitee's side of invitations.

use super::audit_log::AuditFilters;
use super::auth::{describe, FieldErrors};
use super::models::{AuditPage, Instance, Invitation, Member, Team};
use super::page::{refused_status, render, render_status, Ctx, Layout, Me};
use super::submit::{self, Done, Posted};
use askama::Template;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::json;

#[derive(Template)]
#[template(path = "console/team_new.html")]
struct NewTeamPage {
    layout: Layout,
    name: String,
    errors: FieldErrors,
}

#[derive(Template)]
#[template(path = "console/team.html")]
struct TeamPage {
    layout: Layout,
    team: Team,
    members: Vec<Member>,
    invitations: Vec<Invitation>,
    instances: Vec<Instance>,
    /// Absolute address of the invitee's page, for the copy button.
    invitation_link: String,
    me: Me,
    errors: FieldErrors,
    /// What was typed into the invitation form, kept after a refusal.
    invite_username: String,
    /// Settings as typed, kept after a refusal.
    settings_name: String,
    settings_cidrs: String,
    settings_mfa: bool,
}

#[derive(Template)]
#[template(path = "console/team_audit.html")]
struct TeamAuditPage {
    layout: Layout,
    team: Team,
    page: AuditPage,
    filters: AuditFilters,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "console/invitations.html")]
struct InvitationsPage {
    layout: Layout,
    invitations: Vec<Invitation>,
    highlight: String,
}

fn notice(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "team_created" => "The team was created. Invite people and create its first instance.",
        "settings_saved" => "The team settings were saved.",
        "role_changed" => "The role was changed.",
        "member_removed" => "The member was removed from the team.",
        "invited" => "The invitation was created. Copy its link and send it to the invitee.",
        "invitation_revoked" => "The invitation was revoked.",
        other => return super::home::notice(Some(other)),
    })
}

fn team_path(team: &str) -> String {
    format!("/api/v1/teams/{team}")
}

// ---- create ----

pub async fn new_page(ctx: Ctx) -> Response {
    let me = match ctx.me().await {
        Ok(me) => me,
        Err(r) => return r,
    };
    render(&NewTeamPage {
        layout: Layout::new("New team", Some(&me), "home"),
        name: String::new(),
        errors: FieldErrors::default(),
    })
}

pub async fn create(ctx: Ctx, body: Bytes) -> Response {
    let me = match ctx.me().await {
        Ok(me) => me,
        Err(r) => return r,
    };
    submit::signed_in(&ctx, body, |p: Posted| async move {
        let name = p.form.text("name");
        match p
            .api
            .post::<Team>(Method::POST, "/api/v1/teams", &json!({ "name": name }))
            .await
        {
            Ok(team) => Done::Redirect(format!("/teams/{}?done=team_created", team.id)),
            Err(f) => Done::Again(render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &NewTeamPage {
                    layout: Layout::new("New team", Some(&me), "home"),
                    name,
                    errors: FieldErrors::from_failure(
                        &f,
                        &[("invalid_name", "name"), ("name_taken", "name")],
                    ),
                },
            )),
        }
    })
    .await
}

// ---- the team page ----

struct Typed {
    errors: FieldErrors,
    invite_username: String,
    settings: Option<(String, String, bool)>,
}

async fn team_page(ctx: &Ctx, team_id: &str, typed: Typed, status: StatusCode) -> Response {
    let me = match ctx.me().await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let base = team_path(team_id);
    let team = match ctx.api.get::<Team>(&base).await {
        Ok(t) => t,
        Err(f) => return ctx.refused(&f, Some(&me)),
    };
    let members = if team.can("team:members:read") {
        ctx.api
            .get::<Vec<Member>>(&format!("{base}/members"))
            .await
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let invitations = if team.can("team:members:manage") {
        ctx.api
            .get::<Vec<Invitation>>(&format!("{base}/invitations"))
            .await
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let instances = ctx
        .api
        .get::<Vec<Instance>>(&format!("{base}/instances"))
        .await
        .unwrap_or_default();
    let (settings_name, settings_cidrs, settings_mfa) = typed.settings.unwrap_or_else(|| {
        (
            team.name.clone(),
            team.allowed_cidrs.join("\n"),
            team.require_mfa,
        )
    });
    let layout = Layout::new(team.name.clone(), Some(&me), "home")
        .with_notice(notice(ctx.query_param("done").as_deref()));
    render_status(
        status,
        &TeamPage {
            layout,
            invitation_link: format!("{}/invitations", console_origin(ctx)),
            team,
            members,
            invitations,
            instances,
            me,
            errors: typed.errors,
            invite_username: typed.invite_username,
            settings_name,
            settings_cidrs,
            settings_mfa,
        },
    )
}

/// The console's own origin, as the browser reached it.
fn console_origin(ctx: &Ctx) -> String {
    let scheme = if ctx.client().https { "https" } else { "http" };
    let host = crate::net::authority::of(&ctx.headers).unwrap_or("localhost");
    format!("{scheme}://{host}")
}

pub async fn page(ctx: Ctx, Path(team): Path<String>) -> Response {
    let typed = Typed {
        errors: FieldErrors::default(),
        invite_username: String::new(),
        settings: None,
    };
    team_page(&ctx, &team, typed, StatusCode::OK).await
}

/// A team form refused by the API: the page again, the message by the form.
async fn team_again(ctx: &Ctx, team: &str, typed: Typed, status: StatusCode) -> Done {
    Done::Again(team_page(ctx, team, typed, refused_status(status)).await)
}

fn refusal(f: &super::client::Failure, fields: &[(&str, &'static str)]) -> FieldErrors {
    FieldErrors::from_failure(f, fields)
}

pub async fn settings(ctx: Ctx, Path(team): Path<String>, body: Bytes) -> Response {
    let ctx = &ctx;
    submit::signed_in(ctx, body, |p: Posted| async move {
        let name = p.form.text("name");
        let cidrs_text = p.form.raw("allowed_cidrs");
        let cidrs: Vec<String> = cidrs_text
            .split(['\n', ','])
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        let require_mfa = p.form.checked("require_mfa");
        let change = json!({ "name": name, "require_mfa": require_mfa, "allowed_cidrs": cidrs });
        match p
            .api
            .act(Method::PATCH, &team_path(&team), Some(&change))
            .await
        {
            Ok(_) => Done::Redirect(format!("/teams/{team}?done=settings_saved#settings")),
            Err(f) => {
                let typed = Typed {
                    errors: refusal(
                        &f,
                        &[
                            ("invalid_name", "name"),
                            ("name_taken", "name"),
                            ("invalid_cidr", "allowed_cidrs"),
                            ("enrol_mfa_first", "require_mfa"),
                        ],
                    ),
                    invite_username: String::new(),
                    settings: Some((name, cidrs_text, require_mfa)),
                };
                team_again(ctx, &team, typed, f.status).await
            }
        }
    })
    .await
}

pub async fn delete(ctx: Ctx, Path(team): Path<String>, body: Bytes) -> Response {
    let ctx = &ctx;
    submit::signed_in(ctx, body, |p: Posted| async move {
        let confirm = p.form.text("confirm_name");
        let r = p
            .api
            .act(
                Method::DELETE,
                &team_path(&team),
                Some(&json!({ "confirm_name": confirm })),
            )
            .await;
        match r {
            Ok(_) => Done::Redirect("/?done=team_deleted".into()),
            Err(f) => {
                let typed = Typed {
                    errors: refusal(
                        &f,
                        &[
                            ("confirmation_mismatch", "confirm_name"),
                            ("team_has_instances", "confirm_name"),
                        ],
                    ),
                    invite_username: String::new(),
                    settings: None,
                };
                team_again(ctx, &team, typed, f.status).await
            }
        }
    })
    .await
}

pub async fn leave(ctx: Ctx, Path(team): Path<String>, body: Bytes) -> Response {
    simple(
        &ctx,
        body,
        Method::POST,
        format!("{}/leave", team_path(&team)),
        None,
        "/?done=left_team",
        &team,
    )
    .await
}

pub async fn member_role(
    ctx: Ctx,
    Path((team, user)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let role = super::form::Form::parse(&body).text("role");
    simple(
        &ctx,
        body,
        Method::PUT,
        format!("{}/members/{user}", team_path(&team)),
        Some(json!({ "role": role })),
        &format!("/teams/{team}?done=role_changed#members"),
        &team,
    )
    .await
}

pub async fn member_remove(
    ctx: Ctx,
    Path((team, user)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    simple(
        &ctx,
        body,
        Method::DELETE,
        format!("{}/members/{user}", team_path(&team)),
        None,
        &format!("/teams/{team}?done=member_removed#members"),
        &team,
    )
    .await
}

pub async fn invite(ctx: Ctx, Path(team): Path<String>, body: Bytes) -> Response {
    let ctx = &ctx;
    submit::signed_in(ctx, body, |p: Posted| async move {
        let username = p.form.text("username");
        let mut invitation = json!({ "username": username, "role": p.form.text("role") });
        if let Some(days) = p.form.optional("expires_in_days") {
            match days.parse::<i64>() {
                Ok(d) => invitation["expires_in_days"] = json!(d),
                Err(_) => {
                    let typed = Typed {
                        errors: FieldErrors {
                            form: None,
                            fields: vec![(
                                "expires_in_days",
                                "Enter a number of days from 1 to 30.".into(),
                            )],
                        },
                        invite_username: username,
                        settings: None,
                    };
                    return team_again(ctx, &team, typed, StatusCode::UNPROCESSABLE_ENTITY).await;
                }
            }
        }
        match p
            .api
            .act(
                Method::POST,
                &format!("{}/invitations", team_path(&team)),
                Some(&invitation),
            )
            .await
        {
            Ok(_) => Done::Redirect(format!("/teams/{team}?done=invited#invitations")),
            Err(f) => {
                let typed = Typed {
                    errors: refusal(
                        &f,
                        &[
                            ("unknown_user", "username"),
                            ("already_member", "username"),
                            ("already_invited", "username"),
                            ("invalid_username", "username"),
                            ("invalid_role", "role"),
                            ("invalid_expiry", "expires_in_days"),
                        ],
                    ),
                    invite_username: username,
                    settings: None,
                };
                team_again(ctx, &team, typed, f.status).await
            }
        }
    })
    .await
}

pub async fn invitation_revoke(
    ctx: Ctx,
    Path((team, id)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    simple(
        &ctx,
        body,
        Method::DELETE,
        format!("{}/invitations/{id}", team_path(&team)),
        None,
        &format!("/teams/{team}?done=invitation_revoked#invitations"),
        &team,
    )
    .await
}

/// A form that is one API call and a redirect; a refusal shows the team page
/// with the API's message.
async fn simple(
    ctx: &Ctx,
    body: Bytes,
    method: Method,
    path: String,
    payload: Option<serde_json::Value>,
    then: &str,
    team: &str,
) -> Response {
    submit::signed_in(ctx, body, |p: Posted| async move {
        match p.api.act(method, &path, payload.as_ref()).await {
            Ok(_) => Done::Redirect(then.to_string()),
            Err(f) if f.needs_login() => Done::Again(ctx.refused(&f, None)),
            Err(f) => {
                let typed = Typed {
                    errors: FieldErrors {
                        form: Some(describe(&f)),
                        fields: Vec::new(),
                    },
                    invite_username: String::new(),
                    settings: None,
                };
                team_again(ctx, team, typed, f.status).await
            }
        }
    })
    .await
}

// ---- the team audit log ----

pub async fn audit_page(ctx: Ctx, Path(team): Path<String>) -> Response {
    let me = match ctx.me().await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let base = team_path(&team);
    let team = match ctx.api.get::<Team>(&base).await {
        Ok(t) => t,
        Err(f) => return ctx.refused(&f, Some(&me)),
    };
    let filters = AuditFilters::read(&ctx);
    let (page, error) = match filters.load(&ctx, &format!("{base}/audit")).await {
        Ok(x) => x,
        Err(f) => return ctx.refused(&f, Some(&me)),
    };
    render(&TeamAuditPage {
        layout: Layout::new(format!("{} · audit log", team.name), Some(&me), "home"),
        team,
        page,
        filters,
        error,
    })
}

// ---- the invitee's side ----

pub async fn my_invitations(ctx: Ctx) -> Response {
    let me = match ctx.me().await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let invitations = match ctx
        .api
        .get::<Vec<Invitation>>("/api/v1/me/invitations")
        .await
    {
        Ok(i) => i,
        Err(f) => return ctx.refused(&f, Some(&me)),
    };
    let layout = Layout::new("Invitations", Some(&me), "home")
        .with_notice(notice(ctx.query_param("done").as_deref()));
    render(&InvitationsPage {
        layout,
        invitations,
        highlight: ctx.query_param("id").unwrap_or_default(),
    })
}

async fn answer_invitation(ctx: Ctx, id: String, body: Bytes, verb: &'static str) -> Response {
    let ctx = &ctx;
    submit::signed_in(ctx, body, |p: Posted| async move {
        let path = format!("/api/v1/me/invitations/{id}/{verb}");
        match p.api.act(Method::POST, &path, None).await {
            Ok(reply) if verb == "accept" => {
                let team = serde_json::from_slice::<serde_json::Value>(&reply.body)
                    .ok()
                    .and_then(|v| {
                        v.get("team_id")
                            .or(v.get("id"))
                            .and_then(|t| t.as_str())
                            .map(str::to_string)
                    });
                match team {
                    Some(t) => Done::Redirect(format!("/teams/{t}?done=joined")),
                    None => Done::Redirect("/?done=joined".into()),
                }
            }
            Ok(_) => Done::Redirect("/invitations?done=declined".into()),
            Err(f) => Done::Again(ctx.refused(&f, None)),
        }
    })
    .await
}

pub async fn invitation_accept(ctx: Ctx, Path(id): Path<String>, body: Bytes) -> Response {
    answer_invitation(ctx, id, body, "accept").await
}

pub async fn invitation_decline(ctx: Ctx, Path(id): Path<String>, body: Bytes) -> Response {
    answer_invitation(ctx, id, body, "decline").await
}

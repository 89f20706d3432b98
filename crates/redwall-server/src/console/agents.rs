//! The team's remote agents page: its agents with their state (online,
//! offline, revoked), Node-RED's state as each last reported, group, last
//! heartbeat (UTC), platform, version and key fingerprint. Owners and
//! Members ping an agent or restart its Node-RED (`agent:control`); the
//! command is answered asynchronously, so the form ends on the page with
//! `?command={id}`, which shows that command's state (waiting, or the
//! agent's answer) with a link to read it again. Owners provision agents,
//! withdraw unused provisioning tokens, revoke and delete agents
//! (`agent:manage`). Everything goes through the API's
//! `/api/v1/teams/{team}/agents`, `.../agent-tokens` and
//! `.../agent-commands` like every console form.
//!
//! A new provisioning bundle (it holds the one-time token) is shown once,
//! in the answer to the form that made it, as the broker page shows a new
//! password: never in a URL, a cookie or the double-submit memory, and the
//! answer is never stored by the browser (`Cache-Control: no-store`).

use super::auth::{describe, FieldErrors};
use super::client::Failure;
use super::models::{opt_time, short_time, Team};
use super::page::{error_page, refused_status, render_status, Ctx, Layout};
use super::submit::{self, Done, Posted};
use crate::api::agents::{AgentCommandView, AgentTokenView, AgentView, ProvisionedToken};
use askama::Template;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value};

/// One agent as the page lists it.
pub struct AgentRow {
    pub id: String,
    pub name: String,
    /// online, offline or revoked.
    pub state: &'static str,
    /// Node-RED on the agent as it last reported.
    pub node_red: String,
    /// The snapshot it runs (short id), as it last reported.
    pub snapshot: Option<String>,
    pub group: Option<String>,
    /// "2026-11-24 01:02:03 UTC", empty when never heard from.
    pub last_seen: String,
    pub platform: String,
    pub version: String,
    pub fingerprint: String,
    pub revoked: bool,
    /// Its site's store-and-forward and journals, in words.
    pub site: super::agent_site::SiteSummary,
}

/// One unused provisioning token (never the token itself).
pub struct TokenRow {
    pub id: String,
    pub group: Option<String>,
    pub created: String,
    pub expires: String,
    pub expired: bool,
}

/// A command the page was asked to show (`?command=`).
pub struct CommandShown {
    pub id: String,
    /// ping or restart.
    pub kind: String,
    pub agent_id: String,
    /// The agent's name, when it is still listed.
    pub agent: String,
    /// waiting (not handed to the agent yet), sent (handed, no answer
    /// yet), ok or failed.
    pub state: &'static str,
    /// The agent's answer.
    pub message: String,
    pub created: String,
    pub done: String,
}

impl CommandShown {
    pub fn answered(&self) -> bool {
        matches!(self.state, "ok" | "failed")
    }

    /// The status badge's colour.
    pub fn badge(&self) -> &'static str {
        match self.state {
            "ok" => "running",
            "failed" => "failed",
            _ => "starting",
        }
    }
}

/// A new bundle, shown this once.
pub struct Shown {
    pub bundle: String,
    pub hub_url: String,
    pub cert_sha256: Option<String>,
    pub group: Option<String>,
    pub expires: String,
}

/// The provision form as typed (the CA certificate is public; nothing
/// typed here is a secret).
pub struct ProvisionForm {
    pub group: String,
    pub hours: String,
    pub hub_url: String,
    pub ca_pem: String,
}

impl Default for ProvisionForm {
    fn default() -> Self {
        ProvisionForm {
            group: String::new(),
            hours: "24".to_string(),
            hub_url: String::new(),
            ca_pem: String::new(),
        }
    }
}

#[derive(Template)]
#[template(path = "console/team_agents.html")]
struct AgentsPage {
    layout: Layout,
    team: Team,
    agents: Vec<AgentRow>,
    /// None when the API does not show them (not an Owner).
    tokens: Option<Vec<TokenRow>>,
    command: Option<CommandShown>,
    /// The provision form's messages, and one for the whole page.
    errors: FieldErrors,
    provision: ProvisionForm,
    /// Where agents reach this hub when the form leaves it empty, if set.
    public_url: Option<String>,
    shown: Option<Shown>,
    updates: super::agent_updates::Updates,
    /// The rollout form's targets: "agent:NAME" and "agent-group:NAME".
    update_targets: Vec<String>,
}

/// What a form's answer adds to the page.
#[derive(Default)]
struct Extra {
    errors: FieldErrors,
    provision: ProvisionForm,
    shown: Option<Shown>,
}

fn api(team: &str, rest: &str) -> String {
    format!("/api/v1/teams/{team}/{rest}")
}

fn page_path(team: &str) -> String {
    format!("/teams/{team}/agents")
}

fn notice(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "agent_revoked" => {
            "The agent was revoked: its connection was closed and it is refused from now on."
        }
        "agent_deleted" => {
            "The agent was deleted: its connection was closed and it is refused from now on."
        }
        "token_withdrawn" => "The provisioning token was withdrawn: no agent can enrol with it.",
        "update_started" => "The rollout started: its first batch of agents got the build.",
        other => return super::home::notice(Some(other)),
    })
}

fn agent_row(a: &AgentView) -> AgentRow {
    AgentRow {
        id: a.id.clone(),
        name: a.name.clone(),
        state: if a.revoked {
            "revoked"
        } else if a.online {
            "online"
        } else {
            "offline"
        },
        node_red: a.node_red.clone(),
        snapshot: a
            .running_snapshot
            .as_deref()
            .map(super::snapshots::short_id),
        group: a.group.clone(),
        last_seen: opt_time(&a.last_seen_at),
        platform: a.platform.clone(),
        version: a.version.clone(),
        fingerprint: a.key_fingerprint.clone(),
        revoked: a.revoked,
        site: super::agent_site::summary(a.site.as_ref()),
    }
}

fn command_shown(c: &AgentCommandView, agents: &[AgentRow]) -> CommandShown {
    let state = match (c.ok, &c.sent_at) {
        (Some(true), _) => "ok",
        (Some(false), _) => "failed",
        (None, Some(_)) => "sent",
        (None, None) => "waiting",
    };
    CommandShown {
        id: c.id.clone(),
        kind: c
            .command
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("command")
            .to_string(),
        agent_id: c.agent_id.clone(),
        agent: agents
            .iter()
            .find(|a| a.id == c.agent_id)
            .map(|a| a.name.clone())
            .unwrap_or_else(|| "a deleted agent".to_string()),
        state,
        message: c.message.clone().unwrap_or_default(),
        created: short_time(&c.created_at),
        done: opt_time(&c.done_at),
    }
}

async fn agents_page(ctx: &Ctx, team_id: &str, extra: Extra, status: StatusCode) -> Response {
    let me = match ctx.me().await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let team = match ctx
        .api
        .get::<Team>(&format!("/api/v1/teams/{team_id}"))
        .await
    {
        Ok(t) => t,
        Err(f) => return ctx.refused(&f, Some(&me)),
    };
    let listed = match ctx.api.get::<Vec<AgentView>>(&api(team_id, "agents")).await {
        Ok(a) => a,
        Err(f) => return ctx.refused(&f, Some(&me)),
    };
    let mut agents: Vec<AgentRow> = listed.iter().map(agent_row).collect();
    agents.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    let tokens = if team.can("agent:manage") {
        ctx.api
            .get::<Vec<AgentTokenView>>(&api(team_id, "agent-tokens"))
            .await
            .ok()
            .map(|list| {
                list.iter()
                    .map(|t| TokenRow {
                        id: t.id.clone(),
                        group: t.group.clone(),
                        created: short_time(&t.created_at),
                        expires: short_time(&t.expires_at),
                        expired: t.expired,
                    })
                    .collect()
            })
    } else {
        None
    };
    // The command a ping or restart just queued, as it stands now.
    let command = match ctx
        .query_param("command")
        .filter(|id| crate::ids::looks_like_id(id))
    {
        Some(id) => ctx
            .api
            .get::<AgentCommandView>(&api(team_id, &format!("agent-commands/{id}")))
            .await
            .ok()
            .map(|c| command_shown(&c, &agents)),
        None => None,
    };
    let mut errors = extra.errors;
    // Without the provision form, its refusal is said for the whole page.
    if !team.can("agent:manage") {
        if let Some((_, why)) = errors.fields.first() {
            errors.form = errors.form.or(Some(why.clone()));
            errors.fields.clear();
        }
    }
    let manage = team.can("agent:manage");
    let updates = super::agent_updates::load(ctx, team_id, manage).await;
    let mut update_targets: Vec<String> = agents
        .iter()
        .filter(|a| !a.revoked)
        .map(|a| format!("agent:{}", a.name))
        .collect();
    let groups: std::collections::BTreeSet<String> = agents
        .iter()
        .filter(|a| !a.revoked)
        .filter_map(|a| a.group.clone())
        .collect();
    update_targets.extend(groups.into_iter().map(|g| format!("agent-group:{g}")));
    let layout = Layout::new(format!("{} · Remote agents", team.name), Some(&me), "home")
        .with_notice(notice(ctx.query_param("done").as_deref()));
    let mut response = render_status(
        status,
        &AgentsPage {
            layout,
            team,
            agents,
            tokens,
            command,
            errors,
            provision: extra.provision,
            public_url: ctx.console.app.config.server.public_url.clone(),
            shown: extra.shown,
            updates,
            update_targets,
        },
    );
    // The answer may hold a bundle shown once: never kept by a browser.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub async fn page(ctx: Ctx, Path(team): Path<String>) -> Response {
    agents_page(&ctx, &team, Extra::default(), StatusCode::OK).await
}

/// Who may use a form of this page, said when the API refuses a role.
const OWNERS: &str = "the team's Owners";
const OWNERS_AND_MEMBERS: &str = "the team's Owners and Members";

/// A refusal of a form on this page, said for people.
fn refusal(f: &Failure, who: &str, what: &str) -> String {
    if f.status == StatusCode::FORBIDDEN && f.is("forbidden") {
        return format!("Only {who} may {what}.");
    }
    describe(f)
}

/// The page again with a message for the whole page.
async fn again(ctx: &Ctx, team: &str, f: Failure, who: &str, what: &str) -> Done {
    if f.needs_login() {
        return Done::Again(ctx.refused(&f, None));
    }
    let extra = Extra {
        errors: FieldErrors {
            form: Some(refusal(&f, who, what)),
            fields: Vec::new(),
        },
        ..Extra::default()
    };
    Done::Again(agents_page(ctx, team, extra, refused_status(f.status)).await)
}

/// The provision form as the API takes it; a field the API could not read
/// is refused here, next to it.
fn provision_request(typed: &ProvisionForm) -> Result<Value, (&'static str, String)> {
    let mut request = Map::new();
    if !typed.group.is_empty() {
        request.insert("group".into(), json!(typed.group));
    }
    if !typed.hours.is_empty() {
        let hours: u32 = typed.hours.parse().map_err(|_| {
            (
                "hours",
                "Give the hours as a whole number from 1 to 168.".to_string(),
            )
        })?;
        request.insert("hours".into(), json!(hours));
    }
    if !typed.hub_url.is_empty() {
        request.insert("hub_url".into(), json!(typed.hub_url));
    }
    if !typed.ca_pem.trim().is_empty() {
        request.insert("ca_pem".into(), json!(typed.ca_pem));
    }
    Ok(Value::Object(request))
}

/// The page again with `message` for the whole page (a form the console
/// itself could not read).
pub async fn again_with(ctx: &Ctx, team: &str, message: &str) -> Done {
    let extra = Extra {
        errors: FieldErrors {
            form: Some(message.to_string()),
            fields: Vec::new(),
        },
        ..Extra::default()
    };
    Done::Again(agents_page(ctx, team, extra, StatusCode::UNPROCESSABLE_ENTITY).await)
}

/// The page again after the API refused an Owner's form.
pub async fn again_failed(ctx: &Ctx, team: &str, f: Failure, what: &str) -> Done {
    again(ctx, team, f, OWNERS, what).await
}

/// "Provision an agent": a one-time token and its bundle, shown once.
pub async fn provision(ctx: Ctx, Path(team): Path<String>, body: Bytes) -> Response {
    let ctx = &ctx;
    let team = team.as_str();
    let here = page_path(team);
    submit::signed_in(ctx, body, |p: Posted| async move {
        let typed = ProvisionForm {
            group: p.form.text("group"),
            hours: p.form.text("hours"),
            hub_url: p.form.text("hub_url"),
            // A browser sends a textarea's line breaks as CR LF.
            ca_pem: p.form.raw("ca_pem").replace("\r\n", "\n"),
        };
        let refused = |errors: FieldErrors, status: StatusCode, typed: ProvisionForm| async move {
            let extra = Extra {
                errors,
                provision: typed,
                ..Extra::default()
            };
            Done::Again(agents_page(ctx, team, extra, refused_status(status)).await)
        };
        let request = match provision_request(&typed) {
            Ok(r) => r,
            Err((field, why)) => {
                let errors = FieldErrors {
                    form: None,
                    fields: vec![(field, why)],
                };
                return refused(errors, StatusCode::UNPROCESSABLE_ENTITY, typed).await;
            }
        };
        match p
            .api
            .post::<ProvisionedToken>(Method::POST, &api(team, "agent-tokens"), &request)
            .await
        {
            Ok(made) => {
                let extra = Extra {
                    shown: Some(Shown {
                        bundle: made.bundle,
                        hub_url: made.hub_url,
                        cert_sha256: made.cert_sha256,
                        group: made.details.group,
                        expires: short_time(&made.details.expires_at),
                    }),
                    ..Extra::default()
                };
                Done::ShownOnce {
                    page: agents_page(ctx, team, extra, StatusCode::OK).await,
                    then: format!("{here}#tokens"),
                }
            }
            Err(f) if f.needs_login() => Done::Again(ctx.refused(&f, None)),
            Err(f) => {
                let mut errors = FieldErrors::from_failure(
                    &f,
                    &[
                        ("invalid_agent_group", "group"),
                        ("invalid_expiry", "hours"),
                        ("hub_url_required", "hub_url"),
                        ("invalid_hub_url", "hub_url"),
                        ("invalid_ca", "ca_pem"),
                    ],
                );
                if errors.form.is_some() {
                    errors.form = Some(refusal(&f, OWNERS, "provision agents"));
                }
                refused(errors, f.status, typed).await
            }
        }
    })
    .await
}

/// "Withdraw" on an unused provisioning token.
pub async fn withdraw(ctx: Ctx, Path((team, id)): Path<(String, String)>, body: Bytes) -> Response {
    let ctx = &ctx;
    let team = team.as_str();
    if !crate::ids::looks_like_id(&id) {
        return error_page(&Failure::not_found(), None);
    }
    let here = page_path(team);
    submit::signed_in(ctx, body, |p: Posted| async move {
        let path = api(team, &format!("agent-tokens/{id}"));
        match p.api.act(Method::DELETE, &path, None).await {
            Ok(_) => Done::Redirect(format!("{here}?done=token_withdrawn#tokens")),
            Err(f) if f.is("not_found") => {
                let f = Failure {
                    message: "that provisioning token is gone: used, or withdrawn already".into(),
                    ..f
                };
                again(ctx, team, f, OWNERS, "withdraw provisioning tokens").await
            }
            Err(f) => again(ctx, team, f, OWNERS, "withdraw provisioning tokens").await,
        }
    })
    .await
}

/// The forms on one agent: `ping`, `restart`, `revoke`, `delete`.
pub async fn action(
    ctx: Ctx,
    Path((team, id, action)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let ctx = &ctx;
    let team = team.as_str();
    if !crate::ids::looks_like_id(&id) {
        return error_page(&Failure::not_found(), None);
    }
    let here = page_path(team);
    submit::signed_in(ctx, body, |p: Posted| async move {
        let base = api(team, &format!("agents/{id}"));
        match action.as_str() {
            "ping" | "restart" => {
                let command = json!({ "kind": action });
                match p
                    .api
                    .post::<AgentCommandView>(Method::POST, &format!("{base}/commands"), &command)
                    .await
                {
                    Ok(c) => Done::Redirect(format!("{here}?command={}#agent-{id}", c.id)),
                    Err(f) => {
                        let what = if action == "ping" {
                            "ping agents"
                        } else {
                            "restart agents' Node-RED"
                        };
                        again(ctx, team, f, OWNERS_AND_MEMBERS, what).await
                    }
                }
            }
            "revoke" => match p
                .api
                .act(Method::POST, &format!("{base}/revoke"), Some(&json!({})))
                .await
            {
                Ok(_) => Done::Redirect(format!("{here}?done=agent_revoked#agent-{id}")),
                Err(f) => again(ctx, team, f, OWNERS, "revoke agents").await,
            },
            "delete" => match p.api.act(Method::DELETE, &base, None).await {
                Ok(_) => Done::Redirect(format!("{here}?done=agent_deleted#agents")),
                Err(f) => again(ctx, team, f, OWNERS, "delete agents").await,
            },
            _ => Done::Again(error_page(&Failure::not_found(), None)),
        }
    })
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn typed(group: &str, hours: &str, hub_url: &str, ca_pem: &str) -> ProvisionForm {
        ProvisionForm {
            group: group.into(),
            hours: hours.into(),
            hub_url: hub_url.into(),
            ca_pem: ca_pem.into(),
        }
    }

    #[test]
    fn the_provision_form_sends_only_what_was_given() {
        assert_eq!(
            provision_request(&typed("", "", "", " \n")).unwrap(),
            json!({})
        );
        assert_eq!(
            provision_request(&typed("line-1", "48", "https://hub.example", "PEM")).unwrap(),
            json!({"group": "line-1", "hours": 48, "hub_url": "https://hub.example",
                   "ca_pem": "PEM"})
        );
        // Out of range is the API's to refuse; not a number is refused here.
        assert_eq!(
            provision_request(&typed("", "500", "", "")).unwrap(),
            json!({"hours": 500})
        );
        for bad in ["a day", "-1", "1.5", "99999999999"] {
            let (field, _) = provision_request(&typed("", bad, "", "")).unwrap_err();
            assert_eq!(field, "hours", "{bad}");
        }
    }

    #[test]
    fn a_commands_state_follows_its_answer() {
        let mut c = AgentCommandView {
            id: "c".into(),
            agent_id: "a".into(),
            command: json!({"kind": "ping"}),
            created_at: "2026-11-24T01:02:03.456Z".into(),
            sent_at: None,
            done_at: None,
            ok: None,
            message: None,
        };
        let agents = [AgentRow {
            id: "a".into(),
            name: "press-1".into(),
            state: "online",
            node_red: "none".into(),
            snapshot: None,
            group: None,
            last_seen: String::new(),
            platform: String::new(),
            version: String::new(),
            fingerprint: String::new(),
            revoked: false,
            site: super::super::agent_site::summary(None),
        }];
        let shown = command_shown(&c, &agents);
        assert_eq!((shown.state, shown.agent.as_str()), ("waiting", "press-1"));
        assert_eq!(shown.kind, "ping");
        assert!(!shown.answered());
        c.sent_at = Some("2026-11-24T01:02:04Z".into());
        assert_eq!(command_shown(&c, &agents).state, "sent");
        c.ok = Some(false);
        c.message = Some("no".into());
        let shown = command_shown(&c, &[]);
        assert_eq!((shown.state, shown.message.as_str()), ("failed", "no"));
        assert_eq!(shown.agent, "a deleted agent");
        assert!(shown.answered());
        c.ok = Some(true);
        assert_eq!(command_shown(&c, &agents).badge(), "running");
    }
}

//! Instances: lifecycle, logs, environment, options. Route rules and API
//! keys are in `instance_access.rs`.

use crate::api::body::{Body, Query};
use crate::audit::Caller;
use crate::auth::principal::Principal;
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::instances::operations::{Control, EnvInput as HubEnvInput};
use crate::instances::options::InstanceOptions;
use crate::instances::{InstanceManager, Pending};
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures::Stream;
use redwall_policy::egress::EgressRuleInput;
use redwall_runtime::{InstanceStatus, LogLine, LogStream};
use redwall_store::{EnvEntry, Instance};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The `{instance}` path parameter: an instance's id or name, looked up in
/// the team the guard resolved only.
pub struct InstancePath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for InstancePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        crate::api::body::named_param(parts, state, "instance")
            .await
            .map(InstancePath)
    }
}

pub fn manager(state: &AppState) -> ApiResult<&Arc<InstanceManager>> {
    Ok(state.hub.manager()?)
}

/// The instance the path names, in the caller's team.
pub async fn team_instance(
    state: &AppState,
    principal: &Principal,
    path: &InstancePath,
) -> ApiResult<Instance> {
    let team = principal.team()?;
    Ok(state.hub.team_instance(&team.team_id, &path.0).await?)
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct StatusView {
    /// installing (waiting for Node-RED's npm install; it starts after),
    /// stopped, starting, running, crashed (restarting), crash_loop (given
    /// up) or failed (could not be started); for an instance on a remote
    /// agent: its Node-RED as the agent reported it (running, starting,
    /// stopped, failed, none) or offline.
    pub state: &'static str,
    pub pid: Option<u32>,
    pub since: Option<String>,
    /// Why it stopped, for crashed, crash_loop and failed; npm's latest
    /// line (progress) while installing.
    pub reason: Option<String>,
    pub restarts: Option<u32>,
}

fn status_view(s: &InstanceStatus) -> StatusView {
    let at = |ms: i64| Some(rfc3339(ms.saturating_mul(1000)));
    match s {
        InstanceStatus::Stopped => StatusView {
            state: "stopped",
            pid: None,
            since: None,
            reason: None,
            restarts: None,
        },
        InstanceStatus::Starting => StatusView {
            state: "starting",
            pid: None,
            since: None,
            reason: None,
            restarts: None,
        },
        InstanceStatus::Running { pid, since_unix_ms } => StatusView {
            state: "running",
            pid: Some(*pid),
            since: at(*since_unix_ms),
            reason: None,
            restarts: None,
        },
        InstanceStatus::Crashed {
            reason,
            at_unix_ms,
            restarts,
        } => StatusView {
            state: "crashed",
            pid: None,
            since: at(*at_unix_ms),
            reason: Some(reason.clone()),
            restarts: Some(*restarts),
        },
        InstanceStatus::CrashLoop { reason } => StatusView {
            state: "crash_loop",
            pid: None,
            since: None,
            reason: Some(reason.clone()),
            restarts: None,
        },
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct InstanceView {
    pub id: String,
    pub name: String,
    pub team_id: String,
    /// What Redwall keeps it at across restarts: running or stopped.
    pub desired_state: String,
    pub status: StatusView,
    /// Where the flows' endpoints are reached.
    pub url: String,
    /// The Node-RED editor, through Redwall.
    pub editor_url: String,
    pub options: InstanceOptions,
    pub created_at: String,
    /// The snapshot it runs (taken at its last deploy from the editor, or
    /// deployed by a rollback); none before its first deploy.
    pub running_snapshot: Option<String>,
    /// The remote agent whose Node-RED this instance is, reached through
    /// that agent's connection; none when this hub runs it.
    pub agent: Option<String>,
}

/// Where the instance is reached: its own host name when a domain is set
/// (scheme and port as in `server.public_url`, else as Redwall listens),
/// otherwise the path prefix on the console.
pub fn base_url(state: &AppState, name: &str) -> String {
    let Some(domain) = state.config.instance_domain() else {
        return format!("/i/{name}");
    };
    let (scheme, port) = match &state.config.server.public_url {
        Some(u) => {
            let (scheme, rest) = u.split_once("://").unwrap_or(("https", u));
            let port = rest
                .split('/')
                .next()
                .and_then(|h| h.rsplit_once(':'))
                .map(|(_, p)| format!(":{p}"))
                .unwrap_or_default();
            (scheme.to_string(), port)
        }
        None => {
            let scheme = if state.tls { "https" } else { "http" };
            let port = state.config.server.listen.port();
            let default = if state.tls { 443 } else { 80 };
            let port = if port == default {
                String::new()
            } else {
                format!(":{port}")
            };
            (scheme.to_string(), port)
        }
    };
    format!("{scheme}://{name}.{domain}{port}")
}

#[derive(Deserialize)]
pub struct HandoffQuery {
    instance: String,
    next: Option<String>,
}

/// Hands the browser's console session over to an instance's own host
/// name (see `proxy::handoff`). Access to the instance is still decided by
/// the proxy on every request.
pub async fn login_handoff(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    headers: axum::http::HeaderMap,
    Query(q): Query<HandoffQuery>,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let cookie = crate::auth::session::cookie_token(&headers, client.https);
    let console_token = match (&principal.via, cookie) {
        (crate::auth::principal::Via::Session { .. }, Some(t)) => t,
        _ => {
            return Err(ApiError::bad_request(
                "session_required",
                "open this link in a browser that is logged in to Redwall",
            ))
        }
    };
    // Only a member of the instance's team gets a code; anyone else gets
    // exactly the answer for an instance that does not exist.
    let instance = match state.config.instance_domain().is_none() {
        true => None,
        false => state.hub.instance_by_name(&q.instance).await?,
    };
    let Some(instance) = instance else {
        return Err(ApiError::not_found());
    };
    let role = state
        .hub
        .membership(&instance.team_id, &principal.user_id)
        .await?;
    if role.is_none() {
        return Err(ApiError::not_found());
    }
    let code = crate::proxy::handoff::mint_code(&state, &console_token, &q.instance);
    let next = redwall_policy::redirect::local_path_or(q.next.as_deref(), "/editor/");
    let url = format!(
        "{}{}?code={code}&next={}",
        base_url(&state, &q.instance),
        crate::proxy::handoff::CALLBACK_PATH,
        crate::proxy::handoff::encode_component(&next)
    );
    Ok(axum::response::Redirect::to(&url).into_response())
}

fn pending_view(state: &'static str, reason: Option<String>) -> StatusView {
    StatusView {
        state,
        pid: None,
        since: None,
        reason,
        restarts: None,
    }
}

/// The state of an instance a remote agent runs: its Node-RED as the
/// agent last reported it, or `offline`.
fn agent_status_view(state: &AppState, agent: Option<&redwall_store::Agent>) -> StatusView {
    let Some(a) = agent.filter(|a| {
        a.revoked_at.is_none()
            && redwall_policy::agent_protocol::is_online(
                a.last_seen_at,
                a.disconnected_at,
                state.hub.now(),
                state.config.agents.heartbeat_secs,
            )
    }) else {
        return pending_view("offline", Some("its agent is not connected".into()));
    };
    let state = match a.node_red.as_str() {
        "running" => "running",
        "starting" => "starting",
        "stopped" => "stopped",
        "failed" => "failed",
        _ => "none",
    };
    pending_view(state, None)
}

pub async fn view(state: &AppState, i: &Instance) -> ApiResult<InstanceView> {
    let agent = state.hub.instance_agent(i).await?;
    let mut view = local_view(state, i);
    if i.agent_id.is_some() {
        view.status = agent_status_view(state, agent.as_ref());
        view.agent = agent.map(|a| a.name);
    }
    Ok(view)
}

fn local_view(state: &AppState, i: &Instance) -> InstanceView {
    let status = match state.hub.instance_manager() {
        Some(m) => match m.pending(&i.id) {
            Some(Pending::Installing) => pending_view("installing", m.install_progress()),
            Some(Pending::Failed(reason)) => pending_view("failed", Some(reason)),
            None => status_view(&m.status(&i.id)),
        },
        None => status_view(&InstanceStatus::Stopped),
    };
    let url = base_url(state, &i.name);
    InstanceView {
        id: i.id.clone(),
        name: i.name.clone(),
        team_id: i.team_id.clone(),
        desired_state: i.desired_state.clone(),
        status,
        editor_url: format!("{url}/editor/"),
        url: format!("{url}/"),
        options: InstanceOptions::from_json(&i.options),
        created_at: rfc3339(i.created_at),
        running_snapshot: i.running_snapshot_id.clone(),
        agent: None,
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInstance {
    /// 2 to 40 of a-z, 0-9 and '-'; unique on the platform (it is part of
    /// the instance's host name).
    pub name: String,
    /// Start it right away (default true).
    pub start: Option<bool>,
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Body(req): Body<NewInstance>,
) -> ApiResult<(StatusCode, Json<InstanceView>)> {
    let team = principal.team()?;
    let caller = Caller::of(&principal, &client);
    let instance = state
        .hub
        .create_instance(
            caller.who(),
            &team.team_id,
            &principal.user_id,
            &req.name,
            req.start.unwrap_or(true),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(view(&state, &instance).await?)))
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<Vec<InstanceView>>> {
    let team = principal.team()?;
    let list = state.hub.team_instances(&team.team_id).await?;
    let mut views = Vec::with_capacity(list.len());
    for i in &list {
        views.push(view(&state, i).await?);
    }
    Ok(Json(views))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    path: InstancePath,
) -> ApiResult<Json<InstanceView>> {
    let i = team_instance(&state, &principal, &path).await?;
    Ok(Json(view(&state, &i).await?))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteInstance {
    /// The instance's name, repeated, to confirm.
    pub confirm_name: String,
}

pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    path: InstancePath,
    Body(req): Body<DeleteInstance>,
) -> ApiResult<StatusCode> {
    let i = team_instance(&state, &principal, &path).await?;
    let caller = Caller::of(&principal, &client);
    state
        .hub
        .delete_instance(caller.who(), &i, &req.confirm_name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn control(
    state: AppState,
    principal: Principal,
    client: ClientInfo,
    path: InstancePath,
    action: Control,
) -> ApiResult<Json<InstanceView>> {
    let i = team_instance(&state, &principal, &path).await?;
    let caller = Caller::of(&principal, &client);
    let i = state.hub.control_instance(caller.who(), i, action).await?;
    Ok(Json(view(&state, &i).await?))
}

pub async fn start(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    path: InstancePath,
) -> ApiResult<Json<InstanceView>> {
    control(state, principal, client, path, Control::Start).await
}

pub async fn stop(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    path: InstancePath,
) -> ApiResult<Json<InstanceView>> {
    control(state, principal, client, path, Control::Stop).await
}

pub async fn restart(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    path: InstancePath,
) -> ApiResult<Json<InstanceView>> {
    control(state, principal, client, path, Control::Restart).await
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LogLineView {
    pub at: String,
    /// stdout or stderr.
    pub stream: &'static str,
    pub text: String,
}

fn line_view(l: &LogLine) -> LogLineView {
    LogLineView {
        at: rfc3339(l.at_unix_ms.saturating_mul(1000)),
        stream: match l.stream {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        },
        text: l.text.clone(),
    }
}

#[derive(Deserialize)]
pub struct LogQuery {
    lines: Option<usize>,
}

pub async fn logs(
    State(state): State<AppState>,
    principal: Principal,
    path: InstancePath,
    Query(q): Query<LogQuery>,
) -> ApiResult<Json<Vec<LogLineView>>> {
    let i = team_instance(&state, &principal, &path).await?;
    let n = q.lines.unwrap_or(100).clamp(1, 1000);
    let lines = manager(&state)?.logs(&i.id, n);
    Ok(Json(lines.iter().map(line_view).collect()))
}

/// New log lines as server-sent events, until the client goes away.
pub async fn log_stream(
    State(state): State<AppState>,
    principal: Principal,
    path: InstancePath,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>>> {
    let i = team_instance(&state, &principal, &path).await?;
    let rx = manager(&state)?.subscribe_logs(&i.id).ok_or_else(|| {
        ApiError::conflict(
            "not_running",
            "the instance has not run since Redwall started",
        )
    })?;
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(line) => {
                    let data = serde_json::to_string(&line_view(&line)).unwrap_or_default();
                    return Some((Ok(Event::default().event("log").data(data)), rx));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnvView {
    pub name: String,
    pub secret: bool,
    /// The value, for variables not marked secret; secret values are never
    /// returned after they are set.
    pub value: Option<String>,
    pub updated_at: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvInput {
    pub name: String,
    /// The new value. Omit it to keep the stored value (how a secret is
    /// kept without sending it again).
    pub value: Option<String>,
    #[serde(default)]
    pub secret: bool,
}

fn env_views(state: &AppState, instance_id: &str, entries: &[EnvEntry]) -> Vec<EnvView> {
    entries
        .iter()
        .map(|e| EnvView {
            name: e.name.clone(),
            secret: e.secret,
            value: state.hub.env_value(instance_id, e),
            updated_at: rfc3339(e.updated_at),
        })
        .collect()
}

pub async fn get_env(
    State(state): State<AppState>,
    principal: Principal,
    path: InstancePath,
) -> ApiResult<Json<Vec<EnvView>>> {
    let i = team_instance(&state, &principal, &path).await?;
    let entries = state.hub.instance_env(&i.id).await?;
    Ok(Json(env_views(&state, &i.id, &entries)))
}

/// Replaces the whole environment. Takes effect at the next start.
pub async fn put_env(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    path: InstancePath,
    Body(input): Body<Vec<EnvInput>>,
) -> ApiResult<Json<Vec<EnvView>>> {
    let i = team_instance(&state, &principal, &path).await?;
    let caller = Caller::of(&principal, &client);
    let input = input
        .into_iter()
        .map(|v| HubEnvInput {
            name: v.name,
            value: v.value,
            secret: v.secret,
        })
        .collect();
    let entries = state.hub.set_instance_env(caller.who(), &i, input).await?;
    Ok(Json(env_views(&state, &i.id, &entries)))
}

pub async fn put_options(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    path: InstancePath,
    Body(options): Body<InstanceOptions>,
) -> ApiResult<Json<InstanceView>> {
    let i = team_instance(&state, &principal, &path).await?;
    let caller = Caller::of(&principal, &client);
    let i = state
        .hub
        .set_instance_options(caller.who(), i, options)
        .await?;
    Ok(Json(view(&state, &i).await?))
}

/// One exception to an instance's network isolation: traffic to `cidr`
/// (over `protocol`, to `ports`) is let through, even where the default
/// refuses it (this host's addresses, link-local and metadata addresses).
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EgressDoc {
    /// An address (`192.0.2.7`) or a CIDR range (`192.0.2.0/24`) with no
    /// host bits set. Loopback and ranges covering every address are refused.
    pub cidr: String,
    /// `tcp` (the default) or `udp`.
    pub protocol: Option<String>,
    /// `5432` or `8000-8100`; absent for every port.
    pub ports: Option<String>,
}

fn egress_docs(rules: &[redwall_policy::egress::EgressRule]) -> Vec<EgressDoc> {
    rules
        .iter()
        .map(|r| {
            let i = r.to_input();
            EgressDoc {
                cidr: i.cidr,
                protocol: i.protocol,
                ports: i.ports,
            }
        })
        .collect()
}

pub async fn get_egress(
    State(state): State<AppState>,
    principal: Principal,
    path: InstancePath,
) -> ApiResult<Json<Vec<EgressDoc>>> {
    let i = team_instance(&state, &principal, &path).await?;
    let rules = crate::instances::runner::stored_egress(&i)?;
    Ok(Json(egress_docs(&rules)))
}

/// Replaces the instance's egress policy, validated whole first, and applies
/// it to the running instance at once. If it cannot be applied the instance
/// is stopped rather than left with rules nobody chose.
pub async fn put_egress(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    path: InstancePath,
    Body(docs): Body<Vec<EgressDoc>>,
) -> ApiResult<Json<Vec<EgressDoc>>> {
    let i = team_instance(&state, &principal, &path).await?;
    let inputs: Vec<EgressRuleInput> = docs
        .into_iter()
        .map(|d| EgressRuleInput {
            cidr: d.cidr,
            protocol: d.protocol,
            ports: d.ports,
        })
        .collect();
    let caller = Caller::of(&principal, &client);
    let rules = state
        .hub
        .set_instance_egress(caller.who(), &i, &inputs)
        .await?;
    Ok(Json(egress_docs(&rules)))
}

//! Instances: lifecycle, logs, environment, options. Route rules and API
//! keys are in `instance_access.rs`.

use crate::api::body::{Body, Query};
use crate::audit;
use crate::auth::principal::Principal;
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::instances::manager::{env_aad, new_sealed_keys, Pending};
use crate::instances::model::InstanceOptions;
use crate::instances::{sealing, InstanceManager};
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures::Stream;
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_policy::instance_rules::{
    env_name, env_value_fits, instance_name, MAX_ENV_VALUE_BYTES, MAX_ENV_VARS,
    MAX_INSTANCES_PER_TEAM,
};
use redwall_runtime::{InstanceStatus, LogLine, LogStream};
use redwall_store::{EnvEntry, Instance, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;

/// The `{instance}` path parameter: an instance's id or name, looked up in
/// the team the guard resolved only.
pub struct InstancePath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for InstancePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::RawPathParams::from_request_parts(parts, state)
            .await
            .ok()
            .and_then(|p| {
                p.iter()
                    .find(|(k, _)| *k == "instance")
                    .map(|(_, v)| v.to_string())
            })
            .filter(|v| v.len() <= 64)
            .map(InstancePath)
            .ok_or_else(ApiError::not_found)
    }
}

pub fn manager(state: &AppState) -> ApiResult<&Arc<InstanceManager>> {
    state.instances.get().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "instances_unavailable",
            "this Redwall process does not run instances",
        )
    })
}

/// The instance the path names, in the caller's team.
pub async fn team_instance(
    state: &AppState,
    principal: &Principal,
    path: &InstancePath,
) -> ApiResult<Instance> {
    let team = principal.team()?;
    state
        .store
        .get_team_instance(&team.team_id, &path.0)
        .await?
        .ok_or_else(ApiError::not_found)
}

pub async fn record(
    state: &AppState,
    principal: &Principal,
    client: &ClientInfo,
    instance: &Instance,
    event: AuditEvent,
    details: serde_json::Value,
) -> ApiResult<()> {
    audit::record_in_team(
        state,
        Some(&instance.team_id),
        Some(&principal.actor()),
        client,
        event,
        Outcome::Success,
        Some(format!("instance:{}", instance.name)),
        details,
    )
    .await
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct StatusView {
    /// installing (waiting for Node-RED's npm install; it starts after),
    /// stopped, starting, running, crashed (restarting), crash_loop (given
    /// up) or failed (could not be started).
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
        false => state.store.get_instance_by_name(&q.instance).await?,
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

fn view(state: &AppState, i: &Instance) -> InstanceView {
    let status = match state.instances.get() {
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

async fn free_port(state: &AppState) -> ApiResult<u16> {
    let used = state.store.used_instance_ports().await?;
    let c = &state.config.instances;
    (c.port_min..=c.port_max)
        .find(|p| !used.contains(p) && std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .ok_or_else(|| {
            ApiError::conflict(
                "no_free_port",
                "every port of instances.port_min..port_max is taken",
            )
        })
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Body(req): Body<NewInstance>,
) -> ApiResult<(StatusCode, Json<InstanceView>)> {
    let team = principal.team()?.team_id.clone();
    instance_name(&req.name).map_err(ApiError::from)?;
    let manager = manager(&state)?;
    if state.store.count_team_instances(&team).await? >= MAX_INSTANCES_PER_TEAM {
        return Err(ApiError::conflict(
            "too_many_instances",
            format!("a team may have at most {MAX_INSTANCES_PER_TEAM} instances"),
        ));
    }
    if state.store.get_instance_by_name(&req.name).await?.is_some() {
        return Err(ApiError::conflict(
            "name_taken",
            "an instance with this name exists",
        ));
    }
    let start = req.start.unwrap_or(true);
    if start && manager.adopts_runtime() {
        // A missing or unusable configured Node-RED is reported before
        // anything is stored. One that npm installs is not waited for: the
        // instance answers `installing` and starts when npm is done.
        manager.runtime().await?;
    }
    let version = sealing::key_version(&state).await?;
    let now = state.now();
    let id = crate::ids::new_id();
    let mut instance = Instance {
        id: id.clone(),
        name: req.name.clone(),
        team_id: team,
        port: 0,
        desired_state: if start { "running" } else { "stopped" }.into(),
        options: serde_json::to_string(&InstanceOptions::default()).unwrap_or_default(),
        routes: "[]".into(),
        egress: "[]".into(),
        secrets: new_sealed_keys(&state.keyring, version, &id),
        created_by: Some(principal.user_id.clone()),
        created_at: now,
        updated_at: now,
    };
    // Two creations may pick the same free port, or the same name; the
    // unique indexes refuse the second. SQLite does not say which index, so
    // the name is looked up: taken, it is the answer; free, the port was
    // taken and the next one is tried.
    let mut attempts = 0;
    loop {
        instance.port = free_port(&state).await?;
        match state.store.create_instance(&instance).await {
            Ok(()) => break,
            Err(StoreError::Conflict(_))
                if state.store.get_instance_by_name(&req.name).await?.is_some() =>
            {
                return Err(ApiError::conflict(
                    "name_taken",
                    "an instance with this name exists",
                ))
            }
            Err(StoreError::Conflict(_)) if attempts < 5 => attempts += 1,
            Err(e) => return Err(e.into()),
        }
    }
    if start {
        let held = manager.control(&instance.id).await;
        if let Err(e) = manager.start(&state, &instance, &held).await {
            // Nothing half-made stays behind: the caller may simply retry.
            state.store.delete_instance(&instance.id).await?;
            manager.remove_files(&instance.id);
            return Err(e);
        }
    }
    record(
        &state,
        &principal,
        &client,
        &instance,
        AuditEvent::InstanceCreated,
        json!({ "name": instance.name, "port": instance.port }),
    )
    .await?;
    if start {
        record(
            &state,
            &principal,
            &client,
            &instance,
            AuditEvent::InstanceStarted,
            json!({}),
        )
        .await?;
    }
    Ok((StatusCode::CREATED, Json(view(&state, &instance))))
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<Vec<InstanceView>>> {
    let team = principal.team()?;
    let list = state.store.list_team_instances(&team.team_id).await?;
    Ok(Json(list.iter().map(|i| view(&state, i)).collect()))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    path: InstancePath,
) -> ApiResult<Json<InstanceView>> {
    let i = team_instance(&state, &principal, &path).await?;
    Ok(Json(view(&state, &i)))
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
    if req.confirm_name != i.name {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "confirmation_mismatch",
            "repeat the instance's exact name in confirm_name to delete it",
        ));
    }
    let manager = manager(&state)?;
    let held = manager.control(&i.id).await;
    manager.stop(&i.id, &held).await?;
    state.store.delete_instance(&i.id).await?;
    state.forget_instance(&i.name);
    manager.remove_files(&i.id);
    record(
        &state,
        &principal,
        &client,
        &i,
        AuditEvent::InstanceDeleted,
        json!({ "name": i.name }),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_desired(state: &AppState, i: &mut Instance, desired: &str) -> ApiResult<()> {
    if i.desired_state != desired {
        state
            .store
            .set_instance_desired_state(&i.id, desired, state.now())
            .await?;
        i.desired_state = desired.to_string();
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Control {
    Start,
    Stop,
    Restart,
}

async fn control(
    state: AppState,
    principal: Principal,
    client: ClientInfo,
    path: InstancePath,
    action: Control,
) -> ApiResult<Json<InstanceView>> {
    let mut i = team_instance(&state, &principal, &path).await?;
    let manager = manager(&state)?;
    // Held until the desired state is stored: a concurrent stop of this
    // instance waits, so the state stored is the one last acted on.
    let held = manager.control(&i.id).await;
    let (desired, event) = match action {
        Control::Start => {
            manager.start(&state, &i, &held).await?;
            ("running", AuditEvent::InstanceStarted)
        }
        Control::Stop => {
            manager.stop(&i.id, &held).await?;
            ("stopped", AuditEvent::InstanceStopped)
        }
        Control::Restart => {
            manager.restart(&state, &i, &held).await?;
            ("running", AuditEvent::InstanceRestarted)
        }
    };
    set_desired(&state, &mut i, desired).await?;
    record(&state, &principal, &client, &i, event, json!({})).await?;
    Ok(Json(view(&state, &i)))
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
            value: (!e.secret).then(|| {
                sealing::open(&state.keyring, &e.value, &env_aad(instance_id, &e.name))
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_default()
            }),
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
    let entries = state.store.list_instance_env(&i.id).await?;
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
    if input.len() > MAX_ENV_VARS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_many_variables",
            format!("at most {MAX_ENV_VARS} variables"),
        ));
    }
    let before = state.store.list_instance_env(&i.id).await?;
    let version = sealing::key_version(&state).await?;
    let now = state.now();
    let mut names = std::collections::BTreeSet::new();
    let mut entries = Vec::with_capacity(input.len());
    for v in &input {
        env_name(&v.name).map_err(ApiError::from)?;
        if !names.insert(v.name.clone()) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "duplicate_name",
                format!("{} is listed twice", v.name),
            ));
        }
        let sealed = match &v.value {
            Some(value) if !env_value_fits(value) => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_value",
                    format!(
                        "{}: a value is at most {MAX_ENV_VALUE_BYTES} bytes without NUL",
                        v.name
                    ),
                ))
            }
            Some(value) => sealing::seal(
                &state.keyring,
                version,
                value.as_bytes(),
                &env_aad(&i.id, &v.name),
            ),
            None => match before.iter().find(|b| b.name == v.name) {
                // A secret stays write-only: turning it into a plain value
                // must not reveal the stored one.
                Some(b) if b.secret && !v.secret => {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "missing_value",
                        format!("{} is no longer secret and needs a new value", v.name),
                    ))
                }
                Some(b) => b.value.clone(),
                None => {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "missing_value",
                        format!("{} is new and needs a value", v.name),
                    ))
                }
            },
        };
        let unchanged = v.value.is_none()
            && before
                .iter()
                .any(|b| b.name == v.name && b.secret == v.secret);
        entries.push(EnvEntry {
            name: v.name.clone(),
            secret: v.secret,
            value: sealed,
            updated_at: if unchanged {
                before
                    .iter()
                    .find(|b| b.name == v.name)
                    .map_or(now, |b| b.updated_at)
            } else {
                now
            },
        });
    }
    state.store.replace_instance_env(&i.id, &entries).await?;
    let changed: Vec<&str> = entries
        .iter()
        .filter(|e| e.updated_at == now)
        .map(|e| e.name.as_str())
        .collect();
    let removed: Vec<&str> = before
        .iter()
        .filter(|b| !names.contains(&b.name))
        .map(|b| b.name.as_str())
        .collect();
    // Names only: values (secret or not) never enter the log.
    record(
        &state,
        &principal,
        &client,
        &i,
        AuditEvent::InstanceEnvChanged,
        json!({ "set": changed, "removed": removed }),
    )
    .await?;
    Ok(Json(env_views(&state, &i.id, &entries)))
}

pub async fn put_options(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    path: InstancePath,
    Body(options): Body<InstanceOptions>,
) -> ApiResult<Json<InstanceView>> {
    let mut i = team_instance(&state, &principal, &path).await?;
    let before = InstanceOptions::from_json(&i.options);
    i.options = serde_json::to_string(&options).map_err(ApiError::internal)?;
    state
        .store
        .set_instance_options(&i.id, &i.options, state.now())
        .await?;
    record(
        &state,
        &principal,
        &client,
        &i,
        AuditEvent::InstanceOptionsChanged,
        json!({ "before": before, "after": options }),
    )
    .await?;
    Ok(Json(view(&state, &i)))
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
    let rules = crate::instances::manager::stored_egress(&i)?;
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
    use redwall_policy::egress::{self, EgressRuleInput};
    let i = team_instance(&state, &principal, &path).await?;
    let inputs: Vec<EgressRuleInput> = docs
        .into_iter()
        .map(|d| EgressRuleInput {
            cidr: d.cidr,
            protocol: d.protocol,
            ports: d.ports,
        })
        .collect();
    let rules = egress::validate(&inputs).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_egress",
            e.to_string(),
        )
    })?;
    let before = crate::instances::manager::stored_egress(&i)
        .map(|r| egress_docs(&r))
        .unwrap_or_default();
    let canonical: Vec<EgressRuleInput> = rules.iter().map(|r| r.to_input()).collect();
    let json = serde_json::to_string(&canonical).map_err(ApiError::internal)?;
    state
        .store
        .set_instance_egress(&i.id, &json, state.now())
        .await?;
    let after = egress_docs(&rules);
    record(
        &state,
        &principal,
        &client,
        &i,
        AuditEvent::InstanceEgressChanged,
        json!({ "before": before, "after": after }),
    )
    .await?;
    if let Some(manager) = state.instances.get() {
        if let Err(e) = manager.set_egress(&i, &rules).await {
            tracing::error!(instance = %i.name, error = %e.message, "applying an egress policy failed; stopping the instance");
            let held = manager.control(&i.id).await;
            manager.stop(&i.id, &held).await?;
            return Err(e);
        }
    }
    Ok(Json(after))
}

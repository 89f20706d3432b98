//! Remote agents: provisioning tokens (each with the one-line bundle an
//! agent enrols with), the team's agents with their online state,
//! revocation and commands; and the agents' own public way in, enrolment.
//! The agents' WebSocket is `agent_gateway.rs`.

use crate::api::body::{Body, Query, TeamItemPath};
use crate::api::{list_of, needs, public, schema, Route};
use crate::audit::Caller;
use crate::auth::principal::Principal;
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::Json;
use redwall_hub::agents::key_fingerprint;
use redwall_policy::agent_protocol::{
    is_online, AgentCommand, EnrolAnswer, EnrolRequest, ProvisioningBundle, CONNECT_PATH,
    ENROL_PATH,
};
use redwall_policy::permission::Permission;
use redwall_policy::site_events::SiteReport;
use redwall_store::{Agent, AgentCommandRow, AgentToken};
use serde::{Deserialize, Serialize};

use super::snapshots::{deployment_view, DeploymentView};

/// `{agent}` in a team route: the agent's id or name, looked up in the
/// guard's team only.
pub struct AgentPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for AgentPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        crate::api::body::named_param(parts, state, "agent")
            .await
            .map(AgentPath)
    }
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentView {
    pub id: String,
    pub name: String,
    pub group: Option<String>,
    pub platform: String,
    pub version: String,
    /// SHA-256 of the build it said it runs when it last connected.
    pub build_sha256: Option<String>,
    /// The fingerprint of the key the agent made and proves itself with.
    pub key_fingerprint: String,
    /// Heard from within two heartbeat intervals (and not revoked).
    pub online: bool,
    pub last_seen_at: Option<String>,
    /// Node-RED on the agent, as it last reported: running, stopped,
    /// starting, failed or none.
    pub node_red: String,
    pub running_snapshot: Option<String>,
    pub revoked: bool,
    pub revoked_at: Option<String>,
    pub created_at: String,
    /// The site's MQTT store-and-forward and journals, as the agent's last
    /// heartbeat gave them (absent when it has neither).
    pub site: Option<SiteReport>,
}

pub fn agent_view(state: &AppState, a: &Agent) -> AgentView {
    AgentView {
        id: a.id.clone(),
        name: a.name.clone(),
        group: a.agent_group.clone(),
        platform: a.platform.clone(),
        version: a.version.clone(),
        build_sha256: a.build_sha256.clone(),
        key_fingerprint: key_fingerprint(&a.public_key),
        online: a.revoked_at.is_none()
            && is_online(
                a.last_seen_at,
                a.disconnected_at,
                state.hub.now(),
                state.config.agents.heartbeat_secs,
            ),
        last_seen_at: a.last_seen_at.map(rfc3339),
        node_red: a.node_red.clone(),
        running_snapshot: a.running_snapshot.clone(),
        revoked: a.revoked_at.is_some(),
        revoked_at: a.revoked_at.map(rfc3339),
        created_at: rfc3339(a.created_at),
        site: redwall_hub::agent_site::site_report(a),
    }
}

#[derive(Deserialize, utoipa::ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct NewAgentToken {
    /// The group the agent joins (a deploy target).
    #[serde(default)]
    pub group: Option<String>,
    /// Hours the token stays usable: 1 to 168, 24 when omitted.
    #[serde(default)]
    pub hours: Option<u32>,
    /// The hub's address as the agent reaches it (`https://host:port`);
    /// `server.public_url` when omitted.
    #[serde(default)]
    pub hub_url: Option<String>,
    /// A CA certificate (PEM) for the agent to check the hub's certificate
    /// with, where it is not signed by a public CA. A self-signed hub's
    /// certificate is pinned in the bundle instead.
    #[serde(default)]
    pub ca_pem: Option<String>,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentTokenView {
    pub id: String,
    pub group: Option<String>,
    pub created_at: String,
    pub expires_at: String,
    pub expired: bool,
}

fn token_view(state: &AppState, t: &AgentToken) -> AgentTokenView {
    AgentTokenView {
        id: t.id.clone(),
        group: t.agent_group.clone(),
        created_at: rfc3339(t.created_at),
        expires_at: rfc3339(t.expires_at),
        expired: t.expires_at <= state.hub.now(),
    }
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProvisionedToken {
    /// Shown this once; stored only as a digest. Usable once.
    pub token: String,
    /// What `redwall-agent enrol --bundle` takes: the hub's address, how to
    /// know its certificate, and the token, on one line.
    pub bundle: String,
    pub hub_url: String,
    /// SHA-256 of the hub's certificate the agent will accept (self-signed hub).
    pub cert_sha256: Option<String>,
    #[serde(flatten)]
    pub details: AgentTokenView,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentCommandView {
    pub id: String,
    pub agent_id: String,
    pub command: serde_json::Value,
    pub created_at: String,
    /// When a hub handed it to the agent.
    pub sent_at: Option<String>,
    /// When the agent answered.
    pub done_at: Option<String>,
    pub ok: Option<bool>,
    pub message: Option<String>,
}

fn command_view(c: &AgentCommandRow) -> AgentCommandView {
    AgentCommandView {
        id: c.id.clone(),
        agent_id: c.agent_id.clone(),
        command: serde_json::from_str(&c.command).unwrap_or(serde_json::Value::Null),
        created_at: rfc3339(c.created_at),
        sent_at: c.sent_at.map(rfc3339),
        done_at: c.done_at.map(rfc3339),
        ok: c.ok,
        message: c.message.clone(),
    }
}

/// The address an agent dials: asked for, else the configured public URL,
/// else the address this hub listens on (when it is a real one).
fn hub_url(state: &AppState, asked: Option<&str>) -> ApiResult<String> {
    let url = match asked.map(str::trim).filter(|u| !u.is_empty()) {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => match &state.config.server.public_url {
            Some(u) => u.clone(),
            None if !state.config.server.listen.ip().is_unspecified() => {
                format!("https://{}", state.config.server.listen)
            }
            None => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "hub_url_required",
                    "say where agents reach this hub (hub_url), or set server.public_url",
                ))
            }
        },
    };
    let ok = url.starts_with("https://")
        && url.len() <= 300
        && url.parse::<axum::http::Uri>().is_ok_and(|u| {
            u.authority()
                .is_some_and(|a| !a.host().is_empty() && !a.as_str().contains('@'))
                && matches!(u.path(), "" | "/")
                && u.query().is_none()
        });
    if !ok {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_hub_url",
            "the hub URL must be https://host[:port], with nothing after it",
        ));
    }
    Ok(url)
}

pub async fn create_token(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Body(req): Body<NewAgentToken>,
) -> ApiResult<(StatusCode, Json<ProvisionedToken>)> {
    let team = principal.team()?;
    let caller = Caller::of(&principal, &client);
    let url = hub_url(&state, req.hub_url.as_deref())?;
    if let Some(pem) = &req.ca_pem {
        let mut reader = pem.as_bytes();
        let certs: Vec<_> = rustls_pemfile::certs(&mut reader).collect();
        if pem.len() > 32 * 1024 || certs.is_empty() || certs.iter().any(Result::is_err) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_ca",
                "ca_pem must hold PEM certificates (at most 32 KiB)",
            ));
        }
    }
    let made = state
        .hub
        .create_agent_token(
            caller.who(),
            &team.team_id,
            &principal.user_id,
            req.group.as_deref(),
            req.hours,
        )
        .await?;
    let cert_sha256 = state.tls_pin.get().cloned();
    let bundle = ProvisioningBundle {
        hub_url: url.clone(),
        cert_sha256: cert_sha256.clone(),
        ca_pem: if cert_sha256.is_some() {
            None
        } else {
            req.ca_pem
        },
        provisioning_token: made.token.expose().to_string(),
    };
    Ok((
        StatusCode::CREATED,
        Json(ProvisionedToken {
            token: made.token.expose().to_string(),
            bundle: bundle.encode(),
            hub_url: url,
            cert_sha256,
            details: token_view(&state, &made.row),
        }),
    ))
}

pub async fn list_tokens(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<Vec<AgentTokenView>>> {
    let team = principal.team()?;
    let tokens = state.hub.agent_tokens(&team.team_id).await?;
    Ok(Json(tokens.iter().map(|t| token_view(&state, t)).collect()))
}

pub async fn delete_token(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    TeamItemPath(id): TeamItemPath,
) -> ApiResult<StatusCode> {
    let team = principal.team()?;
    let caller = Caller::of(&principal, &client);
    state
        .hub
        .delete_agent_token(caller.who(), &team.team_id, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<Vec<AgentView>>> {
    let team = principal.team()?;
    let agents = state.hub.agents(&team.team_id).await?;
    Ok(Json(agents.iter().map(|a| agent_view(&state, a)).collect()))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    AgentPath(agent): AgentPath,
) -> ApiResult<Json<AgentView>> {
    let team = principal.team()?;
    let a = state.hub.agent(&team.team_id, &agent).await?;
    Ok(Json(agent_view(&state, &a)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAgentInstance {
    /// The instance's name: 2 to 40 of a-z, 0-9 and '-', unique on the
    /// platform (its host name).
    pub name: String,
}

/// Makes the agent's Node-RED an instance of the hub, reached through the
/// agent's connection with the same role checks and route rules as any
/// instance. An Owner's choice: it opens a site's Node-RED to the team.
pub async fn create_instance(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    AgentPath(agent): AgentPath,
    Body(req): Body<NewAgentInstance>,
) -> ApiResult<(StatusCode, Json<super::instances::InstanceView>)> {
    let team = principal.team()?;
    let caller = Caller::of(&principal, &client);
    let instance = state
        .hub
        .create_agent_instance(
            caller.who(),
            &team.team_id,
            &principal.user_id,
            &req.name,
            &agent,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(super::instances::view(&state, &instance).await?),
    ))
}

pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    AgentPath(agent): AgentPath,
) -> ApiResult<Json<AgentView>> {
    let team = principal.team()?;
    let caller = Caller::of(&principal, &client);
    let a = state
        .hub
        .revoke_agent(caller.who(), &team.team_id, &agent)
        .await?;
    Ok(Json(agent_view(&state, &a)))
}

pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    AgentPath(agent): AgentPath,
) -> ApiResult<StatusCode> {
    let team = principal.team()?;
    let caller = Caller::of(&principal, &client);
    state
        .hub
        .delete_agent(caller.who(), &team.team_id, &agent)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn command(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    AgentPath(agent): AgentPath,
    Body(command): Body<AgentCommand>,
) -> ApiResult<(StatusCode, Json<AgentCommandView>)> {
    let team = principal.team()?;
    let caller = Caller::of(&principal, &client);
    let row = state
        .hub
        .send_agent_command(
            caller.who(),
            &team.team_id,
            &agent,
            Some(&principal.user_id),
            &command,
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(command_view(&row))))
}

pub async fn deployments(
    State(state): State<AppState>,
    principal: Principal,
    AgentPath(agent): AgentPath,
) -> ApiResult<Json<Vec<DeploymentView>>> {
    let team = principal.team()?;
    let a = state.hub.agent(&team.team_id, &agent).await?;
    let list = state.hub.agent_deployments(&a).await?;
    Ok(Json(list.iter().map(deployment_view).collect()))
}

/// A line of a site's log, as the agent kept and delivered it.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentLogLineView {
    /// When the site wrote it, by the site's clock.
    pub at: String,
    /// When the hub stored it (later than `at` for lines kept offline).
    pub received_at: String,
    /// `agent`, `node-red` (Node-RED's standard output) or
    /// `node-red-stderr`.
    pub source: String,
    pub text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentLogQuery {
    lines: Option<i64>,
}

pub async fn logs(
    State(state): State<AppState>,
    principal: Principal,
    AgentPath(agent): AgentPath,
    Query(q): Query<AgentLogQuery>,
) -> ApiResult<Json<Vec<AgentLogLineView>>> {
    let team = principal.team()?;
    let a = state.hub.agent(&team.team_id, &agent).await?;
    let lines = state.hub.agent_logs(&a, q.lines.unwrap_or(100)).await?;
    Ok(Json(
        lines
            .into_iter()
            .map(|l| AgentLogLineView {
                at: rfc3339(l.at),
                received_at: rfc3339(l.received_at),
                source: l.source,
                text: l.line,
            })
            .collect(),
    ))
}

pub async fn get_command(
    State(state): State<AppState>,
    principal: Principal,
    TeamItemPath(id): TeamItemPath,
) -> ApiResult<Json<AgentCommandView>> {
    let team = principal.team()?;
    let c = state.hub.agent_command(&team.team_id, &id).await?;
    Ok(Json(command_view(&c)))
}

/// An agent enrols itself: public, since the one-time token is its proof.
pub async fn enrol(
    State(state): State<AppState>,
    client: ClientInfo,
    Body(req): Body<EnrolRequest>,
) -> ApiResult<(StatusCode, Json<EnrolAnswer>)> {
    let agent = state.hub.enrol_agent(&client.origin(), &req).await?;
    let key = state.hub.signing_key().await?;
    Ok((
        StatusCode::CREATED,
        Json(EnrolAnswer {
            agent_id: agent.id,
            team_id: agent.team_id,
            name: agent.name,
            hub_signing_key: key.public_key().to_base64(),
        }),
    ))
}

pub fn routes() -> Vec<Route> {
    use Method as M;
    use Permission as P;
    vec![
        public(
            M::POST,
            ENROL_PATH,
            "A remote agent enrols with a one-time provisioning token and the public key it made",
            enrol,
        )
        .status(201)
        .request(schema::<EnrolRequest>())
        .response(schema::<EnrolAnswer>()),
        public(
            M::GET,
            super::agent_relay::RELAY_PATH,
            "Another hub replica asks for a stream of an agent's tunnel held here \
             (an upgrade with a relay token only replicas can make)",
            super::agent_relay::relay,
        )
        .status(101),
        public(
            M::GET,
            CONNECT_PATH,
            "A remote agent's one connection (WebSocket): it answers the hub's \
             challenge with its key's signature, then heartbeats and commands",
            super::agent_gateway::connect,
        )
        .status(101),
        needs(
            M::POST,
            "/api/v1/teams/{team}/agent-tokens",
            P::AgentsManage,
            "A one-time provisioning token for a new agent, with its bundle (shown once)",
            create_token,
        )
        .status(201)
        .request(schema::<NewAgentToken>())
        .response(schema::<ProvisionedToken>()),
        needs(
            M::GET,
            "/api/v1/teams/{team}/agent-tokens",
            P::AgentsManage,
            "The team's unused provisioning tokens (never the tokens)",
            list_tokens,
        )
        .response(list_of::<AgentTokenView>()),
        needs(
            M::DELETE,
            "/api/v1/teams/{team}/agent-tokens/{id}",
            P::AgentsManage,
            "Withdraw an unused provisioning token",
            delete_token,
        )
        .status(204),
        needs(
            M::GET,
            "/api/v1/teams/{team}/agents",
            P::AgentsRead,
            "The team's remote agents, online or not",
            list,
        )
        .response(list_of::<AgentView>()),
        needs(
            M::GET,
            "/api/v1/teams/{team}/agents/{agent}",
            P::AgentsRead,
            "One agent, by id or name",
            get,
        )
        .response(schema::<AgentView>()),
        needs(
            M::GET,
            "/api/v1/teams/{team}/agents/{agent}/deployments",
            P::AgentsRead,
            "The snapshots deployed to the agent, newest first, and how each went",
            deployments,
        )
        .response(list_of::<DeploymentView>()),
        needs(
            M::GET,
            "/api/v1/teams/{team}/agents/{agent}/logs",
            P::AgentsRead,
            "The site's newest log lines (the agent's and its Node-RED's), kept at the site while the link was down",
            logs,
        )
        .query(&[("lines", "integer", "1 to 5000, default 100")])
        .response(list_of::<AgentLogLineView>()),
        needs(
            M::POST,
            "/api/v1/teams/{team}/agents/{agent}/instance",
            P::AgentsManage,
            "Make the agent's Node-RED an instance of the hub, reached through the agent's connection",
            create_instance,
        )
        .status(201)
        .request(schema::<NewAgentInstance>())
        .response(schema::<super::instances::InstanceView>()),
        needs(
            M::POST,
            "/api/v1/teams/{team}/agents/{agent}/revoke",
            P::AgentsManage,
            "Revoke an agent: its connection closes at once, on every hub",
            revoke,
        )
        .response(schema::<AgentView>()),
        needs(
            M::DELETE,
            "/api/v1/teams/{team}/agents/{agent}",
            P::AgentsManage,
            "Delete an agent (its connection closes at once)",
            delete,
        )
        .status(204),
        needs(
            M::POST,
            "/api/v1/teams/{team}/agents/{agent}/commands",
            P::AgentsControl,
            "Send an agent a command, through whichever hub holds its connection",
            command,
        )
        .status(202)
        .request(schema::<AgentCommand>())
        .response(schema::<AgentCommandView>()),
        needs(
            M::GET,
            "/api/v1/teams/{team}/agent-commands/{id}",
            P::AgentsRead,
            "A command and, once given, the agent's answer",
            get_command,
        )
        .response(schema::<AgentCommandView>()),
    ]
}

//! The identity-aware proxy in front of every instance.
//!
//! A request reaches an instance by host name (`{name}.{instances.domain}`)
//! or by path (`/i/{name}/...`). Under `/editor` Redwall decides from the
//! caller's team role (Owner and Member: full, Viewer: read-only, others
//! refused) and adds a short-lived editor token; everywhere else the
//! instance's ordered route rules decide, and Redwall adds an endpoint
//! token. Anything the client sent in our header names is removed first,
//! and so are Redwall's own credentials, which flows must never see.

pub use redwall_hub::credentials;
pub mod endpoints;
pub mod forward;
pub mod handoff;
pub mod hygiene;
pub mod limits;
pub mod relay;
pub mod tunnels;
pub mod upstream;

use crate::auth::guard::{authorize_any, CsrfMode};
use crate::error::{ApiError, ApiResult};
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::extract::Request;
use axum::http::uri::PathAndQuery;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
pub use forward::Served;
use forward::{forward, Forward, Recheck};
use redwall_policy::audit_event::AuditEvent;
use redwall_policy::permission::Permission;
use redwall_policy::route_policy::is_clean_path;
use redwall_runtime::{
    mint_editor_token, mint_endpoint_token, EditorPermission, EDITOR_TOKEN_HEADER,
    ENDPOINT_TOKEN_HEADER,
};
use serde_json::json;
use std::sync::Arc;

/// Node-RED's admin root, as the generated settings set it.
pub const EDITOR_ROOT: &str = "/editor";
/// Lifetime of the editor and endpoint tokens Redwall adds to a request.
const TOKEN_SECS: i64 = 300;

#[derive(Clone, Copy)]
pub(crate) enum TokenKind {
    /// For `/editor/`: the editor token.
    Editor(EditorPermission),
    Endpoint,
}

/// Whom a cached token names: the instance's id, the kind of token and the
/// user. A tuple, not a `format!`ed string: building it is a copy of the id
/// (the user name is moved in), not a pass through the formatting machinery.
pub type MintKey = (String, &'static str, Option<String>);

// Parsed once: inserting by a `&str` name parses it and copies it into a
// new allocation on every request.
const EDITOR_TOKEN: HeaderName = HeaderName::from_static(EDITOR_TOKEN_HEADER);
const ENDPOINT_TOKEN: HeaderName = HeaderName::from_static(ENDPOINT_TOKEN_HEADER);

/// A token for this instance and caller, reused for a minute of its five
/// (the instance remembers tokens it has checked, so reuse saves it an HMAC
/// and a parse per request). Kept as the header value itself: a clone of it
/// shares its bytes.
pub(crate) fn minted_token(
    state: &AppState,
    target: &InstanceTarget,
    kind: TokenKind,
    username: Option<String>,
) -> Option<HeaderValue> {
    let tag = match kind {
        TokenKind::Editor(EditorPermission::Full) => "a*",
        TokenKind::Editor(EditorPermission::Read) => "ar",
        TokenKind::Endpoint => "e",
    };
    let key: MintKey = (target.id.clone(), tag, username);
    let now = state.now();
    if let Some(token) = state.minted_tokens.get(&key, now) {
        return Some(token);
    }
    let username = key.2.as_deref();
    let exp = unix_now() + TOKEN_SECS;
    let token = match kind {
        TokenKind::Editor(perm) => mint_editor_token(
            &target.editor_secret,
            &target.id,
            username.unwrap_or(""),
            perm,
            exp,
        ),
        TokenKind::Endpoint => {
            mint_endpoint_token(&target.endpoint_secret, &target.id, username, exp)
        }
    };
    let token = HeaderValue::from_str(&token).ok()?;
    state.minted_tokens.insert(key, token.clone(), now);
    Some(token)
}

/// Tokens are checked by Node-RED against the real clock, so they are
/// minted against it too (not the injectable one).
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub use crate::state::InstanceTarget;

/// Where a request is headed, when it is for an instance.
pub struct Located {
    name: String,
    /// The request's path and query. A clone of the request's own (it
    /// shares its bytes), so locating copies no path.
    target: PathAndQuery,
    /// Where the path the instance sees starts in `target`: after
    /// `/i/{name}` under path routing, else 0.
    start: usize,
}

impl Located {
    /// The path and query the instance sees.
    fn path_and_query(&self) -> &str {
        self.target.as_str().get(self.start..).unwrap_or("/")
    }

    /// `/i/{name}` under path routing.
    fn prefix(&self) -> Option<&str> {
        (self.start > 0)
            .then(|| self.target.as_str().get(..self.start))
            .flatten()
    }
}

/// Whether a request is for an instance: `None` when it is for the API;
/// an answer when it must be redirected first. Every request passes here,
/// so nothing is allocated unless it is for an instance.
pub fn locate(state: &AppState, request: &Request) -> Option<Result<Located, Response>> {
    let config = &state.config.instances;
    let target = || {
        request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"))
    };
    if let Some(domain) = state.config.instance_domain() {
        let host = crate::net::authority::host(request.headers());
        if let Some(label) = host.and_then(|h| instance_label(h, domain)) {
            return Some(Ok(Located {
                name: label.to_ascii_lowercase(),
                target: target(),
                start: 0,
            }));
        }
    }
    if !config.path_routing {
        return None;
    }
    let rest = request.uri().path().strip_prefix("/i/")?;
    let Some((name, _)) = rest.split_once('/') else {
        if rest.is_empty() {
            return None;
        }
        // "/i/name" → "/i/name/", so relative links in pages resolve.
        return Some(Err(
            Redirect::permanent(&format!("/i/{rest}/")).into_response()
        ));
    };
    if name.is_empty() {
        return None;
    }
    // The instance sees what follows "/i/{name}": "/{tail}" and the query.
    Some(Ok(Located {
        name: name.to_string(),
        target: target(),
        start: "/i/".len() + name.len(),
    }))
}

/// The label of `host` when it is `{label}.{domain}`, as lowercasing the
/// host and stripping the domain would find it, without lowercasing the
/// whole host (this runs on every request, the API's too).
fn instance_label<'h>(host: &'h str, domain: &str) -> Option<&'h str> {
    let split = host.len().checked_sub(domain.len())?;
    let tail = host.get(split..)?;
    if !tail
        .bytes()
        .map(|b| b.to_ascii_lowercase())
        .eq(domain.bytes())
    {
        return None;
    }
    let label = host.get(..split)?.strip_suffix('.')?;
    (!label.is_empty() && !label.contains('.')).then_some(label)
}

/// Serves a request `locate` found to be for an instance.
pub async fn serve(
    state: &AppState,
    located: Located,
    client: ClientInfo,
    mut request: Request,
) -> Served {
    // `/i/{name}/` lives on the console's origin, so it is for machines
    // only: no browser cookie is honoured there (a page there must never act
    // as the visitor), and whatever the instance answers is sandboxed into an
    // opaque origin that cannot read the console or its cookies.
    let on_console_origin = located.prefix().is_some();
    if on_console_origin {
        request.headers_mut().remove(header::COOKIE);
    }
    let mut answer = match handle(state, located, client, request).await {
        Ok(r) => r,
        Err(e) => Served::ours(e.into_response()),
    };
    if on_console_origin {
        answer.response.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox"),
        );
    }
    answer
}

pub async fn load_target(state: &AppState, name: &str) -> ApiResult<Option<Arc<InstanceTarget>>> {
    Ok(state.hub.instance_target(name).await?)
}

async fn handle(
    state: &AppState,
    located: Located,
    client: ClientInfo,
    mut request: Request,
) -> ApiResult<Served> {
    let path_and_query = located.path_and_query();
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query, |(p, _)| p);
    if !is_clean_path(path) {
        return Err(ApiError::bad_request(
            "invalid_path",
            "the path holds dot segments, empty segments or encoded separators",
        ));
    }
    let Some(target) = load_target(state, &located.name).await? else {
        return Err(ApiError::not_found());
    };
    let fwd = Forward {
        via: via(state, &target).await,
        path_and_query,
        location_prefix: located.prefix(),
        max_body: state.config.instances.max_body_bytes,
        sockets: limits::Claim::new(&target.id, client.ip, &state.config.instances),
        upgrade_within: std::time::Duration::from_secs(state.config.instances.upgrade_answer_secs),
        instance_may_challenge: false,
    };
    let by_host = located.prefix().is_none();
    if by_host {
        if path.starts_with(handoff::RESERVED_PREFIX) {
            let answer = redwall_path(state, &target, path, path_and_query, &client);
            return Ok(Served::ours(answer));
        }
        handoff::unwrap_pass(state, request.headers_mut(), &target.name, client.https);
    }
    // Browsers always send Origin on a WebSocket handshake and the
    // handshake is a GET, so CSRF checks do not see it: refuse pages of
    // other sites opening sockets with the user's cookies.
    if forward::is_websocket(&request) && !crate::auth::csrf::origin_matches_host(request.headers())
    {
        return Err(ApiError::forbidden(
            "a page of another site may not open this socket",
        ));
    }
    let is_editor = path == EDITOR_ROOT || path.starts_with("/editor/");
    if is_editor && by_host && wants_login(state, &request, client.https) {
        return Ok(Served::ours(login_redirect(
            state,
            &target.name,
            path_and_query,
        )));
    }
    // The access phase is the only one that differs between the editor and
    // the endpoints.
    let (mut parts, body) = request.into_parts();
    let admitted = if is_editor {
        // The guard reads the client from the request, as the API's layers
        // leave it there.
        parts.extensions.insert(client.clone());
        admit_editor(state, &target, &client, &parts).await?
    } else {
        match endpoints::admit(state, &target, &client, path, &parts).await? {
            Ok(admitted) => admitted,
            Err(refusal) => return Ok(Served::ours(refusal)),
        }
    };
    Ok(pass_on(state, &target, &client, fwd, parts, body, admitted).await)
}

/// Where the instance is reached: its port here, or its agent's tunnel,
/// here or through the replica that holds it.
async fn via(state: &AppState, target: &InstanceTarget) -> upstream::Via {
    let Some(agent) = &target.agent_id else {
        return upstream::Via::Port(target.port);
    };
    if let Some(tunnel) = state.tunnels.get(agent) {
        return upstream::Via::Agent(Some(tunnel));
    }
    match state.hub.relay_for(&target.team_id, agent).await {
        Ok(Some(relay)) => upstream::Via::Relay {
            agent_id: agent.clone(),
            target: relay,
        },
        Ok(None) => {
            tracing::debug!(agent = %agent, "no replica holds the agent's connection");
            upstream::Via::Agent(None)
        }
        Err(e) => {
            tracing::warn!(error = %e, "where an agent is connected could not be read");
            upstream::Via::Agent(None)
        }
    }
}

/// What the access phase decided: how the request goes on to the instance.
pub(crate) struct Admitted {
    /// The token Redwall adds for the instance, and whom it names.
    pub token: TokenKind,
    pub username: Option<String>,
    /// What of the client's `Authorization` the instance may see.
    pub authorization: hygiene::Authorization,
    /// The instance may answer with its own authentication challenge.
    pub instance_may_challenge: bool,
    /// For a WebSocket: judged again every second while it is open.
    pub recheck: Option<Recheck>,
    /// Added to the answer (a renewed device cookie).
    pub set_cookie: Option<HeaderValue>,
}

/// The phases after access, the same for the editor and the endpoints:
/// the upstream request (our headers and credentials stripped, forwarding
/// headers set, the instance's token added), forwarding, then the answer.
/// Counting and logging are the front door's, for every request alike.
async fn pass_on(
    state: &AppState,
    target: &InstanceTarget,
    client: &ClientInfo,
    mut fwd: Forward<'_>,
    mut parts: axum::http::request::Parts,
    body: axum::body::Body,
    admitted: Admitted,
) -> Served {
    hygiene::prepare_request(&mut parts.headers, client, admitted.authorization);
    let header_name = match admitted.token {
        TokenKind::Editor(_) => EDITOR_TOKEN,
        TokenKind::Endpoint => ENDPOINT_TOKEN,
    };
    if let Some(v) = minted_token(state, target, admitted.token, admitted.username) {
        parts.headers.insert(header_name, v);
    }
    fwd.instance_may_challenge = admitted.instance_may_challenge;
    let mut answer = forward(
        &state.upstream,
        fwd,
        Request::from_parts(parts, body),
        admitted.recheck,
    )
    .await;
    if let Some(cookie) = admitted.set_cookie {
        answer
            .response
            .headers_mut()
            .append(header::SET_COOKIE, cookie);
    }
    answer
}

/// The access phase of the editor and Node-RED's admin API: the caller's
/// team role decides.
async fn admit_editor(
    state: &AppState,
    target: &Arc<InstanceTarget>,
    client: &ClientInfo,
    parts: &axum::http::request::Parts,
) -> ApiResult<Admitted> {
    // The team's address ranges guard its instances' editors too.
    if !target.team_ranges.admits(client.ip) {
        return Err(ApiError::forbidden(
            "your address is outside the ranges allowed here",
        ));
    }
    let access = editor_access(state, target, parts).await;
    let (principal, permission) = match access {
        Ok(ok) => ok,
        Err(e) => {
            if e.status == StatusCode::FORBIDDEN || e.status == StatusCode::NOT_FOUND {
                crate::audit::record_instance_refusal(
                    state,
                    &target.team_id,
                    &target.name,
                    client,
                    AuditEvent::InstanceEditorDenied,
                    None,
                    json!({ "path": parts.uri.path(), "code": e.code }),
                )
                .await?;
            }
            return Err(e);
        }
    };
    let perm = if permission == Permission::InstanceEditorWrite {
        EditorPermission::Full
    } else {
        EditorPermission::Read
    };
    if perm == EditorPermission::Read && !parts.method.is_safe() {
        // Node-RED would refuse it too (as 401, which tells a read-only
        // user to log in again); say what it is, and record it.
        crate::audit::record_instance_refusal(
            state,
            &target.team_id,
            &target.name,
            client,
            AuditEvent::InstanceEditorDenied,
            Some(&principal.actor()),
            json!({ "path": parts.uri.path(), "method": parts.method.as_str(), "code": "editor_read_only" }),
        )
        .await?;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "editor_read_only",
            "your role gives read-only access to this editor",
        ));
    }
    let recheck = forward::is_websocket_parts(parts).then(|| {
        let state = state.clone();
        let target = target.clone();
        let parts = parts_for_recheck(parts);
        let f: Recheck = Box::new(move || {
            let state = state.clone();
            let target = target.clone();
            let parts = parts.clone();
            Box::pin(async move {
                matches!(editor_access(&state, &target, &parts).await, Ok((_, p)) if p == permission)
            })
        });
        f
    });
    // The credential is judged again later from the copy taken above; the
    // instance itself never sees it.
    Ok(Admitted {
        token: TokenKind::Editor(perm),
        username: Some(principal.username),
        authorization: hygiene::Authorization::Drop,
        instance_may_challenge: false,
        recheck,
        set_cookie: None,
    })
}

async fn editor_access(
    state: &AppState,
    target: &InstanceTarget,
    parts: &axum::http::request::Parts,
) -> ApiResult<(crate::auth::principal::Principal, Permission)> {
    authorize_any(
        state,
        &[
            Permission::InstanceEditorWrite,
            Permission::InstanceEditorRead,
        ],
        parts,
        Some(target.team_id.clone()),
        CsrfMode::OriginOnly,
    )
    .await
}

/// What a later re-check needs: the headers that carry the credential.
pub(crate) fn parts_for_recheck(
    parts: &axum::http::request::Parts,
) -> Arc<axum::http::request::Parts> {
    let mut builder = axum::http::Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone());
    for (k, v) in &parts.headers {
        builder = builder.header(k, v);
    }
    let (mut p, _) = builder.body(()).unwrap_or_default().into_parts();
    if let Some(c) = parts.extensions.get::<ClientInfo>() {
        p.extensions.insert(c.clone());
    }
    Arc::new(p)
}

/// `/_redwall/...` on an instance host: Redwall's own pages, never Node-RED.
fn redwall_path(
    state: &AppState,
    target: &InstanceTarget,
    path: &str,
    path_and_query: &str,
    client: &ClientInfo,
) -> Response {
    if path != handoff::CALLBACK_PATH {
        return ApiError::not_found().into_response();
    }
    let query = path_and_query.split_once('?').map_or("", |(_, q)| q);
    let param = |name: &str| url_param(query, name);
    let code = param("code").unwrap_or_default();
    let Some(console_token) = handoff::redeem_code(state, &code, &target.name) else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "handoff_invalid",
            "the login link is invalid, used or expired; open the instance again",
        )
        .into_response();
    };
    let next = redwall_policy::redirect::local_path_or(param("next").as_deref(), "/editor/");
    let mut r = Redirect::to(&next).into_response();
    if let Some(cookie) = handoff::pass_cookie(state, &console_token, &target.name, client.https) {
        r.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    r
}

fn url_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Where a browser finds the console: `server.public_url`, else, on a
/// loopback listener, `localhost` on Redwall's own port.
fn console_url(state: &AppState) -> Option<String> {
    if let Some(u) = &state.config.server.public_url {
        return Some(u.clone());
    }
    let listen = state.config.server.listen;
    listen.ip().is_loopback().then(|| {
        let scheme = if state.tls { "https" } else { "http" };
        format!("{scheme}://localhost:{}", listen.port())
    })
}

/// A browser opening the editor without any credential is sent to log in,
/// when Redwall knows where its console is.
fn wants_login(state: &AppState, request: &Request, https: bool) -> bool {
    let h = request.headers();
    request.method() == axum::http::Method::GET
        && console_url(state).is_some()
        && !h.contains_key(header::AUTHORIZATION)
        && crate::auth::session::cookie_token(h, https).is_none()
        && h.get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
}

fn login_redirect(state: &AppState, name: &str, path_and_query: &str) -> Response {
    let console = console_url(state).unwrap_or_default();
    let next = handoff::encode_component(path_and_query);
    Redirect::to(&format!(
        "{console}/api/v1/instance-login?instance={name}&next={next}"
    ))
    .into_response()
}

//! OpenID Connect login and logout over HTTP (the flow itself is in
//! `sso::oidc`). Every failure is audited with its reason; the client gets
//! a generic answer. Refusals any anonymous client can cause at will (before
//! the provider vouched for anyone) are audited in aggregate, and both
//! `/start` and `/callback` are throttled per client address.

use crate::auth::principal::Principal;
use crate::auth::session;
use crate::error::{ApiError, ApiResult};
use crate::net::client::ClientInfo;
use crate::sso::config::OidcProvider;
use crate::sso::login::{self, fail, record_failure};
use crate::sso::oidc::{
    self, PendingLogin, LOGIN_COOKIE_SECS, PLAIN_LOGIN_COOKIE, SECURE_LOGIN_COOKIE,
    USED_STATES_PER_CLIENT,
};
use crate::state::AppState;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use redwall_store::OidcStateUse;
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;

const MAX_QUERY: usize = 8192;

#[derive(Serialize, utoipa::ToSchema)]
pub struct OidcLogout {
    /// Send the browser here to end the provider's session too; null when
    /// the provider offers no RP-initiated logout (or could not be reached).
    pub logout_url: Option<String>,
}

fn provider<'a>(state: &'a AppState, name: &str) -> Option<&'a OidcProvider> {
    state.config.sso.oidc.iter().find(|p| p.name == name)
}

/// A provider name fit for the audit log (the path is the client's).
fn shown(name: &str) -> String {
    name.chars().take(64).collect()
}

/// Query parameters, each at most once and within `limits`; `None` when
/// the query is oversize or malformed.
fn params(query: Option<&str>, limits: &[(&str, usize)]) -> Option<HashMap<String, String>> {
    let q = query.unwrap_or("");
    if q.len() > MAX_QUERY {
        return None;
    }
    let mut out = HashMap::new();
    for (k, v) in openidconnect::url::form_urlencoded::parse(q.as_bytes()) {
        // Unknown parameters (providers add session_state, scope, ...) are ignored.
        let Some((_, max)) = limits.iter().find(|(name, _)| *name == k) else {
            continue;
        };
        if v.len() > *max || v.chars().any(char::is_control) {
            return None;
        }
        if out.insert(k.into_owned(), v.into_owned()).is_some() {
            return None;
        }
    }
    Some(out)
}

/// Audits, in aggregate, a refusal any anonymous client can cause (see
/// `sso::refusals`), and gives the generic 401.
async fn refuse(
    state: &AppState,
    client: &ClientInfo,
    provider: &str,
    reason: &'static str,
    extra: serde_json::Value,
) -> ApiError {
    match crate::sso::refusals::record(state, client, provider, reason, extra).await {
        Ok(()) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "sso_failed",
            "single sign-on did not succeed; try again or ask an administrator",
        ),
        Err(e) => e,
    }
}

async fn bad_request(
    state: &AppState,
    client: &ClientInfo,
    provider: &str,
    what: &'static str,
) -> ApiError {
    let e = refuse(
        state,
        client,
        provider,
        "bad_request",
        json!({ "what": what }),
    )
    .await;
    if e.status != StatusCode::UNAUTHORIZED {
        return e;
    }
    ApiError::bad_request("bad_oidc_request", format!("invalid {what}"))
}

/// `Err` (429, audited in aggregate) while this client address must wait
/// after failed callbacks.
async fn throttle(state: &AppState, client: &ClientInfo, provider: &str) -> ApiResult<()> {
    let Err(wait) = state.oidc.throttle.check_client(client.ip, state.now()) else {
        return Ok(());
    };
    state.hub.metrics.login_throttled();
    crate::sso::refusals::record(
        state,
        client,
        provider,
        "throttled",
        json!({ "retry_after_secs": wait }),
    )
    .await?;
    Err(ApiError::throttled(wait))
}

/// The provider could not be reached: audited, and said plainly.
async fn unavailable(
    state: &AppState,
    client: &ClientInfo,
    provider: &str,
    f: &oidc::Failure,
) -> ApiError {
    match record_failure(state, client, provider, f.reason, None, json!({})).await {
        Ok(()) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "provider_unavailable",
            "the identity provider could not be reached; try again later",
        ),
        Err(e) => e,
    }
}

async fn refused(
    state: &AppState,
    client: &ClientInfo,
    provider: &str,
    f: oidc::Failure,
) -> ApiError {
    tracing::warn!(provider, reason = f.reason, detail = %f.detail, "OpenID Connect login refused");
    if f.is_unavailable() {
        return unavailable(state, client, provider, &f).await;
    }
    fail(state, client, provider, f.reason, None).await
}

/// Our own origin as the browser sees it: `server.public_url`, or the
/// request's scheme and Host (the provider only redirects to registered
/// URIs, so a forged Host gains nothing).
fn origin(state: &AppState, client: &ClientInfo, headers: &HeaderMap) -> Option<String> {
    if let Some(u) = &state.config.server.public_url {
        return Some(u.clone());
    }
    let host = crate::net::authority::of(headers)?;
    let plausible = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    plausible.then(|| format!("{}://{host}", if client.https { "https" } else { "http" }))
}

fn login_cookie_name(https: bool) -> &'static str {
    if https {
        SECURE_LOGIN_COOKIE
    } else {
        PLAIN_LOGIN_COOKIE
    }
}

fn login_cookie(value: &str, https: bool, max_age: i64) -> ApiResult<HeaderValue> {
    let name = login_cookie_name(https);
    let secure = if https { "; Secure" } else { "" };
    // Lax: the provider's redirect back is a top-level GET, which carries it.
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    ))
    .map_err(ApiError::internal)
}

fn read_login_cookie(headers: &HeaderMap, https: bool) -> Option<String> {
    crate::net::cookies::value(headers, login_cookie_name(https))
}

fn see_other(location: &str) -> ApiResult<Response> {
    let location = HeaderValue::from_str(location).map_err(ApiError::internal)?;
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response())
}

/// `GET /api/v1/auth/oidc/{provider}/start?next=/path`
pub async fn start(
    State(state): State<AppState>,
    client: ClientInfo,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let Some(p) = provider(&state, &name) else {
        return Err(ApiError::not_found());
    };
    // A start keeps nothing on the server, but an address that keeps
    // failing callbacks gets no new login to fail with.
    throttle(&state, &client, &p.name).await?;
    let Some(q) = params(query.as_deref(), &[("next", 1024)]) else {
        state
            .oidc
            .throttle
            .record_client_failure(client.ip, state.now());
        return Err(bad_request(&state, &client, &p.name, "query").await);
    };
    let next = q.get("next").cloned().unwrap_or_else(|| "/".into());
    if !redwall_policy::redirect::is_local_path(&next) {
        state
            .oidc
            .throttle
            .record_client_failure(client.ip, state.now());
        return Err(bad_request(&state, &client, &p.name, "next").await);
    }
    let Some(origin) = origin(&state, &client, &headers) else {
        return Err(bad_request(&state, &client, &p.name, "host").await);
    };
    let redirect_uri = format!("{origin}/api/v1/auth/oidc/{}/callback", p.name);
    let started = match oidc::start(&state.oidc, p, redirect_uri, next, state.now()).await {
        Ok(s) => s,
        Err(f) => return Err(refused(&state, &client, &p.name, f).await),
    };
    let sealed = started
        .pending
        .seal(&state.keyring)
        .map_err(ApiError::internal)?;
    let mut r = see_other(&started.authorize_url)?;
    r.headers_mut().append(
        header::SET_COOKIE,
        login_cookie(&sealed, client.https, LOGIN_COOKIE_SECS)?,
    );
    Ok(r)
}

/// `GET /api/v1/auth/oidc/{provider}/callback?code&state` (or `error`).
pub async fn callback(
    State(state): State<AppState>,
    client: ClientInfo,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let mut r = match finish(&state, &client, &name, query.as_deref(), &headers).await {
        Ok(r) => r,
        Err(e) => {
            // Every callback that logs nobody in counts against the address,
            // except a wait already imposed and the provider being down.
            let counted = e.status != StatusCode::TOO_MANY_REQUESTS && !e.status.is_server_error();
            if counted {
                state
                    .oidc
                    .throttle
                    .record_client_failure(client.ip, state.now());
            }
            e.into_response()
        }
    };
    if wants_html(&headers) {
        r = for_browser(r, client.https).await;
    }
    // Whatever happened, this login attempt is over.
    if let Ok(clear) = login_cookie("", client.https, 0) {
        r.headers_mut().append(header::SET_COOKIE, clear);
    }
    r
}

/// A browser navigation (rather than a script) asked for this page.
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// The callback's answer as the console shows it: a refusal goes back to
/// the login page with a fixed message (the reason is in the audit log), an
/// MFA challenge goes to the console's code step with the challenge in a
/// short-lived cookie (never in a URL).
async fn for_browser(r: Response, https: bool) -> Response {
    if r.status().is_redirection() {
        return r;
    }
    if !r.status().is_success() {
        return see_other("/login?error=sso_failed").unwrap_or(r);
    }
    let next = r
        .extensions()
        .get::<LoginNext>()
        .map(|n| n.0.clone())
        .unwrap_or_else(|| "/".into());
    let body = match http_body_util::BodyExt::collect(r.into_body()).await {
        Ok(b) => b.to_bytes(),
        Err(_) => return ApiError::internal("reading the login answer").into_response(),
    };
    let challenge = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("mfa_token")?.as_str().map(str::to_string));
    let Some(token) = challenge else {
        return see_other("/login?error=sso_failed").unwrap_or_else(|e| e.into_response());
    };
    let mut answer = see_other("/login/mfa").unwrap_or_else(|e| e.into_response());
    // The challenge is base64url: `!` cannot occur in it and may in a cookie.
    let next: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
    let value = format!("{token}!{next}");
    if let Ok(cookie) = session::mfa_challenge_cookie(&value, https, MFA_COOKIE_SECS) {
        answer.headers_mut().append(header::SET_COOKIE, cookie);
    }
    answer
}

/// Where a login was headed, carried from the callback to its browser answer.
#[derive(Clone)]
struct LoginNext(String);

/// As long as the challenge itself is good for.
const MFA_COOKIE_SECS: i64 = 300;

async fn finish(
    state: &AppState,
    client: &ClientInfo,
    name: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let Some(p) = provider(state, name) else {
        crate::sso::refusals::record(
            state,
            client,
            "-",
            "unknown_provider",
            json!({ "name": shown(name) }),
        )
        .await?;
        return Err(ApiError::not_found());
    };
    throttle(state, client, &p.name).await?;
    let limits = [
        ("code", 4096),
        ("state", 512),
        ("iss", 1024),
        ("error", 128),
        ("error_description", 1024),
    ];
    let Some(q) = params(query, &limits) else {
        return Err(bad_request(state, client, &p.name, "query").await);
    };
    let now = state.now();
    let pending = read_login_cookie(headers, client.https)
        .and_then(|c| PendingLogin::open(&state.keyring, &c, now))
        .filter(|l| l.provider == p.name);
    let (Some(pending), Some(returned)) = (pending, q.get("state")) else {
        return Err(refuse(state, client, &p.name, "bad_state", json!({})).await);
    };
    if !redwall_crypto::constant_time_eq(pending.state.as_bytes(), returned.as_bytes()) {
        return Err(refuse(state, client, &p.name, "bad_state", json!({})).await);
    }
    // RFC 9207: a provider that names itself must be the one we sent the user to.
    if q.get("iss").is_some_and(|iss| *iss != p.issuer) {
        return Err(refuse(state, client, &p.name, "wrong_issuer", json!({})).await);
    }
    if let Some(error) = q.get("error") {
        // Anyone can come back with an error for a login they started
        // themselves: nothing is recorded for the state (there is no code
        // to replay), and the refusal is audited in aggregate.
        let error: String = error
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "_-.".contains(*c))
            .take(64)
            .collect();
        return Err(refuse(
            state,
            client,
            &p.name,
            "provider_error",
            json!({ "error": error }),
        )
        .await);
    }
    let Some(code) = q.get("code").filter(|c| !c.is_empty()) else {
        return Err(bad_request(state, client, &p.name, "code").await);
    };
    // A code is accepted once per state, on whichever replica it arrives.
    let used = state
        .hub
        .use_oidc_state(
            &oidc::state_digest(&state.keyring, &pending.state),
            &oidc::client_key(client.ip),
            pending.expires,
            USED_STATES_PER_CLIENT,
        )
        .await?;
    match used {
        OidcStateUse::First => {}
        OidcStateUse::Replayed => {
            return Err(refuse(state, client, &p.name, "replayed_state", json!({})).await)
        }
        OidcStateUse::ClientFull => {
            return Err(refuse(state, client, &p.name, "too_many_logins", json!({})).await)
        }
    }
    let secret = match crate::sso::secrets::resolve(&state.keyring, &p.client_secret, |k| {
        std::env::var(k).ok()
    }) {
        Ok(s) => s,
        Err(why) => {
            tracing::error!(provider = %p.name, "OpenID Connect client secret: {why}");
            return Err(fail(state, client, &p.name, "client_secret_unavailable", None).await);
        }
    };
    let identity = match oidc::finish(&state.oidc, p, &secret, &pending, code, now).await {
        Ok(id) => id,
        Err(f) => return Err(refused(state, client, &p.name, f).await),
    };
    let policy = p.policy.resolve();
    let answer = login::complete(state, client, &policy, identity).await?;
    // A session was started: go where the user was headed, with its cookie.
    // Otherwise (MFA challenge) the JSON answer stands, remembering where
    // the user was headed for a browser's code step.
    let Some(cookie) = answer.headers().get(header::SET_COOKIE).cloned() else {
        let mut answer = answer;
        answer
            .extensions_mut()
            .insert(LoginNext(pending.next.clone()));
        return Ok(answer);
    };
    let mut r = see_other(&pending.next)?;
    r.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(r)
}

/// `POST /api/v1/auth/oidc/{provider}/logout`: ends the Redwall session and
/// says where to end the provider's. A POST (with the CSRF token), not a
/// GET, so another site cannot log people out by linking here.
pub async fn logout(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let Some(p) = provider(&state, &name) else {
        return Err(ApiError::bad_request(
            "unknown_provider",
            "no OpenID Connect provider has this name",
        ));
    };
    crate::api::auth::end_current_session(
        &state,
        &principal,
        &client,
        json!({ "provider": p.name }),
    )
    .await?;
    let logout_url = match oidc::end_session_url(
        &state.oidc,
        p,
        p.post_logout_redirect_url.as_deref(),
        state.now(),
    )
    .await
    {
        Ok(u) => u,
        Err(f) => {
            tracing::warn!(provider = %p.name, reason = f.reason, detail = %f.detail, "no RP-initiated logout");
            None
        }
    };
    Ok((
        [(header::SET_COOKIE, session::clear_cookie(client.https))],
        Json(OidcLogout { logout_url }),
    )
        .into_response())
}

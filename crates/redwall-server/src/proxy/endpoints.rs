//! The flows' own endpoints: the instance's ordered route rules decide.

use super::credentials::{check_api_key, check_basic, BasicCheck, KeyCheck};
use super::forward::{self, Recheck};
use super::hygiene::Authorization;
use super::{Admitted, InstanceTarget};
use crate::audit::{self, Actor};
use crate::auth::device::{self, Channel};
use crate::auth::session;
use crate::auth::throttle::{name_key, Attempt};
use crate::error::{ApiError, ApiResult};
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use redwall_policy::audit_event::AuditEvent;
use redwall_policy::route_policy::{
    decide, key_allows_path, match_rule, Presented, RouteDecision, RoutePolicy,
};
use serde_json::json;
use std::sync::Arc;

/// The verdict on one request, with who the caller turned out to be.
struct Verdict {
    decision: RouteDecision,
    username: Option<String>,
    /// The rule asked for a credential in the Authorization header.
    consumed_authorization: bool,
    /// Basic rules answer a missing credential with a challenge.
    basic: bool,
    /// A public rule: the instance owns authentication here.
    public: bool,
    /// A device cookie for a client that passed basic auth without one, so
    /// next time it keeps its own allowance through a flood.
    device_cookie: Option<HeaderValue>,
}

/// Parsed once: a `&str` name is parsed again by every lookup.
const X_API_KEY: header::HeaderName = header::HeaderName::from_static("x-api-key");

fn bearer_or_header_key(parts: &Parts) -> Option<&str> {
    if let Some(k) = parts.headers.get(X_API_KEY).and_then(|v| v.to_str().ok()) {
        return Some(k.trim());
    }
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::token::bearer)
}

fn basic_credentials(parts: &Parts) -> Option<(String, String)> {
    let v = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

async fn judge(
    state: &AppState,
    target: &InstanceTarget,
    client: &ClientInfo,
    path: &str,
    parts: &Parts,
    record_failures: bool,
) -> ApiResult<Verdict> {
    let matched = match_rule(&target.rules, parts.method.as_str(), path).map(|m| m.1);
    let mut username = None;
    let mut consumed = false;
    let mut device_cookie = None;
    let policy = matched.map(|r| &r.policy);
    let https = client.https;
    let presented = match policy {
        None | Some(RoutePolicy::Public) => Presented::Nothing,
        Some(RoutePolicy::Session { .. }) => match session::cookie_token(&parts.headers, https) {
            None => Presented::Nothing,
            Some(cookie) => match session::lookup(state, &cookie, client).await? {
                None => Presented::Nothing,
                Some(s)
                    if !parts.method.is_safe()
                        && !crate::auth::csrf::browser_says_same_origin(&parts.headers) =>
                {
                    let _ = s;
                    Presented::Session(None)
                }
                Some(s) => match state.hub.active_user(&s.user_id).await? {
                    None => Presented::Nothing,
                    Some(u) => {
                        username = Some(u.username);
                        Presented::Session(state.hub.membership(&target.team_id, &s.user_id).await?)
                    }
                },
            },
        },
        Some(RoutePolicy::ApiKey) => match bearer_or_header_key(parts) {
            None => Presented::Nothing,
            Some(key) => {
                consumed = true;
                let now = state.now();
                if let Err(wait) = state.hub.throttle.check_client(client.ip, now) {
                    if record_failures {
                        state
                            .hub
                            .record_refusal(
                                &client.origin(),
                                key_refusal(target, "throttled", json!({ "path": path })),
                            )
                            .await?;
                    }
                    return Err(ApiError::throttled(wait));
                }
                match check_api_key(&state.hub, &target.id, key).await? {
                    KeyCheck::Valid(key) => {
                        // Not `format!`: this runs on every request with a key.
                        let mut name = String::with_capacity("key:".len() + key.id.len());
                        name.push_str("key:");
                        name.push_str(&key.id);
                        username = Some(name);
                        Presented::ApiKey {
                            valid: true,
                            path_allowed: key_allows_path(key.path_prefix.as_deref(), path),
                        }
                    }
                    KeyCheck::Invalid => {
                        state.hub.throttle.record_client_failure(client.ip, now);
                        if record_failures {
                            state.hub.record_refusal(&client.origin(),
                                key_refusal(
                                    target,
                                    "invalid_key",
                                    json!({ "prefix": redwall_crypto::token::display_prefix(key), "path": path }),
                                ),
                            )
                            .await?;
                        }
                        Presented::ApiKey {
                            valid: false,
                            path_allowed: false,
                        }
                    }
                }
            }
        },
        Some(RoutePolicy::Basic { .. }) => match basic_credentials(parts) {
            None => Presented::Nothing,
            Some((user, password)) => {
                consumed = true;
                let now = state.now();
                // Its own channel: a flood here cannot lock the console
                // login, nor the other way round.
                let device =
                    device::read(state, &parts.headers, Channel::Endpoint, client.https, now);
                let mut attempt =
                    Attempt::new(client.ip, name_key(Channel::Endpoint, "local", &user));
                if device.is_none() {
                    state
                        .hub
                        .throttle
                        .check(&attempt, now)
                        .map_err(ApiError::throttled)?;
                }
                let checked = check_basic(
                    &state.hub,
                    &target.team_id,
                    &user,
                    &password,
                    &mut attempt,
                    device.as_ref(),
                )
                .await?;
                match checked {
                    BasicCheck::Throttled(wait) => return Err(ApiError::throttled(wait)),
                    BasicCheck::Valid(u) => {
                        state.hub.throttle.record_success(&attempt);
                        if !attempt.known() {
                            device_cookie = device::issue(
                                state,
                                Channel::Endpoint,
                                client.https,
                                &u.user_id,
                                None,
                                now,
                            );
                        }
                        username = Some(u.username);
                        Presented::Basic(Some(u.role))
                    }
                    BasicCheck::Invalid => {
                        state.hub.throttle.record_failure(&attempt, now);
                        if record_failures {
                            state
                                .hub
                                .record_refusal(
                                    &client.origin(),
                                    audit::Refusal {
                                        event: AuditEvent::InstanceBasicRejected,
                                        reason: "wrong_password",
                                        team_id: Some(&target.team_id),
                                        target: Some(format!("instance:{}", target.name)),
                                        actor: Some(&Actor::attempted(&user)),
                                        details: json!({ "path": path }),
                                    },
                                )
                                .await?;
                        }
                        Presented::Basic(None)
                    }
                }
            }
        },
    };
    Ok(Verdict {
        decision: decide(matched, client.ip, &target.team_ranges, presented),
        username,
        consumed_authorization: consumed,
        basic: matches!(policy, Some(RoutePolicy::Basic { .. })),
        public: matches!(policy, Some(RoutePolicy::Public)),
        device_cookie,
    })
}

/// A refused instance API key, for the aggregating recorder: a flood of
/// wrong keys from many addresses becomes a bounded number of entries.
fn key_refusal<'a>(
    target: &'a InstanceTarget,
    reason: &'static str,
    details: serde_json::Value,
) -> audit::Refusal<'a> {
    audit::Refusal {
        event: AuditEvent::InstanceKeyRejected,
        reason,
        team_id: Some(&target.team_id),
        target: Some(format!("instance:{}", target.name)),
        actor: None,
        details,
    }
}

fn refusal(v: &Verdict) -> Response {
    let (status, code, message) = match v.decision {
        RouteDecision::Allow => (StatusCode::OK, "", ""),
        RouteDecision::NoRule => (
            StatusCode::FORBIDDEN,
            "no_matching_rule",
            "no route rule of this instance allows this request",
        ),
        RouteDecision::AddressRefused => (
            StatusCode::FORBIDDEN,
            "address_refused",
            "your address is outside the ranges allowed here",
        ),
        RouteDecision::CredentialMissing => (
            StatusCode::UNAUTHORIZED,
            "credential_required",
            "this endpoint needs a credential",
        ),
        RouteDecision::CredentialInvalid => (
            StatusCode::UNAUTHORIZED,
            "credential_invalid",
            "the credential is wrong, revoked or expired",
        ),
        RouteDecision::Forbidden => (
            StatusCode::FORBIDDEN,
            "forbidden",
            "your credential does not allow this endpoint",
        ),
    };
    let mut r = ApiError::new(status, code, message).into_response();
    if v.basic && status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"redwall\", charset=\"UTF-8\""),
        );
    }
    r
}

/// The access phase of every request outside the editor: the instance's
/// route rules and the credential the matched rule asks for. `Err` holds
/// the refusal to answer.
pub(crate) async fn admit(
    state: &AppState,
    target: &Arc<InstanceTarget>,
    client: &ClientInfo,
    path: &str,
    parts: &Parts,
) -> ApiResult<Result<Admitted, Response>> {
    let verdict = judge(state, target, client, path, parts, true).await?;
    if verdict.decision != RouteDecision::Allow {
        return Ok(Err(refusal(&verdict)));
    }
    let recheck = forward::is_websocket_parts(parts).then(|| {
        let state = state.clone();
        let target = target.clone();
        let client = client.clone();
        let path = path.to_string();
        let saved = super::parts_for_recheck(parts);
        let f: Recheck = Box::new(move || {
            let (state, target, client, path, saved) = (
                state.clone(),
                target.clone(),
                client.clone(),
                path.clone(),
                saved.clone(),
            );
            Box::pin(async move {
                // The rules and the credential are judged again, so a
                // changed rule, a revoked key or an ended session closes it.
                let current = super::load_target(&state, &target.name)
                    .await
                    .ok()
                    .flatten();
                let Some(current) = current else { return false };
                matches!(
                    judge(&state, &current, &client, &path, &saved, false).await,
                    Ok(v) if v.decision == RouteDecision::Allow
                )
            })
        });
        f
    });
    // Who owns authentication here (see `hygiene`): once any rule asks
    // for a Redwall password, basic credentials and challenges are ours on
    // the whole instance.
    let asks_passwords = target
        .rules
        .iter()
        .any(|r| matches!(r.policy, RoutePolicy::Basic { .. }));
    let authorization = if verdict.consumed_authorization {
        Authorization::Drop
    } else if asks_passwords {
        Authorization::NoBasic
    } else {
        Authorization::Foreign
    };
    Ok(Ok(Admitted {
        token: super::TokenKind::Endpoint,
        username: verdict.username,
        authorization,
        instance_may_challenge: verdict.public && !asks_passwords,
        recheck,
        set_cookie: verdict.device_cookie,
    }))
}

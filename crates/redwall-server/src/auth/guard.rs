//! The guard every route passes: authenticate, check CSRF, then ask the one
//! permission table. Handlers never decide a permission themselves.

use crate::audit::{self, Actor};
use crate::auth::principal::{Principal, Via};
use crate::auth::token::{bearer, invalid_token, TokenCheck};
use crate::auth::{csrf, session, token};
use crate::error::{ApiError, ApiResult};
use crate::net::client::ClientInfo;
use crate::state::{AppState, CachedUser};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use redwall_policy::access::{decide, Credential, Denial};
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_policy::permission::{Permission, PlatformRole};
use serde_json::json;

/// What a route requires. Every route in the table names one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No credential needed (health, login, setup, the API description).
    Public,
    /// A credential whose holder has this permission.
    Permission(Permission),
}

pub async fn enforce(
    State((state, access)): State<(AppState, Access)>,
    request: Request,
    next: Next,
) -> Response {
    let Access::Permission(permission) = access else {
        return next.run(request).await;
    };
    // Only the parts cross the awaits below: a request body is not Sync.
    let (mut parts, body) = request.into_parts();
    match authorize(&state, permission, &parts).await {
        Ok(principal) => {
            parts.extensions.insert(principal);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(e) => e.into_response(),
    }
}

async fn authorize(
    state: &AppState,
    permission: Permission,
    request: &Parts,
) -> ApiResult<Principal> {
    let client = request
        .extensions
        .get::<ClientInfo>()
        .cloned()
        .ok_or_else(|| ApiError::internal("client information missing"))?;
    let headers = &request.headers;
    let (user_id, via) = if let Some(value) = headers.get(header::AUTHORIZATION) {
        let presented = value.to_str().ok().and_then(bearer).unwrap_or("");
        authenticate_token(state, presented, &client).await?
    } else if let Some(cookie) = session::cookie_token(headers) {
        let Some(s) = session::lookup(state, &cookie, &client).await? else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "session_expired",
                "the session has ended; log in again",
            ));
        };
        if !request.method.is_safe()
            && !csrf::request_is_same_site(&state.keyring, &cookie, headers)
        {
            audit::record(
                state,
                Some(&Actor::user_id(&s.user_id)),
                &client,
                AuditEvent::CsrfRejected,
                Outcome::Denied,
                Some(request.uri.path().to_string()),
                json!({ "method": request.method.as_str() }),
            )
            .await?;
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf_failed",
                "the request lacks a valid X-CSRF-Token header or comes from another site",
            ));
        }
        let csrf_token = csrf::token_for_session(&state.keyring, &cookie);
        (
            s.user_id,
            Via::Session {
                session_id: s.id,
                csrf_token,
            },
        )
    } else {
        return Err(ApiError::unauthenticated());
    };

    let Some(user) = load_user(state, &user_id).await? else {
        return Err(ApiError::unauthenticated());
    };
    if user.suspended {
        return Err(ApiError::unauthenticated());
    }
    let settings = state.settings.get(&state.store, state.now()).await?;
    let role = if user.is_admin {
        PlatformRole::Admin
    } else {
        PlatformRole::User
    };
    let mfa_enrolment_pending = settings.require_mfa && !user.mfa_enabled;
    let credential = match &via {
        Via::Session { .. } => Credential::Session {
            mfa_enrolment_pending,
        },
        Via::Token { scope, .. } => Credential::Token { scope: *scope },
    };
    let principal = Principal {
        user_id,
        username: user.username,
        role,
        mfa_enabled: user.mfa_enabled,
        mfa_enrolment_pending,
        via,
    };
    if let Err(denial) = decide(role, credential, permission) {
        audit::record(
            state,
            Some(&Actor::of(&principal)),
            &client,
            AuditEvent::AccessDenied,
            Outcome::Denied,
            Some(request.uri.path().to_string()),
            json!({ "permission": permission.name(), "reason": denial, "method": request.method.as_str() }),
        )
        .await?;
        return Err(match denial {
            Denial::NotPermitted => {
                ApiError::forbidden(format!("this needs the permission {}", permission.name()))
            }
            Denial::TokenScope => ApiError::new(
                StatusCode::FORBIDDEN,
                "token_scope",
                format!("the token's scope does not include {}", permission.name()),
            ),
            Denial::MfaEnrolmentRequired => ApiError::new(
                StatusCode::FORBIDDEN,
                "mfa_enrolment_required",
                "multi-factor authentication is required: enrol at /api/v1/me/mfa first",
            ),
        });
    }
    Ok(principal)
}

async fn authenticate_token(
    state: &AppState,
    presented: &str,
    client: &ClientInfo,
) -> ApiResult<(String, Via)> {
    let now = state.now();
    // Wrong tokens count as failures of the client address, so guessing is throttled.
    if let Err(wait) = state.throttle.check_client(client.ip, now) {
        return Err(ApiError::throttled(wait));
    }
    match token::lookup(state, presented).await? {
        TokenCheck::Valid(t) => Ok((
            t.user_id,
            Via::Token {
                token_id: t.id,
                scope: t.scope,
            },
        )),
        outcome => {
            state.throttle.record_client_failure(client.ip, now);
            let reason = if matches!(outcome, TokenCheck::Expired) {
                "expired"
            } else {
                "unknown"
            };
            audit::record(
                state,
                None,
                client,
                AuditEvent::TokenRejected,
                Outcome::Failure,
                Some(redwall_crypto::token::display_prefix(presented)),
                json!({ "reason": reason }),
            )
            .await?;
            Err(invalid_token())
        }
    }
}

pub async fn load_user(state: &AppState, user_id: &str) -> ApiResult<Option<CachedUser>> {
    let now = state.now();
    let key = user_id.to_string();
    if let Some(u) = state.users.get(&key, now) {
        return Ok(Some(u));
    }
    let Some(user) = state.store.get_user(user_id).await? else {
        return Ok(None);
    };
    let cached = CachedUser {
        username: user.username,
        is_admin: user.is_admin,
        suspended: user.suspended,
        mfa_enabled: user.mfa_enabled,
    };
    state.users.insert(key, cached.clone(), now);
    Ok(Some(cached))
}

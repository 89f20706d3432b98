//! The guard every route passes: authenticate, check CSRF, resolve the team
//! the path addresses, then ask the one permission table. Handlers never
//! decide a permission themselves.

use crate::audit::{self, Actor};
use crate::auth::principal::{Principal, TeamAccess, Via};
use crate::auth::token::{bearer, invalid_token, TokenCheck};
use crate::auth::{csrf, session, token};
use crate::error::{ApiError, ApiResult};
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use redwall_policy::access::{decide, Caller, Credential, Denial, TokenTeam};
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_policy::permission::{Permission, PlatformRole};
use serde_json::json;

/// A platform admin reaches a team they are not in only by sending this
/// header with a reason; every such request is audited in the team's log.
pub const ADMIN_ACCESS_HEADER: &str = "x-redwall-admin-access";

/// The path parameter that names the addressed team.
pub const TEAM_PARAM: &str = "team";

/// What a route requires. Every route in the table names one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No credential needed (health, login, setup, the API description).
    Public,
    /// A credential whose holder has this permission (in the addressed team,
    /// for team permissions).
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
    let team = match team_param(&mut parts).await {
        Ok(team) => team,
        Err(e) => return e.into_response(),
    };
    match authorize_any(&state, &[permission], &parts, team, CsrfMode::Token).await {
        Ok((principal, _)) => {
            parts.extensions.insert(principal);
            next.run(Request::from_parts(parts, body)).await
        }
        Err(e) => e.into_response(),
    }
}

/// The `{team}` path parameter, when the route has one. Anything that cannot
/// be a team id is answered like a team that does not exist.
async fn team_param(parts: &mut Parts) -> ApiResult<Option<String>> {
    let Ok(params) = RawPathParams::from_request_parts(parts, &()).await else {
        return Ok(None);
    };
    match params.iter().find(|(name, _)| *name == TEAM_PARAM) {
        None => Ok(None),
        Some((_, id)) if crate::ids::looks_like_id(id) => Ok(Some(id.to_string())),
        Some(_) => Err(ApiError::not_found()),
    }
}

/// The credential's owner and how they proved it.
struct Authenticated {
    user_id: String,
    via: Via,
    token_permissions: Option<Vec<Permission>>,
}

/// How a cookie-authenticated write proves it comes from our own pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CsrfMode {
    /// The API: the session's CSRF token header, and no foreign Origin.
    Token,
    /// Proxied Node-RED pages, which cannot know our token: the browser's
    /// Origin (or Sec-Fetch-Site) must say same-origin.
    OriginOnly,
}

async fn authenticate(
    state: &AppState,
    request: &Parts,
    client: &ClientInfo,
    csrf_mode: CsrfMode,
) -> ApiResult<Authenticated> {
    let headers = &request.headers;
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let presented = value.to_str().ok().and_then(bearer).unwrap_or("");
        return authenticate_token(state, presented, client).await;
    }
    let Some(cookie) = session::cookie_token(headers, client.https) else {
        return Err(ApiError::unauthenticated());
    };
    let Some(s) = session::lookup(state, &cookie, client).await? else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "session_expired",
            "the session has ended; log in again",
        ));
    };
    let same_site = match csrf_mode {
        CsrfMode::Token => csrf::request_is_same_site(&state.keyring, &cookie, headers),
        CsrfMode::OriginOnly => csrf::browser_says_same_origin(headers),
    };
    if !request.method.is_safe() && !same_site {
        audit::record(
            state,
            Some(&Actor::user_id(&s.user_id)),
            client,
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
    Ok(Authenticated {
        user_id: s.user_id,
        via: Via::Session {
            session_id: s.id,
            csrf_token: csrf::token_for_session(&state.keyring, &cookie),
        },
        token_permissions: None,
    })
}

/// Authenticates the request and returns the first of `permissions` the
/// caller holds (a denial is audited only when none is held).
pub async fn authorize_any(
    state: &AppState,
    permissions: &[Permission],
    request: &Parts,
    team_id: Option<String>,
    csrf_mode: CsrfMode,
) -> ApiResult<(Principal, Permission)> {
    let client = request
        .extensions
        .get::<ClientInfo>()
        .cloned()
        .ok_or_else(|| ApiError::internal("client information missing"))?;
    let Authenticated {
        user_id,
        via,
        token_permissions,
    } = authenticate(state, request, &client, csrf_mode).await?;
    let Some(user) = state.hub.active_user(&user_id).await? else {
        return Err(ApiError::unauthenticated());
    };
    let settings = state.hub.platform_settings().await?;
    let role = if user.is_admin {
        PlatformRole::Admin
    } else {
        PlatformRole::User
    };
    let mfa_enrolment_pending = settings.require_mfa && !user.mfa_enabled;

    let (team_role, team) = match &team_id {
        Some(t) => (
            state.hub.membership(t, &user_id).await?,
            state.hub.team_facts(t).await?,
        ),
        None => (None, None),
    };
    let admin_override = role == PlatformRole::Admin
        && team_id.is_some()
        && request
            .headers
            .get(ADMIN_ACCESS_HEADER)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|reason| !reason.trim().is_empty());
    let credential = match &via {
        Via::Session { .. } => Credential::Session {
            mfa_enrolment_pending,
        },
        Via::Token {
            scope,
            team_id: token_team,
            ..
        } => Credential::Token {
            scope: *scope,
            team: TokenTeam::of(token_team.as_deref(), team_id.as_deref()),
            permissions: token_permissions.as_deref(),
        },
    };
    let caller = Caller {
        platform_role: role,
        credential,
        // A team that does not exist has no members, whatever a stale
        // membership row might say.
        team_role: team.as_ref().and(team_role),
        admin_override: admin_override && team.is_some(),
        team_mfa_missing: team.as_ref().is_some_and(|t| t.require_mfa) && !user.mfa_enabled,
    };
    let Some(mut permission) = permissions.first().copied() else {
        return Err(ApiError::internal("no permission to check"));
    };
    let mut decision = decide(&caller, permission);
    for p in &permissions[1..] {
        if decision.is_ok() {
            break;
        }
        permission = *p;
        decision = decide(&caller, permission);
    }
    let principal = Principal {
        user_id,
        username: user.username,
        role,
        mfa_enabled: user.mfa_enabled,
        mfa_enrolment_pending,
        via,
        team: team_id.clone().map(|team_id| TeamAccess {
            team_id,
            role: caller.team_role,
            admin_override: caller.admin_override,
        }),
    };
    let target = Some(request.uri.path().to_string());
    if let Err(denial) = decision {
        audit::record_in_team(
            state,
            team_id.as_deref().filter(|_| team.is_some()),
            Some(&principal.actor()),
            &client,
            AuditEvent::AccessDenied,
            Outcome::Denied,
            target,
            json!({ "permission": permission.name(), "reason": denial, "method": request.method.as_str() }),
        )
        .await?;
        return Err(denial_error(denial, permission));
    }
    if caller.admin_override && caller.team_role.is_none() {
        let reason = request
            .headers
            .get(ADMIN_ACCESS_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .chars()
            .take(200)
            .collect::<String>();
        audit::record_in_team(
            state,
            team_id.as_deref(),
            Some(&principal.actor()),
            &client,
            AuditEvent::AdminTeamAccess,
            Outcome::Success,
            target,
            json!({ "permission": permission.name(), "reason": reason, "method": request.method.as_str() }),
        )
        .await?;
    }
    Ok((principal, permission))
}

fn denial_error(denial: Denial, permission: Permission) -> ApiError {
    match denial {
        Denial::NotFound => ApiError::not_found(),
        Denial::NotPermitted => {
            ApiError::forbidden(format!("this needs the permission {}", permission.name()))
        }
        Denial::TokenScope => ApiError::new(
            StatusCode::FORBIDDEN,
            "token_scope",
            format!("the token does not cover {}", permission.name()),
        ),
        Denial::MfaEnrolmentRequired => ApiError::new(
            StatusCode::FORBIDDEN,
            "mfa_enrolment_required",
            "multi-factor authentication is required: enrol at /api/v1/me/mfa first",
        ),
        Denial::TeamMfaRequired => ApiError::new(
            StatusCode::FORBIDDEN,
            "team_mfa_required",
            "this team requires multi-factor authentication: enrol at /api/v1/me/mfa first",
        ),
    }
}

async fn authenticate_token(
    state: &AppState,
    presented: &str,
    client: &ClientInfo,
) -> ApiResult<Authenticated> {
    let now = state.now();
    // Wrong tokens count against the client address only, so guessing is
    // throttled without locking anyone else out.
    if let Err(wait) = state.hub.throttle.check_client(client.ip, now) {
        return Err(ApiError::throttled(wait));
    }
    match token::lookup(state, presented).await? {
        TokenCheck::Valid(t) => Ok(Authenticated {
            user_id: t.user_id,
            via: Via::Token {
                token_id: t.id,
                scope: t.scope,
                team_id: t.team_id,
            },
            token_permissions: t.permissions,
        }),
        outcome => {
            state.hub.throttle.record_client_failure(client.ip, now);
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

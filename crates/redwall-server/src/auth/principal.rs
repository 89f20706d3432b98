//! The authenticated caller, as the guard established it.

use crate::error::ApiError;
use crate::net::client::ClientInfo;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use redwall_policy::access::TokenScope;
use redwall_policy::permission::{PlatformRole, TeamRole};

#[derive(Clone, Debug)]
pub enum Via {
    Session {
        session_id: String,
        csrf_token: String,
    },
    Token {
        token_id: String,
        scope: TokenScope,
        /// The team the token is limited to, if any.
        team_id: Option<String>,
    },
}

/// The team a request addresses, as the guard resolved it.
#[derive(Clone, Debug)]
pub struct TeamAccess {
    pub team_id: String,
    /// The caller's own role; `None` for a platform admin acting through the
    /// explicit (audited) admin override.
    pub role: Option<TeamRole>,
    pub admin_override: bool,
}

#[derive(Clone, Debug)]
pub struct Principal {
    pub user_id: String,
    pub username: String,
    pub role: PlatformRole,
    pub mfa_enabled: bool,
    pub mfa_enrolment_pending: bool,
    pub via: Via,
    /// Set on routes under `/api/v1/teams/{team}`.
    pub team: Option<TeamAccess>,
}

impl Principal {
    /// The team the guard resolved; a handler on a team route can rely on it.
    pub fn team(&self) -> Result<&TeamAccess, ApiError> {
        self.team
            .as_ref()
            .ok_or_else(|| ApiError::internal("a team handler ran without a resolved team"))
    }

    pub fn session_id(&self) -> Option<&str> {
        match &self.via {
            Via::Session { session_id, .. } => Some(session_id),
            Via::Token { .. } => None,
        }
    }
}

/// Only the guard inserts a `Principal`; a handler that asks for one on a
/// route the guard treats as public gets a 500 (and the route matrix test fails).
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| ApiError::internal("a handler asked for a principal on a public route"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<ClientInfo>()
            .cloned()
            .ok_or_else(|| ApiError::internal("client information missing"))
    }
}

impl Principal {
    /// The principal as the log records an actor.
    pub fn actor(&self) -> crate::audit::Actor {
        crate::audit::Actor::user(&self.user_id, &self.username)
    }
}

//! Personal access tokens (`rwp_...`): checked by a SHA-256 lookup, never a
//! password hash, and remembered for at most a second.

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::http::StatusCode;

pub use redwall_hub::identity::{bearer, TokenCheck};

/// A personal access token, as presented; a valid one is marked used.
pub async fn lookup(state: &AppState, presented: &str) -> ApiResult<TokenCheck> {
    let check = state.hub.token_by_bearer(presented).await?;
    if let TokenCheck::Valid(t) = &check {
        state.hub.activity.token_used(&t.id, state.now());
    }
    Ok(check)
}

pub fn invalid_token() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "the access token is invalid, expired or revoked",
    )
}

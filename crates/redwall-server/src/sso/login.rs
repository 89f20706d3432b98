//! The end of every SSO login, whatever the provider: find the Redwall user
//! by the provider's stable subject (or provision one), then Redwall's MFA
//! unless the provider does its own, and only then the group mapping and
//! the clearing of an SSO-only user's local password, then the session.
//! Never links by display name or an unverified email.

use crate::error::{ApiError, ApiResult};
pub use crate::login::AfterSecondFactor;
use crate::net::client::ClientInfo;
use crate::sso::config::ProviderPolicy;
use crate::state::AppState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use redwall_store::User;
use serde_json::json;

pub use redwall_hub::sso_login::ExternalIdentity;

/// Records a failed SSO login and gives the one answer every failure gets
/// (the reason is in the audit log, not in the answer).
pub async fn fail(
    state: &AppState,
    client: &ClientInfo,
    provider: &str,
    reason: &str,
    attempted: Option<&str>,
) -> ApiError {
    if let Err(e) = record_failure(state, client, provider, reason, attempted, json!({})).await {
        return e;
    }
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "sso_failed",
        "single sign-on did not succeed; try again or ask an administrator",
    )
}

/// Audits a failed SSO login (`extra`: more fields for the entry, e.g. the
/// provider's error code), for answers other than [`fail`]'s generic 401.
pub async fn record_failure(
    state: &AppState,
    client: &ClientInfo,
    provider: &str,
    reason: &str,
    attempted: Option<&str>,
    extra: serde_json::Value,
) -> ApiResult<()> {
    Ok(state
        .hub
        .record_sso_failure(&client.origin(), provider, reason, attempted, extra)
        .await?)
}

pub async fn complete(
    state: &AppState,
    client: &ClientInfo,
    policy: &ProviderPolicy,
    id: ExternalIdentity,
) -> ApiResult<Response> {
    complete_with_code(state, client, policy, id, None).await
}

/// What this login will change once the second factor succeeds.
fn after_second_factor(
    state: &AppState,
    policy: &ProviderPolicy,
    id: &ExternalIdentity,
) -> AfterSecondFactor {
    AfterSecondFactor {
        provider: id.provider.clone(),
        groups: redwall_policy::sso_mapping::relevant_groups(
            &state.config.sso.mappings,
            &id.provider,
            &id.groups,
        ),
        clear_password: policy.sso_only,
    }
}

/// Applies the login's changes; answers the user as now stored (the
/// mapping may have changed the admin flag).
pub async fn apply_after_second_factor(
    after: &AfterSecondFactor,
    state: &AppState,
    client: &ClientInfo,
    user: User,
) -> ApiResult<User> {
    Ok(state
        .hub
        .apply_after_second_factor(&client.origin(), after, user, &state.config.sso.mappings)
        .await?)
}

/// [`complete`] for logins that can carry Redwall's second factor in the
/// same request (LDAP, like password login): with `code`, a user with MFA
/// gets the session at once instead of a challenge.
pub async fn complete_with_code(
    state: &AppState,
    client: &ClientInfo,
    policy: &ProviderPolicy,
    id: ExternalIdentity,
    code: Option<&str>,
) -> ApiResult<Response> {
    let found = state
        .hub
        .find_or_provision(&client.origin(), &id, policy.provision)
        .await?;
    let user = match found {
        Ok(u) if !u.suspended => u,
        Ok(_) => {
            return Err(fail(state, client, &id.provider, "suspended", Some(&id.username)).await)
        }
        Err(reason) => {
            return Err(fail(state, client, &id.provider, reason, Some(&id.username)).await)
        }
    };
    let after = after_second_factor(state, policy, &id);
    if user.mfa_enabled && !policy.mfa_by_provider {
        match code {
            None => {
                let challenge = crate::login::challenge(state, &user, Some(&after));
                return Ok(Json(challenge).into_response());
            }
            Some(code) => {
                crate::login::second_factor_step(state, client, None, &user, code).await?
            }
        }
    }
    let user = apply_after_second_factor(&after, state, client, user).await?;
    crate::login::finish_login(state, client, None, &user, Some(&id.provider)).await
}

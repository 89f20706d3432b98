//! The end of every SSO login, whatever the provider: find the Redwall user
//! by the provider's stable subject (or provision one), then Redwall's MFA
//! unless the provider does its own, and only then the group mapping and
//! the clearing of an SSO-only user's local password, then the session.
//! Never links by display name or an unverified email.

use crate::audit::{self, Actor};
use crate::error::{ApiError, ApiResult};
pub use crate::login::AfterSecondFactor;
use crate::net::client::ClientInfo;
use crate::sso::config::ProviderPolicy;
use crate::state::AppState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_store::{NewUser, StoreError, User};
use serde_json::json;

/// Who the provider says logged in.
#[derive(Clone, Debug)]
pub struct ExternalIdentity {
    pub provider: String,
    /// OIDC: `{issuer}#{sub}`-like stable id; LDAP: DN or an immutable attribute.
    pub subject: String,
    /// The login name for a provisioned user.
    pub username: String,
    pub groups: Vec<String>,
}

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
    state.hub.metrics.login_failed();
    let actor = attempted.map(Actor::attempted);
    let mut detail = json!({ "provider": provider, "reason": reason });
    if let (Some(d), serde_json::Value::Object(more)) = (detail.as_object_mut(), extra) {
        d.extend(more);
    }
    audit::record(
        state,
        actor.as_ref(),
        client,
        AuditEvent::SsoLoginFailed,
        Outcome::Failure,
        Some(format!("provider:{provider}")),
        detail,
    )
    .await
}

async fn find_or_provision(
    state: &AppState,
    client: &ClientInfo,
    policy: &ProviderPolicy,
    id: &ExternalIdentity,
) -> ApiResult<Result<User, &'static str>> {
    let now = state.now();
    if let Some(user_id) = state
        .store
        .find_external_identity(&id.provider, &id.subject)
        .await?
    {
        state
            .store
            .touch_external_identity(&id.provider, &id.subject, now)
            .await?;
        return Ok(state.store.get_user(&user_id).await?.ok_or("unknown_user"));
    }
    if !policy.provision {
        return Ok(Err("not_linked"));
    }
    if redwall_policy::username::check_username(&id.username).is_err() {
        return Ok(Err("unusable_username"));
    }
    // A local account with the same name is someone else until an admin
    // links them: never merge accounts by name.
    if state
        .store
        .find_user_by_username(&id.username)
        .await?
        .is_some()
    {
        return Ok(Err("username_taken"));
    }
    let user = match state
        .store
        .create_user(NewUser {
            id: crate::ids::new_id(),
            username: id.username.clone(),
            password_hash: None,
            is_admin: false,
            now,
        })
        .await
    {
        Ok(u) => u,
        Err(StoreError::Conflict(_)) => return Ok(Err("username_taken")),
        Err(e) => return Err(e.into()),
    };
    state
        .store
        .link_external_identity(&id.provider, &id.subject, &user.id, now)
        .await?;
    audit::record(
        state,
        Some(&Actor::user(&user.id, &user.username)),
        client,
        AuditEvent::SsoUserProvisioned,
        Outcome::Success,
        Some(format!("user:{}", user.id)),
        json!({ "provider": id.provider, "subject": id.subject }),
    )
    .await?;
    Ok(Ok(user))
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
    if after.clear_password
        && state
            .store
            .clear_password_hash(&user.id, state.now())
            .await?
    {
        state.forget_user(&user.id);
    }
    crate::sso::mapping::apply(state, client, &user, &after.provider, &after.groups).await?;
    state
        .store
        .get_user(&user.id)
        .await?
        .ok_or_else(ApiError::unauthenticated)
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
    let user = match find_or_provision(state, client, policy, &id).await? {
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

//! Single sign-on routes that are not provider-specific redirects: the
//! provider list for the login page, and LDAP login (a form post, since a
//! directory has no redirect flow).

use crate::api::body::Body;
use crate::audit::{self, Actor};
use crate::error::{ApiError, ApiResult};
use crate::net::client::ClientInfo;
use crate::sso;
use crate::state::AppState;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::response::Response;
use axum::Json;
use redwall_policy::audit_event::{AuditEvent, Outcome};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Serialize, utoipa::ToSchema)]
pub struct ProviderView {
    /// The name used in login URLs.
    pub name: String,
    /// The login button's text.
    pub label: String,
    /// "ldap" (post username and password to /api/v1/auth/ldap/{name}) or "oidc".
    pub kind: &'static str,
}

/// The configured providers, for the login page (configuration only: no
/// provider is contacted).
pub async fn providers(State(state): State<AppState>) -> Json<Vec<ProviderView>> {
    let sso = &state.config.sso;
    let view = |name: &String, label: &Option<String>, kind| ProviderView {
        name: name.clone(),
        label: label.clone().unwrap_or_else(|| name.clone()),
        kind,
    };
    Json(
        sso.ldap
            .iter()
            .map(|p| view(&p.name, &p.label, "ldap"))
            .chain(sso.oidc.iter().map(|p| view(&p.name, &p.label, "oidc")))
            .collect(),
    )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LdapLoginRequest {
    /// The directory login name (uid, sAMAccountName...: whatever the
    /// provider's user_filter matches).
    pub username: String,
    pub password: String,
    /// A TOTP or recovery code, for users with Redwall MFA when the provider
    /// does not do its own (optional: without it the answer is an MFA challenge).
    #[serde(default, alias = "code")]
    pub totp: Option<String>,
}

/// The `{provider}` path segment; a name that cannot be a provider's is
/// answered like an unknown one.
pub struct ProviderPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ProviderPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(name) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::not_found())?;
        Ok(ProviderPath(name))
    }
}

pub async fn ldap_login(
    State(state): State<AppState>,
    client: ClientInfo,
    ProviderPath(name): ProviderPath,
    Body(req): Body<LdapLoginRequest>,
) -> ApiResult<Response> {
    let Some(provider) = state.config.sso.ldap.iter().find(|p| p.name == name) else {
        return Err(ApiError::not_found());
    };
    let now = state.now();
    // Throttled per provider and login name (and per address, inside the
    // throttle), apart from local accounts: a directory "alice" and a local
    // "alice" may be different people.
    let account = format!(
        "ldap:{}:{}",
        provider.name,
        req.username.chars().take(64).collect::<String>()
    );
    if let Err(wait) = state.throttle.check(&account, client.ip, now) {
        state.metrics.login_throttled();
        audit::record(
            &state,
            Some(&Actor::attempted(
                &req.username.chars().take(64).collect::<String>(),
            )),
            &client,
            AuditEvent::LoginThrottled,
            Outcome::Denied,
            Some(format!("provider:{}", provider.name)),
            json!({ "retry_after_secs": wait, "provider": provider.name }),
        )
        .await?;
        return Err(ApiError::throttled(wait));
    }
    let attempted = req.username.chars().take(64).collect::<String>();
    let service_password = match sso::secrets::resolve(
        &state.keyring,
        &provider.bind_password,
        |k| std::env::var(k).ok(),
    ) {
        Ok(s) => s,
        Err(why) => {
            tracing::error!(provider = %provider.name, "LDAP service password unavailable: {why}");
            return Err(sso::login::fail(
                &state,
                &client,
                &provider.name,
                "service_secret_unavailable",
                Some(&attempted),
            )
            .await);
        }
    };
    let identity = match sso::ldap::authenticate(
        provider,
        &service_password,
        &req.username,
        &req.password,
    )
    .await
    {
        Ok(id) => id,
        Err(f) => {
            if f.is_credentials() {
                state.throttle.record_failure(&account, client.ip, now);
            } else {
                // The directory or the configuration, not the user: say
                // what in the server log (the client gets the generic 401).
                tracing::warn!(provider = %provider.name, reason = f.reason, "LDAP login failed: {}", f.detail);
            }
            return Err(sso::login::fail(
                &state,
                &client,
                &provider.name,
                f.reason,
                Some(&attempted),
            )
            .await);
        }
    };
    state.throttle.record_success(&account);
    sso::login::complete_with_code(
        &state,
        &client,
        &provider.policy.resolve(),
        identity,
        req.totp.as_deref(),
    )
    .await
}

//! Single sign-on routes that are not provider-specific redirects: the
//! provider list for the login page, and LDAP login (a form post, since a
//! directory has no redirect flow).

use crate::api::body::Body;
use crate::auth::device::{self, Channel};
use crate::auth::throttle::{name_key, subject_key, Attempt};
use crate::error::{ApiError, ApiResult};
use crate::login::refuse_if_throttled;
use crate::net::client::ClientInfo;
use crate::sso;
use crate::state::AppState;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};

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
    headers: HeaderMap,
    ProviderPath(name): ProviderPath,
    Body(req): Body<LdapLoginRequest>,
) -> ApiResult<Response> {
    let Some(provider) = state.config.sso.ldap.iter().find(|p| p.name == name) else {
        return Err(ApiError::not_found());
    };
    let now = state.now();
    // Throttled per provider, apart from local accounts (a directory
    // "alice" and a local "alice" may be different people): by the name as
    // the directory matches it, then by the entry the directory found.
    let realm = format!("ldap:{}", provider.name);
    let attempted = req.username.chars().take(64).collect::<String>();
    let device = device::read(&state, &headers, Channel::Console, client.https, now);
    let mut attempt = Attempt::new(client.ip, name_key(Channel::Console, &realm, &req.username));
    let provider_name = Some(provider.name.as_str());
    if device.is_none() {
        refuse_if_throttled(&state, &client, &attempt, &attempted, provider_name).await?;
    }
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
    let found = sso::ldap::find(provider, &service_password, &req.username, &req.password).await;
    let identity = match found {
        Ok(found) => {
            let known = match &device {
                None => None,
                Some(d) => state
                    .hub
                    .linked_user(&provider.name, found.subject())
                    .await?
                    .and_then(|user_id| d.known_for(&user_id)),
            };
            attempt.resolved(
                subject_key(Channel::Console, &realm, found.subject()),
                known,
            );
            let refused =
                refuse_if_throttled(&state, &client, &attempt, &attempted, provider_name).await;
            if let Err(e) = refused {
                found.abandon().await;
                return Err(e);
            }
            found.verify(&req.password).await
        }
        Err(f) => Err(f),
    };
    let identity = match identity {
        Ok(id) => id,
        Err(f) => {
            if f.is_credentials() {
                state.hub.throttle.record_failure(&attempt, now);
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
    state.hub.throttle.record_success(&attempt);
    sso::login::complete_with_code(
        &state,
        &client,
        &provider.policy.resolve(),
        identity,
        req.totp.as_deref(),
    )
    .await
}

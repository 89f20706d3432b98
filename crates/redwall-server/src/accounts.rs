//! Account rules shared by the API and the command line: validating and
//! hashing passwords off the async threads, and creating users.

use crate::audit::{self, Actor};
use crate::auth::hash_gate::Priority;
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::http::StatusCode;
use redwall_crypto::password::Verification;
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_policy::password_policy::check_password;
use redwall_policy::username::check_username;
use redwall_store::{NewUser, StoreError, User};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub fn validate_username(username: &str) -> ApiResult<()> {
    check_username(username).map_err(|p| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_username",
            p.message(),
        )
    })
}

pub fn validate_new_password(password: &str, username: &str) -> ApiResult<()> {
    check_password(password, username).map_err(|p| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "weak_password",
            p.message(),
        )
    })
}

/// Argon2id on a blocking thread, at most one per core at a time. Only
/// signed-in users and the setup step set passwords: they go first.
pub async fn hash_password(state: &AppState, password: &str) -> ApiResult<String> {
    let permit = state
        .hash_gate
        .acquire(Priority::Known)
        .await
        .map_err(|_| ApiError::busy())?;
    let hasher = state.hasher.clone();
    let password = redwall_crypto::Secret::new(password.to_string());
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        hasher.hash(password.expose())
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::from)
}

/// Verifies against `stored`, or burns the same time when there is no hash
/// (unknown user, SSO-only user) so timing does not reveal which it was.
/// `priority`: known clients overtake unknown ones waiting for a core; too
/// many unknown ones waiting get a 503 at once.
pub async fn verify_password(
    state: &AppState,
    password: &str,
    stored: Option<&str>,
    priority: Priority,
) -> ApiResult<Verification> {
    let permit = state
        .hash_gate
        .acquire(priority)
        .await
        .map_err(|_| ApiError::busy())?;
    let hasher = state.hasher.clone();
    let password = redwall_crypto::Secret::new(password.to_string());
    let stored = stored.map(str::to_string);
    // The permit moves into the blocking task: a client that leaves does
    // not free the core while its hash still runs.
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        match stored {
            Some(hash) => hasher.verify(password.expose(), &hash),
            None => {
                hasher.dummy_verify(password.expose());
                Verification::Invalid
            }
        }
    })
    .await
    .map_err(ApiError::internal)
}

pub struct NewAccount<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub is_admin: bool,
}

/// Creates a user after checking the username and password policies; audited.
pub async fn create_user(
    state: &AppState,
    actor: Option<&Actor>,
    client: &ClientInfo,
    account: NewAccount<'_>,
) -> ApiResult<User> {
    validate_username(account.username)?;
    validate_new_password(account.password, account.username)?;
    let hash = hash_password(state, account.password).await?;
    let user = state
        .store
        .create_user(NewUser {
            id: crate::ids::new_id(),
            username: account.username.to_string(),
            password_hash: Some(hash),
            is_admin: account.is_admin,
            now: state.now(),
        })
        .await
        .map_err(username_taken)?;
    audit::record(
        state,
        actor,
        client,
        AuditEvent::UserCreated,
        Outcome::Success,
        Some(format!("user:{}", user.id)),
        json!({ "username": user.username, "is_admin": user.is_admin }),
    )
    .await?;
    Ok(user)
}

pub fn username_taken(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(_) => {
            ApiError::conflict("username_taken", "a user with this username already exists")
        }
        other => ApiError::from(other),
    }
}

/// An account as the API shows it (no secret-derived field).
/// Also read back by the console (`console/admin.rs`).
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub is_admin: bool,
    pub suspended: bool,
    pub mfa_enabled: bool,
    pub created_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id.clone(),
            username: u.username.clone(),
            is_admin: u.is_admin,
            suspended: u.suspended,
            mfa_enabled: u.mfa_enabled,
            created_at: rfc3339(u.created_at),
        }
    }
}

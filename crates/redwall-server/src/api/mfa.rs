//! TOTP (RFC 6238) enrolment, confirmation, recovery codes and removal.
//!
//! The TOTP secret is sealed with the master key (bound to the user id), and
//! recovery codes are stored as keyed digests: a database dump alone reveals
//! neither.

use crate::accounts::verify_password;
use crate::api::body::Body;
use crate::audit;
use crate::auth::hash_gate::Priority;
use crate::auth::principal::Principal;
use crate::auth::throttle::Attempt;
use crate::error::{ApiError, ApiResult};
use crate::login::{now_secs, open_secret, seal_aad, verify_second_factor};
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use redwall_crypto::recovery::{new_recovery_codes, normalize_recovery_code};
use redwall_crypto::totp::{qr_svg, TotpSecret};
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_store::User;
use serde::{Deserialize, Serialize};
use serde_json::json;

pub const RECOVERY_CODES: usize = 10;
const ISSUER: &str = "Redwall";

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct MfaStatus {
    pub enabled: bool,
    pub enrolment_pending: bool,
    pub recovery_codes_remaining: i64,
    /// The platform requires MFA for everyone.
    pub required: bool,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct Enrolment {
    /// Base32 secret for manual entry.
    pub secret: String,
    pub otpauth_uri: String,
    /// The otpauth URI as a QR code (SVG document).
    pub qr_svg: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    pub code: String,
}

#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecoveryCodes {
    /// Shown once: each can replace a TOTP code one time.
    pub recovery_codes: Vec<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableRequest {
    pub password: String,
    /// A TOTP code or a recovery code.
    pub code: String,
}

async fn current_user(state: &AppState, principal: &Principal) -> ApiResult<User> {
    state
        .store
        .get_user(&principal.user_id)
        .await?
        .ok_or_else(ApiError::unauthenticated)
}

pub async fn status(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<MfaStatus>> {
    let user = current_user(&state, &principal).await?;
    let settings = state.settings.get(&state.store, state.now()).await?;
    Ok(Json(MfaStatus {
        enabled: user.mfa_enabled,
        enrolment_pending: user.mfa_pending_sealed.is_some(),
        recovery_codes_remaining: state.store.count_recovery_codes(&user.id).await?,
        required: settings.require_mfa,
    }))
}

pub async fn enrol(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
) -> ApiResult<Json<Enrolment>> {
    let user = current_user(&state, &principal).await?;
    if user.mfa_enabled {
        return Err(ApiError::conflict(
            "mfa_already_enabled",
            "MFA is already on; turn it off first to enrol a new device",
        ));
    }
    let secret = TotpSecret::generate();
    let sealed = state
        .keyring
        .sealer("totp")
        .seal(secret.as_bytes(), &seal_aad(&user.id));
    state
        .store
        .set_mfa_pending(&user.id, Some(&sealed), state.now())
        .await?;
    let uri = secret.otpauth_uri(ISSUER, &user.username);
    let qr = qr_svg(&uri)?;
    audit::record(
        &state,
        Some(&principal.actor()),
        &client,
        AuditEvent::MfaEnrolmentStarted,
        Outcome::Success,
        Some(format!("user:{}", user.id)),
        json!({}),
    )
    .await?;
    Ok(Json(Enrolment {
        secret: secret.base32().expose().to_string(),
        otpauth_uri: uri,
        qr_svg: qr,
    }))
}

pub async fn confirm(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Body(req): Body<CodeRequest>,
) -> ApiResult<Json<RecoveryCodes>> {
    let user = current_user(&state, &principal).await?;
    if user.mfa_enabled {
        return Err(ApiError::conflict(
            "mfa_already_enabled",
            "MFA is already on",
        ));
    }
    let Some(pending) = user.mfa_pending_sealed.as_deref() else {
        return Err(ApiError::conflict(
            "no_enrolment",
            "start enrolment at /api/v1/me/mfa/enrol first",
        ));
    };
    let secret = open_secret(&state, &user.id, pending)?;
    let Some(step) = secret.verify(&req.code, now_secs(&state), None) else {
        audit::record(
            &state,
            Some(&principal.actor()),
            &client,
            AuditEvent::MfaVerifyFailed,
            Outcome::Failure,
            Some(format!("user:{}", user.id)),
            json!({ "step": "enrolment" }),
        )
        .await?;
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_mfa_code",
            "the code does not match; check the device's clock and try the current code",
        ));
    };
    let codes = new_recovery_codes(RECOVERY_CODES);
    let digests: Vec<Vec<u8>> = codes
        .iter()
        .filter_map(|c| normalize_recovery_code(c.expose()))
        .map(|n| {
            state
                .keyring
                .keyed_digest("recovery-code", n.as_bytes())
                .to_vec()
        })
        .collect();
    if digests.len() != RECOVERY_CODES {
        return Err(ApiError::internal(
            "a fresh recovery code did not normalize",
        ));
    }
    let step = i64::try_from(step).map_err(ApiError::internal)?;
    state
        .store
        .enable_mfa(&user.id, pending, &digests, step, state.now())
        .await?;
    state.forget_user(&user.id);
    audit::record(
        &state,
        Some(&principal.actor()),
        &client,
        AuditEvent::MfaEnabled,
        Outcome::Success,
        Some(format!("user:{}", user.id)),
        json!({ "recovery_codes": RECOVERY_CODES }),
    )
    .await?;
    Ok(Json(RecoveryCodes {
        recovery_codes: codes.iter().map(|c| c.expose().to_string()).collect(),
    }))
}

pub async fn disable(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Body(req): Body<DisableRequest>,
) -> ApiResult<StatusCode> {
    let now = state.now();
    let settings = state.settings.get(&state.store, now).await?;
    if settings.require_mfa {
        return Err(ApiError::forbidden("MFA is required on this platform"));
    }
    let user = current_user(&state, &principal).await?;
    if !user.mfa_enabled {
        return Err(ApiError::conflict("mfa_not_enabled", "MFA is not on"));
    }
    let attempt = Attempt::reauthentication(client.ip, &user.id);
    if let Err(wait) = state.throttle.check(&attempt, now) {
        return Err(ApiError::throttled(wait));
    }
    let password_ok = verify_password(
        &state,
        &req.password,
        user.password_hash.as_deref(),
        Priority::Known,
    )
    .await?
    .is_valid();
    let code_ok = password_ok
        && verify_second_factor(&state, &user, &req.code)
            .await?
            .is_some();
    if !code_ok {
        state.throttle.record_failure(&attempt, now);
        audit::record(
            &state,
            Some(&principal.actor()),
            &client,
            AuditEvent::MfaVerifyFailed,
            Outcome::Failure,
            Some(format!("user:{}", user.id)),
            json!({ "step": "disable" }),
        )
        .await?;
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "the password or code is incorrect",
        ));
    }
    state.store.disable_mfa(&user.id, now).await?;
    state.forget_user(&user.id);
    audit::record(
        &state,
        Some(&principal.actor()),
        &client,
        AuditEvent::MfaDisabled,
        Outcome::Success,
        Some(format!("user:{}", user.id)),
        json!({}),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

//! TOTP (RFC 6238) enrolment, confirmation, recovery codes and removal.
//!
//! The TOTP secret is sealed with the master key (bound to the user id), and
//! recovery codes are stored as keyed digests: a database dump alone reveals
//! neither.

use crate::api::body::Body;
use crate::audit::Caller;
use crate::auth::principal::Principal;
use crate::error::ApiResult;
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use redwall_crypto::totp::qr_svg;
use serde::{Deserialize, Serialize};

pub use redwall_hub::mfa::RECOVERY_CODES;
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

pub async fn status(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<MfaStatus>> {
    let standing = state.hub.mfa_standing(&principal.user_id).await?;
    Ok(Json(MfaStatus {
        enabled: standing.enabled,
        enrolment_pending: standing.enrolment_pending,
        recovery_codes_remaining: standing.recovery_codes_remaining,
        required: standing.required,
    }))
}

pub async fn enrol(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
) -> ApiResult<Json<Enrolment>> {
    let caller = Caller::of(&principal, &client);
    let enrolment = state
        .hub
        .begin_mfa_enrolment(caller.who(), &principal.user_id, ISSUER)
        .await?;
    let qr = qr_svg(&enrolment.otpauth_uri)?;
    Ok(Json(Enrolment {
        secret: enrolment.secret_base32.expose().to_string(),
        otpauth_uri: enrolment.otpauth_uri,
        qr_svg: qr,
    }))
}

pub async fn confirm(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Body(req): Body<CodeRequest>,
) -> ApiResult<Json<RecoveryCodes>> {
    let caller = Caller::of(&principal, &client);
    let codes = state
        .hub
        .confirm_mfa(caller.who(), &principal.user_id, &req.code)
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
    let caller = Caller::of(&principal, &client);
    state
        .hub
        .disable_mfa(caller.who(), &principal.user_id, &req.password, &req.code)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

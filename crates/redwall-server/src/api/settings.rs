//! Platform settings.

use crate::api::body::Body;
use crate::audit;
use crate::auth::principal::Principal;
use crate::error::{ApiError, ApiResult};
use crate::net::client::ClientInfo;
use crate::settings::PlatformSettings;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use redwall_policy::audit_event::{AuditEvent, Outcome};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsChange {
    pub require_mfa: Option<bool>,
    pub session_idle_secs: Option<i64>,
    pub session_absolute_secs: Option<i64>,
}

pub async fn get(State(state): State<AppState>) -> ApiResult<Json<PlatformSettings>> {
    Ok(Json(
        state.hub.settings.get(&state.store, state.now()).await?,
    ))
}

pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Body(change): Body<SettingsChange>,
) -> ApiResult<Json<PlatformSettings>> {
    let now = state.now();
    let before = state.hub.settings.get(&state.store, now).await?;
    let after = PlatformSettings {
        require_mfa: change.require_mfa.unwrap_or(before.require_mfa),
        session_idle_secs: change.session_idle_secs.unwrap_or(before.session_idle_secs),
        session_absolute_secs: change
            .session_absolute_secs
            .unwrap_or(before.session_absolute_secs),
    };
    let problems = after.lifetimes().problems();
    if !problems.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_settings",
            problems.join("; "),
        ));
    }
    state.hub.settings.put(&state.store, after, now).await?;
    audit::record(
        &state,
        Some(&principal.actor()),
        &client,
        AuditEvent::SettingChanged,
        Outcome::Success,
        Some("platform".into()),
        json!({ "before": before, "after": after }),
    )
    .await?;
    Ok(Json(after))
}

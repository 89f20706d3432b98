//! Platform settings.

use crate::api::body::Body;
use crate::audit::Caller;
use crate::auth::principal::Principal;
use crate::error::ApiResult;
use crate::net::client::ClientInfo;
use crate::settings::PlatformSettings;
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use serde::Deserialize;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsChange {
    pub require_mfa: Option<bool>,
    pub session_idle_secs: Option<i64>,
    pub session_absolute_secs: Option<i64>,
    /// Automatic snapshots kept per instance (1 to 1000).
    pub snapshot_keep_automatic: Option<usize>,
}

pub async fn get(State(state): State<AppState>) -> ApiResult<Json<PlatformSettings>> {
    Ok(Json(state.hub.platform_settings().await?))
}

pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    client: ClientInfo,
    Body(change): Body<SettingsChange>,
) -> ApiResult<Json<PlatformSettings>> {
    let caller = Caller::of(&principal, &client);
    let after = state
        .hub
        .change_settings(
            caller.who(),
            redwall_hub::settings::SettingsChange {
                require_mfa: change.require_mfa,
                session_idle_secs: change.session_idle_secs,
                session_absolute_secs: change.session_absolute_secs,
                snapshot_keep_automatic: change.snapshot_keep_automatic,
            },
        )
        .await?;
    Ok(Json(after))
}

//! First run: the one-time setup token printed at start creates the first
//! platform admin. There is no default password.

use crate::api::body::Body;
use crate::api::users::UserView;
use crate::error::ApiResult;
use crate::net::client::ClientInfo;
use crate::state::AppState;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupRequest {
    pub setup_token: String,
    pub username: String,
    pub password: String,
}

pub async fn complete(
    State(state): State<AppState>,
    client: ClientInfo,
    Body(req): Body<SetupRequest>,
) -> ApiResult<(StatusCode, Json<UserView>)> {
    let user = state
        .hub
        .complete_setup(
            &client.origin(),
            &req.setup_token,
            &req.username,
            &req.password,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(UserView::from(&user))))
}

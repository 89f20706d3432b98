//! Health, metrics, the permission table and the API description.

use crate::auth::guard::Access;
use crate::error::ApiResult;
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use redwall_policy::permission::TABLE;
use serde_json::{json, Value};

pub async fn healthz(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    state.store.count_users().await?;
    Ok(Json(json!({ "status": "ok" })))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

pub async fn permissions() -> Json<Value> {
    let routes: Vec<Value> = crate::api::routes()
        .iter()
        .map(|r| {
            json!({
                "method": r.method.as_str(),
                "path": r.path,
                "permission": match r.access {
                    Access::Public => None,
                    Access::Permission(p) => Some(p.name()),
                },
            })
        })
        .collect();
    let permissions: Vec<Value> = TABLE
        .iter()
        .map(|row| {
            json!({
                "name": row.name,
                "scope": row.scope,
                "read_only": row.read_only,
                "platform_roles": row.platform_roles.iter().map(|r| r.name()).collect::<Vec<_>>(),
                "team_roles": row.team_roles.iter().map(|r| r.name()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({ "permissions": permissions, "routes": routes }))
}

pub async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::api::openapi::document_json(),
    )
}

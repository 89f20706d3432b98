//! Health, metrics, the permission table and the API description.

use crate::auth::guard::Access;
use crate::clock::rfc3339;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use redwall_policy::permission::TABLE;
use redwall_policy::Micros;
use redwall_store::FaultCause;
use serde::Serialize;
use serde_json::{json, Value};
use std::time::Duration;

pub async fn healthz(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    state
        .hub
        .database_check(CHECK_TIMEOUT)
        .await
        .map_err(|_| ApiError::internal_quiet())?;
    Ok(Json(json!({ "status": "ok" })))
}

/// How long each readiness check may take before it counts as failing.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether this node can serve security actions now. 200 when both checks
/// pass; otherwise 503 with the API's error object and the same checks.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ReadinessView {
    /// "ok" or "failing".
    pub status: &'static str,
    pub checks: ReadinessChecks,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ReadinessChecks {
    /// The database answers a read.
    pub database: CheckView,
    /// An audit entry can be written now (the writer's own path, with a
    /// one-row write): while it cannot, every security action is refused.
    pub audit_writer: CheckView,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CheckView {
    /// "ok" or "failing".
    pub status: &'static str,
    /// Why, when failing: disk_full, read_only, unreachable, timeout,
    /// io_error or database_error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// When the audit writer started failing (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

impl CheckView {
    fn of(result: Result<(), FaultCause>, since: Option<Micros>) -> CheckView {
        match result {
            Ok(()) => CheckView {
                status: "ok",
                reason: None,
                since: None,
            },
            Err(cause) => CheckView {
                status: "failing",
                reason: Some(cause.name()),
                since: since.map(rfc3339),
            },
        }
    }
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    let read = state.hub.database_check(CHECK_TIMEOUT);
    let (database, audit) = tokio::join!(read, state.hub.audit.check(CHECK_TIMEOUT));
    let since = state.hub.audit.health().fault().map(|f| f.since);
    let view = ReadinessView {
        status: if database.is_ok() && audit.is_ok() {
            "ok"
        } else {
            "failing"
        },
        checks: ReadinessChecks {
            database: CheckView::of(database, None),
            audit_writer: CheckView::of(audit, since),
        },
    };
    let Some(cause) = audit.err().or(database.err()) else {
        return Json(view).into_response();
    };
    let mut body = serde_json::to_value(&view).unwrap_or_default();
    body["error"] = json!({
        "code": "not_ready",
        "message": format!("security actions are refused: {}", cause.describe()),
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state
            .hub
            .metrics
            .render(state.hub.audit.health(), state.hub.entries_recorded()),
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

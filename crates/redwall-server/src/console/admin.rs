//! Platform administration pages: users, settings, the platform audit log.
//! (Being written; every route answers "not found" until then.)

use super::page::Ctx;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

fn todo_page() -> Response {
    StatusCode::NOT_FOUND.into_response()
}

pub async fn users_page(_ctx: Ctx) -> Response {
    todo_page()
}
pub async fn user_create(_ctx: Ctx, _b: Bytes) -> Response {
    todo_page()
}
pub async fn user_action(_ctx: Ctx, _b: Bytes) -> Response {
    todo_page()
}
pub async fn settings_page(_ctx: Ctx) -> Response {
    todo_page()
}
pub async fn settings_save(_ctx: Ctx, _b: Bytes) -> Response {
    todo_page()
}
pub async fn audit_page(_ctx: Ctx) -> Response {
    todo_page()
}
pub async fn audit_verify(_ctx: Ctx, _b: Bytes) -> Response {
    todo_page()
}

//! Account pages: password, MFA, sessions, personal API tokens.
//! (Being written; every route answers "not found" until then.)

use super::page::Ctx;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

fn todo_page() -> Response {
    StatusCode::NOT_FOUND.into_response()
}

pub async fn page(_ctx: Ctx) -> Response {
    todo_page()
}
pub async fn password(_ctx: Ctx, _b: Bytes) -> Response {
    todo_page()
}
pub async fn mfa_page(_ctx: Ctx) -> Response {
    todo_page()
}
pub async fn mfa_enrol(_ctx: Ctx, _b: Bytes) -> Response {
    todo_page()
}
pub async fn mfa_confirm(_ctx: Ctx, _b: Bytes) -> Response {
    todo_page()
}
pub async fn mfa_disable(_ctx: Ctx, _b: Bytes) -> Response {
    todo_page()
}
pub async fn session_revoke(_ctx: Ctx, _b: Bytes) -> Response {
    todo_page()
}
pub async fn token_create(_ctx: Ctx, _b: Bytes) -> Response {
    todo_page()
}
pub async fn token_revoke(_ctx: Ctx, _b: Bytes) -> Response {
    todo_page()
}

//! (being written)
use super::page::Ctx;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
pub async fn create(_ctx: Ctx, _b: Bytes) -> Response {
    StatusCode::NOT_FOUND.into_response()
}
pub async fn new_page(_ctx: Ctx) -> Response {
    StatusCode::NOT_FOUND.into_response()
}
pub async fn page(_ctx: Ctx) -> Response {
    StatusCode::NOT_FOUND.into_response()
}
pub async fn settings(_ctx: Ctx, _b: Bytes) -> Response {
    StatusCode::NOT_FOUND.into_response()
}
pub async fn delete(_ctx: Ctx, _b: Bytes) -> Response {
    StatusCode::NOT_FOUND.into_response()
}
pub async fn leave(_ctx: Ctx, _b: Bytes) -> Response {
    StatusCode::NOT_FOUND.into_response()
}
pub async fn member_role(_ctx: Ctx, _b: Bytes) -> Response {
    StatusCode::NOT_FOUND.into_response()
}
pub async fn member_remove(_ctx: Ctx, _b: Bytes) -> Response {
    StatusCode::NOT_FOUND.into_response()
}
pub async fn invite(_ctx: Ctx, _b: Bytes) -> Response {
    StatusCode::NOT_FOUND.into_response()
}
pub async fn invitation_revoke(_ctx: Ctx, _b: Bytes) -> Response {
    StatusCode::NOT_FOUND.into_response()
}
pub async fn audit_page(_ctx: Ctx) -> Response {
    StatusCode::NOT_FOUND.into_response()
}
pub async fn my_invitations(_ctx: Ctx) -> Response {
    StatusCode::NOT_FOUND.into_response()
}
pub async fn invitation_accept(_ctx: Ctx, _b: Bytes) -> Response {
    StatusCode::NOT_FOUND.into_response()
}
pub async fn invitation_decline(_ctx: Ctx, _b: Bytes) -> Response {
    StatusCode::NOT_FOUND.into_response()
}

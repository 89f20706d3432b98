//! (being written)
use super::page::Ctx;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
pub async fn page(_ctx: Ctx) -> Response {
    StatusCode::NOT_FOUND.into_response()
}

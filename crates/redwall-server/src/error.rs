//! The one mapping from failures to HTTP answers.
//!
//! Clients get `{"error":{"code","message"}}` with the right status and never
//! an internal detail; internal details go to the log.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use redwall_store::StoreError;
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<i64>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "authentication is required",
        )
    }

    pub fn invalid_credentials() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "the username or password is incorrect",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn throttled(retry_after_secs: i64) -> Self {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "too_many_attempts",
            message: format!("too many failed attempts; try again in {retry_after_secs} seconds"),
            retry_after_secs: Some(retry_after_secs),
        }
    }

    /// Logs `detail` and answers a bare 500, so nothing internal leaks.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::internal_quiet()
    }

    /// The bare 500, for a failure already logged where it was seen.
    pub fn internal_quiet() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found(),
            StoreError::Conflict(what) => {
                ApiError::conflict("conflict", format!("{what} already exists"))
            }
            // The audit writer logged the fault once when it began.
            StoreError::Unavailable(cause) => {
                tracing::debug!(
                    cause = cause.name(),
                    "request refused: audit log unavailable"
                );
                ApiError::internal_quiet()
            }
            StoreError::Database(e) => {
                log_database_error(&e);
                ApiError::internal_quiet()
            }
            other => ApiError::internal(other),
        }
    }
}

/// A failing database fails every request alike: the first failure, and
/// each different one, is logged as an error; repeats of the last one only
/// once a minute with how many there were, so the cause stays visible
/// without flooding the log. (The audit writer logs when writes recover.)
fn log_database_error(e: &dyn std::fmt::Display) {
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    struct Last {
        message: String,
        logged_at: Instant,
        repeats: u64,
    }
    static LAST: Mutex<Option<Last>> = Mutex::new(None);
    const REMIND_EVERY: Duration = Duration::from_secs(60);
    let message = e.to_string();
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    match last.as_mut() {
        Some(l) if l.message == message && l.logged_at.elapsed() < REMIND_EVERY => {
            l.repeats += 1;
            tracing::debug!(error = %message, "database error (repeat)");
        }
        _ => {
            let repeats = last.as_ref().map_or(0, |l| l.repeats);
            tracing::error!(error = %message, earlier_repeats = repeats, "database error: request refused");
            *last = Some(Last {
                message,
                logged_at: Instant::now(),
                repeats: 0,
            });
        }
    }
}

impl From<redwall_crypto::CryptoError> for ApiError {
    fn from(e: redwall_crypto::CryptoError) -> Self {
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut response = (self.status, body).into_response();
        if let Some(secs) = self.retry_after_secs {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

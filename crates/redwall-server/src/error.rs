//! The one mapping from failures to HTTP answers.
//!
//! Clients get `{"error":{"code","message"}}` with the right status and never
//! an internal detail; internal details go to the log. Every server-side
//! failure (5xx) is logged here, at error level with its cause, when it
//! turns into an answer: no handler can answer 500 without leaving a trace.

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
    /// What went wrong inside, for the log only (never sent).
    cause: Option<String>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
            cause: None,
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
            cause: None,
        }
    }

    /// A bare 500 whose `detail` goes to the log only, so nothing internal
    /// leaks.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred",
        );
        e.cause = Some(detail.to_string());
        e
    }

    /// The inside cause of a server error (logged, never sent).
    pub fn with_cause(mut self, cause: impl std::fmt::Display) -> Self {
        self.cause = Some(cause.to_string());
        self
    }

    pub fn cause(&self) -> Option<&str> {
        self.cause.as_deref()
    }
}

/// The one log line of a server-side failure (5xx): its status, public code
/// and inside cause, at error level.
pub fn log_server_error(status: StatusCode, code: &str, cause: &str) {
    tracing::error!(
        status = status.as_u16(),
        code,
        cause,
        "request failed on the server's side"
    );
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found(),
            StoreError::Conflict(what) => {
                ApiError::conflict("conflict", format!("{what} already exists"))
            }
            other => ApiError::internal(other),
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
        if self.status.is_server_error() {
            let cause = match &self.cause {
                Some(c) => c.clone(),
                None => self.message.clone(),
            };
            log_server_error(self.status, self.code, &cause);
        }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn logged(answer: impl FnOnce() -> Response) -> (Response, String) {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::ERROR)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let response = tracing::subscriber::with_default(subscriber, answer);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        (response, text)
    }

    #[test]
    fn every_server_error_leaves_its_cause_in_the_log_and_not_in_the_answer() {
        let (r, log) = logged(|| ApiError::internal("disk on fire at /data").into_response());
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            log.contains("ERROR") && log.contains("disk on fire at /data"),
            "{log}"
        );
        // A 5xx built without `internal` is logged too (its message, then).
        let (_, log) = logged(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "runtime_failed",
                "npm failed",
            )
            .into_response()
        });
        assert!(log.contains("npm failed") && log.contains("503"), "{log}");
        // Store failures carry their cause through `From`.
        let (_, log) = logged(|| {
            ApiError::from(StoreError::InvalidUrl("database is locked".into())).into_response()
        });
        assert!(log.contains("database is locked"), "{log}");
        // A refusal is the client's doing: nothing at error level.
        let (_, log) = logged(|| ApiError::not_found().into_response());
        assert!(log.is_empty(), "{log}");
    }
}

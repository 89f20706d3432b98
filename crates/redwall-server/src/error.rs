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
    /// Already logged where it was seen (a failing database is logged once
    /// per fault, not once per refused request).
    logged: bool,
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
            logged: false,
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
            logged: false,
        }
    }

    /// Too many password checks from unknown clients are already waiting
    /// (a flood): refused at once rather than queued.
    pub fn busy() -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "busy",
            message: "too many logins are being checked; try again in a second".into(),
            retry_after_secs: Some(1),
            cause: None,
            // Load shedding under a flood, not a fault: not an error line each.
            logged: true,
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

    /// The bare 500, for a failure already logged where it was seen.
    pub fn internal_quiet() -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "an internal error occurred",
        );
        e.logged = true;
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

impl From<redwall_policy::RuleError> for ApiError {
    fn from(e: redwall_policy::RuleError) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.code, e.message)
    }
}

impl From<redwall_hub::HubError> for ApiError {
    fn from(e: redwall_hub::HubError) -> Self {
        use redwall_hub::{HubError, Refused};
        match e {
            HubError::NotFound => ApiError::not_found(),
            HubError::Refused {
                kind,
                code,
                message,
            } => {
                let status = match kind {
                    Refused::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
                    Refused::Conflict => StatusCode::CONFLICT,
                    Refused::Forbidden => StatusCode::FORBIDDEN,
                    Refused::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                    Refused::Unauthenticated => StatusCode::UNAUTHORIZED,
                };
                ApiError::new(status, code, message)
            }
            HubError::Store(e) => e.into(),
            HubError::Internal(cause) => ApiError::internal(cause),
            HubError::Throttled { retry_after_secs } => ApiError::throttled(retry_after_secs),
            HubError::Busy => ApiError::busy(),
        }
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
        if self.status.is_server_error() && !self.logged {
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

//! The console is a client of the API, in process: every page reads and
//! every form writes through the same route table, guard and handlers as a
//! script would, carrying the browser's own session cookie, CSRF token,
//! Origin and client address. There is no second set of rules to drift.
//!
//! A call is a `tower` oneshot into the API router: no socket, no TLS, no
//! second authentication step.

use crate::net::client::ClientInfo;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tower::ServiceExt;

/// The API's router, with its state, as the console calls it.
#[derive(Clone)]
pub struct Api(pub Router);

/// The browser request's identity, replayed on each API call.
#[derive(Clone)]
pub struct Caller {
    api: Api,
    client: ClientInfo,
    /// Cookie, Host, Origin and User-Agent of the browser's request.
    forwarded: HeaderMap,
    /// The CSRF token the form carried, sent as the API's header.
    csrf: Option<String>,
}

/// What the API answered.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An API refusal, as the console shows it.
#[derive(Clone, Debug, Deserialize)]
pub struct Failure {
    #[serde(skip)]
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub retry_after_secs: Option<i64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: Failure,
}

impl Failure {
    /// A refusal decided by the console itself (before any API call).
    pub fn new(status: StatusCode, code: &str, message: &str) -> Failure {
        Failure {
            status,
            code: code.into(),
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// The console's own server-side failure; `cause` goes to the log.
    pub fn internal(cause: &str) -> Failure {
        crate::error::log_server_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", cause);
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "something went wrong on our side; try again",
        )
    }

    pub fn not_found() -> Failure {
        Failure::new(StatusCode::NOT_FOUND, "not_found", "no such page")
    }

    pub fn is(&self, code: &str) -> bool {
        self.code == code
    }

    /// The user has no session (or it ended): the page should go to login.
    pub fn needs_login(&self) -> bool {
        self.status == StatusCode::UNAUTHORIZED
    }
}

const FORWARDED: [header::HeaderName; 5] = [
    header::COOKIE,
    header::HOST,
    header::ORIGIN,
    header::USER_AGENT,
    header::ACCEPT_LANGUAGE,
];

impl Caller {
    pub fn new(api: Api, client: ClientInfo, browser: &HeaderMap) -> Caller {
        let mut forwarded = HeaderMap::new();
        for name in FORWARDED {
            for value in browser.get_all(&name) {
                forwarded.append(name.clone(), value.clone());
            }
        }
        Caller {
            api,
            client,
            forwarded,
            csrf: None,
        }
    }

    /// The same caller, now presenting the CSRF token a form carried.
    pub fn with_csrf(mut self, token: &str) -> Caller {
        self.csrf = Some(token.to_string());
        self
    }

    /// The same caller with a cookie the API just set (after login), so the
    /// rest of this request acts in the new session.
    pub fn with_cookie(mut self, set_cookie: &HeaderValue) -> Caller {
        if let Some(pair) = set_cookie
            .to_str()
            .ok()
            .and_then(|v| v.split(';').next())
            .and_then(|p| HeaderValue::from_str(p).ok())
        {
            self.forwarded.remove(header::COOKIE);
            self.forwarded.insert(header::COOKIE, pair);
        }
        self
    }

    pub fn client(&self) -> &ClientInfo {
        &self.client
    }

    pub fn cookie_header(&self) -> Option<&HeaderValue> {
        self.forwarded.get(header::COOKIE)
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(h) = request.headers_mut() {
            h.extend(self.forwarded.clone());
            if let Some(token) = self
                .csrf
                .as_deref()
                .and_then(|t| HeaderValue::from_str(t).ok())
            {
                h.insert(crate::auth::csrf::HEADER, token);
            }
            if body.is_some() {
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
        }
        let body = match body {
            Some(v) => Body::from(serde_json::to_vec(v).unwrap_or_default()),
            None => Body::empty(),
        };
        let mut request = match request.body(body) {
            Ok(r) => r,
            Err(e) => return Reply::internal(&format!("building an API request: {e}")),
        };
        request.extensions_mut().insert(self.client.clone());
        let Ok(response) = self.api.0.clone().oneshot(request).await;
        let (parts, body) = response.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return Reply::internal(&format!("reading an API answer: {e}")),
        };
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// GET a JSON document.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, Failure> {
        self.send(Method::GET, path, None).await.json()
    }

    /// A write whose answer the page does not need beyond success.
    pub async fn act(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, Failure> {
        let reply = self.send(method, path, body).await;
        match reply.failure() {
            Some(f) => Err(f),
            None => Ok(reply),
        }
    }

    /// A write that answers a JSON document.
    pub async fn post<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<T, Failure> {
        self.send(method, path, Some(body)).await.json()
    }
}

impl Reply {
    fn internal(cause: &str) -> Reply {
        crate::error::log_server_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", cause);
        Reply {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    pub fn failure(&self) -> Option<Failure> {
        if self.status.is_success() || self.status.is_redirection() {
            return None;
        }
        // A server error was logged where it was answered (error.rs).
        let mut failure = serde_json::from_slice::<ErrorBody>(&self.body)
            .map(|b| b.error)
            .unwrap_or_else(|_| {
                Failure::internal(&format!(
                    "an API answer {} without an error body",
                    self.status
                ))
            });
        failure.status = self.status;
        if failure.retry_after_secs.is_none() {
            failure.retry_after_secs = self
                .headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
        }
        Some(failure)
    }

    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Failure> {
        if let Some(f) = self.failure() {
            return Err(f);
        }
        serde_json::from_slice(&self.body).map_err(|e| {
            Failure::internal(&format!("the console could not read an API answer: {e}"))
        })
    }

    pub fn set_cookies(&self) -> impl Iterator<Item = &HeaderValue> {
        self.headers.get_all(header::SET_COOKIE).iter()
    }
}

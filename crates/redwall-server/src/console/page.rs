//! What every console page shares: who is looking, the layout around the
//! page, and the answers a page can end in (HTML, a redirect, an error page).

use super::client::{Caller, Failure};
use super::Console;
use crate::net::client::ClientInfo;
use askama::Template;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// The signed-in user, as `/api/v1/me` describes them.
#[derive(Clone, Debug, Deserialize)]
pub struct Me {
    pub id: String,
    pub username: String,
    pub is_admin: bool,
    pub mfa_enabled: bool,
    #[serde(default)]
    pub mfa_enrolment_required: bool,
    #[serde(default)]
    pub csrf_token: Option<String>,
    /// Shown to platform admins on every page while security actions are
    /// refused (the API sets it only for them).
    #[serde(default)]
    pub service_alert: Option<String>,
}

pub struct NavItem {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

/// The frame around every page.
pub struct Layout {
    pub title: String,
    pub user: Option<Me>,
    pub nav: Vec<NavItem>,
    /// The token this page's forms carry (the session's, or the pre-session one).
    pub csrf: String,
    /// A random id per rendered page, so a form posted twice is recognised.
    pub form_id: String,
    /// A fixed message chosen by a `?done=` code, never text from the URL.
    pub notice: Option<&'static str>,
}

impl Layout {
    pub fn new(title: impl Into<String>, me: Option<&Me>, section: &str) -> Layout {
        let mut nav = Vec::new();
        if let Some(me) = me {
            nav.push(NavItem {
                href: "/",
                label: "Teams",
                current: section == "home",
            });
            nav.push(NavItem {
                href: "/account",
                label: "Account",
                current: section == "account",
            });
            if me.is_admin {
                nav.push(NavItem {
                    href: "/admin/users",
                    label: "Admin",
                    current: section == "admin",
                });
            }
        }
        Layout {
            title: title.into(),
            user: me.cloned(),
            nav,
            csrf: me.and_then(|m| m.csrf_token.clone()).unwrap_or_default(),
            form_id: redwall_crypto::token::new_token("").expose().to_string(),
            notice: None,
        }
    }

    pub fn with_notice(mut self, notice: Option<&'static str>) -> Layout {
        self.notice = notice;
        self
    }
}

/// The console request: the browser's identity, ready to call the API.
pub struct Ctx {
    pub console: Console,
    pub api: Caller,
    pub headers: HeaderMap,
    pub path: String,
    pub query: Option<String>,
}

impl FromRequestParts<Console> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Ctx, Response> {
        let State(console) = State::<Console>::from_request_parts(parts, console)
            .await
            .map_err(|e| e.into_response())?;
        let client = parts
            .extensions
            .get::<ClientInfo>()
            .cloned()
            .ok_or_else(|| {
                error_page(&Failure::internal("no client address on a request"), None)
            })?;
        let api = Caller::new(console.api.clone(), client, &parts.headers);
        Ok(Ctx {
            console,
            api,
            headers: parts.headers.clone(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().map(str::to_string),
        })
    }
}

impl Ctx {
    pub fn client(&self) -> &ClientInfo {
        self.api.client()
    }

    /// The signed-in user, or the answer that sends the browser to log in.
    pub async fn me(&self) -> Result<Me, Response> {
        match self.api.get::<Me>("/api/v1/me").await {
            // The API refuses such a user almost everything; say why at once.
            Ok(me) if me.mfa_enrolment_required && !self.path.starts_with("/account/mfa") => {
                Err(see_other("/account/mfa?required=1"))
            }
            Ok(me) => Ok(me),
            Err(f) => Err(self.refused(&f, None)),
        }
    }

    /// A query parameter (first value).
    pub fn query_param(&self, name: &str) -> Option<String> {
        let q = self.query.as_deref()?;
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The answer for an API refusal while showing a page: log in again,
    /// enrol MFA first, or an error page that says what happened.
    pub fn refused(&self, f: &Failure, me: Option<&Me>) -> Response {
        if f.needs_login() {
            let expired = if f.is("session_expired") {
                "&expired=1"
            } else {
                ""
            };
            let next = form_urlencoded::byte_serialize(self.path.as_bytes()).collect::<String>();
            return see_other(&format!("/login?next={next}{expired}"));
        }
        if f.is("enrol_mfa_first") || f.is("mfa_required") && self.path != "/account/mfa" {
            return see_other("/account/mfa?required=1");
        }
        error_page(f, me)
    }
}

pub fn render<T: Template>(page: &T) -> Response {
    render_status(StatusCode::OK, page)
}

pub fn render_status<T: Template>(status: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(html) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            html,
        )
            .into_response(),
        Err(e) => {
            tracing::error!("a console page failed to render: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// The status of a form shown again after a refusal: the API's own 4xx, or
/// 422 when the refusal was the server's fault or none was given.
pub fn refused_status(status: StatusCode) -> StatusCode {
    if status.is_client_error() {
        status
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    }
}

/// Post/redirect/get: every successful form ends in a 303 to a page.
pub fn see_other(location: &str) -> Response {
    let value = HeaderValue::from_str(location).unwrap_or(HeaderValue::from_static("/"));
    (StatusCode::SEE_OTHER, [(header::LOCATION, value)]).into_response()
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    layout: Layout,
    status: u16,
    message: String,
}

pub fn error_page(f: &Failure, me: Option<&Me>) -> Response {
    let title = match f.status {
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::FORBIDDEN => "Not allowed",
        StatusCode::TOO_MANY_REQUESTS => "Slow down",
        s if s.is_server_error() => "Something went wrong",
        _ => "That did not work",
    };
    let message = if f.status == StatusCode::FORBIDDEN && f.is("csrf_failed") {
        "This page expired. Go back, reload it and try again.".to_string()
    } else {
        f.message.clone()
    };
    let status = if f.status.is_client_error() || f.status.is_server_error() {
        f.status
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    render_status(
        status,
        &ErrorPage {
            layout: Layout::new(title, me, ""),
            status: status.as_u16(),
            message,
        },
    )
}

//! The one path every signed-in form takes: its CSRF token, the
//! double-submit guard, the action (API calls with the token), then a
//! redirect or the page again with what went wrong.

use super::client::Caller;
use super::client::Failure;
use super::form::{self, Form, Outcome};
use super::page::{error_page, see_other, Ctx};
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use std::future::Future;

/// How a form's action ended.
pub enum Done {
    /// Success: go to this page (post/redirect/get).
    Redirect(String),
    /// Success that shows something once (a new key, recovery codes); a
    /// second submit of the same form goes to `then` instead.
    ShownOnce { page: Response, then: String },
    /// Refused: the page again, with the reasons and what was typed.
    Again(Response),
}

/// The form's fields, and the caller presenting the form's CSRF token.
pub struct Posted {
    pub form: Form,
    pub body: Bytes,
    pub api: Caller,
}

pub async fn signed_in<F, Fut>(ctx: &Ctx, body: Bytes, act: F) -> Response
where
    F: FnOnce(Posted) -> Fut,
    Fut: Future<Output = Done>,
{
    if body.len() > form::MAX_FORM_BYTES {
        return error_page(
            &Failure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "the form is too large",
            ),
            None,
        );
    }
    let form = Form::parse(&body);
    let csrf = form.text("csrf");
    let keyring = &ctx.console.app.keyring;
    let https = ctx.client().https;
    if !form::session_form_ok(keyring, &ctx.headers, https, &csrf) {
        if crate::auth::session::cookie_token(&ctx.headers, https).is_none() {
            return ctx.refused(&unauthenticated(), None);
        }
        return page_expired();
    }
    let now = ctx.console.app.now();
    let key = form::submission_key(keyring, &csrf, &form.text("form_id"), &ctx.path);
    if let Some(key) = key {
        match ctx.console.submissions.claim(key, now) {
            None => {}
            Some(Outcome::Done(location)) => return see_other(&location),
            Some(Outcome::InFlight) => {
                return error_page(
                    &Failure::new(StatusCode::CONFLICT, "already_submitted", "This form was already sent and is still being handled. Go back and reload the page."),
                    None,
                )
            }
        }
    }
    let api = ctx.api.clone().with_csrf(&csrf);
    let done = act(Posted { form, body, api }).await;
    let (response, remembered) = match done {
        Done::Redirect(location) => (see_other(&location), Some(location)),
        Done::ShownOnce { page, then } => (page, Some(then)),
        Done::Again(page) => (page, None),
    };
    if let Some(key) = key {
        ctx.console
            .submissions
            .finish(key, remembered, ctx.console.app.now());
    }
    response
}

fn unauthenticated() -> Failure {
    Failure::new(StatusCode::UNAUTHORIZED, "unauthenticated", "log in first")
}

pub fn page_expired() -> Response {
    error_page(
        &Failure::new(StatusCode::FORBIDDEN, "csrf_failed", ""),
        None,
    )
}

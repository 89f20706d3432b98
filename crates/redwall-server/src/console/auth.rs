//! First run, login (password, then TOTP or recovery code; directory
//! accounts; SSO buttons) and logout.

use super::client::{Caller, Failure};
use super::form::{self, Form};
use super::page::{render, render_status, see_other, Ctx, Layout, Me};
use super::submit::page_expired;
use askama::Template;
use axum::body::Bytes;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use redwall_policy::redirect::local_path_or;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Provider {
    name: String,
    label: String,
    kind: String,
}

#[derive(Deserialize)]
struct LoginAnswer {
    status: String,
    #[serde(default)]
    mfa_token: Option<String>,
}

#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage {
    layout: Layout,
    next: String,
    username: String,
    provider: String,
    directories: Vec<(String, String)>,
    sso: Vec<(String, String)>,
    error: Option<String>,
    expired: bool,
}

#[derive(Template)]
#[template(path = "console/login_mfa.html")]
struct MfaStepPage {
    layout: Layout,
    next: String,
    mfa_token: String,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "console/setup.html")]
struct SetupPage {
    layout: Layout,
    username: String,
    errors: FieldErrors,
}

/// Messages next to the fields they concern, plus one for the whole form.
#[derive(Default)]
pub struct FieldErrors {
    pub form: Option<String>,
    pub fields: Vec<(&'static str, String)>,
}

impl FieldErrors {
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, m)| m.as_str())
    }

    pub fn any(&self) -> bool {
        self.form.is_some() || !self.fields.is_empty()
    }

    /// Puts an API refusal next to the field its code names.
    pub fn from_failure(f: &Failure, fields: &[(&str, &'static str)]) -> FieldErrors {
        let mut errors = FieldErrors::default();
        match fields.iter().find(|(code, _)| f.is(code)) {
            Some((_, field)) => errors.fields.push((field, sentence(&f.message))),
            None => errors.form = Some(describe(f)),
        }
        errors
    }
}

/// The API's message as a sentence.
pub fn sentence(message: &str) -> String {
    let mut chars = message.chars();
    let mut s = match chars.next() {
        Some(c) => c.to_uppercase().collect::<String>() + chars.as_str(),
        None => return String::new(),
    };
    if !s.ends_with('.') {
        s.push('.');
    }
    s
}

/// What to tell the user about a refusal, with the wait when throttled.
pub fn describe(f: &Failure) -> String {
    match (f.status, f.retry_after_secs) {
        (StatusCode::TOO_MANY_REQUESTS, Some(secs)) => {
            format!(
                "Too many failed attempts. Try again in {}.",
                wait_text(secs)
            )
        }
        _ => sentence(&f.message),
    }
}

fn wait_text(secs: i64) -> String {
    match secs {
        s if s <= 1 => "1 second".into(),
        s if s < 120 => format!("{s} seconds"),
        s => format!("{} minutes", (s + 59) / 60),
    }
}

/// The pre-session form token for this browser, and the cookie to set when
/// the browser has none yet.
fn pre_session(ctx: &Ctx) -> (String, Option<HeaderValue>) {
    let https = ctx.client().https;
    let keyring = &ctx.console.app.keyring;
    match form::pre_cookie_value(&ctx.headers, https) {
        Some(cookie) => (form::pre_session_token(keyring, &cookie), None),
        None => {
            let (cookie, set) = form::new_pre_cookie(https);
            (form::pre_session_token(keyring, &cookie), set)
        }
    }
}

fn with_cookie(mut response: Response, cookie: Option<HeaderValue>) -> Response {
    if let Some(c) = cookie {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

fn anonymous_layout(ctx: &Ctx, title: &str) -> (Layout, Option<HeaderValue>) {
    let (token, cookie) = pre_session(ctx);
    let mut layout = Layout::new(title, None, "");
    layout.csrf = token;
    (layout, cookie)
}

/// A pre-session form whose token or origin is wrong: the page expired.
fn pre_session_ok(ctx: &Ctx, form: &Form) -> bool {
    form::pre_session_ok(
        &ctx.console.app.keyring,
        &ctx.headers,
        ctx.client(),
        &form.text("csrf"),
    )
}

// ---- first run ----

pub async fn setup_page(ctx: Ctx) -> Response {
    let (layout, cookie) = anonymous_layout(&ctx, "Set up Redwall");
    with_cookie(
        render(&SetupPage {
            layout,
            username: String::new(),
            errors: FieldErrors::default(),
        }),
        cookie,
    )
}

pub async fn setup_submit(ctx: Ctx, body: Bytes) -> Response {
    let form = Form::parse(&body);
    if !pre_session_ok(&ctx, &form) {
        return page_expired();
    }
    let username = form.text("username");
    let password = form.raw("password");
    let again = |errors: FieldErrors| {
        let (layout, cookie) = anonymous_layout(&ctx, "Set up Redwall");
        with_cookie(
            render_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                &SetupPage {
                    layout,
                    username: username.clone(),
                    errors,
                },
            ),
            cookie,
        )
    };
    if password != form.raw("password_confirm") {
        return again(FieldErrors {
            form: None,
            fields: vec![("password_confirm", "The two passwords differ.".into())],
        });
    }
    let created = ctx
        .api
        .act(
            Method::POST,
            "/api/v1/setup",
            Some(&json!({
                "setup_token": form.text("setup_token"),
                "username": username,
                "password": password,
            })),
        )
        .await;
    if let Err(f) = created {
        return again(FieldErrors::from_failure(
            &f,
            &[
                ("invalid_setup_token", "setup_token"),
                ("invalid_username", "username"),
                ("username_taken", "username"),
                ("weak_password", "password"),
            ],
        ));
    }
    // The first admin signs in at once and is offered MFA enrolment.
    let login = ctx
        .api
        .send(
            Method::POST,
            "/api/v1/auth/login",
            Some(&json!({ "username": username, "password": password })),
        )
        .await;
    let mut response = see_other("/account/mfa?first_run=1");
    for c in login.set_cookies() {
        response.headers_mut().append(header::SET_COOKIE, c.clone());
    }
    response
}

// ---- login ----

async fn providers(api: &Caller) -> (Vec<(String, String)>, Vec<(String, String)>) {
    let all = api
        .get::<Vec<Provider>>("/api/v1/auth/providers")
        .await
        .unwrap_or_default();
    let (ldap, oidc): (Vec<_>, Vec<_>) = all.into_iter().partition(|p| p.kind == "ldap");
    (
        ldap.into_iter().map(|p| (p.name, p.label)).collect(),
        oidc.into_iter().map(|p| (p.name, p.label)).collect(),
    )
}

struct LoginView<'a> {
    next: String,
    username: String,
    provider: String,
    error: Option<String>,
    status: StatusCode,
    ctx: &'a Ctx,
}

async fn login_view(v: LoginView<'_>) -> Response {
    let (layout, cookie) = anonymous_layout(v.ctx, "Log in");
    let notice = match v.ctx.query_param("done").as_deref() {
        Some("logged_out") => Some("You are logged out."),
        _ => None,
    };
    let layout = layout.with_notice(notice);
    let (directories, sso) = providers(&v.ctx.api).await;
    let expired = v.ctx.query_param("expired").is_some() && v.error.is_none();
    with_cookie(
        render_status(
            v.status,
            &LoginPage {
                layout,
                next: v.next,
                username: v.username,
                provider: v.provider,
                directories,
                sso,
                error: v.error,
                expired,
            },
        ),
        cookie,
    )
}

pub async fn login_page(ctx: Ctx) -> Response {
    let next = local_path_or(ctx.query_param("next").as_deref(), "/");
    if ctx.api.get::<Me>("/api/v1/me").await.is_ok() {
        return see_other(&next);
    }
    let error = ctx.query_param("error").map(|code| {
        match code.as_str() {
            "sso_failed" => "Single sign-on did not succeed. Try again or ask an administrator.",
            _ => "That did not work. Try again.",
        }
        .to_string()
    });
    login_view(LoginView {
        next,
        username: String::new(),
        provider: String::new(),
        error,
        status: StatusCode::OK,
        ctx: &ctx,
    })
    .await
}

pub async fn login_submit(ctx: Ctx, body: Bytes) -> Response {
    let form = Form::parse(&body);
    let next = local_path_or(form.optional("next").as_deref(), "/");
    if !pre_session_ok(&ctx, &form) {
        return login_view(LoginView {
            next,
            username: form.text("username"),
            provider: form.text("provider"),
            error: Some("This page expired. Log in again.".into()),
            status: StatusCode::FORBIDDEN,
            ctx: &ctx,
        })
        .await;
    }
    let provider = form.text("provider");
    let path = if provider.is_empty() {
        "/api/v1/auth/login".to_string()
    } else {
        let encoded: String = form_urlencoded::byte_serialize(provider.as_bytes()).collect();
        format!("/api/v1/auth/ldap/{encoded}")
    };
    let reply = ctx
        .api
        .send(
            Method::POST,
            &path,
            Some(&json!({ "username": form.text("username"), "password": form.raw("password") })),
        )
        .await;
    finish_login(&ctx, reply, next, &form).await
}

async fn finish_login(
    ctx: &Ctx,
    reply: super::client::Reply,
    next: String,
    form: &Form,
) -> Response {
    let cookies: Vec<HeaderValue> = reply.set_cookies().cloned().collect();
    match reply.json::<LoginAnswer>() {
        Ok(answer) if answer.status == "ok" => {
            let mut response = see_other(&next);
            for c in cookies {
                response.headers_mut().append(header::SET_COOKIE, c);
            }
            response
        }
        Ok(answer) => {
            let (layout, cookie) = anonymous_layout(ctx, "Two-step verification");
            with_cookie(
                render(&MfaStepPage {
                    layout,
                    next,
                    mfa_token: answer.mfa_token.unwrap_or_default(),
                    error: None,
                }),
                cookie,
            )
        }
        Err(f) => {
            login_view(LoginView {
                next,
                username: form.text("username"),
                provider: form.text("provider"),
                error: Some(describe(&f)),
                status: f.status,
                ctx,
            })
            .await
        }
    }
}

/// The code step after single sign-on: the challenge arrives in a cookie.
pub async fn mfa_page(ctx: Ctx) -> Response {
    let https = ctx.client().https;
    let name = crate::auth::session::mfa_challenge_cookie_name(https);
    let Some(value) = form::cookie_value(&ctx.headers, name) else {
        return see_other("/login?expired=1");
    };
    let (challenge, next) = match value.split_once('!') {
        Some((c, n)) => (
            c.to_string(),
            form_urlencoded::parse(format!("n={n}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned()),
        ),
        None => (value, None),
    };
    let (layout, cookie) = anonymous_layout(&ctx, "Two-step verification");
    let mut response = with_cookie(
        render(&MfaStepPage {
            layout,
            next: local_path_or(next.as_deref(), "/"),
            mfa_token: challenge,
            error: None,
        }),
        cookie,
    );
    // The page holds the challenge now; the cookie has done its job.
    if let Ok(clear) = crate::auth::session::mfa_challenge_cookie("", https, 0) {
        response.headers_mut().append(header::SET_COOKIE, clear);
    }
    response
}

pub async fn mfa_submit(ctx: Ctx, body: Bytes) -> Response {
    let form = Form::parse(&body);
    let next = local_path_or(form.optional("next").as_deref(), "/");
    if !pre_session_ok(&ctx, &form) {
        return page_expired();
    }
    let mfa_token = form.text("mfa_token");
    let reply = ctx
        .api
        .send(
            Method::POST,
            "/api/v1/auth/mfa",
            Some(&json!({ "mfa_token": mfa_token, "code": form.text("code") })),
        )
        .await;
    match reply.failure() {
        None => {
            let mut response = see_other(&next);
            for c in reply.set_cookies() {
                response.headers_mut().append(header::SET_COOKIE, c.clone());
            }
            response
        }
        // The challenge itself expired: start over.
        Some(f) if f.is("invalid_mfa_token") => see_other(&format!(
            "/login?next={}&expired=1",
            form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
        )),
        Some(f) => {
            let (layout, cookie) = anonymous_layout(&ctx, "Two-step verification");
            with_cookie(
                render_status(
                    f.status,
                    &MfaStepPage {
                        layout,
                        next,
                        mfa_token,
                        error: Some(describe(&f)),
                    },
                ),
                cookie,
            )
        }
    }
}

// ---- logout ----

pub async fn logout(ctx: Ctx, body: Bytes) -> Response {
    end_session(ctx, body, "/api/v1/auth/logout").await
}

pub async fn logout_everywhere(ctx: Ctx, body: Bytes) -> Response {
    end_session(ctx, body, "/api/v1/auth/logout-everywhere").await
}

async fn end_session(ctx: Ctx, body: Bytes, path: &'static str) -> Response {
    let form = Form::parse(&body);
    let csrf = form.text("csrf");
    let https = ctx.client().https;
    if !form::session_form_ok(&ctx.console.app.keyring, &ctx.headers, https, &csrf) {
        // No session (already logged out) is not an error worth a page.
        if crate::auth::session::cookie_token(&ctx.headers, https).is_none() {
            return see_other("/login");
        }
        return page_expired();
    }
    let reply = ctx
        .api
        .clone()
        .with_csrf(&csrf)
        .send(Method::POST, path, None)
        .await;
    let mut response = see_other("/login?done=logged_out");
    for c in reply.set_cookies() {
        response.headers_mut().append(header::SET_COOKIE, c.clone());
    }
    response
}

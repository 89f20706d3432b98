//! The account: password, MFA (QR code, recovery codes shown once),
//! sessions, personal API tokens.

use super::auth::FieldErrors;
use super::models::Team;
use super::page::{refused_status, render_status, Ctx, Layout, Me};
use super::submit::{self, Done, Posted};
use askama::Template;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
pub struct SessionInfo {
    pub id: String,
    pub created_at: String,
    pub last_seen_at: String,
    #[serde(default)]
    pub client_ip: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
    #[serde(default)]
    pub current: bool,
}

#[derive(Deserialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub scope: String,
    #[serde(default)]
    pub team_id: Option<String>,
    pub created_at: String,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub last_used_at: Option<String>,
}

#[derive(Deserialize)]
pub struct MfaStatus {
    pub enabled: bool,
    #[serde(default)]
    pub recovery_codes_remaining: i64,
    #[serde(default)]
    pub required: bool,
}

#[derive(Deserialize)]
struct Enrolment {
    secret: String,
    qr_svg: String,
}

#[derive(Deserialize)]
struct RecoveryCodes {
    recovery_codes: Vec<String>,
}

#[derive(Deserialize)]
struct CreatedToken {
    token: String,
}

#[derive(Template)]
#[template(path = "console/account.html")]
struct AccountPage {
    layout: Layout,
    sessions: Vec<SessionInfo>,
    tokens: Vec<TokenInfo>,
    teams: Vec<Team>,
    errors: FieldErrors,
    /// A token just created, shown this once.
    new_token: Option<String>,
    token_name: String,
}

impl AccountPage {
    fn team_name(&self, id: &Option<String>) -> String {
        match id {
            None => "all teams".into(),
            Some(id) => self
                .teams
                .iter()
                .find(|t| &t.id == id)
                .map(|t| t.name.clone())
                .unwrap_or_else(|| "a team you left".into()),
        }
    }
}

#[derive(Template)]
#[template(path = "console/account_mfa.html")]
struct MfaPage {
    layout: Layout,
    status: MfaStatus,
    first_run: bool,
    required: bool,
    /// A started enrolment: the QR code as a data URL and the secret.
    enrolment: Option<(String, String)>,
    /// Recovery codes, shown once after confirming.
    codes: Option<String>,
    errors: FieldErrors,
}

fn notice(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "password_changed" => "Your password was changed. Your other sessions were ended.",
        "session_revoked" => "The session was ended.",
        "token_revoked" => "The token was revoked.",
        "mfa_disabled" => "Two-step verification is off.",
        _ => return None,
    })
}

// ---- the account page ----

struct Typed {
    errors: FieldErrors,
    new_token: Option<String>,
    token_name: String,
}

async fn account_page(ctx: &Ctx, typed: Typed, status: StatusCode) -> Response {
    let me = match ctx.me().await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let (sessions, tokens, teams) = futures::join!(
        ctx.api.get::<Vec<SessionInfo>>("/api/v1/me/sessions"),
        ctx.api.get::<Vec<TokenInfo>>("/api/v1/me/tokens"),
        ctx.api.get::<Vec<Team>>("/api/v1/teams"),
    );
    let sessions = match sessions {
        Ok(s) => s,
        Err(f) => return ctx.refused(&f, Some(&me)),
    };
    let layout = Layout::new("Account", Some(&me), "account")
        .with_notice(notice(ctx.query_param("done").as_deref()));
    render_status(
        status,
        &AccountPage {
            layout,
            sessions,
            tokens: tokens.unwrap_or_default(),
            teams: teams.unwrap_or_default(),
            errors: typed.errors,
            new_token: typed.new_token,
            token_name: typed.token_name,
        },
    )
}

pub async fn page(ctx: Ctx) -> Response {
    let typed = Typed {
        errors: FieldErrors::default(),
        new_token: None,
        token_name: String::new(),
    };
    account_page(&ctx, typed, StatusCode::OK).await
}

pub async fn password(ctx: Ctx, body: Bytes) -> Response {
    let ctx = &ctx;
    submit::signed_in(ctx, body, |p: Posted| async move {
        let new = p.form.raw("new_password");
        let again = |errors: FieldErrors, status| async move {
            let typed = Typed {
                errors,
                new_token: None,
                token_name: String::new(),
            };
            Done::Again(account_page(ctx, typed, refused_status(status)).await)
        };
        if new != p.form.raw("new_password_confirm") {
            let errors = FieldErrors {
                form: None,
                fields: vec![(
                    "new_password_confirm",
                    "The two new passwords differ.".into(),
                )],
            };
            return again(errors, StatusCode::UNPROCESSABLE_ENTITY).await;
        }
        let change =
            json!({ "current_password": p.form.raw("current_password"), "new_password": new });
        match p
            .api
            .act(Method::PUT, "/api/v1/me/password", Some(&change))
            .await
        {
            Ok(_) => Done::Redirect("/account?done=password_changed".into()),
            Err(f) if f.status == StatusCode::UNAUTHORIZED && !f.is("invalid_credentials") => {
                Done::Again(ctx.refused(&f, None))
            }
            Err(f) => {
                let errors = FieldErrors::from_failure(
                    &f,
                    &[
                        ("invalid_credentials", "current_password"),
                        ("weak_password", "new_password"),
                    ],
                );
                again(errors, f.status).await
            }
        }
    })
    .await
}

pub async fn session_revoke(ctx: Ctx, Path(id): Path<String>, body: Bytes) -> Response {
    let ctx = &ctx;
    submit::signed_in(ctx, body, |p: Posted| async move {
        match p
            .api
            .act(Method::DELETE, &format!("/api/v1/me/sessions/{id}"), None)
            .await
        {
            Ok(_) => Done::Redirect("/account?done=session_revoked#sessions".into()),
            Err(f) => Done::Again(ctx.refused(&f, None)),
        }
    })
    .await
}

pub async fn token_create(ctx: Ctx, body: Bytes) -> Response {
    let ctx = &ctx;
    submit::signed_in(ctx, body, |p: Posted| async move {
        let name = p.form.text("token_name");
        let mut req = json!({ "name": name, "scope": p.form.text("token_scope") });
        if let Some(team) = p.form.optional("token_team") {
            req["team_id"] = json!(team);
        }
        let again = |errors: FieldErrors, status, name: String| async move {
            let typed = Typed {
                errors,
                new_token: None,
                token_name: name,
            };
            Done::Again(account_page(ctx, typed, refused_status(status)).await)
        };
        if let Some(days) = p.form.optional("token_days") {
            match days.parse::<i64>() {
                Ok(d) => req["expires_in_days"] = json!(d),
                Err(_) => {
                    let errors = FieldErrors {
                        form: None,
                        fields: vec![("token_days", "Enter a whole number of days.".into())],
                    };
                    return again(errors, StatusCode::UNPROCESSABLE_ENTITY, name).await;
                }
            }
        }
        match p
            .api
            .post::<CreatedToken>(Method::POST, "/api/v1/me/tokens", &req)
            .await
        {
            Ok(t) => {
                let typed = Typed {
                    errors: FieldErrors::default(),
                    new_token: Some(t.token),
                    token_name: String::new(),
                };
                Done::ShownOnce {
                    page: account_page(ctx, typed, StatusCode::OK).await,
                    then: "/account#tokens".into(),
                }
            }
            Err(f) => {
                let errors = FieldErrors::from_failure(
                    &f,
                    &[
                        ("invalid_name", "token_name"),
                        ("invalid_expiry", "token_days"),
                        ("invalid_team", "token_team"),
                        ("too_many_tokens", "token_name"),
                    ],
                );
                again(errors, f.status, name).await
            }
        }
    })
    .await
}

pub async fn token_revoke(ctx: Ctx, Path(id): Path<String>, body: Bytes) -> Response {
    let ctx = &ctx;
    submit::signed_in(ctx, body, |p: Posted| async move {
        match p
            .api
            .act(Method::DELETE, &format!("/api/v1/me/tokens/{id}"), None)
            .await
        {
            Ok(_) => Done::Redirect("/account?done=token_revoked#tokens".into()),
            Err(f) => Done::Again(ctx.refused(&f, None)),
        }
    })
    .await
}

// ---- MFA ----

struct MfaView {
    enrolment: Option<(String, String)>,
    codes: Option<String>,
    errors: FieldErrors,
}

async fn mfa_view(ctx: &Ctx, view: MfaView, status: StatusCode) -> Response {
    // The MFA page must work while the platform insists on enrolment, so
    // it reads only what the API allows then.
    let me: Me = match ctx.me().await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let mfa = match ctx.api.get::<MfaStatus>("/api/v1/me/mfa").await {
        Ok(s) => s,
        Err(f) => return ctx.refused(&f, Some(&me)),
    };
    let layout = Layout::new("Two-step verification", Some(&me), "account")
        .with_notice(notice(ctx.query_param("done").as_deref()));
    render_status(
        status,
        &MfaPage {
            layout,
            first_run: ctx.query_param("first_run").is_some(),
            required: ctx.query_param("required").is_some() || me.mfa_enrolment_required,
            status: mfa,
            enrolment: view.enrolment,
            codes: view.codes,
            errors: view.errors,
        },
    )
}

pub async fn mfa_page(ctx: Ctx) -> Response {
    let view = MfaView {
        enrolment: None,
        codes: None,
        errors: FieldErrors::default(),
    };
    mfa_view(&ctx, view, StatusCode::OK).await
}

fn qr_data_url(svg: &str) -> String {
    format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(svg)
    )
}

pub async fn mfa_enrol(ctx: Ctx, body: Bytes) -> Response {
    let ctx = &ctx;
    submit::signed_in(ctx, body, |p: Posted| async move {
        match p
            .api
            .post::<Enrolment>(Method::POST, "/api/v1/me/mfa/enrol", &json!({}))
            .await
        {
            // Not remembered as done: enrolling again starts a fresh secret.
            Ok(e) => {
                let view = MfaView {
                    enrolment: Some((qr_data_url(&e.qr_svg), e.secret)),
                    codes: None,
                    errors: FieldErrors::default(),
                };
                Done::Again(mfa_view(ctx, view, StatusCode::OK).await)
            }
            Err(f) => {
                let view = MfaView {
                    enrolment: None,
                    codes: None,
                    errors: FieldErrors::from_failure(&f, &[]),
                };
                Done::Again(mfa_view(ctx, view, refused_status(f.status)).await)
            }
        }
    })
    .await
}

pub async fn mfa_confirm(ctx: Ctx, body: Bytes) -> Response {
    let ctx = &ctx;
    submit::signed_in(ctx, body, |p: Posted| async move {
        let code = json!({ "code": p.form.text("code") });
        match p
            .api
            .post::<RecoveryCodes>(Method::POST, "/api/v1/me/mfa/confirm", &code)
            .await
        {
            Ok(r) => {
                let view = MfaView {
                    enrolment: None,
                    codes: Some(r.recovery_codes.join("\n")),
                    errors: FieldErrors::default(),
                };
                Done::ShownOnce {
                    page: mfa_view(ctx, view, StatusCode::OK).await,
                    then: "/account/mfa".into(),
                }
            }
            Err(f) => {
                // The secret is still pending: show the same QR code again
                // by asking for it from the form (never from the server).
                let view = MfaView {
                    enrolment: p
                        .form
                        .optional("secret")
                        .map(|s| (p.form.text("qr"), s))
                        .filter(|(qr, _)| qr.starts_with("data:image/svg+xml;base64,")),
                    codes: None,
                    errors: FieldErrors::from_failure(
                        &f,
                        &[("invalid_mfa_code", "code"), ("no_enrolment", "code")],
                    ),
                };
                Done::Again(mfa_view(ctx, view, refused_status(f.status)).await)
            }
        }
    })
    .await
}

pub async fn mfa_disable(ctx: Ctx, body: Bytes) -> Response {
    let ctx = &ctx;
    submit::signed_in(ctx, body, |p: Posted| async move {
        let req =
            json!({ "password": p.form.raw("password"), "code": p.form.text("disable_code") });
        match p
            .api
            .act(Method::DELETE, "/api/v1/me/mfa", Some(&req))
            .await
        {
            Ok(_) => Done::Redirect("/account/mfa?done=mfa_disabled".into()),
            Err(f) => {
                let view = MfaView {
                    enrolment: None,
                    codes: None,
                    errors: FieldErrors::from_failure(
                        &f,
                        &[
                            ("invalid_credentials", "password"),
                            ("invalid_mfa_code", "disable_code"),
                        ],
                    ),
                };
                Done::Again(mfa_view(ctx, view, refused_status(f.status)).await)
            }
        }
    })
    .await
}

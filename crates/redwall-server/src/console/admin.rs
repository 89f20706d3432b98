//! Platform administration: users, platform settings, the platform audit
//! log with export and chain verification. The API refuses all of it to
//! anyone but platform admins; the navigation only hides the links.

use super::audit_log::AuditFilters;
use super::auth::FieldErrors;
use super::models::AuditPage;
use super::page::{refused_status, render, render_status, Ctx, Layout, Me};
use super::submit::{self, Done, Posted};
use crate::api::users::{UserList, UserView};
use askama::Template;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
pub struct Settings {
    pub require_mfa: bool,
    pub session_idle_secs: i64,
    pub session_absolute_secs: i64,
    pub snapshot_keep_automatic: usize,
}

#[derive(Deserialize)]
pub struct ChainCheck {
    pub ok: bool,
    pub entries_checked: u64,
    #[serde(default)]
    pub first_problem: Option<ChainBreak>,
}

#[derive(Deserialize)]
pub struct ChainBreak {
    pub seq: i64,
    pub kind: String,
    pub message: String,
}

#[derive(Template)]
#[template(path = "console/admin_users.html")]
struct UsersPage {
    layout: Layout,
    users: Vec<UserView>,
    next: Option<String>,
    errors: FieldErrors,
    new_username: String,
    me: Me,
}

#[derive(Template)]
#[template(path = "console/admin_settings.html")]
struct SettingsPage {
    layout: Layout,
    settings: Settings,
    errors: FieldErrors,
}

#[derive(Template)]
#[template(path = "console/admin_audit.html")]
struct AuditLogPage {
    layout: Layout,
    page: AuditPage,
    filters: AuditFilters,
    error: Option<String>,
    check: Option<ChainCheck>,
}

fn notice(code: Option<&str>) -> Option<&'static str> {
    Some(match code? {
        "user_created" => "The user was created.",
        "suspended" => "The user was suspended and their sessions ended.",
        "reinstated" => "The user was reinstated.",
        "mfa_reset" => "The user's two-step verification was reset.",
        "deleted" => "The user was deleted.",
        "settings_saved" => "The platform settings were saved.",
        _ => return None,
    })
}

// ---- users ----

async fn users_view(
    ctx: &Ctx,
    errors: FieldErrors,
    new_username: String,
    status: StatusCode,
) -> Response {
    let me = match ctx.me().await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let mut path = "/api/v1/users?limit=100".to_string();
    if let Some(after) = ctx.query_param("after") {
        let after: String = form_urlencoded::byte_serialize(after.as_bytes()).collect();
        path.push_str(&format!("&after={after}"));
    }
    let list = match ctx.api.get::<UserList>(&path).await {
        Ok(l) => l,
        Err(f) => return ctx.refused(&f, Some(&me)),
    };
    let layout = Layout::new("Users", Some(&me), "admin")
        .with_notice(notice(ctx.query_param("done").as_deref()));
    render_status(
        status,
        &UsersPage {
            layout,
            users: list.users,
            next: list.next,
            errors,
            new_username,
            me,
        },
    )
}

pub async fn users_page(ctx: Ctx) -> Response {
    users_view(&ctx, FieldErrors::default(), String::new(), StatusCode::OK).await
}

pub async fn user_create(ctx: Ctx, body: Bytes) -> Response {
    let ctx = &ctx;
    submit::signed_in(ctx, body, |p: Posted| async move {
        let username = p.form.text("username");
        let req = json!({
            "username": username,
            "password": p.form.raw("password"),
            "is_admin": p.form.checked("is_admin"),
        });
        match p.api.act(Method::POST, "/api/v1/users", Some(&req)).await {
            Ok(_) => Done::Redirect("/admin/users?done=user_created".into()),
            Err(f) if f.needs_login() => Done::Again(ctx.refused(&f, None)),
            Err(f) => {
                let errors = FieldErrors::from_failure(
                    &f,
                    &[
                        ("invalid_username", "username"),
                        ("username_taken", "username"),
                        ("weak_password", "password"),
                    ],
                );
                Done::Again(users_view(ctx, errors, username, refused_status(f.status)).await)
            }
        }
    })
    .await
}

pub async fn user_action(
    ctx: Ctx,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let ctx = &ctx;
    submit::signed_in(ctx, body, |p: Posted| async move {
        let base = format!("/api/v1/users/{id}");
        let (method, path, done) = match action.as_str() {
            "suspend" => (Method::POST, format!("{base}/suspend"), "suspended"),
            "reinstate" => (Method::POST, format!("{base}/reinstate"), "reinstated"),
            "reset-mfa" => (Method::DELETE, format!("{base}/mfa"), "mfa_reset"),
            "delete" => (Method::DELETE, base, "deleted"),
            _ => {
                let f = super::client::Failure::not_found();
                return Done::Again(super::page::error_page(&f, None));
            }
        };
        match p.api.act(method, &path, None).await {
            Ok(_) => Done::Redirect(format!("/admin/users?done={done}")),
            Err(f) if f.needs_login() => Done::Again(ctx.refused(&f, None)),
            Err(f) => {
                let errors = FieldErrors::from_failure(&f, &[]);
                Done::Again(users_view(ctx, errors, String::new(), refused_status(f.status)).await)
            }
        }
    })
    .await
}

// ---- settings ----

async fn settings_view(ctx: &Ctx, errors: FieldErrors, status: StatusCode) -> Response {
    let me = match ctx.me().await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let settings = match ctx.api.get::<Settings>("/api/v1/settings").await {
        Ok(s) => s,
        Err(f) => return ctx.refused(&f, Some(&me)),
    };
    let layout = Layout::new("Platform settings", Some(&me), "admin")
        .with_notice(notice(ctx.query_param("done").as_deref()));
    render_status(
        status,
        &SettingsPage {
            layout,
            settings,
            errors,
        },
    )
}

pub async fn settings_page(ctx: Ctx) -> Response {
    settings_view(&ctx, FieldErrors::default(), StatusCode::OK).await
}

/// Minutes as typed, in seconds; `None` when not a whole number.
fn minutes(text: &str) -> Option<i64> {
    text.trim()
        .parse::<i64>()
        .ok()
        .map(|m| m.saturating_mul(60))
}

pub async fn settings_save(ctx: Ctx, body: Bytes) -> Response {
    let ctx = &ctx;
    submit::signed_in(ctx, body, |p: Posted| async move {
        let mut errors = FieldErrors::default();
        let idle = minutes(&p.form.text("idle_minutes"));
        let absolute = minutes(&p.form.text("absolute_minutes"));
        let keep = p.form.text("keep_automatic").trim().parse::<usize>().ok();
        if keep.is_none() {
            errors
                .fields
                .push(("keep_automatic", "Enter a whole number.".into()));
        }
        if idle.is_none() {
            errors
                .fields
                .push(("idle_minutes", "Enter a whole number of minutes.".into()));
        }
        if absolute.is_none() {
            errors.fields.push((
                "absolute_minutes",
                "Enter a whole number of minutes.".into(),
            ));
        }
        if errors.any() {
            return Done::Again(settings_view(ctx, errors, StatusCode::UNPROCESSABLE_ENTITY).await);
        }
        let change = json!({
            "require_mfa": p.form.checked("require_mfa"),
            "session_idle_secs": idle,
            "session_absolute_secs": absolute,
            "snapshot_keep_automatic": keep,
        });
        match p
            .api
            .act(Method::PATCH, "/api/v1/settings", Some(&change))
            .await
        {
            Ok(_) => Done::Redirect("/admin/settings?done=settings_saved".into()),
            Err(f) if f.needs_login() => Done::Again(ctx.refused(&f, None)),
            Err(f) => {
                let errors = FieldErrors::from_failure(
                    &f,
                    &[
                        ("enrol_mfa_first", "require_mfa"),
                        ("invalid_retention", "keep_automatic"),
                    ],
                );
                Done::Again(settings_view(ctx, errors, refused_status(f.status)).await)
            }
        }
    })
    .await
}

// ---- the platform audit log ----

async fn audit_view(ctx: &Ctx, check: Option<ChainCheck>) -> Response {
    let me = match ctx.me().await {
        Ok(me) => me,
        Err(r) => return r,
    };
    let filters = AuditFilters::read(ctx);
    let (page, error) = match filters.load(ctx, "/api/v1/audit").await {
        Ok(x) => x,
        Err(f) => return ctx.refused(&f, Some(&me)),
    };
    render(&AuditLogPage {
        layout: Layout::new("Platform audit log", Some(&me), "admin"),
        page,
        filters,
        error,
        check,
    })
}

pub async fn audit_page(ctx: Ctx) -> Response {
    audit_view(&ctx, None).await
}

pub async fn audit_verify(ctx: Ctx, body: Bytes) -> Response {
    let ctx = &ctx;
    submit::signed_in(ctx, body, |p: Posted| async move {
        match p
            .api
            .post::<ChainCheck>(Method::POST, "/api/v1/audit/verify", &json!({}))
            .await
        {
            // A check changes nothing: pressing it again simply checks again.
            Ok(check) => Done::Again(audit_view(ctx, Some(check)).await),
            Err(f) => Done::Again(ctx.refused(&f, None)),
        }
    })
    .await
}

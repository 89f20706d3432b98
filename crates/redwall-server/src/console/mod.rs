//! The web console: server-rendered pages compiled into the binary.
//!
//! The console holds no rules of its own. Each page reads, and each form
//! writes, through the API in process (`client.rs`), with the browser's own
//! session and CSRF token, so the API's guard and permission table decide
//! everything; the console only chooses what to show. Buttons a role may not
//! use are hidden by the permissions the API reports (`my_permissions`), and
//! a forced request is still refused by the API.

pub mod account;
pub mod admin;
pub mod agent_site;
pub mod agent_updates;
pub mod agents;
pub mod assets;
pub mod audit_log;
pub mod auth;
pub mod broker;
pub mod client;
pub mod form;
pub mod home;
pub mod instances;
pub mod models;
pub mod page;
pub mod pipelines;
pub mod snapshots;
pub mod submit;
pub mod teams;

use crate::state::AppState;
use axum::routing::{get, post};
use axum::Router;
use std::ops::Deref;
use std::sync::Arc;

#[derive(Clone)]
pub struct Console(Arc<Inner>);

pub struct Inner {
    pub app: AppState,
    pub api: client::Api,
    pub submissions: form::Submissions,
}

impl Deref for Console {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The console's pages. `api` is the API router with its state: the only
/// way the pages reach data.
pub fn router(app: AppState, api: Router) -> Router {
    let console = Console(Arc::new(Inner {
        app,
        api: client::Api(api),
        submissions: form::Submissions::default(),
    }));
    const INSTANCE: &str = "/teams/{team}/instances/{instance}";
    Router::new()
        .route("/assets/{file}", get(assets::serve))
        .route("/setup", get(auth::setup_page).post(auth::setup_submit))
        .route("/login", get(auth::login_page).post(auth::login_submit))
        .route("/login/mfa", get(auth::mfa_page).post(auth::mfa_submit))
        .route("/logout", post(auth::logout))
        .route("/logout/everywhere", post(auth::logout_everywhere))
        .route("/", get(home::page))
        .route("/teams", post(teams::create))
        .route("/teams/new", get(teams::new_page))
        .route("/teams/{team}", get(teams::page))
        .route("/teams/{team}/settings", post(teams::settings))
        .route("/teams/{team}/delete", post(teams::delete))
        .route("/teams/{team}/leave", post(teams::leave))
        .route("/teams/{team}/members/{id}/role", post(teams::member_role))
        .route(
            "/teams/{team}/members/{id}/remove",
            post(teams::member_remove),
        )
        .route("/teams/{team}/invitations", post(teams::invite))
        .route(
            "/teams/{team}/invitations/{id}/revoke",
            post(teams::invitation_revoke),
        )
        .route("/teams/{team}/audit", get(teams::audit_page))
        .route("/teams/{team}/broker", get(broker::page))
        .route("/teams/{team}/broker/clients", post(broker::create))
        .route(
            "/teams/{team}/broker/clients/{id}/{action}",
            post(broker::action),
        )
        .route(
            "/teams/{team}/pipelines",
            get(pipelines::page).post(pipelines::create),
        )
        .route("/teams/{team}/pipelines/groups", post(pipelines::group_set))
        .route("/teams/{team}/pipelines/deploy", post(pipelines::deploy))
        .route("/teams/{team}/pipelines/git", post(pipelines::git_set))
        .route(
            "/teams/{team}/pipelines/groups/{group}/delete",
            post(pipelines::group_delete),
        )
        .route(
            "/teams/{team}/pipelines/promotions/{id}/approve",
            post(pipelines::approve),
        )
        .route(
            "/teams/{team}/pipelines/{pipeline}/{action}",
            post(pipelines::action),
        )
        .route(
            "/teams/{team}/agents",
            get(agents::page).post(agents::provision),
        )
        .route(
            "/teams/{team}/agents/{agent}/logs",
            get(agent_site::logs_page),
        )
        .route(
            "/teams/{team}/agents/{agent}/{action}",
            post(agents::action),
        )
        .route(
            "/teams/{team}/agent-tokens/{id}/withdraw",
            post(agents::withdraw),
        )
        .route("/teams/{team}/agent-updates", post(agent_updates::start))
        .route("/invitations", get(teams::my_invitations))
        .route("/invitations/{id}/accept", post(teams::invitation_accept))
        .route("/invitations/{id}/decline", post(teams::invitation_decline))
        .route("/teams/{team}/instances", post(instances::create))
        .route("/teams/{team}/instances/new", get(instances::new_page))
        .route(INSTANCE, get(instances::page))
        .route(
            "/teams/{team}/instances/{instance}/snapshots",
            get(snapshots::page).post(snapshots::create),
        )
        .route(
            "/teams/{team}/instances/{instance}/snapshots/{id}/rollback",
            post(snapshots::rollback),
        )
        .route(
            "/teams/{team}/instances/{instance}/snapshots/{id}/push",
            post(snapshots::push),
        )
        .route(
            "/teams/{team}/instances/{instance}/snapshots/git-pull",
            post(snapshots::git_pull),
        )
        .route(
            "/teams/{team}/instances/{instance}/snapshots/import",
            post(snapshots::import),
        )
        .route(
            "/teams/{team}/instances/{instance}/snapshots/export",
            post(snapshots::export),
        )
        .route(
            "/teams/{team}/instances/{instance}/{action}",
            post(instances::action),
        )
        .route("/account", get(account::page))
        .route("/account/password", post(account::password))
        .route("/account/mfa", get(account::mfa_page))
        .route("/account/mfa/enrol", post(account::mfa_enrol))
        .route("/account/mfa/confirm", post(account::mfa_confirm))
        .route("/account/mfa/disable", post(account::mfa_disable))
        .route(
            "/account/sessions/{id}/revoke",
            post(account::session_revoke),
        )
        .route("/account/tokens", post(account::token_create))
        .route("/account/tokens/{id}/revoke", post(account::token_revoke))
        .route(
            "/admin/users",
            get(admin::users_page).post(admin::user_create),
        )
        .route("/admin/users/{id}/{action}", post(admin::user_action))
        .route(
            "/admin/settings",
            get(admin::settings_page).post(admin::settings_save),
        )
        .route("/admin/audit", get(admin::audit_page))
        .route("/admin/audit/verify", post(admin::audit_verify))
        .with_state(console)
}

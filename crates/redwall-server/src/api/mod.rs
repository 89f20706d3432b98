//! The HTTP API: one table of routes, each with the permission it needs.
//!
//! The router, the OpenAPI document and the route-matrix test are all built
//! from `routes()`, so a route cannot exist without a declared permission.

mod agent_beat_pace;
pub mod agent_gateway;
pub mod agent_relay;
mod agent_site_pace;
pub mod agent_updates;
pub mod agents;
pub mod audit;
pub mod auth;
pub mod body;
pub mod broker;
pub mod instance_access;
pub mod instances;
pub mod invitations;
pub mod me;
pub mod mfa;
pub mod mqtt_ws;
pub mod oidc;
pub mod openapi;
pub mod pipelines;
pub mod settings;
pub mod setup;
pub mod snapshot_git;
pub mod snapshots;
pub mod sso;
pub mod system;
pub mod teams;
pub mod tokens;
pub mod users;

use crate::auth::guard::{enforce, Access};
use crate::state::AppState;
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter, MethodRouter};
use redwall_policy::permission::Permission;
use utoipa::openapi::{RefOr, Schema};

pub type SchemaList = Vec<(String, RefOr<Schema>)>;

/// A request or response body type, for the OpenAPI document.
#[derive(Clone, Copy)]
pub struct BodySchema {
    pub name: fn() -> String,
    pub collect: fn(&mut SchemaList),
    /// The body is a JSON array of the type.
    pub array: bool,
}

pub fn schema<T: utoipa::ToSchema>() -> Option<BodySchema> {
    Some(BodySchema {
        name: || T::name().into_owned(),
        collect: |list| {
            list.push((T::name().into_owned(), T::schema()));
            T::schemas(list);
        },
        array: false,
    })
}

/// A JSON array of `T`.
pub fn list_of<T: utoipa::ToSchema>() -> Option<BodySchema> {
    schema::<T>().map(|s| BodySchema { array: true, ..s })
}

pub struct Route {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub summary: &'static str,
    pub request: Option<BodySchema>,
    pub response: Option<BodySchema>,
    /// Query parameters: (name, JSON type, description).
    pub query: &'static [(&'static str, &'static str, &'static str)],
    /// The success status: 200, 201 (created) or 204 (no body).
    pub status: u16,
    /// The largest body it takes, when more than `server.max_body_bytes`
    /// (imports of whole flows).
    pub body_limit: Option<usize>,
    handler: MethodRouter<AppState>,
}

impl Route {
    pub fn new<H, T>(
        method: Method,
        path: &'static str,
        access: Access,
        summary: &'static str,
        handler: H,
    ) -> Route
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
        Route {
            method,
            path,
            access,
            summary,
            request: None,
            response: None,
            query: &[],
            status: 200,
            body_limit: None,
            handler: on(filter, handler),
        }
    }

    pub fn request(mut self, s: Option<BodySchema>) -> Route {
        self.request = s;
        self
    }

    pub fn response(mut self, s: Option<BodySchema>) -> Route {
        self.response = s;
        self
    }

    pub fn status(mut self, status: u16) -> Route {
        self.status = status;
        self
    }

    /// Takes bodies up to `bytes`, beyond the server's usual limit.
    pub fn body_limit(mut self, bytes: usize) -> Route {
        self.body_limit = Some(bytes);
        self
    }

    pub fn query(mut self, params: &'static [(&'static str, &'static str, &'static str)]) -> Route {
        self.query = params;
        self
    }
}

const AUDIT_QUERY: &[(&str, &str, &str)] = &[
    ("actor", "string", "username or user id of the actor"),
    (
        "event",
        "string",
        "an event name, or a prefix ending in * (auth.*)",
    ),
    ("since", "string", "RFC 3339 time, inclusive"),
    ("until", "string", "RFC 3339 time, inclusive"),
    ("cursor", "string", "next_cursor of the previous page"),
    ("limit", "integer", "1 to 1000, default 100"),
];
const USERS_QUERY: &[(&str, &str, &str)] = &[
    ("after", "string", "next of the previous page"),
    ("limit", "integer", "1 to 500, default 100"),
];

pub(crate) fn public<H: Handler<T, AppState>, T: 'static>(
    m: Method,
    path: &'static str,
    summary: &'static str,
    h: H,
) -> Route {
    Route::new(m, path, Access::Public, summary, h)
}

pub(crate) fn needs<H: Handler<T, AppState>, T: 'static>(
    m: Method,
    path: &'static str,
    p: Permission,
    summary: &'static str,
    h: H,
) -> Route {
    Route::new(m, path, Access::Permission(p), summary, h)
}

/// Every route of the API.
pub fn routes() -> Vec<Route> {
    let mut all = core_routes();
    all.extend(pipelines::routes());
    all.extend(agents::routes());
    all.extend(agent_updates::routes());
    all.extend(snapshot_git::routes());
    all
}

fn core_routes() -> Vec<Route> {
    use Method as M;
    use Permission as P;
    vec![
        public(
            M::GET,
            "/healthz",
            "Liveness and database reachability",
            system::healthz,
        ),
        public(
            M::GET,
            "/readyz",
            "Readiness: the database answers and audit entries can be written \
             (503 with the failing checks otherwise)",
            system::readyz,
        )
        .response(schema::<system::ReadinessView>()),
        public(
            M::GET,
            "/api/v1/openapi.json",
            "This API's OpenAPI document",
            system::openapi_json,
        ),
        public(
            M::GET,
            "/api/v1/permissions",
            "The permission table",
            system::permissions,
        ),
        public(
            M::GET,
            "/mqtt",
            "MQTT over WebSocket (subprotocol mqtt) to the team broker: every \
             connection logs in with a broker client's credentials in its CONNECT",
            mqtt_ws::upgrade,
        )
        .status(101),
        needs(
            M::GET,
            "/metrics",
            P::MetricsRead,
            "Prometheus metrics",
            system::metrics,
        ),
        public(
            M::POST,
            "/api/v1/setup",
            "Create the first platform admin with the one-time setup token",
            setup::complete,
        )
        .status(201)
        .request(schema::<setup::SetupRequest>())
        .response(schema::<users::UserView>()),
        public(
            M::POST,
            "/api/v1/auth/login",
            "Log in with username and password (and a TOTP or recovery code)",
            auth::login,
        )
        .request(schema::<auth::LoginRequest>())
        .response(schema::<crate::login::LoginResponse>()),
        public(
            M::POST,
            "/api/v1/auth/mfa",
            "Second login step: answer the MFA challenge",
            auth::login_mfa,
        )
        .request(schema::<auth::MfaStepRequest>())
        .response(schema::<crate::login::LoginResponse>()),
        public(
            M::GET,
            "/api/v1/auth/providers",
            "The single sign-on providers, for the login page",
            sso::providers,
        )
        .response(list_of::<sso::ProviderView>()),
        public(
            M::POST,
            "/api/v1/auth/ldap/{provider}",
            "Log in with a directory (LDAP, Active Directory) username and password",
            sso::ldap_login,
        )
        .request(schema::<sso::LdapLoginRequest>())
        .response(schema::<crate::login::LoginResponse>()),
        public(
            M::GET,
            "/api/v1/auth/oidc/{provider}/start",
            "Start an OpenID Connect login: redirects (303) to the provider",
            oidc::start,
        )
        .query(&[(
            "next",
            "string",
            "where to go after the login: a path on this site",
        )])
        .status(303),
        public(
            M::GET,
            "/api/v1/auth/oidc/{provider}/callback",
            "The provider's redirect back: on success sets the session cookie and redirects (303) to next; with Redwall MFA, answers the challenge",
            oidc::callback,
        )
        .query(&[
            ("code", "string", "the authorization code"),
            ("state", "string", "the state sent at the start"),
            ("iss", "string", "the issuer (RFC 9207)"),
            ("error", "string", "the provider's error code"),
            ("error_description", "string", "the provider's explanation"),
        ])
        .status(303),
        needs(
            M::POST,
            "/api/v1/auth/oidc/{provider}/logout",
            P::AccountLogout,
            "End the current session and get the provider's logout URL (RP-initiated logout)",
            oidc::logout,
        )
        .response(schema::<oidc::OidcLogout>()),
        needs(
            M::POST,
            "/api/v1/auth/logout",
            P::AccountLogout,
            "End the current session",
            auth::logout,
        )
        .status(204),
        needs(
            M::POST,
            "/api/v1/auth/logout-everywhere",
            P::AccountLogout,
            "End all of one's sessions",
            auth::logout_everywhere,
        ),
        needs(
            M::GET,
            "/api/v1/me",
            P::AccountRead,
            "The caller's account",
            me::get_me,
        )
        .response(schema::<me::MeView>()),
        needs(
            M::PUT,
            "/api/v1/me/password",
            P::AccountWrite,
            "Change one's password (ends all other sessions)",
            me::change_password,
        )
        .request(schema::<me::PasswordChange>()),
        needs(
            M::GET,
            "/api/v1/me/sessions",
            P::AccountRead,
            "One's active sessions",
            me::list_sessions,
        )
        .response(list_of::<me::SessionView>()),
        needs(
            M::DELETE,
            "/api/v1/me/sessions/{id}",
            P::AccountWrite,
            "End one of one's sessions",
            me::end_session,
        )
        .status(204),
        needs(
            M::GET,
            "/api/v1/me/tokens",
            P::AccountRead,
            "One's personal access tokens",
            tokens::list,
        )
        .response(list_of::<tokens::TokenView>()),
        needs(
            M::POST,
            "/api/v1/me/tokens",
            P::AccountWrite,
            "Create a personal access token (shown once)",
            tokens::create,
        )
        .status(201)
        .request(schema::<tokens::NewToken>())
        .response(schema::<tokens::CreatedToken>()),
        needs(
            M::DELETE,
            "/api/v1/me/tokens/{id}",
            P::AccountWrite,
            "Revoke a personal access token",
            tokens::revoke,
        )
        .status(204),
        needs(
            M::GET,
            "/api/v1/me/mfa",
            P::AccountRead,
            "One's MFA state",
            mfa::status,
        )
        .response(schema::<mfa::MfaStatus>()),
        needs(
            M::POST,
            "/api/v1/me/mfa/enrol",
            P::AccountMfa,
            "Start TOTP enrolment: secret, otpauth URI and QR code",
            mfa::enrol,
        )
        .response(schema::<mfa::Enrolment>()),
        needs(
            M::POST,
            "/api/v1/me/mfa/confirm",
            P::AccountMfa,
            "Confirm enrolment with a first code; returns recovery codes once",
            mfa::confirm,
        )
        .request(schema::<mfa::CodeRequest>())
        .response(schema::<mfa::RecoveryCodes>()),
        needs(
            M::DELETE,
            "/api/v1/me/mfa",
            P::AccountMfa,
            "Turn MFA off (needs password and a code)",
            mfa::disable,
        )
        .status(204)
        .request(schema::<mfa::DisableRequest>()),
        needs(
            M::GET,
            "/api/v1/users",
            P::UsersRead,
            "List users",
            users::list,
        )
        .query(USERS_QUERY)
        .response(schema::<users::UserList>()),
        needs(
            M::POST,
            "/api/v1/users",
            P::UsersManage,
            "Create a user",
            users::create,
        )
        .status(201)
        .request(schema::<users::NewUserRequest>())
        .response(schema::<users::UserView>()),
        needs(
            M::GET,
            "/api/v1/users/{id}",
            P::UsersRead,
            "One user",
            users::get,
        )
        .response(schema::<users::UserView>()),
        needs(
            M::PATCH,
            "/api/v1/users/{id}",
            P::UsersManage,
            "Make a user a platform admin, or not",
            users::update,
        )
        .request(schema::<users::UserChange>())
        .response(schema::<users::UserView>()),
        needs(
            M::DELETE,
            "/api/v1/users/{id}",
            P::UsersManage,
            "Delete a user (ends their sessions and tokens)",
            users::delete,
        )
        .status(204),
        needs(
            M::POST,
            "/api/v1/users/{id}/suspend",
            P::UsersManage,
            "Suspend a user (ends their sessions and tokens)",
            users::suspend,
        ),
        needs(
            M::POST,
            "/api/v1/users/{id}/reinstate",
            P::UsersManage,
            "Lift a suspension",
            users::reinstate,
        ),
        needs(
            M::DELETE,
            "/api/v1/users/{id}/mfa",
            P::UsersManage,
            "Reset a user's MFA",
            users::reset_mfa,
        )
        .status(204),
        needs(
            M::GET,
            "/api/v1/settings",
            P::SettingsRead,
            "Platform settings",
            settings::get,
        )
        .response(schema::<crate::settings::PlatformSettings>()),
        needs(
            M::PATCH,
            "/api/v1/settings",
            P::SettingsWrite,
            "Change platform settings",
            settings::update,
        )
        .request(schema::<settings::SettingsChange>())
        .response(schema::<crate::settings::PlatformSettings>()),
        needs(
            M::GET,
            "/api/v1/audit",
            P::AuditPlatformRead,
            "Audit log, newest first, with filters and a cursor",
            audit::list,
        )
        .query(AUDIT_QUERY)
        .response(schema::<audit::AuditPage>()),
        needs(
            M::POST,
            "/api/v1/audit/verify",
            P::AuditPlatformRead,
            "Recompute the audit hash chain and name the first entry altered, removed or inserted",
            audit::verify,
        )
        .response(schema::<audit::ChainCheck>()),
        needs(
            M::GET,
            "/api/v1/audit/export",
            P::AuditPlatformRead,
            "Audit log as JSON Lines, oldest first",
            audit::export,
        )
        .query(AUDIT_QUERY),
        needs(
            M::GET,
            "/api/v1/teams",
            P::AccountRead,
            "The caller's teams with their role in each",
            teams::list_mine,
        )
        .response(list_of::<teams::TeamView>()),
        needs(
            M::POST,
            "/api/v1/teams",
            P::TeamCreate,
            "Create a team (the caller becomes Owner)",
            teams::create,
        )
        .status(201)
        .request(schema::<teams::NewTeam>())
        .response(schema::<teams::TeamView>()),
        needs(
            M::GET,
            "/api/v1/teams/{team}",
            P::TeamRead,
            "One team",
            teams::get,
        )
        .response(schema::<teams::TeamView>()),
        needs(
            M::PATCH,
            "/api/v1/teams/{team}",
            P::TeamSettingsWrite,
            "Rename the team or change its settings",
            teams::update,
        )
        .request(schema::<teams::TeamChange>())
        .response(schema::<teams::TeamView>()),
        needs(
            M::DELETE,
            "/api/v1/teams/{team}",
            P::TeamDelete,
            "Delete the team (repeat its name)",
            teams::delete,
        )
        .status(204)
        .request(schema::<teams::DeleteTeam>()),
        needs(
            M::GET,
            "/api/v1/teams/{team}/members",
            P::TeamMembersRead,
            "Members and their roles",
            teams::members,
        )
        .response(list_of::<teams::MemberView>()),
        needs(
            M::PUT,
            "/api/v1/teams/{team}/members/{id}",
            P::TeamMembersManage,
            "Change a member's role",
            teams::change_role,
        )
        .request(schema::<teams::RoleChange>()),
        needs(
            M::DELETE,
            "/api/v1/teams/{team}/members/{id}",
            P::TeamMembersManage,
            "Remove a member",
            teams::remove_member,
        )
        .status(204),
        needs(
            M::POST,
            "/api/v1/teams/{team}/leave",
            P::TeamLeave,
            "Leave the team",
            teams::leave,
        )
        .status(204),
        needs(
            M::GET,
            "/api/v1/teams/{team}/invitations",
            P::TeamMembersManage,
            "Open invitations",
            invitations::list_for_team,
        )
        .response(list_of::<invitations::InvitationView>()),
        needs(
            M::POST,
            "/api/v1/teams/{team}/invitations",
            P::TeamMembersManage,
            "Invite a user by username",
            invitations::create,
        )
        .status(201)
        .request(schema::<invitations::NewInvitation>())
        .response(schema::<invitations::InvitationView>()),
        needs(
            M::DELETE,
            "/api/v1/teams/{team}/invitations/{id}",
            P::TeamMembersManage,
            "Revoke an invitation",
            invitations::revoke,
        )
        .status(204),
        needs(
            M::GET,
            "/api/v1/teams/{team}/broker/clients",
            P::BrokerClientsRead,
            "The team broker's clients and their topic rules (never their passwords)",
            broker::list,
        )
        .response(list_of::<broker::BrokerClientView>()),
        needs(
            M::POST,
            "/api/v1/teams/{team}/broker/clients",
            P::BrokerClientsWrite,
            "Create a broker client (its password is shown once)",
            broker::create,
        )
        .status(201)
        .request(schema::<broker::NewBrokerClient>())
        .response(schema::<broker::BrokerCredentials>()),
        needs(
            M::PUT,
            "/api/v1/teams/{team}/broker/clients/{id}/rules",
            P::BrokerClientsWrite,
            "Replace a broker client's ordered topic rules",
            broker::set_rules,
        )
        .request(list_of::<redwall_policy::mqtt_acl::AclRule>())
        .response(schema::<broker::BrokerClientView>()),
        needs(
            M::POST,
            "/api/v1/teams/{team}/broker/clients/{id}/rotate",
            P::BrokerClientsWrite,
            "A new password for a broker client (shown once); the old one stops now",
            broker::rotate,
        )
        .response(schema::<broker::BrokerCredentials>()),
        needs(
            M::POST,
            "/api/v1/teams/{team}/broker/clients/{id}/disable",
            P::BrokerClientsWrite,
            "Disable a broker client: refused at login and disconnected, rules kept",
            broker::disable,
        )
        .response(schema::<broker::BrokerClientView>()),
        needs(
            M::POST,
            "/api/v1/teams/{team}/broker/clients/{id}/enable",
            P::BrokerClientsWrite,
            "Enable a disabled broker client again",
            broker::enable,
        )
        .response(schema::<broker::BrokerClientView>()),
        needs(
            M::DELETE,
            "/api/v1/teams/{team}/broker/clients/{id}",
            P::BrokerClientsWrite,
            "Revoke a broker client",
            broker::revoke,
        )
        .status(204),
        needs(
            M::GET,
            "/api/v1/teams/{team}/snapshots",
            P::SnapshotsRead,
            "The team's snapshots, newest first (one instance's with ?instance=)",
            snapshots::list,
        )
        .query(&[("instance", "string", "an instance's name or id")])
        .response(list_of::<snapshots::SnapshotView>()),
        needs(
            M::GET,
            "/api/v1/teams/{team}/snapshots/{id}",
            P::SnapshotsRead,
            "A snapshot's flows, variable names, options and modules, checked whole \
             (hashes and the hub's signature; refused with 409 if it fails)",
            snapshots::get,
        )
        .response(schema::<snapshots::SnapshotDetail>()),
        needs(
            M::GET,
            "/api/v1/teams/{team}/snapshots/{id}/diff",
            P::SnapshotsRead,
            "What changed from this snapshot to another: per tab, nodes added, \
             removed and changed, function code as a line diff",
            snapshots::diff,
        )
        .query(&[("to", "string", "the other snapshot's id")])
        .response(schema::<snapshots::DiffView>()),
        needs(
            M::POST,
            "/api/v1/teams/{team}/snapshots/{id}/export",
            P::SnapshotsExport,
            "The snapshot with its credentials in one file sealed under a passphrase \
             (Argon2id and XChaCha20-Poly1305)",
            snapshots::export,
        )
        .request(schema::<snapshots::ExportRequest>()),
        needs(
            M::POST,
            "/api/v1/teams/{team}/instances/{instance}/snapshots",
            P::SnapshotsCreate,
            "Take a snapshot of the instance now, with a note",
            snapshots::create,
        )
        .status(201)
        .request(schema::<snapshots::NewSnapshot>())
        .response(schema::<snapshots::SnapshotView>()),
        needs(
            M::POST,
            "/api/v1/teams/{team}/instances/{instance}/snapshots/import",
            P::SnapshotsCreate,
            "Import a sealed export or a Node-RED flows file as a snapshot of the \
             instance (credentials in the clear refused unless accepted)",
            snapshots::import,
        )
        .body_limit(redwall_hub::snapshots::transfer::MAX_IMPORT_BODY_BYTES)
        .status(201)
        .request(schema::<snapshots::ImportBody>())
        .response(schema::<snapshots::ImportView>()),
        needs(
            M::POST,
            "/api/v1/teams/{team}/instances/{instance}/rollback",
            P::SnapshotsDeploy,
            "Load a snapshot into the running instance through Node-RED's deploy API \
             (no restart); what ran before is kept as a snapshot, so it can be undone",
            snapshots::rollback,
        )
        .request(schema::<snapshots::Rollback>())
        .response(schema::<snapshots::DeploymentView>()),
        needs(
            M::GET,
            "/api/v1/teams/{team}/instances/{instance}/deployments",
            P::SnapshotsRead,
            "The instance's deployments of snapshots, newest first, with their progress",
            snapshots::deployments,
        )
        .response(list_of::<snapshots::DeploymentView>()),
        needs(
            M::GET,
            "/api/v1/teams/{team}/audit",
            P::AuditTeamRead,
            "The team's audit log",
            audit::list_team,
        )
        .query(AUDIT_QUERY)
        .response(schema::<audit::AuditPage>()),
        needs(
            M::GET,
            "/api/v1/teams/{team}/audit/export",
            P::AuditTeamRead,
            "The team's audit log as JSON Lines",
            audit::export_team,
        )
        .query(AUDIT_QUERY),
        needs(
            M::GET,
            "/api/v1/instance-login",
            P::AccountRead,
            "Hand the browser's session over to an instance's host name (redirects)",
            instances::login_handoff,
        )
        .status(303)
        .query(&[
            ("instance", "string", "the instance's name"),
            ("next", "string", "path on the instance to return to"),
        ]),
        needs(
            M::GET,
            "/api/v1/teams/{team}/instances",
            P::TeamRead,
            "The team's instances with their status and addresses",
            instances::list,
        )
        .response(list_of::<instances::InstanceView>()),
        needs(
            M::POST,
            "/api/v1/teams/{team}/instances",
            P::InstanceCreate,
            "Create an instance (and start it, unless start is false)",
            instances::create,
        )
        .status(201)
        .request(schema::<instances::NewInstance>())
        .response(schema::<instances::InstanceView>()),
        needs(
            M::GET,
            "/api/v1/teams/{team}/instances/{instance}",
            P::InstanceRead,
            "An instance with its status",
            instances::get,
        )
        .response(schema::<instances::InstanceView>()),
        needs(
            M::DELETE,
            "/api/v1/teams/{team}/instances/{instance}",
            P::InstanceDelete,
            "Delete an instance, its flows and files (name repeated to confirm)",
            instances::delete,
        )
        .status(204)
        .request(schema::<instances::DeleteInstance>()),
        needs(
            M::POST,
            "/api/v1/teams/{team}/instances/{instance}/start",
            P::InstanceControl,
            "Start an instance",
            instances::start,
        )
        .response(schema::<instances::InstanceView>()),
        needs(
            M::POST,
            "/api/v1/teams/{team}/instances/{instance}/stop",
            P::InstanceControl,
            "Stop an instance",
            instances::stop,
        )
        .response(schema::<instances::InstanceView>()),
        needs(
            M::POST,
            "/api/v1/teams/{team}/instances/{instance}/restart",
            P::InstanceControl,
            "Restart an instance (applies changed environment and options)",
            instances::restart,
        )
        .response(schema::<instances::InstanceView>()),
        needs(
            M::GET,
            "/api/v1/teams/{team}/instances/{instance}/logs",
            P::InstanceRead,
            "The instance's recent log lines",
            instances::logs,
        )
        .query(&[("lines", "integer", "1 to 1000, default 100")])
        .response(list_of::<instances::LogLineView>()),
        needs(
            M::GET,
            "/api/v1/teams/{team}/instances/{instance}/logs/stream",
            P::InstanceRead,
            "New log lines as server-sent events",
            instances::log_stream,
        ),
        needs(
            M::GET,
            "/api/v1/teams/{team}/instances/{instance}/env",
            P::InstanceRead,
            "Environment variables (secret values are never shown)",
            instances::get_env,
        )
        .response(list_of::<instances::EnvView>()),
        needs(
            M::PUT,
            "/api/v1/teams/{team}/instances/{instance}/env",
            P::InstanceEnvWrite,
            "Replace the environment variables (applied at the next start)",
            instances::put_env,
        )
        .request(list_of::<instances::EnvInput>())
        .response(list_of::<instances::EnvView>()),
        needs(
            M::PUT,
            "/api/v1/teams/{team}/instances/{instance}/options",
            P::InstanceOptionsWrite,
            "What the instance may install (applied at the next start)",
            instances::put_options,
        )
        .request(schema::<crate::instances::options::InstanceOptions>())
        .response(schema::<instances::InstanceView>()),
        needs(
            M::GET,
            "/api/v1/teams/{team}/instances/{instance}/egress",
            P::InstanceRead,
            "The instance's egress policy: what it may reach beyond the outside network",
            instances::get_egress,
        )
        .response(list_of::<instances::EgressDoc>()),
        needs(
            M::PUT,
            "/api/v1/teams/{team}/instances/{instance}/egress",
            P::InstanceEgressWrite,
            "Replace the egress policy (applied at once; Owners only)",
            instances::put_egress,
        )
        .request(list_of::<instances::EgressDoc>())
        .response(list_of::<instances::EgressDoc>()),
        needs(
            M::GET,
            "/api/v1/teams/{team}/instances/{instance}/routes",
            P::InstanceRead,
            "The ordered route rules for the flows' endpoints",
            instance_access::get_routes,
        )
        .response(list_of::<instance_access::RuleDoc>()),
        needs(
            M::PUT,
            "/api/v1/teams/{team}/instances/{instance}/routes",
            P::InstancePolicyWrite,
            "Replace the route rules (first match wins; no match is denied)",
            instance_access::put_routes,
        )
        .request(list_of::<instance_access::RuleDoc>())
        .response(list_of::<instance_access::RuleDoc>()),
        needs(
            M::POST,
            "/api/v1/teams/{team}/instances/{instance}/routes/test",
            P::InstanceRead,
            "Which rule a request would match, and the decision",
            instance_access::test_request,
        )
        .request(schema::<instance_access::TestRequest>())
        .response(schema::<instance_access::TestResult>()),
        needs(
            M::GET,
            "/api/v1/teams/{team}/instances/{instance}/keys",
            P::InstanceRead,
            "The instance's API keys (never the keys themselves)",
            instance_access::list_keys,
        )
        .response(list_of::<instance_access::KeyView>()),
        needs(
            M::POST,
            "/api/v1/teams/{team}/instances/{instance}/keys",
            P::InstancePolicyWrite,
            "Create an API key (shown once)",
            instance_access::create_key,
        )
        .status(201)
        .request(schema::<instance_access::NewKey>())
        .response(schema::<instance_access::CreatedKey>()),
        needs(
            M::DELETE,
            "/api/v1/teams/{team}/instances/{instance}/keys/{id}",
            P::InstancePolicyWrite,
            "Revoke an API key",
            instance_access::revoke_key,
        )
        .status(204),
        needs(
            M::GET,
            "/api/v1/me/invitations",
            P::AccountRead,
            "Invitations addressed to the caller",
            invitations::list_mine,
        )
        .response(list_of::<invitations::InvitationView>()),
        needs(
            M::POST,
            "/api/v1/me/invitations/{id}/accept",
            P::AccountWrite,
            "Accept an invitation",
            invitations::accept,
        ),
        needs(
            M::POST,
            "/api/v1/me/invitations/{id}/decline",
            P::AccountWrite,
            "Decline an invitation",
            invitations::decline,
        )
        .status(204),
    ]
}

/// The API router with each route behind its guard and its body limit
/// (the server's, or the route's own larger one).
pub fn router(state: &AppState) -> axum::Router<AppState> {
    let usual = state.config.server.max_body_bytes;
    let mut router = axum::Router::new();
    for route in routes() {
        let guard = axum::middleware::from_fn_with_state((state.clone(), route.access), enforce);
        let limit = route.body_limit.unwrap_or(usual).max(usual);
        // The outermost limit (the largest) cuts bodies by their length
        // first; the extractors stop at the route's own.
        let handler: MethodRouter<AppState> = route
            .handler
            .layer::<_, std::convert::Infallible>(guard)
            .layer(axum::extract::DefaultBodyLimit::max(limit));
        router = router.route(route.path, handler);
    }
    router
}

/// The largest body any route takes: what the outermost limit allows.
pub fn largest_body_limit(usual: usize) -> usize {
    routes()
        .iter()
        .filter_map(|r| r.body_limit)
        .fold(usual, usize::max)
}

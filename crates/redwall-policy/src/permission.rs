//! The one permission table.
//!
//! Every route names a [`Permission`]; whether a caller holds it is decided
//! from this table and nowhere else. Platform permissions are held through
//! the platform role; team permissions through the caller's role in the team
//! the request addresses.

use serde::{Deserialize, Serialize};

/// A named capability a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Permission {
    /// See one's own account, sessions, tokens, MFA state, teams and invitations.
    AccountRead,
    /// Change one's own password, sessions, tokens; answer one's invitations.
    AccountWrite,
    /// Enrol, confirm or remove one's own MFA. Allowed while MFA enrolment is pending.
    AccountMfa,
    /// End the current session (log out). Allowed while MFA enrolment is pending.
    AccountLogout,
    /// List and read users.
    UsersRead,
    /// Create, suspend, delete users and reset their MFA.
    UsersManage,
    /// Read platform settings.
    SettingsRead,
    /// Change platform settings.
    SettingsWrite,
    /// Read and export the platform audit log (every team's entries included).
    AuditPlatformRead,
    /// Scrape Prometheus metrics.
    MetricsRead,
    /// Create a team (the creator becomes its Owner).
    TeamCreate,
    /// See the team, its settings and its instances' names and status.
    TeamRead,
    /// Rename the team and change its settings.
    TeamSettingsWrite,
    /// Delete the team.
    TeamDelete,
    /// See the members and their roles.
    TeamMembersRead,
    /// Invite, remove members and change roles.
    TeamMembersManage,
    /// Leave the team.
    TeamLeave,
    /// Read and export the team audit log.
    AuditTeamRead,
    /// Create an instance in the team.
    InstanceCreate,
    /// See an instance's details, status and logs.
    InstanceRead,
    /// Start, stop and restart instances.
    InstanceControl,
    /// Delete an instance.
    InstanceDelete,
    /// Open the Node-RED editor with full rights (deploy).
    InstanceEditorWrite,
    /// Open the Node-RED editor read-only.
    InstanceEditorRead,
    /// Open the dashboards and forms an instance serves.
    InstanceDashboard,
    /// Set environment variables and secrets.
    InstanceEnvWrite,
    /// Change an instance's HTTP route policies and API keys.
    InstancePolicyWrite,
    /// Change what an instance may install (palette, function modules).
    InstanceOptionsWrite,
    /// Change what an instance may reach on the network beyond the default
    /// (its egress policy): opening the host or metadata addresses to flows.
    InstanceEgressWrite,
    /// See the team broker's clients and their topic rules (never their
    /// passwords).
    BrokerClientsRead,
    /// Create, rotate, re-rule and revoke the team broker's clients.
    BrokerClientsWrite,
    /// Narrow or widen an instance's own broker rules, or revoke its
    /// identity: Owners only (a Member's flows must not widen their reach).
    BrokerInstanceRulesWrite,
    /// See the team's snapshots, their contents (never their credentials)
    /// and diffs, and which snapshot each instance runs.
    SnapshotsRead,
    /// Take a snapshot by hand, with a note, or import one.
    SnapshotsCreate,
    /// Deploy a snapshot to an instance: rollback, and undoing one. Owners
    /// only: it replaces what runs.
    SnapshotsDeploy,
    /// Export a snapshot with its credentials, sealed under a passphrase the
    /// exporter chooses: Owners only, since it takes credentials out.
    SnapshotsExport,
    /// Define the team's pipelines (ordered stages, each a target) and
    /// instance groups, and promote a snapshot from one stage to the next.
    PipelinesWrite,
    /// Approve a promotion into a stage that requires it (never one's own).
    PipelinesApprove,
    /// Set the team's git repository, and push snapshots to it or pull
    /// flows from it.
    SnapshotsGitWrite,
    /// See the team's remote agents: names, keys' fingerprints, online or
    /// not, what they run.
    AgentsRead,
    /// Make provisioning tokens, revoke and delete agents: Owners only
    /// (an agent runs the team's flows on someone's network).
    AgentsManage,
    /// Send an agent a command (ping, restart its Node-RED).
    AgentsControl,
    /// See the agent builds the hub offers (version, platform, digest).
    AgentBuildsRead,
    /// Add and remove agent builds, which the hub signs and every team's
    /// agents may run: platform admins only.
    AgentBuildsManage,
}

/// A role at platform level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum PlatformRole {
    User,
    Admin,
}

impl PlatformRole {
    pub const ALL: [PlatformRole; 2] = [PlatformRole::User, PlatformRole::Admin];

    pub fn name(self) -> &'static str {
        match self {
            PlatformRole::User => "user",
            PlatformRole::Admin => "admin",
        }
    }
}

/// A member's role in a team, from least to most powerful (the derived
/// order is the power order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeamRole {
    Dashboard,
    Viewer,
    Member,
    Owner,
}

impl TeamRole {
    pub const ALL: [TeamRole; 4] = [
        TeamRole::Dashboard,
        TeamRole::Viewer,
        TeamRole::Member,
        TeamRole::Owner,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TeamRole::Dashboard => "dashboard",
            TeamRole::Viewer => "viewer",
            TeamRole::Member => "member",
            TeamRole::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<TeamRole> {
        TeamRole::ALL.into_iter().find(|r| r.name() == s)
    }
}

/// Where a permission is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Through the platform role.
    Platform,
    /// Through the role in the team the request addresses.
    Team,
}

/// One row of the table.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PermissionRow {
    pub permission: Permission,
    pub name: &'static str,
    pub scope: Scope,
    /// Read-only permissions are what a read-scoped token may use.
    pub read_only: bool,
    /// Usable by a user who must still enrol in MFA before anything else.
    pub during_mfa_enrolment: bool,
    /// Holders, for `Scope::Platform`.
    pub platform_roles: &'static [PlatformRole],
    /// Holders, for `Scope::Team`.
    pub team_roles: &'static [TeamRole],
}

use PlatformRole::{Admin, User};
use TeamRole::{Dashboard, Member, Owner, Viewer};

const EVERYONE: &[PlatformRole] = &[User, Admin];
const ADMINS: &[PlatformRole] = &[Admin];
const ALL_MEMBERS: &[TeamRole] = &[Dashboard, Viewer, Member, Owner];
const READERS: &[TeamRole] = &[Viewer, Member, Owner];
const WRITERS: &[TeamRole] = &[Member, Owner];
const OWNERS: &[TeamRole] = &[Owner];

/// What a permission does to data: a read-scoped token may use only `Reads`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Effect {
    Reads,
    Writes,
}

/// Whether a user who must still enrol in MFA may use the permission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DuringEnrolment {
    Usable,
    Held,
}

use DuringEnrolment::{Held, Usable};
use Effect::{Reads, Writes};

const fn platform(
    permission: Permission,
    name: &'static str,
    effect: Effect,
    enrolment: DuringEnrolment,
    roles: &'static [PlatformRole],
) -> PermissionRow {
    PermissionRow {
        permission,
        name,
        scope: Scope::Platform,
        read_only: matches!(effect, Reads),
        during_mfa_enrolment: matches!(enrolment, Usable),
        platform_roles: roles,
        team_roles: &[],
    }
}

const fn team(
    permission: Permission,
    name: &'static str,
    effect: Effect,
    roles: &'static [TeamRole],
) -> PermissionRow {
    PermissionRow {
        permission,
        name,
        scope: Scope::Team,
        read_only: matches!(effect, Reads),
        during_mfa_enrolment: false,
        platform_roles: &[],
        team_roles: roles,
    }
}

/// The table, in the enum's order (a test keeps it so).
pub const TABLE: &[PermissionRow] = &[
    platform(
        Permission::AccountRead,
        "account:read",
        Reads,
        Usable,
        EVERYONE,
    ),
    platform(
        Permission::AccountWrite,
        "account:write",
        Writes,
        Held,
        EVERYONE,
    ),
    platform(
        Permission::AccountMfa,
        "account:mfa",
        Writes,
        Usable,
        EVERYONE,
    ),
    platform(
        Permission::AccountLogout,
        "account:logout",
        Writes,
        Usable,
        EVERYONE,
    ),
    platform(Permission::UsersRead, "users:read", Reads, Held, ADMINS),
    platform(
        Permission::UsersManage,
        "users:manage",
        Writes,
        Held,
        ADMINS,
    ),
    platform(
        Permission::SettingsRead,
        "platform:settings:read",
        Reads,
        Held,
        ADMINS,
    ),
    platform(
        Permission::SettingsWrite,
        "platform:settings:write",
        Writes,
        Held,
        ADMINS,
    ),
    platform(
        Permission::AuditPlatformRead,
        "audit:platform:read",
        Reads,
        Held,
        ADMINS,
    ),
    platform(Permission::MetricsRead, "metrics:read", Reads, Held, ADMINS),
    platform(
        Permission::TeamCreate,
        "team:create",
        Writes,
        Held,
        EVERYONE,
    ),
    team(Permission::TeamRead, "team:read", Reads, ALL_MEMBERS),
    team(
        Permission::TeamSettingsWrite,
        "team:settings:write",
        Writes,
        OWNERS,
    ),
    team(Permission::TeamDelete, "team:delete", Writes, OWNERS),
    team(
        Permission::TeamMembersRead,
        "team:members:read",
        Reads,
        READERS,
    ),
    team(
        Permission::TeamMembersManage,
        "team:members:manage",
        Writes,
        OWNERS,
    ),
    team(Permission::TeamLeave, "team:leave", Writes, ALL_MEMBERS),
    team(Permission::AuditTeamRead, "audit:team:read", Reads, OWNERS),
    team(
        Permission::InstanceCreate,
        "instance:create",
        Writes,
        WRITERS,
    ),
    team(Permission::InstanceRead, "instance:read", Reads, READERS),
    team(
        Permission::InstanceControl,
        "instance:control",
        Writes,
        WRITERS,
    ),
    team(
        Permission::InstanceDelete,
        "instance:delete",
        Writes,
        OWNERS,
    ),
    team(
        Permission::InstanceEditorWrite,
        "instance:editor:write",
        Writes,
        WRITERS,
    ),
    team(
        Permission::InstanceEditorRead,
        "instance:editor:read",
        Reads,
        READERS,
    ),
    team(
        Permission::InstanceDashboard,
        "instance:dashboard",
        Reads,
        ALL_MEMBERS,
    ),
    team(
        Permission::InstanceEnvWrite,
        "instance:env:write",
        Writes,
        WRITERS,
    ),
    team(
        Permission::InstancePolicyWrite,
        "instance:policy:write",
        Writes,
        WRITERS,
    ),
    team(
        Permission::InstanceOptionsWrite,
        "instance:options:write",
        Writes,
        OWNERS,
    ),
    team(
        Permission::InstanceEgressWrite,
        "instance:egress:write",
        Writes,
        OWNERS,
    ),
    team(
        Permission::BrokerClientsRead,
        "broker:clients:read",
        Reads,
        READERS,
    ),
    team(
        Permission::BrokerClientsWrite,
        "broker:clients:write",
        Writes,
        WRITERS,
    ),
    team(
        Permission::BrokerInstanceRulesWrite,
        "broker:instance_rules:write",
        Writes,
        OWNERS,
    ),
    team(Permission::SnapshotsRead, "snapshot:read", Reads, WRITERS),
    team(
        Permission::SnapshotsCreate,
        "snapshot:create",
        Writes,
        WRITERS,
    ),
    team(
        Permission::SnapshotsDeploy,
        "snapshot:deploy",
        Writes,
        OWNERS,
    ),
    team(
        Permission::SnapshotsExport,
        "snapshot:export",
        Writes,
        OWNERS,
    ),
    team(Permission::PipelinesWrite, "pipeline:write", Writes, OWNERS),
    team(
        Permission::PipelinesApprove,
        "pipeline:approve",
        Writes,
        OWNERS,
    ),
    team(
        Permission::SnapshotsGitWrite,
        "snapshot:git:write",
        Writes,
        OWNERS,
    ),
    team(Permission::AgentsRead, "agent:read", Reads, WRITERS),
    team(Permission::AgentsManage, "agent:manage", Writes, OWNERS),
    team(Permission::AgentsControl, "agent:control", Writes, WRITERS),
    platform(
        Permission::AgentBuildsRead,
        "agent:builds:read",
        Reads,
        Held,
        EVERYONE,
    ),
    platform(
        Permission::AgentBuildsManage,
        "agent:builds:manage",
        Writes,
        Held,
        ADMINS,
    ),
];

impl Permission {
    pub const ALL: [Permission; 44] = [
        Permission::AccountRead,
        Permission::AccountWrite,
        Permission::AccountMfa,
        Permission::AccountLogout,
        Permission::UsersRead,
        Permission::UsersManage,
        Permission::SettingsRead,
        Permission::SettingsWrite,
        Permission::AuditPlatformRead,
        Permission::MetricsRead,
        Permission::TeamCreate,
        Permission::TeamRead,
        Permission::TeamSettingsWrite,
        Permission::TeamDelete,
        Permission::TeamMembersRead,
        Permission::TeamMembersManage,
        Permission::TeamLeave,
        Permission::AuditTeamRead,
        Permission::InstanceCreate,
        Permission::InstanceRead,
        Permission::InstanceControl,
        Permission::InstanceDelete,
        Permission::InstanceEditorWrite,
        Permission::InstanceEditorRead,
        Permission::InstanceDashboard,
        Permission::InstanceEnvWrite,
        Permission::InstancePolicyWrite,
        Permission::InstanceOptionsWrite,
        Permission::InstanceEgressWrite,
        Permission::BrokerClientsRead,
        Permission::BrokerClientsWrite,
        Permission::BrokerInstanceRulesWrite,
        Permission::SnapshotsRead,
        Permission::SnapshotsCreate,
        Permission::SnapshotsDeploy,
        Permission::SnapshotsExport,
        Permission::PipelinesWrite,
        Permission::PipelinesApprove,
        Permission::SnapshotsGitWrite,
        Permission::AgentsRead,
        Permission::AgentsManage,
        Permission::AgentsControl,
        Permission::AgentBuildsRead,
        Permission::AgentBuildsManage,
    ];

    pub fn row(self) -> &'static PermissionRow {
        // The table is indexed like the enum; a test keeps it so.
        &TABLE[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.row().name
    }

    pub fn is_read_only(self) -> bool {
        self.row().read_only
    }

    pub fn scope(self) -> Scope {
        self.row().scope
    }

    pub fn from_name(name: &str) -> Option<Permission> {
        TABLE.iter().find(|r| r.name == name).map(|r| r.permission)
    }
}

/// Whether a platform role holds a platform permission, by the table alone.
pub fn role_holds(role: PlatformRole, permission: Permission) -> bool {
    permission.row().platform_roles.contains(&role)
}

/// Whether a team role holds a team permission, by the table alone.
pub fn team_role_holds(role: TeamRole, permission: Permission) -> bool {
    permission.row().team_roles.contains(&role)
}

/// The team permissions a role holds (what `GET /api/v1/permissions` shows per role).
pub fn team_permissions(role: TeamRole) -> impl Iterator<Item = Permission> {
    Permission::ALL
        .into_iter()
        .filter(move |p| team_role_holds(role, *p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_table_is_complete_and_indexed_like_the_enum() {
        assert_eq!(TABLE.len(), Permission::ALL.len());
        for (i, p) in Permission::ALL.iter().enumerate() {
            assert_eq!(TABLE[i].permission, *p, "row {i} is out of order");
            assert_eq!(*p as usize, i);
        }
    }

    #[test]
    fn names_are_unique_and_round_trip() {
        for p in Permission::ALL {
            assert_eq!(Permission::from_name(p.name()), Some(p));
        }
        let mut names: Vec<_> = TABLE.iter().map(|r| r.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TABLE.len());
    }

    #[test]
    fn every_row_has_holders_of_its_own_scope_only() {
        for row in TABLE {
            match row.scope {
                Scope::Platform => {
                    assert!(
                        !row.platform_roles.is_empty() && row.team_roles.is_empty(),
                        "{}",
                        row.name
                    )
                }
                Scope::Team => {
                    assert!(
                        row.platform_roles.is_empty() && !row.team_roles.is_empty(),
                        "{}",
                        row.name
                    );
                    assert!(!row.during_mfa_enrolment, "{}", row.name);
                }
            }
        }
    }

    #[test]
    fn a_role_never_holds_what_a_more_powerful_role_lacks() {
        for p in Permission::ALL {
            for weak in TeamRole::ALL {
                for strong in TeamRole::ALL.into_iter().filter(|s| *s > weak) {
                    if team_role_holds(weak, p) {
                        assert!(
                            team_role_holds(strong, p),
                            "{weak:?} has {p:?} but {strong:?} lacks it"
                        );
                    }
                }
            }
            if role_holds(PlatformRole::User, p) {
                assert!(role_holds(PlatformRole::Admin, p), "{p:?}");
            }
        }
    }

    #[test]
    fn the_roles_match_their_descriptions() {
        use Permission as P;
        // Owner: everything in the team.
        assert!(Permission::ALL
            .iter()
            .filter(|p| p.scope() == Scope::Team)
            .all(|p| team_role_holds(TeamRole::Owner, *p)));
        // Member: uses and changes instances, but cannot manage members or delete.
        for p in [
            P::InstanceControl,
            P::InstanceEditorWrite,
            P::InstanceEnvWrite,
            P::InstancePolicyWrite,
        ] {
            assert!(team_role_holds(TeamRole::Member, p), "{p:?}");
        }
        for p in [
            P::TeamMembersManage,
            P::TeamDelete,
            P::InstanceDelete,
            P::TeamSettingsWrite,
        ] {
            assert!(!team_role_holds(TeamRole::Member, p), "{p:?}");
        }
        // Viewer: read-only.
        assert!(team_permissions(TeamRole::Viewer).all(|p| p.is_read_only() || p == P::TeamLeave));
        assert!(team_role_holds(TeamRole::Viewer, P::InstanceEditorRead));
        // Dashboard: only dashboards (plus seeing the team and leaving it).
        let dashboard: Vec<_> = team_permissions(TeamRole::Dashboard).collect();
        assert_eq!(
            dashboard,
            vec![P::TeamRead, P::TeamLeave, P::InstanceDashboard]
        );
    }

    #[test]
    fn plain_users_cannot_reach_platform_administration() {
        for p in [
            Permission::UsersRead,
            Permission::UsersManage,
            Permission::SettingsRead,
            Permission::SettingsWrite,
            Permission::AuditPlatformRead,
            Permission::MetricsRead,
            Permission::AgentBuildsManage,
        ] {
            assert!(!role_holds(PlatformRole::User, p), "{p:?}");
        }
    }
}

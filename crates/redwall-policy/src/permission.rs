//! The one permission table.
//!
//! Every route names a [`Permission`]; whether a principal holds it is decided
//! here and nowhere else. Later issues add team roles as further holders in
//! the same table.

use serde::Serialize;

/// A named capability a request needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Permission {
    /// See one's own account, sessions, tokens and MFA state.
    AccountRead,
    /// Change one's own password, end one's own sessions, manage one's own tokens.
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
    /// Read and export the platform audit log.
    AuditPlatformRead,
    /// Scrape Prometheus metrics.
    MetricsRead,
}

/// A role at platform level. Team roles arrive with the teams issue.
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

/// One row of the table: a permission, whether it only reads, and who holds it.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PermissionRow {
    pub permission: Permission,
    pub name: &'static str,
    /// Read-only permissions are what a read-scoped token may use.
    pub read_only: bool,
    /// Usable by a user who must still enrol in MFA before anything else.
    pub during_mfa_enrolment: bool,
    pub platform_roles: &'static [PlatformRole],
}

use PlatformRole::{Admin, User};

const EVERYONE: &[PlatformRole] = &[User, Admin];
const ADMINS: &[PlatformRole] = &[Admin];

/// The table. Keep it sorted like the enum; `permission_table_is_complete` checks it.
pub const TABLE: &[PermissionRow] = &[
    row(
        Permission::AccountRead,
        "account:read",
        true,
        true,
        EVERYONE,
    ),
    row(
        Permission::AccountWrite,
        "account:write",
        false,
        false,
        EVERYONE,
    ),
    row(Permission::AccountMfa, "account:mfa", false, true, EVERYONE),
    row(
        Permission::AccountLogout,
        "account:logout",
        false,
        true,
        EVERYONE,
    ),
    row(Permission::UsersRead, "users:read", true, false, ADMINS),
    row(
        Permission::UsersManage,
        "users:manage",
        false,
        false,
        ADMINS,
    ),
    row(
        Permission::SettingsRead,
        "platform:settings:read",
        true,
        false,
        ADMINS,
    ),
    row(
        Permission::SettingsWrite,
        "platform:settings:write",
        false,
        false,
        ADMINS,
    ),
    row(
        Permission::AuditPlatformRead,
        "audit:platform:read",
        true,
        false,
        ADMINS,
    ),
    row(Permission::MetricsRead, "metrics:read", true, false, ADMINS),
];

const fn row(
    permission: Permission,
    name: &'static str,
    read_only: bool,
    during_mfa_enrolment: bool,
    platform_roles: &'static [PlatformRole],
) -> PermissionRow {
    PermissionRow {
        permission,
        name,
        read_only,
        during_mfa_enrolment,
        platform_roles,
    }
}

impl Permission {
    pub const ALL: [Permission; 10] = [
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
    ];

    pub fn row(self) -> &'static PermissionRow {
        // The table is indexed like the enum; the test below keeps it so.
        &TABLE[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.row().name
    }

    pub fn is_read_only(self) -> bool {
        self.row().read_only
    }

    pub fn from_name(name: &str) -> Option<Permission> {
        TABLE.iter().find(|r| r.name == name).map(|r| r.permission)
    }
}

/// Whether a platform role holds a permission, by the table alone.
pub fn role_holds(role: PlatformRole, permission: Permission) -> bool {
    permission.row().platform_roles.contains(&role)
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
    fn admin_holds_everything_a_user_holds() {
        for p in Permission::ALL {
            if role_holds(PlatformRole::User, p) {
                assert!(role_holds(PlatformRole::Admin, p), "{p:?}");
            }
        }
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
        ] {
            assert!(!role_holds(PlatformRole::User, p), "{p:?}");
        }
    }
}

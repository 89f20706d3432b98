//! The security-relevant events Redwall records. One enum, so an event name
//! cannot be misspelt at one call site and the list is documented in one place.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum AuditEvent {
    SetupCompleted,
    SetupTokenRejected,
    LoginSucceeded,
    LoginFailed,
    LoginThrottled,
    Logout,
    LogoutEverywhere,
    SessionEnded,
    SessionExpired,
    PasswordChanged,
    PasswordRehashed,
    MfaEnrolmentStarted,
    MfaEnabled,
    MfaDisabled,
    MfaVerifyFailed,
    MfaRecoveryCodeUsed,
    MfaReset,
    TokenCreated,
    TokenRevoked,
    TokenRejected,
    UserCreated,
    UserImported,
    UserSuspended,
    UserReinstated,
    UserAdminChanged,
    UserDeleted,
    SettingChanged,
    AccessDenied,
    CsrfRejected,
    AuditExported,
    TeamCreated,
    TeamRenamed,
    TeamSettingsChanged,
    TeamDeleted,
    MemberInvited,
    InvitationRevoked,
    InvitationAccepted,
    InvitationDeclined,
    MemberRoleChanged,
    MemberRemoved,
    MemberLeft,
    AdminTeamAccess,
    TeamAuditExported,
    InstanceCreated,
    InstanceStarted,
    InstanceStopped,
    InstanceRestarted,
    InstanceCrashed,
    InstanceDeleted,
    InstanceOptionsChanged,
    InstanceEnvChanged,
    InstanceRoutesChanged,
    InstanceKeyCreated,
    InstanceKeyRevoked,
    InstanceKeyRejected,
    InstanceBasicRejected,
    InstanceEditorDenied,
    InstanceNodeRedEvent,
    KeysRotated,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }
}

impl AuditEvent {
    pub const ALL: [AuditEvent; 59] = [
        AuditEvent::SetupCompleted,
        AuditEvent::SetupTokenRejected,
        AuditEvent::LoginSucceeded,
        AuditEvent::LoginFailed,
        AuditEvent::LoginThrottled,
        AuditEvent::Logout,
        AuditEvent::LogoutEverywhere,
        AuditEvent::SessionEnded,
        AuditEvent::SessionExpired,
        AuditEvent::PasswordChanged,
        AuditEvent::PasswordRehashed,
        AuditEvent::MfaEnrolmentStarted,
        AuditEvent::MfaEnabled,
        AuditEvent::MfaDisabled,
        AuditEvent::MfaVerifyFailed,
        AuditEvent::MfaRecoveryCodeUsed,
        AuditEvent::MfaReset,
        AuditEvent::TokenCreated,
        AuditEvent::TokenRevoked,
        AuditEvent::TokenRejected,
        AuditEvent::UserCreated,
        AuditEvent::UserImported,
        AuditEvent::UserSuspended,
        AuditEvent::UserReinstated,
        AuditEvent::UserAdminChanged,
        AuditEvent::UserDeleted,
        AuditEvent::SettingChanged,
        AuditEvent::AccessDenied,
        AuditEvent::CsrfRejected,
        AuditEvent::AuditExported,
        AuditEvent::TeamCreated,
        AuditEvent::TeamRenamed,
        AuditEvent::TeamSettingsChanged,
        AuditEvent::TeamDeleted,
        AuditEvent::MemberInvited,
        AuditEvent::InvitationRevoked,
        AuditEvent::InvitationAccepted,
        AuditEvent::InvitationDeclined,
        AuditEvent::MemberRoleChanged,
        AuditEvent::MemberRemoved,
        AuditEvent::MemberLeft,
        AuditEvent::AdminTeamAccess,
        AuditEvent::TeamAuditExported,
        AuditEvent::InstanceCreated,
        AuditEvent::InstanceStarted,
        AuditEvent::InstanceStopped,
        AuditEvent::InstanceRestarted,
        AuditEvent::InstanceCrashed,
        AuditEvent::InstanceDeleted,
        AuditEvent::InstanceOptionsChanged,
        AuditEvent::InstanceEnvChanged,
        AuditEvent::InstanceRoutesChanged,
        AuditEvent::InstanceKeyCreated,
        AuditEvent::InstanceKeyRevoked,
        AuditEvent::InstanceKeyRejected,
        AuditEvent::InstanceBasicRejected,
        AuditEvent::InstanceEditorDenied,
        AuditEvent::InstanceNodeRedEvent,
        AuditEvent::KeysRotated,
    ];

    /// The stable name stored in the log and used in filters ("auth.*").
    pub fn name(self) -> &'static str {
        use AuditEvent::*;
        match self {
            SetupCompleted => "setup.completed",
            SetupTokenRejected => "setup.token_rejected",
            LoginSucceeded => "auth.login",
            LoginFailed => "auth.login_failed",
            LoginThrottled => "auth.login_throttled",
            Logout => "auth.logout",
            LogoutEverywhere => "auth.logout_everywhere",
            SessionEnded => "session.ended",
            SessionExpired => "session.expired",
            PasswordChanged => "user.password_changed",
            PasswordRehashed => "user.password_rehashed",
            MfaEnrolmentStarted => "mfa.enrolment_started",
            MfaEnabled => "mfa.enabled",
            MfaDisabled => "mfa.disabled",
            MfaVerifyFailed => "mfa.verify_failed",
            MfaRecoveryCodeUsed => "mfa.recovery_code_used",
            MfaReset => "mfa.reset",
            TokenCreated => "token.created",
            TokenRevoked => "token.revoked",
            TokenRejected => "token.rejected",
            UserCreated => "user.created",
            UserImported => "user.imported",
            UserSuspended => "user.suspended",
            UserReinstated => "user.reinstated",
            UserAdminChanged => "user.admin_changed",
            UserDeleted => "user.deleted",
            SettingChanged => "setting.changed",
            AccessDenied => "access.denied",
            CsrfRejected => "access.csrf_rejected",
            AuditExported => "audit.exported",
            TeamCreated => "team.created",
            TeamRenamed => "team.renamed",
            TeamSettingsChanged => "team.settings_changed",
            TeamDeleted => "team.deleted",
            MemberInvited => "team.member_invited",
            InvitationRevoked => "team.invitation_revoked",
            InvitationAccepted => "team.member_joined",
            InvitationDeclined => "team.invitation_declined",
            MemberRoleChanged => "team.role_changed",
            MemberRemoved => "team.member_removed",
            MemberLeft => "team.member_left",
            AdminTeamAccess => "admin.team_access",
            TeamAuditExported => "team.audit_exported",
            InstanceCreated => "instance.created",
            InstanceStarted => "instance.started",
            InstanceStopped => "instance.stopped",
            InstanceRestarted => "instance.restarted",
            InstanceCrashed => "instance.crashed",
            InstanceDeleted => "instance.deleted",
            InstanceOptionsChanged => "instance.options_changed",
            InstanceEnvChanged => "instance.env_changed",
            InstanceRoutesChanged => "instance.routes_changed",
            InstanceKeyCreated => "instance.key_created",
            InstanceKeyRevoked => "instance.key_revoked",
            InstanceKeyRejected => "instance.key_rejected",
            InstanceBasicRejected => "instance.basic_rejected",
            InstanceEditorDenied => "instance.editor_denied",
            InstanceNodeRedEvent => "instance.node_red",
            KeysRotated => "keys.rotated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_dotted() {
        let mut names: Vec<_> = AuditEvent::ALL.iter().map(|e| e.name()).collect();
        assert!(names.iter().all(|n| n.contains('.') && !n.contains(' ')));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), AuditEvent::ALL.len());
    }
}

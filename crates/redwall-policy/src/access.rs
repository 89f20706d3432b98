//! The access decision for one request: who is asking, with what credential,
//! in which team, for which permission. Pure, so it is tested over every
//! combination.

use crate::permission::{role_holds, team_role_holds, Permission, PlatformRole, Scope, TeamRole};
use serde::{Deserialize, Serialize};

/// What a personal access token may do, chosen when it is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenScope {
    /// Only read-only permissions.
    Read,
    /// Everything the user may do.
    Full,
}

impl TokenScope {
    pub const ALL: [TokenScope; 2] = [TokenScope::Read, TokenScope::Full];

    pub fn name(self) -> &'static str {
        match self {
            TokenScope::Read => "read",
            TokenScope::Full => "full",
        }
    }

    pub fn parse(s: &str) -> Option<TokenScope> {
        match s {
            "read" => Some(TokenScope::Read),
            "full" => Some(TokenScope::Full),
            _ => None,
        }
    }
}

/// How a team-limited token relates to the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenTeam {
    /// The token is not limited to a team.
    Any,
    /// The token is limited to the team this request addresses.
    ThisTeam,
    /// The token is limited to a team, and the request addresses none or another.
    Elsewhere,
}

impl TokenTeam {
    /// How a token limited to `limited` (if to any team) relates to a
    /// request that addresses `addressed` (if any team).
    pub fn of(limited: Option<&str>, addressed: Option<&str>) -> TokenTeam {
        match (limited, addressed) {
            (None, _) => TokenTeam::Any,
            (Some(l), Some(a)) if l == a => TokenTeam::ThisTeam,
            (Some(_), _) => TokenTeam::Elsewhere,
        }
    }
}

/// How the caller proved who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    /// A browser session. `mfa_enrolment_pending` is true when the platform
    /// requires MFA and the user has not enrolled yet.
    Session { mfa_enrolment_pending: bool },
    /// A personal access token, optionally limited to one team and to a
    /// subset of permissions.
    Token {
        scope: TokenScope,
        team: TokenTeam,
        permissions: Option<&'a [Permission]>,
    },
}

/// Everything the decision needs to know about the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller<'a> {
    pub platform_role: PlatformRole,
    pub credential: Credential<'a>,
    /// The caller's role in the team the request addresses; `None` when not
    /// a member (or the request addresses no team).
    pub team_role: Option<TeamRole>,
    /// A platform admin explicitly asking for (audited) access to this team.
    pub admin_override: bool,
    /// The addressed team requires MFA and the caller has not enrolled.
    pub team_mfa_missing: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Denial {
    /// The role does not hold the permission.
    NotPermitted,
    /// The token's scope, team or permission list does not cover the request.
    TokenScope,
    /// MFA is required on the platform and the user must enrol first.
    MfaEnrolmentRequired,
    /// The team requires MFA and the caller has not enrolled.
    TeamMfaRequired,
    /// The caller is not in the team: answered like a team that does not
    /// exist, so ids of other tenants reveal nothing.
    NotFound,
}

/// Decides whether `caller` may use `permission`.
pub fn decide(caller: &Caller<'_>, permission: Permission) -> Result<(), Denial> {
    let row = permission.row();
    match caller.credential {
        Credential::Session {
            mfa_enrolment_pending: true,
        } if !row.during_mfa_enrolment => return Err(Denial::MfaEnrolmentRequired),
        Credential::Session { .. } => {}
        Credential::Token {
            scope,
            team,
            permissions,
        } => {
            if scope == TokenScope::Read && !row.read_only {
                return Err(Denial::TokenScope);
            }
            if permissions.is_some_and(|list| !list.contains(&permission)) {
                return Err(Denial::TokenScope);
            }
            let team_ok = match (team, row.scope) {
                (TokenTeam::Any, _) => true,
                (TokenTeam::ThisTeam, Scope::Team) => true,
                // A team token may still say whose it is.
                (_, Scope::Platform) => permission == Permission::AccountRead,
                // Another team is, to this token, a team that does not
                // exist: the same answer, so it tells nothing of the id.
                (TokenTeam::Elsewhere, Scope::Team) => return Err(Denial::NotFound),
            };
            if !team_ok {
                return Err(Denial::TokenScope);
            }
        }
    }
    match row.scope {
        Scope::Platform => {
            if role_holds(caller.platform_role, permission) {
                Ok(())
            } else {
                Err(Denial::NotPermitted)
            }
        }
        Scope::Team => {
            let role = if caller.admin_override && caller.platform_role == PlatformRole::Admin {
                Some(TeamRole::Owner)
            } else {
                caller.team_role
            };
            let Some(role) = role else {
                return Err(Denial::NotFound);
            };
            if caller.team_mfa_missing {
                return Err(Denial::TeamMfaRequired);
            }
            if team_role_holds(role, permission) {
                Ok(())
            } else {
                Err(Denial::NotPermitted)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn credentials(subset: &[Permission]) -> Vec<Credential<'_>> {
        let mut all = vec![
            Credential::Session {
                mfa_enrolment_pending: false,
            },
            Credential::Session {
                mfa_enrolment_pending: true,
            },
        ];
        for scope in TokenScope::ALL {
            for team in [TokenTeam::Any, TokenTeam::ThisTeam, TokenTeam::Elsewhere] {
                for permissions in [None, Some(subset)] {
                    all.push(Credential::Token {
                        scope,
                        team,
                        permissions,
                    });
                }
            }
        }
        all
    }

    fn callers<'a>(subset: &'a [Permission]) -> Vec<Caller<'a>> {
        let mut out = Vec::new();
        for platform_role in PlatformRole::ALL {
            for credential in credentials(subset) {
                for team_role in std::iter::once(None).chain(TeamRole::ALL.map(Some)) {
                    for admin_override in [false, true] {
                        for team_mfa_missing in [false, true] {
                            out.push(Caller {
                                platform_role,
                                credential,
                                team_role,
                                admin_override,
                                team_mfa_missing,
                            });
                        }
                    }
                }
            }
        }
        out
    }

    /// The rules written out a second way, as a reader of the issue would.
    fn expected(c: &Caller<'_>, p: Permission) -> bool {
        let row = p.row();
        let credential_ok = match c.credential {
            Credential::Session {
                mfa_enrolment_pending,
            } => !mfa_enrolment_pending || row.during_mfa_enrolment,
            Credential::Token {
                scope,
                team,
                permissions,
            } => {
                (scope == TokenScope::Full || row.read_only)
                    && permissions.is_none_or(|l| l.contains(&p))
                    && match team {
                        TokenTeam::Any => true,
                        TokenTeam::ThisTeam => {
                            row.scope == Scope::Team || p == Permission::AccountRead
                        }
                        TokenTeam::Elsewhere => p == Permission::AccountRead,
                    }
            }
        };
        let role_ok = match row.scope {
            Scope::Platform => row.platform_roles.contains(&c.platform_role),
            Scope::Team => {
                let admin = c.admin_override && c.platform_role == PlatformRole::Admin;
                !c.team_mfa_missing
                    && (admin || c.team_role.is_some_and(|r| row.team_roles.contains(&r)))
            }
        };
        credential_ok && role_ok
    }

    #[test]
    fn every_combination_matches_the_table() {
        let subset = [
            Permission::AccountRead,
            Permission::TeamRead,
            Permission::InstanceControl,
        ];
        for caller in callers(&subset) {
            for p in Permission::ALL {
                assert_eq!(
                    decide(&caller, p).is_ok(),
                    expected(&caller, p),
                    "{caller:?} {p:?}"
                );
            }
        }
    }

    #[test]
    fn strangers_to_a_team_see_not_found() {
        let caller = Caller {
            platform_role: PlatformRole::User,
            credential: Credential::Session {
                mfa_enrolment_pending: false,
            },
            team_role: None,
            admin_override: false,
            team_mfa_missing: false,
        };
        for p in Permission::ALL
            .into_iter()
            .filter(|p| p.scope() == Scope::Team)
        {
            assert_eq!(decide(&caller, p), Err(Denial::NotFound));
        }
        // An admin without the explicit override is a stranger too.
        let admin = Caller {
            platform_role: PlatformRole::Admin,
            ..caller
        };
        assert_eq!(decide(&admin, Permission::TeamRead), Err(Denial::NotFound));
        let overriding = Caller {
            admin_override: true,
            ..admin
        };
        assert_eq!(decide(&overriding, Permission::TeamMembersManage), Ok(()));
        // The override means nothing for a non-admin.
        let pretender = Caller {
            admin_override: true,
            ..caller
        };
        assert_eq!(
            decide(&pretender, Permission::TeamRead),
            Err(Denial::NotFound)
        );
    }

    #[test]
    fn a_team_token_sees_other_teams_as_missing() {
        let caller = Caller {
            platform_role: PlatformRole::User,
            credential: Credential::Token {
                scope: TokenScope::Full,
                team: TokenTeam::Elsewhere,
                permissions: None,
            },
            team_role: Some(TeamRole::Owner),
            admin_override: false,
            team_mfa_missing: false,
        };
        for p in Permission::ALL
            .into_iter()
            .filter(|p| p.scope() == Scope::Team)
        {
            assert_eq!(decide(&caller, p), Err(Denial::NotFound), "{p:?}");
        }
    }

    fn any_caller() -> impl Strategy<Value = (usize, usize)> {
        (0..PlatformRole::ALL.len(), 0..14usize)
    }

    proptest! {
        #[test]
        fn a_more_powerful_team_role_is_never_refused_what_a_weaker_one_gets(
            (role_i, cred_i) in any_caller(),
            weak_i in 0..4usize,
            strong_i in 0..4usize,
            p_i in 0..Permission::ALL.len(),
        ) {
            let subset = [Permission::TeamRead];
            let creds = credentials(&subset);
            let (weak, strong) = (TeamRole::ALL[weak_i], TeamRole::ALL[strong_i]);
            prop_assume!(weak < strong);
            let base = Caller {
                platform_role: PlatformRole::ALL[role_i],
                credential: creds[cred_i % creds.len()],
                team_role: Some(weak),
                admin_override: false,
                team_mfa_missing: false,
            };
            let p = Permission::ALL[p_i];
            if decide(&base, p).is_ok() {
                let stronger = Caller { team_role: Some(strong), ..base };
                prop_assert!(decide(&stronger, p).is_ok());
            }
        }

        #[test]
        fn a_token_never_grants_more_than_a_session(
            role_i in 0..2usize,
            team_i in 0..5usize,
            cred_i in 0..14usize,
            p_i in 0..Permission::ALL.len(),
        ) {
            let subset = [Permission::TeamRead, Permission::InstanceControl];
            let creds = credentials(&subset);
            let team_role = [None, Some(TeamRole::Dashboard), Some(TeamRole::Viewer), Some(TeamRole::Member), Some(TeamRole::Owner)][team_i];
            let as_token = Caller {
                platform_role: PlatformRole::ALL[role_i],
                credential: creds[cred_i % creds.len()],
                team_role,
                admin_override: false,
                team_mfa_missing: false,
            };
            let session = Credential::Session { mfa_enrolment_pending: false };
            let as_session = Caller { credential: session, ..as_token };
            let p = Permission::ALL[p_i];
            if decide(&as_token, p).is_ok() {
                prop_assert!(decide(&as_session, p).is_ok());
            }
        }
    }

    #[test]
    fn a_team_limited_token_fits_only_its_team() {
        assert_eq!(TokenTeam::of(None, None), TokenTeam::Any);
        assert_eq!(TokenTeam::of(None, Some("t1")), TokenTeam::Any);
        assert_eq!(TokenTeam::of(Some("t1"), Some("t1")), TokenTeam::ThisTeam);
        assert_eq!(TokenTeam::of(Some("t1"), Some("t2")), TokenTeam::Elsewhere);
        assert_eq!(TokenTeam::of(Some("t1"), None), TokenTeam::Elsewhere);
    }
}

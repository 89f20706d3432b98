//! The access decision for one request: who is asking, with what credential,
//! for which permission. Pure, so it is tested over every combination.

use crate::permission::{role_holds, Permission, PlatformRole};
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

/// How the caller proved who they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Credential {
    /// A browser session. `mfa_enrolment_pending` is true when MFA is required
    /// for this user and they have not enrolled yet.
    Session { mfa_enrolment_pending: bool },
    /// A personal access token.
    Token { scope: TokenScope },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Denial {
    /// The role does not hold the permission.
    NotPermitted,
    /// The token's scope does not cover the permission.
    TokenScope,
    /// MFA is required and the user must enrol before anything else.
    MfaEnrolmentRequired,
}

/// Decides whether a caller with `role` and `credential` may use `permission`.
pub fn decide(
    role: PlatformRole,
    credential: Credential,
    permission: Permission,
) -> Result<(), Denial> {
    if let Credential::Session {
        mfa_enrolment_pending: true,
    } = credential
    {
        if !permission.row().during_mfa_enrolment {
            return Err(Denial::MfaEnrolmentRequired);
        }
    }
    if !role_holds(role, permission) {
        return Err(Denial::NotPermitted);
    }
    if let Credential::Token {
        scope: TokenScope::Read,
    } = credential
    {
        if !permission.is_read_only() {
            return Err(Denial::TokenScope);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials() -> Vec<Credential> {
        let mut all = vec![
            Credential::Session {
                mfa_enrolment_pending: false,
            },
            Credential::Session {
                mfa_enrolment_pending: true,
            },
        ];
        all.extend(TokenScope::ALL.map(|scope| Credential::Token { scope }));
        all
    }

    #[test]
    fn every_combination_matches_the_table() {
        for role in PlatformRole::ALL {
            for credential in credentials() {
                for p in Permission::ALL {
                    let allowed = decide(role, credential, p).is_ok();
                    let expected = role_holds(role, p)
                        && match credential {
                            Credential::Session {
                                mfa_enrolment_pending,
                            } => !mfa_enrolment_pending || p.row().during_mfa_enrolment,
                            Credential::Token { scope } => {
                                scope == TokenScope::Full || p.is_read_only()
                            }
                        };
                    assert_eq!(allowed, expected, "{role:?} {credential:?} {p:?}");
                }
            }
        }
    }

    #[test]
    fn a_read_token_never_writes() {
        for role in PlatformRole::ALL {
            for p in Permission::ALL.into_iter().filter(|p| !p.is_read_only()) {
                assert!(decide(
                    role,
                    Credential::Token {
                        scope: TokenScope::Read
                    },
                    p
                )
                .is_err());
            }
        }
    }

    #[test]
    fn a_token_never_grants_more_than_a_session() {
        for role in PlatformRole::ALL {
            for scope in TokenScope::ALL {
                for p in Permission::ALL {
                    if decide(role, Credential::Token { scope }, p).is_ok() {
                        assert!(decide(
                            role,
                            Credential::Session {
                                mfa_enrolment_pending: false
                            },
                            p
                        )
                        .is_ok());
                    }
                }
            }
        }
    }

    #[test]
    fn pending_enrolment_only_reaches_mfa_and_logout() {
        let pending = Credential::Session {
            mfa_enrolment_pending: true,
        };
        assert!(decide(PlatformRole::Admin, pending, Permission::AccountMfa).is_ok());
        assert!(decide(PlatformRole::Admin, pending, Permission::AccountLogout).is_ok());
        assert_eq!(
            decide(PlatformRole::Admin, pending, Permission::UsersManage),
            Err(Denial::MfaEnrolmentRequired)
        );
    }
}

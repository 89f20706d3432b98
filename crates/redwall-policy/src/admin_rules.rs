//! The platform always keeps an active admin, and no admin locks
//! themselves out.

/// Why a change to an account was refused; `code` is the API's error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminRefusal {
    /// An admin may not suspend, delete or demote their own account.
    CannotTargetSelf,
    /// The change would leave no active platform admin.
    LastAdmin,
}

impl AdminRefusal {
    pub fn code(self) -> &'static str {
        match self {
            AdminRefusal::CannotTargetSelf => "cannot_target_self",
            AdminRefusal::LastAdmin => "last_admin",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            AdminRefusal::CannotTargetSelf => {
                "you cannot suspend, delete or demote your own account"
            }
            AdminRefusal::LastAdmin => "this is the last active platform admin",
        }
    }
}

/// The facts about one account that the rule needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdminStanding {
    pub is_admin: bool,
    pub suspended: bool,
}

impl AdminStanding {
    pub fn is_active_admin(self) -> bool {
        self.is_admin && !self.suspended
    }
}

/// Whether `by` (`None`: the mapping of a sign-in, or the operator's CLI)
/// may take `target` from `before` to `after` (`None`: deleted), with
/// `active_admins` active admins on the platform now (counted under a lock).
pub fn check_account_change(
    by: Option<&str>,
    target: &str,
    before: AdminStanding,
    after: Option<AdminStanding>,
    active_admins: i64,
) -> Result<(), AdminRefusal> {
    let loses_admin =
        before.is_active_admin() && !after.is_some_and(AdminStanding::is_active_admin);
    let restrictive = after
        .is_none_or(|a| (a.suspended && !before.suspended) || (!a.is_admin && before.is_admin));
    if by == Some(target) && restrictive {
        return Err(AdminRefusal::CannotTargetSelf);
    }
    if loses_admin && active_admins <= 1 {
        return Err(AdminRefusal::LastAdmin);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn s(is_admin: bool, suspended: bool) -> AdminStanding {
        AdminStanding {
            is_admin,
            suspended,
        }
    }

    #[test]
    fn every_standing_and_change() {
        let all = [
            s(false, false),
            s(false, true),
            s(true, false),
            s(true, true),
        ];
        for before in all {
            for after in all.iter().copied().map(Some).chain([None]) {
                for admins in 0..3 {
                    for by in [None, Some("me"), Some("other")] {
                        let got = check_account_change(by, "me", before, after, admins);
                        let loses = before.is_admin
                            && !before.suspended
                            && !matches!(after, Some(a) if a.is_admin && !a.suspended);
                        let restrictive = match after {
                            None => true,
                            Some(a) => {
                                (a.suspended && !before.suspended)
                                    || (before.is_admin && !a.is_admin)
                            }
                        };
                        let expected = if by == Some("me") && restrictive {
                            Err(AdminRefusal::CannotTargetSelf)
                        } else if loses && admins <= 1 {
                            Err(AdminRefusal::LastAdmin)
                        } else {
                            Ok(())
                        };
                        assert_eq!(
                            got, expected,
                            "{by:?} {before:?} -> {after:?} with {admins}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_usual_cases() {
        let admin = s(true, false);
        let plain = s(false, false);
        assert_eq!(
            check_account_change(Some("a"), "b", admin, Some(plain), 1),
            Err(AdminRefusal::LastAdmin)
        );
        assert_eq!(
            check_account_change(Some("a"), "b", admin, Some(plain), 2),
            Ok(())
        );
        assert_eq!(
            check_account_change(Some("a"), "a", admin, None, 5),
            Err(AdminRefusal::CannotTargetSelf)
        );
        // Reinstating or promoting oneself is not a lock-out.
        assert_eq!(
            check_account_change(Some("a"), "a", plain, Some(admin), 1),
            Ok(())
        );
        // A suspended admin is not counted as the one left.
        assert_eq!(
            check_account_change(None, "b", s(true, true), None, 1),
            Ok(())
        );
    }
}

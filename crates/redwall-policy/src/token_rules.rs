//! Rules for personal access tokens: names, lifetimes, how many, and the
//! limits a token may carry (they only narrow what its holder may do).

use crate::permission::{Permission, Scope};
use crate::{refused, RuleError};

/// Tokens one user may hold.
pub const MAX_TOKENS_PER_USER: usize = 100;
/// Longest lifetime, in days.
pub const MAX_EXPIRY_DAYS: i64 = 366;
/// Most permissions one token may be limited to.
const MAX_LISTED: usize = 64;

/// A token name as stored: trimmed, 1 to 100 printable characters.
pub fn token_name(name: &str) -> Result<String, RuleError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(refused(
            "invalid_name",
            "the token name must be 1 to 100 printable characters",
        ));
    }
    Ok(name.to_string())
}

/// A lifetime of 1 to [`MAX_EXPIRY_DAYS`] days, or none.
pub fn expiry_days(days: Option<i64>) -> Result<(), RuleError> {
    match days {
        Some(d) if !(1..=MAX_EXPIRY_DAYS).contains(&d) => Err(refused(
            "invalid_expiry",
            format!("expires_in_days must be between 1 and {MAX_EXPIRY_DAYS}"),
        )),
        _ => Ok(()),
    }
}

/// A permission limit, as stored: known names, sorted and unique; with a
/// team limit only team permissions (and `account:read`, so the token can
/// say whose it is).
pub fn permission_limit(
    names: &[String],
    team_limited: bool,
) -> Result<Vec<&'static str>, RuleError> {
    if names.is_empty() || names.len() > MAX_LISTED {
        return Err(refused("invalid_permissions", "list 1 to 64 permissions"));
    }
    let mut list = Vec::with_capacity(names.len());
    for name in names {
        let Some(p) = Permission::from_name(name) else {
            return Err(refused(
                "invalid_permissions",
                format!(
                    "unknown permission {:?}",
                    name.chars().take(60).collect::<String>()
                ),
            ));
        };
        if team_limited && p.scope() != Scope::Team && p != Permission::AccountRead {
            return Err(refused(
                "invalid_permissions",
                format!("{} is not a team permission", p.name()),
            ));
        }
        list.push(p.name());
    }
    list.sort_unstable();
    list.dedup();
    Ok(list)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_and_lifetimes() {
        assert_eq!(token_name("  ci ").unwrap(), "ci");
        for bad in ["", "  ", "a\tb", &"x".repeat(101)] {
            assert_eq!(token_name(bad).unwrap_err().code, "invalid_name");
        }
        for ok in [None, Some(1), Some(MAX_EXPIRY_DAYS)] {
            assert!(expiry_days(ok).is_ok());
        }
        for bad in [Some(0), Some(-1), Some(MAX_EXPIRY_DAYS + 1)] {
            assert_eq!(expiry_days(bad).unwrap_err().code, "invalid_expiry");
        }
    }

    #[test]
    fn limits_only_name_what_exists_and_fit_the_team() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            permission_limit(&names(&["team:read", "account:read", "team:read"]), true).unwrap(),
            vec!["account:read", "team:read"]
        );
        assert!(permission_limit(&names(&["users:read"]), false).is_ok());
        assert!(permission_limit(&names(&["users:read"]), true).is_err());
        assert!(permission_limit(&names(&["nope"]), false).is_err());
        assert!(permission_limit(&[], false).is_err());
        let all: Vec<String> = (0..=MAX_LISTED).map(|_| "team:read".to_string()).collect();
        assert!(permission_limit(&all, false).is_err());
        // Every permission a team-limited token may carry is a team one, or
        // account:read.
        for p in Permission::ALL {
            let ok = permission_limit(&names(&[p.name()]), true).is_ok();
            assert_eq!(
                ok,
                p.scope() == Scope::Team || p == Permission::AccountRead,
                "{}",
                p.name()
            );
        }
    }
}

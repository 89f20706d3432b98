//! Rules for teams: names, the address ranges allowed to reach a team's
//! instances, and the Owner a team must always keep.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::permission::TeamRole;
use crate::{refused, RuleError};

/// Longest team name, in characters.
pub const MAX_TEAM_NAME_CHARS: usize = 100;
/// Teams one user may belong to.
pub const MAX_TEAMS_PER_USER: usize = 100;
/// Most address ranges a team may list.
pub const MAX_TEAM_RANGES: usize = 64;

/// Days an invitation stays open when the Owner does not say.
pub const DEFAULT_INVITATION_DAYS: i64 = 7;
/// Longest an invitation may stay open, in days.
pub const MAX_INVITATION_DAYS: i64 = 30;

/// A role by its name ("owner", "member", "viewer", "dashboard").
pub fn team_role(name: &str) -> Result<TeamRole, RuleError> {
    TeamRole::parse(name).ok_or_else(|| {
        refused(
            "invalid_role",
            "the role must be one of owner, member, viewer, dashboard",
        )
    })
}

/// How many days an invitation stays open: 1 to [`MAX_INVITATION_DAYS`],
/// [`DEFAULT_INVITATION_DAYS`] when not given.
pub fn invitation_days(days: Option<i64>) -> Result<i64, RuleError> {
    let days = days.unwrap_or(DEFAULT_INVITATION_DAYS);
    if !(1..=MAX_INVITATION_DAYS).contains(&days) {
        return Err(refused(
            "invalid_expiry",
            format!("expires_in_days must be between 1 and {MAX_INVITATION_DAYS}"),
        ));
    }
    Ok(days)
}

/// A team name as stored: trimmed, 1 to 100 characters, no control
/// characters.
pub fn team_name(name: &str) -> Result<String, RuleError> {
    let name = name.trim();
    if name.is_empty()
        || name.chars().count() > MAX_TEAM_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(refused(
            "invalid_name",
            "the team name must be 1 to 100 printable characters",
        ));
    }
    Ok(name.to_string())
}

/// The ranges as stored: each an address or CIDR range, written as its
/// network ("10.1.2.3/8" becomes "10.0.0.0/8", an address its /32 or /128).
pub fn normalize_ranges(list: &[String]) -> Result<Vec<String>, RuleError> {
    if list.len() > MAX_TEAM_RANGES {
        return Err(refused(
            "invalid_cidr",
            format!("at most {MAX_TEAM_RANGES} ranges"),
        ));
    }
    list.iter()
        .map(|s| {
            parse_range(s).map(|n| n.to_string()).ok_or_else(|| {
                refused(
                    "invalid_cidr",
                    format!(
                        "{:?} is not an address or CIDR range",
                        s.trim().chars().take(60).collect::<String>()
                    ),
                )
            })
        })
        .collect()
}

fn parse_range(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .ok()
        .map(|n| n.trunc())
}

/// The client addresses a team admits to its instances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TeamRanges {
    /// No range listed: any address.
    Any,
    /// Only addresses in these ranges (none: no address at all).
    Only(Vec<IpNet>),
}

impl TeamRanges {
    /// From the stored list, failing closed: a range that does not parse
    /// (a damaged or hand-edited row) is dropped without ever widening the
    /// list into "any address".
    pub fn from_stored(list: &[String]) -> TeamRanges {
        if list.is_empty() {
            return TeamRanges::Any;
        }
        TeamRanges::Only(list.iter().filter_map(|s| parse_range(s)).collect())
    }

    pub fn admits(&self, client: IpAddr) -> bool {
        match self {
            TeamRanges::Any => true,
            TeamRanges::Only(nets) => crate::route_policy::in_any(nets, client),
        }
    }
}

/// Whether moving a member from `current` to `next` (`None`: not a member)
/// would leave the team, which has `owners` Owners now, without one.
pub fn leaves_no_owner(current: Option<TeamRole>, next: Option<TeamRole>, owners: i64) -> bool {
    current == Some(TeamRole::Owner) && next != Some(TeamRole::Owner) && owners <= 1
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_known_by_their_names_only() {
        for role in TeamRole::ALL {
            assert_eq!(team_role(role.name()), Ok(role));
        }
        for bad in ["", "Owner", "admin", " owner", "owner\0"] {
            assert_eq!(team_role(bad).unwrap_err().code, "invalid_role", "{bad:?}");
        }
    }

    #[test]
    fn invitations_stay_open_one_to_thirty_days() {
        assert_eq!(invitation_days(None), Ok(DEFAULT_INVITATION_DAYS));
        for d in 1..=MAX_INVITATION_DAYS {
            assert_eq!(invitation_days(Some(d)), Ok(d));
        }
        for d in [i64::MIN, -1, 0, MAX_INVITATION_DAYS + 1, i64::MAX] {
            assert_eq!(invitation_days(Some(d)).unwrap_err().code, "invalid_expiry");
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(team_name("  Ops ").unwrap(), "Ops");
        assert_eq!(team_name(&"é".repeat(100)).unwrap().chars().count(), 100);
        for bad in ["", "   ", "a\nb", "tab\there", &"x".repeat(101)] {
            assert_eq!(team_name(bad).unwrap_err().code, "invalid_name", "{bad:?}");
        }
    }

    #[test]
    fn ranges_are_normalized_or_refused() {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            normalize_ranges(&list(&[" 10.1.2.3/8", "192.168.1.7", "2001:db8::1/32"])).unwrap(),
            list(&["10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32"])
        );
        for bad in ["10.0.0.0/33", "not-a-net", "", "10.0.0.0/8/8"] {
            assert_eq!(
                normalize_ranges(&list(&[bad])).unwrap_err().code,
                "invalid_cidr"
            );
        }
        let many: Vec<String> = (0..=MAX_TEAM_RANGES)
            .map(|i| format!("10.0.{i}.0/24"))
            .collect();
        assert!(normalize_ranges(&many).is_err());
        assert!(normalize_ranges(&many[..MAX_TEAM_RANGES]).is_ok());
    }

    #[test]
    fn stored_ranges_fail_closed() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(TeamRanges::from_stored(&[]).admits(ip("203.0.113.9")));
        let lan = TeamRanges::from_stored(&list(&["10.0.0.0/8"]));
        assert!(lan.admits(ip("10.9.9.9")) && !lan.admits(ip("203.0.113.9")));
        // IPv4-mapped IPv6 clients are judged as the IPv4 address they are.
        assert!(lan.admits(ip("::ffff:10.1.1.1")));
        let damaged = TeamRanges::from_stored(&list(&["garbage"]));
        assert_eq!(damaged, TeamRanges::Only(vec![]));
        assert!(!damaged.admits(ip("10.9.9.9")) && !damaged.admits(ip("203.0.113.9")));
        let partly = TeamRanges::from_stored(&list(&["garbage", "10.0.0.0/8"]));
        assert!(partly.admits(ip("10.9.9.9")) && !partly.admits(ip("203.0.113.9")));
    }

    #[test]
    fn the_last_owner_stays_whatever_the_move() {
        use TeamRole::*;
        let roles = [
            None,
            Some(Owner),
            Some(Member),
            Some(Viewer),
            Some(Dashboard),
        ];
        for current in roles {
            for next in roles {
                for owners in 0..3 {
                    let expected = current == Some(Owner) && next != Some(Owner) && owners <= 1;
                    assert_eq!(leaves_no_owner(current, next, owners), expected);
                }
            }
        }
        assert!(leaves_no_owner(Some(Owner), None, 1));
        assert!(!leaves_no_owner(Some(Owner), None, 2));
        assert!(!leaves_no_owner(Some(Member), None, 1));
    }
}

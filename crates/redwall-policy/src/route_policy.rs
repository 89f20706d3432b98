//! Who may reach an instance's own endpoints (http-in, websocket-in,
//! dashboards): an ordered list of rules, first match wins, and a request no
//! rule matches is denied.
//!
//! Evaluation is split in two pure steps so the proxy only looks up the
//! credential the matched rule asks for: [`match_rule`] picks the rule, then
//! [`decide`] judges the facts gathered for it.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::permission::{team_role_holds, Permission, TeamRole};
use crate::team_rules::TeamRanges;

/// The most rules one instance may hold; keeps matching cheap and reviewable.
pub const MAX_RULES: usize = 100;
/// Longest accepted path prefix.
pub const MAX_PREFIX_LEN: usize = 512;

/// How a matched request must prove itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RoutePolicy {
    /// Anyone (still subject to the address ranges).
    Public,
    /// A Redwall session of a team member holding at least `min_role`.
    Session { min_role: TeamRole },
    /// One of the instance's API keys (`Authorization: Bearer` or `X-Api-Key`).
    ApiKey,
    /// HTTP basic auth with a Redwall username and password of a team member
    /// holding at least `min_role`.
    Basic { min_role: TeamRole },
}

/// One rule of the ordered list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRule {
    /// Matches this path and everything below it ("/api" matches "/api" and
    /// "/api/x", not "/apix"); "/" matches everything. Case-insensitive,
    /// like Node-RED's router.
    pub path_prefix: String,
    /// Upper-case methods; empty means any. GET also covers HEAD.
    #[serde(default)]
    pub methods: Vec<String>,
    pub policy: RoutePolicy,
    /// When not empty, the client address must be in one of these ranges
    /// (on top of the team's own ranges).
    #[serde(default)]
    pub client_ranges: Vec<IpNet>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("at most {MAX_RULES} rules")]
    TooMany,
    #[error("rule {0}: the path prefix must start with '/' and hold no '..', '//', '%', '\\' or control characters")]
    BadPrefix(usize),
    #[error("rule {0}: unknown HTTP method {1:?}")]
    BadMethod(usize, String),
}

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];

/// Checks a rule list before it is stored.
pub fn validate_rules(rules: &[RouteRule]) -> Result<(), RuleError> {
    if rules.len() > MAX_RULES {
        return Err(RuleError::TooMany);
    }
    for (i, r) in rules.iter().enumerate() {
        if !is_clean_path(&r.path_prefix) || r.path_prefix.len() > MAX_PREFIX_LEN {
            return Err(RuleError::BadPrefix(i));
        }
        if let Some(m) = r.methods.iter().find(|m| !METHODS.contains(&m.as_str())) {
            return Err(RuleError::BadMethod(i, m.clone()));
        }
    }
    Ok(())
}

/// A path the proxy may forward: absolute, no dot segments, no empty
/// segments, no percent-encoding of '/', '\\' or '.', no backslash or control
/// characters. Anything else could be read differently by Node-RED than by
/// the rules, so the proxy refuses it rather than guess.
pub fn is_clean_path(path: &str) -> bool {
    if !path.starts_with('/') {
        return false;
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return false;
    }
    // Escapes that decode to '/', '\\', '.' or NUL, in either case; found
    // without a lowercased copy (this runs on every proxied request).
    if path.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                (w[1], w[2].to_ascii_lowercase()),
                (b'2', b'f') | (b'5', b'c') | (b'2', b'e') | (b'0', b'0')
            )
    }) {
        return false;
    }
    // Rules may hold '%' nowhere, paths may hold other escapes (e.g. %20).
    let rest = &path[1..];
    if rest.is_empty() {
        return true;
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.split('/')
        .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let prefix = prefix.strip_suffix('/').unwrap_or(prefix);
    let (p, q) = (prefix.as_bytes(), path.as_bytes());
    if q.len() < p.len() || !q[..p.len()].eq_ignore_ascii_case(p) {
        return false;
    }
    q.len() == p.len() || q[p.len()] == b'/'
}

fn method_matches(methods: &[String], method: &str) -> bool {
    methods.is_empty()
        || methods.iter().any(|m| {
            m.eq_ignore_ascii_case(method)
                || (method.eq_ignore_ascii_case("HEAD") && m.eq_ignore_ascii_case("GET"))
        })
}

/// The first rule that matches the request, with its index.
pub fn match_rule<'r>(
    rules: &'r [RouteRule],
    method: &str,
    path: &str,
) -> Option<(usize, &'r RouteRule)> {
    rules
        .iter()
        .enumerate()
        .find(|(_, r)| prefix_matches(&r.path_prefix, path) && method_matches(&r.methods, method))
}

/// What the proxy found about the caller, for the credential the rule asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presented {
    Nothing,
    /// A valid session; the user's role in the instance's team (`None` when
    /// not a member).
    Session(Option<TeamRole>),
    /// An API key of this instance: whether it is valid (not revoked, not
    /// expired) and allowed on this path.
    ApiKey {
        valid: bool,
        path_allowed: bool,
    },
    /// Basic credentials: `None` when wrong, else the role in the team.
    Basic(Option<Option<TeamRole>>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteDecision {
    Allow,
    /// No rule matches: denied by default.
    NoRule,
    /// The client address is outside the team's or the rule's ranges.
    AddressRefused,
    /// The rule needs a credential that was not presented (401; basic rules
    /// answer with a challenge).
    CredentialMissing,
    /// The credential is wrong, revoked or expired (401).
    CredentialInvalid,
    /// The credential is valid but not enough (403).
    Forbidden,
}

/// An IPv4-mapped IPv6 address as the IPv4 address it carries.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    }
}

/// Whether `addr` is in one of `ranges`; no ranges means any address.
pub fn in_ranges(ranges: &[IpNet], addr: IpAddr) -> bool {
    ranges.is_empty() || in_any(ranges, addr)
}

/// Whether `addr` (IPv4-mapped IPv6 read as IPv4) is in one of `ranges`.
pub fn in_any(ranges: &[IpNet], addr: IpAddr) -> bool {
    let addr = canonical(addr);
    ranges.iter().any(|n| n.contains(&addr))
}

/// Judges a matched rule (or none) against the request's facts.
pub fn decide(
    rule: Option<&RouteRule>,
    client: IpAddr,
    team_ranges: &TeamRanges,
    presented: Presented,
) -> RouteDecision {
    let Some(rule) = rule else {
        return RouteDecision::NoRule;
    };
    if !team_ranges.admits(client) || !in_ranges(&rule.client_ranges, client) {
        return RouteDecision::AddressRefused;
    }
    // A member's session or Redwall password reaches an instance's pages
    // only through `instance:dashboard` (every team role holds it), and then
    // only from the rule's minimum role up.
    let enough = |role: Option<TeamRole>, min: TeamRole| match role {
        Some(r) if team_role_holds(r, Permission::InstanceDashboard) && r >= min => {
            RouteDecision::Allow
        }
        _ => RouteDecision::Forbidden,
    };
    match (&rule.policy, presented) {
        (RoutePolicy::Public, _) => RouteDecision::Allow,
        (RoutePolicy::Session { min_role }, Presented::Session(role)) => enough(role, *min_role),
        (
            RoutePolicy::ApiKey,
            Presented::ApiKey {
                valid,
                path_allowed,
            },
        ) => match (valid, path_allowed) {
            (false, _) => RouteDecision::CredentialInvalid,
            (true, false) => RouteDecision::Forbidden,
            (true, true) => RouteDecision::Allow,
        },
        (RoutePolicy::Basic { min_role }, Presented::Basic(found)) => match found {
            None => RouteDecision::CredentialInvalid,
            Some(role) => enough(role, *min_role),
        },
        _ => RouteDecision::CredentialMissing,
    }
}

/// Whether an API key restricted to `key_prefix` may be used on `path`.
pub fn key_allows_path(key_prefix: Option<&str>, path: &str) -> bool {
    key_prefix.is_none_or(|p| prefix_matches(p, path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(prefix: &str, methods: &[&str], policy: RoutePolicy) -> RouteRule {
        RouteRule {
            path_prefix: prefix.into(),
            methods: methods.iter().map(|m| m.to_string()).collect(),
            policy,
            client_ranges: vec![],
        }
    }

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 5));

    #[test]
    fn prefixes_match_whole_segments_case_insensitively() {
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/x"));
        assert!(prefix_matches("/api/", "/api/x"));
        assert!(prefix_matches("/api", "/API/x"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(!prefix_matches("/api/x", "/api"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn first_matching_rule_wins_and_get_covers_head() {
        let rules = vec![
            rule(
                "/form/admin",
                &[],
                RoutePolicy::Session {
                    min_role: TeamRole::Member,
                },
            ),
            rule("/form", &["GET"], RoutePolicy::Public),
            rule("/form", &["POST"], RoutePolicy::ApiKey),
        ];
        assert_eq!(
            match_rule(&rules, "GET", "/form/admin/x").map(|m| m.0),
            Some(0)
        );
        assert_eq!(
            match_rule(&rules, "GET", "/FORM/ADMIN").map(|m| m.0),
            Some(0)
        );
        assert_eq!(match_rule(&rules, "HEAD", "/form").map(|m| m.0), Some(1));
        assert_eq!(match_rule(&rules, "POST", "/form").map(|m| m.0), Some(2));
        assert_eq!(match_rule(&rules, "DELETE", "/form"), None);
        assert_eq!(match_rule(&rules, "GET", "/other"), None);
    }

    #[test]
    fn no_rule_means_deny() {
        assert_eq!(
            decide(None, HOME, &TeamRanges::Any, Presented::Nothing),
            RouteDecision::NoRule
        );
    }

    #[test]
    fn session_rules_need_a_member_with_enough_role() {
        let r = rule(
            "/",
            &[],
            RoutePolicy::Session {
                min_role: TeamRole::Dashboard,
            },
        );
        let d = |p| decide(Some(&r), HOME, &TeamRanges::Any, p);
        assert_eq!(d(Presented::Nothing), RouteDecision::CredentialMissing);
        assert_eq!(d(Presented::Session(None)), RouteDecision::Forbidden);
        for role in TeamRole::ALL {
            assert_eq!(d(Presented::Session(Some(role))), RouteDecision::Allow);
        }
        let r = rule(
            "/",
            &[],
            RoutePolicy::Session {
                min_role: TeamRole::Member,
            },
        );
        for role in TeamRole::ALL {
            let want = if role >= TeamRole::Member {
                RouteDecision::Allow
            } else {
                RouteDecision::Forbidden
            };
            assert_eq!(
                decide(
                    Some(&r),
                    HOME,
                    &TeamRanges::Any,
                    Presented::Session(Some(role))
                ),
                want
            );
        }
    }

    #[test]
    fn api_key_rules_refuse_invalid_and_out_of_path_keys() {
        let r = rule("/", &[], RoutePolicy::ApiKey);
        let d = |p| decide(Some(&r), HOME, &TeamRanges::Any, p);
        assert_eq!(d(Presented::Nothing), RouteDecision::CredentialMissing);
        assert_eq!(
            d(Presented::Session(Some(TeamRole::Owner))),
            RouteDecision::CredentialMissing
        );
        assert_eq!(
            d(Presented::ApiKey {
                valid: false,
                path_allowed: true
            }),
            RouteDecision::CredentialInvalid
        );
        assert_eq!(
            d(Presented::ApiKey {
                valid: true,
                path_allowed: false
            }),
            RouteDecision::Forbidden
        );
        assert_eq!(
            d(Presented::ApiKey {
                valid: true,
                path_allowed: true
            }),
            RouteDecision::Allow
        );
        assert!(key_allows_path(Some("/a"), "/a/b"));
        assert!(!key_allows_path(Some("/a"), "/b"));
        assert!(key_allows_path(None, "/b"));
    }

    #[test]
    fn basic_rules_check_password_then_role() {
        let r = rule(
            "/",
            &[],
            RoutePolicy::Basic {
                min_role: TeamRole::Viewer,
            },
        );
        let d = |p| decide(Some(&r), HOME, &TeamRanges::Any, p);
        assert_eq!(d(Presented::Basic(None)), RouteDecision::CredentialInvalid);
        assert_eq!(d(Presented::Basic(Some(None))), RouteDecision::Forbidden);
        assert_eq!(
            d(Presented::Basic(Some(Some(TeamRole::Dashboard)))),
            RouteDecision::Forbidden
        );
        assert_eq!(
            d(Presented::Basic(Some(Some(TeamRole::Viewer)))),
            RouteDecision::Allow
        );
    }

    #[test]
    fn address_ranges_of_team_and_rule_both_apply() {
        let mut r = rule("/", &[], RoutePolicy::Public);
        let lan: IpNet = "10.0.0.0/8".parse().unwrap_or_else(|_| unreachable!());
        let one: IpNet = "10.0.0.5/32".parse().unwrap_or_else(|_| unreachable!());
        let outside = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 1, 1));
        assert_eq!(
            decide(
                Some(&r),
                outside,
                &TeamRanges::Only(vec![lan]),
                Presented::Nothing
            ),
            RouteDecision::AddressRefused
        );
        assert_eq!(
            decide(
                Some(&r),
                HOME,
                &TeamRanges::Only(vec![lan]),
                Presented::Nothing
            ),
            RouteDecision::Allow
        );
        r.client_ranges = vec![one];
        assert_eq!(
            decide(
                Some(&r),
                HOME,
                &TeamRanges::Only(vec![lan]),
                Presented::Nothing
            ),
            RouteDecision::Allow
        );
        let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 6));
        assert_eq!(
            decide(
                Some(&r),
                other,
                &TeamRanges::Only(vec![lan]),
                Presented::Nothing
            ),
            RouteDecision::AddressRefused
        );
        // An IPv4-mapped IPv6 peer is judged by its IPv4 address.
        let mapped: IpAddr = "::ffff:10.0.0.5".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(
            decide(
                Some(&r),
                mapped,
                &TeamRanges::Only(vec![lan]),
                Presented::Nothing
            ),
            RouteDecision::Allow
        );
    }

    #[test]
    fn ambiguous_paths_are_not_clean() {
        for bad in [
            "",
            "api",
            "/a/../b",
            "/a/./b",
            "//a",
            "/a//b",
            "/a%2fb",
            "/a%2Eb",
            "/a\\b",
            "/a\u{0}b",
            "/%2e%2e/x",
        ] {
            assert!(!is_clean_path(bad), "{bad:?}");
        }
        for good in ["/", "/a", "/a/", "/a/b.json", "/a%20b", "/ui/"] {
            assert!(is_clean_path(good), "{good:?}");
        }
    }

    /// Every escape `%XY` over ASCII, at the start, middle and end of a
    /// segment: refused exactly when it decodes to '/', '\\', '.' or NUL,
    /// in either case.
    #[test]
    fn every_escape_is_judged_by_what_it_decodes_to() {
        let forbidden = [b'/', b'\\', b'.', 0];
        for x in 0u8..128 {
            for y in 0u8..128 {
                if (x as char).is_control() || (y as char).is_control() || x == b'\\' || y == b'\\'
                {
                    continue;
                }
                let escape = format!("%{}{}", x as char, y as char);
                let decoded = (x.is_ascii_hexdigit() && y.is_ascii_hexdigit())
                    .then(|| u8::from_str_radix(&escape[1..], 16).ok())
                    .flatten();
                let refused = decoded.is_some_and(|b| forbidden.contains(&b));
                for path in [
                    format!("/{escape}"),
                    format!("/a{escape}b"),
                    format!("/a/b{escape}"),
                ] {
                    // A '/' or '.' the escape itself holds may make the path
                    // unclean for another reason: judge only escapes of
                    // other characters, or the forbidden ones.
                    if !refused && (escape.contains('/') || escape.contains('.')) {
                        continue;
                    }
                    assert_eq!(is_clean_path(&path), !refused, "{path:?}");
                }
            }
        }
    }

    #[test]
    fn validation_refuses_bad_rules() {
        assert!(validate_rules(&[rule("/ok", &["GET"], RoutePolicy::Public)]).is_ok());
        assert_eq!(
            validate_rules(&[rule("no-slash", &[], RoutePolicy::Public)]),
            Err(RuleError::BadPrefix(0))
        );
        assert_eq!(
            validate_rules(&[rule("/x", &["FETCH"], RoutePolicy::Public)]),
            Err(RuleError::BadMethod(0, "FETCH".into()))
        );
        let many = vec![rule("/", &[], RoutePolicy::Public); MAX_RULES + 1];
        assert_eq!(validate_rules(&many), Err(RuleError::TooMany));
    }

    proptest! {
        // Whatever the rules and request, a public rule never lets an address
        // outside the team's ranges through, and no match is always a deny.
        #[test]
        fn team_ranges_always_hold(a in any::<u8>(), b in any::<u8>(), path in "/[a-z]{0,3}(/[a-z]{0,3}){0,3}") {
            let rules = vec![rule("/", &[], RoutePolicy::Public)];
            let team: IpNet = "10.0.0.0/8".parse().unwrap_or_else(|_| unreachable!());
            let addr = IpAddr::V4(std::net::Ipv4Addr::new(a, b, 0, 1));
            let m = match_rule(&rules, "GET", &path).map(|m| m.1);
            let d = decide(m, addr, &TeamRanges::Only(vec![team]), Presented::Nothing);
            prop_assert_eq!(d == RouteDecision::Allow, a == 10);
            prop_assert_eq!(decide(None, addr, &TeamRanges::Any, Presented::Nothing), RouteDecision::NoRule);
        }
    }
}

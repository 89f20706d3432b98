//! Whether one request may reach a flow's endpoint: a pure function of the
//! hub's [`SiteAccess`], the request's head, the socket's address and the
//! time, so every branch is tested without a socket.
//!
//! The rules and their outcome are `redwall_policy::route_policy`'s, as on
//! the hub ([`match_rule`], [`decide`], [`key_allows_path`]). What differs is
//! only what the agent cannot know: a Redwall session or password (`session`
//! and `basic` rules) is checked by the hub alone, so those rules answer
//! 403 `needs_hub` here.

use std::net::IpAddr;

use hyper::header::{HeaderMap, AUTHORIZATION};
use hyper::StatusCode;
use redwall_crypto::token::{parse_token, INSTANCE_KEY_PREFIX};
use redwall_policy::agent_protocol::HostedApiKey;
use redwall_policy::route_policy::{
    decide, is_clean_path, key_allows_path, match_rule, Presented, RouteDecision, RoutePolicy,
};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::hygiene::Authorization;
use super::SiteAccess;

/// Node-RED's admin root, as `redwall_runtime`'s settings set it: the
/// editor is only ever reached through the hub.
pub const EDITOR_ROOT: &str = "/editor";

/// Why a request is answered by the agent instead of Node-RED.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    /// The JSON error's `code`, also the log line's reason.
    pub code: &'static str,
    pub message: &'static str,
}

impl Refusal {
    pub(crate) const fn new(status: StatusCode, code: &'static str, message: &'static str) -> Self {
        Self {
            status,
            code,
            message,
        }
    }
}

/// An admitted request: what the forwarding needs to know of the verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted {
    /// The endpoint token's subject: `key:{id}` for an API key, as the
    /// hub's proxy says it; `None` on a public rule.
    pub username: Option<String>,
    /// What of the client's Authorization header Node-RED may see.
    pub authorization: Authorization,
    /// A public rule on an instance without `basic` rules: the flow owns
    /// authentication there, so its challenges may pass.
    pub instance_may_challenge: bool,
}

const BAD_PATH: Refusal = Refusal::new(
    StatusCode::BAD_REQUEST,
    "bad_path",
    "the request path is not in canonical form (dot or empty segments, encoded separators)",
);
const EDITOR: Refusal = Refusal::new(
    StatusCode::NOT_FOUND,
    "not_found",
    "the editor is not served here; open it through the hub",
);
pub(crate) const NOT_HOSTED: Refusal = Refusal::new(
    StatusCode::SERVICE_UNAVAILABLE,
    "not_hosted",
    "this agent has not yet learnt from the hub which instance it runs",
);
const NEEDS_HUB: Refusal = Refusal::new(
    StatusCode::FORBIDDEN,
    "needs_hub",
    "this endpoint needs a Redwall sign-in; use the hub's address",
);

fn refusal(decision: RouteDecision) -> Refusal {
    match decision {
        // Not reached: callers only map refusals.
        RouteDecision::Allow | RouteDecision::Forbidden => Refusal::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "your credential does not allow this endpoint",
        ),
        RouteDecision::NoRule => Refusal::new(
            StatusCode::FORBIDDEN,
            "no_matching_rule",
            "no route rule of this instance allows this request",
        ),
        RouteDecision::AddressRefused => Refusal::new(
            StatusCode::FORBIDDEN,
            "address_refused",
            "your address is outside the ranges allowed here",
        ),
        RouteDecision::CredentialMissing => Refusal::new(
            StatusCode::UNAUTHORIZED,
            "credential_required",
            "this endpoint needs a credential",
        ),
        RouteDecision::CredentialInvalid => Refusal::new(
            StatusCode::UNAUTHORIZED,
            "credential_invalid",
            "the credential is wrong, revoked or expired",
        ),
    }
}

/// The editor's root or anything below it, in any case (Node-RED's router
/// ignores case).
pub fn is_editor_path(path: &str) -> bool {
    let p = path.as_bytes();
    let root = EDITOR_ROOT.as_bytes();
    p.len() >= root.len()
        && p[..root.len()].eq_ignore_ascii_case(root)
        && (p.len() == root.len() || p[root.len()] == b'/')
}

/// The API key a request presents: `X-Api-Key`, else a bearer token (the
/// hub's order).
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(k.trim());
    }
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// The key among `keys` whose digest is the SHA-256 of `presented`, if it
/// has not expired at `now` (unix seconds). Every stored digest is
/// compared, in constant time.
fn find_key<'k>(keys: &'k [HostedApiKey], presented: &str, now: i64) -> Option<&'k HostedApiKey> {
    // The shape first, as the hub does: nothing else is an instance key.
    let presented = parse_token(INSTANCE_KEY_PREFIX, presented)?;
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let mut found = None;
    for k in keys {
        let mut stored = [0u8; 32];
        if hex::decode_to_slice(k.sha256.trim(), &mut stored).is_err() {
            continue;
        }
        if bool::from(stored.ct_eq(&digest)) && found.is_none() {
            found = Some(k);
        }
    }
    found.filter(|k| k.expires_at.is_none_or(|e| e > now))
}

/// The verdict on one request. `now` is unix seconds; `peer` the socket's
/// address (an IPv4-mapped IPv6 address counts as IPv4).
pub fn judge(
    access: Option<&SiteAccess>,
    method: &str,
    path: &str,
    headers: &HeaderMap,
    peer: IpAddr,
    now: i64,
) -> Result<Admitted, Refusal> {
    if !is_clean_path(path) {
        return Err(BAD_PATH);
    }
    if is_editor_path(path) {
        return Err(EDITOR);
    }
    let Some(access) = access else {
        return Err(NOT_HOSTED);
    };
    let matched = match_rule(&access.rules, method, path).map(|m| m.1);
    let ranges = &access.team_ranges;
    let asks_passwords = access
        .rules
        .iter()
        .any(|r| matches!(r.policy, RoutePolicy::Basic { .. }));
    let (presented, consumed, username) = match matched.map(|r| &r.policy) {
        None | Some(RoutePolicy::Public) => (Presented::Nothing, false, None),
        Some(RoutePolicy::Session { .. } | RoutePolicy::Basic { .. }) => {
            // The ranges first, as on the hub; then what only the hub can
            // check.
            return match decide(matched, peer, ranges, Presented::Nothing) {
                RouteDecision::AddressRefused => Err(refusal(RouteDecision::AddressRefused)),
                _ => Err(NEEDS_HUB),
            };
        }
        Some(RoutePolicy::ApiKey) => match presented_key(headers) {
            None => (Presented::Nothing, false, None),
            Some(key) => match find_key(&access.api_keys, key, now) {
                None => (
                    Presented::ApiKey {
                        valid: false,
                        path_allowed: false,
                    },
                    true,
                    None,
                ),
                Some(k) => (
                    Presented::ApiKey {
                        valid: true,
                        path_allowed: key_allows_path(k.path_prefix.as_deref(), path),
                    },
                    true,
                    Some(format!("key:{}", k.id)),
                ),
            },
        },
    };
    match decide(matched, peer, ranges, presented) {
        RouteDecision::Allow => Ok(Admitted {
            username,
            authorization: if consumed {
                Authorization::Drop
            } else if asks_passwords {
                Authorization::NoBasic
            } else {
                Authorization::Foreign
            },
            instance_may_challenge: matches!(matched.map(|r| &r.policy), Some(RoutePolicy::Public))
                && !asks_passwords,
        }),
        refused => Err(refusal(refused)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;
    use redwall_crypto::Secret;
    use redwall_policy::permission::TeamRole;
    use redwall_policy::route_policy::RouteRule;
    use redwall_policy::team_rules::TeamRanges;

    const NOW: i64 = 1_800_000_000;
    const SITE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3));
    const ELSEWHERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 168, 9, 9));

    fn key(c: char) -> String {
        format!("rwk_{}", c.to_string().repeat(43))
    }

    fn hosted(id: &str, k: &str, prefix: Option<&str>, expires_at: Option<i64>) -> HostedApiKey {
        HostedApiKey {
            id: id.into(),
            sha256: hex::encode(Sha256::digest(k.as_bytes())),
            path_prefix: prefix.map(Into::into),
            expires_at,
        }
    }

    fn rule(prefix: &str, methods: &[&str], policy: RoutePolicy, ranges: &[&str]) -> RouteRule {
        RouteRule {
            path_prefix: prefix.into(),
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            policy,
            client_ranges: ranges.iter().map(|r| r.parse().unwrap()).collect(),
        }
    }

    fn access(rules: Vec<RouteRule>) -> SiteAccess {
        SiteAccess::new(
            "inst-1".into(),
            rules,
            vec![
                hosted("k1", &key('a'), None, None),
                hosted("k2", &key('b'), Some("/api/line1"), None),
                hosted("k3", &key('c'), None, Some(NOW)),
                hosted("k4", &key('d'), None, Some(NOW + 1)),
            ],
            Secret::new("n".repeat(43)),
        )
        .unwrap()
    }

    fn site() -> SiteAccess {
        access(vec![
            rule("/sensors", &["GET"], RoutePolicy::Public, &[]),
            rule("/lan", &[], RoutePolicy::Public, &["10.0.0.0/8"]),
            rule("/api", &[], RoutePolicy::ApiKey, &[]),
            rule(
                "/dash",
                &[],
                RoutePolicy::Session {
                    min_role: TeamRole::Viewer,
                },
                &[],
            ),
            rule(
                "/dash-lan",
                &[],
                RoutePolicy::Session {
                    min_role: TeamRole::Viewer,
                },
                &["10.0.0.0/8"],
            ),
        ])
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn code(r: Result<Admitted, Refusal>) -> (u16, &'static str) {
        match r {
            Ok(_) => (200, "allowed"),
            Err(r) => (r.status.as_u16(), r.code),
        }
    }

    fn judge_get(a: Option<&SiteAccess>, path: &str, h: &[(&str, &str)]) -> (u16, &'static str) {
        code(judge(a, "GET", path, &headers(h), SITE, NOW))
    }

    #[test]
    fn unclean_paths_are_refused_before_anything_else() {
        for path in [
            "/sensors/../editor",
            "/sensors//x",
            "/sensors/%2e%2e/x",
            "/a%2fb",
            "/a\\b",
            "sensors",
            "*",
        ] {
            assert_eq!(judge_get(None, path, &[]), (400, "bad_path"), "{path}");
            assert_eq!(
                judge_get(Some(&site()), path, &[]),
                (400, "bad_path"),
                "{path}"
            );
        }
    }

    #[test]
    fn the_editor_is_never_served_locally() {
        let everything = access(vec![rule("/", &[], RoutePolicy::Public, &[])]);
        for path in ["/editor", "/editor/", "/EDITOR/flows", "/Editor/comms"] {
            assert_eq!(
                judge_get(Some(&everything), path, &[]),
                (404, "not_found"),
                "{path}"
            );
            assert_eq!(judge_get(None, path, &[]), (404, "not_found"), "{path}");
        }
        assert!(is_editor_path("/editor"));
        assert!(!is_editor_path("/editors"));
        assert!(!is_editor_path("/edit"));
        assert_eq!(judge_get(Some(&everything), "/editorial", &[]).0, 200);
    }

    #[test]
    fn nothing_is_served_before_the_hub_said_which_instance_this_is() {
        assert_eq!(judge_get(None, "/sensors", &[]), (503, "not_hosted"));
    }

    #[test]
    fn no_matching_rule_is_a_refusal() {
        let s = site();
        assert_eq!(
            judge_get(Some(&s), "/other", &[]),
            (403, "no_matching_rule")
        );
        assert_eq!(
            code(judge(
                Some(&s),
                "POST",
                "/sensors",
                &HeaderMap::new(),
                SITE,
                NOW
            )),
            (403, "no_matching_rule")
        );
        assert_eq!(
            judge_get(Some(&access(vec![])), "/sensors", &[]),
            (403, "no_matching_rule")
        );
    }

    #[test]
    fn public_rules_pass_within_their_ranges() {
        let s = site();
        let ok = judge(
            Some(&s),
            "HEAD",
            "/SENSORS/t1",
            &HeaderMap::new(),
            SITE,
            NOW,
        )
        .unwrap();
        assert_eq!(
            ok,
            Admitted {
                username: None,
                authorization: Authorization::Foreign,
                instance_may_challenge: true,
            }
        );
        assert_eq!(judge_get(Some(&s), "/lan/x", &[]), (200, "allowed"));
        assert_eq!(
            code(judge(
                Some(&s),
                "GET",
                "/lan/x",
                &HeaderMap::new(),
                ELSEWHERE,
                NOW
            )),
            (403, "address_refused")
        );
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(
            code(judge(
                Some(&s),
                "GET",
                "/lan",
                &HeaderMap::new(),
                mapped,
                NOW
            )),
            (200, "allowed")
        );
        // The team's ranges apply on top of the rule's.
        let mut fenced = site();
        fenced.team_ranges = TeamRanges::Only(vec!["192.168.0.0/16".parse().unwrap()]);
        assert_eq!(
            judge_get(Some(&fenced), "/sensors", &[]),
            (403, "address_refused")
        );
        assert_eq!(
            code(judge(
                Some(&fenced),
                "GET",
                "/sensors",
                &HeaderMap::new(),
                ELSEWHERE,
                NOW
            )),
            (200, "allowed")
        );
    }

    #[test]
    fn an_instance_with_basic_rules_keeps_basic_credentials_and_challenges() {
        let s = access(vec![
            rule("/sensors", &[], RoutePolicy::Public, &[]),
            rule(
                "/pw",
                &[],
                RoutePolicy::Basic {
                    min_role: TeamRole::Viewer,
                },
                &[],
            ),
        ]);
        let ok = judge(Some(&s), "GET", "/sensors", &HeaderMap::new(), SITE, NOW).unwrap();
        assert_eq!(ok.authorization, Authorization::NoBasic);
        assert!(!ok.instance_may_challenge);
    }

    #[test]
    fn api_key_rules_need_a_right_unexpired_key_for_the_path() {
        let s = site();
        let get = |path: &str, h: &[(&str, &str)]| judge_get(Some(&s), path, h);
        assert_eq!(get("/api/x", &[]), (401, "credential_required"));
        assert_eq!(
            get("/api/x", &[("authorization", "Basic YTpi")]),
            (401, "credential_required")
        );
        let bearer = |k: &str| format!("Bearer {k}");
        let wrong = key('z');
        assert_eq!(
            get("/api/x", &[("authorization", &bearer(&wrong))]),
            (401, "credential_invalid")
        );
        assert_eq!(
            get("/api/x", &[("x-api-key", "not-a-key")]),
            (401, "credential_invalid")
        );
        // Expired at `expires_at` itself, valid one second before.
        assert_eq!(
            get("/api/x", &[("x-api-key", &key('c'))]),
            (401, "credential_invalid")
        );
        assert_eq!(get("/api/x", &[("x-api-key", &key('d'))]), (200, "allowed"));
        // Within its prefix only; outside it the hub's 403.
        assert_eq!(
            get("/api/line1/temp", &[("x-api-key", &key('b'))]),
            (200, "allowed")
        );
        assert_eq!(
            get("/api/line2/temp", &[("x-api-key", &key('b'))]),
            (403, "forbidden")
        );
        let ok = judge(
            Some(&s),
            "POST",
            "/api/x",
            &headers(&[("authorization", &format!("bearer  {} ", key('a')))]),
            SITE,
            NOW,
        )
        .unwrap();
        assert_eq!(
            ok,
            Admitted {
                username: Some("key:k1".into()),
                authorization: Authorization::Drop,
                instance_may_challenge: false,
            }
        );
        // X-Api-Key wins over Authorization, which is then dropped too.
        let ok = judge(
            Some(&s),
            "GET",
            "/api/x",
            &headers(&[
                ("x-api-key", &key('a')),
                ("authorization", "Bearer device-own"),
            ]),
            SITE,
            NOW,
        )
        .unwrap();
        assert_eq!(ok.authorization, Authorization::Drop);
        // A key of another instance (not in the list) is wrong here.
        let mut other = site();
        other.api_keys.clear();
        assert_eq!(
            judge_get(Some(&other), "/api/x", &[("x-api-key", &key('a'))]),
            (401, "credential_invalid")
        );
    }

    #[test]
    fn a_damaged_digest_matches_nothing() {
        let mut s = site();
        for k in &mut s.api_keys {
            k.sha256 = "zz".into();
        }
        assert_eq!(
            judge_get(Some(&s), "/api/x", &[("x-api-key", &key('a'))]),
            (401, "credential_invalid")
        );
        // Upper-case hex is still the same digest.
        let mut s = site();
        s.api_keys[0].sha256 = s.api_keys[0].sha256.to_uppercase();
        assert_eq!(
            judge_get(Some(&s), "/api/x", &[("x-api-key", &key('a'))]),
            (200, "allowed")
        );
    }

    #[test]
    fn session_and_basic_rules_need_the_hub() {
        let s = site();
        assert_eq!(judge_get(Some(&s), "/dash", &[]), (403, "needs_hub"));
        assert_eq!(
            judge_get(Some(&s), "/dash", &[("authorization", "Basic YTpi")]),
            (403, "needs_hub")
        );
        assert_eq!(judge_get(Some(&s), "/dash-lan", &[]), (403, "needs_hub"));
        assert_eq!(
            code(judge(
                Some(&s),
                "GET",
                "/dash-lan",
                &HeaderMap::new(),
                ELSEWHERE,
                NOW
            )),
            (403, "address_refused")
        );
        let basic = access(vec![rule(
            "/",
            &[],
            RoutePolicy::Basic {
                min_role: TeamRole::Member,
            },
            &[],
        )]);
        assert_eq!(judge_get(Some(&basic), "/x", &[]), (403, "needs_hub"));
    }

    #[test]
    fn bad_access_from_the_hub_is_refused_whole() {
        let bad = vec![rule("/a/../b", &[], RoutePolicy::Public, &[])];
        assert!(SiteAccess::new("i".into(), bad, vec![], Secret::new("n".repeat(43))).is_err());
        assert!(SiteAccess::new("i".into(), vec![], vec![], Secret::new("short".into())).is_err());
        assert!(
            SiteAccess::new(String::new(), vec![], vec![], Secret::new("n".repeat(43))).is_err()
        );
    }
}

//! Topic rules of the team MQTT broker: which topics a client may publish
//! to and which filters it may subscribe with, and how a team's bare topic
//! tree is mounted under the team's prefix.
//!
//! Names and filters follow MQTT 3.1.1 section 4.7 and MQTT 5 section 4.7:
//! levels are separated by `/`; in a filter `+` matches exactly one level
//! and `#` (last, whole level) matches the parent and any number of levels
//! below; a filter that starts with a wildcard never matches a topic that
//! starts with `$`. Shared subscriptions (`$share/{group}/{filter}`) are
//! judged by their filter.
//!
//! A client's rules are ordered; the first that applies decides, and no
//! rule means deny. For a publish a rule applies when its filter matches
//! the topic. For a subscription an allow rule applies only when its filter
//! covers every topic the requested filter could match, and a deny rule
//! applies as soon as the two could match a topic in common: a subscription
//! is never let through to anything a deny rule names.

use serde::{Deserialize, Serialize};

use crate::{refused, RuleError};

/// The longest topic or filter MQTT can carry (a two-byte length).
pub const MAX_TOPIC_BYTES: usize = 65_535;
/// Most rules one client may hold.
pub const MAX_RULES: usize = 100;
/// Most broker clients one team may hold (instances' own included).
pub const MAX_CLIENTS_PER_TEAM: usize = 1_000;

/// A broker client's name as stored: trimmed, 1 to 100 printable
/// characters, unique in its team.
pub fn client_name(name: &str) -> Result<String, RuleError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(refused(
            "invalid_name",
            "the client name must be 1 to 100 printable characters",
        ));
    }
    Ok(name.to_string())
}

/// Separators allowed between a client's username and the suffix of a
/// client id.
pub const CLIENT_ID_SEPARATORS: [char; 5] = ['-', '_', ':', '.', '/'];
/// The longest client id the broker accepts.
pub const MAX_CLIENT_ID_BYTES: usize = 256;

/// The broker client a client id is reserved for, if any: an id (32
/// lowercase hex digits, as every broker client's username is) alone or
/// followed by one of [`CLIENT_ID_SEPARATORS`].
pub fn client_id_owner(client_id: &str) -> Option<&str> {
    let owner = client_id.get(..32)?;
    let rest = &client_id[32..];
    let is_id = owner
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (is_id && (rest.is_empty() || rest.starts_with(CLIENT_ID_SEPARATORS))).then_some(owner)
}

/// Whether a connection logged in as `username` may use `client_id`.
///
/// A client id that starts with a client's username (alone, or followed by
/// a separator and a suffix) is that client's alone, so one client can hold
/// several connections told apart by suffixes and no other client can ever
/// take them over or resume their sessions. Any other id (say, the one
/// Node-RED's mqtt node makes up) is free, at most [`MAX_CLIENT_ID_BYTES`];
/// the broker still refuses it while another client holds a session under
/// it, so free ids cannot be taken over either.
pub fn client_id_allowed(username: &str, client_id: &str) -> bool {
    if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_BYTES {
        return false;
    }
    match client_id_owner(client_id) {
        Some(owner) => owner == username,
        None => true,
    }
}

/// What a client asks to do with a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Publish,
    Subscribe,
}

/// Which actions a rule speaks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Actions {
    Publish,
    Subscribe,
    Both,
}

impl Actions {
    fn includes(self, action: Action) -> bool {
        matches!(
            (self, action),
            (Actions::Both, _)
                | (Actions::Publish, Action::Publish)
                | (Actions::Subscribe, Action::Subscribe)
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Allow,
    Deny,
}

/// One rule of a client: allow or deny some actions on a topic filter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    pub effect: Effect,
    pub actions: Actions,
    /// A valid filter ([`check_filter`]), never a shared subscription.
    pub filter: String,
}

/// A topic name or filter as it arrived, checked: valid UTF-8, not empty,
/// at most [`MAX_TOPIC_BYTES`], and no NUL or other control character (MQTT
/// forbids U+0000 and advises against the others; Redwall refuses them).
pub fn topic_text(bytes: &[u8]) -> Result<&str, RuleError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| refused("invalid_topic", "a topic must be UTF-8"))?;
    if text.is_empty() || text.len() > MAX_TOPIC_BYTES {
        return Err(refused("invalid_topic", "a topic must be 1 to 65535 bytes"));
    }
    if text.chars().any(char::is_control) {
        return Err(refused(
            "invalid_topic",
            "a topic must not contain control characters",
        ));
    }
    Ok(text)
}

/// A topic a client publishes to: no wildcard anywhere.
pub fn check_topic_name(topic: &str) -> Result<(), RuleError> {
    topic_text(topic.as_bytes())?;
    if topic.contains(['+', '#']) {
        return Err(refused(
            "invalid_topic",
            "a topic to publish to cannot hold the wildcards + or #",
        ));
    }
    Ok(())
}

/// A filter: each `+` and `#` is a whole level, and `#` is the last one.
pub fn check_filter(filter: &str) -> Result<(), RuleError> {
    topic_text(filter.as_bytes())?;
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let wild = level.contains(['+', '#']);
        if wild && *level != "+" && *level != "#" {
            return Err(refused(
                "invalid_filter",
                "a wildcard must be a whole level, as in a/+/b or a/#",
            ));
        }
        if *level == "#" && i + 1 != levels.len() {
            return Err(refused(
                "invalid_filter",
                "# may only be the last level of a filter",
            ));
        }
    }
    Ok(())
}

/// A subscription as requested: a filter, or a shared subscription
/// `$share/{group}/{filter}` (its group one level, without wildcards).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription<'a> {
    pub share_group: Option<&'a str>,
    pub filter: &'a str,
}

pub fn subscription(requested: &str) -> Result<Subscription<'_>, RuleError> {
    topic_text(requested.as_bytes())?;
    let Some(rest) = requested.strip_prefix("$share/") else {
        check_filter(requested)?;
        return Ok(Subscription {
            share_group: None,
            filter: requested,
        });
    };
    let Some((group, filter)) = rest.split_once('/') else {
        return Err(refused(
            "invalid_filter",
            "a shared subscription is $share/{group}/{filter}",
        ));
    };
    if group.is_empty() || group.contains(['+', '#']) {
        return Err(refused(
            "invalid_filter",
            "a share group is one level without wildcards",
        ));
    }
    check_filter(filter)?;
    Ok(Subscription {
        share_group: Some(group),
        filter,
    })
}

/// Whether `filter` (valid) matches `topic` (a valid name).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The first level of a filter that may match, as the `$` rule sees it:
/// a literal, or a wildcard (which never matches a `$` level first).
fn starts_with_dollar(filter: &str) -> bool {
    filter.starts_with('$')
}

/// Whether every topic `inner` matches is matched by `outer` (both valid
/// filters).
pub fn covers(outer: &str, inner: &str) -> bool {
    // A wildcard-led outer filter matches no `$` topic; an inner filter
    // that can match one is not covered.
    if outer.starts_with(['+', '#']) && starts_with_dollar(inner) {
        return false;
    }
    let mut o = outer.split('/').peekable();
    let mut i = inner.split('/');
    let mut first = true;
    loop {
        match (o.next(), i.next()) {
            (Some("#"), _) => return true,
            // A first-level `#` has no parent level to match, so `+/#`
            // covers it; any later `#` also matches its parent level,
            // which `+` or a literal cannot match.
            (Some("+"), Some("#")) if first => return o.peek() == Some(&"#"),
            (_, Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b && b != "+" => {}
            (None, None) => return true,
            _ => return false,
        }
        first = false;
    }
}

/// Whether some topic is matched by both filters (both valid).
pub fn overlaps(a: &str, b: &str) -> bool {
    let dollar_a = starts_with_dollar(a);
    let dollar_b = starts_with_dollar(b);
    // A `$` literal first level and a wildcard first level never meet.
    if (dollar_a && b.starts_with(['+', '#'])) || (dollar_b && a.starts_with(['+', '#'])) {
        return false;
    }
    let mut x = a.split('/');
    let mut y = b.split('/');
    loop {
        match (x.next(), y.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(p), Some(q)) if p == q => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The decision for `action` on `target` (a topic name for a publish, a
/// filter for a subscription: the filter of a shared subscription), by the
/// client's ordered `rules`; no rule that applies means deny.
pub fn decide(rules: &[AclRule], action: Action, target: &str) -> Effect {
    for rule in rules.iter().filter(|r| r.actions.includes(action)) {
        let applies = match (action, rule.effect) {
            (Action::Publish, _) => matches(&rule.filter, target),
            (Action::Subscribe, Effect::Allow) => covers(&rule.filter, target),
            (Action::Subscribe, Effect::Deny) => overlaps(&rule.filter, target),
        };
        if applies {
            return rule.effect;
        }
    }
    Effect::Deny
}

/// Rules as stored: each filter valid and no shared subscription (rules
/// speak of topics), at most [`MAX_RULES`].
pub fn check_rules(rules: &[AclRule]) -> Result<(), RuleError> {
    if rules.len() > MAX_RULES {
        return Err(refused(
            "invalid_rules",
            format!("a client may hold at most {MAX_RULES} rules"),
        ));
    }
    for rule in rules {
        if rule.filter.starts_with("$share/") {
            return Err(refused(
                "invalid_rules",
                "a rule names a topic filter, not a shared subscription",
            ));
        }
        check_filter(&rule.filter)?;
    }
    Ok(())
}

/// The rules an instance gets when no Owner narrowed them: its whole team
/// tree (the broker mounts it, so `#` is the team's tree only), `$` topics
/// included.
pub fn whole_team_tree() -> Vec<AclRule> {
    ["#", "$SYS/#"]
        .into_iter()
        .map(|filter| AclRule {
            effect: Effect::Allow,
            actions: Actions::Both,
            filter: filter.to_string(),
        })
        .collect()
}

/// The prefix a team's tree is mounted under in the broker. Team ids are
/// ids (no `/`, `+`, `#`), so two teams' prefixes never overlap.
pub fn mount_prefix(team_id: &str) -> String {
    format!("t/{team_id}/")
}

/// A team's topic (or filter) as the broker stores it. `$` topics are
/// mounted too, so a team's `$SYS/...` is its own.
pub fn mount(prefix: &str, topic: &str) -> String {
    format!("{prefix}{topic}")
}

/// A stored topic as the team sees it; `None` for another team's.
pub fn unmount<'a>(prefix: &str, stored: &'a str) -> Option<&'a str> {
    stored.strip_prefix(prefix)
}

/// Brute-force material for the tests of this module and of `mqtt_view`.
#[cfg(test)]
pub(crate) mod test_paths {
    /// Every path of 1 to `depth` levels over `levels`, `$s` only first,
    /// nothing after a `#` level.
    pub(crate) fn all_paths(levels: &[&'static str], depth: usize) -> Vec<String> {
        fn grow(
            prefix: Vec<&'static str>,
            depth: usize,
            levels: &[&'static str],
            out: &mut Vec<String>,
        ) {
            if !prefix.is_empty() {
                out.push(prefix.join("/"));
            }
            if depth == 0 || prefix.last() == Some(&"#") {
                return;
            }
            for l in levels {
                if *l == "$s" && !prefix.is_empty() {
                    continue;
                }
                let mut next = prefix.clone();
                next.push(l);
                grow(next, depth - 1, levels, out);
            }
        }
        let mut out = Vec::new();
        grow(Vec::new(), depth, levels, &mut out);
        out
    }

    /// Every filter of 1 to 3 levels over a, b, $s, + and #.
    pub(crate) fn all_filters() -> Vec<String> {
        all_paths(&["a", "b", "+", "#", "$s"], 3)
    }

    /// Every topic of 1 to 4 levels over a, b, c, the empty level and $s:
    /// enough to tell any two filters above apart.
    pub(crate) fn all_topics() -> Vec<String> {
        let mut out = all_paths(&["a", "b", "c", "", "$s"], 4);
        out.retain(|t| !t.is_empty());
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::test_paths::{all_filters, all_topics};
    use super::*;

    #[test]
    fn a_clients_own_ids_are_its_alone_and_the_rest_are_free() {
        let user = "0123456789abcdef0123456789abcdef";
        let other = "fedcba9876543210fedcba9876543210";
        assert!(client_id_allowed(user, user));
        assert!(!client_id_allowed(other, user));
        for sep in CLIENT_ID_SEPARATORS {
            let own = format!("{user}{sep}line-2");
            assert_eq!(client_id_owner(&own), Some(user));
            assert!(client_id_allowed(user, &own));
            assert!(!client_id_allowed(other, &own), "{own}");
        }
        // Not id-shaped: free for anyone.
        for free in [
            "nodered_1234",
            "0123456789abcdef0123456789abcde",
            "0123456789abcdef0123456789abcdefX",
            "0123456789ABCDEF0123456789ABCDEF",
            "x0123456789abcdef0123456789abcdef",
            "0123456789abcdef0123456789abcdef line",
            "é",
        ] {
            assert_eq!(client_id_owner(free), None, "{free:?}");
            assert!(client_id_allowed(user, free), "{free:?}");
            assert!(client_id_allowed(other, free), "{free:?}");
        }
        assert!(!client_id_allowed(user, ""));
        let long = format!("{user}-{}", "x".repeat(MAX_CLIENT_ID_BYTES));
        assert!(!client_id_allowed(user, &long));
        assert!(!client_id_allowed(
            user,
            &"x".repeat(MAX_CLIENT_ID_BYTES + 1)
        ));
    }

    #[test]
    fn no_reserved_client_id_is_allowed_for_two_usernames() {
        // Usernames over a small alphabet, every separator and a few
        // suffixes: a reserved id is allowed for its owner only.
        let digits = ["0", "9", "a", "f"];
        let ids: Vec<String> = digits
            .iter()
            .flat_map(|a| digits.map(|b| format!("{a}{b}").repeat(16)))
            .collect();
        let suffixes = ["", "-x", "_x", ":1", "./", "/a/b"];
        for owner in &ids {
            for suffix in suffixes {
                let cid = format!("{owner}{suffix}");
                let allowed: Vec<&String> =
                    ids.iter().filter(|u| client_id_allowed(u, &cid)).collect();
                assert_eq!(allowed, vec![owner], "{cid:?}");
            }
        }
    }

    fn rule(effect: Effect, actions: Actions, filter: &str) -> AclRule {
        AclRule {
            effect,
            actions,
            filter: filter.to_string(),
        }
    }

    #[test]
    fn matching_follows_the_standard() {
        for (filter, topic, expected) in [
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/ranking",
                true,
            ),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/score/wimbledon",
                true,
            ),
            ("sport/#", "sport", true),
            ("#", "sport/tennis", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("#", "$SYS/broker", false),
            ("+/monitor/Clients", "$SYS/monitor/Clients", false),
            ("$SYS/#", "$SYS/broker", true),
            ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
            ("a/b", "a/b", true),
            ("a/b", "A/b", false),
            ("a/b", "a/b/", false),
        ] {
            assert_eq!(matches(filter, topic), expected, "{filter} ~ {topic}");
        }
    }

    #[test]
    fn covers_is_inclusion_of_what_the_filters_match() {
        let topics = all_topics();
        let filters = all_filters();
        for outer in &filters {
            for inner in &filters {
                let included = topics
                    .iter()
                    .filter(|t| matches(inner, t))
                    .all(|t| matches(outer, t));
                assert_eq!(covers(outer, inner), included, "{outer} covers {inner}?");
            }
        }
    }

    #[test]
    fn overlaps_is_a_topic_in_common() {
        let topics = all_topics();
        let filters = all_filters();
        for a in &filters {
            for b in &filters {
                let common = topics.iter().any(|t| matches(a, t) && matches(b, t));
                assert_eq!(overlaps(a, b), common, "{a} overlaps {b}?");
            }
        }
    }

    #[test]
    fn names_and_filters_are_checked() {
        for ok in ["a", "a/b", "/", "a//b", "$SYS/x", "é/ü"] {
            assert!(check_topic_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "a/+", "a/#", "+", "#", "a+b", "a\0b", "a\u{7}", "a\u{9f}",
        ] {
            assert!(check_topic_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_topic_name(&"a".repeat(MAX_TOPIC_BYTES)).is_ok());
        assert!(check_topic_name(&"a".repeat(MAX_TOPIC_BYTES + 1)).is_err());
        for ok in ["#", "+", "a/+/b", "a/#", "+/+", "/#", "$SYS/#"] {
            assert!(check_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a#", "a/#/b", "a+/b", "#/a", "a/b#", "++", "a\0"] {
            assert!(check_filter(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_utf8_is_refused() {
        for bad in [
            &b"a\xff"[..],
            b"\xc3",
            b"\xed\xa0\x80",
            b"\xf8\x88\x80\x80\x80",
        ] {
            assert_eq!(
                topic_text(bad).unwrap_err().code,
                "invalid_topic",
                "{bad:?}"
            );
        }
        assert_eq!(
            topic_text("plant/température".as_bytes()).unwrap(),
            "plant/température"
        );
    }

    #[test]
    fn shared_subscriptions_are_judged_by_their_filter() {
        assert_eq!(
            subscription("$share/g1/plant/+").unwrap(),
            Subscription {
                share_group: Some("g1"),
                filter: "plant/+"
            }
        );
        assert_eq!(subscription("plant/#").unwrap().share_group, None);
        for bad in [
            "$share/",
            "$share/g",
            "$share//a",
            "$share/+/a",
            "$share/g/a#",
        ] {
            assert!(subscription(bad).is_err(), "{bad}");
        }
        let rules = vec![rule(Effect::Allow, Actions::Subscribe, "plant/#")];
        let shared = subscription("$share/g/plant/+").unwrap();
        assert_eq!(
            decide(&rules, Action::Subscribe, shared.filter),
            Effect::Allow
        );
        let outside = subscription("$share/g/office/+").unwrap();
        assert_eq!(
            decide(&rules, Action::Subscribe, outside.filter),
            Effect::Deny
        );
    }

    #[test]
    fn no_rule_denies_and_the_first_that_applies_decides() {
        assert_eq!(decide(&[], Action::Publish, "a"), Effect::Deny);
        assert_eq!(decide(&[], Action::Subscribe, "#"), Effect::Deny);
        let rules = vec![
            rule(Effect::Deny, Actions::Both, "plant/secret/#"),
            rule(Effect::Allow, Actions::Publish, "plant/#"),
            rule(Effect::Allow, Actions::Subscribe, "plant/+/temp"),
        ];
        assert_eq!(
            decide(&rules, Action::Publish, "plant/a/temp"),
            Effect::Allow
        );
        assert_eq!(
            decide(&rules, Action::Publish, "plant/secret/x"),
            Effect::Deny
        );
        assert_eq!(
            decide(&rules, Action::Publish, "plant/secret"),
            Effect::Deny
        );
        assert_eq!(decide(&rules, Action::Publish, "office/x"), Effect::Deny);
        assert_eq!(
            decide(&rules, Action::Subscribe, "plant/a/temp"),
            Effect::Allow
        );
        // Publish-only rules never allow a subscription.
        assert_eq!(
            decide(&rules, Action::Subscribe, "plant/a/pressure"),
            Effect::Deny
        );
        // A filter reaching beyond what the allow rule covers is refused.
        assert_eq!(decide(&rules, Action::Subscribe, "plant/#"), Effect::Deny);
        assert_eq!(decide(&rules, Action::Subscribe, "plant/+/+"), Effect::Deny);
        // A subscription that could receive a denied topic is refused,
        // even where a later rule would allow it.
        let wide = vec![
            rule(Effect::Deny, Actions::Subscribe, "plant/secret/#"),
            rule(Effect::Allow, Actions::Subscribe, "#"),
        ];
        assert_eq!(decide(&wide, Action::Subscribe, "plant/+/x"), Effect::Deny);
        assert_eq!(
            decide(&wide, Action::Subscribe, "plant/open/x"),
            Effect::Allow
        );
        assert_eq!(decide(&wide, Action::Subscribe, "#"), Effect::Deny);
    }

    #[test]
    fn publish_only_clients_cannot_subscribe() {
        let rules = vec![rule(Effect::Allow, Actions::Publish, "#")];
        for f in ["#", "a", "a/+", "$SYS/#"] {
            assert_eq!(decide(&rules, Action::Subscribe, f), Effect::Deny, "{f}");
        }
        assert_eq!(decide(&rules, Action::Publish, "a/b"), Effect::Allow);
    }

    #[test]
    fn dollar_topics_need_a_rule_that_names_them() {
        let rules = vec![rule(Effect::Allow, Actions::Both, "#")];
        assert_eq!(decide(&rules, Action::Publish, "$SYS/x"), Effect::Deny);
        assert_eq!(decide(&rules, Action::Subscribe, "$SYS/#"), Effect::Deny);
        let team = whole_team_tree();
        assert_eq!(decide(&team, Action::Publish, "$SYS/x"), Effect::Allow);
        assert_eq!(decide(&team, Action::Subscribe, "$SYS/#"), Effect::Allow);
        assert_eq!(decide(&team, Action::Subscribe, "#"), Effect::Allow);
        assert!(check_rules(&team).is_ok());
    }

    #[test]
    fn client_names_are_trimmed_printable_and_bounded() {
        assert_eq!(client_name("  gateway 1 ").unwrap(), "gateway 1");
        for bad in ["", "  ", "a\nb", &"x".repeat(101)] {
            assert_eq!(
                client_name(bad).unwrap_err().code,
                "invalid_name",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rules_are_stored_as_plain_json() {
        let rules = vec![rule(Effect::Deny, Actions::Subscribe, "a/#")];
        let json = serde_json::to_string(&rules).unwrap();
        assert_eq!(
            json,
            r#"[{"effect":"deny","actions":"subscribe","filter":"a/#"}]"#
        );
        let back: Vec<AclRule> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, rules);
        assert!(serde_json::from_str::<Vec<AclRule>>(
            r#"[{"effect":"maybe","actions":"both","filter":"a"}]"#
        )
        .is_err());
    }

    #[test]
    fn rules_are_bounded_and_name_topics() {
        let many = vec![rule(Effect::Allow, Actions::Both, "a"); MAX_RULES + 1];
        assert!(check_rules(&many).is_err());
        assert!(check_rules(&[rule(Effect::Allow, Actions::Both, "$share/g/a")]).is_err());
        assert!(check_rules(&[rule(Effect::Allow, Actions::Both, "a/#/b")]).is_err());
        assert!(check_rules(&[rule(Effect::Deny, Actions::Publish, "a/+")]).is_ok());
    }

    #[test]
    fn teams_trees_never_meet() {
        let a = mount_prefix("0123456789abcdef");
        let b = mount_prefix("0123456789abcdeg");
        for topic in ["plant/temp", "#", "$SYS/broker", "+/x"] {
            let stored = mount(&a, topic);
            assert_eq!(unmount(&a, &stored), Some(topic));
            assert_eq!(unmount(&b, &stored), None);
            // Another team's widest subscription, mounted, never matches.
            assert!(!matches(&mount(&b, "#"), &stored));
        }
        assert!(!overlaps(&mount(&a, "#"), &mount(&b, "#")));
    }
}

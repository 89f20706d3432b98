//! The team broker's rules as people read and write them: who may publish
//! and who may subscribe on each topic filter the team's clients name, and
//! rules as lines of text (`allow publish plant/#`).
//!
//! # Who may, on a filter F
//!
//! F is one of the filters named in the clients' rules (any effect, any
//! action), in the team's own terms (bare, never mounted). For a client
//! with ordered rules R:
//!
//! - it **may subscribe** on F when `decide(R, Subscribe, F)` allows: the
//!   broker's own answer to a SUBSCRIBE with F. So the first rule for
//!   subscribing that applies decides, where an allow applies only when its
//!   filter covers F and a deny as soon as it overlaps F.
//! - it **may publish** on F when publishing is allowed on *every* topic F
//!   matches. This is judged the way a subscription is: among the rules for
//!   publishing, in order, an allow rule decides (yes) when its filter
//!   covers F, a deny rule decides (no) as soon as its filter overlaps F,
//!   and any other rule is passed over; no rule deciding means no.
//!
//! For a filter without wildcards both are exactly the broker's answer for
//! that one topic (`decide(R, Publish, F)`): covering and overlapping a
//! single topic are both matching it. For a filter with wildcards the
//! answer is sound: a client listed may publish on every topic F matches,
//! and one listed as a subscriber is let through for F and for every topic
//! in it. It is not complete: a client whose right on all of F comes only
//! from several allow rules together (`a`, `a/+` and `a/+/#` between them
//! allow all of `a/#`), or whose deny rule on part of F is shadowed by an
//! earlier allow, is left out. The table may understate what a client can
//! do; it never overstates it.
//!
//! Rows are sorted by filter (byte order), and the names in each row by
//! name.
//!
//! # Rules as text
//!
//! One rule per line, `EFFECT ACTIONS FILTER`: the effect `allow` or
//! `deny`, the actions `publish`, `subscribe` or `both` (both words in any
//! case), then the filter: the rest of the line, trimmed (a level may hold
//! spaces). Blank lines are skipped. The filter itself is checked where the
//! rules are stored (`mqtt_acl::check_rules`); here only the line's shape.

use std::collections::BTreeSet;

use crate::mqtt_acl::{covers, decide, overlaps, AclRule, Action, Actions, Effect};
use crate::{refused, RuleError};

/// One row of the who-may table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterAccess {
    pub filter: String,
    /// Clients that may publish on every topic the filter matches.
    pub publishers: Vec<String>,
    /// Clients that may subscribe with the filter.
    pub subscribers: Vec<String>,
}

/// Whether a client with `rules` may subscribe with `filter` (a valid
/// filter): the broker's own decision.
pub fn may_subscribe(rules: &[AclRule], filter: &str) -> bool {
    decide(rules, Action::Subscribe, filter) == Effect::Allow
}

/// Whether a client with `rules` may publish on every topic `filter` (a
/// valid filter) matches, judged as the module documentation says.
pub fn may_publish(rules: &[AclRule], filter: &str) -> bool {
    let for_publishing = rules
        .iter()
        .filter(|r| matches!(r.actions, Actions::Publish | Actions::Both));
    for rule in for_publishing {
        match rule.effect {
            Effect::Allow if covers(&rule.filter, filter) => return true,
            Effect::Deny if overlaps(&rule.filter, filter) => return false,
            _ => {}
        }
    }
    false
}

/// The who-may table of a team: one row per distinct filter named in any
/// client's rules. `clients` are (name, ordered rules).
pub fn who_may(clients: &[(&str, &[AclRule])]) -> Vec<FilterAccess> {
    let filters: BTreeSet<&str> = clients
        .iter()
        .flat_map(|(_, rules)| rules.iter().map(|r| r.filter.as_str()))
        .collect();
    filters
        .into_iter()
        .map(|filter| {
            let names = |allowed: fn(&[AclRule], &str) -> bool| -> Vec<String> {
                let set: BTreeSet<&str> = clients
                    .iter()
                    .filter(|(_, rules)| allowed(rules, filter))
                    .map(|(name, _)| *name)
                    .collect();
                set.into_iter().map(str::to_string).collect()
            };
            FilterAccess {
                filter: filter.to_string(),
                publishers: names(may_publish),
                subscribers: names(may_subscribe),
            }
        })
        .collect()
}

/// A rule as one line of text, as [`parse_rule_lines`] reads it back.
pub fn rule_line(rule: &AclRule) -> String {
    let effect = match rule.effect {
        Effect::Allow => "allow",
        Effect::Deny => "deny",
    };
    let actions = match rule.actions {
        Actions::Publish => "publish",
        Actions::Subscribe => "subscribe",
        Actions::Both => "both",
    };
    format!("{effect} {actions} {}", rule.filter)
}

/// Rules as lines of text, each with its line number (from 1), so a
/// refusal of one rule can name its line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleLine {
    pub line: usize,
    pub rule: AclRule,
}

const SHAPE: &str = "write each rule as: allow or deny, then publish, subscribe or both, then the topic filter, such as allow publish plant/#";

/// Reads rules written one per line; the first line that is not a rule is
/// refused (`invalid_rules`), naming it.
pub fn parse_rule_lines(text: &str) -> Result<Vec<RuleLine>, RuleError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            continue;
        }
        let (effect_word, rest) = split_word(trimmed);
        let (actions_word, filter) = split_word(rest);
        let effect = match effect_word.to_ascii_lowercase().as_str() {
            "allow" => Effect::Allow,
            "deny" => Effect::Deny,
            _ => {
                return Err(line_error(
                    line,
                    format!("\"{}\" is not allow or deny; {SHAPE}", shown(effect_word)),
                ))
            }
        };
        let actions = match actions_word.to_ascii_lowercase().as_str() {
            "publish" => Actions::Publish,
            "subscribe" => Actions::Subscribe,
            "both" => Actions::Both,
            "" => return Err(line_error(line, format!("the rule is incomplete; {SHAPE}"))),
            _ => {
                return Err(line_error(
                    line,
                    format!(
                        "\"{}\" is not publish, subscribe or both; {SHAPE}",
                        shown(actions_word)
                    ),
                ))
            }
        };
        if filter.is_empty() {
            return Err(line_error(
                line,
                format!("the rule names no topic filter; {SHAPE}"),
            ));
        }
        out.push(RuleLine {
            line,
            rule: AclRule {
                effect,
                actions,
                filter: filter.to_string(),
            },
        });
    }
    Ok(out)
}

/// The first word of `s` and the rest, trimmed.
fn split_word(s: &str) -> (&str, &str) {
    match s.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (s, ""),
    }
}

/// A word as quoted back in a message: printable and short.
fn shown(word: &str) -> String {
    let mut s: String = word.chars().filter(|c| !c.is_control()).take(40).collect();
    if word.chars().count() > 40 {
        s.push('…');
    }
    s
}

fn line_error(line: usize, message: String) -> RuleError {
    refused("invalid_rules", format!("line {line}: {message}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::mqtt_acl::matches;
    use crate::mqtt_acl::test_paths::{all_filters as targets, all_paths, all_topics as topics};

    fn rule(effect: Effect, actions: Actions, filter: &str) -> AclRule {
        AclRule {
            effect,
            actions,
            filter: filter.to_string(),
        }
    }

    const EFFECTS: [Effect; 2] = [Effect::Allow, Effect::Deny];
    const ACTIONS: [Actions; 3] = [Actions::Publish, Actions::Subscribe, Actions::Both];

    /// Every rule on a filter of 1 or 2 levels over a, +, # and $s.
    fn small_rules() -> Vec<AclRule> {
        let mut out = Vec::new();
        for f in all_paths(&["a", "+", "#", "$s"], 2) {
            for e in EFFECTS {
                for a in ACTIONS {
                    out.push(rule(e, a, &f));
                }
            }
        }
        out
    }

    /// Every list of at most two of [`small_rules`], and every list of
    /// three of a few rules chosen to shadow one another.
    fn rule_lists() -> Vec<Vec<AclRule>> {
        let small = small_rules();
        let mut lists = vec![Vec::new()];
        for r in &small {
            lists.push(vec![r.clone()]);
        }
        for r in &small {
            for s in &small {
                lists.push(vec![r.clone(), s.clone()]);
            }
        }
        let mut few = vec![
            rule(Effect::Allow, Actions::Subscribe, "#"),
            rule(Effect::Deny, Actions::Subscribe, "a/#"),
        ];
        for f in ["a", "a/+", "a/#", "+/a", "#", "$s/#"] {
            for e in EFFECTS {
                few.push(rule(e, Actions::Both, f));
            }
        }
        for r in &few {
            for s in &few {
                for t in &few {
                    lists.push(vec![r.clone(), s.clone(), t.clone()]);
                }
            }
        }
        lists
    }

    /// For each target filter, the indexes of the topics it matches.
    fn topics_of(targets: &[String], topics: &[String]) -> Vec<Vec<usize>> {
        targets
            .iter()
            .map(|f| {
                (0..topics.len())
                    .filter(|&i| matches(f, &topics[i]))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_publisher_may_publish_on_every_topic_of_the_filter() {
        let (targets, topics) = (targets(), topics());
        let of = topics_of(&targets, &topics);
        for rules in rule_lists() {
            let allowed: Vec<bool> = topics
                .iter()
                .map(|t| decide(&rules, Action::Publish, t) == Effect::Allow)
                .collect();
            for (f, inside) in targets.iter().zip(&of) {
                let all = inside.iter().all(|&i| allowed[i]);
                if may_publish(&rules, f) {
                    assert!(all, "{rules:?} listed on {f} but refused a topic in it");
                }
                // One rule at most: nothing to combine or shadow, so exact.
                if rules.len() <= 1 {
                    assert_eq!(may_publish(&rules, f), all, "{rules:?} on {f}");
                }
            }
        }
    }

    #[test]
    fn publishing_is_judged_as_documented() {
        // The documented definition, by sets of topics: an allow rule
        // decides when F's topics are all its own, a deny rule as soon as
        // they share one.
        let (targets, topics) = (targets(), topics());
        let of = topics_of(&targets, &topics);
        for rules in rule_lists() {
            let sets: Vec<Vec<bool>> = rules
                .iter()
                .map(|r| topics.iter().map(|t| matches(&r.filter, t)).collect())
                .collect();
            for (f, inside) in targets.iter().zip(&of) {
                let mut expected = false;
                for (r, set) in rules.iter().zip(&sets) {
                    if r.actions == Actions::Subscribe {
                        continue;
                    }
                    let decides = match r.effect {
                        Effect::Allow => inside.iter().all(|&i| set[i]),
                        Effect::Deny => inside.iter().any(|&i| set[i]),
                    };
                    if decides {
                        expected = r.effect == Effect::Allow;
                        break;
                    }
                }
                assert_eq!(may_publish(&rules, f), expected, "{rules:?} on {f}");
            }
        }
    }

    #[test]
    fn a_topic_without_wildcards_gets_the_brokers_own_answer() {
        let mut topics = all_paths(&["a", "b", "", "$s"], 3);
        topics.retain(|t| !t.is_empty());
        for rules in rule_lists() {
            for t in &topics {
                assert_eq!(
                    may_publish(&rules, t),
                    decide(&rules, Action::Publish, t) == Effect::Allow,
                    "{rules:?} publish {t}"
                );
            }
        }
    }

    #[test]
    fn a_subscriber_is_let_through_for_the_filter_and_each_topic_in_it() {
        let (targets, topics) = (targets(), topics());
        let of = topics_of(&targets, &topics);
        for rules in rule_lists() {
            for (f, inside) in targets.iter().zip(&of) {
                let listed = may_subscribe(&rules, f);
                assert_eq!(
                    listed,
                    decide(&rules, Action::Subscribe, f) == Effect::Allow
                );
                if listed {
                    for &i in inside {
                        assert!(
                            may_subscribe(&rules, &topics[i]),
                            "{rules:?} on {f} but not {}",
                            topics[i]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_table_has_a_sorted_row_per_filter_named() {
        let gateway = vec![
            rule(Effect::Deny, Actions::Both, "plant/secret/#"),
            rule(Effect::Allow, Actions::Publish, "plant/#"),
            rule(Effect::Allow, Actions::Subscribe, "+/temp"),
        ];
        let dashboard = vec![rule(Effect::Allow, Actions::Subscribe, "plant/#")];
        let instance = crate::mqtt_acl::whole_team_tree();
        let clients: Vec<(&str, &[AclRule])> = vec![
            ("gateway", &gateway),
            ("dashboard", &dashboard),
            ("instance: flows", &instance),
        ];
        let table = who_may(&clients);
        let row = |f: &str| table.iter().find(|r| r.filter == f).unwrap().clone();
        let filters: Vec<&str> = table.iter().map(|r| r.filter.as_str()).collect();
        assert_eq!(
            filters,
            ["#", "$SYS/#", "+/temp", "plant/#", "plant/secret/#"]
        );
        assert_eq!(row("#").publishers, ["instance: flows"]);
        assert_eq!(row("#").subscribers, ["instance: flows"]);
        // The gateway's deny overlaps all of plant/#, so it is not listed
        // for it; the dashboard has no deny.
        assert_eq!(row("plant/#").publishers, ["instance: flows"]);
        assert_eq!(row("plant/#").subscribers, ["dashboard", "instance: flows"]);
        assert_eq!(row("+/temp").subscribers, ["gateway", "instance: flows"]);
        assert_eq!(row("plant/secret/#").publishers, ["instance: flows"]);
        assert_eq!(row("$SYS/#").subscribers, ["instance: flows"]);
        assert!(who_may(&[]).is_empty());
        let none: Vec<(&str, &[AclRule])> = vec![("idle", &[])];
        assert!(who_may(&none).is_empty());
    }

    #[test]
    fn the_table_lists_each_client_by_its_own_rules() {
        let lists = rule_lists();
        // A few teams of three clients from the lists above.
        for chunk in lists.chunks(3).step_by(97) {
            let names = ["c", "a", "b"];
            let clients: Vec<(&str, &[AclRule])> = names
                .iter()
                .zip(chunk)
                .map(|(n, r)| (*n, r.as_slice()))
                .collect();
            let table = who_may(&clients);
            let mut named: Vec<&str> = clients
                .iter()
                .flat_map(|(_, r)| r.iter().map(|x| x.filter.as_str()))
                .collect();
            named.sort();
            named.dedup();
            let filters: Vec<&str> = table.iter().map(|r| r.filter.as_str()).collect();
            assert_eq!(filters, named);
            for row in &table {
                let mut publishers: Vec<&str> = clients
                    .iter()
                    .filter(|(_, r)| may_publish(r, &row.filter))
                    .map(|(n, _)| *n)
                    .collect();
                publishers.sort();
                let mut subscribers: Vec<&str> = clients
                    .iter()
                    .filter(|(_, r)| may_subscribe(r, &row.filter))
                    .map(|(n, _)| *n)
                    .collect();
                subscribers.sort();
                assert_eq!(row.publishers, publishers);
                assert_eq!(row.subscribers, subscribers);
            }
        }
    }

    #[test]
    fn rules_read_back_as_written() {
        let rules = vec![
            rule(Effect::Allow, Actions::Publish, "plant/#"),
            rule(Effect::Deny, Actions::Both, "plant/secret/#"),
            rule(Effect::Allow, Actions::Subscribe, "+/temp"),
            rule(Effect::Allow, Actions::Both, "hall 2/line a"),
        ];
        let text: Vec<String> = rules.iter().map(rule_line).collect();
        assert_eq!(text[1], "deny both plant/secret/#");
        let back = parse_rule_lines(&text.join("\n")).unwrap();
        assert_eq!(
            back.iter().map(|l| l.rule.clone()).collect::<Vec<_>>(),
            rules
        );
        assert_eq!(
            back.iter().map(|l| l.line).collect::<Vec<_>>(),
            [1, 2, 3, 4]
        );
        // Blank lines, CRLF, extra spaces and capitals are fine.
        let typed = "\r\n  ALLOW   Publish   plant/#  \r\n\r\ndeny\tboth\tx\n";
        let back = parse_rule_lines(typed).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].line, 2);
        assert_eq!(
            back[0].rule,
            rule(Effect::Allow, Actions::Publish, "plant/#")
        );
        assert_eq!(back[1].line, 4);
        assert_eq!(back[1].rule, rule(Effect::Deny, Actions::Both, "x"));
        assert!(parse_rule_lines("").unwrap().is_empty());
        assert!(parse_rule_lines(" \n\n").unwrap().is_empty());
    }

    #[test]
    fn a_line_that_is_not_a_rule_is_named() {
        for (text, line, says) in [
            ("permit publish a", 1, "\"permit\" is not allow or deny"),
            (
                "allow publish a\nallow publsh b",
                2,
                "\"publsh\" is not publish",
            ),
            ("allow", 1, "incomplete"),
            ("allow publish", 1, "no topic filter"),
            ("\n\ndeny both   ", 3, "no topic filter"),
            (
                "plant/# allow publish",
                1,
                "\"plant/#\" is not allow or deny",
            ),
        ] {
            let e = parse_rule_lines(text).unwrap_err();
            assert_eq!(e.code, "invalid_rules");
            assert!(
                e.message.starts_with(&format!("line {line}: ")),
                "{text:?}: {}",
                e.message
            );
            assert!(e.message.contains(says), "{text:?}: {}", e.message);
            assert!(e.message.contains("such as allow publish plant/#"));
        }
        let long = format!("{} publish a", "x".repeat(500));
        let e = parse_rule_lines(&long).unwrap_err();
        assert!(e.message.len() < 300, "{}", e.message);
    }
}

//! Group-to-role mapping for single sign-on.
//!
//! Rules come from the configuration; each says "members of this group (at
//! this provider) get this team role" or "... are platform admins". At every
//! SSO login the outcome is computed afresh from the groups the provider
//! reports, so leaving a group takes the role away at the next login.
//!
//! Only what the rules mention is managed: a team named by some rule for
//! the provider gets the highest role any matching rule grants, or no
//! membership when none matches; teams no rule names keep whatever was set
//! by hand. Likewise the admin flag is managed only when a rule grants it.
//!
//! Groups are compared exactly. A group written as a DN (it holds `=`) is
//! compared as a DN after RFC 4514 parsing: attribute types ignore case,
//! values of the usual naming attributes (cn, ou, dc...) ignore case as the
//! directory's caseIgnoreMatch does, and nothing else is forgiven: a DN with
//! unescaped spaces at a value's ends (`cn=a, ou=b`) is not a DN and matches
//! nothing. Any other group name must be equal byte for byte.
//!
//! A rule granting `admin = true` must name its provider: a rule meant for
//! the directory must not make a user of another provider (whose users may
//! be able to name their own groups) a platform admin.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::permission::TeamRole;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingRule {
    /// The provider's name, or "*" for every provider (not for admin rules).
    #[serde(default = "any_provider")]
    pub provider: String,
    /// The group as the provider reports it: an LDAP DN (compared as a DN,
    /// see the module documentation) or a group name (compared exactly).
    pub group: String,
    /// The team (its id or exact name) and the role its members get.
    pub team: Option<String>,
    pub role: Option<TeamRole>,
    /// Members of the group are platform admins.
    #[serde(default)]
    pub admin: bool,
}

fn any_provider() -> String {
    "*".into()
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("mapping rule {0}: give either team and role, or admin = true")]
    Shape(usize),
    #[error("mapping rule {0}: the group is empty")]
    EmptyGroup(usize),
    #[error("mapping rule {0}: admin = true needs provider = \"<the provider's name>\" (a rule for every provider would let any provider's groups make platform admins)")]
    AdminForEveryProvider(usize),
}

/// Every rule that cannot be used, in order.
pub fn validate(rules: &[MappingRule]) -> Result<(), MappingError> {
    for (i, r) in rules.iter().enumerate() {
        if r.group.trim().is_empty() {
            return Err(MappingError::EmptyGroup(i));
        }
        let team_rule = r.team.is_some() && r.role.is_some();
        let partial = r.team.is_some() != r.role.is_some();
        if partial || team_rule == r.admin {
            return Err(MappingError::Shape(i));
        }
        if r.admin && (r.provider == "*" || r.provider.trim().is_empty()) {
            return Err(MappingError::AdminForEveryProvider(i));
        }
    }
    Ok(())
}

/// Rules that are valid but will not do what they seem to: a group that can
/// never match, or that matches only with exactly its odd spacing.
pub fn warnings(rules: &[MappingRule]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, r) in rules.iter().enumerate() {
        match Group::parse(&r.group) {
            Group::NotADn => out.push(format!(
                "mapping rule {i}: {:?} is not a valid DN (RFC 4514: no spaces around ',' '=' '+' or at a value's ends unless escaped), so it can never match",
                r.group
            )),
            Group::Name(n) if n.trim() != n || n.contains("  ") => out.push(format!(
                "mapping rule {i}: the group {:?} has surrounding or doubled spaces, which are compared exactly: it matches only a group reported with exactly these spaces",
                r.group
            )),
            Group::Dn(dn) if dn.has_odd_spacing() => out.push(format!(
                "mapping rule {i}: a value of the DN {:?} has escaped surrounding or doubled spaces, which are compared exactly (the directory may ignore them): it matches only a group reported with exactly these spaces",
                r.group
            )),
            _ => {}
        }
    }
    out
}

/// One attribute type and value of a DN, normalised for comparison.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Ava {
    /// Lowercased descriptor (or the usual name of a well-known OID).
    kind: String,
    /// The value, lowercased when the attribute's matching rule ignores case.
    value: String,
}

/// A DN as a list of RDNs, each a sorted set of AVAs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dn(Vec<Vec<Ava>>);

impl Dn {
    fn has_odd_spacing(&self) -> bool {
        self.0
            .iter()
            .flatten()
            .any(|a| a.value.trim() != a.value || a.value.contains("  "))
    }
}

/// A group as written in a rule or reported by a provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Group {
    Dn(Dn),
    /// Holds `=` but is not an RFC 4514 DN: matches nothing.
    NotADn,
    Name(String),
}

impl Group {
    pub fn parse(s: &str) -> Group {
        if !s.contains('=') {
            return Group::Name(s.to_string());
        }
        parse_dn(s).map_or(Group::NotADn, Group::Dn)
    }

    /// Whether a rule's group (`self`) is matched by a reported group.
    pub fn matched_by(&self, have: &Group) -> bool {
        match (self, have) {
            (Group::Dn(want), Group::Dn(have)) => want == have,
            (Group::Name(want), Group::Name(have)) => want == have,
            _ => false,
        }
    }
}

/// Well-known attribute OIDs, so `2.5.4.3=x` and `cn=x` are the same.
const OID_NAMES: [(&str, &str); 8] = [
    ("2.5.4.3", "cn"),
    ("2.5.4.6", "c"),
    ("2.5.4.7", "l"),
    ("2.5.4.8", "st"),
    ("2.5.4.10", "o"),
    ("2.5.4.11", "ou"),
    ("0.9.2342.19200300.100.1.1", "uid"),
    ("0.9.2342.19200300.100.1.25", "dc"),
];

/// Naming attributes whose equality rule ignores case (caseIgnoreMatch or
/// caseIgnoreIA5Match in the standard schemas). Values of any other type
/// are compared exactly: stricter than the directory, never looser.
const CASE_IGNORING: [&str; 12] = [
    "cn",
    "c",
    "l",
    "st",
    "o",
    "ou",
    "uid",
    "dc",
    "street",
    "sn",
    "givenname",
    "title",
];

fn attribute_type(raw: &str) -> Option<String> {
    let descr = raw.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if descr {
        return Some(raw.to_ascii_lowercase());
    }
    let oid = raw.split('.').count() >= 2
        && raw.split('.').all(|n| {
            !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && (n == "0" || !n.starts_with('0'))
        });
    if !oid {
        return None;
    }
    Some(
        OID_NAMES
            .iter()
            .find(|(o, _)| *o == raw)
            .map_or(raw, |(_, name)| name)
            .to_string(),
    )
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// Parses an RFC 4514 string DN strictly. `None` for anything else,
/// including unescaped spaces at a value's ends or around separators.
fn parse_dn(s: &str) -> Option<Dn> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut rdns = Vec::new();
    let mut rdn = Vec::new();
    loop {
        // attributeType "="
        let eq = i + b.get(i..)?.iter().position(|&c| c == b'=')?;
        let kind = attribute_type(std::str::from_utf8(b.get(i..eq)?).ok()?)?;
        i = eq + 1;
        let value = if b.get(i) == Some(&b'#') {
            // hexstring: kept as lowercase hex (the BER encoding), compared exactly.
            i += 1;
            let from = i;
            while b.get(i).is_some_and(u8::is_ascii_hexdigit) {
                i += 1;
            }
            let h = std::str::from_utf8(b.get(from..i)?).ok()?;
            if h.is_empty() || h.len() % 2 != 0 {
                return None;
            }
            format!("#{}", h.to_ascii_lowercase())
        } else {
            let mut bytes = Vec::new();
            let mut last_unescaped_space = false;
            let first = i;
            while let Some(&c) = b.get(i) {
                match c {
                    b',' | b'+' => break,
                    b'\\' => {
                        let n = *b.get(i + 1)?;
                        if b"\\\"+,;<> #=".contains(&n) {
                            bytes.push(n);
                            i += 2;
                        } else {
                            let hi = hex(n)?;
                            let lo = hex(*b.get(i + 2)?)?;
                            bytes.push(hi << 4 | lo);
                            i += 3;
                        }
                        last_unescaped_space = false;
                    }
                    b'"' | b';' | b'<' | b'>' | 0 => return None,
                    c if c.is_ascii_control() => return None,
                    b' ' if i == first => return None,
                    c => {
                        bytes.push(c);
                        last_unescaped_space = c == b' ';
                        i += 1;
                    }
                }
            }
            if last_unescaped_space {
                return None;
            }
            let v = String::from_utf8(bytes).ok()?;
            if v.chars().any(char::is_control) {
                return None;
            }
            if CASE_IGNORING.contains(&kind.as_str()) {
                v.to_lowercase()
            } else {
                v
            }
        };
        rdn.push(Ava { kind, value });
        match b.get(i) {
            None => {
                rdn.sort();
                rdns.push(std::mem::take(&mut rdn));
                break;
            }
            Some(b'+') => i += 1,
            Some(b',') => {
                rdn.sort();
                rdns.push(std::mem::take(&mut rdn));
                i += 1;
            }
            Some(_) => return None,
        }
    }
    Some(Dn(rdns))
}

/// What the rules say about one user at one provider.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MappingOutcome {
    /// Team (as the rules name it) -> the role to hold, or `None` for "not a
    /// member". Only teams some rule for this provider names are present.
    pub teams: BTreeMap<String, Option<TeamRole>>,
    /// `Some` only when a rule for this provider manages the admin flag.
    pub admin: Option<bool>,
}

fn applies(rule: &MappingRule, provider: &str) -> bool {
    if rule.admin {
        // Never "*" (refused by `validate`, and not honoured here either).
        return rule.provider == provider;
    }
    rule.provider == "*" || rule.provider == provider
}

/// For each rule, whether it applies to `provider` and one of `groups` matches it.
fn matches<'a>(
    rules: &'a [MappingRule],
    provider: &'a str,
    groups: &[String],
) -> impl Iterator<Item = (&'a MappingRule, bool, Vec<usize>)> + 'a {
    let have: Vec<Group> = groups.iter().map(|g| Group::parse(g)).collect();
    rules
        .iter()
        .filter(move |r| applies(r, provider))
        .map(move |r| {
            let want = Group::parse(&r.group);
            let hits: Vec<usize> = have
                .iter()
                .enumerate()
                .filter(|(_, h)| want.matched_by(h))
                .map(|(i, _)| i)
                .collect();
            (r, !hits.is_empty(), hits)
        })
}

pub fn evaluate(rules: &[MappingRule], provider: &str, groups: &[String]) -> MappingOutcome {
    let mut out = MappingOutcome::default();
    for (rule, matched, _) in matches(rules, provider, groups) {
        if rule.admin {
            let admin = out.admin.get_or_insert(false);
            *admin |= matched;
        }
        if let (Some(team), Some(role)) = (&rule.team, rule.role) {
            let slot = out.teams.entry(team.clone()).or_insert(None);
            if matched && slot.is_none_or(|have| role > have) {
                *slot = Some(role);
            }
        }
    }
    out
}

/// The reported groups that some rule for `provider` matches: evaluating
/// these gives the same outcome as evaluating all of them, so a login can
/// carry just these to the step that applies the mapping.
pub fn relevant_groups(rules: &[MappingRule], provider: &str, groups: &[String]) -> Vec<String> {
    let mut keep = vec![false; groups.len()];
    for (_, _, hits) in matches(rules, provider, groups) {
        for i in hits {
            if let Some(k) = keep.get_mut(i) {
                *k = true;
            }
        }
    }
    groups
        .iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(g, _)| g.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use TeamRole::*;

    fn team_rule(provider: &str, group: &str, team: &str, role: TeamRole) -> MappingRule {
        MappingRule {
            provider: provider.into(),
            group: group.into(),
            team: Some(team.into()),
            role: Some(role),
            admin: false,
        }
    }

    fn admin_rule(provider: &str, group: &str) -> MappingRule {
        MappingRule {
            provider: provider.into(),
            group: group.into(),
            team: None,
            role: None,
            admin: true,
        }
    }

    fn groups(gs: &[&str]) -> Vec<String> {
        gs.iter().map(|g| g.to_string()).collect()
    }

    fn same(a: &str, b: &str) -> bool {
        Group::parse(a).matched_by(&Group::parse(b))
    }

    #[test]
    fn the_highest_matching_role_wins_and_unmatched_teams_lose_membership() {
        let rules = vec![
            team_rule("ldap", "cn=viewers,dc=x", "ops", Viewer),
            team_rule("ldap", "cn=editors,dc=x", "ops", Member),
            team_rule("ldap", "cn=lab,dc=x", "lab", Member),
        ];
        let out = evaluate(
            &rules,
            "ldap",
            &groups(&["CN=Editors,DC=x", "cn=viewers,dc=x"]),
        );
        assert_eq!(out.teams.get("ops"), Some(&Some(Member)));
        assert_eq!(
            out.teams.get("lab"),
            Some(&None),
            "named but not matched: no membership"
        );
        assert_eq!(out.admin, None, "no rule manages the admin flag");
        let none = evaluate(&rules, "ldap", &[]);
        assert!(none.teams.values().all(Option::is_none));
    }

    #[test]
    fn rules_apply_to_their_provider_only() {
        let rules = vec![
            team_rule("corp", "g", "ops", Owner),
            team_rule("*", "all", "lab", Viewer),
            admin_rule("dir", "admins"),
        ];
        let out = evaluate(&rules, "other", &groups(&["g", "admins", "all"]));
        assert_eq!(out.teams.get("ops"), None);
        assert_eq!(out.teams.get("lab"), Some(&Some(Viewer)));
        assert_eq!(out.admin, None, "another provider's admin rule");
        let out = evaluate(&rules, "dir", &groups(&["admins"]));
        assert_eq!(out.admin, Some(true));
        let out = evaluate(&rules, "dir", &groups(&["g"]));
        assert_eq!(
            out.admin,
            Some(false),
            "the admin flag is withdrawn when the group is left"
        );
        let out = evaluate(&rules, "corp", &groups(&["g"]));
        assert_eq!(out.teams.get("ops"), Some(&Some(Owner)));
    }

    #[test]
    fn an_admin_rule_for_every_provider_is_refused_and_never_applies() {
        for provider in ["*", "", " "] {
            assert_eq!(
                validate(&[admin_rule(provider, "cn=nr-admins,dc=example,dc=org")]),
                Err(MappingError::AdminForEveryProvider(0)),
                "{provider:?}"
            );
        }
        assert!(validate(&[admin_rule("dir", "cn=a,dc=x")]).is_ok());
        // Were such a rule loaded anyway, no provider's user becomes admin by it.
        let rules = vec![admin_rule("*", "cn=nr-admins,dc=example,dc=org")];
        let out = evaluate(&rules, "corp", &groups(&["cn=nr-admins,dc=example,dc=org"]));
        assert_eq!(out.admin, None);
        // A rule without `provider` in the file is a rule for every provider.
        let parsed = toml::from_str::<MappingRule>(
            "group = \"cn=nr-admins,dc=example,dc=org\"\nadmin = true",
        );
        assert!(parsed.is_ok(), "{parsed:?}");
        if let Ok(parsed) = parsed {
            assert_eq!(parsed.provider, "*");
            assert_eq!(
                validate(&[parsed]),
                Err(MappingError::AdminForEveryProvider(0))
            );
        }
    }

    #[test]
    fn rules_must_say_one_thing() {
        assert!(validate(&[team_rule("*", "g", "t", Member), admin_rule("d", "a")]).is_ok());
        let mut bad = team_rule("*", "g", "t", Member);
        bad.role = None;
        assert_eq!(validate(&[bad]), Err(MappingError::Shape(0)));
        let mut both = team_rule("d", "g", "t", Member);
        both.admin = true;
        assert_eq!(validate(&[both]), Err(MappingError::Shape(0)));
        assert_eq!(
            validate(&[admin_rule("d", " ")]),
            Err(MappingError::EmptyGroup(0))
        );
    }

    #[test]
    fn dns_compare_types_without_case_and_naming_values_as_the_directory_does() {
        let rule = "cn=nr-admins,ou=groups,dc=example,dc=org";
        for equal in [
            "cn=nr-admins,ou=groups,dc=example,dc=org",
            "CN=NR-ADMINS,OU=Groups,DC=Example,DC=ORG",
            "2.5.4.3=nr-admins,2.5.4.11=groups,0.9.2342.19200300.100.1.25=example,dc=org",
            "cn=nr\\2dadmins,ou=groups,dc=example,dc=org",
        ] {
            assert!(same(rule, equal), "{equal}");
        }
        for different in [
            // Odd spacing is not trimmed into a match.
            "cn=nr-admins, ou=groups,dc=example,dc=org",
            " cn=nr-admins,ou=groups,dc=example,dc=org",
            "cn=nr-admins,ou=groups,dc=example,dc=org ",
            "cn= nr-admins,ou=groups,dc=example,dc=org",
            "cn =nr-admins,ou=groups,dc=example,dc=org",
            "cn=nr-admins ,ou=groups,dc=example,dc=org",
            "cn=nr-admins\\20,ou=groups,dc=example,dc=org",
            "cn=nr  admins,ou=groups,dc=example,dc=org",
            // Other names, other order, more or fewer RDNs.
            "cn=nr-admin,ou=groups,dc=example,dc=org",
            "ou=groups,cn=nr-admins,dc=example,dc=org",
            "cn=nr-admins,ou=groups,dc=example",
            "cn=nr-admins,ou=groups,dc=example,dc=org,dc=x",
            "cn=nr-admins+uid=x,ou=groups,dc=example,dc=org",
            // Old separators and quoting (RFC 1779) are not RFC 4514.
            "cn=nr-admins;ou=groups;dc=example;dc=org",
            "cn=\"nr-admins\",ou=groups,dc=example,dc=org",
            // Only specials and hex pairs may be escaped.
            "cn=nr\\-admins,ou=groups,dc=example,dc=org",
            // Not a DN at all.
            "nr-admins",
            "cn=nr-admins,ou=groups,dc=example,dc=org\n",
            "",
        ] {
            assert!(!same(rule, different), "{different:?}");
        }
    }

    #[test]
    fn multi_valued_rdns_are_sets_and_unknown_types_keep_their_case() {
        assert!(same("cn=a+uid=b,dc=x", "UID=B+CN=A,DC=X"));
        assert!(!same("cn=a+uid=b,dc=x", "cn=a,uid=b,dc=x"));
        assert!(same("employeeType=Ops,dc=x", "EMPLOYEETYPE=Ops,dc=x"));
        assert!(!same("employeeType=Ops,dc=x", "employeeType=ops,dc=x"));
        assert!(same("cn=#04024869,dc=x", "CN=#04024869,dc=x"));
        assert!(same("cn=#0402abCD,dc=x", "cn=#0402ABcd,dc=x"));
        assert!(!same("cn=#040,dc=x", "cn=#040,dc=x"), "odd hex is not a DN");
        assert!(same("cn=a\\,b,dc=x", "cn=A\\2Cb,dc=x"));
        assert!(same("cn=Émile,dc=x", "cn=émile,dc=x"));
    }

    #[test]
    fn group_names_are_compared_exactly() {
        assert!(same("nr-admins", "nr-admins"));
        for other in [
            "NR-ADMINS",
            " nr-admins",
            "nr-admins ",
            "nr-admins\t",
            "nr_admins",
        ] {
            assert!(!same("nr-admins", other), "{other:?}");
        }
        // A name never matches a DN, and the other way round.
        assert!(!same("nr-admins", "cn=nr-admins"));
        assert!(!same("cn=nr-admins", "nr-admins"));
    }

    #[test]
    fn an_oidc_group_claim_spelling_a_directory_dn_is_not_a_directory_group() {
        let rules = vec![
            admin_rule("dir", "cn=nr-admins,ou=groups,dc=example,dc=org"),
            team_rule("dir", "cn=nr-ops,ou=groups,dc=example,dc=org", "ops", Owner),
        ];
        let claimed = groups(&[
            "cn=nr-admins,ou=groups,dc=example,dc=org",
            "CN=NR-ADMINS,OU=GROUPS,DC=EXAMPLE,DC=ORG ",
            "cn=nr-ops,ou=groups,dc=example,dc=org",
        ]);
        let out = evaluate(&rules, "corp", &claimed);
        assert_eq!(out, MappingOutcome::default());
        let out = evaluate(&rules, "dir", &claimed);
        assert_eq!(out.admin, Some(true));
        assert_eq!(out.teams.get("ops"), Some(&Some(Owner)));
    }

    #[test]
    fn rules_that_can_never_match_are_warned_about() {
        let rules = vec![
            team_rule("d", "cn=ops,dc=x", "ops", Member),
            team_rule("d", "cn=ops, dc=x", "ops", Member),
            team_rule("d", " ops", "ops", Member),
            team_rule("d", "cn=ops\\20\\20x,dc=x", "ops", Member),
            team_rule("d", "ops", "ops", Member),
        ];
        let w = warnings(&rules);
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].starts_with("mapping rule 1:") && w[0].contains("never match"));
        assert!(w[1].starts_with("mapping rule 2:"));
        assert!(w[2].starts_with("mapping rule 3:"));
    }

    #[test]
    fn the_relevant_groups_give_the_same_outcome() {
        let rules = vec![
            team_rule("d", "cn=ops,dc=x", "ops", Member),
            team_rule("*", "lab", "lab", Owner),
            admin_rule("d", "cn=admins,dc=x"),
        ];
        let all = groups(&[
            "CN=OPS,dc=x",
            "noise",
            "lab",
            "cn=admins,dc=x",
            "cn=other,dc=x",
        ]);
        for provider in ["d", "e"] {
            let kept = relevant_groups(&rules, provider, &all);
            assert_eq!(
                evaluate(&rules, provider, &kept),
                evaluate(&rules, provider, &all)
            );
            assert!(!kept.contains(&"noise".to_string()));
        }
        assert_eq!(
            relevant_groups(&rules, "d", &all),
            groups(&["CN=OPS,dc=x", "lab", "cn=admins,dc=x"])
        );
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics_and_a_dn_always_matches_itself(s in "\\PC{0,40}") {
            let g = Group::parse(&s);
            if g != Group::NotADn {
                proptest::prop_assert!(g.matched_by(&Group::parse(&s)));
            }
        }
    }
}

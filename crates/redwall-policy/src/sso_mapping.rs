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

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::permission::TeamRole;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingRule {
    /// The provider's name, or "*" for every provider.
    #[serde(default = "any_provider")]
    pub provider: String,
    /// The group as the provider reports it (an LDAP DN, an OIDC group
    /// name). Compared without regard to ASCII case, as LDAP compares DNs.
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
}

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
    }
    Ok(())
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
    rule.provider == "*" || rule.provider == provider
}

pub fn evaluate(rules: &[MappingRule], provider: &str, groups: &[String]) -> MappingOutcome {
    let member_of = |g: &str| {
        groups
            .iter()
            .any(|have| have.trim().eq_ignore_ascii_case(g.trim()))
    };
    let mut out = MappingOutcome::default();
    for rule in rules.iter().filter(|r| applies(r, provider)) {
        let matched = member_of(&rule.group);
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

    fn admin_rule(group: &str) -> MappingRule {
        MappingRule {
            provider: "*".into(),
            group: group.into(),
            team: None,
            role: None,
            admin: true,
        }
    }

    fn groups(gs: &[&str]) -> Vec<String> {
        gs.iter().map(|g| g.to_string()).collect()
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
        let rules = vec![team_rule("corp", "g", "ops", Owner), admin_rule("admins")];
        let out = evaluate(&rules, "other", &groups(&["g", "admins"]));
        assert!(out.teams.is_empty());
        assert_eq!(out.admin, Some(true));
        let out = evaluate(&rules, "corp", &groups(&["g"]));
        assert_eq!(out.teams.get("ops"), Some(&Some(Owner)));
        assert_eq!(
            out.admin,
            Some(false),
            "the admin flag is withdrawn when the group is left"
        );
    }

    #[test]
    fn rules_must_say_one_thing() {
        assert!(validate(&[team_rule("*", "g", "t", Member), admin_rule("a")]).is_ok());
        let mut bad = team_rule("*", "g", "t", Member);
        bad.role = None;
        assert_eq!(validate(&[bad]), Err(MappingError::Shape(0)));
        let mut both = team_rule("*", "g", "t", Member);
        both.admin = true;
        assert_eq!(validate(&[both]), Err(MappingError::Shape(0)));
        assert_eq!(
            validate(&[admin_rule(" ")]),
            Err(MappingError::EmptyGroup(0))
        );
    }
}

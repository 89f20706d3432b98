//! Rules for pipelines: a named, ordered list of stages (say dev, test,
//! prod, each an instance) that a snapshot is promoted through one stage
//! at a time, and who may approve a promotion into a stage that asks for
//! approval.
//!
//! Approval is the four-eyes rule: a promotion into a guarded stage needs
//! a team Owner who did not start that promotion, so no one person can put
//! flows into production alone.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::{instance_rules, refused, RuleError};

/// Most stages one pipeline may have.
pub const MAX_STAGES: usize = 10;

/// One stage as a pipeline is defined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    /// Unique in its pipeline; see [`check_stages`].
    pub name: String,
    /// Whether a promotion into this stage waits for an Owner's approval.
    #[serde(default)]
    pub requires_approval: bool,
}

/// Whether a name has the shape of an instance name (see
/// [`instance_rules::instance_name`]): pipeline and stage names appear next
/// to instance names in paths and on the command line, so they follow the
/// same rule.
fn slug(name: &str) -> bool {
    instance_rules::instance_name(name).is_ok()
}

/// A pipeline name: 2 to 40 of a-z, 0-9 and '-', starting with a letter,
/// not ending with '-' (the instance name rule).
pub fn check_pipeline_name(name: &str) -> Result<(), RuleError> {
    if slug(name) {
        Ok(())
    } else {
        Err(refused(
            "invalid_pipeline_name",
            "a pipeline name is 2 to 40 characters of a-z, 0-9 and '-', starting with a letter and not ending with '-'",
        ))
    }
}

/// A pipeline's stages: 1 to [`MAX_STAGES`] (`invalid_stages`), each name
/// valid like a pipeline name (`invalid_stage_name`) and unique
/// (`invalid_stages`). Stages are checked in order; the first problem is
/// the answer.
pub fn check_stages(stages: &[StageSpec]) -> Result<(), RuleError> {
    if stages.is_empty() || stages.len() > MAX_STAGES {
        return Err(refused(
            "invalid_stages",
            format!("a pipeline has 1 to {MAX_STAGES} stages"),
        ));
    }
    let mut seen = HashSet::new();
    for stage in stages {
        if !slug(&stage.name) {
            return Err(refused(
                "invalid_stage_name",
                "a stage name is 2 to 40 characters of a-z, 0-9 and '-', starting with a letter and not ending with '-'",
            ));
        }
        if !seen.insert(stage.name.as_str()) {
            return Err(refused(
                "invalid_stages",
                format!("the stage name {} is used twice", stage.name),
            ));
        }
    }
    Ok(())
}

/// The stage a promotion from stage `from` (0-based) goes to: the next
/// one, or none from the last stage (or from a stage that does not exist).
pub fn next_stage(stage_count: usize, from: usize) -> Option<usize> {
    from.checked_add(1).filter(|next| *next < stage_count)
}

/// Why an approval was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalRefusal {
    /// Only a team Owner approves.
    #[error("only an Owner of the team may approve a promotion")]
    NotOwner,
    /// The person who started the promotion cannot approve it.
    #[error("a promotion must be approved by someone other than the person who started it")]
    OwnPromotion,
    /// The promotion is not (or no longer) waiting for an approval.
    #[error("the promotion is not waiting for an approval")]
    NotAwaitingApproval,
}

impl ApprovalRefusal {
    /// The API's error code.
    pub fn code(self) -> &'static str {
        match self {
            ApprovalRefusal::NotOwner => "approval_needs_owner",
            ApprovalRefusal::OwnPromotion => "approval_by_promoter",
            ApprovalRefusal::NotAwaitingApproval => "not_awaiting_approval",
        }
    }
}

/// Whether `approver_user_id` may approve a promotion started by
/// `promoted_by_user_id` that is `awaiting` approval (or not).
///
/// Who may approve is judged before the promotion's state: a caller who may
/// not approve learns nothing about whether anything awaits. User ids are
/// compared exactly.
pub fn may_approve(
    approver_user_id: &str,
    approver_is_owner: bool,
    promoted_by_user_id: &str,
    awaiting: bool,
) -> Result<(), ApprovalRefusal> {
    if !approver_is_owner {
        return Err(ApprovalRefusal::NotOwner);
    }
    if approver_user_id == promoted_by_user_id {
        return Err(ApprovalRefusal::OwnPromotion);
    }
    if !awaiting {
        return Err(ApprovalRefusal::NotAwaitingApproval);
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn stage(name: &str) -> StageSpec {
        StageSpec {
            name: name.into(),
            requires_approval: false,
        }
    }

    fn stages(names: &[&str]) -> Vec<StageSpec> {
        names.iter().map(|n| stage(n)).collect()
    }

    #[test]
    fn pipeline_names_follow_the_instance_name_rule() {
        let long = format!("a{}", "b".repeat(39));
        for good in ["ab", "release", "plant-1-line", long.as_str()] {
            assert!(check_pipeline_name(good).is_ok(), "{good}");
        }
        let too_long = "a".repeat(41);
        for bad in [
            "",
            "a",
            "1ab",
            "ab-",
            "-ab",
            "Ab",
            "a_b",
            "a b",
            "a.b",
            too_long.as_str(),
            "ab\u{e9}",
        ] {
            assert_eq!(
                check_pipeline_name(bad).unwrap_err().code,
                "invalid_pipeline_name",
                "{bad:?}"
            );
        }
    }

    /// Names short enough to try every string over a small alphabet agree
    /// with the instance name rule.
    #[test]
    fn every_short_name_is_judged_like_an_instance_name() {
        let alphabet = ['a', 'z', '0', '9', '-', 'A', '_', ' '];
        let mut names = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> = names
                .iter()
                .flat_map(|n| alphabet.iter().map(move |c| format!("{n}{c}")))
                .collect();
            names.extend(longer);
        }
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 1 + 8 + 64 + 512);
        for name in names {
            let expected = name.len() >= 2
                && name.starts_with(|c: char| c.is_ascii_lowercase())
                && !name.ends_with('-')
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            assert_eq!(check_pipeline_name(&name).is_ok(), expected, "{name:?}");
            assert_eq!(check_stages(&[stage(&name)]).is_ok(), expected, "{name:?}");
        }
    }

    #[test]
    fn stages_are_one_to_ten_valid_unique_names() {
        assert_eq!(check_stages(&[]).unwrap_err().code, "invalid_stages");
        let names: Vec<String> = (0..=MAX_STAGES).map(|i| format!("s{i}")).collect();
        for n in 1..=MAX_STAGES + 1 {
            let list: Vec<StageSpec> = names[..n].iter().map(|s| stage(s)).collect();
            let result = check_stages(&list);
            if n <= MAX_STAGES {
                assert!(result.is_ok(), "{n}");
            } else {
                assert_eq!(result.unwrap_err().code, "invalid_stages");
            }
        }
        assert!(check_stages(&stages(&["dev", "test", "prod"])).is_ok());
        assert_eq!(
            check_stages(&stages(&["dev", "Prod"])).unwrap_err().code,
            "invalid_stage_name"
        );
        assert_eq!(
            check_stages(&stages(&["dev", ""])).unwrap_err().code,
            "invalid_stage_name"
        );
        let dup = check_stages(&stages(&["dev", "prod", "dev"])).unwrap_err();
        assert_eq!(dup.code, "invalid_stages");
        assert_eq!(dup.message, "the stage name dev is used twice");
        // The first problem in order answers.
        assert_eq!(
            check_stages(&stages(&["dev", "dev", "X"]))
                .unwrap_err()
                .code,
            "invalid_stages"
        );
        assert_eq!(
            check_stages(&stages(&["dev", "X", "dev"]))
                .unwrap_err()
                .code,
            "invalid_stage_name"
        );
    }

    #[test]
    fn stage_specs_read_from_json() {
        let spec: StageSpec =
            serde_json::from_str(r#"{"name": "prod", "requires_approval": true}"#).unwrap();
        assert_eq!(
            spec,
            StageSpec {
                name: "prod".into(),
                requires_approval: true
            }
        );
        let spec: StageSpec = serde_json::from_str(r#"{"name": "dev"}"#).unwrap();
        assert!(!spec.requires_approval);
        assert!(serde_json::from_str::<StageSpec>(r#"{"name": "dev", "approve": true}"#).is_err());
    }

    #[test]
    fn next_stage_walks_forward_and_stops_at_the_end() {
        for count in 0..=MAX_STAGES + 2 {
            for from in 0..=MAX_STAGES + 3 {
                let expected = if from + 1 < count {
                    Some(from + 1)
                } else {
                    None
                };
                assert_eq!(next_stage(count, from), expected, "{count} {from}");
            }
        }
        assert_eq!(next_stage(usize::MAX, usize::MAX), None);
        assert_eq!(next_stage(usize::MAX, usize::MAX - 2), Some(usize::MAX - 1));
    }

    #[test]
    fn approval_needs_another_owner_and_a_waiting_promotion() {
        for owner in [false, true] {
            for same in [false, true] {
                for awaiting in [false, true] {
                    let promoter = "u1";
                    let approver = if same { "u1" } else { "u2" };
                    let expected = if !owner {
                        Err(ApprovalRefusal::NotOwner)
                    } else if same {
                        Err(ApprovalRefusal::OwnPromotion)
                    } else if !awaiting {
                        Err(ApprovalRefusal::NotAwaitingApproval)
                    } else {
                        Ok(())
                    };
                    assert_eq!(
                        may_approve(approver, owner, promoter, awaiting),
                        expected,
                        "{owner} {same} {awaiting}"
                    );
                }
            }
        }
        // Ids are compared exactly.
        assert!(may_approve("U1", true, "u1", true).is_ok());
        assert_eq!(
            may_approve("", true, "", true),
            Err(ApprovalRefusal::OwnPromotion)
        );
    }

    #[test]
    fn refusals_have_their_codes() {
        assert_eq!(ApprovalRefusal::NotOwner.code(), "approval_needs_owner");
        assert_eq!(ApprovalRefusal::OwnPromotion.code(), "approval_by_promoter");
        assert_eq!(
            ApprovalRefusal::NotAwaitingApproval.code(),
            "not_awaiting_approval"
        );
        assert_eq!(
            serde_json::to_value(ApprovalRefusal::OwnPromotion).unwrap(),
            serde_json::json!("own_promotion")
        );
        assert!(!ApprovalRefusal::NotOwner.to_string().is_empty());
    }

    proptest! {
        /// Only an Owner who is not the promoter approves, and only while
        /// the promotion waits.
        #[test]
        fn approval_is_exactly_the_four_eyes_rule(a in "[ab]{0,2}", p in "[ab]{0,2}", owner in any::<bool>(), awaiting in any::<bool>()) {
            prop_assert_eq!(may_approve(&a, owner, &p, awaiting).is_ok(), owner && a != p && awaiting);
        }
    }
}

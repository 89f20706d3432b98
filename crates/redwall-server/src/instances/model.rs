//! What the API stores about an instance, validated: its name, its options
//! and its route rules.

use crate::error::{ApiError, ApiResult};
use axum::http::StatusCode;
use redwall_policy::route_policy::{validate_rules, RouteRule};
use serde::{Deserialize, Serialize};

/// Names appear in host names (`{name}.{domain}`), so they follow DNS label
/// rules: 2 to 40 of a-z, 0-9 and '-', starting with a letter, not ending
/// with '-'.
pub fn validate_name(name: &str) -> ApiResult<()> {
    let ok = (2..=40).contains(&name.len())
        && name.as_bytes()[0].is_ascii_lowercase()
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_name",
            "an instance name is 2 to 40 characters of a-z, 0-9 and '-', starting with a letter and not ending with '-'",
        ))
    }
}

/// What an instance may install, set by team Owners.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct InstanceOptions {
    /// Install nodes from the palette manager.
    pub allow_palette_install: bool,
    /// Let function nodes load npm modules.
    pub allow_function_modules: bool,
}

impl InstanceOptions {
    pub fn from_json(s: &str) -> InstanceOptions {
        serde_json::from_str(s).unwrap_or_default()
    }

    pub fn runtime(self) -> redwall_runtime::InstanceOptions {
        redwall_runtime::InstanceOptions {
            allow_palette_install: self.allow_palette_install,
            allow_function_modules: self.allow_function_modules,
        }
    }
}

/// Rules are stored as JSON written by us; unreadable JSON (never expected)
/// means no rules, which denies every endpoint.
pub fn rules_from_json(s: &str) -> Vec<RouteRule> {
    serde_json::from_str(s).unwrap_or_default()
}

pub fn check_rules(rules: &[RouteRule]) -> ApiResult<()> {
    validate_rules(rules).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_rules",
            e.to_string(),
        )
    })
}

/// Environment variable names: what a shell and Node-RED's `${VAR}` accept,
/// and never one Redwall sets itself.
pub fn validate_env_name(name: &str) -> ApiResult<()> {
    let shaped = (1..=128).contains(&name.len())
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let reserved = name.starts_with("REDWALL_")
        || name.starts_with("NODE_")
        || name.starts_with("LD_")
        || ["PATH", "HOME", "TMPDIR", "LANG"].contains(&name);
    if !shaped {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_env_name",
            "a variable name is 1 to 128 of A-Z, a-z, 0-9 and '_', not starting with a digit",
        ));
    }
    if reserved {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reserved_env_name",
            format!("{name} is set by Redwall and cannot be overridden"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        for good in ["ab", "plant-1", "a1"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["a", "1ab", "ab-", "Ab", "a_b", "a.b", &"a".repeat(41)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_names_refuse_ours() {
        assert!(validate_env_name("DB_PASSWORD").is_ok());
        for bad in [
            "",
            "1A",
            "A-B",
            "REDWALL_X",
            "NODE_OPTIONS",
            "PATH",
            "LD_PRELOAD",
        ] {
            assert!(validate_env_name(bad).is_err(), "{bad}");
        }
    }
}

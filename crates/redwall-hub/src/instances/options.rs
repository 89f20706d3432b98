//! What the hub stores about an instance, validated: its options and its
//! route rules (names and variables: `redwall_policy::instance_rules`).

use crate::{HubError, HubResult};
use redwall_policy::route_policy::{validate_rules, RouteRule};
use serde::{Deserialize, Serialize};

/// What an instance may install, set by team Owners.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

pub fn check_rules(rules: &[RouteRule]) -> HubResult<()> {
    validate_rules(rules).map_err(|e| HubError::invalid("invalid_rules", e.to_string()))
}

//! Redwall's domain rules as plain types and pure functions.
//!
//! Nothing here does I/O or reads the clock: time comes in as a value
//! (microseconds since the Unix epoch), so every rule can be tested
//! exhaustively and the server, the CLI and (later) the remote agent share
//! one definition of who may do what.

pub mod access;
pub mod admin_rules;
pub mod agent_protocol;
pub mod audit_event;
pub mod deploy_window;
pub mod egress;
pub mod flow_diff;
pub mod instance_rules;
pub mod login_name;
pub mod mqtt_acl;
pub mod mqtt_view;
pub mod pace;
pub mod password_policy;
pub mod permission;
pub mod pipeline_rules;
pub mod redirect;
pub mod route_policy;
pub mod session_rules;
pub mod site_events;
pub mod snapshot_format;
pub mod snapshot_rules;
pub mod sso_mapping;
pub mod team_rules;
pub mod throttle;
pub mod token_rules;
pub mod username;

/// Microseconds since the Unix epoch; the one time unit of Redwall's rules and storage.
pub type Micros = i64;

pub const MICROS_PER_SECOND: Micros = 1_000_000;

/// Why an input was refused by one of these rules; `code` is the API's
/// error code (answered as 422) and `message` says what is allowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RuleError {
    pub code: &'static str,
    pub message: String,
}

pub(crate) fn refused(code: &'static str, message: impl Into<String>) -> RuleError {
    RuleError {
        code,
        message: message.into(),
    }
}

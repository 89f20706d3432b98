//! The API's answers as the console reads them. Where the API's own view
//! type can be read back, the console uses it; the instance view cannot (its
//! status is built from static strings), so it has a reader here.

pub use crate::api::audit::{AuditEntryView as AuditEntry, AuditPage};
pub use crate::api::invitations::InvitationView as Invitation;
pub use crate::api::teams::{MemberView as Member, TeamView as Team};
use serde::Deserialize;

impl Team {
    /// Whether to offer an action; the API still decides when it is used.
    pub fn can(&self, permission: &str) -> bool {
        self.my_permissions.iter().any(|p| p == permission)
    }

    pub fn role(&self) -> &str {
        self.my_role.as_deref().unwrap_or("admin access")
    }
}

impl AuditEntry {
    pub fn details_text(&self) -> String {
        match &self.details {
            serde_json::Value::Null => String::new(),
            serde_json::Value::Object(m) if m.is_empty() => String::new(),
            d => d.to_string(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct Status {
    pub state: String,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub since: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub restarts: Option<u32>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Options {
    pub allow_palette_install: bool,
    pub allow_function_modules: bool,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Instance {
    pub id: String,
    pub name: String,
    pub desired_state: String,
    pub status: Status,
    pub url: String,
    pub editor_url: String,
    pub options: Options,
    pub created_at: String,
    /// The snapshot it runs; none before its first deploy.
    #[serde(default)]
    pub running_snapshot: Option<String>,
    /// The remote agent whose Node-RED this instance is; none when this
    /// hub runs it.
    #[serde(default)]
    pub agent: Option<String>,
}

impl Instance {
    pub fn is_up(&self) -> bool {
        matches!(
            self.status.state.as_str(),
            "running" | "starting" | "installing"
        )
    }

    /// Where the console's "Open editor" goes: through the console's own
    /// handover, which gives this browser a session on the instance's own
    /// host name (a separate origin, with cookies the console never sees).
    pub fn editor_link(&self) -> String {
        if self.editor_url.starts_with("http") {
            format!(
                "/api/v1/instance-login?instance={}&next=%2Feditor%2F",
                self.name
            )
        } else {
            self.editor_url.clone()
        }
    }
}

/// An optional time, shortened; empty when absent.
pub fn opt_time(rfc3339: &Option<String>) -> String {
    rfc3339.as_deref().map(short_time).unwrap_or_default()
}

/// "2026-11-24T01:02:03.456789Z" as "2026-11-24 01:02:03 UTC".
pub fn short_time(rfc3339: &str) -> String {
    match rfc3339.split_once('T') {
        Some((date, rest)) => {
            let time: String = rest.chars().take(8).collect();
            format!("{date} {time} UTC")
        }
        None => rfc3339.to_string(),
    }
}

//! The API's answers as the console reads them: only the fields pages show.

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
pub struct Team {
    pub id: String,
    pub name: String,
    pub require_mfa: bool,
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
    pub created_at: String,
    #[serde(default)]
    pub my_role: Option<String>,
    /// What the caller may do here, from the permission table.
    #[serde(default)]
    pub my_permissions: Vec<String>,
}

impl Team {
    /// Whether to offer an action; the API still decides when it is used.
    pub fn can(&self, permission: &str) -> bool {
        self.my_permissions.iter().any(|p| p == permission)
    }

    pub fn role(&self) -> &str {
        self.my_role.as_deref().unwrap_or("admin access")
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
}

impl Instance {
    pub fn is_up(&self) -> bool {
        matches!(self.status.state.as_str(), "running" | "starting")
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct Member {
    pub user_id: String,
    pub username: String,
    pub role: String,
    pub joined_at: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Invitation {
    pub id: String,
    pub team_id: String,
    pub team_name: String,
    pub invitee: String,
    pub role: String,
    pub created_at: String,
    pub expires_at: String,
    pub expired: bool,
}

#[derive(Clone, Debug, Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: String,
    #[serde(default)]
    pub actor_name: Option<String>,
    #[serde(default)]
    pub client_ip: Option<String>,
    pub event: String,
    #[serde(default)]
    pub target: Option<String>,
    pub outcome: String,
    #[serde(default)]
    pub details: serde_json::Value,
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
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    #[serde(default)]
    pub next_cursor: Option<String>,
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

//! Writing audit entries from request context.

use crate::auth::principal::Principal;
use crate::error::{ApiError, ApiResult};
use crate::net::client::ClientInfo;
use crate::state::AppState;
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_store::NewAuditEntry;

/// Who acted, as recorded in the log.
pub struct Actor {
    pub id: Option<String>,
    pub name: Option<String>,
}

impl Actor {
    pub fn of(p: &Principal) -> Actor {
        Actor {
            id: Some(p.user_id.clone()),
            name: Some(p.username.clone()),
        }
    }

    pub fn user(id: &str, name: &str) -> Actor {
        Actor {
            id: Some(id.to_string()),
            name: Some(name.to_string()),
        }
    }

    pub fn user_id(id: &str) -> Actor {
        Actor {
            id: Some(id.to_string()),
            name: None,
        }
    }

    /// An attempted login for a name that may not exist: recorded as typed
    /// (already validated or truncated) so admins can see what was tried.
    pub fn attempted(name: &str) -> Actor {
        Actor {
            id: None,
            name: Some(printable(name)),
        }
    }
}

/// At most 64 characters, control characters shown as U+FFFD, so a hostile
/// name cannot forge log lines or break a database's text type.
fn printable(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// Appends one entry and waits until it is committed. A request whose audit
/// entry cannot be written fails: an unrecorded security action is worse
/// than a refused one.
pub async fn record(
    state: &AppState,
    actor: Option<&Actor>,
    client: &ClientInfo,
    event: AuditEvent,
    outcome: Outcome,
    target: Option<String>,
    details: serde_json::Value,
) -> ApiResult<()> {
    record_in_team(state, None, actor, client, event, outcome, target, details).await
}

/// Like [`record`], for an event that belongs to a team's log too (platform
/// admins see every team's entries in the platform log).
#[allow(clippy::too_many_arguments)]
pub async fn record_in_team(
    state: &AppState,
    team_id: Option<&str>,
    actor: Option<&Actor>,
    client: &ClientInfo,
    event: AuditEvent,
    outcome: Outcome,
    target: Option<String>,
    details: serde_json::Value,
) -> ApiResult<()> {
    let entry = NewAuditEntry {
        at: state.now(),
        actor_id: actor.and_then(|a| a.id.clone()),
        actor_name: actor.and_then(|a| a.name.as_deref().map(printable)),
        client_ip: Some(client.ip.to_string()),
        user_agent: client.user_agent.clone(),
        event: event.name().to_string(),
        target,
        outcome: outcome.name().to_string(),
        details,
        team_id: team_id.map(str::to_string),
    };
    state.metrics.audit_appended();
    state
        .audit_writer
        .append(entry)
        .await
        .map(|_| ())
        .map_err(ApiError::from)
}

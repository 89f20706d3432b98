//! Writing audit entries from request context.

use crate::error::ApiResult;
use crate::net::client::ClientInfo;
use crate::state::AppState;
use redwall_policy::audit_event::{AuditEvent, Outcome};

pub use redwall_hub::audit::{printable, Actor};

/// The signed-in caller of a request, as the hub's operations record it.
pub struct Caller {
    actor: Actor,
    origin: redwall_hub::Origin,
}

impl Caller {
    pub fn of(principal: &crate::auth::principal::Principal, client: &ClientInfo) -> Caller {
        Caller {
            actor: principal.actor(),
            origin: client.origin(),
        }
    }

    pub fn who(&self) -> redwall_hub::Who<'_> {
        redwall_hub::Who {
            actor: Some(&self.actor),
            origin: &self.origin,
        }
    }
}

/// Records one entry that goes with no change (a refusal, a denial) and
/// waits until it is committed. A request whose entry cannot be written
/// fails: an unrecorded security action is worse than a refused one.
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
    let origin = client.origin();
    let who = redwall_hub::Who {
        actor,
        origin: &origin,
    };
    let what = redwall_hub::audit::Event {
        event,
        outcome,
        team_id: team_id.map(str::to_string),
        target,
        details,
    };
    Ok(state.hub.record_event(who, what).await?)
}

/// A refused key or basic credential at the proxy, in the team's log.
pub async fn record_instance_refusal(
    state: &AppState,
    team_id: &str,
    instance_name: &str,
    client: &ClientInfo,
    event: AuditEvent,
    actor: Option<&Actor>,
    details: serde_json::Value,
) -> ApiResult<()> {
    record_in_team(
        state,
        Some(team_id),
        actor,
        client,
        event,
        Outcome::Failure,
        Some(format!("instance:{instance_name}")),
        details,
    )
    .await
}

pub use redwall_hub::refusals;
pub use redwall_hub::refusals::Refusal;
pub use redwall_hub::retention;

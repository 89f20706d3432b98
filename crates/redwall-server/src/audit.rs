//! Writing audit entries from request context.

use crate::error::ApiResult;
use crate::net::client::ClientInfo;
use crate::state::AppState;
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_store::NewAuditEntry;

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
    let entry = entry(
        state, team_id, actor, client, event, outcome, target, details,
    );
    state.hub.record(entry).await.map(|_| ())?;
    Ok(())
}

/// The entry [`record_in_team`] appends.
#[allow(clippy::too_many_arguments)]
pub(crate) fn entry(
    state: &AppState,
    team_id: Option<&str>,
    actor: Option<&Actor>,
    client: &ClientInfo,
    event: AuditEvent,
    outcome: Outcome,
    target: Option<String>,
    details: serde_json::Value,
) -> NewAuditEntry {
    NewAuditEntry {
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
    }
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

pub mod refusals;
pub use redwall_hub::retention;

/// A refused attempt (a wrong key or password, a failed sign-in callback, a
/// denied page), for [`record_refusal`].
pub struct Refusal<'a> {
    pub event: AuditEvent,
    /// Why, as a short fixed code ("invalid_key", "wrong_password",
    /// "throttled", ...). Refusals are counted per reason.
    pub reason: &'static str,
    /// The team whose log shows it too.
    pub team_id: Option<&'a str>,
    /// What was tried ("instance:plant").
    pub target: Option<String>,
    /// The name the caller claimed, if any.
    pub actor: Option<&'a Actor>,
    /// Details of this attempt. Only the first refusal of a source in a
    /// minute is written with them; the minute's entry carries the count.
    pub details: serde_json::Value,
}

/// Records a refusal without letting a flood of them flood the log.
///
/// Refusals are counted per source (client address), event, reason, team,
/// target and claimed name, per minute. The first one of a source in a
/// minute is written at once, with its details and `"count": 1`, and this
/// waits for it like [`record`]; the others of that minute are only counted
/// and written as ONE entry (`"aggregated": true`, `"count"`, the window and
/// the first and last time) once the minute is over, by the housekeeping
/// loop or at shutdown. The sum of `count` over the entries is the number of
/// refusals. The table in memory is bounded: when full, new sources are
/// kept per network and then per event only (see [`refusals`]).
///
/// Throttle before calling this: it records, it does not slow anyone down.
pub async fn record_refusal(
    state: &AppState,
    client: &ClientInfo,
    refusal: Refusal<'_>,
) -> ApiResult<()> {
    let at = state.now();
    let actor_name = refusal.actor.and_then(|a| a.name.as_deref()).map(printable);
    let noted = state.refusals.note(&refusals::Seen {
        at,
        ip: client.ip,
        event: refusal.event,
        reason: refusal.reason,
        team_id: refusal.team_id,
        target: refusal.target.as_deref(),
        actor_name: actor_name.as_deref(),
    });
    let refusals::Noted::First(key) = noted else {
        return Ok(());
    };
    let mut details = match refusal.details {
        serde_json::Value::Object(map) => map,
        serde_json::Value::Null => serde_json::Map::new(),
        other => {
            let mut map = serde_json::Map::new();
            map.insert("details".into(), other);
            map
        }
    };
    details.insert("reason".into(), refusal.reason.into());
    details.insert("count".into(), 1.into());
    let written = record_in_team(
        state,
        refusal.team_id,
        refusal.actor,
        client,
        refusal.event,
        Outcome::Failure,
        refusal.target,
        serde_json::Value::Object(details),
    )
    .await;
    if written.is_err() {
        state.refusals.count_unwritten(&key, at);
    }
    written
}

/// Writes the counted refusals of every minute that is over (all of them
/// when `all`, at shutdown). Tallies whose entries cannot be written are
/// kept to try again. Returns the entries written.
pub async fn flush_refusals(state: &AppState, all: bool) -> usize {
    let now = state.now();
    let taken = state.refusals.take((!all).then_some(now));
    if taken.is_empty() {
        return 0;
    }
    // All at once: the writer commits them in a few group transactions.
    let results = futures::future::join_all(
        taken
            .iter()
            .map(|(key, tally)| state.hub.record(aggregate_entry(key, tally))),
    )
    .await;
    let mut unwritten = Vec::new();
    let mut written = 0;
    for (result, item) in results.into_iter().zip(taken) {
        match result {
            Ok(_) => written += 1,
            Err(e) => {
                tracing::error!(error = %e, "could not write aggregated refusals; will retry");
                unwritten.push(item);
            }
        }
    }
    state.refusals.restore(unwritten);
    written
}

fn aggregate_entry(key: &refusals::Key, tally: &refusals::Tally) -> NewAuditEntry {
    use crate::clock::rfc3339;
    NewAuditEntry {
        at: tally.last_at,
        actor_id: None,
        actor_name: key.actor_name.clone(),
        client_ip: key.source.client_ip(),
        user_agent: None,
        event: key.event.name().to_string(),
        target: key.target.clone(),
        outcome: Outcome::Failure.name().to_string(),
        details: serde_json::json!({
            "aggregated": true,
            "reason": key.reason,
            "count": tally.count,
            "source": key.source.kind(),
            "window_start": rfc3339(key.window),
            "window_secs": refusals::WINDOW / redwall_policy::MICROS_PER_SECOND,
            "first_at": rfc3339(tally.first_at),
            "last_at": rfc3339(tally.last_at),
        }),
        team_id: key.team_id.clone(),
    }
}

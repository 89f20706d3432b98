//! What agents report of their sites: the figures of their MQTT
//! store-and-forward and journals (with each heartbeat), and the log lines
//! and audit events they kept while the hub was out of reach.
//!
//! A batch is checked whole by `redwall_policy::site_events`, then stored
//! in one change with the stream's new position: audit events become the
//! team's audit entries (`agent.site_event`, with the site's time in the
//! details, since the agent cannot write the chain's own time), log lines
//! the agent's newest lines. A batch resent because the hub's answer was
//! lost with the link is recognised by its numbers and not stored again;
//! numbers the site skipped (its journal was full) are recorded as lost.

use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_policy::site_events::{self, SiteBatch, SiteEvent, SiteReport, SiteStream, Stored};
use redwall_policy::MICROS_PER_SECOND;
use redwall_store::{Agent, AgentLogLine, EventStreamPosition};
use serde_json::json;

use crate::audit::{Actor, Event, Origin, Who};
use crate::{Hub, HubError, HubResult};

/// Log lines an API caller may ask for at once.
pub const MAX_LOG_LINES_PER_READ: i64 = redwall_store::MAX_AGENT_LOG_LINES;

impl Hub {
    /// Stores a batch of the agent's site events; the highest sequence
    /// number the hub now holds of that journal, for the agent to forget
    /// them. A batch that breaks the rules is refused whole.
    pub async fn agent_site_events(
        &self,
        origin: &Origin,
        agent_id: &str,
        stream: SiteStream,
        epoch: &str,
        events: &[SiteEvent],
    ) -> HubResult<u64> {
        let batch = SiteBatch {
            stream,
            epoch,
            events,
        };
        site_events::check_batch(&batch)?;
        let Some(agent) = self.store.agent_by_id(agent_id).await? else {
            return Err(HubError::NotFound);
        };
        let through = events.last().map_or(0, |e| e.seq);
        let mut change = self.begin().await?;
        let stored = change
            .agent_event_stream(&agent.id, stream.name())
            .await?
            .map(|p| Stored {
                epoch: p.epoch,
                seq: u64::try_from(p.seq).unwrap_or(0),
            });
        let admitted = site_events::admit(stored.as_ref(), &batch);
        let new = &events[admitted.first_new..];
        if new.is_empty() {
            // All of it was stored already: the answer was lost.
            return Ok(through);
        }
        let actor = Actor {
            id: Some(agent.id.clone()),
            name: Some(format!("agent:{}", agent.name)),
        };
        let who = Who::by(&actor, origin);
        if admitted.lost > 0 {
            self.note(
                &mut change,
                who,
                lost_entry(&agent, stream, epoch, admitted.lost),
            );
        }
        match stream {
            SiteStream::Audit => {
                for e in new {
                    self.note(&mut change, who, audit_entry(&agent, e));
                }
            }
            SiteStream::Log => {
                let mut lines: Vec<(i64, &str, &str)> = Vec::with_capacity(new.len() + 1);
                let lost_line;
                if admitted.lost > 0 {
                    lost_line = format!(
                        "[redwall] {} log lines were dropped at the site (its journal was full)",
                        admitted.lost
                    );
                    lines.push((site_micros(new[0].at_ms), "agent", &lost_line));
                }
                for e in new {
                    lines.push((site_micros(e.at_ms), e.source.as_str(), e.text.as_str()));
                }
                change.add_agent_logs(&agent.id, self.now(), &lines).await?;
            }
        }
        let position = EventStreamPosition {
            epoch: epoch.to_string(),
            seq: i64::try_from(through).unwrap_or(i64::MAX),
        };
        change
            .set_agent_event_stream(&agent.id, stream.name(), &position)
            .await?;
        let entries = usize::from(admitted.lost > 0)
            + if stream == SiteStream::Audit {
                new.len()
            } else {
                0
            };
        self.commit(change, entries).await?;
        Ok(through)
    }

    /// The agent's newest `lines` log lines, oldest first.
    pub async fn agent_logs(&self, agent: &Agent, lines: i64) -> HubResult<Vec<AgentLogLine>> {
        Ok(self
            .store
            .agent_logs(&agent.id, lines.clamp(1, MAX_LOG_LINES_PER_READ))
            .await?)
    }
}

/// The site figures the agent's last heartbeat gave, if any.
pub fn site_report(agent: &Agent) -> Option<SiteReport> {
    agent
        .site_report
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok())
}

fn site_micros(at_ms: i64) -> i64 {
    at_ms.saturating_mul(MICROS_PER_SECOND / 1000)
}

fn audit_entry(agent: &Agent, e: &SiteEvent) -> Event {
    let mut details = json!({
        "site_event": e.text,
        "source": e.source,
        "site_at": crate::clock::rfc3339(site_micros(e.at_ms)),
        "seq": e.seq,
    });
    if let Some(user) = &e.user {
        details["site_user"] = json!(user);
    }
    if let Some(d) = &e.details {
        details["site_details"] = d.clone();
    }
    Event::in_team(
        &agent.team_id,
        AuditEvent::AgentSiteEvent,
        format!("agent:{}", agent.name),
        details,
    )
}

fn lost_entry(agent: &Agent, stream: SiteStream, epoch: &str, lost: u64) -> Event {
    Event {
        outcome: Outcome::Failure,
        ..Event::in_team(
            &agent.team_id,
            AuditEvent::AgentSiteEventsLost,
            format!("agent:{}", agent.name),
            json!({ "stream": stream.name(), "journal": epoch, "lost": lost }),
        )
    }
}

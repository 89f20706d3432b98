//! Who did what, from where: the audit entries of the hub's operations.

use std::net::IpAddr;

use futures::Stream;
use redwall_crypto::chain::ChainKey;
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_store::{AuditFilter, AuditRecord, ChainReport, Change, NewAuditEntry, StoreError};

use crate::{Hub, HubResult};

/// Who acted, as recorded in the log.
#[derive(Clone, Debug)]
pub struct Actor {
    pub id: Option<String>,
    pub name: Option<String>,
}

impl Actor {
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

/// Where a request came from: the client address Redwall trusts (the
/// socket's, or a trusted proxy's word) and what it called itself.
#[derive(Clone, Debug)]
pub struct Origin {
    pub ip: IpAddr,
    pub user_agent: Option<String>,
}

impl Origin {
    /// A process on this host acting on its own (the CLI, the supervisor),
    /// named by its user agent.
    pub fn local(agent: &str) -> Origin {
        Origin {
            ip: IpAddr::from([127, 0, 0, 1]),
            user_agent: Some(agent.to_string()),
        }
    }
}

/// The caller of an operation, as the log records it.
#[derive(Clone, Copy, Debug)]
pub struct Who<'a> {
    pub actor: Option<&'a Actor>,
    pub origin: &'a Origin,
}

impl<'a> Who<'a> {
    /// Someone not signed in (yet), acting from `origin`.
    pub fn anonymous(origin: &'a Origin) -> Who<'a> {
        Who {
            actor: None,
            origin,
        }
    }

    /// `actor`, acting from `origin`.
    pub fn by(actor: &'a Actor, origin: &'a Origin) -> Who<'a> {
        Who {
            actor: Some(actor),
            origin,
        }
    }
}

/// At most 64 characters, control characters shown as U+FFFD, so a hostile
/// name cannot forge log lines or break a database's text type.
pub fn printable(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// What happened, for [`Hub::entry`].
pub struct Event {
    pub event: AuditEvent,
    pub outcome: Outcome,
    /// The team whose log shows it too.
    pub team_id: Option<String>,
    pub target: Option<String>,
    pub details: serde_json::Value,
}

impl Event {
    /// A successful action on the platform, in no team's log.
    pub fn on_platform(event: AuditEvent, target: String, details: serde_json::Value) -> Event {
        Event {
            event,
            outcome: Outcome::Success,
            team_id: None,
            target: Some(target),
            details,
        }
    }

    /// What happened on the platform, with its outcome and, if any, target.
    pub fn platform(
        event: AuditEvent,
        outcome: Outcome,
        target: Option<String>,
        details: serde_json::Value,
    ) -> Event {
        Event {
            event,
            outcome,
            team_id: None,
            target,
            details,
        }
    }

    /// A refused attempt, in the platform's log (it may be a probe).
    pub fn refused(event: AuditEvent, target: String, details: serde_json::Value) -> Event {
        Event {
            outcome: Outcome::Denied,
            ..Event::on_platform(event, target, details)
        }
    }

    /// A successful action in a team.
    pub fn in_team(
        team_id: &str,
        event: AuditEvent,
        target: String,
        details: serde_json::Value,
    ) -> Event {
        Event {
            event,
            outcome: Outcome::Success,
            team_id: Some(team_id.to_string()),
            target: Some(target),
            details,
        }
    }
}

impl Hub {
    /// The entry recording `what`, done by `who`, now.
    pub fn entry(&self, who: Who<'_>, what: Event) -> NewAuditEntry {
        NewAuditEntry {
            at: self.now(),
            actor_id: who.actor.and_then(|a| a.id.clone()),
            actor_name: who.actor.and_then(|a| a.name.as_deref().map(printable)),
            client_ip: Some(who.origin.ip.to_string()),
            user_agent: who.origin.user_agent.clone(),
            event: what.event.name().to_string(),
            target: what.target,
            outcome: what.outcome.name().to_string(),
            details: what.details,
            team_id: what.team_id,
        }
    }

    /// Records `what` with `change`: stored only if the change is.
    pub fn note(&self, change: &mut Change, who: Who<'_>, what: Event) {
        change.record(self.entry(who, what));
    }

    /// Records `what`, which changed nothing (a refusal, a sign-in), and
    /// waits until it is committed.
    pub async fn record_event(&self, who: Who<'_>, what: Event) -> HubResult<()> {
        self.record(self.entry(who, what)).await.map(|_| ())
    }

    /// Appends one entry that goes with no change of data (a refusal, a
    /// sign-in) and waits until it is committed. An action whose entry
    /// cannot be written fails: an unrecorded security action is worse than
    /// a refused one.
    pub async fn record(&self, entry: NewAuditEntry) -> HubResult<i64> {
        self.count_recorded(1);
        Ok(self.audit.append(entry).await?)
    }

    /// The key the audit chain's hashes are made with.
    pub fn chain_key(&self) -> ChainKey {
        ChainKey::from_keyring(&self.keyring)
    }

    /// Recomputes the whole hash chain, recording nothing (the operator's
    /// offline `redwall audit verify`).
    pub async fn check_audit_chain(&self) -> HubResult<ChainReport> {
        let key = ChainKey::from_keyring(&self.keyring);
        Ok(self.store.verify_audit_chain(&key).await?)
    }

    /// Entries committed with their changes and not chained yet.
    pub async fn pending_audit_entries(&self) -> HubResult<i64> {
        Ok(self.store.pending_audit_entries().await?)
    }

    /// One page of the log, as `f` selects.
    pub async fn audit_page(&self, f: &AuditFilter) -> HubResult<Vec<AuditRecord>> {
        Ok(self.store.list_audit(f).await?)
    }

    /// Recomputes the whole hash chain now (as `redwall audit verify`
    /// does) and records that it was checked, with the result.
    pub async fn verify_audit_log(&self, who: Who<'_>) -> HubResult<ChainReport> {
        let report = self.check_audit_chain().await?;
        let first_problem = report.problem.as_ref().map(|p| p.seq);
        self.record_event(
            who,
            Event {
                event: AuditEvent::AuditVerified,
                outcome: if first_problem.is_none() {
                    Outcome::Success
                } else {
                    Outcome::Failure
                },
                team_id: None,
                target: None,
                details: serde_json::json!({
                    "entries_checked": report.checked,
                    "first_problem": first_problem,
                }),
            },
        )
        .await?;
        Ok(report)
    }

    /// Records an export of the entries `f` selects (`event`: the
    /// platform's or a team's export), then streams them oldest first, so
    /// memory stays flat however long the log.
    pub async fn export_audit(
        &self,
        who: Who<'_>,
        f: AuditFilter,
        event: AuditEvent,
    ) -> HubResult<impl Stream<Item = Result<AuditRecord, StoreError>> + Send + 'static> {
        let details = serde_json::json!({
            "actor": f.actor,
            "event": f.event,
            "since": f.since.map(crate::clock::rfc3339),
            "until": f.until.map(crate::clock::rfc3339),
        });
        self.record_event(
            who,
            Event {
                event,
                outcome: Outcome::Success,
                team_id: f.team_id.clone(),
                target: None,
                details,
            },
        )
        .await?;
        Ok(self.store.stream_audit(f))
    }
}

//! What the supervisor reports, carried into the team audit log.
//!
//! The supervisor calls the reporter from its own threads and must never
//! block, so reports go through an unbounded channel to one task that
//! resolves the instance's team and appends the audit entries.

use crate::audit::{Actor, Event, Origin, Who};
use crate::Hub;
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_runtime::{InstanceStatus, NodeRedAuditEvent, Reporter};
use serde_json::json;
use tokio::sync::mpsc;

pub enum Report {
    Status(String, InstanceStatus),
    NodeRed(String, NodeRedAuditEvent),
}

pub struct ChannelReporter(pub mpsc::UnboundedSender<Report>);

impl Reporter for ChannelReporter {
    fn status_changed(&self, instance_id: &str, status: &InstanceStatus) {
        let _ = self
            .0
            .send(Report::Status(instance_id.to_string(), status.clone()));
    }

    fn audit(&self, instance_id: &str, event: NodeRedAuditEvent) {
        let _ = self.0.send(Report::NodeRed(instance_id.to_string(), event));
    }
}

/// Reads are frequent and say nothing about who changed what; the editor's
/// own connection events are the proxy's business.
fn worth_recording(event: &str) -> bool {
    !(event.ends_with(".get") || event.ends_with(".list") || event.starts_with("comms."))
}

/// Redwall's settings.js reports a deploy (from the editor or the admin
/// API) once Node-RED answered it: the flows and credentials are saved, so
/// a snapshot can be taken of them. (Node-RED's own `flows.set` comes
/// before it saves anything.)
const FLOWS_SAVED: &str = "redwall.flows_saved";

pub async fn forward_reports(hub: Hub, mut rx: mpsc::UnboundedReceiver<Report>) {
    let origin = Origin::local("redwall-supervisor");
    while let Some(report) = rx.recv().await {
        let instance_id = match &report {
            Report::Status(id, _) | Report::NodeRed(id, _) => id.clone(),
        };
        let Ok(Some(instance)) = hub.store.get_instance_by_id(&instance_id).await else {
            continue;
        };
        let target = format!("instance:{}", instance.name);
        let result = match report {
            Report::Status(
                _,
                status @ (InstanceStatus::Crashed { .. } | InstanceStatus::CrashLoop { .. }),
            ) => {
                let details = match status {
                    InstanceStatus::Crashed {
                        reason, restarts, ..
                    } => {
                        json!({ "reason": reason, "restarts": restarts, "gave_up": false })
                    }
                    InstanceStatus::CrashLoop { reason } => {
                        json!({ "reason": reason, "gave_up": true })
                    }
                    _ => json!({}),
                };
                let who = Who::anonymous(&origin);
                let event = Event {
                    outcome: Outcome::Failure,
                    ..Event::in_team(
                        &instance.team_id,
                        AuditEvent::InstanceCrashed,
                        target,
                        details,
                    )
                };
                hub.record_event(who, event).await
            }
            Report::Status(..) => Ok(()),
            Report::NodeRed(_, e) if e.event == FLOWS_SAVED => {
                let by = match &e.user {
                    Some(name) => hub.store.find_user_by_username(name).await.ok().flatten(),
                    None => None,
                };
                let actor = by.as_ref().map(|u| Actor::user(&u.id, &u.username));
                let who = Who {
                    actor: actor.as_ref(),
                    origin: &origin,
                };
                let by = by.as_ref().map(|u| u.id.as_str());
                match hub.snapshot_after_deploy(who, &instance, by).await {
                    Ok(_) => Ok(()),
                    Err(e) => {
                        tracing::warn!(instance = %instance.name, error = %e, "no snapshot after a deploy");
                        Ok(())
                    }
                }
            }
            Report::NodeRed(_, e) if worth_recording(&e.event) => {
                let actor = match &e.user {
                    Some(name) => match hub.store.find_user_by_username(name).await {
                        Ok(Some(u)) => Some(Actor::user(&u.id, &u.username)),
                        _ => Some(Actor::attempted(name)),
                    },
                    None => None,
                };
                let who = Who {
                    actor: actor.as_ref(),
                    origin: &origin,
                };
                // Reported by the instance itself: as trustworthy as the
                // instance, and recorded as such.
                let details =
                    json!({ "node_red_event": e.event, "reported_by": "instance", "event": e.raw });
                let recorded = hub
                    .record_event(
                        who,
                        Event::in_team(
                            &instance.team_id,
                            AuditEvent::InstanceNodeRedEvent,
                            target,
                            details,
                        ),
                    )
                    .await;
                recorded
            }
            Report::NodeRed(..) => Ok(()),
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not record an instance event");
        }
    }
}

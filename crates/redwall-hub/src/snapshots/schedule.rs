//! Deploying a snapshot to a target (one instance, a named group of
//! instances, or a subset of either), now or held for a deploy window.
//!
//! Every deployment is a row first. One that may start now is carried out
//! at once; one held by its window waits as `waiting` until the scheduler
//! (`Hub::run_due_deployments`, every second on each hub that runs
//! instances) claims it with a conditional update, so two replicas never
//! carry out the same one.

use std::collections::BTreeSet;

use redwall_policy::audit_event::AuditEvent;
use redwall_policy::deploy_window::{earliest_start, DeployWindow};
use redwall_policy::instance_rules::instance_name;
use redwall_store::{Deployment, Instance, InstanceGroup, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::deploy::{Reason, STATUS_DEPLOYING, STATUS_WAITING};
use crate::audit::{Actor, Event, Origin, Who};
use crate::{Hub, HubError, HubResult};

/// The most instances a group may hold.
pub const MAX_GROUP_INSTANCES: usize = 200;

/// Where a snapshot goes: instances (one or a named group) run on this
/// hub; remote agents (one, or every agent of an agent group) get it over
/// their connection (`to_agents`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Target {
    Instance(String),
    Group(String),
    Agent(String),
    AgentGroup(String),
}

/// Instances a rollout deploys to at once.
const ROLLOUT_AT_ONCE: usize = 8;

/// A deploy as asked for.
pub struct DeployRequest<'a> {
    pub team_id: &'a str,
    pub snapshot_id: &'a str,
    pub target: &'a Target,
    /// Only these instances of the target (names); all when empty.
    pub only: &'a [String],
    pub window: DeployWindow,
    pub reason: Reason,
    pub promotion_id: Option<&'a str>,
}

/// The audit entry of a deploy as scheduled: the snapshot, the target and
/// what it names (`kind`: "instances" or "agents"), when it may start.
pub(crate) fn scheduled_event(
    request: &DeployRequest<'_>,
    kind: &str,
    names: Vec<&str>,
    starts_at: redwall_policy::Micros,
) -> Event {
    let mut details = json!({
        "snapshot": request.snapshot_id,
        "target": request.target,
        "window": request.window,
        "starts_at": starts_at,
        "reason": request.reason.as_str(),
        "promotion": request.promotion_id,
    });
    details[kind] = json!(names);
    Event::in_team(
        request.team_id,
        AuditEvent::DeploymentScheduled,
        format!("snapshot:{}", request.snapshot_id),
        details,
    )
}

/// When a deploy in `window` may start, seen at `now`; refused when the
/// window never opens.
pub(crate) fn window_start(
    window: &DeployWindow,
    now: redwall_policy::Micros,
) -> HubResult<redwall_policy::Micros> {
    let starts_at = earliest_start(window, now);
    if starts_at == redwall_policy::Micros::MAX {
        return Err(HubError::invalid(
            "invalid_deploy_window",
            "the deploy window never opens",
        ));
    }
    Ok(starts_at)
}

fn bad_target(message: impl Into<String>) -> HubError {
    HubError::invalid("invalid_target", message)
}

impl Hub {
    /// The team's instances a target names (a subset when `only` is given).
    pub async fn target_instances(
        &self,
        team_id: &str,
        target: &Target,
        only: &[String],
    ) -> HubResult<Vec<Instance>> {
        let mut instances = match target {
            Target::Instance(name) => vec![self.team_instance(team_id, name).await?],
            Target::Agent(_) | Target::AgentGroup(_) => {
                return Err(bad_target("the target names agents, not instances"))
            }
            Target::Group(name) => {
                let group = self
                    .store
                    .get_instance_group(team_id, name)
                    .await?
                    .ok_or(HubError::NotFound)?;
                let mut found = Vec::new();
                for id in &group.instance_ids {
                    if let Some(i) = self.store.get_team_instance(team_id, id).await? {
                        found.push(i);
                    }
                }
                found
            }
        };
        if !only.is_empty() {
            let wanted: BTreeSet<&str> = only.iter().map(String::as_str).collect();
            for name in &wanted {
                if !instances.iter().any(|i| i.name == *name || i.id == *name) {
                    return Err(bad_target(format!(
                        "{name} is not an instance of the target"
                    )));
                }
            }
            instances
                .retain(|i| wanted.contains(i.name.as_str()) || wanted.contains(i.id.as_str()));
        }
        if instances.is_empty() {
            return Err(bad_target("the target holds no instance"));
        }
        if let Some(i) = instances.iter().find(|i| i.agent_id.is_some()) {
            return Err(bad_target(format!(
                "{} runs on a remote agent: deploy to that agent (agent:NAME)",
                i.name
            )));
        }
        Ok(instances)
    }

    /// Schedules the snapshot onto the target's instances, with one audit
    /// entry, then carries out at once those whose window is open.
    pub async fn deploy_to_target(
        &self,
        who: Who<'_>,
        request: DeployRequest<'_>,
        requested_by: &str,
        as_user: &str,
    ) -> HubResult<Vec<Deployment>> {
        if request.target.is_agents() {
            return self.deploy_to_agents(who, request, requested_by).await;
        }
        // Checked whole before anything is scheduled.
        self.load_snapshot(who, request.team_id, request.snapshot_id)
            .await?;
        let instances = self
            .target_instances(request.team_id, request.target, request.only)
            .await?;
        let now = self.now();
        let starts_at = window_start(&request.window, now)?;
        let waits = starts_at > now;
        let schedule = serde_json::to_string(&request.window).map_err(HubError::internal)?;
        let rows: Vec<Deployment> = instances
            .iter()
            .map(|i| Deployment {
                id: crate::ids::new_id(),
                team_id: request.team_id.to_string(),
                instance_id: Some(i.id.clone()),
                agent_id: None,
                command_id: None,
                snapshot_id: request.snapshot_id.to_string(),
                previous_snapshot_id: None,
                reason: request.reason.as_str().to_string(),
                // Rows to run now are taken by this process at once.
                status: if waits {
                    STATUS_WAITING
                } else {
                    STATUS_DEPLOYING
                }
                .to_string(),
                step: if waits {
                    "waiting for its deploy window".to_string()
                } else {
                    "starting".to_string()
                },
                error: None,
                requested_by: Some(requested_by.to_string()),
                created_at: now,
                updated_at: now,
                schedule: schedule.clone(),
                promotion_id: request.promotion_id.map(str::to_string),
            })
            .collect();
        let mut tx = self.begin().await?;
        for row in &rows {
            tx.create_deployment(row).await?;
        }
        self.note(
            &mut tx,
            who,
            scheduled_event(
                &request,
                "instances",
                instances.iter().map(|i| i.name.as_str()).collect(),
                starts_at,
            ),
        );
        self.commit(tx, 1).await?;
        if waits {
            return Ok(rows);
        }
        // Several instances at once: each deploy mostly waits on its own
        // Node-RED, and each instance has its own control lock.
        // Every one runs to its end (none is dropped half done) before an
        // error is answered.
        use futures::stream::{self, StreamExt as _};
        let done: Vec<HubResult<Deployment>> = stream::iter(rows)
            .map(|row| self.carry_out(who, row, as_user))
            .buffered(ROLLOUT_AT_ONCE)
            .collect()
            .await;
        done.into_iter().collect()
    }

    /// Carries out every waiting deployment whose window is open and whose
    /// instance this process runs. Returns how many it carried out.
    pub async fn run_due_deployments(&self) -> HubResult<usize> {
        // Only a process that runs instances can load flows into them.
        if self.instance_manager().is_none() {
            return Ok(0);
        }
        let now = self.now();
        let origin = Origin::local("redwall-scheduler");
        let mut done = 0;
        for d in self.store.waiting_deployments().await? {
            if d.instance_id.is_none() {
                // An agent's: `run_due_agent_deployments`.
                continue;
            }
            if !self.claim_if_due(&d, now).await? {
                continue;
            }
            let user = match &d.requested_by {
                Some(id) => self.store.get_user(id).await?,
                None => None,
            };
            let actor = user.as_ref().map(|u| Actor::user(&u.id, &u.username));
            let who = Who {
                actor: actor.as_ref(),
                origin: &origin,
            };
            let as_user = user
                .as_ref()
                .map(|u| u.username.clone())
                .unwrap_or_else(|| "redwall".to_string());
            let d = Deployment {
                status: STATUS_DEPLOYING.to_string(),
                ..d
            };
            if let Err(e) = self.carry_out(who, d, &as_user).await {
                tracing::warn!(error = %e, "a scheduled deployment could not be carried out");
            }
            done += 1;
        }
        Ok(done)
    }

    /// Takes a waiting deployment whose window is open for this process:
    /// false when it is not due, or another replica took it first. An
    /// unreadable schedule (never written so) is never due.
    pub(crate) async fn claim_if_due(
        &self,
        d: &Deployment,
        now: redwall_policy::Micros,
    ) -> HubResult<bool> {
        let Ok(window) = serde_json::from_str::<DeployWindow>(&d.schedule) else {
            tracing::error!(deployment = %d.id, "a deployment's schedule is unreadable");
            return Ok(false);
        };
        if earliest_start(&window, now) > now {
            return Ok(false);
        }
        Ok(self.store.claim_deployment(&d.id, now).await?)
    }

    /// Checks that a target names something of the team (a pipeline's
    /// stage, before it is stored).
    pub async fn check_target(&self, team_id: &str, target: &Target) -> HubResult<()> {
        if target.is_agents() {
            self.target_agents(team_id, target, &[]).await.map(|_| ())
        } else {
            self.target_instances(team_id, target, &[])
                .await
                .map(|_| ())
        }
    }

    /// Creates or replaces the team's group `name` with these instances.
    pub async fn put_instance_group(
        &self,
        who: Who<'_>,
        team_id: &str,
        name: &str,
        instances: &[String],
    ) -> HubResult<InstanceGroup> {
        instance_name(name).map_err(|e| HubError::invalid("invalid_group_name", e.message))?;
        let name = name.to_string();
        if instances.len() > MAX_GROUP_INSTANCES {
            return Err(bad_target(format!(
                "a group holds at most {MAX_GROUP_INSTANCES} instances"
            )));
        }
        let mut ids = BTreeSet::new();
        for wanted in instances {
            let i = self
                .store
                .get_team_instance(team_id, wanted)
                .await?
                .ok_or_else(|| bad_target(format!("the team has no instance {wanted}")))?;
            ids.insert(i.id);
        }
        let existing = self.store.get_instance_group(team_id, &name).await?;
        let group = InstanceGroup {
            id: existing
                .as_ref()
                .map(|g| g.id.clone())
                .unwrap_or_else(crate::ids::new_id),
            team_id: team_id.to_string(),
            name: name.clone(),
            created_at: existing.as_ref().map_or(self.now(), |g| g.created_at),
            instance_ids: ids.into_iter().collect(),
        };
        let mut tx = self.begin().await?;
        match tx.put_instance_group(&group).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                return Err(HubError::conflict("name_taken", "a group has this name"))
            }
            Err(e) => return Err(e.into()),
        }
        self.note(
            &mut tx,
            who,
            Event::in_team(
                team_id,
                AuditEvent::InstanceGroupChanged,
                format!("group:{name}"),
                json!({ "group": group.id, "instances": group.instance_ids }),
            ),
        );
        self.commit(tx, 1).await?;
        Ok(group)
    }

    pub async fn instance_groups(&self, team_id: &str) -> HubResult<Vec<InstanceGroup>> {
        Ok(self.store.list_instance_groups(team_id).await?)
    }

    pub async fn delete_instance_group(
        &self,
        who: Who<'_>,
        team_id: &str,
        name: &str,
    ) -> HubResult<()> {
        let group = self
            .store
            .get_instance_group(team_id, name)
            .await?
            .ok_or(HubError::NotFound)?;
        let mut tx = self.begin().await?;
        tx.delete_instance_group(team_id, &group.id).await?;
        self.note(
            &mut tx,
            who,
            Event::in_team(
                team_id,
                AuditEvent::InstanceGroupChanged,
                format!("group:{}", group.name),
                json!({ "group": group.id, "deleted": true }),
            ),
        );
        self.commit(tx, 1).await
    }
}

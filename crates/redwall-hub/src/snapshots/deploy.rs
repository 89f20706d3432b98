//! Deploying a snapshot to an instance: a rollback, and its undoing.
//!
//! The running instance keeps serving while Node-RED loads the new flows
//! through its own deploy API (no restart). Before anything changes, what
//! the instance runs is kept as a snapshot (unless it already is one), so
//! every rollback can be rolled back. Each deployment is a row whose status
//! and step the console and CLI follow; its audit entry is written in the
//! transaction that ends it.

use std::time::Duration;

use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_policy::snapshot_rules::SnapshotKind;
use redwall_store::{Deployment, Instance};
use serde_json::json;

use super::capture::CurrentState;
use super::{Loaded, NewSnapshot};
use crate::audit::{Event, Who};
use crate::instances::keys::open_keys;
use crate::{Hub, HubError, HubResult};

/// How long Node-RED may take to load the flows.
const DEPLOY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one module's install (npm, inside the sandbox) may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);

/// The snapshot's modules the instance lacks at that exact version. A
/// module that was not installed when the snapshot was taken ("unresolved:")
/// was not loaded then either, so it is not asked for now.
fn missing_modules(current: &CurrentState, target: &Loaded) -> Vec<(String, String)> {
    target
        .content
        .modules
        .iter()
        .filter(|(_, version)| !version.starts_with("unresolved:"))
        .filter(|(name, version)| current.content.modules.get(*name) != Some(version))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

/// Held until its window opens.
pub const STATUS_WAITING: &str = "waiting";
pub const STATUS_DEPLOYING: &str = "deploying";
pub const STATUS_DONE: &str = "done";
pub const STATUS_FAILED: &str = "failed";

/// Why a deployment is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Rollback,
    /// A deploy to a target (an instance, a group, a subset), maybe held
    /// for a window.
    Deploy,
    /// A pipeline's promotion into a stage.
    Promotion,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rollback => "rollback",
            Reason::Deploy => "deploy",
            Reason::Promotion => "promotion",
        }
    }
}

fn not_running() -> HubError {
    HubError::conflict(
        "instance_not_running",
        "the instance must be running to load a snapshot; start it first",
    )
}

impl Hub {
    /// Deploys the team's snapshot `snapshot_id` to the instance now and
    /// waits until Node-RED has loaded it (or refused). `as_user` is the
    /// name Node-RED records for the deploy.
    pub async fn deploy_snapshot(
        &self,
        who: Who<'_>,
        instance: &Instance,
        snapshot_id: &str,
        requested_by: Option<&str>,
        as_user: &str,
        reason: Reason,
    ) -> HubResult<Deployment> {
        crate::instances::on_agents::run_here(instance)?;
        let manager = self.manager()?.clone();
        let target = self
            .load_snapshot(who, &instance.team_id, snapshot_id)
            .await?;
        let _held = manager.control(&instance.id).await;
        let current = self.ready_for(instance, &target).await?;
        let previous = self
            .keep_what_runs(who, instance, current, requested_by)
            .await?;
        let deployment = self
            .start_deployment(instance, &target, previous.as_deref(), requested_by, reason)
            .await?;
        self.load_into_node_red(who, instance, &target, deployment, previous, as_user)
            .await
    }

    /// Carries out a deployment that was scheduled (its row exists, claimed
    /// by this process): a refusal ends it as failed, with its reason.
    pub(crate) async fn carry_out(
        &self,
        who: Who<'_>,
        deployment: Deployment,
        as_user: &str,
    ) -> HubResult<Deployment> {
        let manager = self.manager()?.clone();
        let instance = self
            .store
            .get_instance_by_id(deployment.instance_id.as_deref().unwrap_or_default())
            .await?
            .ok_or(HubError::NotFound)?;
        let target = match self
            .load_snapshot(who, &deployment.team_id, &deployment.snapshot_id)
            .await
        {
            Ok(t) => t,
            Err(e) => return self.fail_unstarted(who, &instance, deployment, e).await,
        };
        let _held = manager.control(&instance.id).await;
        let current = match self.ready_for(&instance, &target).await {
            Ok(c) => c,
            Err(e) => return self.fail_unstarted(who, &instance, deployment, e).await,
        };
        let previous = self
            .keep_what_runs(who, &instance, current, deployment.requested_by.as_deref())
            .await?;
        let mut tx = self.begin().await?;
        tx.set_deployment_previous(&deployment.id, previous.as_deref())
            .await?;
        tx.set_running_snapshot(&instance.team_id, &instance.id, Some(&target.row.id))
            .await?;
        tx.commit().await?;
        let deployment = Deployment {
            previous_snapshot_id: previous.clone(),
            ..deployment
        };
        self.load_into_node_red(who, &instance, &target, deployment, previous, as_user)
            .await
    }

    /// The instance can take the snapshot now: it runs, and it has the
    /// snapshot's modules or may install them (Node-RED's palette, which an
    /// Owner allows per instance). Returns what it holds now.
    async fn ready_for(&self, instance: &Instance, target: &Loaded) -> HubResult<CurrentState> {
        let manager = self.manager()?;
        if !manager.status(&instance.id).is_running() {
            return Err(not_running());
        }
        let current = self.current_state(instance).await?;
        let missing = missing_modules(&current, target);
        if !missing.is_empty()
            && !crate::instances::options::InstanceOptions::from_json(&instance.options)
                .allow_palette_install
        {
            return Err(HubError::conflict(
                "modules_differ",
                format!(
                    "the snapshot needs {} which the instance does not have; an Owner can allow palette installs for the instance (Redwall then installs them before loading the flows), or install them first",
                    missing
                        .iter()
                        .map(|(m, v)| format!("{m}@{v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(current)
    }

    /// Installs what the snapshot needs and the instance lacks, through
    /// Node-RED's palette (no restart), saying so in the deployment's step.
    async fn install_missing(
        &self,
        instance: &Instance,
        target: &Loaded,
        deployment: &Deployment,
        as_user: &str,
    ) -> Result<(), String> {
        let current = self
            .current_state(instance)
            .await
            .map_err(|e| e.to_string())?;
        let missing = missing_modules(&current, target);
        if missing.is_empty() {
            return Ok(());
        }
        let manager = self.manager().map_err(|e| e.to_string())?;
        let keys = open_keys(&self.keyring, instance).map_err(|e| e.to_string())?;
        for (module, version) in &missing {
            self.set_step(deployment, &format!("installing {module}@{version}"))
                .await
                .map_err(|e| e.to_string())?;
            redwall_runtime::install_module(
                manager.address(instance),
                &keys.editor,
                &instance.id,
                as_user,
                module,
                version,
                INSTALL_TIMEOUT,
            )
            .await
            .map_err(|e| format!("installing {module}@{version}: {e}"))?;
        }
        let after = self
            .current_state(instance)
            .await
            .map_err(|e| e.to_string())?;
        match missing_modules(&after, target).first() {
            None => Ok(()),
            Some((m, v)) => Err(format!("{m}@{v} is still not installed")),
        }
    }

    async fn set_step(&self, deployment: &Deployment, step: &str) -> HubResult<()> {
        let mut tx = self.begin().await?;
        tx.update_deployment(&deployment.id, STATUS_DEPLOYING, step, None, self.now())
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Node-RED's deploy API, then a read-back of the saved flows.
    async fn load_into_node_red(
        &self,
        who: Who<'_>,
        instance: &Instance,
        target: &Loaded,
        deployment: Deployment,
        previous: Option<String>,
        as_user: &str,
    ) -> HubResult<Deployment> {
        let manager = self.manager()?;
        let keys = open_keys(&self.keyring, instance)?;
        if let Err(cause) = self
            .install_missing(instance, target, &deployment, as_user)
            .await
        {
            return self
                .end_deployment(
                    who,
                    instance,
                    &target.row.id,
                    &target.row.flows_sha256,
                    deployment,
                    previous,
                    Err(cause),
                )
                .await;
        }
        self.set_step(&deployment, "loading the flows into Node-RED")
            .await?;
        let flows = redwall_runtime::with_credentials(&target.content.flows, &target.credentials);
        let outcome = redwall_runtime::deploy_flows(
            manager.address(instance),
            &keys.editor,
            &instance.id,
            as_user,
            &flows,
            DEPLOY_TIMEOUT,
        )
        .await
        .map_err(|e| e.to_string());
        let outcome = match outcome {
            Ok(_) => self.check_loaded(instance, target).await,
            Err(e) => Err(e),
        };
        self.end_deployment(
            who,
            instance,
            &target.row.id,
            &target.row.flows_sha256,
            deployment,
            previous,
            outcome,
        )
        .await
    }

    /// A scheduled deployment that could not start: failed, nothing changed.
    async fn fail_unstarted(
        &self,
        who: Who<'_>,
        instance: &Instance,
        deployment: Deployment,
        cause: HubError,
    ) -> HubResult<Deployment> {
        // Nothing was changed: what it runs stays recorded as it is.
        let previous = self.store.running_snapshot(&instance.id).await?;
        let snapshot = deployment.snapshot_id.clone();
        self.end_deployment(
            who,
            instance,
            &snapshot,
            "",
            deployment,
            previous,
            Err(cause.to_string()),
        )
        .await
    }

    /// The id of the snapshot the instance runs now, taking one first if
    /// what it runs is not a snapshot yet (so the rollback can be undone).
    async fn keep_what_runs(
        &self,
        who: Who<'_>,
        instance: &Instance,
        current: CurrentState,
        requested_by: Option<&str>,
    ) -> HubResult<Option<String>> {
        if self.runs_recorded_snapshot(who, instance, &current).await? {
            return Ok(self.store.running_snapshot(&instance.id).await?);
        }
        let kept = self
            .store_snapshot(
                who,
                NewSnapshot {
                    team_id: &instance.team_id,
                    instance_id: Some(&instance.id),
                    kind: SnapshotKind::BeforeRollback,
                    note: "",
                    created_by: requested_by,
                    content: current.content,
                    credentials: current.credentials,
                    running: true,
                    audit_details: json!({ "before": "rollback" }),
                    event: AuditEvent::SnapshotCreated,
                },
            )
            .await?;
        Ok(Some(kept.id))
    }

    /// Records the deployment as under way and the snapshot as what the
    /// instance runs, so the deploy's own `flows.set` report takes no
    /// snapshot of it again.
    async fn start_deployment(
        &self,
        instance: &Instance,
        target: &Loaded,
        previous: Option<&str>,
        requested_by: Option<&str>,
        reason: Reason,
    ) -> HubResult<Deployment> {
        let now = self.now();
        let deployment = Deployment {
            id: crate::ids::new_id(),
            team_id: instance.team_id.clone(),
            instance_id: Some(instance.id.clone()),
            agent_id: None,
            command_id: None,
            snapshot_id: target.row.id.clone(),
            previous_snapshot_id: previous.map(str::to_string),
            reason: reason.as_str().to_string(),
            status: STATUS_DEPLOYING.to_string(),
            step: "loading the flows into Node-RED".to_string(),
            error: None,
            requested_by: requested_by.map(str::to_string),
            created_at: now,
            updated_at: now,
            schedule: "{}".to_string(),
            promotion_id: None,
        };
        let mut tx = self.begin().await?;
        tx.create_deployment(&deployment).await?;
        tx.set_running_snapshot(&instance.team_id, &instance.id, Some(&target.row.id))
            .await?;
        tx.commit().await?;
        Ok(deployment)
    }

    /// Reads the flows back: the deploy counts only if Node-RED now holds
    /// exactly the snapshot's flows.
    async fn check_loaded(&self, instance: &Instance, target: &Loaded) -> Result<(), String> {
        let now = self
            .current_state(instance)
            .await
            .map_err(|e| e.to_string())?;
        if super::content::flows_sha256(&now.content.flows) != target.row.flows_sha256 {
            return Err("Node-RED accepted the deploy but holds other flows".to_string());
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn end_deployment(
        &self,
        who: Who<'_>,
        instance: &Instance,
        snapshot_id: &str,
        flows_sha256: &str,
        mut deployment: Deployment,
        previous: Option<String>,
        outcome: Result<(), String>,
    ) -> HubResult<Deployment> {
        let now = self.now();
        let mut tx = self.begin().await?;
        let details = json!({
            "deployment": deployment.id,
            "snapshot": snapshot_id,
            "previous": previous,
            "reason": deployment.reason,
            "flows_sha256": flows_sha256,
            "promotion": deployment.promotion_id,
        });
        let target_name = format!("instance:{}", instance.name);
        match &outcome {
            Ok(()) => {
                deployment.status = STATUS_DONE.to_string();
                deployment.step = "the instance runs the snapshot".to_string();
                tx.update_deployment(&deployment.id, STATUS_DONE, &deployment.step, None, now)
                    .await?;
                self.note(
                    &mut tx,
                    who,
                    Event::in_team(
                        &instance.team_id,
                        AuditEvent::SnapshotDeployed,
                        target_name,
                        details,
                    ),
                );
            }
            Err(cause) => {
                deployment.status = STATUS_FAILED.to_string();
                deployment.step = "the deploy failed; the instance keeps what it ran".to_string();
                deployment.error = Some(cause.clone());
                tx.update_deployment(
                    &deployment.id,
                    STATUS_FAILED,
                    &deployment.step,
                    Some(cause),
                    now,
                )
                .await?;
                tx.set_running_snapshot(&instance.team_id, &instance.id, previous.as_deref())
                    .await?;
                let mut details = details;
                details["error"] = json!(cause);
                self.note(
                    &mut tx,
                    who,
                    Event {
                        outcome: Outcome::Failure,
                        ..Event::in_team(
                            &instance.team_id,
                            AuditEvent::SnapshotDeployFailed,
                            target_name,
                            details,
                        )
                    },
                );
            }
        }
        self.commit(tx, 1).await?;
        deployment.updated_at = now;
        Ok(deployment)
    }

    /// What the instance runs, as Redwall recorded it.
    pub async fn running_snapshot(&self, instance: &Instance) -> HubResult<Option<String>> {
        Ok(self.store.running_snapshot(&instance.id).await?)
    }

    pub async fn deployments(&self, instance: &Instance) -> HubResult<Vec<Deployment>> {
        Ok(self
            .store
            .list_deployments(&instance.team_id, &instance.id, 50)
            .await?)
    }

    pub async fn deployment(&self, team_id: &str, id: &str) -> HubResult<Deployment> {
        self.store
            .get_deployment(team_id, id)
            .await?
            .ok_or(HubError::NotFound)
    }
}

//! Taking a snapshot of what an instance holds now: by hand with a note, and
//! automatically after every deploy from the editor (Node-RED's `flows.set`
//! event, which reaches the hub through the supervisor's reports).
//!
//! The files are read from the instance's own directory, written by
//! untrusted code: `redwall_runtime::read_flow_files` refuses links and
//! anything but bounded regular files.

use redwall_policy::audit_event::AuditEvent;
use redwall_policy::snapshot_rules::{automatic_to_prune, RetentionEntry, SnapshotKind};
use redwall_store::{Instance, SnapshotSummary};
use serde_json::{json, Map, Value};

use super::{Content, NewSnapshot};
use crate::audit::{Event, Who};
use crate::instances::keys::open_keys;
use crate::{Hub, HubError, HubResult};

/// An instance's flows, credentials, variable names, options and modules,
/// as they are now.
pub(crate) struct CurrentState {
    pub content: Content,
    pub credentials: Map<String, Value>,
}

impl Hub {
    pub(crate) async fn current_state(&self, instance: &Instance) -> HubResult<CurrentState> {
        crate::instances::on_agents::run_here(instance)?;
        let manager = self.manager()?;
        let userdir = manager.userdir(&instance.id);
        let keys = open_keys(&self.keyring, instance)?;
        let secret = keys.credential.expose().to_string();
        let (files, modules) = tokio::task::spawn_blocking(move || {
            let files = redwall_runtime::read_flow_files(&userdir, &secret)?;
            let modules = redwall_runtime::installed_modules(&userdir)?;
            Ok::<_, redwall_runtime::RuntimeError>((files, modules))
        })
        .await
        .map_err(HubError::internal)?
        .map_err(|e| {
            HubError::conflict(
                "flows_unreadable",
                format!("the instance's flow files could not be read: {e}"),
            )
        })?;
        let env_names = self
            .store
            .list_instance_env(&instance.id)
            .await?
            .into_iter()
            .map(|e| e.name)
            .collect();
        let options = serde_json::from_str(&instance.options).unwrap_or_else(|_| json!({}));
        Ok(CurrentState {
            content: Content {
                flows: files.flows,
                env_names,
                options,
                modules,
            },
            credentials: files.credentials,
        })
    }

    /// A snapshot of the instance as it is now, with a note.
    pub async fn take_snapshot(
        &self,
        who: Who<'_>,
        instance: &Instance,
        note: &str,
        created_by: Option<&str>,
    ) -> HubResult<SnapshotSummary> {
        redwall_policy::snapshot_rules::check_note(note)?;
        let state = self.current_state(instance).await?;
        self.store_snapshot(
            who,
            NewSnapshot {
                team_id: &instance.team_id,
                instance_id: Some(&instance.id),
                kind: SnapshotKind::Manual,
                note,
                created_by,
                content: state.content,
                credentials: state.credentials,
                running: true,
                audit_details: json!({}),
                event: AuditEvent::SnapshotCreated,
            },
        )
        .await
    }

    /// After a deploy: a snapshot unless the instance still runs exactly
    /// the snapshot Redwall last recorded (as after a rollback, whose own
    /// deploy reports `flows.set` too). Then older automatic ones go.
    pub async fn snapshot_after_deploy(
        &self,
        who: Who<'_>,
        instance: &Instance,
        created_by: Option<&str>,
    ) -> HubResult<Option<SnapshotSummary>> {
        let state = self.current_state(instance).await?;
        if self.runs_recorded_snapshot(who, instance, &state).await? {
            return Ok(None);
        }
        let summary = self
            .store_snapshot(
                who,
                NewSnapshot {
                    team_id: &instance.team_id,
                    instance_id: Some(&instance.id),
                    kind: SnapshotKind::Automatic,
                    note: "",
                    created_by,
                    content: state.content,
                    credentials: state.credentials,
                    running: true,
                    audit_details: json!({ "after": "deploy" }),
                    event: AuditEvent::SnapshotCreated,
                },
            )
            .await?;
        self.prune_snapshots(who, instance).await?;
        Ok(Some(summary))
    }

    /// Whether the instance's flows and credentials are those of the
    /// snapshot recorded as running on it.
    pub(crate) async fn runs_recorded_snapshot(
        &self,
        who: Who<'_>,
        instance: &Instance,
        state: &CurrentState,
    ) -> HubResult<bool> {
        let Some(running) = self.store.running_snapshot(&instance.id).await? else {
            return Ok(false);
        };
        let Some(row) = self.store.get_snapshot(&instance.team_id, &running).await? else {
            return Ok(false);
        };
        if row.flows_sha256 != super::content::flows_sha256(&state.content.flows) {
            return Ok(false);
        }
        match self.load_snapshot(who, &instance.team_id, &running).await {
            Ok(loaded) => Ok(loaded.credentials == state.credentials),
            // A recorded snapshot that fails its check is no reason to skip
            // a fresh one.
            Err(HubError::Refused { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Drops the instance's automatic snapshots beyond the newest ones kept,
    /// never one in use, with one audit entry.
    async fn prune_snapshots(&self, who: Who<'_>, instance: &Instance) -> HubResult<()> {
        let all = self
            .store
            .list_snapshots(&instance.team_id, Some(&instance.id))
            .await?;
        let in_use = self.store.snapshots_in_use(&instance.team_id).await?;
        let entries: Vec<RetentionEntry<'_>> = all
            .iter()
            .filter_map(|s| {
                Some(RetentionEntry {
                    id: &s.id,
                    kind: SnapshotKind::parse(&s.kind)?,
                    created_at: s.created_at,
                    in_use: in_use.contains(&s.id),
                })
            })
            .collect();
        let keep = self.platform_settings().await?.snapshot_keep_automatic;
        let prune: Vec<String> = automatic_to_prune(&entries, keep)
            .into_iter()
            .map(str::to_string)
            .collect();
        if prune.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        let gone = tx.delete_snapshots(&instance.team_id, &prune).await?;
        self.note(
            &mut tx,
            who,
            Event::in_team(
                &instance.team_id,
                AuditEvent::SnapshotsPruned,
                format!("instance:{}", instance.name),
                json!({ "deleted": gone, "snapshots": prune, "kept_automatic": keep }),
            ),
        );
        self.commit(tx, 1).await
    }
}

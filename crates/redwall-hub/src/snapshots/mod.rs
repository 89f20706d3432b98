//! Signed snapshots of instances' flows: taken on every deploy from the
//! editor and by hand, checked whole each time one is loaded, compared,
//! deployed back (rollback), exported under a passphrase and imported.
//!
//! A snapshot is written once. Its credentials are sealed under a data key
//! of their own (itself sealed by the master key), and the hub signs a
//! statement naming the snapshot and the SHA-256 of everything it holds.
//! Loading one re-computes the digests, opens the credentials and checks
//! the signature against the hub's own keys: a row changed by one byte
//! behind Redwall's back is refused, and the refusal is audited.

pub mod capture;
pub mod content;
pub mod deploy;
pub mod git;
pub mod schedule;
pub mod signing;
pub mod to_agents;
pub mod transfer;

use redwall_crypto::data_key::{open_enveloped, seal_enveloped, Enveloped};
use redwall_policy::audit_event::{AuditEvent, Outcome};
use redwall_policy::flow_diff::{diff_flows, FlowDiff};
use redwall_policy::snapshot_rules::{check_note, SnapshotKind};
use redwall_store::{Instance, SnapshotRow, SnapshotSummary};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::audit::{Event, Who};
use crate::{Hub, HubError, HubResult};

pub use content::{Content, Statement};

/// The master-key purpose that seals snapshots' data keys.
const DATA_KEY_PURPOSE: &str = "snapshot-data-key";

fn credentials_aad(snapshot_id: &str) -> Vec<u8> {
    format!("snapshot/{snapshot_id}/credentials").into_bytes()
}

/// A snapshot, loaded and checked whole.
pub struct Loaded {
    pub row: SnapshotRow,
    pub statement: Statement,
    pub content: Content,
    /// Node id -> credentials, in the clear: never shown, only deployed or
    /// exported.
    pub credentials: Map<String, Value>,
}

/// What differs between two snapshots.
#[derive(Debug, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SnapshotDiff {
    pub from: String,
    pub to: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub flows: FlowDiff,
    /// Modules added or changed (name -> version in `to`).
    pub modules_added: Vec<(String, String)>,
    pub modules_removed: Vec<String>,
    pub env_names_added: Vec<String>,
    pub env_names_removed: Vec<String>,
    /// Whether the credentials differ (never which).
    pub credentials_changed: bool,
}

/// What a new snapshot is made of.
pub(crate) struct NewSnapshot<'a> {
    pub team_id: &'a str,
    pub instance_id: Option<&'a str>,
    pub kind: SnapshotKind,
    pub note: &'a str,
    pub created_by: Option<&'a str>,
    pub content: Content,
    pub credentials: Map<String, Value>,
    /// The instance now runs it (taken from the instance itself).
    pub running: bool,
    /// More to say in its audit entry (an import's origin).
    pub audit_details: Value,
    /// `SnapshotCreated`, or `SnapshotImported`.
    pub event: AuditEvent,
}

fn refused(reason: &str) -> HubError {
    HubError::conflict(
        "snapshot_invalid",
        format!("the snapshot failed its integrity check ({reason}) and will not be used"),
    )
}

fn snapshot_target(s: &SnapshotRow) -> String {
    format!("snapshot:{}", s.id)
}

impl Hub {
    /// Seals, signs and stores a snapshot with its audit entry, in one
    /// transaction.
    pub(crate) async fn store_snapshot(
        &self,
        who: Who<'_>,
        new: NewSnapshot<'_>,
    ) -> HubResult<SnapshotSummary> {
        check_note(new.note)?;
        let id = crate::ids::new_id();
        let now = self.now();
        let flows_sha256 = content::flows_sha256(&new.content.flows);
        let content_sha256 = content::content_sha256(&new.content, &new.credentials)?;
        let statement = Statement {
            v: 1,
            id: id.clone(),
            team_id: new.team_id.to_string(),
            instance_id: new.instance_id.map(str::to_string),
            kind: new.kind.as_str().to_string(),
            note: new.note.to_string(),
            created_by: new.created_by.map(str::to_string),
            created_at: now,
            content_sha256: content_sha256.clone(),
            flows_sha256: flows_sha256.clone(),
        };
        let statement_text = content::statement_canonical(&statement)?;
        let key = self.signing_key().await?;
        let signature = key.sign(content::STATEMENT_CONTEXT, statement_text.as_bytes());
        let credentials =
            serde_json::to_vec(&Value::Object(new.credentials)).map_err(HubError::internal)?;
        let sealed = seal_enveloped(
            &self.keyring,
            DATA_KEY_PURPOSE,
            &credentials,
            &credentials_aad(&id),
        );
        let row = SnapshotRow {
            id: id.clone(),
            team_id: new.team_id.to_string(),
            instance_id: statement.instance_id.clone(),
            kind: statement.kind.clone(),
            note: statement.note.clone(),
            content_sha256,
            flows_sha256,
            content: content::content_canonical(&new.content)?,
            sealed_data_key: sealed.sealed_key,
            sealed_credentials: sealed.ciphertext,
            statement: statement_text,
            signature: signature.to_vec(),
            signing_key: key.public_key().to_base64(),
            created_by: statement.created_by.clone(),
            created_at: now,
        };
        let mut tx = self.begin().await?;
        tx.create_snapshot(&row).await?;
        if new.running {
            if let Some(instance_id) = new.instance_id {
                tx.set_running_snapshot(new.team_id, instance_id, Some(&id))
                    .await?;
            }
        }
        let mut details = json!({
            "snapshot": id,
            "kind": row.kind,
            "instance": row.instance_id,
            "content_sha256": row.content_sha256,
        });
        if let (Some(extra), Some(map)) = (new.audit_details.as_object(), details.as_object_mut()) {
            for (k, v) in extra {
                map.insert(k.clone(), v.clone());
            }
        }
        self.note(
            &mut tx,
            who,
            Event::in_team(new.team_id, new.event, snapshot_target(&row), details),
        );
        self.commit(tx, 1).await?;
        Ok(summary_of(&row))
    }

    /// The team's snapshots, newest first (one instance's when given).
    pub async fn list_snapshots(
        &self,
        team_id: &str,
        instance: Option<&Instance>,
    ) -> HubResult<Vec<SnapshotSummary>> {
        Ok(self
            .store
            .list_snapshots(team_id, instance.map(|i| i.id.as_str()))
            .await?)
    }

    /// The team's snapshot, checked whole; a snapshot that fails the check
    /// is refused and the refusal audited.
    pub async fn load_snapshot(&self, who: Who<'_>, team_id: &str, id: &str) -> HubResult<Loaded> {
        let row = self
            .store
            .get_snapshot(team_id, id)
            .await?
            .ok_or(HubError::NotFound)?;
        // A database that fails to answer is not a snapshot that fails
        // its check: that error goes back as it is.
        let keys = self.signing_public_keys().await?;
        let id = row.id.clone();
        match check_snapshot(&self.keyring, &keys, row) {
            Ok(loaded) => Ok(loaded),
            Err(reason) => {
                let event = Event {
                    outcome: Outcome::Failure,
                    ..Event::in_team(
                        team_id,
                        AuditEvent::SnapshotRefused,
                        format!("snapshot:{id}"),
                        json!({ "snapshot": id, "reason": reason }),
                    )
                };
                self.record_event(who, event).await?;
                tracing::error!(snapshot = %id, reason, "a stored snapshot failed its integrity check");
                Err(refused(reason))
            }
        }
    }

    /// What changed from snapshot `from` to snapshot `to`.
    pub async fn diff_snapshots(
        &self,
        who: Who<'_>,
        team_id: &str,
        from: &str,
        to: &str,
    ) -> HubResult<SnapshotDiff> {
        let a = self.load_snapshot(who, team_id, from).await?;
        let b = self.load_snapshot(who, team_id, to).await?;
        diff_loaded(&a, &b)
    }
}

/// Every check of a stored snapshot; the reason it fails, if it does.
fn check_snapshot(
    keyring: &redwall_crypto::keyring::Keyring,
    keys: &[redwall_crypto::signing::PublicKey],
    row: SnapshotRow,
) -> Result<Loaded, &'static str> {
    let Ok(statement) = serde_json::from_str::<Statement>(&row.statement) else {
        return Err("unreadable statement");
    };
    let matches_row = statement.v == 1
        && statement.id == row.id
        && statement.team_id == row.team_id
        && statement.instance_id == row.instance_id
        && statement.kind == row.kind
        && statement.note == row.note
        && statement.created_by == row.created_by
        && statement.created_at == row.created_at
        && statement.content_sha256 == row.content_sha256
        && statement.flows_sha256 == row.flows_sha256;
    if !matches_row {
        return Err("the row differs from its signed statement");
    }
    let Some(key) = keys.iter().find(|k| k.to_base64() == row.signing_key) else {
        return Err("not signed by this hub");
    };
    if key
        .verify(
            content::STATEMENT_CONTEXT,
            row.statement.as_bytes(),
            &row.signature,
        )
        .is_err()
    {
        return Err("bad signature");
    }
    let Ok(content) = serde_json::from_str::<Content>(&row.content) else {
        return Err("unreadable content");
    };
    if content::flows_sha256(&content.flows) != statement.flows_sha256 {
        return Err("the flows do not match their digest");
    }
    let sealed = Enveloped {
        sealed_key: row.sealed_data_key.clone(),
        ciphertext: row.sealed_credentials.clone(),
    };
    let Ok(plain) = open_enveloped(
        keyring,
        DATA_KEY_PURPOSE,
        &sealed,
        &credentials_aad(&row.id),
    ) else {
        return Err("the credentials do not open");
    };
    let Ok(Value::Object(credentials)) = serde_json::from_slice::<Value>(&plain) else {
        return Err("unreadable credentials");
    };
    match content::content_sha256(&content, &credentials) {
        Ok(digest) if digest == statement.content_sha256 => {}
        _ => return Err("the content does not match its digest"),
    }
    Ok(Loaded {
        row,
        statement,
        content,
        credentials,
    })
}

pub(crate) fn diff_loaded(a: &Loaded, b: &Loaded) -> HubResult<SnapshotDiff> {
    let flows = diff_flows(&a.content.flows, &b.content.flows)?;
    let modules_added = b
        .content
        .modules
        .iter()
        .filter(|(name, version)| a.content.modules.get(*name) != Some(version))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let modules_removed = a
        .content
        .modules
        .keys()
        .filter(|name| !b.content.modules.contains_key(*name))
        .cloned()
        .collect();
    let names = |l: &Loaded, r: &Loaded| {
        l.content
            .env_names
            .iter()
            .filter(|n| !r.content.env_names.contains(n))
            .cloned()
            .collect::<Vec<_>>()
    };
    Ok(SnapshotDiff {
        from: a.row.id.clone(),
        to: b.row.id.clone(),
        flows,
        modules_added,
        modules_removed,
        env_names_added: names(b, a),
        env_names_removed: names(a, b),
        credentials_changed: a.credentials != b.credentials,
    })
}

pub fn summary_of(row: &SnapshotRow) -> SnapshotSummary {
    SnapshotSummary {
        id: row.id.clone(),
        team_id: row.team_id.clone(),
        instance_id: row.instance_id.clone(),
        kind: row.kind.clone(),
        note: row.note.clone(),
        content_sha256: row.content_sha256.clone(),
        flows_sha256: row.flows_sha256.clone(),
        created_by: row.created_by.clone(),
        created_at: row.created_at,
    }
}

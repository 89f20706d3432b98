//! Snapshots leaving and entering the hub.
//!
//! An export is one file sealed under a passphrase (Argon2id, then
//! XChaCha20-Poly1305: a wrong passphrase fails loudly, never imports
//! garbage). Inside: the content, the credentials, and the hub's signed
//! statement with its public key, so an import can check the signature.
//! Import also takes a plain Node-RED flows export, but refuses credentials
//! in the clear unless told to accept them.

use redwall_crypto::passphrase_box::{open_with_passphrase, seal_with_passphrase};
use redwall_crypto::signing::PublicKey;
use redwall_policy::audit_event::AuditEvent;
use redwall_policy::snapshot_rules::{check_export_passphrase, SnapshotKind};
use redwall_store::{Instance, SnapshotSummary};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::content::{self, Content, Statement};
use super::NewSnapshot;
use crate::audit::{Event, Who};
use crate::{Hub, HubError, HubResult};

/// The `kind` named in an export's sealed header.
const EXPORT_KIND: &str = "snapshot";
/// The most an import may be: a sealed export or a flows file.
pub const MAX_IMPORT_BYTES: usize = 32 * 1024 * 1024;
/// An import's API body: the file in base64 (4/3 of it) and a little JSON.
pub const MAX_IMPORT_BODY_BYTES: usize = MAX_IMPORT_BYTES / 3 * 4 + 64 * 1024;

/// What an export file holds, once opened.
#[derive(Serialize, Deserialize)]
struct Exported {
    format: String,
    statement: String,
    signature: String,
    signing_key: String,
    content: Content,
    credentials: Map<String, Value>,
}

const FORMAT: &str = "redwall-snapshot-export/v1";

/// How an import's signature turned out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Provenance {
    /// Signed by this hub.
    ThisHub,
    /// A valid signature by another hub's key (named by fingerprint).
    OtherHub(String),
    /// A plain flows file: nothing to check.
    Unsigned,
}

/// What to import, and how.
pub struct ImportRequest<'a> {
    pub file: &'a [u8],
    /// Needed for a sealed export.
    pub passphrase: Option<&'a str>,
    /// Accept credentials written in the clear in a flows file.
    pub accept_plaintext_credentials: bool,
    pub note: &'a str,
}

fn bad_file(message: impl Into<String>) -> HubError {
    HubError::invalid("invalid_import", message)
}

impl Hub {
    /// The snapshot, with its credentials, sealed under `passphrase`.
    pub async fn export_snapshot(
        &self,
        who: Who<'_>,
        team_id: &str,
        id: &str,
        passphrase: &str,
    ) -> HubResult<Vec<u8>> {
        check_export_passphrase(passphrase)?;
        let loaded = self.load_snapshot(who, team_id, id).await?;
        let exported = Exported {
            format: FORMAT.to_string(),
            statement: loaded.row.statement.clone(),
            signature: hex::encode(&loaded.row.signature),
            signing_key: loaded.row.signing_key.clone(),
            content: loaded.content,
            credentials: loaded.credentials,
        };
        let plain =
            zeroize::Zeroizing::new(serde_json::to_vec(&exported).map_err(HubError::internal)?);
        let passphrase = zeroize::Zeroizing::new(passphrase.to_string());
        let file = tokio::task::spawn_blocking(move || {
            seal_with_passphrase(&passphrase, EXPORT_KIND, &plain)
        })
        .await
        .map_err(HubError::internal)?
        .map_err(HubError::internal)?;
        let mut tx = self.begin().await?;
        self.note(
            &mut tx,
            who,
            Event::in_team(
                team_id,
                AuditEvent::SnapshotExported,
                format!("snapshot:{id}"),
                json!({ "snapshot": id, "with_credentials": true }),
            ),
        );
        self.commit(tx, 1).await?;
        Ok(file)
    }

    /// Imports a sealed export or a Node-RED flows file as a new snapshot
    /// of the instance (not deployed: that is a rollback to it).
    pub async fn import_snapshot(
        &self,
        who: Who<'_>,
        instance: &Instance,
        request: ImportRequest<'_>,
        created_by: Option<&str>,
    ) -> HubResult<(SnapshotSummary, Provenance)> {
        redwall_policy::snapshot_rules::check_note(request.note)?;
        if request.file.len() > MAX_IMPORT_BYTES {
            return Err(bad_file("the file is larger than 32 MiB"));
        }
        let (content_in, credentials, provenance, plaintext) = if is_sealed(request.file) {
            let (c, creds, p) = self.open_export(&request).await?;
            (c, creds, p, false)
        } else {
            let (flows, creds) = flows_file(request.file, request.accept_plaintext_credentials)?;
            let content = Content {
                flows,
                env_names: Vec::new(),
                options: json!({}),
                modules: Default::default(),
            };
            let plaintext = !creds.is_empty();
            (content, creds, Provenance::Unsigned, plaintext)
        };
        // The instance's own variables and options stay its own; the
        // modules must match for a deploy, which checks them.
        let mut content = content_in;
        if matches!(provenance, Provenance::Unsigned) {
            let state = self.current_state(instance).await.ok();
            if let Some(state) = state {
                content.env_names = state.content.env_names;
                content.options = state.content.options;
                content.modules = state.content.modules;
            }
        }
        let summary = self
            .store_snapshot(
                who,
                NewSnapshot {
                    team_id: &instance.team_id,
                    instance_id: Some(&instance.id),
                    kind: SnapshotKind::Imported,
                    note: request.note,
                    created_by,
                    content,
                    credentials,
                    running: false,
                    audit_details: json!({
                        "imported": true,
                        "provenance": provenance,
                        "plaintext_credentials_accepted": plaintext,
                    }),
                    event: AuditEvent::SnapshotImported,
                },
            )
            .await?;
        Ok((summary, provenance))
    }

    async fn open_export(
        &self,
        request: &ImportRequest<'_>,
    ) -> HubResult<(Content, Map<String, Value>, Provenance)> {
        let Some(passphrase) = request.passphrase else {
            return Err(HubError::invalid(
                "passphrase_required",
                "this file is a sealed export: give its passphrase",
            ));
        };
        let passphrase = zeroize::Zeroizing::new(passphrase.to_string());
        let file = request.file.to_vec();
        let plain = tokio::task::spawn_blocking(move || {
            open_with_passphrase(&passphrase, EXPORT_KIND, &file)
        })
        .await
        .map_err(HubError::internal)?
        .map_err(|e| HubError::invalid("wrong_passphrase", e.to_string()))?;
        let exported: Exported = serde_json::from_slice(&plain)
            .map_err(|_| bad_file("the sealed export holds no snapshot"))?;
        if exported.format != FORMAT {
            return Err(bad_file("an export of another format or version"));
        }
        let provenance = self.check_exported(&exported).await?;
        Ok((exported.content, exported.credentials, provenance))
    }

    /// The export's signature must be valid and its statement must name
    /// exactly the content and credentials inside.
    async fn check_exported(&self, exported: &Exported) -> HubResult<Provenance> {
        let signature_refused = || {
            HubError::invalid(
                "signature_invalid",
                "the export's signature does not match its content: refused",
            )
        };
        let key = PublicKey::from_base64(&exported.signing_key).map_err(|_| signature_refused())?;
        let signature = hex::decode(&exported.signature).map_err(|_| signature_refused())?;
        key.verify(
            content::STATEMENT_CONTEXT,
            exported.statement.as_bytes(),
            &signature,
        )
        .map_err(|_| signature_refused())?;
        let statement: Statement =
            serde_json::from_str(&exported.statement).map_err(|_| signature_refused())?;
        let digest = content::content_sha256(&exported.content, &exported.credentials)?;
        if digest != statement.content_sha256 {
            return Err(signature_refused());
        }
        let ours = self.signing_public_keys().await?;
        Ok(if ours.contains(&key) {
            Provenance::ThisHub
        } else {
            Provenance::OtherHub(key.fingerprint())
        })
    }
}

fn is_sealed(file: &[u8]) -> bool {
    file.starts_with(b"redwall-sealed-file")
}

/// A Node-RED flows export: an array of nodes, or `{"flows": [...],
/// "credentials": {...}}`. Credentials in the clear (a node's
/// `credentials`, or the credentials map) are refused unless accepted.
fn flows_file(file: &[u8], accept_plaintext: bool) -> HubResult<(Value, Map<String, Value>)> {
    let value: Value = serde_json::from_slice(file)
        .map_err(|_| bad_file("neither a sealed Redwall export nor a JSON flows file"))?;
    let (mut flows, mut credentials) = match value {
        Value::Array(_) => (value, Map::new()),
        Value::Object(mut o) => {
            let flows = o.remove("flows").unwrap_or(Value::Null);
            let creds = match o.remove("credentials") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(c)) => c,
                Some(_) => return Err(bad_file("credentials must be an object")),
            };
            (flows, creds)
        }
        _ => return Err(bad_file("a flows file is an array of nodes")),
    };
    let Value::Array(nodes) = &mut flows else {
        return Err(bad_file("a flows file is an array of nodes"));
    };
    for node in nodes.iter_mut() {
        let Value::Object(node) = node else {
            return Err(bad_file("every node is an object"));
        };
        if let Some(creds) = node.remove("credentials") {
            let Some(id) = node.get("id").and_then(Value::as_str) else {
                return Err(bad_file("a node with credentials has no id"));
            };
            if let Value::Object(c) = creds {
                if !c.is_empty() {
                    credentials.insert(id.to_string(), Value::Object(c));
                }
            }
        }
    }
    // The same checks a diff makes: ids present and unique.
    redwall_policy::flow_diff::diff_flows(&flows, &flows)?;
    if !credentials.is_empty() && !accept_plaintext {
        return Err(HubError::invalid(
            "plaintext_credentials",
            "the file holds credentials in the clear; import it with accept_plaintext_credentials if you mean to (and change those credentials afterwards)",
        ));
    }
    Ok((flows, credentials))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_credentials_are_refused_unless_accepted() {
        let file = br#"[{"id":"a","type":"mqtt-broker","credentials":{"user":"u","password":"p"}},{"id":"b","type":"inject","z":"t"}]"#;
        let e = flows_file(file, false).unwrap_err();
        assert!(matches!(
            e,
            HubError::Refused {
                code: "plaintext_credentials",
                ..
            }
        ));
        let (flows, creds) = flows_file(file, true).unwrap();
        assert_eq!(creds["a"]["password"], "p");
        assert!(flows[0].get("credentials").is_none());
        let (_, creds) =
            flows_file(br#"[{"id":"a","type":"inject","credentials":{}}]"#, false).unwrap();
        assert!(creds.is_empty());
        let obj = br#"{"flows":[{"id":"a","type":"x"}],"credentials":{"a":{"password":"p"}}}"#;
        assert!(flows_file(obj, false).is_err());
        assert!(flows_file(br#"{"flows":3}"#, true).is_err());
        assert!(flows_file(b"not json", true).is_err());
        assert!(flows_file(br#"[{"id":"a"},{"id":"a"}]"#, true).is_err());
    }
}

//! What a snapshot holds, in one canonical byte form, and the statement the
//! hub signs about it. The hub computes these digests when it stores a
//! snapshot and checks them when it loads one; a remote agent computes the
//! same ones before it runs a snapshot it was sent, so both ends must share
//! this code.
//!
//! Hashes and signatures are over canonical JSON (object keys sorted, no
//! whitespace), written here rather than left to serde_json's map order,
//! which a feature flag elsewhere in the build could change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The signature context: a signature made for a snapshot statement is
/// never valid for anything else the hub signs.
pub const STATEMENT_CONTEXT: &str = "redwall-snapshot-statement/v1";

/// Everything of a snapshot except its credentials, stored in the clear.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Content {
    pub flows: Value,
    /// The names of the instance's environment variables; their values
    /// stay in the instance's own store.
    pub env_names: Vec<String>,
    /// The instance's options (what it may install).
    pub options: Value,
    /// Each installed module and its exact version.
    pub modules: BTreeMap<String, String>,
}

/// What the hub signs: the snapshot's identity and the digest of all it
/// holds (content and credentials).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub v: u32,
    pub id: String,
    pub team_id: String,
    pub instance_id: Option<String>,
    pub kind: String,
    pub note: String,
    pub created_by: Option<String>,
    pub created_at: i64,
    /// SHA-256 of canonical `{"content": …, "credentials": …}`.
    pub content_sha256: String,
    /// SHA-256 of the canonical flows alone: what a running instance's
    /// flows are compared with.
    pub flows_sha256: String,
}

/// Canonical JSON: keys sorted at every level, no insignificant space.
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(key) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The digest of the flows alone.
pub fn flows_sha256(flows: &Value) -> String {
    sha256_hex(canonical(flows).as_bytes())
}

/// The digest of everything a snapshot holds.
pub fn content_sha256(
    content: &Content,
    credentials: &Map<String, Value>,
) -> Result<String, serde_json::Error> {
    let content = serde_json::to_value(content)?;
    let whole = serde_json::json!({ "content": content, "credentials": credentials });
    Ok(sha256_hex(canonical(&whole).as_bytes()))
}

impl Content {
    pub fn to_canonical(&self) -> Result<String, serde_json::Error> {
        Ok(canonical(&serde_json::to_value(self)?))
    }
}

impl Statement {
    pub fn to_canonical(&self) -> Result<String, serde_json::Error> {
        Ok(canonical(&serde_json::to_value(self)?))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_sorts_keys_at_every_level_and_keeps_array_order() {
        let a = json!({"b": 1, "a": {"y": [3, {"d": 1, "c": 2}], "x": "é\"\n"}});
        assert_eq!(
            canonical(&a),
            r#"{"a":{"x":"é\"\n","y":[3,{"c":2,"d":1}]},"b":1}"#
        );
        let reordered: Value =
            serde_json::from_str(r#"{"a":{"y":[3,{"c":2,"d":1}],"x":"é\"\n"},"b":1}"#).unwrap();
        assert_eq!(canonical(&a), canonical(&reordered));
    }

    #[test]
    fn the_content_digest_covers_credentials_and_every_part() {
        let content = Content {
            flows: json!([{"id": "n1", "type": "inject"}]),
            env_names: vec!["A".into()],
            options: json!({}),
            modules: BTreeMap::new(),
        };
        let mut creds = Map::new();
        let base = content_sha256(&content, &creds).unwrap();
        creds.insert("n1".into(), json!({"password": "x"}));
        let with_creds = content_sha256(&content, &creds).unwrap();
        assert_ne!(base, with_creds);
        let mut other = content.clone();
        other.env_names.push("B".into());
        assert_ne!(content_sha256(&other, &creds).unwrap(), with_creds);
        let mut other = content.clone();
        other
            .modules
            .insert("node-red-contrib-x".into(), "1.0.0".into());
        assert_ne!(content_sha256(&other, &creds).unwrap(), with_creds);
    }

    #[test]
    fn a_known_digest_stays_the_same() {
        // Hub and agents of different builds must agree byte for byte.
        assert_eq!(
            flows_sha256(&json!([{"type": "tab", "id": "t1"}])),
            sha256_hex(br#"[{"id":"t1","type":"tab"}]"#)
        );
    }
}

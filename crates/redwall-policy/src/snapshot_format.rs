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
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    // Only JSON text (valid UTF-8) was written.
    String::from_utf8(out).unwrap_or_default()
}

/// Where canonical JSON goes: a buffer, or straight into a digest (a
/// rollout checks a large flow on each of a thousand agents, so nothing is
/// copied or built on the way).
pub trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// Adapts a [`Sink`] for serde_json's string escaping.
struct Writer<'a, S: Sink>(&'a mut S);

impl<S: Sink> std::io::Write for Writer<'_, S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.put(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A JSON string, escaped as serde_json escapes it.
fn write_str<S: Sink>(s: &str, out: &mut S) {
    // Writing a &str to an infallible sink cannot fail.
    let _ = serde_json::to_writer(Writer(out), s);
}

pub fn write_canonical<S: Sink>(value: &Value, out: &mut S) {
    match value {
        Value::Object(map) => write_canonical_map(map, out),
        Value::Array(items) => {
            out.put(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.put(b",");
                }
                write_canonical(item, out);
            }
            out.put(b"]");
        }
        Value::String(s) => write_str(s, out),
        // Numbers, booleans and null as serde_json writes them.
        scalar => {
            let _ = serde_json::to_writer(Writer(out), scalar);
        }
    }
}

/// The canonical form of a [`Content`], written from its fields (keys in
/// order: env_names, flows, modules, options), without first turning it
/// into a `Value`: the same bytes as `canonical(&to_value(content))`.
fn write_canonical_content<S: Sink>(content: &Content, out: &mut S) {
    out.put(b"{\"env_names\":[");
    for (i, name) in content.env_names.iter().enumerate() {
        if i > 0 {
            out.put(b",");
        }
        write_str(name, out);
    }
    out.put(b"],\"flows\":");
    write_canonical(&content.flows, out);
    out.put(b",\"modules\":{");
    // A BTreeMap iterates in key order, as canonical JSON sorts.
    for (i, (name, version)) in content.modules.iter().enumerate() {
        if i > 0 {
            out.put(b",");
        }
        write_str(name, out);
        out.put(b":");
        write_str(version, out);
    }
    out.put(b"},\"options\":");
    write_canonical(&content.options, out);
    out.put(b"}");
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The digest of the flows alone.
pub fn flows_sha256(flows: &Value) -> String {
    let mut hasher = Sha256::new();
    write_canonical(flows, &mut hasher);
    hex::encode(hasher.finalize())
}

/// The digest of everything a snapshot holds: canonical
/// `{"content": …, "credentials": …}`.
pub fn content_sha256(
    content: &Content,
    credentials: &Map<String, Value>,
) -> Result<String, serde_json::Error> {
    let mut hasher = Sha256::new();
    hasher.put(b"{\"content\":");
    write_canonical_content(content, &mut hasher);
    hasher.put(b",\"credentials\":");
    // A Map is a JSON object: written sorted like any other.
    write_canonical_map(credentials, &mut hasher);
    hasher.put(b"}");
    Ok(hex::encode(hasher.finalize()))
}

fn write_canonical_map<S: Sink>(map: &Map<String, Value>, out: &mut S) {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    out.put(b"{");
    for (i, key) in keys.into_iter().enumerate() {
        if i > 0 {
            out.put(b",");
        }
        write_str(key, out);
        out.put(b":");
        if let Some(v) = map.get(key) {
            write_canonical(v, out);
        }
    }
    out.put(b"}");
}

impl Content {
    pub fn to_canonical(&self) -> Result<String, serde_json::Error> {
        let mut out = Vec::new();
        write_canonical_content(self, &mut out);
        Ok(String::from_utf8(out).unwrap_or_default())
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

    /// The form as first written (through `Value`s and strings): what every
    /// stored digest and signature was made with.
    fn reference_canonical(value: &Value) -> String {
        fn write(value: &Value, out: &mut String) {
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
                        write(&map[key.as_str()], out);
                    }
                    out.push('}');
                }
                Value::Array(items) => {
                    out.push('[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        write(item, out);
                    }
                    out.push(']');
                }
                scalar => out.push_str(&scalar.to_string()),
            }
        }
        let mut out = String::new();
        write(value, &mut out);
        out
    }

    fn arbitrary_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(".{0,8}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn the_streamed_form_is_byte_for_byte_the_first_one(
            flows in arbitrary_json(),
            options in arbitrary_json(),
            creds in proptest::collection::btree_map(".{0,8}", arbitrary_json(), 0..4),
            env in proptest::collection::vec(".{0,8}", 0..4),
            modules in proptest::collection::btree_map(".{0,8}", ".{0,8}", 0..4),
        ) {
            proptest::prop_assert_eq!(canonical(&flows), reference_canonical(&flows));
            proptest::prop_assert_eq!(
                flows_sha256(&flows),
                sha256_hex(reference_canonical(&flows).as_bytes())
            );
            let content = Content { flows, env_names: env, options, modules };
            let creds: Map<String, Value> = creds.into_iter().collect();
            let whole = serde_json::json!({
                "content": serde_json::to_value(&content).unwrap(),
                "credentials": creds,
            });
            proptest::prop_assert_eq!(
                content_sha256(&content, &creds).unwrap(),
                sha256_hex(reference_canonical(&whole).as_bytes())
            );
            proptest::prop_assert_eq!(
                content.to_canonical().unwrap(),
                reference_canonical(&serde_json::to_value(&content).unwrap())
            );
        }
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

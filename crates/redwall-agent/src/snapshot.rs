//! Checking a snapshot the hub sent before anything of it is used. Pure:
//! no I/O, no clock; [`verify`] either returns the snapshot in the clear or
//! says why it is refused.
//!
//! What the agent trusts is its own enrolment record, never the message:
//! the signature must verify under the hub key kept in `agent.json` at
//! enrolment, the statement must name the agent's own team, and everything
//! else (content, credentials) counts only because it hashes to the digests
//! in that signed statement. So a hub connection (or anyone in the middle
//! of it, or a hub replica with a stale key) cannot make the agent run
//! flows the hub's signing key never vouched for, nor run another team's.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use redwall_crypto::agent_box::AgentBoxKey;
use redwall_crypto::signing::PublicKey;
use redwall_policy::agent_protocol::SignedSnapshot;
use redwall_policy::snapshot_format::{
    content_sha256, flows_sha256, Content, Statement, STATEMENT_CONTEXT,
};
use serde_json::{Map, Value};
use zeroize::Zeroize as _;

/// The statement version this agent reads.
pub const STATEMENT_VERSION: u32 = 1;
/// Longest snapshot id accepted: ids end up in messages and logs.
const MAX_ID_CHARS: usize = 128;

/// Why a snapshot is not run. Each says what failed, never a secret.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the signature is not the hub's")]
    BadSignature,
    #[error("the statement is not a snapshot statement: {0}")]
    BadStatement(String),
    #[error("the statement has version {0}; this agent reads version {STATEMENT_VERSION}")]
    UnknownVersion(u32),
    #[error("the snapshot belongs to another team")]
    OtherTeam,
    #[error("the content is not a snapshot's content: {0}")]
    BadContent(String),
    #[error("the flows do not match the signed digest")]
    FlowsDigest,
    #[error("this agent has no encryption key (it was enrolled by an older version); enrol it again to run snapshots")]
    NoBoxKey,
    #[error("the credentials were not sealed for this agent")]
    NotForThisAgent,
    #[error("the credentials are not a JSON object of node credentials")]
    BadCredentials,
    #[error("the content and credentials do not match the signed digest")]
    ContentDigest,
}

/// A snapshot's credentials in the clear: node id to that node's
/// credentials. Every string in them is overwritten when dropped, and
/// `Debug` shows only how many nodes have some.
pub struct Credentials(Map<String, Value>);

impl Credentials {
    /// Takes `map` over, to wipe it when dropped.
    pub(crate) fn from_map(map: Map<String, Value>) -> Self {
        Self(map)
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }
}

/// Any JSON that holds credentials (a deploy's body), wiped like
/// [`Credentials`] when dropped.
pub(crate) struct Wiped(pub(crate) Value);

impl Drop for Wiped {
    fn drop(&mut self) {
        wipe(std::mem::take(&mut self.0));
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials([redacted, {} nodes])", self.0.len())
    }
}

impl Drop for Credentials {
    fn drop(&mut self) {
        for (_, value) in std::mem::take(&mut self.0) {
            wipe(value);
        }
    }
}

/// Overwrites every string in `value`. serde_json gives no way to reach
/// its number buffers, and credentials are strings in Node-RED anyway.
fn wipe(value: Value) {
    match value {
        Value::String(mut s) => s.zeroize(),
        Value::Array(items) => items.into_iter().for_each(wipe),
        Value::Object(map) => {
            for (mut key, value) in map {
                key.zeroize();
                wipe(value);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// A snapshot whose every part was checked against the hub's signature.
#[derive(Debug)]
pub struct Verified {
    pub statement: Statement,
    pub content: Content,
    pub credentials: Credentials,
}

/// Who the agent is, as far as checking snapshots goes: what it was given
/// at enrolment (the hub's key, its team) and its own box key.
pub struct Verifier {
    /// `None` when `agent.json` holds no usable key: nothing verifies.
    pub hub_key: Option<PublicKey>,
    pub team_id: String,
    pub box_key: Option<AgentBoxKey>,
}

impl Verifier {
    pub fn verify(&self, signed: &SignedSnapshot) -> Result<Verified, Refusal> {
        let hub_key = self.hub_key.as_ref().ok_or(Refusal::BadSignature)?;
        verify(signed, hub_key, &self.team_id, self.box_key.as_ref())
    }
}

/// Checks `signed` in the order that spends the least on a forgery: the
/// signature first (so nothing unsigned is even parsed further), then the
/// statement's claims, then the content against its digest, and only then
/// opens the credentials and checks the whole against the content digest.
pub fn verify(
    signed: &SignedSnapshot,
    hub_key: &PublicKey,
    team_id: &str,
    box_key: Option<&AgentBoxKey>,
) -> Result<Verified, Refusal> {
    let signature = STANDARD
        .decode(signed.signature.trim())
        .map_err(|_| Refusal::BadSignature)?;
    hub_key
        .verify(STATEMENT_CONTEXT, signed.statement.as_bytes(), &signature)
        .map_err(|_| Refusal::BadSignature)?;

    let statement: Statement = serde_json::from_str(&signed.statement)
        .map_err(|e| Refusal::BadStatement(e.to_string()))?;
    if statement.v != STATEMENT_VERSION {
        return Err(Refusal::UnknownVersion(statement.v));
    }
    check_id(&statement.id)?;
    if statement.team_id != team_id {
        return Err(Refusal::OtherTeam);
    }

    let content: Content =
        serde_json::from_str(&signed.content).map_err(|e| Refusal::BadContent(e.to_string()))?;
    if !content.flows.is_array() {
        // Node-RED's deploy API takes an array of nodes; anything else is
        // not a snapshot of flows, whatever its digest.
        return Err(Refusal::BadContent("the flows are not an array".into()));
    }
    if flows_sha256(&content.flows) != statement.flows_sha256 {
        return Err(Refusal::FlowsDigest);
    }

    let box_key = box_key.ok_or(Refusal::NoBoxKey)?;
    let sealed = STANDARD
        .decode(signed.credentials.trim())
        .map_err(|_| Refusal::NotForThisAgent)?;
    let opened = box_key
        .open(&sealed)
        .map_err(|_| Refusal::NotForThisAgent)?;
    let credentials = match serde_json::from_slice::<Value>(&opened) {
        Ok(Value::Object(map)) => Credentials(map),
        Ok(other) => {
            wipe(other);
            return Err(Refusal::BadCredentials);
        }
        Err(_) => return Err(Refusal::BadCredentials),
    };
    let digest = content_sha256(&content, credentials.as_map())
        .map_err(|e| Refusal::BadContent(e.to_string()))?;
    if digest != statement.content_sha256 {
        return Err(Refusal::ContentDigest);
    }
    Ok(Verified {
        statement,
        content,
        credentials,
    })
}

/// Ids are shown in answers and logs: printable, short, never empty.
fn check_id(id: &str) -> Result<(), Refusal> {
    let ok = !id.is_empty()
        && id.chars().count() <= MAX_ID_CHARS
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Refusal::BadStatement(
            "the snapshot id is not a plain id".into(),
        ))
    }
}

/// What the hub does when it sends a snapshot, for this crate's unit tests
/// (which alter the parts to make bad ones).
#[cfg(test)]
pub(crate) mod test_signing {
    use super::*;
    use redwall_crypto::agent_box::seal_for;
    use redwall_crypto::signing::HubSigningKey;

    /// Signs a snapshot of `content` and `credentials` for `team_id`, with
    /// the credentials sealed for the agent whose public box key is
    /// `agent_box_public`. What the hub does when it sends one.
    pub(crate) fn sign_snapshot(
        hub: &HubSigningKey,
        id: &str,
        team_id: &str,
        content: &Content,
        credentials: &Map<String, Value>,
        agent_box_public: &str,
    ) -> SignedSnapshot {
        let statement = statement_for(id, team_id, content, credentials);
        sign_statement(hub, &statement, content, credentials, agent_box_public)
    }

    /// The statement the hub would sign for this content.
    pub(crate) fn statement_for(
        id: &str,
        team_id: &str,
        content: &Content,
        credentials: &Map<String, Value>,
    ) -> Statement {
        Statement {
            v: STATEMENT_VERSION,
            id: id.to_owned(),
            team_id: team_id.to_owned(),
            instance_id: None,
            kind: "manual".into(),
            note: String::new(),
            created_by: None,
            created_at: 1_700_000_000_000_000,
            content_sha256: content_sha256(content, credentials).unwrap_or_default(),
            flows_sha256: flows_sha256(&content.flows),
        }
    }

    /// Signs `statement` as given (tests alter it to make bad ones).
    pub(crate) fn sign_statement(
        hub: &HubSigningKey,
        statement: &Statement,
        content: &Content,
        credentials: &Map<String, Value>,
        agent_box_public: &str,
    ) -> SignedSnapshot {
        let statement = statement.to_canonical().unwrap_or_default();
        let signature = hub.sign(STATEMENT_CONTEXT, statement.as_bytes());
        let creds = Value::Object(credentials.clone()).to_string();
        SignedSnapshot {
            statement,
            signature: STANDARD.encode(signature),
            content: content.to_canonical().unwrap_or_default(),
            credentials: STANDARD
                .encode(seal_for(agent_box_public, creds.as_bytes()).unwrap_or_default()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use redwall_crypto::agent_box::seal_for;
    use redwall_crypto::signing::HubSigningKey;
    use serde_json::json;
    use std::collections::BTreeMap;

    use super::test_signing::{sign_snapshot, sign_statement, statement_for};

    const TEAM: &str = "team_42";

    struct World {
        hub: HubSigningKey,
        agent: AgentBoxKey,
    }

    impl World {
        fn new() -> Self {
            Self {
                hub: HubSigningKey::generate(),
                agent: AgentBoxKey::generate(),
            }
        }

        fn check(&self, signed: &SignedSnapshot) -> Result<Verified, Refusal> {
            verify(signed, &self.hub.public_key(), TEAM, Some(&self.agent))
        }

        fn snapshot(&self, id: &str, text: &str) -> SignedSnapshot {
            sign_snapshot(
                &self.hub,
                id,
                TEAM,
                &content(text),
                &creds(text),
                &self.agent.public_base64(),
            )
        }
    }

    fn content(text: &str) -> Content {
        Content {
            flows: json!([
                {"id": "t1", "type": "tab", "label": "Flow"},
                {"id": "n1", "z": "t1", "type": "template", "template": text},
            ]),
            env_names: vec!["A".into()],
            options: json!({}),
            modules: BTreeMap::from([("node-red-contrib-x".into(), "1.2.3".into())]),
        }
    }

    fn creds(secret: &str) -> Map<String, Value> {
        json!({"n1": {"password": format!("pw-{secret}")}})
            .as_object()
            .unwrap()
            .clone()
    }

    #[test]
    fn a_good_snapshot_is_returned_in_the_clear() {
        let w = World::new();
        let v = w.check(&w.snapshot("s1", "hello")).unwrap();
        assert_eq!(v.statement.id, "s1");
        assert_eq!(v.statement.team_id, TEAM);
        assert_eq!(v.content, content("hello"));
        assert_eq!(v.credentials.as_map(), &creds("hello"));
        // Debug never shows a credential.
        assert!(!format!("{v:?}").contains("pw-hello"));
    }

    #[test]
    fn any_changed_byte_of_the_statement_is_refused() {
        let w = World::new();
        let good = w.snapshot("s1", "hello");
        for i in 0..good.statement.len() {
            let mut bytes = good.statement.clone().into_bytes();
            bytes[i] ^= 0x01;
            let Ok(statement) = String::from_utf8(bytes) else {
                continue;
            };
            let bad = SignedSnapshot {
                statement,
                ..good.clone()
            };
            assert_eq!(
                w.check(&bad).unwrap_err(),
                Refusal::BadSignature,
                "byte {i}"
            );
        }
    }

    #[test]
    fn a_signature_from_another_key_is_refused_whatever_the_message_claims() {
        let w = World::new();
        let other = HubSigningKey::generate();
        let forged = sign_snapshot(
            &other,
            "s1",
            TEAM,
            &content("evil"),
            &creds("evil"),
            &w.agent.public_base64(),
        );
        assert_eq!(w.check(&forged).unwrap_err(), Refusal::BadSignature);
        // A signature that is not even base64, or empty, or truncated.
        let good = w.snapshot("s1", "hello");
        for signature in ["", "!!!", &good.signature[..20]] {
            let bad = SignedSnapshot {
                signature: signature.into(),
                ..good.clone()
            };
            assert_eq!(w.check(&bad).unwrap_err(), Refusal::BadSignature);
        }
        // The same statement signed for another purpose (context) fails.
        let sig = w.hub.sign("redwall-other/v1", good.statement.as_bytes());
        let bad = SignedSnapshot {
            signature: STANDARD.encode(sig),
            ..good
        };
        assert_eq!(w.check(&bad).unwrap_err(), Refusal::BadSignature);
    }

    #[test]
    fn changed_content_is_refused() {
        let w = World::new();
        let good = w.snapshot("s1", "hello");
        // Other flows.
        let mut other = content("goodbye");
        let bad = SignedSnapshot {
            content: other.to_canonical().unwrap(),
            ..good.clone()
        };
        assert_eq!(w.check(&bad).unwrap_err(), Refusal::FlowsDigest);
        // Same flows, another module: only the content digest catches it.
        other = content("hello");
        other
            .modules
            .insert("node-red-contrib-evil".into(), "6.6.6".into());
        let bad = SignedSnapshot {
            content: other.to_canonical().unwrap(),
            ..good.clone()
        };
        assert_eq!(w.check(&bad).unwrap_err(), Refusal::ContentDigest);
        // Not content at all.
        for text in ["", "[]", "{}", "{\"flows\":{}}"] {
            let bad = SignedSnapshot {
                content: text.into(),
                ..good.clone()
            };
            assert!(
                matches!(w.check(&bad).unwrap_err(), Refusal::BadContent(_)),
                "{text}"
            );
        }
    }

    #[test]
    fn credentials_for_another_agent_or_from_another_snapshot_are_refused() {
        let w = World::new();
        let good = w.snapshot("s1", "hello");
        // Sealed for another agent (a good snapshot of that agent's).
        let elsewhere = AgentBoxKey::generate();
        let theirs = sign_snapshot(
            &w.hub,
            "s1",
            TEAM,
            &content("hello"),
            &creds("hello"),
            &elsewhere.public_base64(),
        );
        let bad = SignedSnapshot {
            credentials: theirs.credentials,
            ..good.clone()
        };
        assert_eq!(w.check(&bad).unwrap_err(), Refusal::NotForThisAgent);
        // Sealed for this agent, but another snapshot's.
        let other = w.snapshot("s2", "other");
        let bad = SignedSnapshot {
            credentials: other.credentials,
            ..good.clone()
        };
        assert_eq!(w.check(&bad).unwrap_err(), Refusal::ContentDigest);
        // Tampered box, not base64, empty.
        let mut sealed = STANDARD.decode(&good.credentials).unwrap();
        sealed[60] ^= 1;
        for credentials in [STANDARD.encode(&sealed), "%%".into(), String::new()] {
            let bad = SignedSnapshot {
                credentials,
                ..good.clone()
            };
            assert_eq!(w.check(&bad).unwrap_err(), Refusal::NotForThisAgent);
        }
        // Opens, but is not an object of credentials.
        for plain in ["[]", "\"x\"", "not json"] {
            let sealed = seal_for(&w.agent.public_base64(), plain.as_bytes()).unwrap();
            let bad = SignedSnapshot {
                credentials: STANDARD.encode(sealed),
                ..good.clone()
            };
            assert_eq!(
                w.check(&bad).unwrap_err(),
                Refusal::BadCredentials,
                "{plain}"
            );
        }
        // An agent without a box key opens nothing.
        assert_eq!(
            verify(&good, &w.hub.public_key(), TEAM, None).unwrap_err(),
            Refusal::NoBoxKey
        );
    }

    #[test]
    fn another_teams_snapshot_is_refused() {
        let w = World::new();
        let theirs = sign_snapshot(
            &w.hub,
            "s1",
            "team_other",
            &content("hello"),
            &creds("hello"),
            &w.agent.public_base64(),
        );
        assert_eq!(w.check(&theirs).unwrap_err(), Refusal::OtherTeam);
    }

    #[test]
    fn statements_of_another_version_or_shape_are_refused() {
        let w = World::new();
        let (c, k) = (content("hello"), creds("hello"));
        let public = w.agent.public_base64();
        let mut statement = statement_for("s1", TEAM, &c, &k);
        statement.v = 2;
        let bad = sign_statement(&w.hub, &statement, &c, &k, &public);
        assert_eq!(w.check(&bad).unwrap_err(), Refusal::UnknownVersion(2));
        for id in ["", "a/b", "x\u{1b}[31m", &"a".repeat(129)] {
            let statement = statement_for(id, TEAM, &c, &k);
            let bad = sign_statement(&w.hub, &statement, &c, &k, &public);
            assert!(
                matches!(w.check(&bad).unwrap_err(), Refusal::BadStatement(_)),
                "{id:?}"
            );
        }
        // Signed, but not a statement.
        let text = "{\"hello\":1}";
        let bad = SignedSnapshot {
            statement: text.into(),
            signature: STANDARD.encode(w.hub.sign(STATEMENT_CONTEXT, text.as_bytes())),
            ..w.snapshot("s1", "hello")
        };
        assert!(matches!(
            w.check(&bad).unwrap_err(),
            Refusal::BadStatement(_)
        ));
        // A signed statement whose digests are wrong.
        let mut statement = statement_for("s1", TEAM, &c, &k);
        statement.content_sha256 = "00".repeat(32);
        let bad = sign_statement(&w.hub, &statement, &c, &k, &public);
        assert_eq!(w.check(&bad).unwrap_err(), Refusal::ContentDigest);
    }
}

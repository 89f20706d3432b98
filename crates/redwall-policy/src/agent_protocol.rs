//! The remote agent's protocol with the hub, and the rules both ends share:
//! what is sent, what is signed, when an agent counts as online, and how
//! long it waits before dialling again.
//!
//! The agent only dials out. It enrols once over HTTPS with a one-time
//! provisioning token and a public key it generated itself, then keeps one
//! WebSocket open to the hub's HTTPS port ([`CONNECT_PATH`]). On that
//! connection the hub speaks first with a random challenge; the agent
//! answers with its id and an Ed25519 signature over [`hello_message`]
//! (context [`HELLO_CONTEXT`]), so no bearer secret ever sits on the
//! agent's disk and a recorded answer is worth nothing on another
//! connection. Then: heartbeats from the agent, commands from the hub, and
//! the answers to those commands. Every message is one JSON text frame.
//!
//! Binary frames carry the tunnel: their bytes, in order, are one yamux
//! session (the hub opens the streams, the agent accepts them), each stream
//! one HTTP/1.1 connection from the hub's proxy to the agent's Node-RED.
//! So the editor, its WebSockets and the flows' endpoints reach a site
//! that only dials out, over the same connection as the commands, after
//! the hub's own checks; see [`HubMessage::Host`].

use serde::{Deserialize, Serialize};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

pub use crate::site_events::{SiteEvent, SiteReport, SiteStream};
use crate::{Micros, RuleError, MICROS_PER_SECOND};

/// The version of this protocol; an agent says which it speaks in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Where an agent enrols: `POST` an [`EnrolRequest`], no session.
pub const ENROL_PATH: &str = "/api/v1/agent/enrol";
/// Where an agent connects: a WebSocket upgrade, no session.
pub const CONNECT_PATH: &str = "/api/v1/agent/connect";

/// Signature context of the agent's answer to the hub's challenge.
pub const HELLO_CONTEXT: &str = "redwall-agent-hello/v1";

/// The hub's challenge: 32 random bytes, base64url without padding.
pub const NONCE_CHARS: usize = 43;

/// Largest frame either end accepts, in bytes, except a [`HubMessage::Deploy`].
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;

/// Largest frame an agent accepts from the hub: a snapshot to run, whose
/// flows may be far larger than any other message.
pub const MAX_DEPLOY_FRAME_BYTES: usize = 48 * 1024 * 1024;

/// Seconds the hub waits for `hello` after its challenge before it hangs up.
pub const HELLO_TIMEOUT_SECS: u64 = 10;

/// Heartbeat interval when the operator sets none.
pub const DEFAULT_HEARTBEAT_SECS: u64 = 15;
/// The shortest and longest heartbeat an operator may set.
pub const HEARTBEAT_SECS_RANGE: std::ops::RangeInclusive<u64> = 1..=300;

/// WebSocket close codes the hub uses (4000-4999 are the application's).
pub mod close {
    /// The agent was revoked (or deleted): it must not dial again.
    pub const REVOKED: u16 = 4001;
    /// The hub cannot take the agent now (it dials again faster than its
    /// pace, or the hub's database falters): it dials again later
    /// (WebSocket's own "try again later").
    pub const DIAL_LATER: u16 = 1013;
    /// A newer connection of the same agent took over.
    pub const REPLACED: u16 = 4002;
    /// The challenge was not answered correctly, or not in time.
    pub const UNAUTHENTICATED: u16 = 4003;
    /// A frame the hub could not read (too large, not JSON, unexpected).
    pub const PROTOCOL: u16 = 4004;
    /// The answer to the challenge came too late (a slow link): dial again.
    pub const TOO_SLOW: u16 = 4005;
}

/// Platforms an agent is built for.
pub const PLATFORMS: [&str; 2] = ["linux-x86_64", "linux-aarch64"];

/// What an agent sends to enrol. `Debug` hides the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrolRequest {
    /// The one-time provisioning token (`rwe_...`).
    pub provisioning_token: String,
    /// The agent's name in its team: 2 to 40 of a-z, 0-9 and '-'.
    pub name: String,
    /// The agent's Ed25519 public key, standard base64 (32 bytes).
    pub public_key: String,
    /// The agent's X25519 public key, standard base64 (32 bytes): the hub
    /// seals snapshots' credentials for it. A key of its own, apart from
    /// the signing key, so no key serves two purposes.
    pub encryption_key: String,
    /// One of [`PLATFORMS`].
    pub platform: String,
    /// The agent's own version, for the hub's list (at most 40 characters).
    pub version: String,
}

/// The hub's answer to a successful enrolment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrolAnswer {
    pub agent_id: String,
    pub team_id: String,
    pub name: String,
    /// The hub's snapshot-signing public key (standard base64), which the
    /// agent keeps to check everything the hub sends it to run.
    pub hub_signing_key: String,
}

/// What an operator hands to a new agent: where the hub is, how to know
/// its certificate, and the one-time token. Given to the agent as the
/// string [`ProvisioningBundle::encode`] makes. `Debug` hides the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProvisioningBundle {
    /// The hub's base URL, `https://host:port`.
    pub hub_url: String,
    /// SHA-256 of the hub's TLS certificate (DER), lowercase hex: the
    /// agent accepts exactly that certificate. Set for a self-signed hub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
    /// A CA certificate (PEM) the hub's certificate must chain to, when
    /// no fingerprint is pinned; neither means the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    pub provisioning_token: String,
}

impl std::fmt::Debug for EnrolRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrolRequest")
            .field("provisioning_token", &"[redacted]")
            .field("name", &self.name)
            .field("public_key", &self.public_key)
            .field("encryption_key", &self.encryption_key)
            .field("platform", &self.platform)
            .field("version", &self.version)
            .finish()
    }
}

impl std::fmt::Debug for ProvisioningBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvisioningBundle")
            .field("hub_url", &self.hub_url)
            .field("cert_sha256", &self.cert_sha256)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "[pem]"))
            .field("provisioning_token", &"[redacted]")
            .finish()
    }
}

/// Prefix of an encoded bundle, so it is recognisable when pasted.
pub const BUNDLE_PREFIX: &str = "rwbundle1.";

/// Largest encoded bundle accepted (a CA certificate fits well within).
pub const MAX_BUNDLE_CHARS: usize = 64 * 1024;

impl ProvisioningBundle {
    /// The bundle as one line to paste: [`BUNDLE_PREFIX`], then its JSON
    /// in base64url without padding.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!("{BUNDLE_PREFIX}{}", URL_SAFE_NO_PAD.encode(json))
    }

    /// Reads a line made by [`ProvisioningBundle::encode`].
    pub fn decode(line: &str) -> Result<Self, RuleError> {
        let bad = || {
            crate::refused(
                "invalid_bundle",
                format!("a provisioning bundle is one line starting with {BUNDLE_PREFIX}, as `redwall agent provision` prints it"),
            )
        };
        let line = line.trim();
        if line.len() > MAX_BUNDLE_CHARS {
            return Err(bad());
        }
        let body = line.strip_prefix(BUNDLE_PREFIX).ok_or_else(bad)?;
        let json = URL_SAFE_NO_PAD.decode(body).map_err(|_| bad())?;
        let bundle: Self = serde_json::from_slice(&json).map_err(|_| bad())?;
        if !bundle.hub_url.starts_with("https://") {
            return Err(crate::refused(
                "invalid_bundle",
                "the bundle's hub URL must start with https://",
            ));
        }
        if let Some(pin) = &bundle.cert_sha256 {
            if pin.len() != 64
                || !pin
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(crate::refused(
                    "invalid_bundle",
                    "the bundle's certificate fingerprint must be 64 lowercase hex digits",
                ));
            }
        }
        Ok(bundle)
    }
}

/// Messages from the hub to an agent. Fields a newer hub adds are ignored
/// by older agents (what the hub reads is strict instead).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HubMessage {
    /// First frame of every connection.
    Challenge { nonce: String },
    /// The answer to a good `hello`: the agent is connected.
    Welcome {
        agent_id: String,
        heartbeat_secs: u64,
    },
    /// Something to do; the agent answers with [`AgentMessage::CommandDone`].
    Command { id: String, command: AgentCommand },
    /// Run this snapshot (what an [`AgentCommand::Deploy`] becomes on the
    /// wire); the agent answers with [`AgentMessage::CommandDone`] once it
    /// runs it, or has refused it or rolled back.
    Deploy {
        id: String,
        snapshot: Box<SignedSnapshot>,
    },
    /// Replace the agent's own binary with this build (what an
    /// [`AgentCommand::Update`] becomes on the wire). The agent answers
    /// with [`AgentMessage::CommandDone`] once the new build has connected
    /// (ok), or after refusing it or rolling back to the build it ran
    /// (not ok), in which case the answer comes from that build.
    /// The instance the agent's Node-RED is (sent after `welcome`, and
    /// again whenever it changes), or `None` when it is none. The agent's
    /// Node-RED then accepts the hub's editor and endpoint tokens for that
    /// instance, which the hub mints for tunnelled requests it admitted.
    Host { instance: Option<HostedInstance> },
    Update {
        id: String,
        build: Box<SignedBuild>,
        /// The new build must connect to the hub within this many seconds
        /// of starting, or the agent goes back to the build it ran.
        confirm_within_secs: u64,
    },
    /// The answer to [`AgentMessage::SiteEvents`]: the hub has stored the
    /// stream's events of that journal through `through`; the agent may
    /// forget them.
    SiteEventsStored {
        stream: SiteStream,
        epoch: String,
        through: u64,
    },
}

/// An instance of the hub whose Node-RED an agent runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostedInstance {
    pub id: String,
    pub name: String,
    /// [`HostedKeys`] as JSON, sealed for the agent's X25519 key
    /// (libsodium's sealed box), standard base64.
    pub keys: String,
    /// The instance's ordered route rules, for the endpoints the agent may
    /// serve on its own network (the same rules the hub's proxy applies).
    #[serde(default)]
    pub rules: Vec<crate::route_policy::RouteRule>,
    /// The instance's API keys that are not revoked, as digests only.
    #[serde(default)]
    pub api_keys: Vec<HostedApiKey>,
}

/// One API key of a [`HostedInstance`]: never the key, only its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostedApiKey {
    pub id: String,
    /// SHA-256 of the key as the client sends it, lowercase hex.
    pub sha256: String,
    /// The key only opens paths under this prefix.
    pub path_prefix: Option<String>,
    /// Unix seconds after which the key is refused.
    pub expires_at: Option<i64>,
}

/// The token keys of a [`HostedInstance`], as sealed for the agent.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostedKeys {
    /// The instance the keys are for: what was sealed must name the
    /// instance it arrived with.
    pub instance_id: String,
    pub editor: String,
    pub endpoint: String,
}

impl std::fmt::Debug for HostedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostedKeys")
            .field("instance_id", &self.instance_id)
            .finish_non_exhaustive()
    }
}

/// Signature context of an agent build's statement.
pub const BUILD_CONTEXT: &str = "redwall-agent-build/v1";

/// Seconds a new agent build has to connect before the agent rolls back,
/// unless the hub says otherwise.
pub const DEFAULT_UPDATE_CONFIRM_SECS: u64 = 60;

/// Largest agent build the hub stores and sends (base64 in one frame must
/// stay under [`MAX_DEPLOY_FRAME_BYTES`]).
pub const MAX_BUILD_BYTES: u64 = 32 * 1024 * 1024;

/// What the hub signs about an agent build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildStatement {
    pub v: u32,
    pub id: String,
    /// The version the uploader named (at most 40 printable characters).
    pub version: String,
    /// One of [`PLATFORMS`].
    pub platform: String,
    /// SHA-256 of the binary, lowercase hex.
    pub sha256: String,
    pub size: u64,
    pub created_at: i64,
}

/// An agent build as the hub sends it. The agent trusts none of it until
/// the signature over `statement` (context [`BUILD_CONTEXT`]) checks with
/// the hub key it got at enrolment, the statement names its own platform,
/// and the binary's size and SHA-256 are the statement's.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedBuild {
    /// The statement's canonical JSON, exactly as signed.
    pub statement: String,
    /// Ed25519 signature over the statement, standard base64.
    pub signature: String,
    /// The binary, standard base64.
    pub binary: String,
}

impl std::fmt::Debug for SignedBuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedBuild")
            .field("statement", &self.statement)
            .field("binary_chars", &self.binary.len())
            .finish()
    }
}

/// A snapshot as the hub sends it to one agent. The agent trusts none of
/// it until it has checked, with the hub key it got at enrolment, the
/// signature over `statement` (context
/// [`crate::snapshot_format::STATEMENT_CONTEXT`]), that the statement names
/// its own team, and that `content` and the opened credentials hash to the
/// statement's digests.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedSnapshot {
    /// The statement's canonical JSON, exactly as signed.
    pub statement: String,
    /// Ed25519 signature over the statement, standard base64.
    pub signature: String,
    /// The snapshot's content (flows, modules, ...), canonical JSON.
    pub content: String,
    /// The credentials (JSON object, node id -> credentials), sealed for
    /// this agent's encryption key, standard base64.
    pub credentials: String,
}

impl std::fmt::Debug for SignedSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedSnapshot")
            .field("statement", &self.statement)
            .field("content_bytes", &self.content.len())
            .field("credentials", &"[sealed]")
            .finish()
    }
}

/// What the hub asks an agent to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AgentCommand {
    /// Answer at once (checks the path from any hub to the agent).
    Ping,
    /// Restart the agent's Node-RED.
    Restart,
    /// Run the team's snapshot. Stored as asked; the hub holding the
    /// agent's connection sends it as a [`HubMessage::Deploy`] carrying the
    /// signed snapshot with credentials sealed for that agent.
    Deploy { snapshot_id: String },
    /// Replace the agent's binary with this build (signed by the hub);
    /// sent as a [`HubMessage::Update`].
    Update { build_id: String },
}

impl AgentCommand {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ping => "ping",
            Self::Restart => "restart",
            Self::Deploy { .. } => "deploy",
            Self::Update { .. } => "update",
        }
    }
}

/// Messages from an agent to the hub.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentMessage {
    /// The answer to the challenge; must be the first frame.
    Hello {
        agent_id: String,
        /// Ed25519 over [`hello_message`], context [`HELLO_CONTEXT`],
        /// standard base64.
        signature: String,
        protocol: u32,
        version: String,
        /// SHA-256 of the agent's own executable, lowercase hex: which
        /// build runs (an update is confirmed by it).
        #[serde(default)]
        build_sha256: Option<String>,
    },
    Heartbeat {
        status: AgentStatus,
    },
    CommandDone {
        id: String,
        ok: bool,
        #[serde(default)]
        message: String,
    },
    /// Log lines or audit events the agent kept in its journal (while the
    /// link was down, or since its last batch), oldest first; answered by
    /// [`HubMessage::SiteEventsStored`].
    SiteEvents {
        stream: SiteStream,
        /// The journal's epoch (see [`crate::site_events::SiteBatch`]).
        epoch: String,
        events: Vec<SiteEvent>,
    },
}

/// What an agent reports with each heartbeat.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentStatus {
    /// Node-RED's state on the agent: "running", "stopped", "starting",
    /// "failed" or "none" (the agent runs no Node-RED yet).
    pub node_red: String,
    /// The snapshot the agent runs, if any.
    #[serde(default)]
    pub running_snapshot: Option<String>,
    /// Its MQTT store-and-forward and its journals, when it has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<SiteReport>,
}

/// The bytes an agent signs to answer a challenge: the agent's id and the
/// hub's nonce, so the answer is good for this agent on this connection
/// only.
pub fn hello_message(agent_id: &str, nonce: &str) -> Vec<u8> {
    // A JSON array: unambiguous whatever the two strings hold.
    serde_json::to_vec(&[agent_id, nonce]).unwrap_or_default()
}

/// An agent's name: the same rule as an instance's.
pub fn check_agent_name(name: &str) -> Result<(), RuleError> {
    crate::instance_rules::instance_name(name).map_err(|_| {
        crate::refused(
            "invalid_agent_name",
            "an agent's name is 2 to 40 characters of a-z, 0-9 and '-', starting with a letter and not ending with '-'",
        )
    })
}

/// An agent group's name (a token's agents join it): the same rule.
pub fn check_agent_group(name: &str) -> Result<(), RuleError> {
    crate::instance_rules::instance_name(name).map_err(|_| {
        crate::refused(
            "invalid_agent_group",
            "a group's name is 2 to 40 characters of a-z, 0-9 and '-', starting with a letter and not ending with '-'",
        )
    })
}

/// Hours a provisioning token stays usable when none are asked for.
pub const DEFAULT_TOKEN_HOURS: u32 = 24;
/// The longest a provisioning token may stay usable: a week.
pub const MAX_TOKEN_HOURS: u32 = 168;

/// A provisioning token's lifetime in hours: 1 to a week, a day by default.
pub fn token_hours(asked: Option<u32>) -> Result<u32, RuleError> {
    match asked {
        None => Ok(DEFAULT_TOKEN_HOURS),
        Some(h) if (1..=MAX_TOKEN_HOURS).contains(&h) => Ok(h),
        Some(_) => Err(crate::refused(
            "invalid_expiry",
            format!("a provisioning token lasts 1 to {MAX_TOKEN_HOURS} hours"),
        )),
    }
}

/// The platform an agent names.
pub fn check_platform(platform: &str) -> Result<(), RuleError> {
    if PLATFORMS.contains(&platform) {
        Ok(())
    } else {
        Err(crate::refused(
            "invalid_platform",
            format!("the platform must be one of {}", PLATFORMS.join(", ")),
        ))
    }
}

/// An agent's version string: 1 to 40 printable ASCII characters.
pub fn check_version(version: &str) -> Result<(), RuleError> {
    if (1..=40).contains(&version.len()) && version.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(crate::refused(
            "invalid_version",
            "the version is 1 to 40 printable ASCII characters without spaces",
        ))
    }
}

/// A heartbeat interval an operator set.
pub fn check_heartbeat_secs(secs: u64) -> Result<(), RuleError> {
    if HEARTBEAT_SECS_RANGE.contains(&secs) {
        Ok(())
    } else {
        Err(crate::refused(
            "invalid_heartbeat",
            format!(
                "the heartbeat interval is {} to {} seconds",
                HEARTBEAT_SECS_RANGE.start(),
                HEARTBEAT_SECS_RANGE.end()
            ),
        ))
    }
}

/// Whether an agent last heard from at `last_seen` counts as online at
/// `now`: within two heartbeat intervals (one missed heartbeat is
/// tolerated, two are not). An agent that said goodbye (`disconnected`
/// after its last heartbeat) is offline at once.
pub fn is_online(
    last_seen: Option<Micros>,
    disconnected: Option<Micros>,
    now: Micros,
    heartbeat_secs: u64,
) -> bool {
    let Some(seen) = last_seen else {
        return false;
    };
    if disconnected.is_some_and(|d| d >= seen) {
        return false;
    }
    let window = i64::try_from(heartbeat_secs.saturating_mul(2))
        .unwrap_or(i64::MAX)
        .saturating_mul(MICROS_PER_SECOND);
    now >= seen && now.checked_sub(seen).is_some_and(|d| d <= window)
}

/// How long to wait before dial attempt `attempt` (0 for the first retry):
/// exponential from `base_ms`, capped at `max_ms`, then "equal jitter":
/// half of it fixed, half scaled by `jitter` (in [0, 1), from the caller's
/// RNG). A thousand agents cut off at once thus come back spread out, and
/// none waits longer than `max_ms`.
pub fn reconnect_delay_ms(attempt: u32, base_ms: u64, max_ms: u64, jitter: f64) -> u64 {
    let exp = base_ms.saturating_mul(1u64.checked_shl(attempt.min(32)).unwrap_or(u64::MAX));
    let capped = exp.min(max_ms);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let half = capped / 2;
    // Precision: capped is at most max_ms, far below 2^53.
    half + ((capped - half) as f64 * jitter) as u64
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn messages_read_back_and_refuse_unknown_fields() {
        let m = HubMessage::Command {
            id: "c1".into(),
            command: AgentCommand::Restart,
        };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(
            text,
            r#"{"type":"command","id":"c1","command":{"kind":"restart"}}"#
        );
        assert_eq!(serde_json::from_str::<HubMessage>(&text).unwrap(), m);
        let hello =
            r#"{"type":"hello","agent_id":"a","signature":"s","protocol":1,"version":"0.1.0"}"#;
        assert!(matches!(
            serde_json::from_str::<AgentMessage>(hello).unwrap(),
            AgentMessage::Hello { .. }
        ));
        let extra = r#"{"type":"hello","agent_id":"a","signature":"s","protocol":1,"version":"0.1.0","admin":true}"#;
        assert!(serde_json::from_str::<AgentMessage>(extra).is_err());
        assert!(serde_json::from_str::<AgentMessage>(r#"{"type":"welcome"}"#).is_err());
        let deploy = HubMessage::Deploy {
            id: "c2".into(),
            snapshot: Box::new(SignedSnapshot {
                statement: "{}".into(),
                signature: "sig".into(),
                content: "{}".into(),
                credentials: "sealed-creds".into(),
            }),
        };
        let text = serde_json::to_string(&deploy).unwrap();
        assert!(text.starts_with(r#"{"type":"deploy","id":"c2","snapshot":{"#));
        assert_eq!(serde_json::from_str::<HubMessage>(&text).unwrap(), deploy);
        assert!(!format!("{deploy:?}").contains("sealed-creds"));
        assert_eq!(
            serde_json::to_string(&AgentCommand::Deploy {
                snapshot_id: "s1".into()
            })
            .unwrap(),
            r#"{"kind":"deploy","snapshot_id":"s1"}"#
        );
        let beat = r#"{"type":"heartbeat","status":{"node_red":"none"}}"#;
        assert_eq!(
            serde_json::from_str::<AgentMessage>(beat).unwrap(),
            AgentMessage::Heartbeat {
                status: AgentStatus {
                    node_red: "none".into(),
                    running_snapshot: None,
                    site: None,
                }
            }
        );
    }

    #[test]
    fn bundles_round_trip_and_refuse_what_is_not_one() {
        let b = ProvisioningBundle {
            hub_url: "https://hub.example:8443".into(),
            cert_sha256: Some("ab".repeat(32)),
            ca_pem: None,
            provisioning_token: "rwe_x".into(),
        };
        let line = b.encode();
        assert!(line.starts_with(BUNDLE_PREFIX));
        assert_eq!(
            ProvisioningBundle::decode(&format!(" {line}\n")).unwrap(),
            b
        );
        for bad in [
            "",
            "rwbundle1.",
            "rwbundle1.!!",
            &line[1..],
            "rwbundle1.e30",
        ] {
            assert_eq!(
                ProvisioningBundle::decode(bad).unwrap_err().code,
                "invalid_bundle",
                "{bad}"
            );
        }
        let plain = ProvisioningBundle {
            hub_url: "http://hub".into(),
            ..b.clone()
        };
        assert!(ProvisioningBundle::decode(&plain.encode()).is_err());
        let short_pin = ProvisioningBundle {
            cert_sha256: Some("AB".repeat(32)),
            ..b
        };
        assert!(ProvisioningBundle::decode(&short_pin.encode()).is_err());
    }

    #[test]
    fn debug_never_shows_the_token() {
        let b = ProvisioningBundle {
            hub_url: "https://h".into(),
            cert_sha256: None,
            ca_pem: None,
            provisioning_token: "rwe_secret".into(),
        };
        assert!(!format!("{b:?}").contains("rwe_secret"));
        let r = EnrolRequest {
            provisioning_token: "rwe_secret".into(),
            name: "a".into(),
            public_key: "k".into(),
            encryption_key: "e".into(),
            platform: "p".into(),
            version: "v".into(),
        };
        assert!(!format!("{r:?}").contains("rwe_secret"));
    }

    #[test]
    fn the_signed_hello_binds_agent_and_nonce() {
        assert_eq!(hello_message("a1", "n1"), br#"["a1","n1"]"#);
        assert_ne!(hello_message("a1", "n1"), hello_message("a1", "n2"));
        assert_ne!(hello_message("a1\nn", "1"), hello_message("a1", "n\n1"));
    }

    #[test]
    fn names_platforms_versions_and_heartbeats() {
        assert!(check_agent_name("plant-7").is_ok());
        for bad in ["", "a", "Plant", "-a", "a-", "a_b", &"a".repeat(41)] {
            assert_eq!(
                check_agent_name(bad).unwrap_err().code,
                "invalid_agent_name"
            );
        }
        assert!(check_agent_group("plant-floor").is_ok());
        assert_eq!(
            check_agent_group("Plant").unwrap_err().code,
            "invalid_agent_group"
        );
        assert_eq!(token_hours(None).unwrap(), 24);
        assert_eq!(token_hours(Some(1)).unwrap(), 1);
        assert_eq!(token_hours(Some(168)).unwrap(), 168);
        assert!(token_hours(Some(0)).is_err());
        assert!(token_hours(Some(169)).is_err());
        assert!(check_platform("linux-x86_64").is_ok());
        assert!(check_platform("linux-aarch64").is_ok());
        assert!(check_platform("windows").is_err());
        assert!(check_version("0.1.0").is_ok());
        assert!(check_version("").is_err());
        assert!(check_version("1 2").is_err());
        assert!(check_version(&"1".repeat(41)).is_err());
        assert!(check_heartbeat_secs(0).is_err());
        assert!(check_heartbeat_secs(1).is_ok());
        assert!(check_heartbeat_secs(300).is_ok());
        assert!(check_heartbeat_secs(301).is_err());
    }

    #[test]
    fn online_means_heard_from_within_two_heartbeats() {
        let s = MICROS_PER_SECOND;
        assert!(!is_online(None, None, 100 * s, 10));
        assert!(is_online(Some(100 * s), None, 100 * s, 10));
        assert!(is_online(Some(100 * s), None, 120 * s, 10));
        assert!(!is_online(Some(100 * s), None, 120 * s + 1, 10));
        // A goodbye after the last heartbeat: offline at once.
        assert!(!is_online(Some(100 * s), Some(101 * s), 101 * s, 10));
        // A heartbeat after an earlier goodbye: online again.
        assert!(is_online(Some(102 * s), Some(101 * s), 103 * s, 10));
        // A clock that went back never counts as online.
        assert!(!is_online(Some(100 * s), None, 99 * s, 10));
        assert!(!is_online(Some(0), None, i64::MAX, 10));
        assert!(!is_online(Some(i64::MIN), None, i64::MAX, 10));
    }

    #[test]
    fn reconnect_delays_grow_are_capped_and_spread() {
        assert_eq!(reconnect_delay_ms(0, 500, 30_000, 0.0), 250);
        assert_eq!(reconnect_delay_ms(0, 500, 30_000, 1.0), 500);
        assert_eq!(reconnect_delay_ms(3, 500, 30_000, 0.0), 2_000);
        assert_eq!(reconnect_delay_ms(20, 500, 30_000, 0.0), 15_000);
        assert_eq!(reconnect_delay_ms(u32::MAX, 500, 30_000, 1.0), 30_000);
        assert_eq!(reconnect_delay_ms(2, 500, 30_000, f64::NAN), 1_000);
    }

    proptest! {
        #[test]
        fn a_delay_is_between_half_the_step_and_the_cap(attempt in 0u32..100, jitter in 0.0f64..1.0) {
            let d = reconnect_delay_ms(attempt, 500, 30_000, jitter);
            let step = 500u64.saturating_mul(1u64.checked_shl(attempt.min(32)).unwrap_or(u64::MAX)).min(30_000);
            prop_assert!(d >= step / 2 && d <= step && d <= 30_000);
        }
    }
}

//! Which hub instance the agent's Node-RED is.
//!
//! An Owner may make an agent's Node-RED an instance of the hub (one per
//! agent). The hub then sends, on every connection, that instance's id and
//! its editor and endpoint token keys, sealed for the agent's X25519 key
//! ([`HostedInstance`]). With them Node-RED accepts the tokens the hub
//! mints for the requests it admitted and sends through the tunnel (the
//! editor, its sockets, the flows' endpoints), and nothing else. The
//! credential key stays the agent's own: it seals `flows_cred.json` on
//! this disk.
//!
//! Kept in `DIR/node-red.hosted` (0600), so Node-RED starts as that
//! instance even while the hub cannot be reached.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use redwall_crypto::agent_box::AgentBoxKey;
use redwall_crypto::Secret;
use redwall_policy::agent_protocol::{HostedApiKey, HostedInstance, HostedKeys};
use redwall_policy::route_policy::RouteRule;
use redwall_runtime::InstanceSpec;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::state::{write_private_atomically, NOT_PRIVATE};

/// The hosted instance's id and keys, in the state directory.
pub const HOSTED_FILE: &str = "node-red.hosted";

/// The hub instance the agent's Node-RED is.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostedIdentity {
    pub instance_id: String,
    pub name: String,
    editor: String,
    endpoint: String,
    /// The instance's route rules and API key digests, for the endpoints
    /// served on the site's own network (`local_endpoints`), kept so they
    /// apply while the hub cannot be reached.
    #[serde(default)]
    pub rules: Vec<RouteRule>,
    #[serde(default)]
    pub api_keys: Vec<HostedApiKey>,
}

impl std::fmt::Debug for HostedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostedIdentity")
            .field("instance_id", &self.instance_id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Drop for HostedIdentity {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.editor.zeroize();
        self.endpoint.zeroize();
    }
}

/// An instance id the agent accepts: it names Node-RED's pidfile.
fn plausible_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl HostedIdentity {
    /// Opens what the hub sent: the keys must open with this agent's key
    /// and name the instance they came with.
    pub fn open(hosted: &HostedInstance, box_key: &AgentBoxKey) -> Result<Self, String> {
        let sealed = STANDARD
            .decode(&hosted.keys)
            .map_err(|_| "the instance's keys are not base64".to_owned())?;
        let plain = box_key
            .open(&sealed)
            .map_err(|_| "the instance's keys do not open with this agent's key".to_owned())?;
        let keys: HostedKeys = serde_json::from_slice(&plain)
            .map_err(|_| "the instance's keys are not readable".to_owned())?;
        if keys.instance_id != hosted.id {
            return Err("the instance's keys name another instance".to_owned());
        }
        redwall_policy::route_policy::validate_rules(&hosted.rules)
            .map_err(|e| format!("the instance's route rules: {e}"))?;
        let identity = Self {
            instance_id: keys.instance_id.clone(),
            name: hosted.name.chars().take(64).collect(),
            editor: keys.editor.clone(),
            endpoint: keys.endpoint.clone(),
            rules: hosted.rules.clone(),
            api_keys: hosted.api_keys.clone(),
        };
        identity.check()?;
        Ok(identity)
    }

    fn check(&self) -> Result<(), String> {
        if !plausible_id(&self.instance_id) {
            return Err("the instance id is not one the agent accepts".to_owned());
        }
        if self.editor.len() < 32 || self.endpoint.len() < 32 {
            return Err("a key is shorter than 32 characters".to_owned());
        }
        Ok(())
    }

    /// The key of the endpoint tokens Node-RED accepts.
    pub fn endpoint_key(&self) -> Secret {
        Secret::new(self.endpoint.clone())
    }

    /// What the site's own endpoints judge by (`local_endpoints`).
    pub fn site_access(&self) -> Option<std::sync::Arc<crate::local_endpoints::SiteAccess>> {
        match crate::local_endpoints::SiteAccess::new(
            self.instance_id.clone(),
            self.rules.clone(),
            self.api_keys.clone(),
            self.endpoint_key(),
        ) {
            Ok(access) => Some(std::sync::Arc::new(access)),
            Err(e) => {
                tracing::warn!("the site's endpoints keep refusing: {e}");
                None
            }
        }
    }

    /// Whether `other` is the same instance with the same token keys (so
    /// Node-RED need not restart for it).
    pub fn same_keys(&self, other: &Self) -> bool {
        self.instance_id == other.instance_id
            && self.editor == other.editor
            && self.endpoint == other.endpoint
    }

    /// Makes `spec` this instance: its id (the tokens' audience) and its
    /// token keys.
    pub fn apply_to(&self, spec: &mut InstanceSpec) {
        spec.id = self.instance_id.clone();
        spec.editor_secret = Secret::new(self.editor.clone());
        spec.endpoint_secret = Secret::new(self.endpoint.clone());
    }

    /// What `dir` holds: `None` when the agent hosts nothing.
    pub fn load(dir: &Path) -> Result<Option<Self>, String> {
        use std::io::Read as _;
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join(HOSTED_FILE);
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let meta = file.metadata().map_err(|e| e.to_string())?;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & NOT_PRIVATE != 0 {
            return Err(format!(
                "can be read by other users (mode {mode:04o}); fix it with chmod 600"
            ));
        }
        if !meta.is_file() || meta.len() > 4096 {
            return Err("not a small regular file".to_owned());
        }
        let mut text = Zeroizing::new(String::new());
        file.read_to_string(&mut text).map_err(|e| e.to_string())?;
        let identity: Self = serde_json::from_str(&text).map_err(|e| format!("unreadable: {e}"))?;
        identity.check()?;
        Ok(Some(identity))
    }

    /// Keeps `hosted` in `dir` (written whole, 0600), or removes the file.
    pub fn store(dir: &Path, hosted: Option<&Self>) -> Result<(), String> {
        match hosted {
            Some(h) => {
                let json = Zeroizing::new(serde_json::to_vec(h).map_err(|e| e.to_string())?);
                write_private_atomically(dir, HOSTED_FILE, &json)
                    .map_err(|e| format!("cannot keep the hosted instance: {e}"))
            }
            None => match std::fs::remove_file(dir.join(HOSTED_FILE)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("cannot forget the hosted instance: {e}")),
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn sealed_for(key: &AgentBoxKey, keys: &HostedKeys) -> String {
        let plain = serde_json::to_vec(keys).unwrap();
        STANDARD.encode(redwall_crypto::agent_box::seal_for(&key.public_base64(), &plain).unwrap())
    }

    fn keys(id: &str) -> HostedKeys {
        HostedKeys {
            instance_id: id.into(),
            editor: "e".repeat(43),
            endpoint: "n".repeat(43),
        }
    }

    #[test]
    fn keys_open_only_with_this_agents_key_and_for_their_instance() {
        let mine = AgentBoxKey::generate();
        let other = AgentBoxKey::generate();
        let hosted = HostedInstance {
            id: "i1".into(),
            name: "plant".into(),
            keys: sealed_for(&mine, &keys("i1")),
            rules: vec![],
            api_keys: vec![],
        };
        let opened = HostedIdentity::open(&hosted, &mine).unwrap();
        assert_eq!(opened.instance_id, "i1");
        assert!(HostedIdentity::open(&hosted, &other).is_err());
        let moved = HostedInstance {
            id: "i2".into(),
            ..hosted.clone()
        };
        assert!(HostedIdentity::open(&moved, &mine).is_err());
        let odd = HostedInstance {
            id: "../x".into(),
            keys: sealed_for(&mine, &keys("../x")),
            ..hosted.clone()
        };
        assert!(HostedIdentity::open(&odd, &mine).is_err());
        let short = HostedInstance {
            keys: sealed_for(
                &mine,
                &HostedKeys {
                    editor: "short".into(),
                    ..keys("i1")
                },
            ),
            ..hosted
        };
        assert!(HostedIdentity::open(&short, &mine).is_err());
    }

    #[test]
    fn kept_privately_and_forgotten() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let mine = AgentBoxKey::generate();
        let hosted = HostedInstance {
            id: "i1".into(),
            name: "plant".into(),
            keys: sealed_for(&mine, &keys("i1")),
            rules: vec![],
            api_keys: vec![],
        };
        let identity = HostedIdentity::open(&hosted, &mine).unwrap();
        assert!(HostedIdentity::load(dir.path()).unwrap().is_none());
        HostedIdentity::store(dir.path(), Some(&identity)).unwrap();
        let path = dir.path().join(HOSTED_FILE);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let loaded = HostedIdentity::load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.instance_id, "i1");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(HostedIdentity::load(dir.path()).is_err());
        HostedIdentity::store(dir.path(), None).unwrap();
        assert!(HostedIdentity::load(dir.path()).unwrap().is_none());
    }
}

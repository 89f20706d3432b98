//! Instance secrets at rest: each instance's three keys (editor, endpoint,
//! credential) and its environment values, sealed by
//! `redwall_crypto::versioned_seal` (AES-256-GCM, one derived key per
//! version). The version that seals new values is a platform setting.

use rand::RngCore;
use redwall_crypto::keyring::Keyring;
use redwall_crypto::Secret;
use redwall_store::Instance;

pub use redwall_crypto::versioned_seal::{open, reseal, seal, version_of, SealError};

use crate::{Hub, HubError, HubResult};

/// Where the current key version is kept (platform settings table).
pub const KEY_VERSION_SETTING: &str = "instance_secrets_key_version";

/// The three per-instance keys, sealed together in `instances.secrets`.
pub struct InstanceKeys {
    pub editor: Secret,
    pub endpoint: Secret,
    pub credential: Secret,
}

const KEY_BYTES: usize = 32;

fn encode(bytes: &[u8]) -> Secret {
    use base64::Engine;
    Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The additional data of an instance's key set: names the row, so a sealed
/// value moved to another row does not open.
pub fn secrets_aad(instance_id: &str) -> String {
    format!("instance/{instance_id}/keys")
}

/// The additional data of one environment value.
pub fn env_aad(instance_id: &str, name: &str) -> String {
    format!("instance/{instance_id}/env/{name}")
}

/// Fresh random keys for a new instance, sealed.
pub fn new_sealed_keys(keyring: &Keyring, version: u32, instance_id: &str) -> String {
    let mut raw = zeroize::Zeroizing::new([0u8; KEY_BYTES * 3]);
    rand::rngs::OsRng.fill_bytes(raw.as_mut_slice());
    seal(keyring, version, raw.as_slice(), &secrets_aad(instance_id))
}

pub fn open_keys(keyring: &Keyring, instance: &Instance) -> HubResult<InstanceKeys> {
    let raw =
        open(keyring, &instance.secrets, &secrets_aad(&instance.id)).map_err(HubError::internal)?;
    if raw.len() != KEY_BYTES * 3 {
        return Err(HubError::internal("instance keys have the wrong length"));
    }
    Ok(InstanceKeys {
        editor: encode(&raw[..KEY_BYTES]),
        endpoint: encode(&raw[KEY_BYTES..KEY_BYTES * 2]),
        credential: encode(&raw[KEY_BYTES * 2..]),
    })
}

impl Hub {
    /// The version of the instance-secret key that seals new secrets.
    pub async fn key_version(&self) -> HubResult<u32> {
        Ok(self
            .store
            .get_setting(KEY_VERSION_SETTING)
            .await?
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(1))
    }
}

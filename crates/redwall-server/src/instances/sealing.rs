//! Instance secrets at rest: sealed by `redwall_crypto::versioned_seal`
//! (AES-256-GCM, one derived key per version); the version that seals new
//! values is a platform setting.

pub use redwall_crypto::versioned_seal::{open, reseal, seal, version_of, SealError};

/// Where the current key version is kept (platform settings table).
pub const KEY_VERSION_SETTING: &str = "instance_secrets_key_version";

/// The version of the instance-secret key that seals new secrets.
pub async fn key_version(state: &crate::state::AppState) -> crate::error::ApiResult<u32> {
    Ok(state
        .store
        .get_setting(KEY_VERSION_SETTING)
        .await?
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1))
}

//! `redwall keys rotate-instance-secrets`: every instance key and
//! environment value moves to a fresh data-key version in one transaction;
//! the version in use is then recorded, and the rotation audited.

use crate::audit;
use crate::instances::sealing::{self, KEY_VERSION_SETTING};
use crate::net::client::ClientInfo;
use crate::state::AppState;
use anyhow::{anyhow, Context};
use redwall_policy::audit_event::{AuditEvent, Outcome};
use serde_json::json;
use std::net::{IpAddr, Ipv4Addr};

pub struct RotationReport {
    pub from_version: u32,
    pub to_version: u32,
    /// Sealed values re-encrypted (instance key sets and variables).
    pub resealed: u64,
}

pub async fn rotate(state: &AppState) -> anyhow::Result<RotationReport> {
    let from = crate::instances::sealing::key_version(state)
        .await
        .map_err(|e| anyhow!(e.message))?;
    let to = from
        .checked_add(1)
        .ok_or_else(|| anyhow!("no key version is left"))?;
    let keyring = &state.keyring;
    // The additional data names the row, exactly as when it was sealed.
    let reseal = |row: &str, sealed: &str| -> Result<String, String> {
        let aad = match row.split_once('/') {
            Some((id, name)) => crate::instances::manager::env_aad(id, name),
            None => crate::instances::manager::secrets_aad(row),
        };
        sealing::reseal(keyring, sealed, &aad, to).map_err(|e| format!("{row}: {e}"))
    };
    let resealed = state
        .store
        .reseal_instance_secrets(&reseal)
        .await
        .context("re-sealing instance secrets")?
        .map_err(|e| {
            anyhow!("a sealed value does not open with this master key ({e}); nothing was changed")
        })?;
    state
        .store
        .put_setting(KEY_VERSION_SETTING, &to.to_string(), state.now())
        .await
        .context("recording the new key version")?;
    let cli = ClientInfo {
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        user_agent: Some("redwall-cli".into()),
        https: false,
    };
    audit::record(
        state,
        None,
        &cli,
        AuditEvent::KeysRotated,
        Outcome::Success,
        Some("instance-secrets".into()),
        json!({ "from_version": from, "to_version": to, "resealed": resealed }),
    )
    .await
    .map_err(|e| anyhow!(e.message))?;
    Ok(RotationReport {
        from_version: from,
        to_version: to,
        resealed,
    })
}

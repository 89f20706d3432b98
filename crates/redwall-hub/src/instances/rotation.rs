//! `redwall keys rotate-instance-secrets`: every instance key set and
//! environment value moves to a fresh key version, and the version in use
//! is recorded, in one change with its audit entry.

use redwall_policy::audit_event::AuditEvent;
use serde_json::json;

use crate::audit::{Event, Who};
use crate::instances::keys::{env_aad, reseal, secrets_aad, KEY_VERSION_SETTING};
use crate::{Hub, HubError, HubResult};

pub struct RotationReport {
    pub from_version: u32,
    pub to_version: u32,
    /// Sealed values re-encrypted (instance key sets and variables).
    pub resealed: u64,
}

impl Hub {
    pub async fn rotate_instance_secrets(&self, who: Who<'_>) -> HubResult<RotationReport> {
        let from = self.key_version().await?;
        let to = from
            .checked_add(1)
            .ok_or_else(|| HubError::conflict("no_key_version", "no key version is left"))?;
        let keyring = &self.keyring;
        // The additional data names the row, exactly as when it was sealed.
        let reseal = |row: &str, sealed: &str| -> Result<String, String> {
            let aad = match row.split_once('/') {
                Some((id, name)) => env_aad(id, name),
                None => secrets_aad(row),
            };
            reseal(keyring, sealed, &aad, to).map_err(|e| format!("{row}: {e}"))
        };
        let mut tx = self.begin().await?;
        let resealed = tx.reseal_instance_secrets(&reseal).await?.map_err(|e| {
            HubError::conflict(
                "unopenable_secret",
                format!(
                    "a sealed value does not open with this master key ({e}); nothing was changed"
                ),
            )
        })?;
        tx.put_setting(KEY_VERSION_SETTING, &to.to_string(), self.now())
            .await?;
        self.note(
            &mut tx,
            who,
            Event::on_platform(
                AuditEvent::KeysRotated,
                "instance-secrets".into(),
                json!({ "from_version": from, "to_version": to, "resealed": resealed }),
            ),
        );
        self.commit(tx, 1).await?;
        Ok(RotationReport {
            from_version: from,
            to_version: to,
            resealed,
        })
    }
}

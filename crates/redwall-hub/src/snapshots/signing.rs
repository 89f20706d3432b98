//! The hub's Ed25519 key, which signs every snapshot statement.
//!
//! The private half is sealed under the master key in the database, so
//! every replica signs with the same key; the first replica to need one
//! creates it under a fixed id and the others read that row back.

use redwall_crypto::signing::{HubSigningKey, PublicKey};
use redwall_store::SigningKeyRow;

use crate::{Hub, HubError, HubResult};

/// The id of the first signing key (rotation would add others).
pub const FIRST_KEY_ID: &str = "hub-1";

impl Hub {
    /// The key that signs new snapshots, created on first use.
    pub async fn signing_key(&self) -> HubResult<HubSigningKey> {
        if let Some(row) = self.store.signing_keys().await?.into_iter().next() {
            return HubSigningKey::open(&self.keyring, &row.sealed_key).map_err(HubError::internal);
        }
        let fresh = HubSigningKey::generate();
        let row = SigningKeyRow {
            id: FIRST_KEY_ID.to_string(),
            public_key: fresh.public_key().to_base64(),
            sealed_key: fresh.seal(&self.keyring),
            created_at: self.now(),
        };
        self.store.add_signing_key_if_absent(&row).await?;
        let stored = self
            .store
            .signing_keys()
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| HubError::internal("the signing key was not stored"))?;
        HubSigningKey::open(&self.keyring, &stored.sealed_key).map_err(HubError::internal)
    }

    /// Every public key this hub has signed with: a snapshot signed by any
    /// other key was not made here.
    pub async fn signing_public_keys(&self) -> HubResult<Vec<PublicKey>> {
        self.store
            .signing_keys()
            .await?
            .iter()
            .map(|row| PublicKey::from_base64(&row.public_key).map_err(HubError::internal))
            .collect()
    }
}

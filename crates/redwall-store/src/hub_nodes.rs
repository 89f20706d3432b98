//! The hub replicas, and how another replica reaches each one (see
//! migration 0018).

use sqlx::Row;

use crate::{Micros, Store, StoreError};

/// A replica as another one reaches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubNode {
    pub node: String,
    /// `https://host:port` of its listener.
    pub relay_url: String,
    /// SHA-256 of its TLS certificate (DER), lowercase hex: what the other
    /// replica pins.
    pub cert_sha256: String,
    pub started_at: Micros,
}

impl Store {
    /// Records (or replaces) how this replica is reached.
    pub async fn put_hub_node(&self, n: &HubNode) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO hub_nodes (node, relay_url, cert_sha256, started_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (node) DO UPDATE SET relay_url = excluded.relay_url, \
             cert_sha256 = excluded.cert_sha256, started_at = excluded.started_at",
        )
        .bind(&n.node)
        .bind(&n.relay_url)
        .bind(&n.cert_sha256)
        .bind(n.started_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn get_hub_node(&self, node: &str) -> Result<Option<HubNode>, StoreError> {
        let row = sqlx::query("SELECT * FROM hub_nodes WHERE node = $1")
            .bind(node)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| {
            Ok(HubNode {
                node: r.try_get("node")?,
                relay_url: r.try_get("relay_url")?,
                cert_sha256: r.try_get("cert_sha256")?,
                started_at: r.try_get("started_at")?,
            })
        })
        .transpose()
        .map_err(|e: sqlx::Error| e.into())
    }

    /// Forgets a replica that stopped (the next one gets a new node id).
    pub async fn delete_hub_node(&self, node: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM hub_nodes WHERE node = $1")
            .bind(node)
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

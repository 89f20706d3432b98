//! Platform settings: a key to JSON text map.

use crate::{Micros, Store, StoreError};

impl Store {
    /// The JSON text stored under `key`.
    pub async fn get_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    /// Stores `json` under `key`, replacing what was there.
    pub async fn put_setting(&self, key: &str, json: &str, now: Micros) -> Result<(), StoreError> {
        self.in_change(async |c| c.put_setting(key, json, now).await)
            .await
    }
}

impl crate::Change {
    pub async fn put_setting(
        &mut self,
        key: &str,
        json: &str,
        now: Micros,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
             updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(json)
        .bind(now)
        .execute(&mut **self.tx())
        .await?;
        Ok(())
    }
}

//! Writes to instances, their environment and their API keys, inside a
//! [`Change`] so that each carries its audit entry.

use crate::{Change, EnvEntry, Instance, InstanceApiKey, Micros, Store, StoreError};

impl Change {
    /// Stores a new instance. `Conflict` when the name or port is taken.
    pub async fn create_instance(&mut self, i: &Instance) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO instances (id, name, team_id, port, desired_state, options, routes, \
             secrets, created_by, created_at, updated_at, egress, agent_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&i.id)
        .bind(&i.name)
        .bind(&i.team_id)
        .bind(i64::from(i.port))
        .bind(&i.desired_state)
        .bind(&i.options)
        .bind(&i.routes)
        .bind(&i.secrets)
        .bind(&i.created_by)
        .bind(i.created_at)
        .bind(i.updated_at)
        .bind(&i.egress)
        .bind(&i.agent_id)
        .execute(&mut **self.tx())
        .await?;
        Ok(())
    }

    pub async fn set_instance_desired_state(
        &mut self,
        id: &str,
        state: &str,
        now: Micros,
    ) -> Result<bool, StoreError> {
        self.update_instance_column(id, "desired_state", state, now)
            .await
    }

    pub async fn set_instance_routes(
        &mut self,
        id: &str,
        routes_json: &str,
        now: Micros,
    ) -> Result<bool, StoreError> {
        self.update_instance_column(id, "routes", routes_json, now)
            .await
    }

    pub async fn set_instance_egress(
        &mut self,
        id: &str,
        egress_json: &str,
        now: Micros,
    ) -> Result<bool, StoreError> {
        self.update_instance_column(id, "egress", egress_json, now)
            .await
    }

    pub async fn set_instance_options(
        &mut self,
        id: &str,
        options_json: &str,
        now: Micros,
    ) -> Result<bool, StoreError> {
        self.update_instance_column(id, "options", options_json, now)
            .await
    }

    async fn update_instance_column(
        &mut self,
        id: &str,
        column: &'static str,
        value: &str,
        now: Micros,
    ) -> Result<bool, StoreError> {
        // `column` is always one of the literals above, never user input.
        let sql = format!("UPDATE instances SET {column} = $2, updated_at = $3 WHERE id = $1");
        let done = sqlx::query(&sql)
            .bind(id)
            .bind(value)
            .bind(now)
            .execute(&mut **self.tx())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes the instance with its environment and keys.
    pub async fn delete_instance(&mut self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM instances WHERE id = $1")
            .bind(id)
            .execute(&mut **self.tx())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces the whole environment in one transaction, so a failed write
    /// never leaves half a set.
    pub async fn replace_instance_env(
        &mut self,
        instance_id: &str,
        entries: &[EnvEntry],
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM instance_env WHERE instance_id = $1")
            .bind(instance_id)
            .execute(&mut **self.tx())
            .await?;
        for e in entries {
            sqlx::query(
                "INSERT INTO instance_env (instance_id, name, secret, value, updated_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(instance_id)
            .bind(&e.name)
            .bind(i64::from(e.secret))
            .bind(&e.value)
            .bind(e.updated_at)
            .execute(&mut **self.tx())
            .await?;
        }
        Ok(())
    }

    pub async fn create_instance_api_key(&mut self, k: &InstanceApiKey) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO instance_api_keys (id, instance_id, name, key_digest, display_prefix, \
             path_prefix, created_by, created_at, expires_at, revoked_at, last_used_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL)",
        )
        .bind(&k.id)
        .bind(&k.instance_id)
        .bind(&k.name)
        .bind(&k.key_digest)
        .bind(&k.display_prefix)
        .bind(&k.path_prefix)
        .bind(&k.created_by)
        .bind(k.created_at)
        .bind(k.expires_at)
        .execute(&mut **self.tx())
        .await?;
        Ok(())
    }

    /// Marks the key revoked; false when it is not this instance's or already revoked.
    pub async fn revoke_instance_api_key(
        &mut self,
        instance_id: &str,
        key_id: &str,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE instance_api_keys SET revoked_at = $3 \
             WHERE id = $1 AND instance_id = $2 AND revoked_at IS NULL",
        )
        .bind(key_id)
        .bind(instance_id)
        .bind(now)
        .execute(&mut **self.tx())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// The same writes, each its own change without audit entries: for callers
/// that record nothing (tests, set-up).
impl Store {
    pub async fn create_instance(&self, i: &Instance) -> Result<(), StoreError> {
        self.in_change(async |c| c.create_instance(i).await).await
    }

    pub async fn set_instance_desired_state(
        &self,
        id: &str,
        state: &str,
        now: Micros,
    ) -> Result<bool, StoreError> {
        self.in_change(async |c| c.set_instance_desired_state(id, state, now).await)
            .await
    }

    pub async fn set_instance_routes(
        &self,
        id: &str,
        routes_json: &str,
        now: Micros,
    ) -> Result<bool, StoreError> {
        self.in_change(async |c| c.set_instance_routes(id, routes_json, now).await)
            .await
    }

    pub async fn set_instance_egress(
        &self,
        id: &str,
        egress_json: &str,
        now: Micros,
    ) -> Result<bool, StoreError> {
        self.in_change(async |c| c.set_instance_egress(id, egress_json, now).await)
            .await
    }

    pub async fn set_instance_options(
        &self,
        id: &str,
        options_json: &str,
        now: Micros,
    ) -> Result<bool, StoreError> {
        self.in_change(async |c| c.set_instance_options(id, options_json, now).await)
            .await
    }

    pub async fn delete_instance(&self, id: &str) -> Result<bool, StoreError> {
        self.in_change(async |c| c.delete_instance(id).await).await
    }

    pub async fn replace_instance_env(
        &self,
        instance_id: &str,
        entries: &[EnvEntry],
    ) -> Result<(), StoreError> {
        self.in_change(async |c| c.replace_instance_env(instance_id, entries).await)
            .await
    }

    pub async fn create_instance_api_key(&self, k: &InstanceApiKey) -> Result<(), StoreError> {
        self.in_change(async |c| c.create_instance_api_key(k).await)
            .await
    }

    pub async fn revoke_instance_api_key(
        &self,
        instance_id: &str,
        key_id: &str,
        now: Micros,
    ) -> Result<bool, StoreError> {
        self.in_change(async |c| c.revoke_instance_api_key(instance_id, key_id, now).await)
            .await
    }
}

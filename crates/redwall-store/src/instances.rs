//! Managed Node-RED instances, their environment variables and API keys.
//!
//! Every read that serves a team request names the team. Secrets arrive here
//! already sealed by the server; API keys only as digests.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{get_bool, Micros, Store, StoreError};

#[derive(Clone, Debug)]
pub struct Instance {
    pub id: String,
    pub name: String,
    pub team_id: String,
    pub port: u16,
    /// 'running' or 'stopped': what Redwall restores at start.
    pub desired_state: String,
    /// JSON object of Owner-set options.
    pub options: String,
    /// JSON array of route rules.
    pub routes: String,
    /// JSON array of egress rules (see `redwall_policy::egress`).
    pub egress: String,
    /// Sealed secrets (base64 text).
    pub secrets: String,
    pub created_by: Option<String>,
    pub created_at: Micros,
    pub updated_at: Micros,
    /// The snapshot it runs, as Redwall last recorded (a deploy from the
    /// editor, a rollback); written only by snapshot operations.
    pub running_snapshot_id: Option<String>,
    /// The agent whose Node-RED this instance is, reached through that
    /// agent's tunnel; `None` for an instance this hub runs.
    pub agent_id: Option<String>,
}

#[derive(Clone, Debug)]
pub struct EnvEntry {
    pub name: String,
    pub secret: bool,
    /// Sealed value (base64 text).
    pub value: String,
    pub updated_at: Micros,
}

#[derive(Clone, Debug)]
pub struct InstanceApiKey {
    pub id: String,
    pub instance_id: String,
    pub name: String,
    pub key_digest: Vec<u8>,
    pub display_prefix: String,
    pub path_prefix: Option<String>,
    pub created_by: Option<String>,
    pub created_at: Micros,
    pub expires_at: Option<Micros>,
    pub revoked_at: Option<Micros>,
    pub last_used_at: Option<Micros>,
}

fn instance_from_row(row: &AnyRow) -> Result<Instance, sqlx::Error> {
    let port: i64 = row.try_get("port")?;
    Ok(Instance {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        team_id: row.try_get("team_id")?,
        port: u16::try_from(port).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        desired_state: row.try_get("desired_state")?,
        options: row.try_get("options")?,
        routes: row.try_get("routes")?,
        egress: row.try_get("egress")?,
        secrets: row.try_get("secrets")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        running_snapshot_id: row.try_get("running_snapshot_id")?,
        agent_id: row.try_get("agent_id")?,
    })
}

fn env_from_row(row: &AnyRow) -> Result<EnvEntry, sqlx::Error> {
    Ok(EnvEntry {
        name: row.try_get("name")?,
        secret: get_bool(row, "secret")?,
        value: row.try_get("value")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn key_from_row(row: &AnyRow) -> Result<InstanceApiKey, sqlx::Error> {
    Ok(InstanceApiKey {
        id: row.try_get("id")?,
        instance_id: row.try_get("instance_id")?,
        name: row.try_get("name")?,
        key_digest: row.try_get("key_digest")?,
        display_prefix: row.try_get("display_prefix")?,
        path_prefix: row.try_get("path_prefix")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

fn collect<T>(
    rows: &[AnyRow],
    f: fn(&AnyRow) -> Result<T, sqlx::Error>,
) -> Result<Vec<T>, StoreError> {
    rows.iter()
        .map(f)
        .collect::<Result<_, sqlx::Error>>()
        .map_err(StoreError::from)
}

impl Store {
    /// The team's instance named by id or name; `None` for another team's.
    pub async fn get_team_instance(
        &self,
        team_id: &str,
        id_or_name: &str,
    ) -> Result<Option<Instance>, StoreError> {
        let row =
            sqlx::query("SELECT * FROM instances WHERE team_id = $1 AND (id = $2 OR name = $2)")
                .bind(team_id)
                .bind(id_or_name)
                .fetch_optional(self.pool())
                .await?;
        Ok(row.as_ref().map(instance_from_row).transpose()?)
    }

    pub async fn get_instance_by_id(&self, id: &str) -> Result<Option<Instance>, StoreError> {
        let row = sqlx::query("SELECT * FROM instances WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(instance_from_row).transpose()?)
    }

    /// The instance an agent runs, if any.
    pub async fn get_instance_of_agent(
        &self,
        agent_id: &str,
    ) -> Result<Option<Instance>, StoreError> {
        let row = sqlx::query("SELECT * FROM instances WHERE agent_id = $1")
            .bind(agent_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(instance_from_row).transpose()?)
    }

    /// The instance a proxied request names (by its platform-unique name).
    pub async fn get_instance_by_name(&self, name: &str) -> Result<Option<Instance>, StoreError> {
        let row = sqlx::query("SELECT * FROM instances WHERE name = $1")
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(instance_from_row).transpose()?)
    }

    pub async fn list_team_instances(&self, team_id: &str) -> Result<Vec<Instance>, StoreError> {
        let rows = sqlx::query("SELECT * FROM instances WHERE team_id = $1 ORDER BY name")
            .bind(team_id)
            .fetch_all(self.pool())
            .await?;
        collect(&rows, instance_from_row)
    }

    /// Every instance, for start-up and key rotation.
    pub async fn list_all_instances(&self) -> Result<Vec<Instance>, StoreError> {
        let rows = sqlx::query("SELECT * FROM instances ORDER BY name")
            .fetch_all(self.pool())
            .await?;
        collect(&rows, instance_from_row)
    }

    pub async fn count_team_instances(&self, team_id: &str) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM instances WHERE team_id = $1")
                .bind(team_id)
                .fetch_one(self.pool())
                .await?,
        )
    }

    pub async fn used_instance_ports(&self) -> Result<Vec<u16>, StoreError> {
        let ports: Vec<i64> = sqlx::query_scalar("SELECT port FROM instances")
            .fetch_all(self.pool())
            .await?;
        Ok(ports
            .into_iter()
            .filter_map(|p| u16::try_from(p).ok())
            .collect())
    }

    pub async fn list_instance_env(&self, instance_id: &str) -> Result<Vec<EnvEntry>, StoreError> {
        let rows = sqlx::query("SELECT * FROM instance_env WHERE instance_id = $1 ORDER BY name")
            .bind(instance_id)
            .fetch_all(self.pool())
            .await?;
        collect(&rows, env_from_row)
    }

    pub async fn list_instance_api_keys(
        &self,
        instance_id: &str,
    ) -> Result<Vec<InstanceApiKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM instance_api_keys WHERE instance_id = $1 ORDER BY created_at, id",
        )
        .bind(instance_id)
        .fetch_all(self.pool())
        .await?;
        collect(&rows, key_from_row)
    }

    pub async fn get_instance_api_key_by_digest(
        &self,
        digest: &[u8],
    ) -> Result<Option<InstanceApiKey>, StoreError> {
        let row = sqlx::query("SELECT * FROM instance_api_keys WHERE key_digest = $1")
            .bind(digest)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.as_ref().map(key_from_row).transpose()?)
    }
}

impl crate::Change {
    /// Re-seals every instance secret and environment value in one
    /// transaction (key rotation). `reseal` gets each sealed text and returns
    /// its replacement.
    pub async fn reseal_instance_secrets(
        &mut self,
        reseal: &(dyn Fn(&str, &str) -> Result<String, String> + Sync),
    ) -> Result<Result<u64, String>, StoreError> {
        let tx = self.tx();
        let mut count = 0u64;
        let rows = sqlx::query("SELECT id, secrets FROM instances")
            .fetch_all(&mut **tx)
            .await?;
        for row in &rows {
            let id: String = row.try_get("id")?;
            let sealed: String = row.try_get("secrets")?;
            let fresh = match reseal(&id, &sealed) {
                Ok(s) => s,
                Err(e) => return Ok(Err(e)),
            };
            sqlx::query("UPDATE instances SET secrets = $2 WHERE id = $1")
                .bind(&id)
                .bind(fresh)
                .execute(&mut **tx)
                .await?;
            count += 1;
        }
        let rows = sqlx::query("SELECT instance_id, name, value FROM instance_env")
            .fetch_all(&mut **tx)
            .await?;
        for row in &rows {
            let id: String = row.try_get("instance_id")?;
            let name: String = row.try_get("name")?;
            let sealed: String = row.try_get("value")?;
            let fresh = match reseal(&format!("{id}/{name}"), &sealed) {
                Ok(s) => s,
                Err(e) => return Ok(Err(e)),
            };
            sqlx::query("UPDATE instance_env SET value = $3 WHERE instance_id = $1 AND name = $2")
                .bind(&id)
                .bind(&name)
                .bind(fresh)
                .execute(&mut **tx)
                .await?;
            count += 1;
        }
        Ok(Ok(count))
    }
}

impl Store {
    /// [`crate::Change::reseal_instance_secrets`] as a change of its own,
    /// recording nothing; a value that does not re-seal changes nothing.
    pub async fn reseal_instance_secrets(
        &self,
        reseal: &(dyn Fn(&str, &str) -> Result<String, String> + Sync),
    ) -> Result<Result<u64, String>, StoreError> {
        let mut change = self.begin_change().await?;
        let done = change.reseal_instance_secrets(reseal).await?;
        if done.is_ok() {
            change.commit().await?;
        }
        Ok(done)
    }
}

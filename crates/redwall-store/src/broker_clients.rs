//! The team MQTT broker's clients: their secret's digest and their topic
//! rules. Writes happen inside a [`Change`], so each carries its entry.

use sqlx::any::AnyRow;
use sqlx::Row;

use crate::{Change, Micros, Store, StoreError};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerClient {
    pub id: String,
    pub team_id: String,
    pub name: String,
    /// The instance whose own identity this is; `None` for an external
    /// client (a device, a script).
    pub instance_id: Option<String>,
    /// Secret-derived: the SHA-256 digest of the client's password.
    pub secret_digest: Vec<u8>,
    /// JSON array of `redwall_policy::mqtt_acl::AclRule`.
    pub rules: String,
    pub created_by: Option<String>,
    pub created_at: Micros,
    pub updated_at: Micros,
    /// Set while the client is disabled: refused at login.
    pub disabled_at: Option<Micros>,
}

const COLUMNS: &str = "id, team_id, name, instance_id, secret_digest, rules, created_by, \
     created_at, updated_at, disabled_at";

fn client_from_row(row: &AnyRow) -> Result<BrokerClient, sqlx::Error> {
    Ok(BrokerClient {
        id: row.try_get("id")?,
        team_id: row.try_get("team_id")?,
        name: row.try_get("name")?,
        instance_id: row.try_get("instance_id")?,
        secret_digest: row.try_get("secret_digest")?,
        rules: row.try_get("rules")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        disabled_at: row.try_get("disabled_at")?,
    })
}

impl Change {
    /// Stores a new client. `Conflict` when the team has one by that name.
    pub async fn create_broker_client(&mut self, c: &BrokerClient) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO broker_clients ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(&c.id)
        .bind(&c.team_id)
        .bind(&c.name)
        .bind(&c.instance_id)
        .bind(c.secret_digest.as_slice())
        .bind(&c.rules)
        .bind(&c.created_by)
        .bind(c.created_at)
        .bind(c.updated_at)
        .bind(c.disabled_at)
        .execute(&mut **self.tx())
        .await?;
        Ok(())
    }

    /// Replaces the client's secret; false when the team has no such client.
    pub async fn set_broker_secret(
        &mut self,
        team_id: &str,
        id: &str,
        digest: &[u8],
        now: Micros,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE broker_clients SET secret_digest = $3, updated_at = $4 \
             WHERE team_id = $1 AND id = $2",
        )
        .bind(team_id)
        .bind(id)
        .bind(digest)
        .bind(now)
        .execute(&mut **self.tx())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces the client's rules; false when the team has no such client.
    pub async fn set_broker_rules(
        &mut self,
        team_id: &str,
        id: &str,
        rules_json: &str,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE broker_clients SET rules = $3, updated_at = $4 WHERE team_id = $1 AND id = $2",
        )
        .bind(team_id)
        .bind(id)
        .bind(rules_json)
        .bind(now)
        .execute(&mut **self.tx())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Disables (`Some(now)`) or enables (`None`) the team's client;
    /// whether it exists.
    pub async fn set_broker_disabled(
        &mut self,
        team_id: &str,
        id: &str,
        disabled_at: Option<Micros>,
        now: Micros,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE broker_clients SET disabled_at = $3, updated_at = $4 \
             WHERE team_id = $1 AND id = $2",
        )
        .bind(team_id)
        .bind(id)
        .bind(disabled_at)
        .bind(now)
        .execute(&mut **self.tx())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes the team's client, returning it; `None` when there is none.
    pub async fn delete_broker_client(
        &mut self,
        team_id: &str,
        id: &str,
    ) -> Result<Option<BrokerClient>, StoreError> {
        let row = sqlx::query(&format!(
            "DELETE FROM broker_clients WHERE team_id = $1 AND id = $2 RETURNING {COLUMNS}"
        ))
        .bind(team_id)
        .bind(id)
        .fetch_optional(&mut **self.tx())
        .await?;
        Ok(row.as_ref().map(client_from_row).transpose()?)
    }
}

impl Store {
    /// The team's clients, by name.
    /// Every team's clients (for an external broker's reconciliation).
    pub async fn all_broker_clients(&self) -> Result<Vec<BrokerClient>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM broker_clients ORDER BY team_id, name, id"
        ))
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(client_from_row).collect::<Result<_, _>>()?)
    }

    pub async fn list_broker_clients(
        &self,
        team_id: &str,
    ) -> Result<Vec<BrokerClient>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM broker_clients WHERE team_id = $1 ORDER BY name, id"
        ))
        .bind(team_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(client_from_row).collect::<Result<_, _>>()?)
    }

    /// The team's client with this id.
    pub async fn get_broker_client(
        &self,
        team_id: &str,
        id: &str,
    ) -> Result<Option<BrokerClient>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM broker_clients WHERE team_id = $1 AND id = $2"
        ))
        .bind(team_id)
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(client_from_row).transpose()?)
    }

    /// The client whose secret has this digest, in any team.
    pub async fn broker_client_by_digest(
        &self,
        digest: &[u8],
    ) -> Result<Option<BrokerClient>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM broker_clients WHERE secret_digest = $1"
        ))
        .bind(digest)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(client_from_row).transpose()?)
    }
}

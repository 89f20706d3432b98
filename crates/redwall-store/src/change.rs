//! One change to the hub's data and the audit entries that record it,
//! committed in one transaction.
//!
//! The entries go to `audit_pending` inside the change's transaction; the
//! audit writer chains them into `audit_log` under its lock (the next group,
//! or [`crate::AuditWriter::flush`]). So a change is never stored without its
//! entry, even if the process is killed right after the commit, and the
//! chain keeps its single writer and group commit.

use sqlx::{Any, Transaction};

use crate::audit::canonical_json;
use crate::{NewAuditEntry, Store, StoreError};

/// A write transaction plus the audit entries it commits with. Dropping it
/// without [`Change::commit`] rolls everything back.
pub struct Change {
    tx: Transaction<'static, Any>,
    entries: Vec<NewAuditEntry>,
    pub(crate) backend: crate::Backend,
}

impl Store {
    /// Runs `write` as a change of its own, recording nothing: for callers
    /// without an actor to record (tests, set-up, migrations of data).
    pub async fn in_change<T>(
        &self,
        write: impl AsyncFnOnce(&mut Change) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut change = self.begin_change().await?;
        let done = write(&mut change).await?;
        change.commit().await?;
        Ok(done)
    }

    /// Begins a change: a write transaction (on SQLite holding the write
    /// lock from the start, see [`Store::begin_write`]).
    pub async fn begin_change(&self) -> Result<Change, StoreError> {
        Ok(Change {
            tx: self.begin_write().await?,
            entries: Vec::new(),
            backend: self.backend(),
        })
    }
}

impl Change {
    /// Records `entry` with this change: it is stored only if the change is.
    pub fn record(&mut self, entry: NewAuditEntry) {
        self.entries.push(entry);
    }

    /// Whether anything was recorded (a change that altered nothing records
    /// nothing and need not be committed).
    pub fn has_entries(&self) -> bool {
        !self.entries.is_empty()
    }

    pub(crate) fn tx(&mut self) -> &mut Transaction<'static, Any> {
        &mut self.tx
    }

    /// Stores the recorded entries as pending and commits the change with
    /// them.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        for e in std::mem::take(&mut self.entries) {
            sqlx::query(
                "INSERT INTO audit_pending (at, actor_id, actor_name, client_ip, user_agent, \
                 event, target, outcome, details, team_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(e.at)
            .bind(e.actor_id)
            .bind(e.actor_name)
            .bind(e.client_ip)
            .bind(e.user_agent)
            .bind(e.event)
            .bind(e.target)
            .bind(e.outcome)
            .bind(canonical_json(&e.details))
            .bind(e.team_id)
            .execute(&mut *self.tx)
            .await?;
        }
        self.tx.commit().await?;
        Ok(())
    }
}

impl Store {
    /// Entries committed with their changes and not chained yet.
    pub async fn pending_audit_entries(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM audit_pending")
            .fetch_one(self.pool())
            .await?)
    }
}

/// Takes every pending entry, oldest first, inside the audit writer's
/// transaction (under its lock): deleted here, chained by the caller in the
/// same transaction. One statement, so an entry committed meanwhile by
/// another change is either taken whole or left for the next group.
pub(crate) async fn take_pending(
    tx: &mut sqlx::Transaction<'_, Any>,
) -> Result<Vec<(i64, NewAuditEntry, String)>, sqlx::Error> {
    use sqlx::Row as _;
    let rows = sqlx::query(
        "DELETE FROM audit_pending RETURNING pid, at, actor_id, actor_name, client_ip, \
         user_agent, event, target, outcome, details, team_id",
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut taken = rows
        .iter()
        .map(|r| {
            Ok((
                r.try_get::<i64, _>("pid")?,
                NewAuditEntry {
                    at: r.try_get("at")?,
                    actor_id: r.try_get("actor_id")?,
                    actor_name: r.try_get("actor_name")?,
                    client_ip: r.try_get("client_ip")?,
                    user_agent: r.try_get("user_agent")?,
                    event: r.try_get("event")?,
                    target: r.try_get("target")?,
                    outcome: r.try_get("outcome")?,
                    // Chained from the stored canonical text below.
                    details: serde_json::Value::Null,
                    team_id: r.try_get("team_id")?,
                },
                r.try_get::<String, _>("details")?,
            ))
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    taken.sort_by_key(|(pid, _, _)| *pid);
    Ok(taken)
}

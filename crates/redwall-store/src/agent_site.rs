//! What agents report of their sites (migration 0019): the figures of the
//! last heartbeat, how far each of an agent's journals was stored, and the
//! site's log lines. An agent's batch of site events is stored in one
//! [`Change`], with the audit entries it carries and the stream's new
//! position, so a batch is stored whole or not at all and never twice.

use sqlx::Row;

use crate::{Backend, Change, Micros, Store, StoreError};

/// Log lines kept per agent; older ones are deleted as new ones arrive.
pub const MAX_AGENT_LOG_LINES: i64 = 5_000;

/// A stored log line of a site.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentLogLine {
    pub id: i64,
    /// When the site wrote it (its clock), microseconds.
    pub at: Micros,
    pub received_at: Micros,
    /// `agent`, `node-red` or `node-red-stderr`.
    pub source: String,
    pub line: String,
}

/// Where an agent's journal stands at the hub: its epoch and the highest
/// sequence number stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventStreamPosition {
    pub epoch: String,
    pub seq: i64,
}

impl Store {
    /// The newest `limit` log lines of an agent, oldest first.
    pub async fn agent_logs(
        &self,
        agent_id: &str,
        limit: i64,
    ) -> Result<Vec<AgentLogLine>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, received_at, source, line FROM agent_logs WHERE agent_id = $1 \
             ORDER BY id DESC LIMIT $2",
        )
        .bind(agent_id)
        .bind(limit.clamp(0, MAX_AGENT_LOG_LINES))
        .fetch_all(self.pool())
        .await?;
        let mut lines = rows
            .iter()
            .map(|r| {
                Ok(AgentLogLine {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    received_at: r.try_get("received_at")?,
                    source: r.try_get("source")?,
                    line: r.try_get("line")?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        lines.reverse();
        Ok(lines)
    }
}

impl Change {
    /// Where the agent's `stream` stands, locked until this change ends
    /// (SQLite's write transaction holds its lock from the start).
    pub async fn agent_event_stream(
        &mut self,
        agent_id: &str,
        stream: &str,
    ) -> Result<Option<EventStreamPosition>, StoreError> {
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        };
        let row = sqlx::query(&format!(
            "SELECT epoch, seq FROM agent_event_streams WHERE agent_id = $1 AND stream = $2{lock}"
        ))
        .bind(agent_id)
        .bind(stream)
        .fetch_optional(&mut **self.tx())
        .await?;
        Ok(match row {
            Some(r) => Some(EventStreamPosition {
                epoch: r.try_get("epoch")?,
                seq: r.try_get("seq")?,
            }),
            None => None,
        })
    }

    /// The agent's `stream` now stands at `position`.
    pub async fn set_agent_event_stream(
        &mut self,
        agent_id: &str,
        stream: &str,
        position: &EventStreamPosition,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO agent_event_streams (agent_id, stream, epoch, seq) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (agent_id, stream) DO UPDATE SET epoch = excluded.epoch, seq = excluded.seq",
        )
        .bind(agent_id)
        .bind(stream)
        .bind(&position.epoch)
        .bind(position.seq)
        .execute(&mut **self.tx())
        .await?;
        Ok(())
    }

    /// Stores a site's log lines (`at`, `source`, `line`), then forgets all
    /// but the agent's newest [`MAX_AGENT_LOG_LINES`].
    pub async fn add_agent_logs(
        &mut self,
        agent_id: &str,
        received_at: Micros,
        lines: &[(Micros, &str, &str)],
    ) -> Result<(), StoreError> {
        for (at, source, line) in lines {
            sqlx::query(
                "INSERT INTO agent_logs (agent_id, at, received_at, source, line) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(agent_id)
            .bind(*at)
            .bind(received_at)
            .bind(*source)
            .bind(*line)
            .execute(&mut **self.tx())
            .await?;
        }
        sqlx::query(
            "DELETE FROM agent_logs WHERE agent_id = $1 AND id <= \
             (SELECT id FROM agent_logs WHERE agent_id = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
        )
        .bind(agent_id)
        .bind(MAX_AGENT_LOG_LINES)
        .execute(&mut **self.tx())
        .await?;
        Ok(())
    }
}

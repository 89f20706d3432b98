//! Messages between the hub processes that share one PostgreSQL database
//! (LISTEN/NOTIFY): what one replica changed and the others must act on at
//! once, such as a broker client's revocation. With SQLite there is one
//! process, so there is nobody to tell.

use sqlx::postgres::PgListener;

use crate::{Backend, Store, StoreError};

/// The channel of broker revocations (payload: `{node}:{client id}`).
pub const BROKER_REVOCATIONS: &str = "redwall_broker_revocations";

/// The channel of remote agents' news for the hub holding their connection
/// (payload: `{node}:{kind}:{agent id}`, kind `revoked` or `command`).
pub const AGENT_EVENTS: &str = "redwall_agent_events";

/// A subscription to one channel.
pub struct Listener(PgListener);

impl Listener {
    /// The next payload; `None` when the connection to the database was
    /// lost (it is opened again by the next call), so messages may have
    /// been missed meanwhile.
    pub async fn next(&mut self) -> Result<Option<String>, StoreError> {
        Ok(self
            .0
            .try_recv()
            .await
            .map_err(StoreError::from)?
            .map(|n| n.payload().to_string()))
    }
}

impl Store {
    /// Tells every process listening on `channel` (PostgreSQL only).
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<(), StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Listens on `channel` with a connection of its own; `None` on SQLite.
    pub async fn listen(&self, channel: &str) -> Result<Option<Listener>, StoreError> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        let mut listener = PgListener::connect(url).await?;
        listener.listen(channel).await?;
        Ok(Some(Listener(listener)))
    }

    /// Listens on `channel` again after its link broke: a second later,
    /// and each second after until it works. `None` on SQLite.
    pub async fn listen_again(&self, channel: &str) -> Option<Listener> {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            match self.listen(channel).await {
                Ok(listener) => return listener,
                Err(e) => tracing::warn!(error = %e, channel, "listening again for other hubs"),
            }
        }
    }
}

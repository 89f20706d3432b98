//! Relaying a request for an instance on an agent to the replica that
//! holds the agent's connection.
//!
//! A tunnel is a connection, so it lives in one process. Replicas record
//! how they are reached (`hub_nodes`: an https address and the SHA-256 of
//! their certificate, which the others pin), and an agent's row names the
//! replica its connection is on. A replica that gets a request for an
//! instance on an agent connected elsewhere first judges it as always (the
//! route rules, the roles, the token for the instance), then asks that
//! replica for a stream of the agent's tunnel: an HTTP/1.1 upgrade carrying
//! a short-lived relay token, an HMAC under a key derived from the master
//! key that every replica shares, naming the asking replica, the agent and
//! the time. Nothing else opens a tunnel stream from outside.

use redwall_store::HubNode;
use subtle::ConstantTimeEq as _;

use crate::{Hub, HubResult};

/// Seconds a relay token stays good (clocks of replicas may differ a bit).
pub const RELAY_TOKEN_SECS: i64 = 30;
/// What the relay token's key is derived for.
const RELAY_PURPOSE: &str = "replica-relay";

/// Where to send a request for an agent's tunnel, and the token to show.
#[derive(Clone, Debug)]
pub struct RelayTarget {
    pub node: String,
    pub relay_url: String,
    pub cert_sha256: String,
    pub token: String,
}

impl Hub {
    /// Records how the other replicas reach this one.
    pub async fn register_relay(&self, relay_url: &str, cert_sha256: &str) -> HubResult<()> {
        self.store
            .put_hub_node(&HubNode {
                node: self.node.to_string(),
                relay_url: relay_url.to_owned(),
                cert_sha256: cert_sha256.to_owned(),
                started_at: self.now(),
            })
            .await?;
        Ok(())
    }

    /// Forgets this replica (at shutdown).
    pub async fn forget_relay(&self) {
        if let Err(e) = self.store.delete_hub_node(&self.node).await {
            tracing::warn!(error = %e, "this replica's relay address could not be removed");
        }
    }

    /// The replica holding the agent's connection, when it is another one
    /// that can be reached; `None` otherwise.
    pub async fn relay_for(&self, team_id: &str, agent_id: &str) -> HubResult<Option<RelayTarget>> {
        let Some(agent) = self.store.get_agent(team_id, agent_id).await? else {
            return Ok(None);
        };
        let node = match agent.connected_node {
            Some(n) if agent.revoked_at.is_none() && *n != *self.node => n,
            _ => return Ok(None),
        };
        let Some(there) = self.store.get_hub_node(&node).await? else {
            return Ok(None);
        };
        let token = self.relay_token(agent_id, self.now() / redwall_policy::MICROS_PER_SECOND);
        Ok(Some(RelayTarget {
            node,
            relay_url: there.relay_url,
            cert_sha256: there.cert_sha256,
            token,
        }))
    }

    fn relay_mac(&self, from: &str, agent_id: &str, at: i64) -> [u8; 32] {
        self.keyring.keyed_digest(
            RELAY_PURPOSE,
            format!("{from}\n{agent_id}\n{at}").as_bytes(),
        )
    }

    /// `{this node}.{unix seconds}.{hex HMAC}`.
    fn relay_token(&self, agent_id: &str, at: i64) -> String {
        format!(
            "{}.{at}.{}",
            self.node,
            hex::encode(self.relay_mac(&self.node, agent_id, at))
        )
    }

    /// Whether `token` was made by a replica (one holding the master key)
    /// for this agent within [`RELAY_TOKEN_SECS`].
    pub fn check_relay_token(&self, agent_id: &str, token: &str) -> bool {
        let mut parts = token.splitn(3, '.');
        let (Some(from), Some(at), Some(mac)) = (parts.next(), parts.next(), parts.next()) else {
            return false;
        };
        let Ok(at) = at.parse::<i64>() else {
            return false;
        };
        let now = self.now() / redwall_policy::MICROS_PER_SECOND;
        if (now - at).abs() > RELAY_TOKEN_SECS {
            return false;
        }
        let Ok(mac) = hex::decode(mac) else {
            return false;
        };
        bool::from(mac.ct_eq(&self.relay_mac(from, agent_id, at)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;

    use redwall_crypto::chain::ChainKey;
    use redwall_crypto::keyring::Keyring;
    use redwall_store::testing::TestDatabase;
    use redwall_store::AuditWriter;

    use crate::clock::ManualClock;
    use crate::{Hub, HubParts};

    async fn replica(db: &TestDatabase, keyring: &Keyring, clock: &ManualClock) -> Hub {
        let store = db.connect().await.unwrap();
        Hub::new(HubParts {
            audit: AuditWriter::spawn(store.clone(), ChainKey::from_keyring(keyring)),
            store,
            keyring: keyring.clone(),
            clock: Arc::new(clock.clone()),
            passwords: Default::default(),
            sessions: Default::default(),
            refusal_sources: 10,
        })
        .unwrap()
    }

    #[tokio::test]
    async fn only_a_replica_makes_a_relay_token_and_only_for_its_agent_and_time() {
        let db = TestDatabase::sqlite().await.unwrap();
        let keyring = Keyring::generate();
        let clock = ManualClock::default();
        let asking = replica(&db, &keyring, &clock).await;
        let holding = replica(&db, &keyring, &clock).await;
        let stranger = replica(&db, &Keyring::generate(), &clock).await;
        let now = asking.now() / redwall_policy::MICROS_PER_SECOND;
        let token = asking.relay_token("agent-1", now);
        assert!(holding.check_relay_token("agent-1", &token));
        assert!(
            !holding.check_relay_token("agent-2", &token),
            "another agent"
        );
        assert!(
            !holding.check_relay_token("agent-1", &stranger.relay_token("agent-1", now)),
            "made without the master key"
        );
        // Another replica named as the maker: the MAC covers the name.
        let renamed = format!("other.{}", token.split_once('.').unwrap().1);
        assert!(!holding.check_relay_token("agent-1", &renamed));
        for bad in ["", "a.b", "a.1.zz", &token[..token.len() - 2]] {
            assert!(!holding.check_relay_token("agent-1", bad), "{bad:?}");
        }
        clock.advance_secs(super::RELAY_TOKEN_SECS + 1);
        assert!(!holding.check_relay_token("agent-1", &token), "too old");
        let later = asking.relay_token("agent-1", now + 2 * super::RELAY_TOKEN_SECS + 2);
        assert!(
            !holding.check_relay_token("agent-1", &later),
            "from the future"
        );
    }
}

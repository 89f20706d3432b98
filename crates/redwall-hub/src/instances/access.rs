//! Who may reach an instance's own endpoints: its ordered route rules and
//! its API keys. Each change is stored with its audit entry, then the
//! proxy's caches forget what they held.

use redwall_crypto::token::{self, INSTANCE_KEY_PREFIX};
use redwall_crypto::Secret;
use redwall_policy::audit_event::AuditEvent;
use redwall_policy::instance_rules::{
    key_expiry_days, key_name, key_path_prefix, MAX_INSTANCE_KEYS,
};
use redwall_policy::route_policy::RouteRule;
use redwall_policy::MICROS_PER_SECOND;
use redwall_store::{Instance, InstanceApiKey};
use serde_json::json;

use crate::audit::{Event, Who};
use crate::instances::options::{check_rules, rules_from_json};
use crate::{Hub, HubError, HubResult};

/// What an instance API key is asked to be.
#[derive(Debug)]
pub struct KeyRequest {
    pub name: String,
    pub expires_in_days: Option<i64>,
    /// The key is good below this path only.
    pub path_prefix: Option<String>,
}

fn instance_event(i: &Instance, event: AuditEvent, details: serde_json::Value) -> Event {
    Event::in_team(&i.team_id, event, format!("instance:{}", i.name), details)
}

impl Hub {
    /// Replaces the instance's ordered rule list (first match wins; no
    /// match is denied).
    pub async fn set_instance_routes(
        &self,
        who: Who<'_>,
        instance: &Instance,
        rules: Vec<RouteRule>,
    ) -> HubResult<Vec<RouteRule>> {
        check_rules(&rules)?;
        let json = serde_json::to_string(&rules).map_err(HubError::internal)?;
        let details = json!({ "before": rules_from_json(&instance.routes), "after": rules });
        let mut tx = self.begin().await?;
        tx.set_instance_routes(&instance.id, &json, self.now())
            .await?;
        self.note(
            &mut tx,
            who,
            instance_event(instance, AuditEvent::InstanceRoutesChanged, details),
        );
        self.commit(tx, 1).await?;
        self.caches.forget_instance(&instance.name);
        self.tell_hosting_agent(instance).await;
        Ok(rules)
    }

    pub async fn instance_keys(&self, instance_id: &str) -> HubResult<Vec<InstanceApiKey>> {
        Ok(self.store.list_instance_api_keys(instance_id).await?)
    }

    /// Creates an API key for the instance's endpoints; its secret is shown
    /// once and stored only as a digest.
    pub async fn create_instance_key(
        &self,
        who: Who<'_>,
        instance: &Instance,
        creator_id: &str,
        req: KeyRequest,
    ) -> HubResult<(Secret, InstanceApiKey)> {
        let name = key_name(&req.name)?;
        key_expiry_days(req.expires_in_days)?;
        if let Some(p) = &req.path_prefix {
            key_path_prefix(p)?;
        }
        let existing = self.store.list_instance_api_keys(&instance.id).await?;
        if existing.iter().filter(|k| k.revoked_at.is_none()).count() >= MAX_INSTANCE_KEYS {
            return Err(HubError::conflict(
                "too_many_keys",
                format!("an instance may hold at most {MAX_INSTANCE_KEYS} keys"),
            ));
        }
        let now = self.now();
        let secret = token::new_token(INSTANCE_KEY_PREFIX);
        let key = InstanceApiKey {
            id: crate::ids::new_id(),
            instance_id: instance.id.clone(),
            name,
            key_digest: token::token_digest(secret.expose()).to_vec(),
            display_prefix: token::display_prefix(secret.expose()),
            path_prefix: req.path_prefix,
            created_by: Some(creator_id.to_string()),
            created_at: now,
            expires_at: req
                .expires_in_days
                .map(|d| now + d * 86_400 * MICROS_PER_SECOND),
            revoked_at: None,
            last_used_at: None,
        };
        let details = json!({
            "key_id": key.id,
            "name": key.name,
            "prefix": key.display_prefix,
            "path_prefix": key.path_prefix,
        });
        let mut tx = self.begin().await?;
        tx.create_instance_api_key(&key).await?;
        self.note(
            &mut tx,
            who,
            instance_event(instance, AuditEvent::InstanceKeyCreated, details),
        );
        self.commit(tx, 1).await?;
        self.tell_hosting_agent(instance).await;
        Ok((secret, key))
    }

    /// Revokes one of the instance's keys; the proxy refuses it from now on.
    pub async fn revoke_instance_key(
        &self,
        who: Who<'_>,
        instance: &Instance,
        key_id: &str,
    ) -> HubResult<()> {
        let mut tx = self.begin().await?;
        if !tx
            .revoke_instance_api_key(&instance.id, key_id, self.now())
            .await?
        {
            return Err(HubError::NotFound);
        }
        self.note(
            &mut tx,
            who,
            instance_event(
                instance,
                AuditEvent::InstanceKeyRevoked,
                json!({ "key_id": key_id }),
            ),
        );
        self.commit(tx, 1).await?;
        self.caches.forget_instance_keys();
        self.tell_hosting_agent(instance).await;
        Ok(())
    }
}

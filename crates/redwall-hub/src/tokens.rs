//! Personal access tokens: created and revoked by their holder, each a
//! change with its audit entry. The secret is shown once, at creation.

use redwall_crypto::token::{self, PERSONAL_ACCESS_PREFIX};
use redwall_crypto::Secret;
use redwall_policy::access::TokenScope;
use redwall_policy::audit_event::AuditEvent;
use redwall_policy::token_rules::{expiry_days, permission_limit, token_name, MAX_TOKENS_PER_USER};
use redwall_policy::MICROS_PER_SECOND;
use redwall_store::ApiToken;
use serde_json::json;

use crate::audit::{Event, Who};
use crate::{Hub, HubError, HubResult};

/// What a token is asked to be.
#[derive(Debug)]
pub struct TokenRequest {
    pub name: String,
    pub scope: TokenScope,
    pub expires_in_days: Option<i64>,
    /// Limited to one of the holder's teams.
    pub team_id: Option<String>,
    /// Limited to these permissions.
    pub permissions: Option<Vec<String>>,
}

impl Hub {
    /// Creates a token for `user_id`; its secret (shown once) and record.
    /// The limits only narrow: at each use the holder's current role still
    /// decides.
    pub async fn create_token(
        &self,
        who: Who<'_>,
        user_id: &str,
        req: TokenRequest,
    ) -> HubResult<(Secret, ApiToken)> {
        let name = token_name(&req.name)?;
        expiry_days(req.expires_in_days)?;
        if let Some(team) = &req.team_id {
            let member =
                crate::ids::looks_like_id(team) && self.membership(team, user_id).await?.is_some();
            if !member {
                return Err(HubError::invalid(
                    "invalid_team",
                    "you are not a member of this team",
                ));
            }
        }
        let permissions = match &req.permissions {
            None => None,
            Some(names) => {
                let list = permission_limit(names, req.team_id.is_some())?;
                Some(serde_json::to_string(&list).unwrap_or_else(|_| "[]".into()))
            }
        };
        if self.store.list_api_tokens(user_id).await?.len() >= MAX_TOKENS_PER_USER {
            return Err(HubError::conflict(
                "too_many_tokens",
                format!("a user may hold at most {MAX_TOKENS_PER_USER} tokens; revoke some first"),
            ));
        }
        let now = self.now();
        let secret = token::new_token(PERSONAL_ACCESS_PREFIX);
        let record = ApiToken {
            id: crate::ids::new_id(),
            user_id: user_id.to_string(),
            name,
            token_digest: token::token_digest(secret.expose()).to_vec(),
            display_prefix: token::display_prefix(secret.expose()),
            scope: req.scope.name().to_string(),
            team_id: req.team_id,
            permissions,
            created_at: now,
            expires_at: req
                .expires_in_days
                .map(|d| now + d * 86_400 * MICROS_PER_SECOND),
            last_used_at: None,
        };
        let mut tx = self.begin().await?;
        tx.create_api_token(&record).await?;
        self.note(
            &mut tx,
            who,
            Event::on_platform(AuditEvent::TokenCreated, format!("token:{}", &record.id),
                json!({ "name": record.name, "scope": record.scope, "prefix": record.display_prefix, "team_id": record.team_id, "permissions": record.permissions }),
            ),
        );
        self.commit(tx, 1).await?;
        Ok((secret, record))
    }

    /// Revokes one of `user_id`'s tokens; someone else's is not found.
    pub async fn revoke_token(&self, who: Who<'_>, user_id: &str, token_id: &str) -> HubResult<()> {
        let mut tx = self.begin().await?;
        if !tx.revoke_api_token(user_id, token_id).await? {
            return Err(HubError::NotFound);
        }
        self.note(
            &mut tx,
            who,
            Event::on_platform(
                AuditEvent::TokenRevoked,
                format!("token:{}", token_id),
                json!({}),
            ),
        );
        self.commit(tx, 1).await?;
        self.caches.forget_token(token_id);
        Ok(())
    }
}

impl Hub {
    /// The user's personal access tokens (never their secrets).
    pub async fn tokens_of(&self, user_id: &str) -> HubResult<Vec<ApiToken>> {
        Ok(self.store.list_api_tokens(user_id).await?)
    }
}

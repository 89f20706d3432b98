//! Refused SSO requests an anonymous client can cause at will (a callback
//! with a bad or replayed state, a provider error, a malformed query, a
//! throttled request), audited in aggregate by the audit log's refusal
//! recorder ([`audit::record_refusal`]): per client address, provider and
//! reason, the first refusal of each minute is written at once and the rest
//! of that minute as one entry with their `count`.

use crate::audit::Refusal;
use crate::error::ApiResult;
use crate::net::client::ClientInfo;
use crate::state::AppState;
use redwall_policy::audit_event::AuditEvent;
use serde_json::json;

/// Audits one refused SSO request (`auth.sso_failed`) with the provider's
/// name and `extra` details.
pub async fn record(
    state: &AppState,
    client: &ClientInfo,
    provider: &str,
    reason: &'static str,
    extra: serde_json::Value,
) -> ApiResult<()> {
    state.hub.metrics.login_failed();
    let mut details = json!({ "provider": provider });
    if let (Some(d), serde_json::Value::Object(more)) = (details.as_object_mut(), extra) {
        d.extend(more);
    }
    state
        .hub
        .record_refusal(
            &client.origin(),
            Refusal {
                event: AuditEvent::SsoLoginFailed,
                reason,
                team_id: None,
                target: Some(format!("provider:{provider}")),
                actor: None,
                details,
            },
        )
        .await?;
    Ok(())
}

//! Applies the group mapping to a user at sign-in: the rules of
//! `redwall_policy::sso_mapping` decide, the hub writes
//! ([`redwall_hub::Hub::apply_sso_mapping`]).

use crate::error::ApiResult;
use crate::net::client::ClientInfo;
use crate::state::AppState;
use redwall_policy::sso_mapping::{evaluate, MappingOutcome};
use redwall_store::User;

pub async fn apply(
    state: &AppState,
    client: &ClientInfo,
    user: &User,
    provider: &str,
    groups: &[String],
) -> ApiResult<MappingOutcome> {
    let outcome = evaluate(&state.config.sso.mappings, provider, groups);
    state
        .hub
        .apply_sso_mapping(&client.origin(), user, provider, &outcome)
        .await?;
    Ok(outcome)
}

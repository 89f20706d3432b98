//! Accounts as the API shows them. The account operations themselves
//! (passwords, creation) are the hub's: `redwall_hub::passwords`.

use crate::clock::rfc3339;
use redwall_store::User;
use serde::{Deserialize, Serialize};

/// An account as the API shows it (no secret-derived field).
/// Also read back by the console (`console/admin.rs`).
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub is_admin: bool,
    pub suspended: bool,
    pub mfa_enabled: bool,
    pub created_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id.clone(),
            username: u.username.clone(),
            is_admin: u.is_admin,
            suspended: u.suspended,
            mfa_enabled: u.mfa_enabled,
            created_at: rfc3339(u.created_at),
        }
    }
}

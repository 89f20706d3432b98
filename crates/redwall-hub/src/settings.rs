//! Platform settings that admins change at run time (kept in the database,
//! read through a short cache so every node sees a change within seconds).

use crate::{HubError, HubResult};
use redwall_policy::session_rules::SessionLifetimes;
use redwall_policy::Micros;
use redwall_store::Store;
use serde::{Deserialize, Serialize};
use std::sync::RwLock;

const KEY: &str = "platform";
const REFRESH_MICROS: Micros = 2_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlatformSettings {
    /// Every user must use MFA; users without it must enrol before anything else.
    pub require_mfa: bool,
    pub session_idle_secs: i64,
    pub session_absolute_secs: i64,
}

impl PlatformSettings {
    pub fn from_config(sessions: SessionLifetimes) -> Self {
        PlatformSettings {
            require_mfa: false,
            session_idle_secs: sessions.idle_secs,
            session_absolute_secs: sessions.absolute_secs,
        }
    }

    pub fn lifetimes(&self) -> SessionLifetimes {
        SessionLifetimes {
            absolute_secs: self.session_absolute_secs,
            idle_secs: self.session_idle_secs,
        }
    }
}

pub struct SettingsCache {
    defaults: PlatformSettings,
    current: RwLock<(Micros, PlatformSettings)>,
}

impl SettingsCache {
    pub fn new(defaults: PlatformSettings) -> Self {
        SettingsCache {
            defaults,
            current: RwLock::new((Micros::MIN, defaults)),
        }
    }

    pub async fn get(&self, store: &Store, now: Micros) -> HubResult<PlatformSettings> {
        if let Ok(guard) = self.current.read() {
            if now.saturating_sub(guard.0) < REFRESH_MICROS && now >= guard.0 {
                return Ok(guard.1);
            }
        }
        let loaded = match store.get_setting(KEY).await? {
            Some(json) => serde_json::from_str(&json).unwrap_or(self.defaults),
            None => self.defaults,
        };
        if let Ok(mut guard) = self.current.write() {
            *guard = (now, loaded);
        }
        Ok(loaded)
    }

    pub async fn put(&self, store: &Store, value: PlatformSettings, now: Micros) -> HubResult<()> {
        let json = serde_json::to_string(&value).map_err(HubError::internal)?;
        store.put_setting(KEY, &json, now).await?;
        if let Ok(mut guard) = self.current.write() {
            *guard = (now, value);
        }
        Ok(())
    }
}

//! Platform settings that admins change at run time (kept in the database,
//! read through a short cache so every node sees a change within seconds).

use crate::audit::{Event, Who};
use crate::{Hub, HubError, HubResult};
use redwall_policy::audit_event::AuditEvent;
use redwall_policy::session_rules::SessionLifetimes;
use redwall_policy::Micros;
use redwall_store::Store;
use serde::{Deserialize, Serialize};
use serde_json::json;
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
    /// How many automatic snapshots (taken at each deploy) each instance
    /// keeps; manual and imported ones are always kept.
    #[serde(default = "default_keep_automatic")]
    pub snapshot_keep_automatic: usize,
}

fn default_keep_automatic() -> usize {
    redwall_policy::snapshot_rules::DEFAULT_KEEP_AUTOMATIC
}

impl PlatformSettings {
    pub fn from_config(sessions: SessionLifetimes) -> Self {
        PlatformSettings {
            require_mfa: false,
            session_idle_secs: sessions.idle_secs,
            session_absolute_secs: sessions.absolute_secs,
            snapshot_keep_automatic: default_keep_automatic(),
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

    /// Remembers settings just stored, so this process sees them at once.
    fn remember(&self, value: PlatformSettings, now: Micros) {
        if let Ok(mut guard) = self.current.write() {
            *guard = (now, value);
        }
    }
}

/// What an admin changes of the platform settings; `None` keeps a value.
#[derive(Debug, Default)]
pub struct SettingsChange {
    pub require_mfa: Option<bool>,
    pub session_idle_secs: Option<i64>,
    pub session_absolute_secs: Option<i64>,
    pub snapshot_keep_automatic: Option<usize>,
}

impl Hub {
    /// The platform settings as they stand (read through a short cache, so
    /// every node sees a change within seconds).
    pub async fn platform_settings(&self) -> HubResult<PlatformSettings> {
        self.settings.get(&self.store, self.now()).await
    }

    /// Changes the platform settings, validated whole first.
    pub async fn change_settings(
        &self,
        who: Who<'_>,
        change: SettingsChange,
    ) -> HubResult<PlatformSettings> {
        let now = self.now();
        let before = self.settings.get(&self.store, now).await?;
        let after = PlatformSettings {
            require_mfa: change.require_mfa.unwrap_or(before.require_mfa),
            session_idle_secs: change.session_idle_secs.unwrap_or(before.session_idle_secs),
            session_absolute_secs: change
                .session_absolute_secs
                .unwrap_or(before.session_absolute_secs),
            snapshot_keep_automatic: change
                .snapshot_keep_automatic
                .unwrap_or(before.snapshot_keep_automatic),
        };
        redwall_policy::snapshot_rules::check_keep_automatic(after.snapshot_keep_automatic)?;
        let problems = after.lifetimes().problems();
        if !problems.is_empty() {
            return Err(HubError::invalid("invalid_settings", problems.join("; ")));
        }
        let json = serde_json::to_string(&after).map_err(HubError::internal)?;
        let mut tx = self.begin().await?;
        tx.put_setting(KEY, &json, now).await?;
        self.note(
            &mut tx,
            who,
            Event::on_platform(
                AuditEvent::SettingChanged,
                "platform".into(),
                json!({ "before": before, "after": after }),
            ),
        );
        self.commit(tx, 1).await?;
        self.settings.remember(after, now);
        Ok(after)
    }
}

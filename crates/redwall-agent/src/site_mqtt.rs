//! Turning on the MQTT store-and-forward bridge ([`crate::bridge`]) when
//! the operator asks for it in `DIR/bridge.toml` (the fields of
//! [`BridgeConfig`]: `client_id`, `[local]`, `[team]`, `[outbox]`; see
//! README's "Remote agents"). Messages the site's flows publish on its
//! local broker are kept on disk and delivered to the team broker in
//! order, once, whenever the link allows.

use std::path::Path;

use tracing::info;

use crate::bridge::{Bridge, BridgeConfig, BridgeHandle};
use crate::run::RunError;

/// The operator's file; without it the agent bridges nothing.
pub const CONFIG_FILE: &str = "bridge.toml";

/// Reads the configuration and starts the bridge; `None` without the file.
pub(crate) fn start(dir: &Path) -> Result<Option<BridgeHandle>, RunError> {
    let path = dir.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RunError::Bridge(format!("{}: {e}", path.display()))),
    };
    let config: BridgeConfig =
        toml::from_str(&text).map_err(|e| RunError::Bridge(format!("{}: {e}", path.display())))?;
    let bridge = Bridge::start(&config, dir).map_err(|e| RunError::Bridge(e.to_string()))?;
    info!("bridging the site's MQTT messages to the team broker through the outbox");
    Ok(Some(bridge))
}

//! Turning on the MQTT store-and-forward bridge ([`crate::bridge`]) when
//! the operator asks for it in `DIR/bridge.toml` (the fields of
//! [`BridgeConfig`]: `client_id`, `[local]`, `[team]`, `[outbox]`; see
//! README's "Remote agents"). Messages the site's flows publish on its
//! local broker are kept on disk and delivered to the team broker in
//! order, once, whenever the link allows.
//!
//! Without `[local]`, the local broker is the agent's own site broker
//! ([`crate::site_broker`], `DIR/site-broker.toml`): the bridge logs in as
//! its built-in user `bridge` with the password made for this run.

use std::path::Path;

use tracing::info;

use crate::bridge::{Bridge, BridgeConfig, BridgeHandle, SiteBrokerLink};
use crate::run::RunError;
use crate::site_broker::{SiteBroker, BRIDGE_USER};

/// The operator's file; without it the agent bridges nothing.
pub const CONFIG_FILE: &str = "bridge.toml";

/// Reads the configuration and starts the bridge; `None` without the file.
/// `site`: the agent's site broker, if it runs one.
pub(crate) fn start(
    dir: &Path,
    site: Option<&SiteBroker>,
) -> Result<Option<BridgeHandle>, RunError> {
    let path = dir.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RunError::Bridge(format!("{}: {e}", path.display()))),
    };
    let config: BridgeConfig =
        toml::from_str(&text).map_err(|e| RunError::Bridge(format!("{}: {e}", path.display())))?;
    let link = match (&config.local, site) {
        (None, Some(site)) => Some(SiteBrokerLink {
            address: site.address(),
            username: BRIDGE_USER.to_owned(),
            password: zeroize::Zeroizing::new(site.credentials().bridge_password().to_owned()),
        }),
        _ => None,
    };
    let bridge = Bridge::start_with(&config, dir, link.as_ref())
        .map_err(|e| RunError::Bridge(format!("{}: {e}", path.display())))?;
    match &link {
        Some(link) => info!(
            "bridging the site broker's MQTT messages ({}) to the team broker through the outbox",
            link.address
        ),
        None => info!("bridging the site's MQTT messages to the team broker through the outbox"),
    }
    Ok(Some(bridge))
}

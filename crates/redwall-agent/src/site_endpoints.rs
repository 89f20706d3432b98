//! Turning on the site's own endpoints (`local_endpoints`) when the
//! operator asks for them in `DIR/local-endpoints.toml`:
//!
//! ```toml
//! listen = "0.0.0.0:8443"
//! names = ["plant-gw.example.test"]   # on the self-signed certificate
//! # cert = "/etc/redwall-agent/local.crt" and key = ".../local.key"
//! ```
//!
//! They judge requests by the hub instance's rules and keys, as last
//! received (and kept in `node-red.hosted`, so they hold while the hub
//! cannot be reached), and refuse everything until the agent's Node-RED
//! is an instance of the hub.

use std::path::Path;
use std::sync::Arc;

use tracing::{error, info};

use crate::hosting::HostedIdentity;
use crate::local_endpoints::{serve, LocalEndpointsConfig};
use crate::node_red::NodeRed;
use crate::run::RunError;
use crate::session::SiteAccessSender;

/// The operator's file; without it the agent serves nothing locally.
pub const CONFIG_FILE: &str = "local-endpoints.toml";

/// Reads the configuration and starts serving until `stop`; the sender of
/// the access they judge by. `None` without the file.
pub(crate) fn start(
    dir: &Path,
    node_red: &Arc<NodeRed>,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<Option<SiteAccessSender>, RunError> {
    let path = dir.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(RunError::LocalEndpoints(format!("{}: {e}", path.display()))),
    };
    let config: LocalEndpointsConfig = toml::from_str(&text)
        .map_err(|e| RunError::LocalEndpoints(format!("{}: {e}", path.display())))?;
    config
        .check()
        .map_err(|e| RunError::LocalEndpoints(e.to_string()))?;
    let kept = HostedIdentity::load(dir)
        .ok()
        .flatten()
        .and_then(|h| h.site_access());
    let (tx, rx) = tokio::sync::watch::channel(kept);
    let dir = dir.to_owned();
    let address = node_red.address();
    let listen = config.listen;
    tokio::spawn(async move {
        info!("serving the flows' endpoints on the site's network at {listen}");
        let stopped = async {
            let _ = stop.await;
        };
        if let Err(e) = serve(config, &dir, address, rx, stopped).await {
            error!("{e}");
        }
    });
    Ok(Some(tx))
}

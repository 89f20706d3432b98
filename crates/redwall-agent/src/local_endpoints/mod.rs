//! Local endpoints: the flows' own endpoints (http-in, websocket-in) served
//! by the agent on the site's network, under the rules the hub applies, so
//! plant-floor clients reach them directly, also while the hub link is down.
//!
//! The hub stays the only way to the editor and to anything that needs a
//! Redwall identity. Here, per request (see [`decision`]):
//!
//! - the path must be clean ([`is_clean_path`], else 400 `bad_path`);
//! - `/editor` and everything below it (any case) is never served: 404
//!   `not_found` (Node-RED's admin root; the editor is the hub's);
//! - without a [`SiteAccess`] (the agent never heard from the hub which
//!   instance it is): 503 `not_hosted`;
//! - the instance's ordered rules decide ([`match_rule`], then
//!   [`decide`]): no rule 403 `no_matching_rule`; the client's socket
//!   address outside the team's or the rule's ranges 403
//!   `address_refused`; `public` passes; `api_key` needs one of the
//!   instance's keys (`X-Api-Key`, else `Authorization: Bearer`), compared
//!   by SHA-256 in constant time, not expired: missing 401
//!   `credential_required`, wrong or expired 401 `credential_invalid`,
//!   outside the key's path prefix 403 `forbidden` (as the hub answers);
//!   `session` and `basic` need a Redwall identity, which only the hub
//!   checks: 403 `needs_hub`.
//!
//! An admitted request goes on to Node-RED at `127.0.0.1:PORT` as the
//! hub's proxy sends it ([`hygiene`], `forward.rs`): hop-by-hop headers,
//! every `x-redwall*` header (in any spelling), our cookies, the consumed
//! credential and any `rw?_` token dropped; `Forwarded`, `X-Forwarded-*`
//! and `X-Real-IP` say what the agent saw on the socket (the client's own
//! are never passed on); a 5-minute endpoint token minted with the
//! instance's endpoint key, which Node-RED's generated `settings.js`
//! checks (Node-RED answers nothing without it). WebSocket upgrades are
//! joined byte for byte and judged again every second, so a changed rule
//! or an expired key closes them. Answers lose any `Set-Cookie` that is or
//! could be read as ours, and challenges where Redwall decides.
//!
//! Every answer of our own is JSON, `{"error":{"code","message"}}`; each
//! refusal is one `info` line (method, path, peer, reason), never a key.
//!
//! # Transport
//!
//! TLS (rustls, ring, TLS 1.2+, ALPN `h2` and `http/1.1`) always, with the
//! operator's certificate or a self-signed one the agent makes once in
//! `DIR/local-endpoints/` (key 0600; its SHA-256 is logged for pinning).
//! Plain HTTP only when asked for, and only on a loopback address: any
//! other listen address with `plain_http` is refused at start.
//!
//! # Configuration (TOML)
//!
//! ```toml
//! [local_endpoints]
//! listen = "0.0.0.0:8443"
//! # Either both (PEM files), or neither for a self-signed certificate that
//! # names localhost, loopback, the listen address and `names`.
//! # cert = "/etc/redwall-agent/local.crt"
//! # key = "/etc/redwall-agent/local.key"
//! names = ["plant-gw.example.test", "10.1.2.3"]
//! max_body_bytes = 10485760     # default 10 MiB; larger bodies get 413
//! max_connections = 512         # default
//! upgrade_answer_secs = 30      # default
//! ```
//!
//! # Use
//!
//! ```ignore
//! let (tx, rx) = tokio::sync::watch::channel(None);
//! // on every `HubMessage::Host` (the endpoint key as `HostedIdentity`
//! // opened it), and at start from what the agent kept of the last one
//! // (rules and key digests included), so the endpoints serve after a
//! // restart while the hub is away:
//! tx.send_replace(Some(Arc::new(SiteAccess::from_hosted(&hosted, endpoint_key)?)));
//! local_endpoints::serve(config, &state_dir, node_red, rx, shutdown).await?;
//! ```
//!
//! [`is_clean_path`]: redwall_policy::route_policy::is_clean_path
//! [`match_rule`]: redwall_policy::route_policy::match_rule
//! [`decide`]: redwall_policy::route_policy::decide

mod config;
pub mod decision;
mod forward;
pub mod hygiene;
mod server;
mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use redwall_crypto::Secret;
use redwall_policy::agent_protocol::{HostedApiKey, HostedInstance};
use redwall_policy::route_policy::{validate_rules, RouteRule};
use redwall_policy::team_rules::TeamRanges;
use tokio::sync::watch;

pub use crate::site_tls::{SELF_SIGNED_CERT, SELF_SIGNED_KEY};
pub use config::LocalEndpointsConfig;
pub use server::LocalEndpoints;
pub use tls::SELF_SIGNED_DIR;

/// Lifetime of the endpoint token added to each forwarded request (as the
/// hub's proxy).
pub const TOKEN_SECS: i64 = 300;

/// What the hub said about the instance the agent's Node-RED is: its id
/// (the tokens' audience), its ordered route rules, its API keys (digests
/// only), the team's client ranges, and its endpoint token key.
#[derive(Clone)]
pub struct SiteAccess {
    pub instance_id: String,
    pub rules: Vec<RouteRule>,
    pub api_keys: Vec<HostedApiKey>,
    /// The team's allowed client ranges, which the hub checks on top of
    /// each rule's own. `HostedInstance` does not carry them yet, so
    /// [`SiteAccess::new`] starts from [`TeamRanges::Any`]; set this field
    /// once the hub sends them.
    pub team_ranges: TeamRanges,
    pub endpoint_key: Secret,
}

impl std::fmt::Debug for SiteAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteAccess")
            .field("instance_id", &self.instance_id)
            .field("rules", &self.rules.len())
            .field("api_keys", &self.api_keys.len())
            .finish_non_exhaustive()
    }
}

impl SiteAccess {
    /// The access for one hosted instance, its rules checked as the hub
    /// checks them before storing (a list that fails is refused whole,
    /// never served in part).
    pub fn new(
        instance_id: String,
        rules: Vec<RouteRule>,
        api_keys: Vec<HostedApiKey>,
        endpoint_key: Secret,
    ) -> Result<Self, Error> {
        if instance_id.is_empty() {
            return Err(Error::Access("the instance id is empty".to_owned()));
        }
        if endpoint_key.expose().len() < 32 {
            return Err(Error::Access(
                "the endpoint key is shorter than 32 characters".to_owned(),
            ));
        }
        validate_rules(&rules).map_err(|e| Error::Access(e.to_string()))?;
        Ok(Self {
            instance_id,
            rules,
            api_keys,
            team_ranges: TeamRanges::Any,
            endpoint_key,
        })
    }

    /// The access the hub's `Host` message describes, with the endpoint
    /// key the agent opened from it (`HostedIdentity`).
    pub fn from_hosted(hosted: &HostedInstance, endpoint_key: Secret) -> Result<Self, Error> {
        Self::new(
            hosted.id.clone(),
            hosted.rules.clone(),
            hosted.api_keys.clone(),
            endpoint_key,
        )
    }
}

/// The access the endpoints judge by: `None` until the hub said which
/// instance the agent's Node-RED is. A new value applies from the next
/// request (and the next second of an open WebSocket).
pub type AccessWatch = watch::Receiver<Option<Arc<SiteAccess>>>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("local endpoints: plain HTTP is only allowed on a loopback address, not on {0}; remove `plain_http` (TLS) or listen on 127.0.0.1 or ::1")]
    PlainHttpNotLoopback(SocketAddr),
    #[error("local endpoints: {0}")]
    Config(String),
    #[error("local endpoints: TLS: {0}")]
    Tls(String),
    #[error("local endpoints: the hub's access for this instance is refused: {0}")]
    Access(String),
    #[error("local endpoints: cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("local endpoints: {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Serves the local endpoints on `config.listen` until `shutdown`
/// completes, forwarding what the rules admit to Node-RED at `node_red`.
/// `state_dir` holds the self-signed certificate, if one is used. Errors
/// only at start (configuration, certificate, bind); afterwards every
/// problem is one request's answer.
pub async fn serve(
    config: LocalEndpointsConfig,
    state_dir: &Path,
    node_red: SocketAddr,
    access: AccessWatch,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    LocalEndpoints::bind(&config, state_dir, node_red, access)
        .await?
        .run(shutdown)
        .await;
    Ok(())
}

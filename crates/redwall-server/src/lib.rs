//! Redwall's HTTP server.
//!
//! A request flows: transport (rustls) -> layers (panic catcher, security
//! headers, client address, body limit) -> route guard (authenticate, CSRF,
//! the permission table of `redwall-policy`) -> handler -> store -> audit.

pub mod accounts;
pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod console;
pub mod error;
pub mod files;
pub mod front_door;
pub mod import;
pub use redwall_hub::instances;
pub mod keys;
pub mod logging;
pub mod login;
pub use redwall_hub::metrics;
pub mod net;
pub mod proxy;
pub mod server;
pub use redwall_hub::settings;
pub mod sso;
pub mod state;

/// Moved to the hub; kept under these paths for the server's modules.
pub use redwall_hub::{clock, ids, ttl_cache};
pub use server::{open_state, start, RunningServer, StartOptions};
pub use state::AppState;

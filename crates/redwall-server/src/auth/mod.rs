//! Who is asking: sessions, tokens, CSRF, login throttling, and the guard that
//! applies the permission table to every route.

pub use redwall_hub::activity;
pub mod csrf;
pub mod device;
pub mod guard;
pub use redwall_hub::hash_gate;
pub mod principal;
pub mod session;
pub use redwall_hub::throttle;
pub mod token;

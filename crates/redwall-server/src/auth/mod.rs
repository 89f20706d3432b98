//! Who is asking: sessions, tokens, CSRF, login throttling, and the guard that
//! applies the permission table to every route.

pub mod activity;
pub mod csrf;
pub mod device;
pub mod guard;
pub mod hash_gate;
pub mod principal;
pub mod session;
pub mod throttle;
pub mod token;

//! Transport concerns: TLS, the client's address, security headers.

pub mod authority;
pub mod client;
pub mod cookies;
pub mod drain;
pub mod headers;
pub mod tls;

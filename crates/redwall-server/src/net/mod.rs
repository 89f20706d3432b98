//! Transport concerns: TLS, the client's address, security headers.

pub mod client;
pub mod headers;
pub mod tls;

//! The Redwall agent: runs on a host that can only dial out, enrols once
//! with the hub, then keeps one WebSocket open to it (it never listens on
//! any port). The protocol is in [`redwall_policy::agent_protocol`].
//!
//! # Files on disk
//!
//! Everything lives in one state directory (`/var/lib/redwall-agent`,
//! or `--dir`, or `REDWALL_AGENT_DIR`), created mode 0700:
//!
//! - `agent.key`: the 32-byte seed of the agent's Ed25519 key, mode 0600,
//!   created exclusively (`O_CREAT|O_EXCL`) so it is never readable by
//!   others, even briefly, and never overwritten. `run` refuses to start
//!   when the group or others can read it. The key never leaves the host:
//!   the hub only ever sees its public half and signatures made with it.
//! - `agent.json`: the hub's URL, how to trust its certificate, the ids
//!   the hub gave the agent, its name, the hub's signing key; mode 0600.
//!
//! # What is never written
//!
//! The provisioning token. It is read from the bundle, sent once in the
//! enrolment request, and dropped; it is not in `agent.json` (which has no
//! field for it), not in any log line, not in any error message. There is
//! no other secret: the agent proves itself with its key, not with a
//! bearer token.
//!
//! # TLS
//!
//! One rustls configuration ([`tls::client_config`]) serves enrolment and
//! the WebSocket, TLS 1.2+ only:
//!
//! - with `cert_sha256` in the bundle, exactly the hub certificate with
//!   that SHA-256 is accepted, whatever its name or issuer (a self-signed
//!   hub);
//! - else with `ca_pem`, the certificate must chain to that CA alone and
//!   name the hub's host;
//! - else the public roots (webpki-roots) apply, as for any website.
//!
//! # Library
//!
//! The binary is a thin shell over [`enrol::enrol`] and [`run::run`] (or
//! [`run::run_dir`]), which the tests call directly: `run` returns a
//! [`RunOutcome`] instead of exiting.

pub mod enrol;
pub mod hub_url;
pub mod run;
mod session;
pub mod state;
pub mod tls;

pub use enrol::{enrol, read_bundle_arg, EnrolError, Enrolled};
pub use run::{run, run_dir, RunError, RunOptions, RunOutcome};
pub use state::{Agent, AgentConfig, StateError, DEFAULT_DIR};

/// An error with its sources: reqwest and rustls put the useful part (the
/// TLS or connect failure) there, not in the top-level message.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

//! Single sign-on: OpenID Connect and LDAP logins end in one place,
//! [`login::complete`], which links or provisions the Redwall user, applies
//! the group mapping, asks for Redwall's MFA when the provider does not do
//! its own, and starts the session.

pub mod config;
pub mod ldap;
pub mod login;
pub mod oidc;
pub mod refusals;
pub mod secrets;

/// Why an SSO login did not succeed: `reason`, a fixed word, goes to the
/// audit log; `detail` (never a password or token) to the server log and
/// `redwall config check`, never to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub reason: &'static str,
    pub detail: String,
}

impl Failure {
    pub(crate) fn new(reason: &'static str, detail: impl Into<String>) -> Failure {
        Failure {
            reason,
            detail: detail.into(),
        }
    }
}

//! Single sign-on: OpenID Connect and LDAP logins end in one place,
//! [`login::complete`], which links or provisions the Redwall user, applies
//! the group mapping, asks for Redwall's MFA when the provider does not do
//! its own, and starts the session.

pub mod config;
pub mod ldap;
pub mod login;
pub mod mapping;
pub mod oidc;
pub mod secrets;

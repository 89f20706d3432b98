//! Single sign-on settings: OpenID Connect and LDAP providers, and the
//! group-to-role mapping rules.
//!
//! Provider secrets (OIDC client secret, LDAP service-account password) are
//! never written in the clear in the configuration: they come from an
//! environment variable (set by a secret store) or as a value sealed with
//! the master key (`redwall sso seal-secret`).

use redwall_policy::sso_mapping::MappingRule;
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SsoConfig {
    pub oidc: Vec<OidcProvider>,
    pub ldap: Vec<LdapProvider>,
    pub mappings: Vec<MappingRule>,
}

/// Where a provider secret comes from.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretRef {
    /// The name of an environment variable holding it.
    pub env: Option<String>,
    /// The value sealed with the master key (`redwall sso seal-secret`).
    pub sealed: Option<String>,
}

/// What every provider kind shares.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderPolicy {
    /// Create the Redwall user at the first login. Off: the subject must be
    /// linked to an existing user first (`redwall sso link`).
    pub provision: bool,
    /// Users of this provider have no local password.
    pub sso_only: bool,
    /// The provider does its own MFA, so Redwall's TOTP is not asked.
    pub mfa_by_provider: bool,
}

impl Default for ProviderPolicy {
    fn default() -> Self {
        ProviderPolicy {
            provision: true,
            sso_only: true,
            mfa_by_provider: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProvider {
    /// Short name used in URLs and audit entries ([a-z0-9-]).
    pub name: String,
    /// The login button's text.
    pub label: Option<String>,
    /// The issuer URL; its discovery document is read from
    /// `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: SecretRef,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The claim that lists the user's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// The claim used as the username of a provisioned user.
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// A CA certificate (PEM) to trust for this provider, besides the system's.
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Where the provider sends the browser after its own logout (must be
    /// registered there); unset: the provider shows its logged-out page.
    pub post_logout_redirect_url: Option<String>,
    #[serde(flatten)]
    pub policy: ProviderPolicyFields,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapProvider {
    pub name: String,
    pub label: Option<String>,
    /// `ldap://host:389` or `ldaps://host:636`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS (required unless the
    /// server is on loopback).
    #[serde(default)]
    pub starttls: bool,
    /// A CA certificate (PEM) to verify the server with, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// The service account that searches for users.
    pub bind_dn: String,
    #[serde(default)]
    pub bind_password: SecretRef,
    /// Where users are searched, and how: `{username}` is replaced by the
    /// escaped login name (RFC 4515).
    pub user_base: String,
    #[serde(default = "default_user_filter")]
    pub user_filter: String,
    /// The attribute that lists a user's groups (e.g. memberOf). When
    /// empty, groups are searched under `group_base` with `group_filter`
    /// (`{dn}` is the user's escaped DN).
    #[serde(default = "default_group_attribute")]
    pub group_attribute: String,
    pub group_base: Option<String>,
    #[serde(default = "default_group_filter")]
    pub group_filter: String,
    /// A stable, immutable attribute to identify users by (entryUUID,
    /// objectGUID); empty: the DN.
    #[serde(default)]
    pub subject_attribute: String,
    /// The attribute holding the login name of a provisioned user.
    #[serde(default = "default_username_attribute")]
    pub username_attribute: String,
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    #[serde(flatten)]
    pub policy: ProviderPolicyFields,
}

/// `ProviderPolicy`, flattened into each provider table (serde cannot
/// flatten a struct with `deny_unknown_fields` and defaults, so the fields
/// are optional here and resolved by [`ProviderPolicyFields::resolve`]).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ProviderPolicyFields {
    pub provision: Option<bool>,
    pub sso_only: Option<bool>,
    pub mfa_by_provider: Option<bool>,
}

impl ProviderPolicyFields {
    pub fn resolve(&self) -> ProviderPolicy {
        let d = ProviderPolicy::default();
        ProviderPolicy {
            provision: self.provision.unwrap_or(d.provision),
            sso_only: self.sso_only.unwrap_or(d.sso_only),
            mfa_by_provider: self.mfa_by_provider.unwrap_or(d.mfa_by_provider),
        }
    }
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "email".into()]
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_username_claim() -> String {
    "preferred_username".into()
}
fn default_timeout() -> u64 {
    10
}
fn default_user_filter() -> String {
    "(&(objectClass=person)(uid={username}))".into()
}
fn default_group_attribute() -> String {
    "memberOf".into()
}
fn default_group_filter() -> String {
    "(&(objectClass=groupOfNames)(member={dn}))".into()
}
fn default_username_attribute() -> String {
    "uid".into()
}

impl SsoConfig {
    /// Every configuration problem, as (setting, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        let providers = self
            .oidc
            .iter()
            .map(|p| ("sso.oidc", &p.name))
            .chain(self.ldap.iter().map(|p| ("sso.ldap", &p.name)));
        for (setting, name) in providers {
            let shaped = (1..=40).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !shaped {
                out.push((
                    setting,
                    format!("provider name {name:?} must be 1 to 40 of a-z, 0-9 and '-'"),
                ));
            }
            if !names.insert(name.clone()) {
                out.push((setting, format!("two providers are named {name:?}")));
            }
        }
        for p in &self.oidc {
            if !p.issuer.starts_with("https://") && !is_loopback_url(&p.issuer) {
                out.push((
                    "sso.oidc",
                    format!(
                        "{}: the issuer must be https:// (plain http only on loopback)",
                        p.name
                    ),
                ));
            }
            if p.client_secret.env.is_none() && p.client_secret.sealed.is_none() {
                out.push((
                    "sso.oidc",
                    format!("{}: set client_secret.env or client_secret.sealed", p.name),
                ));
            }
        }
        for p in &self.ldap {
            let tls = p.url.starts_with("ldaps://") || p.starttls;
            if !(p.url.starts_with("ldap://") || p.url.starts_with("ldaps://")) {
                out.push((
                    "sso.ldap",
                    format!("{}: the url must start with ldap:// or ldaps://", p.name),
                ));
            } else if !tls && !is_loopback_url(&p.url) {
                out.push(("sso.ldap", format!("{}: passwords would cross the network in the clear; use ldaps:// or starttls = true", p.name)));
            }
            if !p.user_filter.contains("{username}") {
                out.push((
                    "sso.ldap",
                    format!("{}: user_filter must contain {{username}}", p.name),
                ));
            }
        }
        if let Err(e) = redwall_policy::sso_mapping::validate(&self.mappings) {
            out.push(("sso.mappings", e.to_string()));
        }
        for (i, m) in self.mappings.iter().enumerate() {
            if m.provider != "*" && !names.contains(&m.provider) {
                out.push((
                    "sso.mappings",
                    format!(
                        "mapping rule {i} names the unknown provider {:?}",
                        m.provider
                    ),
                ));
            }
        }
        out
    }

    /// Settings that work but likely not as meant, as (setting, message).
    pub fn warnings(&self) -> Vec<(&'static str, String)> {
        redwall_policy::sso_mapping::warnings(&self.mappings)
            .into_iter()
            .map(|m| ("sso.mappings", m))
            .collect()
    }
}

fn is_loopback_url(url: &str) -> bool {
    let host = url
        .split_once("://")
        .map_or("", |(_, rest)| rest)
        .split(['/', '?'])
        .next()
        .unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

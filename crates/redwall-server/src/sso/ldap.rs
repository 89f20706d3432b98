//! LDAP and Active Directory logins: find the user with the service
//! account, then bind as that user with the password they typed.
//!
//! The service account's search happens first and the user's own bind
//! last, so nothing the directory says about a user is used unless that
//! bind succeeded. Every value the user supplies goes into a filter only
//! through `ldap_escape` (RFC 4515), and an empty password is refused before
//! any bind: a simple bind with a DN and no password is an *unauthenticated*
//! bind (RFC 4513 5.1.2), which many servers answer with success.
//!
//! TLS is always verified (system roots plus the provider's `ca_file`);
//! plain `ldap://` is only accepted on loopback, by the configuration check.

use crate::sso::config::LdapProvider;
use crate::sso::login::ExternalIdentity;
use ldap3::{ldap_escape, Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry};
use redwall_crypto::Secret;
use rustls::crypto::ring;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// Longest login name or password sent to the directory: anything longer
/// is not a real credential and only costs the server work.
const MAX_INPUT_BYTES: usize = 4096;

pub use super::Failure;

impl Failure {
    /// The failure was caused by what the user typed (so it counts towards
    /// the login throttle), not by the directory or the configuration.
    pub fn is_credentials(&self) -> bool {
        matches!(
            self.reason,
            "wrong_password" | "unknown_user" | "ambiguous_user" | "empty_password" | "bad_input"
        )
    }
}

/// What the directory says about a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectoryUser {
    pub dn: String,
    pub subject: String,
    pub username: Option<String>,
    pub groups: Vec<String>,
}

/// The system's trusted roots, read once: reading them costs milliseconds
/// that a login should not pay each time.
static SYSTEM_ROOTS: LazyLock<Vec<CertificateDer<'static>>> =
    LazyLock::new(|| rustls_native_certs::load_native_certs().certs);

fn tls_config(p: &LdapProvider) -> Result<Arc<ClientConfig>, Failure> {
    let mut roots = RootCertStore::empty();
    // Unparseable system certificates are skipped, as every TLS client does.
    let _ = roots.add_parsable_certificates(SYSTEM_ROOTS.iter().cloned());
    if let Some(path) = &p.ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            Failure::new(
                "tls_failed",
                format!("reading ca_file {}: {e}", path.display()),
            )
        })?;
        let certs = rustls_pemfile::certs(&mut pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                Failure::new(
                    "tls_failed",
                    format!("parsing ca_file {}: {e}", path.display()),
                )
            })?;
        if certs.is_empty() {
            return Err(Failure::new(
                "tls_failed",
                format!("ca_file {} holds no PEM certificate", path.display()),
            ));
        }
        for c in certs {
            roots.add(c).map_err(|e| {
                Failure::new("tls_failed", format!("ca_file {}: {e}", path.display()))
            })?;
        }
    }
    // Our own provider rather than the process default, so the command line
    // (which installs none) and the server verify alike.
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::new("tls_failed", e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Names what went wrong while connecting: refused or unroutable, or TLS.
fn connect_failure(e: LdapError) -> Failure {
    match e {
        LdapError::Io { source } => {
            let tls = source
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>());
            if tls || source.kind() == std::io::ErrorKind::InvalidData {
                Failure::new("tls_failed", source.to_string())
            } else {
                Failure::new("server_unreachable", source.to_string())
            }
        }
        LdapError::Timeout { .. } => Failure::new("timeout", "the directory did not answer"),
        // The StartTLS extended operation was refused by the server.
        LdapError::LdapResult { result } => {
            Failure::new("tls_failed", format!("StartTLS refused: {result}"))
        }
        other => Failure::new("server_unreachable", other.to_string()),
    }
}

fn operation_failure(e: LdapError) -> Failure {
    match e {
        LdapError::Timeout { .. } => Failure::new("timeout", "the directory did not answer"),
        LdapError::Io { source } => Failure::new("server_unreachable", source.to_string()),
        LdapError::LdapResult { result } => Failure::new("directory_error", result.to_string()),
        other => Failure::new("directory_error", other.to_string()),
    }
}

/// A connection bound as the service account.
pub struct Directory<'a> {
    ldap: Ldap,
    p: &'a LdapProvider,
}

impl<'a> Directory<'a> {
    /// Connects (TLS as configured) and binds as the service account.
    pub async fn open(p: &'a LdapProvider, service_password: &Secret) -> Result<Self, Failure> {
        let timeout = Duration::from_secs(p.timeout_secs.max(1));
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(timeout)
            .set_config(tls_config(p)?);
        if p.starttls && p.url.starts_with("ldap://") {
            settings = settings.set_starttls(true);
        }
        let connected =
            tokio::time::timeout(timeout, LdapConnAsync::with_settings(settings, &p.url))
                .await
                .map_err(|_| Failure::new("timeout", "connecting took too long"))?;
        let (conn, ldap) = connected.map_err(connect_failure)?;
        ldap3::drive!(conn);
        let mut dir = Directory { ldap, p };
        let bound = dir
            .timed()
            .simple_bind(&p.bind_dn, service_password.expose())
            .await
            .map_err(operation_failure)?;
        if bound.rc != 0 {
            return Err(Failure::new(
                "service_bind_failed",
                format!(
                    "the service account {} was refused: {} (check bind_password)",
                    p.bind_dn, bound
                ),
            ));
        }
        Ok(dir)
    }

    fn timed(&mut self) -> &mut Ldap {
        self.ldap
            .with_timeout(Duration::from_secs(self.p.timeout_secs.max(1)))
    }

    /// Entries matching `filter` under `base`, at most `limit` of them
    /// (asking for one more than needed is enough to see ambiguity without
    /// reading a whole directory when a filter matches everyone).
    async fn search(
        &mut self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: &[&str],
        limit: i32,
    ) -> Result<Vec<SearchEntry>, Failure> {
        let timeout = Duration::from_secs(self.p.timeout_secs.max(1));
        let result = self
            .ldap
            .with_search_options(ldap3::SearchOptions::new().sizelimit(limit))
            .with_timeout(timeout)
            .search(base, scope, filter, attrs.to_vec())
            .await
            .map_err(operation_failure)?;
        // 4 is sizeLimitExceeded (the entries so far are still returned);
        // 32 is noSuchObject (a base that does not exist: no entries).
        match result.1.rc {
            0 | 4 => {}
            32 => return Ok(Vec::new()),
            _ => return Err(Failure::new("directory_error", result.1.to_string())),
        }
        Ok(result
            .0
            .into_iter()
            .filter(|e| !e.is_ref() && !e.is_intermediate())
            .map(SearchEntry::construct)
            .collect())
    }

    fn attrs(&self) -> Vec<&'a str> {
        let p = self.p;
        [
            p.username_attribute.as_str(),
            p.subject_attribute.as_str(),
            p.group_attribute.as_str(),
        ]
        .into_iter()
        .filter(|a| !a.is_empty())
        .collect()
    }

    async fn describe(&mut self, entry: SearchEntry) -> Result<DirectoryUser, Failure> {
        let p = self.p;
        let subject = if p.subject_attribute.is_empty() {
            entry.dn.clone()
        } else {
            first(&entry, &p.subject_attribute).ok_or_else(|| {
                Failure::new(
                    "no_subject",
                    format!("{} has no {}", entry.dn, p.subject_attribute),
                )
            })?
        };
        let groups = if !p.group_attribute.is_empty() {
            all(&entry, &p.group_attribute)
        } else if let Some(base) = &p.group_base {
            let filter = p.group_filter.replace("{dn}", &ldap_escape(&entry.dn));
            self.search(base, Scope::Subtree, &filter, &["1.1"], 1000)
                .await?
                .into_iter()
                .map(|g| g.dn)
                .collect()
        } else {
            Vec::new()
        };
        Ok(DirectoryUser {
            username: first(&entry, &p.username_attribute),
            dn: entry.dn,
            subject,
            groups,
        })
    }

    /// The one entry the user filter finds for this login name.
    pub async fn find_user(&mut self, username: &str) -> Result<DirectoryUser, Failure> {
        let p = self.p;
        let filter = p.user_filter.replace("{username}", &ldap_escape(username));
        let attrs = self.attrs();
        let mut found = self
            .search(&p.user_base, Scope::Subtree, &filter, &attrs, 2)
            .await?;
        match found.len() {
            0 => Err(Failure::new(
                "unknown_user",
                "no entry matches the user filter",
            )),
            1 => match found.pop() {
                Some(entry) => self.describe(entry).await,
                None => Err(Failure::new("unknown_user", "no entry")),
            },
            n => Err(Failure::new(
                "ambiguous_user",
                format!("{n} or more entries match the user filter"),
            )),
        }
    }

    /// The entry a stored subject names (its DN, or the value of
    /// `subject_attribute`) if it still passes the user filter: `None` when
    /// the user was removed or no longer qualifies.
    pub async fn find_subject(&mut self, subject: &str) -> Result<Option<DirectoryUser>, Failure> {
        let p = self.p;
        // `{username}` as a presence test: every entry the filter admits.
        let users = p.user_filter.replace("{username}", "*");
        let attrs = self.attrs();
        let found = if p.subject_attribute.is_empty() {
            self.search(subject, Scope::Base, &users, &attrs, 2).await?
        } else {
            let filter = format!(
                "(&{users}({}={}))",
                p.subject_attribute,
                ldap_escape(subject)
            );
            self.search(&p.user_base, Scope::Subtree, &filter, &attrs, 2)
                .await?
        };
        match <[SearchEntry; 1]>::try_from(found) {
            Ok([entry]) => Ok(Some(self.describe(entry).await?)),
            Err(_) => Ok(None),
        }
    }

    /// Whether `password` is this user's: a bind as them.
    async fn check_password(&mut self, dn: &str, password: &str) -> Result<(), Failure> {
        let r = self
            .timed()
            .simple_bind(dn, password)
            .await
            .map_err(operation_failure)?;
        match r.rc {
            0 => Ok(()),
            49 => Err(Failure::new("wrong_password", "invalid credentials")),
            // Locked, expired or otherwise refused: still this user's problem.
            _ => Err(Failure::new("wrong_password", r.to_string())),
        }
    }

    pub async fn close(mut self) {
        // Best effort: the server drops the connection either way.
        let _ = self.ldap.unbind().await;
    }
}

fn first(entry: &SearchEntry, attr: &str) -> Option<String> {
    all(entry, attr).into_iter().next()
}

/// An attribute's values; attribute names are case-insensitive in LDAP.
fn all(entry: &SearchEntry, attr: &str) -> Vec<String> {
    entry
        .attrs
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(attr))
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// Checks a login against the directory: who it is, and their groups.
pub async fn authenticate(
    p: &LdapProvider,
    service_password: &Secret,
    username: &str,
    password: &str,
) -> Result<ExternalIdentity, Failure> {
    find(p, service_password, username, password)
        .await?
        .verify(password)
        .await
}

/// A login's first half: the directory named the user, and nothing was
/// bound as them yet. The caller decides (the throttle, by the user's stable
/// subject) whether the password may be tried at all.
pub struct Found<'a> {
    dir: Directory<'a>,
    user: DirectoryUser,
    typed_username: String,
}

impl Found<'_> {
    /// The directory's stable id of the user (DN or `subject_attribute`).
    pub fn subject(&self) -> &str {
        &self.user.subject
    }

    /// Binds as the user with `password`: their identity and groups if it is theirs.
    pub async fn verify(mut self, password: &str) -> Result<ExternalIdentity, Failure> {
        let p = self.dir.p;
        let steps = async {
            let checked = self.dir.check_password(&self.user.dn, password).await;
            self.dir.close().await;
            checked
        };
        tokio::time::timeout(step_timeout(p), steps)
            .await
            .map_err(|_| Failure::new("timeout", "the directory did not answer in time"))??;
        Ok(ExternalIdentity {
            provider: p.name.clone(),
            subject: self.user.subject,
            username: self.user.username.unwrap_or(self.typed_username),
            groups: self.user.groups,
        })
    }

    /// Ends the login without trying the password.
    pub async fn abandon(self) {
        self.dir.close().await;
    }
}

fn step_timeout(p: &LdapProvider) -> Duration {
    Duration::from_secs(p.timeout_secs.max(1).saturating_mul(3))
}

/// A login's first half: checks the input, then finds the user with the
/// service account.
pub async fn find<'a>(
    p: &'a LdapProvider,
    service_password: &Secret,
    username: &str,
    password: &str,
) -> Result<Found<'a>, Failure> {
    if password.is_empty() {
        return Err(Failure::new(
            "empty_password",
            "an empty password is never sent",
        ));
    }
    if username.trim().is_empty()
        || username.len() > MAX_INPUT_BYTES
        || password.len() > MAX_INPUT_BYTES
        || username.chars().any(char::is_control)
    {
        return Err(Failure::new(
            "bad_input",
            "not a plausible login name or password",
        ));
    }
    let steps = async {
        let mut dir = Directory::open(p, service_password).await?;
        match dir.find_user(username).await {
            Ok(user) => Ok(Found {
                dir,
                user,
                typed_username: username.to_string(),
            }),
            Err(f) => {
                dir.close().await;
                Err(f)
            }
        }
    };
    tokio::time::timeout(step_timeout(p), steps)
        .await
        .map_err(|_| Failure::new("timeout", "the directory did not answer in time"))?
}

/// `redwall config check`: connect, TLS, service bind and the user base, or
/// one line saying what failed.
pub async fn check(p: &LdapProvider, service_password: &Secret) -> Result<(), String> {
    let explain = |f: Failure| {
        let what = match f.reason {
            "server_unreachable" => "cannot reach the server",
            "tls_failed" => "TLS failed",
            "timeout" => "no answer in time",
            "service_bind_failed" => "the service bind failed",
            _ => "the directory refused",
        };
        format!("{} ({}): {what}: {}", p.name, p.url, f.detail)
    };
    let overall = Duration::from_secs(p.timeout_secs.max(1).saturating_mul(2));
    let steps = async {
        let mut dir = Directory::open(p, service_password).await?;
        let base = dir
            .search(&p.user_base, Scope::Base, "(objectClass=*)", &["1.1"], 1)
            .await?;
        dir.close().await;
        if base.is_empty() {
            return Err(Failure::new(
                "directory_error",
                format!(
                    "user_base {} does not exist or is not readable",
                    p.user_base
                ),
            ));
        }
        Ok(())
    };
    match tokio::time::timeout(overall, steps).await {
        Ok(r) => r.map_err(explain),
        Err(_) => Err(explain(Failure::new("timeout", "the checks took too long"))),
    }
}

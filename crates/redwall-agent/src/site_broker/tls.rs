//! The site broker's optional TLS listener, for the site's network:
//! the operator's certificate and key, or a self-signed certificate the
//! agent makes once and keeps in `DIR/site-broker/` (key 0600), its
//! SHA-256 in the log for clients to pin. The agent reads the files; the
//! child gets the PEM text on its stdin and reads no file itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::config::ConfigError;
use crate::site_tls;
#[cfg(test)]
use crate::site_tls::{plausible_dns_name, SELF_SIGNED_KEY};

/// The self-signed certificate's directory, in the agent's directory.
pub const SELF_SIGNED_DIR: &str = "site-broker";

/// `[tls]` in `site-broker.toml`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    /// Any address (`0.0.0.0:8883` for the site's network).
    pub listen: std::net::SocketAddr,
    /// Names on the self-signed certificate, besides localhost and the
    /// loopback addresses.
    #[serde(default)]
    pub names: Vec<String>,
    /// The operator's certificate chain and key (PEM), both or neither.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// What the child is given: the listener, the certificate chain and the
/// key, as PEM.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChildTls {
    pub listen: std::net::SocketAddr,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ChildTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildTls")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl Drop for ChildTls {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        self.key_pem.zeroize();
    }
}

impl TlsListenerConfig {
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.listen.port() == 0 {
            return Err(ConfigError(format!(
                "tls.listen {}: give a port",
                self.listen
            )));
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err(ConfigError(
                "tls: give both cert and key, or neither".into(),
            ));
        }
        site_tls::check_names(&self.names).map_err(|e| ConfigError(format!("tls.names: {e}")))?;
        Ok(())
    }

    /// The certificate and key for the child, and the leaf's SHA-256 (hex).
    /// `state_dir`: where the self-signed one is kept (`None`: made anew,
    /// in memory only).
    pub fn material(&self, state_dir: Option<&Path>) -> Result<(ChildTls, String), ConfigError> {
        let tls_error = |e: String| ConfigError(format!("tls: {e}"));
        let (cert_pem, key_pem) = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => (
                site_tls::read_pem(cert, false).map_err(tls_error)?,
                site_tls::read_pem(key, false).map_err(tls_error)?,
            ),
            _ => {
                let names = site_tls::names(self.listen, &self.names);
                let dir = state_dir.map(|d| d.join(SELF_SIGNED_DIR));
                site_tls::self_signed(dir.as_deref(), &names, "the site broker's TLS listener")
                    .map_err(tls_error)?
            }
        };
        let certs = site_tls::certs(cert_pem.as_bytes()).map_err(tls_error)?;
        let sha256 = crate::tls::cert_sha256(certs[0].as_ref());
        let child = ChildTls {
            listen: self.listen,
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
        };
        // The pair must go together: refused here, not in the child.
        server_config(&child)?;
        Ok((child, sha256))
    }
}

/// The child's rustls configuration (ring; TLS 1.2 and 1.3; no ALPN:
/// MQTT clients offer none, or "mqtt").
pub fn server_config(tls: &ChildTls) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let tls_error = |e: String| ConfigError(format!("tls: {e}"));
    let certs = site_tls::certs(tls.cert_pem.as_bytes()).map_err(tls_error)?;
    let key = site_tls::key(tls.key_pem.as_bytes()).map_err(tls_error)?;
    site_tls::server_config(certs, key, Vec::new()).map_err(tls_error)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn config(listen: &str) -> TlsListenerConfig {
        TlsListenerConfig {
            listen: listen.parse().unwrap(),
            names: vec!["plant-gw.example.test".into()],
            cert: None,
            key: None,
        }
    }

    #[test]
    fn the_self_signed_certificate_is_made_once_with_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let tls = config("0.0.0.0:8883");
        tls.check().unwrap();
        let (child, first) = tls.material(Some(dir.path())).unwrap();
        assert_eq!(first.len(), 64);
        assert!(!format!("{child:?}").contains("PRIVATE KEY"));
        let key = dir.path().join(SELF_SIGNED_DIR).join(SELF_SIGNED_KEY);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&key), 0o600);
        assert_eq!(mode(&dir.path().join(SELF_SIGNED_DIR)), 0o700);
        let (_, again) = tls.material(Some(dir.path())).unwrap();
        assert_eq!(first, again, "kept, not made again");
        let mut renamed = tls.clone();
        renamed.names.push("other.example.test".into());
        assert_ne!(renamed.material(Some(dir.path())).unwrap().1, first);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = renamed.material(Some(dir.path())).unwrap_err();
        assert!(err.0.contains("chmod 600"), "{err}");
        // Without a directory: made in memory, every time anew.
        assert_ne!(tls.material(None).unwrap().1, tls.material(None).unwrap().1);
    }

    #[test]
    fn the_operators_files_must_be_a_pair() {
        let dir = tempfile::tempdir().unwrap();
        let a = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.test".to_owned()]).unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert, a.cert.pem()).unwrap();
        std::fs::write(&key, a.key_pair.serialize_pem()).unwrap();
        let mut tls = config("0.0.0.0:8883");
        tls.cert = Some(cert.clone());
        assert!(tls.check().is_err(), "cert without key");
        tls.key = Some(key.clone());
        tls.check().unwrap();
        let (_, pin) = tls.material(Some(dir.path())).unwrap();
        assert_eq!(pin, crate::tls::cert_sha256(a.cert.der()));
        assert!(!dir.path().join(SELF_SIGNED_DIR).exists());
        std::fs::write(&key, b.key_pair.serialize_pem()).unwrap();
        assert!(tls.material(Some(dir.path())).is_err());
        std::fs::write(&cert, "no pem here").unwrap();
        assert!(tls.material(Some(dir.path())).is_err());
    }

    #[test]
    fn names_and_ports_are_checked() {
        let mut tls = config("0.0.0.0:0");
        assert!(tls.check().is_err());
        tls.listen = "0.0.0.0:8883".parse().unwrap();
        tls.names = vec!["not a name".into()];
        assert!(tls.check().is_err());
        assert!(plausible_dns_name("plant-1.example.test"));
        assert!(!plausible_dns_name("a..b"));
    }
}

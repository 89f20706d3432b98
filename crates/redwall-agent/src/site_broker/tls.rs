//! The site broker's optional TLS listener, for the site's network:
//! the operator's certificate and key, or a self-signed certificate the
//! agent makes once and keeps in `DIR/site-broker/` (key 0600), its
//! SHA-256 in the log for clients to pin. The agent reads the files; the
//! child gets the PEM text on its stdin and reads no file itself.

use std::io::Read as _;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::config::ConfigError;
use crate::state::{write_private_atomically, NOT_PRIVATE};

/// The self-signed certificate's directory, in the agent's directory.
pub const SELF_SIGNED_DIR: &str = "site-broker";
const SELF_SIGNED_CERT: &str = "cert.pem";
const SELF_SIGNED_KEY: &str = "key.pem";
/// The names it was made for; another list makes a new certificate.
const SELF_SIGNED_NAMES: &str = "names";
/// Largest PEM file read.
const MAX_PEM: u64 = 256 * 1024;

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
        for n in &self.names {
            if n.parse::<IpAddr>().is_err() && !plausible_dns_name(n) {
                return Err(ConfigError(format!(
                    "tls.names: {n:?} is neither an IP address nor a DNS name"
                )));
            }
        }
        Ok(())
    }

    /// The certificate and key for the child, and the leaf's SHA-256 (hex).
    /// `state_dir`: where the self-signed one is kept (`None`: made anew,
    /// in memory only).
    pub fn material(&self, state_dir: Option<&Path>) -> Result<(ChildTls, String), ConfigError> {
        let (cert_pem, key_pem) = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => (read_pem(cert, false)?, read_pem(key, false)?),
            _ => self.self_signed(state_dir)?,
        };
        let certs = certs_of(cert_pem.as_bytes())?;
        key_of(key_pem.as_bytes())?;
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

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .iter()
            .map(|n| (*n).to_owned())
            .collect();
        let ip = self.listen.ip();
        if !ip.is_unspecified() && !ip.is_loopback() {
            names.push(ip.to_string());
        }
        for n in &self.names {
            let n = n.trim().to_owned();
            if !n.is_empty() && !names.contains(&n) {
                names.push(n);
            }
        }
        names
    }

    fn self_signed(
        &self,
        state_dir: Option<&Path>,
    ) -> Result<(Zeroizing<String>, Zeroizing<String>), ConfigError> {
        let names = self.names();
        let listed = names.join("\n");
        let dir = state_dir.map(|d| d.join(SELF_SIGNED_DIR));
        if let Some(dir) = &dir {
            let same =
                std::fs::read_to_string(dir.join(SELF_SIGNED_NAMES)).is_ok_and(|n| n == listed);
            let (cert, key) = (dir.join(SELF_SIGNED_CERT), dir.join(SELF_SIGNED_KEY));
            if same && cert.is_file() && key.is_file() {
                return Ok((read_pem(&cert, false)?, read_pem(&key, true)?));
            }
        }
        let made = rcgen::generate_simple_self_signed(names.clone())
            .map_err(|e| ConfigError(format!("tls: cannot make a certificate: {e}")))?;
        let key_pem = Zeroizing::new(made.key_pair.serialize_pem());
        let cert_pem = Zeroizing::new(made.cert.pem());
        if let Some(dir) = &dir {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| ConfigError(format!("{}: {e}", dir.display())))?;
            let write = |name: &str, bytes: &[u8]| {
                write_private_atomically(dir, name, bytes)
                    .map_err(|e| ConfigError(format!("tls: cannot keep the certificate: {e}")))
            };
            // The names last: they mark a finished pair.
            write(SELF_SIGNED_KEY, key_pem.as_bytes())?;
            write(SELF_SIGNED_CERT, cert_pem.as_bytes())?;
            write(SELF_SIGNED_NAMES, listed.as_bytes())?;
        }
        tracing::info!(
            names = %names.join(", "),
            sha256 = %crate::tls::cert_sha256(made.cert.der().as_ref()),
            "made a self-signed certificate for the site broker's TLS listener"
        );
        Ok((cert_pem, key_pem))
    }
}

fn plausible_dns_name(n: &str) -> bool {
    let n = n.strip_prefix("*.").unwrap_or(n);
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A small PEM file; `private` refuses one the group or others can read
/// (the key the agent made).
fn read_pem(path: &Path, private: bool) -> Result<Zeroizing<String>, ConfigError> {
    let bad = |why: String| ConfigError(format!("{}: {why}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() || meta.len() > MAX_PEM {
        return Err(bad("not a small regular file".into()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if private && mode & NOT_PRIVATE != 0 {
        return Err(bad(format!(
            "can be read by other users (mode {mode:04o}); chmod 600 it"
        )));
    }
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_PEM)
        .read_to_string(&mut text)
        .map_err(|e| bad(e.to_string()))?;
    Ok(text)
}

fn certs_of(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError(format!("tls: the certificate: {e}")))?;
    if certs.is_empty() {
        return Err(ConfigError("tls: no PEM certificate".into()));
    }
    Ok(certs)
}

fn key_of(pem: &[u8]) -> Result<PrivateKeyDer<'static>, ConfigError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| ConfigError("tls: no PEM private key".into()))
}

/// The child's rustls configuration (ring; TLS 1.2 and 1.3; no ALPN:
/// MQTT clients offer none, or "mqtt").
pub fn server_config(tls: &ChildTls) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let certs = certs_of(tls.cert_pem.as_bytes())?;
    let key = key_of(tls.key_pem.as_bytes())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ConfigError(format!("tls: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            ConfigError(format!(
                "tls: the certificate and key do not match or are not supported: {e}"
            ))
        })?;
    Ok(Arc::new(config))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

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

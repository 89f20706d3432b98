//! The listener's TLS: the operator's certificate, or one the agent makes
//! once and keeps in its state directory.

use std::io::Read as _;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use zeroize::Zeroizing;

use super::config::LocalEndpointsConfig;
use super::Error;
use crate::state::{write_private_atomically, NOT_PRIVATE};

/// The self-signed certificate's directory, in the state directory.
pub const SELF_SIGNED_DIR: &str = "local-endpoints";
/// The self-signed certificate (PEM), in [`SELF_SIGNED_DIR`].
pub const SELF_SIGNED_CERT: &str = "cert.pem";
/// Its private key (PEM, mode 0600), in [`SELF_SIGNED_DIR`].
pub const SELF_SIGNED_KEY: &str = "key.pem";
/// The names it was made for; another list makes a new certificate.
const SELF_SIGNED_NAMES: &str = "names";

/// Largest PEM file read (a chain of a few certificates, or a key).
const MAX_PEM: u64 = 256 * 1024;

/// The rustls configuration and the SHA-256 of the leaf certificate (what
/// a client may pin).
pub(crate) fn server_config(
    config: &LocalEndpointsConfig,
    state_dir: &Path,
) -> Result<(Arc<ServerConfig>, String), Error> {
    let (certs, key) = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => (
            read_certs(&read_pem(cert, false)?, cert)?,
            read_key(&read_pem(key, false)?, key)?,
        ),
        _ => self_signed(config, state_dir)?,
    };
    let fingerprint = certs
        .first()
        .map(|c| crate::tls::cert_sha256(c.as_ref()))
        .unwrap_or_default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            Error::Tls(format!(
                "the certificate and key do not match or are not supported: {e}"
            ))
        })?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(server), fingerprint))
}

/// The names of the self-signed certificate: localhost, loopback, the
/// listen address when it is a specific one, then the configured names.
fn self_signed_names(config: &LocalEndpointsConfig) -> Vec<String> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .iter()
        .map(|n| (*n).to_owned())
        .collect();
    let ip = config.listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    for n in &config.names {
        let n = n.trim().to_owned();
        if !n.is_empty() && !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

fn self_signed(
    config: &LocalEndpointsConfig,
    state_dir: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let dir = state_dir.join(SELF_SIGNED_DIR);
    let names = self_signed_names(config);
    let listed = names.join("\n");
    let same_names =
        std::fs::read_to_string(dir.join(SELF_SIGNED_NAMES)).is_ok_and(|n| n == listed);
    if same_names {
        let cert_path = dir.join(SELF_SIGNED_CERT);
        let key_path = dir.join(SELF_SIGNED_KEY);
        if cert_path.is_file() && key_path.is_file() {
            let certs = read_certs(&read_pem(&cert_path, false)?, &cert_path)?;
            let key = read_key(&read_pem(&key_path, true)?, &key_path)?;
            return Ok((certs, key));
        }
    }
    for n in &names {
        if n.parse::<IpAddr>().is_err() && !plausible_dns_name(n) {
            return Err(Error::Config(format!(
                "{n:?} in `names` is neither an IP address nor a DNS name"
            )));
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|source| Error::Io {
            what: "cannot create",
            path: dir.display().to_string(),
            source,
        })?;
    let made = rcgen::generate_simple_self_signed(names.clone())
        .map_err(|e| Error::Tls(format!("cannot make a certificate: {e}")))?;
    let key_pem = Zeroizing::new(made.key_pair.serialize_pem());
    let cert_pem = made.cert.pem();
    let write = |name: &str, bytes: &[u8]| {
        write_private_atomically(&dir, name, bytes)
            .map_err(|e| Error::Tls(format!("cannot keep the certificate: {e}")))
    };
    // The names last: they mark a finished pair.
    write(SELF_SIGNED_KEY, key_pem.as_bytes())?;
    write(SELF_SIGNED_CERT, cert_pem.as_bytes())?;
    write(SELF_SIGNED_NAMES, listed.as_bytes())?;
    let certs = vec![made.cert.der().clone()];
    let key = PrivateKeyDer::try_from(made.key_pair.serialize_der())
        .map_err(|e| Error::Tls(format!("the new key is unusable: {e}")))?;
    tracing::info!(
        dir = %dir.display(),
        names = %names.join(", "),
        sha256 = %crate::tls::cert_sha256(certs[0].as_ref()),
        "made a self-signed certificate for the local endpoints"
    );
    Ok((certs, key))
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

/// Reads a small PEM file; `private` refuses one the group or others can
/// read (the agent's own key).
fn read_pem(path: &Path, private: bool) -> Result<Zeroizing<Vec<u8>>, Error> {
    let io = |what: &'static str| {
        move |source| Error::Io {
            what,
            path: path.display().to_string(),
            source,
        }
    };
    let file = std::fs::File::open(path).map_err(io("cannot open"))?;
    let meta = file.metadata().map_err(io("cannot read"))?;
    if !meta.is_file() || meta.len() > MAX_PEM {
        return Err(Error::Tls(format!(
            "{} is not a small regular file",
            path.display()
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if private && mode & NOT_PRIVATE != 0 {
        return Err(Error::Tls(format!(
            "{} can be read by other users (mode {mode:04o}); fix it with chmod 600",
            path.display()
        )));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_PEM)
        .read_to_end(&mut bytes)
        .map_err(io("cannot read"))?;
    Ok(bytes)
}

fn read_certs(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(Error::Tls(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|_| Error::Tls(format!("{} holds no PEM private key", path.display())))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn the_self_signed_certificate_is_made_once_with_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = LocalEndpointsConfig::new("10.1.2.3:8443".parse().unwrap());
        config.names = vec!["plant-gw.example.test".into()];
        let (_, first) = server_config(&config, dir.path()).unwrap();
        let key = dir.path().join(SELF_SIGNED_DIR).join(SELF_SIGNED_KEY);
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(dir.path().join(SELF_SIGNED_DIR))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        let (_, again) = server_config(&config, dir.path()).unwrap();
        assert_eq!(first, again, "kept, not made again");
        assert_eq!(first.len(), 64);
        // Other names make another certificate.
        config.names.push("other.example.test".into());
        let (_, renamed) = server_config(&config, dir.path()).unwrap();
        assert_ne!(first, renamed);
        // An exposed key is refused.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = server_config(&config, dir.path()).unwrap_err().to_string();
        assert!(e.contains("can be read by other users"), "{e}");
    }

    #[test]
    fn names_must_be_addresses_or_dns_names() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = LocalEndpointsConfig::new("0.0.0.0:8443".parse().unwrap());
        config.names = vec!["not a name".into()];
        assert!(server_config(&config, dir.path()).is_err());
        assert!(plausible_dns_name("plant-1.example.test"));
        assert!(plausible_dns_name("*.plant.test"));
        assert!(!plausible_dns_name("-x.test"));
        assert!(!plausible_dns_name("a..b"));
    }

    #[test]
    fn operator_files_are_read_and_mismatches_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.test".to_owned()]).unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        std::fs::write(&cert, a.cert.pem()).unwrap();
        std::fs::write(&key, a.key_pair.serialize_pem()).unwrap();
        let mut config = LocalEndpointsConfig::new("0.0.0.0:8443".parse().unwrap());
        config.cert = Some(cert.clone());
        config.key = Some(key.clone());
        let (_, pin) = server_config(&config, dir.path()).unwrap();
        assert_eq!(pin, crate::tls::cert_sha256(a.cert.der()));
        assert!(!dir.path().join(SELF_SIGNED_DIR).exists());
        std::fs::write(&key, b.key_pair.serialize_pem()).unwrap();
        assert!(server_config(&config, dir.path()).is_err());
        std::fs::write(&cert, "no pem here").unwrap();
        assert!(server_config(&config, dir.path()).is_err());
    }
}

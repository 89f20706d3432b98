//! The listener's TLS: the operator's certificate, or one the agent makes
//! once and keeps in its state directory (`crate::site_tls`).

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;

use super::config::LocalEndpointsConfig;
use super::Error;
use crate::site_tls;
#[cfg(test)]
use crate::site_tls::plausible_dns_name;
#[cfg(test)]
use crate::site_tls::SELF_SIGNED_KEY;

/// The self-signed certificate's directory, in the state directory.
pub const SELF_SIGNED_DIR: &str = "local-endpoints";

/// The rustls configuration and the SHA-256 of the leaf certificate (what
/// a client may pin).
pub(crate) fn server_config(
    config: &LocalEndpointsConfig,
    state_dir: &Path,
) -> Result<(Arc<ServerConfig>, String), Error> {
    let (cert_pem, key_pem, path) = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => (
            site_tls::read_pem(cert, false).map_err(Error::Tls)?,
            site_tls::read_pem(key, false).map_err(Error::Tls)?,
            cert.display().to_string(),
        ),
        _ => {
            let names = site_tls::names(config.listen, &config.names);
            let dir = state_dir.join(SELF_SIGNED_DIR);
            let (cert, key) = site_tls::self_signed(Some(&dir), &names, "the local endpoints")
                .map_err(|e| Error::Config(format!("local endpoints: {e}")))?;
            (cert, key, dir.display().to_string())
        }
    };
    let certs =
        site_tls::certs(cert_pem.as_bytes()).map_err(|e| Error::Tls(format!("{path}: {e}")))?;
    let key = site_tls::key(key_pem.as_bytes()).map_err(|e| Error::Tls(format!("{path}: {e}")))?;
    let fingerprint = certs
        .first()
        .map(|c| crate::tls::cert_sha256(c.as_ref()))
        .unwrap_or_default();
    let server = site_tls::server_config(certs, key, vec![b"h2".to_vec(), b"http/1.1".to_vec()])
        .map_err(Error::Tls)?;
    Ok((server, fingerprint))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

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

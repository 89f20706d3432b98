//! How the agent knows it talks to its hub. One rustls client
//! configuration serves enrolment (reqwest) and the WebSocket
//! (tokio-rustls), so both trust exactly the same thing:
//!
//! - [`HubTrust::Pinned`]: the bundle carries the SHA-256 of the hub's
//!   certificate; only that certificate is accepted, whatever its name,
//!   issuer or dates (the pin *is* the identity). This is how a hub with
//!   its default self-signed certificate is reached.
//! - [`HubTrust::Ca`]: the hub's certificate must chain to the bundle's CA
//!   (and only that CA) and name the host, as WebPKI checks it.
//! - [`HubTrust::SystemRoots`]: the usual public roots (webpki-roots).
//!
//! Always TLS 1.2 or 1.3, and ALPN `http/1.1` only: the WebSocket is an
//! HTTP/1.1 upgrade, and enrolment is one small request.

use std::sync::Arc;

pub use redwall_crypto::tls_pin::cert_sha256;
use redwall_crypto::tls_pin::PinnedCertVerifier;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

use crate::state::AgentConfig;

/// What the agent trusts as its hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HubTrust {
    /// SHA-256 of the hub's leaf certificate (DER), lowercase hex.
    Pinned(String),
    /// A CA certificate (PEM).
    Ca(String),
    SystemRoots,
}

impl HubTrust {
    /// The pin wins over the CA, as in the bundle: with a pin set, the CA
    /// is not consulted at all.
    pub fn new(cert_sha256: Option<&str>, ca_pem: Option<&str>) -> Self {
        match (cert_sha256, ca_pem) {
            (Some(pin), _) => Self::Pinned(pin.to_owned()),
            (None, Some(ca)) => Self::Ca(ca.to_owned()),
            (None, None) => Self::SystemRoots,
        }
    }

    pub fn of(config: &AgentConfig) -> Self {
        Self::new(config.cert_sha256.as_deref(), config.ca_pem.as_deref())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("the certificate fingerprint must be 64 hex digits (SHA-256)")]
    BadPin,
    #[error("the hub's CA certificate (PEM) holds no usable certificate")]
    BadCa,
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Installs ring as rustls's process-wide provider, once; harmless if
/// something else already did. Our own configurations name ring
/// explicitly, but libraries that build their own (none today) would use
/// this one.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The client configuration for `trust`; see the module documentation.
pub fn client_config(trust: &HubTrust) -> Result<ClientConfig, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let mut config = match trust {
        HubTrust::Pinned(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(
                PinnedCertVerifier::new(pin, provider.signature_verification_algorithms)
                    .map_err(|_| TlsSetupError::BadPin)?,
            ))
            .with_no_client_auth(),
        HubTrust::Ca(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|_| TlsSetupError::BadCa)?;
                roots.add(cert).map_err(|_| TlsSetupError::BadCa)?;
            }
            if roots.is_empty() {
                return Err(TlsSetupError::BadCa);
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        HubTrust::SystemRoots => {
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn trust_follows_the_bundle_and_bad_material_is_refused() {
        assert_eq!(
            HubTrust::new(Some("ab"), Some("ca")),
            HubTrust::Pinned("ab".into())
        );
        assert_eq!(HubTrust::new(None, Some("ca")), HubTrust::Ca("ca".into()));
        assert_eq!(HubTrust::new(None, None), HubTrust::SystemRoots);
        assert!(matches!(
            client_config(&HubTrust::Pinned("ab".into())),
            Err(TlsSetupError::BadPin)
        ));
        assert!(matches!(
            client_config(&HubTrust::Ca("not a pem".into())),
            Err(TlsSetupError::BadCa)
        ));
        let config = client_config(&HubTrust::SystemRoots).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(client_config(&HubTrust::Pinned("0f".repeat(32))).is_ok());
    }
}

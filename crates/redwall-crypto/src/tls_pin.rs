//! Trusting exactly one TLS certificate: the one whose SHA-256 is pinned.
//! The agent pins its hub's certificate from the provisioning bundle; a
//! hub pins another replica's from the database when it relays a request
//! to the agent connected there.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest as _, Sha256};

/// The pin is not 64 hex characters.
#[derive(Debug, thiserror::Error)]
#[error("a certificate pin is the SHA-256 of the certificate, 64 hex characters")]
pub struct BadPin;

/// Accepts exactly one certificate: the one whose SHA-256 is the pin.
///
/// The chain, the name and the validity dates are deliberately not
/// checked: a self-signed hub certificate has no chain, the agent may dial
/// the hub by an address its certificate does not name, and the operator
/// who pinned it decided to trust that exact key. The handshake signatures
/// are still verified, so only whoever holds the certificate's private key
/// can complete the handshake.
#[derive(Debug)]
pub struct PinnedCertVerifier {
    pin: [u8; 32],
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedCertVerifier {
    pub fn new(pin_hex: &str, algorithms: WebPkiSupportedAlgorithms) -> Result<Self, BadPin> {
        let bytes = hex::decode(pin_hex.trim()).map_err(|_| BadPin)?;
        let pin = bytes.try_into().map_err(|_| BadPin)?;
        Ok(Self { pin, algorithms })
    }
}

/// Why a pinned hub was refused, for the operator reading the log: the
/// fingerprint actually seen, to compare with the hub's.
#[derive(thiserror::Error)]
#[error("the certificate (sha256 {seen}) is not the one pinned (sha256 {pinned})")]
struct PinMismatch {
    seen: String,
    pinned: String,
}

/// rustls shows a custom certificate error with `Debug`: make that the
/// sentence too, so logs read "invalid peer certificate: ... the
/// certificate (sha256 ...) is not the one pinned ...".
impl std::fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        // Both values are public (the certificate is sent in the clear and
        // the pin is in the bundle), so a plain comparison leaks nothing.
        if seen == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch {
                    seen: hex::encode(seen),
                    pinned: hex::encode(self.pin),
                }))),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// SHA-256 of a certificate (DER), lowercase hex: the pin format.
pub fn cert_sha256(cert_der: &[u8]) -> String {
    hex::encode(Sha256::digest(cert_der))
}

/// A client configuration (ring, TLS 1.2 and 1.3, ALPN `http/1.1`) that
/// trusts only the certificate pinned by `pin_hex`.
pub fn pinned_client_config(pin_hex: &str) -> Result<ClientConfig, BadPin> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PinnedCertVerifier::new(pin_hex, provider.signature_verification_algorithms)?;
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|_| BadPin)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

//! TLS with rustls: TLS 1.2 minimum, the ring provider's AEAD-only suites,
//! certificate and key from files or a self-signed one made on first start.

use anyhow::{anyhow, Context};
use rustls::crypto::ring;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Installs ring as the process-wide provider. Call once at start: with two
/// providers compiled in and none installed, the first handshake would panic.
pub fn install_crypto_provider() {
    let _ = ring::default_provider().install_default();
}

pub fn server_config(cert_pem: &Path, key_pem: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = load_certs(cert_pem)?;
    let key = load_key(key_pem)?;
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("the TLS certificate and key do not match or are not supported")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn load_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// SHA-256 of the first certificate in a PEM file (its DER), lowercase
/// hex: what an agent's provisioning bundle pins for a self-signed hub.
pub fn certificate_sha256(cert_pem: &Path) -> anyhow::Result<String> {
    let pem = std::fs::read(cert_pem).with_context(|| format!("reading {}", cert_pem.display()))?;
    let cert = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .ok_or_else(|| anyhow!("{} holds no PEM certificate", cert_pem.display()))?
        .with_context(|| format!("parsing {}", cert_pem.display()))?;
    Ok(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        cert.as_ref(),
    )))
}

fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .with_context(|| format!("parsing the private key in {}", path.display()))?
        .ok_or_else(|| anyhow!("{} holds no PEM private key", path.display()))
}

/// The names the self-signed certificate carries: the console on
/// localhost and loopback, and every instance at `{name}.localhost`, its own
/// origin on the same machine (browsers resolve `*.localhost` to loopback).
const SELF_SIGNED_NAMES: &[&str] = &["localhost", "*.localhost", "127.0.0.1", "::1"];

/// The self-signed certificate for localhost in `data_dir/tls`, made on first
/// use, and made again when it was made for other names (an older version).
pub fn ensure_self_signed(data_dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = data_dir.join("tls");
    let cert = dir.join("self-signed-cert.pem");
    let key = dir.join("self-signed-key.pem");
    let names_file = dir.join("self-signed-names");
    let names = SELF_SIGNED_NAMES.join("\n");
    let same_names = std::fs::read_to_string(&names_file).is_ok_and(|n| n == names);
    if cert.is_file() && key.is_file() && same_names {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let made = rcgen::generate_simple_self_signed(
        SELF_SIGNED_NAMES
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>(),
    )
    .context("generating a certificate")?;
    crate::files::write_private(&key, made.key_pair.serialize_pem().as_bytes())?;
    std::fs::write(&cert, made.cert.pem())
        .with_context(|| format!("writing {}", cert.display()))?;
    std::fs::write(&names_file, names)
        .with_context(|| format!("writing {}", names_file.display()))?;
    tracing::info!(cert = %cert.display(), "generated a self-signed TLS certificate for localhost and *.localhost");
    Ok((cert, key))
}

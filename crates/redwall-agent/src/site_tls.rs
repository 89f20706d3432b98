//! TLS for what the agent serves on the site's network (its endpoints,
//! its broker): the operator's PEM files, or a self-signed certificate the
//! agent makes once and keeps in its directory (key 0600), its SHA-256 in
//! the log for clients to pin. Errors are said for the operator, with the
//! file they concern.

use std::io::Read as _;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use zeroize::Zeroizing;

use crate::state::{write_private_atomically, NOT_PRIVATE};

/// The self-signed certificate (PEM), in its directory.
pub const SELF_SIGNED_CERT: &str = "cert.pem";
/// Its private key (PEM, mode 0600).
pub const SELF_SIGNED_KEY: &str = "key.pem";
/// The names it was made for; another list makes a new certificate.
const SELF_SIGNED_NAMES: &str = "names";
/// Largest PEM file read (a chain of a few certificates, or a key).
const MAX_PEM: u64 = 256 * 1024;

/// The names of a self-signed certificate: localhost, loopback, the
/// listen address when it is a specific one, then the configured names.
pub(crate) fn names(listen: SocketAddr, configured: &[String]) -> Vec<String> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .iter()
        .map(|n| (*n).to_owned())
        .collect();
    let ip = listen.ip();
    if !ip.is_unspecified() && !ip.is_loopback() {
        names.push(ip.to_string());
    }
    for n in configured {
        let n = n.trim().to_owned();
        if !n.is_empty() && !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

/// Each name is an IP address or a DNS name (a leading `*.` allowed).
pub(crate) fn check_names(names: &[String]) -> Result<(), String> {
    match names
        .iter()
        .find(|n| n.parse::<IpAddr>().is_err() && !plausible_dns_name(n))
    {
        Some(n) => Err(format!("{n:?} is neither an IP address nor a DNS name")),
        None => Ok(()),
    }
}

pub(crate) fn plausible_dns_name(n: &str) -> bool {
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
pub(crate) fn read_pem(path: &Path, private: bool) -> Result<Zeroizing<String>, String> {
    let bad = |why: String| format!("{}: {why}", path.display());
    let file = std::fs::File::open(path).map_err(|e| bad(e.to_string()))?;
    let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() || meta.len() > MAX_PEM {
        return Err(bad("not a small regular file".into()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if private && mode & NOT_PRIVATE != 0 {
        return Err(bad(format!(
            "can be read by other users (mode {mode:04o}); fix it with chmod 600"
        )));
    }
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_PEM)
        .read_to_string(&mut text)
        .map_err(|e| bad(e.to_string()))?;
    Ok(text)
}

pub(crate) fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the certificate: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate".into());
    }
    Ok(certs)
}

pub(crate) fn key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| "no PEM private key".into())
}

/// The self-signed certificate and key (PEM) for `names`: the one kept in
/// `dir` if it was made for the same names, else a new one, kept there
/// (`None`: made in memory only). `what` names the listener in the log.
pub(crate) fn self_signed(
    dir: Option<&Path>,
    names: &[String],
    what: &str,
) -> Result<(Zeroizing<String>, Zeroizing<String>), String> {
    check_names(names)?;
    let listed = names.join("\n");
    if let Some(dir) = dir {
        let same = std::fs::read_to_string(dir.join(SELF_SIGNED_NAMES)).is_ok_and(|n| n == listed);
        let (cert, key) = (dir.join(SELF_SIGNED_CERT), dir.join(SELF_SIGNED_KEY));
        if same && cert.is_file() && key.is_file() {
            return Ok((read_pem(&cert, false)?, read_pem(&key, true)?));
        }
    }
    let made = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| format!("cannot make a certificate: {e}"))?;
    let key_pem = Zeroizing::new(made.key_pair.serialize_pem());
    let cert_pem = Zeroizing::new(made.cert.pem());
    if let Some(dir) = dir {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let write = |name: &str, bytes: &[u8]| {
            write_private_atomically(dir, name, bytes)
                .map_err(|e| format!("cannot keep the certificate: {e}"))
        };
        // The names last: they mark a finished pair.
        write(SELF_SIGNED_KEY, key_pem.as_bytes())?;
        write(SELF_SIGNED_CERT, cert_pem.as_bytes())?;
        write(SELF_SIGNED_NAMES, listed.as_bytes())?;
    }
    tracing::info!(
        names = %names.join(", "),
        sha256 = %crate::tls::cert_sha256(made.cert.der().as_ref()),
        "made a self-signed certificate for {what}"
    );
    Ok((cert_pem, key_pem))
}

/// A rustls server (ring; TLS 1.2 and 1.3) with this chain and key,
/// offering `alpn`.
pub(crate) fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not match or are not supported: {e}"))?;
    config.alpn_protocols = alpn;
    Ok(Arc::new(config))
}

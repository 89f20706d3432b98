//! The agent's three ways of trusting the hub, against a real TLS server
//! on 127.0.0.1.

use std::net::SocketAddr;
use std::sync::Arc;

use redwall_agent::tls::{client_config, HubTrust};
use rustls::pki_types::ServerName;
use rustls::ServerConfig;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::certs::{self_signed, TestCa};
use crate::within;

/// A TLS server that says "hello" to whoever completes the handshake.
async fn tls_server(config: Arc<ServerConfig>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(b"hello").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

/// Connects with the agent's configuration for `trust`, checking the
/// certificate against `name`; on success returns what the server said.
async fn connect(addr: SocketAddr, trust: HubTrust, name: &str) -> Result<String, String> {
    redwall_agent::tls::install_crypto_provider();
    let config = client_config(&trust).map_err(|e| e.to_string())?;
    let connector = TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let mut tls = within("the TLS handshake", connector.connect(server_name, tcp))
        .await
        .map_err(|e| format!("{e:?}"))?;
    let mut said = String::new();
    within("the server's greeting", tls.read_to_string(&mut said))
        .await
        .map_err(|e| e.to_string())?;
    Ok(said)
}

#[tokio::test]
async fn the_pinned_certificate_and_only_it_is_accepted() {
    let hub = self_signed();
    let addr = tls_server(hub.server_config()).await;

    let pinned = HubTrust::Pinned(hub.sha256.clone());
    assert_eq!(
        connect(addr, pinned.clone(), "127.0.0.1").await.unwrap(),
        "hello"
    );
    // The pin is the identity: the name dialled does not matter.
    assert_eq!(
        connect(addr, pinned, "not-the-hub.example").await.unwrap(),
        "hello"
    );

    let other = self_signed();
    let err = connect(addr, HubTrust::Pinned(other.sha256), "127.0.0.1")
        .await
        .unwrap_err();
    assert!(err.contains("not the one pinned"), "{err}");
    assert!(
        err.contains(&hub.sha256),
        "the log shows the fingerprint seen: {err}"
    );
}

#[tokio::test]
async fn a_pinned_tls12_server_is_accepted() {
    let hub = self_signed();
    let addr = tls_server(hub.server_config_with(&[&rustls::version::TLS12])).await;
    assert_eq!(
        connect(addr, HubTrust::Pinned(hub.sha256.clone()), "127.0.0.1")
            .await
            .unwrap(),
        "hello"
    );
    assert!(
        connect(addr, HubTrust::Pinned(self_signed().sha256), "127.0.0.1")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_server_holding_a_pinned_certificate_without_its_key_is_refused() {
    // The real certificate, but a private key that does not match it: the
    // handshake signature must give the impostor away.
    let hub = self_signed();
    let impostor = crate::certs::ServerCert {
        chain: hub.chain.clone(),
        key_der: self_signed().key_der,
        sha256: hub.sha256.clone(),
    };
    // rustls refuses to build a server with a mismatched pair unless the
    // check is skipped; build it by hand. Both versions: TLS 1.3 and 1.2
    // sign the handshake differently.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = provider
        .key_provider
        .load_private_key(rustls::pki_types::PrivateKeyDer::Pkcs8(
            impostor.key_der.clone().into(),
        ))
        .unwrap();
    let certified = Arc::new(rustls::sign::CertifiedKey::new(impostor.chain.clone(), key));
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Always(certified.clone())));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let addr = tls_server(Arc::new(config)).await;
        let err = connect(addr, HubTrust::Pinned(hub.sha256.clone()), "127.0.0.1")
            .await
            .unwrap_err();
        assert!(err.contains("BadSignature"), "{version:?}: {err}");
    }
}

/// Presents the same certificate and key to everyone, unchecked.
#[derive(Debug)]
struct Always(Arc<rustls::sign::CertifiedKey>);

impl rustls::server::ResolvesServerCert for Always {
    fn resolve(
        &self,
        _: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[tokio::test]
async fn a_ca_is_trusted_alone_and_names_are_checked() {
    let ca = TestCa::new("operator CA");
    let hub = ca.issue(&["localhost", "127.0.0.1"]);
    let addr = tls_server(hub.server_config()).await;

    assert_eq!(
        connect(addr, HubTrust::Ca(ca.pem()), "localhost")
            .await
            .unwrap(),
        "hello"
    );
    let err = connect(
        addr,
        HubTrust::Ca(TestCa::new("another CA").pem()),
        "localhost",
    )
    .await
    .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    let err = connect(addr, HubTrust::Ca(ca.pem()), "elsewhere.example")
        .await
        .unwrap_err();
    assert!(err.contains("NotValidForName"), "{err}");
}

#[tokio::test]
async fn the_system_roots_do_not_trust_a_self_signed_hub() {
    let hub = self_signed();
    let addr = tls_server(hub.server_config()).await;
    let err = connect(addr, HubTrust::SystemRoots, "localhost")
        .await
        .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

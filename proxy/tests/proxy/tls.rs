//! TLS upstreams: trusted through `ca_file`, refused clearly without it.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

use crate::support::*;

/// A TLS fake upstream with a fresh self-signed certificate for 127.0.0.1, offering h2
/// and HTTP/1.1; returns it and the certificate's PEM.
async fn tls_upstream() -> (FakeUpstream, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert_der: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert_der], key)
    .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    (
        FakeUpstream::start_tls(listener, acceptor),
        certified.cert.pem(),
    )
}

#[tokio::test]
async fn a_tls_upstream_is_trusted_through_the_ca_file() {
    let (upstream, pem) = tls_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, pem).unwrap();
    let config = leasehold_proxy::Config {
        ca_file: Some(ca_file),
        ..config()
    };
    let endpoint = format!("https://127.0.0.1:{}", upstream.addr.port());
    let proxy = Proxy::with_token(config, &endpoint).await;
    let (status, _, _) = proxy.get(&proxy.url("/api/v2/write?bucket=b")).await;
    assert_eq!(status, 204);
    let seen = upstream.last();
    assert_eq!(seen.authorization.as_deref(), Some("Token token-1"));
    assert_eq!(seen.path, "/api/v2/write");
    // ALPN picked HTTP/2 for the pooled upstream connection.
    assert_eq!(seen.version, http::Version::HTTP_2);
}

#[tokio::test]
async fn without_the_ca_file_the_certificate_is_refused_with_a_clear_502() {
    let (upstream, _pem) = tls_upstream().await;
    let endpoint = format!("https://127.0.0.1:{}", upstream.addr.port());
    let proxy = Proxy::with_token(config(), &endpoint).await;
    let (status, _, body) = proxy.get(&proxy.url("/ping")).await;
    assert_eq!(status, 502);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let message = json["message"].as_str().unwrap();
    assert!(message.contains("certificate"), "{message}");
    assert!(upstream.seen().is_empty());
}

//! TLS to PostgreSQL through rustls: tokio-postgres's `MakeTlsConnect` over
//! tokio-rustls, with the certificate checks each `sslmode` asks for (`url.rs`).
//!
//! Written here rather than taken from a glue crate: it is small, and the glue crates
//! verify every certificate fully, while libpq's modes need three checks: none
//! (`prefer`, `require`: encryption only, as libpq does without a root certificate),
//! the chain only (`verify-ca`), the chain and the host name (`verify-full`). The
//! crypto is ring's and the system roots are `rustls-native-certs`', both already in
//! the build for the InfluxDB client.
//!
//! No channel binding is offered (SCRAM's `tls-server-end-point`): the password never
//! crosses the wire with SCRAM anyway, and against a man in the middle the answer is
//! `verify-full`.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::Socket;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use super::PgError;
use super::url::{Roots, SslMode, TlsSettings};

/// Makes the TLS connections of one store (its pool's and its lock sessions').
#[derive(Clone)]
pub struct PgTls {
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for PgTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTls").finish_non_exhaustive()
    }
}

impl PgTls {
    /// The connector for `settings`; reads the root certificates when the mode checks
    /// the chain (once: a new CA file takes a restart).
    pub fn new(settings: &TlsSettings) -> Result<Self, PgError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match settings.mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => {
                Arc::new(EncryptionOnly(provider.clone()))
            }
            SslMode::VerifyCa => Arc::new(ChainOnly(webpki(settings, &provider)?)),
            SslMode::VerifyFull => webpki(settings, &provider)?,
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PgError::Tls(format!("TLS settings: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

/// rustls's own verifier (chain and host name) over the roots `settings` names.
fn webpki(
    settings: &TlsSettings,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, PgError> {
    let roots = Arc::new(roots(&settings.roots)?);
    WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| PgError::Tls(format!("TLS settings: {e}")))
}

fn roots(roots: &Roots) -> Result<RootCertStore, PgError> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::File(path) => {
            let unreadable = |reason: String| PgError::RootCert {
                path: path.display().to_string(),
                reason,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| unreadable(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| unreadable(e.to_string()))?;
            for cert in certs {
                store.add(cert).map_err(|e| unreadable(e.to_string()))?;
            }
            if store.is_empty() {
                return Err(unreadable("no certificate in it".into()));
            }
        }
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(PgError::RootCert {
                    path: "(the system's trusted certificates)".into(),
                    reason: "none found: give sslrootcert=PATH, the CA that signed the server's \
                             certificate"
                        .into(),
                });
            }
        }
    }
    Ok(store)
}

/// `prefer` and `require` without a root certificate, as libpq does them: encrypted,
/// the server's key proven, its certificate taken as it comes.
#[derive(Debug)]
struct EncryptionOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptionOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: rustls's checks less the host name. rustls checks the chain before
/// the name, so a name mismatch is the only error left to forgive.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Why the TLS handshake with PostgreSQL failed, in words an operator can act on.
/// Recognized by `error.rs` among tokio-postgres's errors.
#[derive(Debug, thiserror::Error)]
#[error("TLS with the PostgreSQL server at {host} failed: {reason}")]
pub struct HandshakeError {
    host: String,
    reason: String,
}

impl HandshakeError {
    fn new(host: &str, error: &io::Error) -> Self {
        let reason = match error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature,
            )) => "its certificate is not signed by a CA this control trusts (sslrootcert, or \
                   the system's roots without it)"
                .to_owned(),
            Some(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => format!(
                "its certificate is not valid for the name {host:?} (sslmode=verify-full checks \
                 it; connect by a name the certificate lists)"
            ),
            Some(rustls::Error::InvalidCertificate(CertificateError::Expired)) => {
                "its certificate has expired".to_owned()
            }
            Some(other) => other.to_string(),
            None => error.to_string(),
        };
        Self {
            host: host.to_owned(),
            reason,
        }
    }
}

impl MakeTlsConnect<Socket> for PgTls {
    type Stream = TlsStream;
    type TlsConnect = Connect;
    type Error = HandshakeError;

    fn make_tls_connect(&mut self, host: &str) -> Result<Connect, HandshakeError> {
        Ok(Connect {
            config: self.config.clone(),
            host: host.to_owned(),
        })
    }
}

/// One connection's TLS handshake. The host name is checked only when the server
/// accepts TLS: over a Unix socket (no name) the server declines it, and `prefer`
/// goes on in plain.
pub struct Connect {
    config: Arc<ClientConfig>,
    host: String,
}

impl TlsConnect<Socket> for Connect {
    type Stream = TlsStream;
    type Error = HandshakeError;
    type Future = Pin<Box<dyn Future<Output = Result<TlsStream, HandshakeError>> + Send>>;

    fn connect(self, socket: Socket) -> Self::Future {
        Box::pin(async move {
            let name = ServerName::try_from(self.host.clone()).map_err(|e| HandshakeError {
                host: self.host.clone(),
                reason: format!("not a host name TLS can check: {e}"),
            })?;
            tokio_rustls::TlsConnector::from(self.config)
                .connect(name, socket)
                .await
                .map(TlsStream)
                .map_err(|e| HandshakeError::new(&self.host, &e))
        })
    }
}

/// A TLS connection to PostgreSQL.
pub struct TlsStream(tokio_rustls::client::TlsStream<Socket>);

impl tokio_postgres::tls::TlsStream for TlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

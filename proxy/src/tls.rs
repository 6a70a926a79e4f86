//! Trust for TLS upstreams: the system's roots plus, optionally, one PEM CA file.
//!
//! Built once, at config validation, so an unreadable or empty CA file stops the proxy
//! before it binds instead of failing every request later. The crypto provider is named
//! explicitly (ring) rather than taken from a process-wide default, so linking another
//! rustls user into the binary cannot change or break it.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tracing::{debug, warn};

/// Why the trust roots could not be built. Its own type, so this module depends on
/// nothing of the config's; `config.rs` turns it into the matching `ConfigError`.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file cannot be read.
    #[error("cannot read the CA file {path}: {source}")]
    CaFileRead {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file holds no PEM certificate.
    #[error("the CA file {path} contains no PEM certificate")]
    CaFileEmpty {
        /// The file.
        path: std::path::PathBuf,
    },
    /// A certificate in the CA file is malformed.
    #[error("the CA file {path} has an invalid certificate: {reason}")]
    CaFileInvalid {
        /// The file.
        path: std::path::PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The TLS library refused the configuration.
    #[error("TLS configuration failed: {0}")]
    Tls(rustls::Error),
}

/// A client TLS configuration trusting the system roots and the CAs in `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        warn!(%error, "could not load some system trust roots");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    debug!(added, ignored, "system trust roots loaded");
    if let Some(path) = ca_file {
        add_ca_file(&mut roots, path)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<(), TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::CaFileRead {
        path: path.to_owned(),
        source,
    })?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| TlsError::CaFileInvalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| TlsError::CaFileInvalid {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(TlsError::CaFileEmpty {
            path: path.to_owned(),
        });
    }
    debug!(path = %path.display(), count, "extra CA certificates loaded");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(contents: &str) -> Result<usize, TlsError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, contents).unwrap();
        let mut roots = RootCertStore::empty();
        add_ca_file(&mut roots, &path)?;
        Ok(roots.len())
    }

    #[test]
    fn a_file_without_certificates_is_refused_as_empty() {
        assert!(matches!(
            load("not a certificate\n"),
            Err(TlsError::CaFileEmpty { .. })
        ));
    }

    #[test]
    fn a_broken_certificate_section_is_refused_as_invalid() {
        let broken = "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n";
        assert!(matches!(load(broken), Err(TlsError::CaFileInvalid { .. })));
    }

    #[test]
    fn a_certificate_among_other_sections_is_loaded() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{}",
            cert.cert.pem()
        );
        assert_eq!(load(&pem).unwrap(), 1);
    }
}

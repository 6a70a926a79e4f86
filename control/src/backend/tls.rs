//! TLS towards InfluxDB: the add-on's own CA certificates, and TLS failures named as
//! such.
//!
//! A private CA travels with the add-on's settings as PEM text (not a path), so every
//! replica of the control trusts it without a file of its own. A refused certificate
//! reaches us buried in reqwest → hyper → io → rustls errors whose top line is "error
//! sending request"; [`tls_failure`] digs out the rustls cause and says it in words an
//! operator can act on (unknown issuer: give the add-on `--ca-file`).

use std::error::Error as StdError;

/// The certificates in `pem`, or why there are none usable.
pub fn parse_ca_pem(pem: &str) -> Result<Vec<reqwest::Certificate>, String> {
    let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
        .map_err(|e| format!("the CA file is not valid PEM: {}", e.without_url()))?;
    if certs.is_empty() {
        return Err("the CA file contains no PEM certificate".into());
    }
    Ok(certs)
}

/// The TLS failure behind `error`, in words, if there is one.
pub fn tls_failure(error: &reqwest::Error) -> Option<String> {
    let mut next: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(current) = next {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(describe(tls));
        }
        // `io::Error::source` skips the error it wraps; look at that one too.
        if let Some(tls) = current
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(describe(tls));
        }
        // Some layer may hold the rustls error in a shape that does not downcast (a
        // boxed wrapper); its words are stable: `invalid peer certificate: <Kind>`.
        let text = current.to_string();
        if let Some(kind) = text.split("invalid peer certificate: ").nth(1) {
            return Some(describe_certificate(kind.split([' ', '(', ',']).next()?));
        }
        next = current.source();
    }
    None
}

/// A refused certificate, by the name of its `CertificateError` variant.
fn describe_certificate(kind: &str) -> String {
    match kind {
        "UnknownIssuer" => "TLS: unknown issuer: the server's certificate is not signed by \
             a trusted CA (give the add-on the CA with --ca-file)"
            .into(),
        "NotValidForName" | "NotValidForNameContext" => {
            "TLS: name mismatch: the server's certificate is not valid for the host in \
             --endpoint-url"
                .into()
        }
        "Expired" | "ExpiredContext" => "TLS: expired: the server's certificate has expired".into(),
        "NotValidYet" | "NotValidYetContext" => {
            "TLS: the server's certificate is not valid yet (check the clocks)".into()
        }
        "Revoked" => "TLS: the server's certificate is revoked".into(),
        other => format!("TLS: the server's certificate was refused: {other}"),
    }
}

/// A rustls error as an operator reads it.
pub fn describe(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(cert) => {
            // The variant's name (without any context fields) picks the words.
            let debug = format!("{cert:?}");
            describe_certificate(debug.split([' ', '(', '{']).next().unwrap_or_default())
        }
        other => format!("TLS: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CertificateError;

    #[test]
    fn certificate_failures_are_named() {
        let name = |e| describe(&rustls::Error::InvalidCertificate(e));
        assert!(name(CertificateError::UnknownIssuer).contains("unknown issuer"));
        assert!(name(CertificateError::UnknownIssuer).contains("--ca-file"));
        assert!(name(CertificateError::NotValidForName).contains("name mismatch"));
        assert!(name(CertificateError::Expired).contains("expired"));
        assert!(describe_certificate("NotValidForNameContext").contains("name mismatch"));
        assert!(describe_certificate("ExpiredContext").contains("expired"));
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        assert!(parse_ca_pem("").unwrap_err().contains("no PEM certificate"));
        assert!(
            parse_ca_pem("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
                .is_err()
        );
    }
}

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
        // boxed wrapper); its words are stable: `invalid peer certificate: ...`.
        let text = current.to_string();
        if text.contains(CERTIFICATE_PREFIX) {
            return Some(describe_text(&text));
        }
        next = current.source();
    }
    None
}

/// How rustls starts the message of a refused certificate.
const CERTIFICATE_PREFIX: &str = "invalid peer certificate: ";

/// A rustls error as an operator reads it.
pub fn describe(error: &rustls::Error) -> String {
    describe_text(&error.to_string())
}

/// Names the failure in rustls' message `text` (unknown issuer, name mismatch,
/// expired) and keeps rustls' own detail, which says for example which names the
/// certificate is valid for.
fn describe_text(text: &str) -> String {
    let Some(detail) = text.split(CERTIFICATE_PREFIX).nth(1) else {
        return format!("TLS: {text}");
    };
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| detail.starts_with(p));
    if starts(&["UnknownIssuer"]) {
        "TLS: unknown issuer: the server's certificate is not signed by a trusted CA \
         (give the add-on the CA with --ca-file)"
            .into()
    } else if starts(&["NotValidForName", "certificate not valid for name"]) {
        format!(
            "TLS: name mismatch: the server's certificate does not name the host in \
             --endpoint-url ({detail})"
        )
    } else if starts(&["Expired", "certificate expired"]) {
        format!("TLS: expired: the server's certificate has expired ({detail})")
    } else if starts(&["NotValidYet", "certificate not valid yet"]) {
        format!("TLS: the server's certificate is not valid yet, check the clocks ({detail})")
    } else {
        format!("TLS: the server's certificate was refused: {detail}")
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
        assert!(name(CertificateError::Expired).contains("TLS: expired"));
        assert!(
            describe_text(
                "invalid peer certificate: certificate not valid for name \"localhost\"; \
                 certificate is only valid for IpAddress(127.0.0.1)"
            )
            .contains("name mismatch")
        );
        assert!(
            describe_text("invalid peer certificate: certificate expired: verification time 5")
                .contains("TLS: expired")
        );
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

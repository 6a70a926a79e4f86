//! The store URL's TLS parameters, read as libpq reads them: `sslmode` (`disable`,
//! `prefer` — the default —, `require`, `verify-ca`, `verify-full`) and `sslrootcert`
//! (a PEM file of trusted CA certificates, or `system`). tokio-postgres knows only the
//! first three modes and no `sslrootcert`, so both are taken out here and the rest of
//! the URL is handed to it unchanged. Pure: no file is read here (see `tls.rs`).
//!
//! The URL may hold a password: no error repeats it, nor any part of it but the
//! offending parameter's name and value.

use std::path::PathBuf;

use zeroize::Zeroizing;

use super::PgError;

/// libpq's `sslmode`, less `allow` (plain first, TLS only if refused), which no
/// deployment should want and tokio-postgres cannot do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain connections only.
    Disable,
    /// TLS if the server offers it, else plain; the certificate is not checked.
    Prefer,
    /// TLS or nothing; the certificate is not checked unless `sslrootcert` is given
    /// (then as `verify-ca`), as libpq does. Protects against eavesdropping only.
    Require,
    /// TLS, the server's certificate chain checked against the trusted roots.
    VerifyCa,
    /// TLS, the chain checked and the certificate valid for the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The name in the URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: whether to ask for TLS, and whether to insist.
    pub fn for_client(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Client;
        match self {
            Self::Disable => Client::Disable,
            Self::Prefer => Client::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => Client::Require,
        }
    }
}

/// Which certificate authorities a verifying mode trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The system's (`sslrootcert` absent, or `sslrootcert=system`).
    System,
    /// Those in this PEM file (`sslrootcert=PATH`).
    File(PathBuf),
}

/// How to secure the connection, from the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The mode, after libpq's rules (`require` with a root file is `verify-ca`).
    pub mode: SslMode,
    /// Whom to trust when the mode verifies.
    pub roots: Roots,
}

impl TlsSettings {
    /// Whether the server's certificate chain is checked.
    pub fn verifies_chain(&self) -> bool {
        matches!(self.mode, SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// Splits `url` into the URL tokio-postgres is given (without `sslmode` and
/// `sslrootcert`) and the TLS settings they named.
pub fn split(url: &str) -> Result<(Zeroizing<String>, TlsSettings), PgError> {
    let (base, query) = match query_start(url) {
        Some(at) => (&url[..at], &url[at + 1..]),
        None => (url, ""),
    };
    let mut mode = None;
    let mut root_cert = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match decode(key)?.as_str() {
            "sslmode" => mode = Some(parse_mode(&decode(value)?)?),
            "sslrootcert" => root_cert = Some(decode(value)?),
            _ => kept.push(pair),
        }
    }
    let settings = settings(mode, root_cert)?;
    let mut rest = Zeroizing::new(String::with_capacity(url.len()));
    rest.push_str(base);
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Ok((rest, settings))
}

/// libpq's rules: `prefer` by default, or `verify-full` with the system's roots
/// asked for; `require` with a root file verifies the chain; `sslrootcert=system`
/// only with `verify-full`, since any CA the system trusts could otherwise vouch for
/// an impostor.
fn settings(mode: Option<SslMode>, root_cert: Option<String>) -> Result<TlsSettings, PgError> {
    let roots = match root_cert.as_deref() {
        None => None,
        Some("") => return Err(PgError::Url("sslrootcert is empty".into())),
        Some("system") => Some(Roots::System),
        Some(path) => Some(Roots::File(PathBuf::from(path))),
    };
    let mode = match (mode, &roots) {
        (None, Some(Roots::System)) => SslMode::VerifyFull,
        (Some(mode), Some(Roots::System)) if mode != SslMode::VerifyFull => {
            return Err(PgError::Url(format!(
                "sslrootcert=system needs sslmode=verify-full, not {}",
                mode.as_str()
            )));
        }
        (Some(SslMode::Require), Some(Roots::File(_))) => SslMode::VerifyCa,
        (mode, _) => mode.unwrap_or(SslMode::Prefer),
    };
    Ok(TlsSettings {
        mode,
        roots: roots.unwrap_or(Roots::System),
    })
}

fn parse_mode(value: &str) -> Result<SslMode, PgError> {
    Ok(match value {
        "disable" => SslMode::Disable,
        "prefer" => SslMode::Prefer,
        "require" => SslMode::Require,
        "verify-ca" => SslMode::VerifyCa,
        "verify-full" => SslMode::VerifyFull,
        "allow" => {
            return Err(PgError::Url(
                "sslmode=allow is not supported: use prefer (TLS when the server offers it) \
                 or, better, require or verify-full"
                    .into(),
            ));
        }
        other => {
            return Err(PgError::Url(format!(
                "unknown sslmode {other:?}: use disable, prefer, require, verify-ca or verify-full"
            )));
        }
    })
}

/// Where the query starts, found as tokio-postgres finds it: after the credentials
/// (up to the first `@`, which may be followed by a `?` in the password), the first `?`.
fn query_start(url: &str) -> Option<usize> {
    let after_scheme = url.find("://").map_or(0, |at| at + 3);
    let host_start = url[after_scheme..]
        .find('@')
        .map_or(after_scheme, |at| after_scheme + at + 1);
    url[host_start..].find('?').map(|at| host_start + at)
}

/// Percent-decoding of one query component, as the URL's parser would do it.
fn decode(component: &str) -> Result<String, PgError> {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| component.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| PgError::Url("a TLS parameter is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_of(url: &str) -> TlsSettings {
        split(url).unwrap().1
    }

    #[test]
    fn the_tls_parameters_are_taken_out_and_the_rest_kept_as_written() {
        let (rest, tls) = split(
            "postgres://u:p%40ss@db:5432/x?application_name=a&sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fca%20dir%2Froot.pem&connect_timeout=3",
        )
        .unwrap();
        assert_eq!(
            rest.as_str(),
            "postgres://u:p%40ss@db:5432/x?application_name=a&connect_timeout=3"
        );
        assert_eq!(tls.mode, SslMode::VerifyFull);
        assert_eq!(tls.roots, Roots::File("/etc/ca dir/root.pem".into()));
        let (rest, _) = split("postgresql://db/x?sslmode=disable").unwrap();
        assert_eq!(rest.as_str(), "postgresql://db/x");
        let (rest, tls) = split("postgres://db/x").unwrap();
        assert_eq!(rest.as_str(), "postgres://db/x");
        assert_eq!(tls.mode, SslMode::Prefer, "libpq's default");
    }

    #[test]
    fn a_question_mark_in_the_password_does_not_start_the_query() {
        let (rest, tls) = split("postgres://u:a?b&c@db/x?sslmode=require").unwrap();
        assert_eq!(rest.as_str(), "postgres://u:a?b&c@db/x");
        assert_eq!(tls.mode, SslMode::Require);
    }

    #[test]
    fn libpq_rules_for_the_mode_and_the_roots() {
        let mode = |url: &str| settings_of(url).mode;
        assert_eq!(mode("postgres://db/x?sslmode=require"), SslMode::Require);
        assert_eq!(
            mode("postgres://db/x?sslmode=require&sslrootcert=/ca.pem"),
            SslMode::VerifyCa,
            "require with a root file checks the chain"
        );
        assert_eq!(mode("postgres://db/x?sslmode=verify-ca"), SslMode::VerifyCa);
        assert_eq!(
            mode("postgres://db/x?sslrootcert=system"),
            SslMode::VerifyFull
        );
        assert_eq!(
            settings_of("postgres://db/x?sslmode=verify-full").roots,
            Roots::System
        );
        assert!(settings_of("postgres://db/x?sslmode=verify-ca").verifies_chain());
        assert!(!settings_of("postgres://db/x?sslmode=require").verifies_chain());
        assert_eq!(
            SslMode::VerifyFull.for_client(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(
            SslMode::Prefer.for_client(),
            tokio_postgres::config::SslMode::Prefer
        );
    }

    #[test]
    fn unknown_or_unsafe_values_are_refused_without_the_password() {
        for (url, says) in [
            (
                "postgres://u:hunter2@db/x?sslmode=verify_full",
                "unknown sslmode",
            ),
            ("postgres://u:hunter2@db/x?sslmode=allow", "not supported"),
            (
                "postgres://u:hunter2@db/x?sslmode=require&sslrootcert=system",
                "needs sslmode=verify-full",
            ),
            ("postgres://u:hunter2@db/x?sslrootcert=", "empty"),
        ] {
            let error = split(url).unwrap_err().to_string();
            assert!(error.contains(says), "{url}: {error}");
            assert!(!error.contains("hunter2"), "{error}");
        }
    }
}

//! Proxy settings, and their validation into a [`ValidConfig`] before anything binds.
//!
//! Everything that can be wrong with the settings (an upstream URL that is not http(s),
//! a CA file that is unreadable or holds no certificate, limits that hyper would panic
//! on) is found here, once, with one clear message — not on the first request.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::browser::{AllowListError, BrowserPolicy};
use crate::outlet::OutletRoute;
use crate::upstream::{Upstream, UpstreamUrlError, redact_url};
use crate::{tls, upstream};

/// The smallest read buffer hyper accepts (it panics below this).
pub const MIN_HEADER_BYTES: usize = 8192;

/// A further address to listen on, besides `listen` or `admin_listen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr {
    /// The address.
    pub addr: SocketAddr,
    /// Skipped with a warning, rather than an error, when the host cannot bind it for
    /// any reason but "in use" or "permission denied": the default IPv6 loopback on a
    /// host without IPv6.
    pub optional: bool,
}

/// Proxy settings as given by the CLI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the application sends its InfluxDB requests.
    pub listen: SocketAddr,
    /// Further addresses for the proxy listener (the CLI's default adds `[::1]:8086`,
    /// so `localhost` works whichever loopback it resolves to).
    pub extra_listen: Vec<ListenAddr>,
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub admin_listen: SocketAddr,
    /// Further addresses for the admin listener.
    pub extra_admin_listen: Vec<ListenAddr>,
    /// The InfluxDB base URL; the lease's `endpoint_url` when absent.
    pub upstream: Option<String>,
    /// An extra PEM CA bundle trusted for TLS upstreams, besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// Concurrent client connections; further ones are closed at once.
    pub max_connections: usize,
    /// Threads serving client connections, each with its own current-thread runtime and
    /// its own socket per proxy listen address (`shard.rs`); at least 1. With 1, the
    /// default, everything runs on the caller's runtime. The CLI sets it to the number
    /// of CPUs the process may run on.
    pub threads: usize,
    /// Limit on a request's head (request line and headers), in bytes; at least 8192.
    /// For HTTP/1 it is also how far a connection reads ahead: hyper's read buffer grows
    /// up to it while a large body streams through, so lowering it costs throughput.
    pub max_header_bytes: usize,
    /// How long to wait for a TCP and TLS connection to the upstream.
    pub upstream_connect_timeout: Duration,
    /// How long a client may take to send a request head before it is disconnected.
    /// For HTTP/1, hyper starts this clock as soon as a kept-alive connection waits for
    /// its next request, so it also caps how long such a connection may sit idle.
    pub header_read_timeout: Duration,
    /// How long a new connection may take to send its first byte (both listeners).
    pub first_byte_timeout: Duration,
    /// How long a connection may go without a byte in either direction before it is
    /// closed (gracefully: a request in flight finishes first). Both listeners.
    pub idle_timeout: Duration,
    /// How long the proxy waits for the next part of a request body.
    pub body_read_timeout: Duration,
    /// How often an HTTP/2 client connection is pinged while it is quiet.
    pub http2_keepalive_interval: Duration,
    /// How long an HTTP/2 ping may go unanswered before the connection is closed.
    pub http2_keepalive_timeout: Duration,
    /// How long in-flight requests may run after shutdown is requested.
    pub shutdown_grace: Duration,
    /// Web origins (`scheme://host[:port]`) whose requests are served; any other request
    /// carrying `Origin` is refused (see `browser.rs`).
    pub allow_origins: Vec<String>,
    /// Host names or addresses accepted in `Host` besides loopback and the listen address.
    pub allow_hosts: Vec<String>,
    /// Store and forward for writes (`--buffer-dir`); off when `None`.
    pub buffer: Option<crate::buffer::BufferConfig>,
    /// Send upstream connections through this outlet instead of TCP/TLS (`outlet/`).
    pub outlet: Option<OutletRoute>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8086)),
            extra_listen: Vec::new(),
            admin_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8087)),
            extra_admin_listen: Vec::new(),
            upstream: None,
            ca_file: None,
            max_connections: 1024,
            threads: 1,
            // 256 KiB rather than 64: the same limit is hyper's read-ahead, and a 1 MiB
            // batch read 64 KiB at a time cost ~20% more CPU (BENCHMARKS.md). InfluxDB
            // itself (Go's default) accepts heads up to 1 MiB.
            max_header_bytes: 256 * 1024,
            upstream_connect_timeout: Duration::from_secs(2),
            header_read_timeout: Duration::from_secs(30),
            first_byte_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_read_timeout: Duration::from_secs(30),
            http2_keepalive_interval: Duration::from_secs(20),
            http2_keepalive_timeout: Duration::from_secs(20),
            shutdown_grace: Duration::from_secs(10),
            allow_origins: Vec::new(),
            allow_hosts: Vec::new(),
            buffer: None,
            outlet: None,
        }
    }
}

/// Settings that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `--upstream` is not a usable base URL (the URL is shown without credentials).
    #[error("invalid upstream URL {url:?}: {reason}")]
    Upstream {
        /// The URL, user-info redacted.
        url: String,
        /// What is wrong with it.
        reason: UpstreamUrlError,
    },
    /// The CA file cannot be read.
    #[error("cannot read the CA file {path}: {source}")]
    CaFileRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file holds no PEM certificate.
    #[error("the CA file {path} contains no PEM certificate")]
    CaFileEmpty {
        /// The file.
        path: PathBuf,
    },
    /// A certificate in the CA file is malformed.
    #[error("the CA file {path} has an invalid certificate: {reason}")]
    CaFileInvalid {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The TLS library refused the configuration.
    #[error("TLS configuration failed: {0}")]
    Tls(rustls::Error),
    /// An `--allow-origin` or `--allow-host` entry is not usable.
    #[error(transparent)]
    AllowList(#[from] AllowListError),
    /// A limit is out of range.
    #[error("{name} must be {requirement}")]
    Limit {
        /// The setting.
        name: &'static str,
        /// What it must be.
        requirement: &'static str,
    },
}

/// The trust-root failures keep their names as config errors.
impl From<tls::TlsError> for ConfigError {
    fn from(error: tls::TlsError) -> Self {
        match error {
            tls::TlsError::CaFileRead { path, source } => Self::CaFileRead { path, source },
            tls::TlsError::CaFileEmpty { path } => Self::CaFileEmpty { path },
            tls::TlsError::CaFileInvalid { path, reason } => Self::CaFileInvalid { path, reason },
            tls::TlsError::Tls(error) => Self::Tls(error),
        }
    }
}

/// Settings that passed validation, with the pieces they imply prepared.
pub struct ValidConfig {
    pub(crate) config: Config,
    pub(crate) upstream: Option<Upstream>,
    pub(crate) tls: rustls::ClientConfig,
    pub(crate) browser: BrowserPolicy,
}

impl Config {
    /// Checks everything and prepares the upstream URL and TLS trust.
    pub fn validate(self) -> Result<ValidConfig, ConfigError> {
        let limit = |ok: bool, name, requirement| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Limit { name, requirement })
            }
        };
        limit(self.max_connections > 0, "max_connections", "at least 1")?;
        limit(self.threads > 0, "threads", "at least 1")?;
        limit(
            self.max_header_bytes >= MIN_HEADER_BYTES,
            "max_header_bytes",
            "at least 8192",
        )?;
        limit(
            !self.upstream_connect_timeout.is_zero(),
            "upstream_connect_timeout",
            "more than zero",
        )?;
        for (value, name) in [
            (self.header_read_timeout, "header_read_timeout"),
            (self.first_byte_timeout, "first_byte_timeout"),
            (self.idle_timeout, "idle_timeout"),
            (self.body_read_timeout, "body_read_timeout"),
            (self.http2_keepalive_interval, "http2_keepalive_interval"),
            (self.http2_keepalive_timeout, "http2_keepalive_timeout"),
        ] {
            limit(!value.is_zero(), name, "more than zero")?;
        }
        if let Some(buffer) = &self.buffer {
            limit(buffer.max_bytes > 0, "buffer_max_bytes", "more than zero")?;
            limit(
                buffer.replay_rate > 0,
                "buffer_replay_rate",
                "more than zero",
            )?;
            limit(
                !buffer.upstream_timeout.is_zero(),
                "buffer_upstream_timeout",
                "more than zero",
            )?;
        }
        let upstream = self
            .upstream
            .as_deref()
            .map(|url| {
                upstream::Upstream::parse(url).map_err(|reason| ConfigError::Upstream {
                    url: redact_url(url),
                    reason,
                })
            })
            .transpose()?;
        let tls = tls::client_config(self.ca_file.as_deref())?;
        let browser = BrowserPolicy::new(&self.allow_origins, &self.allow_hosts, self.listen)?;
        Ok(ValidConfig {
            config: self,
            upstream,
            tls,
            browser,
        })
    }
}

impl ValidConfig {
    /// Sends upstream connections through `route` (an outlet): known only once the
    /// identity it authenticates as exists, which may be after validation.
    pub fn with_outlet(mut self, route: OutletRoute) -> Self {
        self.config.outlet = Some(route);
        self
    }

    /// The settings as given.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The proxy listen address.
    pub fn listen(&self) -> SocketAddr {
        self.config.listen
    }

    /// The admin listen address.
    pub fn admin_listen(&self) -> SocketAddr {
        self.config.admin_listen
    }

    /// How long in-flight requests may run after the shutdown signal.
    pub fn shutdown_grace(&self) -> Duration {
        self.config.shutdown_grace
    }
}

impl fmt::Debug for ValidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidConfig")
            .field("config", &self.config)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let valid = Config::default().validate().unwrap();
        assert_eq!(valid.listen().port(), 8086);
        assert_eq!(valid.admin_listen().port(), 8087);
        assert!(valid.upstream.is_none());
    }

    #[test]
    fn bad_upstream_is_refused_without_echoing_credentials() {
        let err = Config {
            upstream: Some("ftp://user:hunter2@h".into()),
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("http or https") || text.contains("credentials"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn ca_file_problems_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = Config {
            ca_file: Some(missing.clone()),
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert!(matches!(err, ConfigError::CaFileRead { .. }));
        assert!(err.to_string().contains("missing.pem"));

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = Config {
            ca_file: Some(empty),
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert!(matches!(err, ConfigError::CaFileEmpty { .. }), "{err}");
    }

    #[test]
    fn limits_hyper_would_panic_on_are_refused() {
        let err = Config {
            max_header_bytes: 100,
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("max_header_bytes"));
        let err = Config {
            max_connections: 0,
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("max_connections"));
        let err = Config {
            first_byte_timeout: Duration::ZERO,
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("first_byte_timeout"));
    }
}

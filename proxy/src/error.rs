//! The crate's error at its boundary with the CLI.

use std::io;
use std::net::SocketAddr;

use crate::config::ConfigError;

/// Why the proxy could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The settings are invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// A bound listener has no local address (should not happen).
    #[error("cannot read the listener's address: {0}")]
    LocalAddr(io::Error),
    /// The proxy stopped before it became ready (shutdown requested first).
    #[error("the proxy stopped before it obtained a first lease")]
    StoppedBeforeReady,
    /// The store-and-forward directory cannot be used.
    #[error(transparent)]
    Buffer(#[from] crate::buffer::LogError),
    /// A data-path thread or its runtime could not be started.
    #[error("cannot start a proxy thread: {0}")]
    Thread(io::Error),
    /// A proxy task panicked.
    #[error("a proxy task failed: {0}")]
    Task(String),
}

//! The PostgreSQL store's errors: why it could not be opened or used, and how a
//! statement's failure maps to a [`StoreError`] (unreachable, so worth another replica,
//! or a failure of the statement itself).

use super::schema;
use super::tls::HandshakeError;
use crate::store::StoreError;

/// Why the PostgreSQL store could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The URL does not parse (the message never repeats the URL: it may hold a password).
    #[error("the store URL is not a valid PostgreSQL URL: {0}")]
    Url(String),
    /// The root certificates (`sslrootcert`) could not be read.
    #[error("cannot use sslrootcert {path}: {reason}")]
    RootCert {
        /// The file (or the system's store).
        path: String,
        /// Why.
        reason: String,
    },
    /// The TLS handshake failed (the message says which check, see `tls.rs`).
    #[error("{0}")]
    Tls(String),
    /// TLS was required and the server does not accept it.
    #[error(
        "the PostgreSQL server does not accept TLS, which the store URL requires \
         (sslmode=require, verify-ca or verify-full): turn ssl on in the server, or use \
         sslmode=prefer or disable on a trusted network"
    )]
    TlsRefused,
    /// The database could not be reached.
    #[error("PostgreSQL is unreachable: {0}")]
    Unreachable(String),
    /// A statement failed.
    #[error("PostgreSQL: {0}")]
    Query(String),
    /// The schema is newer than this build.
    #[error(
        "the database's schema is at version {found}, newer than this control knows ({known}): \
         upgrade this replica to the release that migrated it",
        known = schema::CURRENT
    )]
    Newer {
        /// The version found.
        found: i32,
    },
    /// The schema is older than this build (or absent).
    #[error(
        "the database's schema is at version {found}, this control needs {known}: run \
         `leasehold control migrate --store URL` once, on any replica of this release (with \
         its data directory), then start this replica again",
        known = schema::CURRENT
    )]
    Older {
        /// The version found.
        found: i32,
    },
    /// The database belongs to another control identity.
    #[error(
        "this replica's control identity ({local}) is not the one recorded in the database \
         ({recorded}): every replica must have the same identity key (copy identity.key, with \
         control.json, from the data directory of the replica that ran `control init`)"
    )]
    IdentityMismatch {
        /// This replica's.
        local: String,
        /// The database's.
        recorded: String,
    },
    /// `control init` on a database another control identity already owns.
    #[error(
        "the database already belongs to control {recorded}: nothing was changed; for \
         another replica, copy the data directory of the one that ran `control init` (its \
         identity key) instead of running init again; to upgrade its schema, run \
         `leasehold control migrate --store URL` with that data directory"
    )]
    AlreadyInitialized {
        /// The database's.
        recorded: String,
    },
    /// `control migrate` on a database another control identity owns.
    #[error(
        "the database belongs to control {recorded}, not to this replica's ({local}): nothing \
         was changed; run `control migrate` with the data directory of one of that \
         control's replicas"
    )]
    NotThisControl {
        /// This replica's.
        local: String,
        /// The database's.
        recorded: String,
    },
    /// `control init` never recorded an identity in this database.
    #[error(
        "no control identity is recorded in the database: run `leasehold control init --store URL` first"
    )]
    NoIdentity,
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> Self {
        match e {
            // TLS failing is the store out of reach too: not ready, issuing nothing.
            PgError::Unreachable(_) | PgError::Tls(_) | PgError::TlsRefused => {
                StoreError::unavailable(e.to_string())
            }
            other => StoreError::new(other.to_string()),
        }
    }
}

/// A statement's error: unreachable (connection lost or refused, server shutting
/// down or starting up) or a failure of the statement itself.
pub(crate) fn pg(e: tokio_postgres::Error) -> PgError {
    match e.as_db_error() {
        // Class 57 (operator intervention: shutdown, starting up) and 08 (connection
        // exception) mean "this server, now": another attempt may well work.
        Some(db) if matches!(&db.code().code()[..2], "57" | "08") => {
            PgError::Unreachable(db.message().to_owned())
        }
        Some(db) => PgError::Query(db.message().to_owned()),
        // "error connecting to server" alone does not say whether it was refused or
        // timed out: the causes (socket and protocol errors; never the URL) follow.
        None => tls_failure(&e).unwrap_or_else(|| PgError::Unreachable(with_causes(&e))),
    }
}

/// A failure of TLS, told apart from the rest of the connection's: our handshake's
/// own error (`tls.rs`), or tokio-postgres's words when the server declines TLS.
fn tls_failure(e: &tokio_postgres::Error) -> Option<PgError> {
    let cause = std::error::Error::source(e)?;
    if let Some(handshake) = cause.downcast_ref::<HandshakeError>() {
        return Some(PgError::Tls(handshake.to_string()));
    }
    // tokio-postgres's message for a server answering "no" to the TLS request with
    // sslmode=require (the tests check it still reads so).
    (cause.to_string() == "server does not support TLS").then_some(PgError::TlsRefused)
}

/// `error` and the chain of its sources, `: `-separated.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

pub(super) fn store_err(e: tokio_postgres::Error) -> StoreError {
    pg(e).into()
}

pub(super) fn pool_err(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => store_err(e),
        other => StoreError::unavailable(format!("PostgreSQL: {other}")),
    }
}

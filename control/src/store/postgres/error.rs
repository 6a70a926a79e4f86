//! The PostgreSQL store's errors: why it could not be opened or used, and how a
//! statement's failure maps to a [`StoreError`] (unreachable, so worth another replica,
//! or a failure of the statement itself).

use super::schema;
use crate::store::StoreError;

/// Why the PostgreSQL store could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The URL does not parse (the message never repeats the URL: it may hold a password).
    #[error("the store URL is not a valid PostgreSQL URL: {0}")]
    Url(String),
    /// TLS was required, which this build does not do yet.
    #[error(
        "sslmode={0} asks for TLS to PostgreSQL, which this control does not support yet: \
         use sslmode=disable or prefer on a trusted network, or a TLS-terminating proxy"
    )]
    TlsUnsupported(&'static str),
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
         `leasehold control init --store URL` (it applies the migrations)",
        known = schema::CURRENT
    )]
    Older {
        /// The version found.
        found: i32,
    },
    /// The database belongs to another control identity.
    #[error(
        "this replica's control identity ({local}) is not the one recorded in the database \
         ({recorded}): every replica must have the same identity key (copy control.key from \
         the data directory of the replica that ran `control init`)"
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
         identity key) instead of running init again"
    )]
    AlreadyInitialized {
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
            PgError::Unreachable(_) => StoreError::unavailable(e.to_string()),
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
        None => PgError::Unreachable(with_causes(&e)),
    }
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

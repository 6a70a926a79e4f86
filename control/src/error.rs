//! The control's error type, and how much of it a peer gets to see.

use leasehold_protocol::{ErrorCode, WireError};

use crate::backend::{BackendError, VerifyError};
use crate::datadir::DataDirError;
use crate::store::{RedeemError, StoreError};

/// Why a request failed. The `Display` form is for the control's log; [`Self::to_wire`]
/// is what the peer sees.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The caller is not an enrolled member.
    #[error("caller is not an enrolled member")]
    NotMember,
    /// The caller is not an admin.
    #[error("caller is not an admin")]
    NotAdmin,
    /// No such object, or not visible to the caller.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request is invalid; the message is written for the user and safe to return.
    #[error("{0}")]
    BadRequest(String),
    /// The member holds as many live leases as its policy allows.
    #[error("the member already holds {max} live leases, the most allowed")]
    TooManyLeases {
        /// The cap that applied.
        max: u32,
    },
    /// The caller may not do this, for a reason safe to tell it.
    #[error("{0}")]
    Forbidden(&'static str),
    /// No add-on configured yet.
    #[error("no InfluxDB add-on is configured")]
    NoAddon,
    /// A ticket could not be redeemed.
    #[error("ticket refused: {0}")]
    Ticket(#[from] RedeemError),
    /// InfluxDB failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file in the data directory could not be read or written.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// New add-on settings failed the check against InfluxDB; nothing was changed.
    #[error("add-on settings refused: {0}")]
    Unverified(VerifyError),
    /// The operating system's random source failed; nothing was created.
    #[error(transparent)]
    Random(#[from] crate::entropy::RandomError),
    /// The add-on configuration that issued a lease is not kept any more.
    #[error(
        "the add-on configuration {0} that issued this lease is missing (addons/{0}.json in the data directory)"
    )]
    IssuerMissing(String),
}

impl ControlError {
    /// The coarse error for the peer.
    pub fn to_wire(&self) -> WireError {
        let (code, message) = match self {
            Self::NotMember => (ErrorCode::Unauthorized, "not an enrolled member".to_owned()),
            Self::NotAdmin => (ErrorCode::Forbidden, "admin only".to_owned()),
            Self::NotFound(what) => (ErrorCode::NotFound, format!("{what} not found")),
            Self::BadRequest(message) => (ErrorCode::BadRequest, message.clone()),
            Self::TooManyLeases { max } => (
                ErrorCode::Conflict,
                format!(
                    "you already hold {max} live leases, the most allowed: revoke one or wait for one to expire"
                ),
            ),
            Self::Forbidden(message) => (ErrorCode::Forbidden, (*message).to_owned()),
            Self::NoAddon => (
                ErrorCode::Unavailable,
                "no InfluxDB add-on is configured (leasehold addon configure ...)".to_owned(),
            ),
            Self::Ticket(RedeemError::AlreadyMember) => (
                ErrorCode::Conflict,
                "identity is already enrolled".to_owned(),
            ),
            Self::Ticket(RedeemError::Denied) => (
                ErrorCode::Forbidden,
                "this identity was deleted from the control and may not enroll again \
                 (an admin can lift that: leasehold member allow ID)"
                    .to_owned(),
            ),
            // Unknown, used up and expired read the same to the peer: telling them apart
            // would let a holder of a guessed or stolen secret probe the ticket table.
            Self::Ticket(_) => (
                ErrorCode::Unauthorized,
                "ticket refused: unknown, used up or expired".to_owned(),
            ),
            Self::Unverified(e) => (
                if e.is_unreachable() {
                    ErrorCode::Unavailable
                } else {
                    ErrorCode::Conflict
                },
                // Only an admin configures the add-on, and the message names no secret.
                format!(
                    "{e}; nothing was changed (--skip-verify configures without this check)"
                ),
            ),
            Self::Backend(BackendError::Tls(cause)) => (
                ErrorCode::Unavailable,
                format!("InfluxDB's certificate was refused: {cause}; see the control's log"),
            ),
            Self::Backend(BackendError::CredentialRefused(_)) => (
                ErrorCode::Internal,
                "InfluxDB refused the add-on's admin credential (fix it with `leasehold addon configure`); see the control's log".to_owned(),
            ),
            Self::Backend(BackendError::Random(_)) => (
                ErrorCode::Internal,
                "internal error; see the control's log".to_owned(),
            ),
            // Transient: the caller (a proxy's refresher) retries on Unavailable.
            Self::Backend(e) if e.is_transient() => (
                ErrorCode::Unavailable,
                "InfluxDB is unavailable; try again later".to_owned(),
            ),
            Self::Backend(_) => (
                ErrorCode::Internal,
                "InfluxDB refused the request; see the control's log".to_owned(),
            ),
            Self::Store(e) if e.is_unavailable() => (
                ErrorCode::Unavailable,
                "store unavailable: this control replica cannot reach its database; try another"
                    .to_owned(),
            ),
            // Nothing of the store, the files or the system's state reaches a peer.
            Self::Store(_)
            | Self::DataDir(_)
            | Self::IssuerMissing(_)
            | Self::Random(_) => (
                ErrorCode::Internal,
                "internal error; see the control's log".to_owned(),
            ),
        };
        WireError::new(code, message)
    }
}

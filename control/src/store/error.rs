//! How a store operation fails: the store itself ([`StoreError`], unavailable or not),
//! for a ticket redemption the ticket ([`RedeemError`]), for a lease's reservation the
//! member's cap ([`AtCap`]).

/// Why a ticket could not be redeemed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RedeemError {
    /// No ticket with that secret (never issued, or used up).
    #[error("unknown or used-up ticket")]
    Unknown,
    /// The ticket expired.
    #[error("ticket expired")]
    Expired,
    /// The identity is a member already.
    #[error("identity is already enrolled")]
    AlreadyMember,
    /// The identity was deleted and is denied re-enrollment (`member allow` lifts it).
    #[error("identity was deleted and is denied re-enrollment")]
    Denied,
}

/// A refused lease reservation ([`super::Store::reserve_lease`]): the member holds
/// `max` live leases already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the member already holds {max} live leases")]
pub struct AtCap {
    /// The cap that applied.
    pub max: u32,
}

/// A storage failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("store: {message}")]
pub struct StoreError {
    message: String,
    unavailable: bool,
}

impl StoreError {
    /// A failure of the store itself (a corrupt record, a refused write).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            unavailable: false,
        }
    }

    /// The store could not be reached (a shared database down or cut off): another
    /// control replica may well reach it, so clients are told to try one.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            unavailable: true,
        }
    }

    /// Whether the store could not be reached.
    pub fn is_unavailable(&self) -> bool {
        self.unavailable
    }
}

/// Result of store operations.
pub type StoreResult<T> = Result<T, StoreError>;

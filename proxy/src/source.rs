//! Where leases come from: a seam between the refresher and the control channel.
//!
//! The refresher owns its source exclusively (hence `&mut self`) and decides when to
//! call it; the source only knows how to get one fresh lease. The production source is
//! [`ControlLeaseSource`](crate::ControlLeaseSource); tests plug in fakes that count
//! calls, fail on demand or hand out very short leases.

use std::future::Future;

use leasehold_protocol::LeaseRecord;
use leasehold_protocol::client::ClientError;

/// Why a source could not produce a lease. The refresher logs it and retries with
/// backoff; it never reaches an HTTP client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The control was unreachable, the channel failed, or the control refused.
    #[error(transparent)]
    Control(#[from] ClientError),
    /// The control answered something other than a lease.
    #[error("the control answered a lease request with something other than a lease")]
    UnexpectedReply,
    /// Any other failure (custom and test sources).
    #[error("{0}")]
    Other(String),
}

impl SourceError {
    /// The control refused because this identity is not (or no longer) a member: an
    /// operator deleted it. Only re-enrollment helps, not retrying.
    pub fn is_not_member(&self) -> bool {
        matches!(
            self,
            Self::Control(ClientError::Remote(e))
                if e.code == leasehold_protocol::ErrorCode::Unauthorized
        )
    }
}

/// Yields fresh leases for this sidecar's identity.
pub trait LeaseSource: Send + 'static {
    /// Asks for a new lease. Called again after a failure, after backoff.
    fn fetch(&mut self) -> impl Future<Output = Result<LeaseRecord, SourceError>> + Send;

    /// Gives back leases this sidecar still holds, at shutdown, so no live credential
    /// outlives it. Best effort: the caller bounds it in time, and a lease not released
    /// still ends at its expiry. The default releases nothing.
    fn release(
        &mut self,
        lease_ids: &[String],
    ) -> impl Future<Output = Result<(), SourceError>> + Send {
        let _ = lease_ids;
        async { Ok(()) }
    }
}

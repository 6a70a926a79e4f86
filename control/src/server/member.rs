//! A member's channel: requests answered concurrently as they arrive, with what is in
//! progress bounded ([`MAX_IN_FLIGHT`], [`MAX_IN_FLIGHT_BYTES`], one list at a time) and
//! the channel closed when idle or when its peer stops reading. Kept apart from the
//! non-member step ([`super::enrollment`]) because only a member gets here.

use std::sync::Arc;

use leasehold_channel::conn::Channel;
use leasehold_channel::{ChannelError, PublicIdentity};
use leasehold_protocol::Outcome;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;
use zeroize::Zeroizing;

use super::request::{encode, is_list, parse, respond};
use super::{Limits, MAX_IN_FLIGHT, MAX_IN_FLIGHT_BYTES};
use crate::control::Control;
use crate::store::Store;

/// A finished request: its size, its encoded answer, and for a list the channel's one
/// list permit, given back once the answer is sent.
struct Answer {
    len: usize,
    bytes: Zeroizing<Vec<u8>>,
    _list: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// What a member channel has in progress (pure bookkeeping).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    requests: usize,
    bytes: usize,
}

impl InFlight {
    /// Whether another request may be read: the message read next adds at most the
    /// member cap to what is held.
    fn may_read(&self) -> bool {
        self.requests < MAX_IN_FLIGHT && self.bytes < MAX_IN_FLIGHT_BYTES
    }

    fn taken(&mut self, len: usize) {
        self.requests += 1;
        self.bytes += len;
    }

    fn answered(&mut self, len: usize) {
        self.requests -= 1;
        self.bytes -= len;
    }
}

pub(super) async fn member_channel<S: Store>(
    control: Arc<Control<S>>,
    mut channel: Channel<TcpStream>,
    peer: PublicIdentity,
    limits: Limits,
) {
    // Requests on one channel are answered concurrently, each as its own task, and the
    // answers go out as they are ready (the client matches them by id). A slow request
    // (InfluxDB retrying) does not hold up the others, and a client that pipelines
    // gets its leases committed to the store in one group.
    let shutdown = control.shutdown().clone();
    let mut in_flight: JoinSet<Answer> = JoinSet::new();
    let mut held = InFlight::default();
    // Only a list's answer can be large (up to the member cap); every other answer is
    // one small record. One list at a time per channel keeps what finished answers
    // waiting to be sent hold bounded too.
    let lists = Arc::new(Semaphore::new(1));
    let idle = tokio::time::sleep(limits.idle_timeout);
    tokio::pin!(idle);
    let mut reading = true;
    let mut answering = true;
    loop {
        tokio::select! {
            biased;
            Some(done) = in_flight.join_next() => {
                let Answer { len, bytes, _list } = match done {
                    Ok(done) => done,
                    Err(error) => {
                        // The task's size is lost with it; the channel is closed rather
                        // than left with a budget it can never get back.
                        tracing::error!(%error, identity = %peer, "request handler failed");
                        (reading, answering) = (false, false);
                        continue;
                    }
                };
                held.answered(len);
                if answering {
                    // A peer that stops reading its answers is let go like an idle one.
                    match tokio::time::timeout(limits.idle_timeout, channel.send(&bytes)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => {
                            tracing::debug!(%error, identity = %peer, "could not answer");
                            (reading, answering) = (false, false);
                        }
                        Err(_) => {
                            tracing::debug!(identity = %peer, "peer does not read its answers; closing");
                            (reading, answering) = (false, false);
                        }
                    }
                }
                idle.as_mut().reset(tokio::time::Instant::now() + limits.idle_timeout);
            }
            () = shutdown.cancelled(), if reading => reading = false,
            () = &mut idle, if reading && in_flight.is_empty() => {
                tracing::debug!(identity = %peer, idle = ?limits.idle_timeout, "closing idle channel");
                reading = false;
            }
            message = channel.recv(), if reading && held.may_read() => match message {
                Ok(message) => {
                    let message = Zeroizing::new(message);
                    held.taken(message.len());
                    idle.as_mut().reset(tokio::time::Instant::now() + limits.idle_timeout);
                    let (control, lists) = (control.clone(), lists.clone());
                    // Boxed: the request's future is large, and spawning moves it (a
                    // copy of several KiB per request, measured) where a box moves a pointer.
                    in_flight.spawn(Box::pin(async move {
                        let len = message.len();
                        let mut list = None;
                        let (id, outcome) = match parse(&message) {
                            Ok(envelope) => {
                                if is_list(&envelope.req) {
                                    list = lists.acquire_owned().await.ok();
                                }
                                respond(&control, peer, envelope).await
                            }
                            Err((id, error)) => (id, Outcome::Err(error)),
                        };
                        Answer { len, bytes: encode(id, outcome), _list: list }
                    }.in_current_span()));
                }
                Err(ChannelError::Closed) => reading = false,
                Err(error) => {
                    tracing::debug!(%error, identity = %peer, "channel failed");
                    (reading, answering) = (false, false);
                }
            },
            // Not reading and nothing in flight: done. Requests already taken are
            // always finished, even when the channel broke: one may be half-way
            // through issuing a lease.
            else => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use leasehold_channel::session::MAX_MESSAGE;

    use super::*;

    #[test]
    fn a_member_channel_holds_a_bounded_number_and_size_of_requests() {
        let mut held = InFlight::default();
        for _ in 0..MAX_IN_FLIGHT - 1 {
            held.taken(100);
        }
        assert!(held.may_read());
        held.taken(100);
        assert!(!held.may_read(), "the request count is capped");
        held.answered(100);
        assert!(held.may_read());

        let mut held = InFlight::default();
        held.taken(MAX_IN_FLIGHT_BYTES - 1);
        assert!(held.may_read());
        held.taken(MAX_MESSAGE);
        assert!(!held.may_read(), "the request bytes are capped");
        // What is held never exceeds the budget plus one message being received.
        assert!(held.bytes < MAX_IN_FLIGHT_BYTES + MAX_MESSAGE);
        held.answered(MAX_MESSAGE);
        assert!(held.may_read());
    }
}

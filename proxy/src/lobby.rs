//! Where new connections wait for their first byte, and why the oldest is let go.
//!
//! A connection that never speaks must not hold one of the `max_connections` slots: a
//! handful of silent sockets (or 64 on the admin port, where the health probe must get
//! through) would lock everybody out. So a new connection first waits here, outside the
//! connection limit, until its first byte arrives or the first-byte timeout passes. The
//! lobby is bounded too; when it is full, the connection that has waited longest is
//! closed to make room. Real clients send their request at once and pass through in
//! microseconds; only the silent ones ever get old enough to be the oldest.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// The accept loop's record of waiting connections. Owned by that loop alone.
pub struct Lobby {
    seats: Arc<Semaphore>,
    /// One token per admitted connection, oldest first; a token is cancelled either to
    /// evict its connection or by the connection itself once it has left the lobby.
    waiting: VecDeque<CancellationToken>,
}

/// A connection's place in the lobby: the seat, and the token that evicts it.
pub struct Seat {
    /// Held while waiting.
    pub permit: OwnedSemaphorePermit,
    /// Cancelled when the connection is evicted; the connection cancels it itself when
    /// it leaves, which marks the entry stale.
    pub evicted: CancellationToken,
}

impl Lobby {
    /// A lobby of `capacity` seats.
    pub fn new(capacity: usize) -> Self {
        Self {
            seats: Arc::new(Semaphore::new(capacity)),
            waiting: VecDeque::with_capacity(capacity),
        }
    }

    /// A seat for a new connection, evicting the longest-waiting connection if every
    /// seat is taken. `None` only if `shutdown` fires meanwhile.
    pub async fn admit(&mut self, shutdown: &CancellationToken) -> Option<(Seat, bool)> {
        // Entries of connections that already left, oldest first.
        while self
            .waiting
            .front()
            .is_some_and(CancellationToken::is_cancelled)
        {
            self.waiting.pop_front();
        }
        let mut evicted = false;
        let permit = match Arc::clone(&self.seats).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                while let Some(oldest) = self.waiting.pop_front() {
                    if !oldest.is_cancelled() {
                        oldest.cancel();
                        evicted = true;
                        break;
                    }
                }
                // The evicted connection gives its seat back as soon as its task runs.
                tokio::select! {
                    permit = Arc::clone(&self.seats).acquire_owned() => permit.ok()?,
                    () = shutdown.cancelled() => return None,
                }
            }
        };
        let token = CancellationToken::new();
        self.waiting.push_back(token.clone());
        Some((
            Seat {
                permit,
                evicted: token,
            },
            evicted,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_lobby_evicts_the_oldest_waiting_connection() {
        let shutdown = CancellationToken::new();
        let mut lobby = Lobby::new(2);
        let (first, evicted) = lobby.admit(&shutdown).await.unwrap();
        assert!(!evicted);
        let (second, _) = lobby.admit(&shutdown).await.unwrap();
        // The first connection leaves the lobby (it spoke): its entry is stale.
        first.evicted.cancel();
        drop(first.permit);
        let (third, evicted) = lobby.admit(&shutdown).await.unwrap();
        assert!(!evicted);
        // Full now: the oldest still waiting (the second) is evicted, not the stale one.
        let waiter = tokio::spawn(async move {
            second.evicted.cancelled().await;
            drop(second.permit);
        });
        let (_fourth, evicted) = lobby.admit(&shutdown).await.unwrap();
        assert!(evicted);
        waiter.await.unwrap();
        assert!(!third.evicted.is_cancelled());
    }
}

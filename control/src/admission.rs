//! Who may hold a connection before proving membership.
//!
//! The control's identifier is public (it is in every ticket), so anyone can open a TCP
//! connection and even complete the handshake with a throw-away key. Until a connection
//! is known to be a member's, it counts against two caps: one per source and one in
//! total. A connection over either cap is closed at once, costing the control nothing
//! but the accept; members, once authenticated, no longer count.
//!
//! A **source** is an IPv4 address, or an IPv6 /64 (what one host is usually given, so
//! rotating through its addresses gains nothing). Counting is a pure core ([`Counts`]);
//! [`Admission`] shares it between the accept loop and the connection tasks, and a
//! [`Pass`] gives its place back when dropped, however the connection ends.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Where a connection comes from, for the per-source cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source(IpAddr);

impl Source {
    /// The source of a peer address: the IPv4 address (also when mapped into IPv6), or
    /// the /64 prefix of an IPv6 address.
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                Self(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// The caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Unauthenticated connections at once, from all sources.
    pub total: usize,
    /// Unauthenticated connections at once, from one source.
    pub per_source: usize,
}

/// Why a connection was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Its source already holds its share.
    #[error("{from} already holds {cap} unauthenticated connections")]
    PerSource {
        /// The source.
        from: Source,
        /// The per-source cap.
        cap: usize,
    },
    /// All sources together hold the total.
    #[error("{cap} unauthenticated connections are open")]
    Total {
        /// The total cap.
        cap: usize,
    },
}

/// How many unauthenticated connections each source holds (pure).
#[derive(Debug, Default)]
pub struct Counts {
    total: usize,
    per_source: HashMap<Source, usize>,
}

impl Counts {
    /// Takes a place for `source`, or says which cap is full.
    pub fn admit(&mut self, source: Source, caps: Caps) -> Result<(), Refused> {
        let held = self.per_source.get(&source).copied().unwrap_or(0);
        if held >= caps.per_source {
            return Err(Refused::PerSource {
                from: source,
                cap: caps.per_source,
            });
        }
        if self.total >= caps.total {
            return Err(Refused::Total { cap: caps.total });
        }
        self.total += 1;
        *self.per_source.entry(source).or_default() += 1;
        Ok(())
    }

    /// Gives back a place taken by [`Counts::admit`]. A source holding nothing is
    /// forgotten, so the map stays as small as the set of connections.
    pub fn release(&mut self, source: Source) {
        if let Some(held) = self.per_source.get_mut(&source) {
            *held -= 1;
            self.total -= 1;
            if *held == 0 {
                self.per_source.remove(&source);
            }
        }
    }

    /// Places held in total.
    pub fn total(&self) -> usize {
        self.total
    }
}

/// The caps, shared by the accept loop and the connections.
#[derive(Debug, Clone)]
pub struct Admission {
    counts: Arc<Mutex<Counts>>,
    caps: Caps,
}

impl Admission {
    /// Admission under `caps`.
    pub fn new(caps: Caps) -> Self {
        Self {
            counts: Arc::default(),
            caps,
        }
    }

    /// A pass for a connection from `ip`, or why it is refused.
    pub fn admit(&self, ip: IpAddr) -> Result<Pass, Refused> {
        let source = Source::of(ip);
        lock(&self.counts).admit(source, self.caps)?;
        Ok(Pass {
            counts: self.counts.clone(),
            source,
        })
    }

    /// Unauthenticated connections open now.
    pub fn unauthenticated(&self) -> usize {
        lock(&self.counts).total()
    }
}

/// A connection's place among the unauthenticated; given back when dropped.
#[derive(Debug)]
pub struct Pass {
    counts: Arc<Mutex<Counts>>,
    source: Source,
}

impl Drop for Pass {
    fn drop(&mut self) {
        lock(&self.counts).release(self.source);
    }
}

/// Nothing under this lock can panic half-way, so a poisoned lock is taken over.
fn lock(counts: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    counts.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: Caps = Caps {
        total: 3,
        per_source: 2,
    };

    fn source(text: &str) -> Source {
        Source::of(text.parse().unwrap())
    }

    #[test]
    fn each_source_gets_its_share_and_all_together_the_total() {
        let mut counts = Counts::default();
        let (a, b, c) = (source("10.0.0.1"), source("10.0.0.2"), source("10.0.0.3"));
        counts.admit(a, CAPS).unwrap();
        counts.admit(a, CAPS).unwrap();
        assert_eq!(
            counts.admit(a, CAPS),
            Err(Refused::PerSource { from: a, cap: 2 })
        );
        counts.admit(b, CAPS).unwrap();
        assert_eq!(counts.admit(c, CAPS), Err(Refused::Total { cap: 3 }));
        counts.release(a);
        counts.admit(c, CAPS).unwrap();
        assert_eq!(counts.total(), 3);
        for s in [a, b, c] {
            counts.release(s);
        }
        assert_eq!(counts.total(), 0);
        assert!(counts.per_source.is_empty());
    }

    #[test]
    fn an_ipv6_host_is_one_source_and_mapped_ipv4_is_the_ipv4_address() {
        assert_eq!(source("2001:db8:1:2::1"), source("2001:db8:1:2:ffff::9"));
        assert_ne!(source("2001:db8:1:2::1"), source("2001:db8:1:3::1"));
        assert_eq!(source("::ffff:192.0.2.7"), source("192.0.2.7"));
        assert_eq!(source("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn a_pass_gives_its_place_back_when_dropped() {
        let admission = Admission::new(CAPS);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let first = admission.admit(ip).unwrap();
        let _second = admission.admit(ip).unwrap();
        assert!(admission.admit(ip).is_err());
        drop(first);
        assert!(admission.admit(ip).is_ok());
        assert_eq!(admission.unauthenticated(), 1);
    }

    #[test]
    fn releasing_an_unknown_source_changes_nothing() {
        let mut counts = Counts::default();
        counts.release(source("10.0.0.9"));
        assert_eq!(counts.total(), 0);
    }
}

//! Revoking a lease's credential: once (recorded as removed only after InfluxDB
//! confirmed), until done (retrying with capped backoff, never giving up while the
//! control runs), and at once for `lease revoke` and `member delete`.

use std::sync::Arc;

use leasehold_channel::PublicIdentity;
use leasehold_protocol::{LeaseStatus, Timestamp};
use tracing::Instrument;

use crate::control::Control;
use crate::error::ControlError;
use crate::lease::status;
use crate::revoker;
use crate::store::{Store, StoredLease};

impl<S: Store> Control<S> {
    /// Logs a failed revocation attempt: at ERROR, counted, when InfluxDB refused the
    /// add-on's admin credential (retrying cannot help until an operator fixes it); at
    /// WARN otherwise.
    pub(crate) fn revocation_failed(
        &self,
        id: &str,
        error: &ControlError,
        attempt: u32,
        what: &str,
    ) {
        self.metrics.revocation_failed(error);
        if let ControlError::Backend(crate::backend::BackendError::CredentialRefused(_)) = error {
            let refused_total = self
                .revocations_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            tracing::error!(
                lease.id = %id,
                %error,
                attempt,
                revocations_refused_total = refused_total,
                "{what}: InfluxDB refused the add-on's admin credential, so the lease's \
                 credential stays in InfluxDB; fix the add-on (leasehold addon configure) \
                 and the retries will remove it"
            );
        } else {
            tracing::warn!(lease.id = %id, %error, attempt, "{what}; retrying");
        }
    }

    /// One task per lease taken on: a revocation that retries while InfluxDB is down
    /// must not hold up the others (nor the queue, which only hands out ids). `place`
    /// is its place among the revocations this control holds, kept until it is settled
    /// ([`crate::revocation_limits`]). With `look_first`, the credential may already be
    /// gone (see [`Self::revoke_once`]).
    pub(crate) fn revoke_in_background(
        self: Arc<Self>,
        id: String,
        look_first: bool,
        place: Option<crate::revocation_limits::Held>,
    ) {
        let control = self.clone();
        let span = tracing::info_span!("lease", lease.id = %id);
        self.tasks.spawn(
            async move {
                control.revoke_until_done(&id, look_first).await;
                drop(place);
            }
            .instrument(span),
        );
    }

    /// Removes lease `id`'s credential from InfluxDB, retrying with capped backoff
    /// until it succeeds or the control shuts down (the next start re-arms it).
    pub(crate) async fn revoke_until_done(&self, id: &str, mut look_first: bool) {
        // No give-up: a credential left in InfluxDB past its lease is the failure the
        // control exists to prevent, so it retries (capped at a few seconds) until
        // InfluxDB answers or the control stops; the next start re-arms it.
        let mut attempt = 0;
        self.metrics.revocation_due(id);
        loop {
            // One of the few attempts this control makes at once, held for the attempt
            // only: a revocation sleeping in its backoff leaves the permit to the
            // others ([`crate::revocation_limits::ATTEMPTS`]).
            let Some(permit) = self.revocation_limits.attempt(&self.shutdown).await else {
                return;
            };
            let outcome = self.revoke_once(id, look_first).await;
            drop(permit);
            match outcome {
                Ok(()) => return self.metrics.revocation_settled(id),
                Err(error) => self.revocation_failed(id, &error, attempt, "revocation failed"),
            }
            // The failed attempt may have removed the credential before failing (an
            // answer lost, the store unreachable to record it): the next one looks.
            look_first = true;
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(revoker::backoff(attempt)) => {}
            }
            attempt = attempt.saturating_add(1);
        }
    }

    /// One attempt at removing lease `id`'s credential; records success in the store.
    ///
    /// InfluxDB is to see each credential removed once. What could remove it a second
    /// time is ruled out here: another task of this process revoking the same lease
    /// ([`crate::in_flight`]: it is left to that task), another replica (the claim),
    /// and a removal done but never recorded, by a replica killed in between, by an
    /// earlier attempt whose answer or record was lost, or by a failed issue's
    /// clean-up. In those cases (`look_first`, a claim taken over, an intent) the
    /// credential is looked up first and only removed if it is still there.
    pub(crate) async fn revoke_once(&self, id: &str, look_first: bool) -> Result<(), ControlError> {
        let Some(_in_flight) = self.in_flight.begin(id) else {
            tracing::debug!(lease.id = %id, "already being revoked by this control");
            return Ok(());
        };
        let mut look_first = look_first;
        // With replicas sharing the store, only the one holding the claim revokes (and
        // renews its claim at each attempt); the others leave the lease alone.
        if self.store.shared() {
            let now = Timestamp::now();
            let until = Timestamp(now.0 + crate::control::CLAIM_FOR.as_secs());
            let claim = self.store.claim_revocation(id.to_owned(), now, until);
            match self.metrics.store("claim_revocation", claim).await? {
                Some(claimed) => look_first |= claimed.taken_over,
                None => {
                    tracing::debug!(lease.id = %id, "another replica revokes it, or it is done");
                    return Ok(());
                }
            }
        }
        let Some(mut lease) = self
            .metrics
            .store("lease", self.store.lease(id.to_owned()))
            .await?
        else {
            return Ok(());
        };
        if lease.removed {
            return Ok(());
        }
        if !lease.issued && Timestamp::now() < lease.owed_at() {
            // Perhaps still being issued (InfluxDB slower than the lease is long):
            // left until the issuing replica must be done with it.
            tracing::debug!(lease.id = %id, "an intent still within its issue window");
            self.schedule(lease.owed_at(), lease.id);
            return Ok(());
        }
        // Where it was issued, with the credential that issued it.
        let issuer = self.issuer_of(&lease).await?;
        if lease.issued {
            let present = if look_first {
                let exists = issuer.backend.exists(&lease.credential_id);
                self.metrics.backend("exists", exists).await?
            } else {
                true
            };
            if present {
                self.metrics
                    .backend("revoke", issuer.backend.revoke(&lease.credential_id))
                    .await?;
            } else {
                tracing::info!(lease.id = %id, "the credential was already removed (by an earlier attempt)");
            }
        } else {
            // An intent whose outcome was never recorded: InfluxDB may or may not
            // have created the credential; remove it by the name it would carry, if
            // it is there.
            let unrecorded = issuer
                .backend
                .revoke_unrecorded(&lease.id, lease.expires_at);
            self.metrics.backend("revoke", unrecorded).await?;
        }
        // Recorded only once InfluxDB confirmed: dying before this line repeats the
        // attempt at the next start, or by the replica that takes the claim over, which
        // looks first.
        lease.removed = true;
        self.metrics
            .store("put_lease", self.store.put_lease(lease.clone()))
            .await?;
        self.metrics.revocation_done(&lease.id);
        // An earlier configuration may now be owed nothing; one coalesced check.
        if !self.is_current(&issuer.id) {
            self.forget_now.notify_one();
        }
        let reason = crate::lease::removal_reason(&lease);
        tracing::info!(
            lease.id = %lease.id,
            identity = %lease.member,
            expires_at = %lease.expires_at,
            reason,
            "lease credential removed from InfluxDB"
        );
        Ok(())
    }

    /// Marks lease `lease` revoked now and removes its credential, retrying in the
    /// background if InfluxDB does not answer at once.
    pub(crate) async fn revoke_now(
        self: &Arc<Self>,
        mut lease: StoredLease,
        by: PublicIdentity,
    ) -> Result<StoredLease, ControlError> {
        let now = Timestamp::now();
        // Only an active lease gets a revocation time: revoking an expired or revoked
        // one again changes nothing but still finishes a removal left owed.
        if status(&lease, now) == LeaseStatus::Active {
            lease.revoked_at = Some(now);
            // Written revoked, it no longer counts against the member's cap.
            self.store.put_lease(lease.clone()).await?;
            // The member's name beside its id, for the operator reading the log (none
            // once the member is deleted).
            let name = match self.store.member(lease.member).await {
                Ok(Some(member)) => member.name,
                _ => "-".to_owned(),
            };
            tracing::info!(lease.id = %lease.id, identity = %lease.member, %name, by = %by, "lease revoked");
        }
        if !lease.removed {
            if let Err(error) = self.revoke_once(&lease.id, false).await {
                self.revocation_failed(
                    &lease.id,
                    &error,
                    0,
                    "immediate revocation failed (continuing in the background)",
                );
                // Outside the limit on places: this is the request path, and one
                // request leaves at most one such revocation.
                self.clone()
                    .revoke_in_background(lease.id.clone(), true, None);
            } else {
                lease.removed = true;
            }
        }
        Ok(lease)
    }

    /// With a shared store: claims the revocations due (any replica's leases, intents
    /// left by a replica killed mid-issue, revocations a dead replica did not finish)
    /// every [`crate::control::CLAIM_POLL`], and does them.
    pub(crate) async fn claim_loop(self: Arc<Self>) {
        // A database out of reach fails every poll: one line per interval, not per second.
        let mut quiet = crate::log_throttle::LogThrottle::new(crate::log_throttle::LOG_INTERVAL);
        let mut quiet_addon =
            crate::log_throttle::LogThrottle::new(crate::log_throttle::LOG_INTERVAL);
        // The last claim filled this replica's room: claim again as soon as half of it
        // is free, not a poll later (still polling, to follow the add-on settings even
        // while every place is held by a revocation InfluxDB keeps failing).
        let mut full = false;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(crate::control::CLAIM_POLL) => {}
                _ = self.revocation_limits.half_free(&self.shutdown), if full => {}
            }
            full = false;
            if let Err(error) = self.follow_shared_addon().await
                && let Some(unlogged) = quiet_addon.hit(std::time::Instant::now())
            {
                tracing::warn!(%error, unlogged, "cannot follow the shared add-on settings");
            }
            // Only as many as this replica has room for: the rest stay in the store
            // for the other replicas (or the next poll), and what it claims it starts
            // on well within the claim's lifetime ([`crate::revocation_limits`]).
            let room = self.revocation_limits.room().min(CLAIM_BATCH);
            if room == 0 {
                full = true;
                continue;
            }
            let now = Timestamp::now();
            let until = Timestamp(now.0 + crate::control::CLAIM_FOR.as_secs());
            let due = self.store.claim_due(now, until, room);
            match self.metrics.store("claim_due", due).await {
                Ok(claims) => {
                    // A full batch: more may be due.
                    full = claims.len() == room;
                    for claim in claims {
                        let place = self.revocation_limits.try_hold();
                        self.clone()
                            .revoke_in_background(claim.id, claim.taken_over, place);
                    }
                }
                Err(error) => {
                    if let Some(unlogged) = quiet.hit(std::time::Instant::now()) {
                        tracing::warn!(%error, unlogged, "cannot claim the revocations due");
                    }
                }
            }
        }
    }
}

/// Revocations claimed per poll at most (the rest wait for the next poll).
const CLAIM_BATCH: usize = 256;

//! The store contract: what every [`Store`] must do, written once and run against each
//! implementation ([`super::MemoryStore`], [`super::RedbStore`], and the shared
//! [`super::PostgresStore`] against a real server). The rest of the control relies on exactly this, so a new
//! store that passes it can replace the others.
//!
//! Each check is a generic async function taking a fresh, empty store. To run the whole
//! suite against an implementation, give [`crate::store_contract!`] an async function
//! that returns `(guard, store)` (the guard keeps whatever backs the store alive, such
//! as a temporary directory or a database):
//!
//! ```ignore
//! async fn fresh() -> (tempfile::TempDir, RedbStore) { ... }
//! leasehold_control::store_contract!(fresh);
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use leasehold_channel::{Identity, PublicIdentity};
use leasehold_protocol::{
    AuthScheme, Grant, LeaseStatus, MemberRecord, PolicyRecord, PolicySpec, Timestamp,
};

use super::{AtCap, LeaseFilter, RedeemError, Store, StoredLease, StoredTicket};

/// Runs every check of the contract as its own `#[tokio::test]`, against stores made
/// by `$fresh` (an async function returning `(guard, store)`), in a module
/// `store_contract` of the calling one.
#[macro_export]
macro_rules! store_contract {
    ($fresh:ident) => {
        mod store_contract {
            $crate::store_contract!(@checks $fresh;
                members_round_trip,
                one_use_ticket_enrolls_exactly_one_of_many_concurrent_redeemers,
                expired_and_reused_tickets_are_refused_and_change_nothing,
                a_denied_identity_cannot_redeem_until_allowed_and_spends_no_use,
                pruning_removes_dead_tickets_only,
                policies_round_trip,
                leases_round_trip,
                lease_pages_follow_the_cursor_and_the_filter,
                owed_revocations_are_the_leases_not_removed,
                open_leases_are_the_live_and_the_owed_not_the_history,
                pruning_takes_only_ended_leases_whose_credential_is_gone,
                concurrent_writes_are_all_kept,
                live_leases_are_capped_per_member_in_one_step,
            );
        }
    };
    (@checks $fresh:ident; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let (_guard, store) = super::$fresh().await;
                $crate::store::contract::$check(store).await;
            }
        )*
    };
}

fn ticket(remaining: u32, expires_at: u64) -> StoredTicket {
    StoredTicket {
        attributes: BTreeMap::from([("service".into(), "iot".into())]),
        expires_at: Timestamp(expires_at),
        remaining,
    }
}

fn member(name: &str) -> MemberRecord {
    MemberRecord {
        id: Identity::generate().public(),
        name: name.into(),
        attributes: BTreeMap::from([("role".into(), name.into())]),
        enrolled_at: Timestamp(1),
    }
}

fn policy(id: &str) -> PolicyRecord {
    PolicyRecord {
        id: format!("service={id}"),
        spec: PolicySpec {
            matches: BTreeMap::from([("service".into(), id.into())]),
            grant: Grant::Privileges(vec![format!("WRITE ON {id}")]),
            default_ttl_secs: Some(60),
            max_ttl_secs: None,
            max_live_leases: Some(3),
        },
    }
}

/// An issued lease with id `n` (as 16 hex digits).
pub fn lease(n: u64, member: PublicIdentity, expires_at: u64) -> StoredLease {
    StoredLease {
        id: format!("{n:016x}"),
        member,
        created_at: Timestamp(1),
        expires_at: Timestamp(expires_at),
        credential_id: format!("c{n}"),
        auth_scheme: AuthScheme::Token,
        endpoint_url: "http://x".into(),
        revoked_at: None,
        removed: false,
        issued: true,
        addon_id: Some("a".into()),
    }
}

fn ids(leases: &[StoredLease]) -> Vec<String> {
    leases.iter().map(|l| l.id.clone()).collect()
}

/// Members are stored, found by identity, listed, replaced and deleted.
pub async fn members_round_trip<S: Store>(store: S) {
    assert!(store.members().await.unwrap().is_empty());
    let (a, b) = (member("a"), member("b"));
    store.put_member(a.clone()).await.unwrap();
    store.put_member(b.clone()).await.unwrap();
    let found = store.member(a.id).await.unwrap().unwrap();
    assert_eq!(
        (found.id, found.name, found.attributes),
        (a.id, a.name.clone(), a.attributes.clone())
    );
    let mut listed: Vec<String> = store
        .members()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.name)
        .collect();
    listed.sort();
    assert_eq!(listed, ["a", "b"]);
    let renamed = MemberRecord {
        name: "a2".into(),
        ..a.clone()
    };
    store.put_member(renamed).await.unwrap();
    assert_eq!(
        store.member(a.id).await.unwrap().unwrap().name,
        "a2",
        "replaced"
    );
    assert_eq!(store.members().await.unwrap().len(), 2);
    assert_eq!(store.delete_member(a.id).await.unwrap().unwrap().name, "a2");
    assert!(store.delete_member(a.id).await.unwrap().is_none());
    assert!(store.member(a.id).await.unwrap().is_none());
    assert!(store.member(b.id).await.unwrap().is_some());
}

/// Redemption checks and consumes atomically: of many concurrent redeemers of a
/// one-use ticket, exactly one is enrolled, and the used-up ticket is gone.
pub async fn one_use_ticket_enrolls_exactly_one_of_many_concurrent_redeemers<S: Store>(store: S) {
    let store = Arc::new(store);
    store.put_ticket("h".into(), ticket(1, 2000)).await.unwrap();
    let attempts: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .redeem_ticket(
                        "h".into(),
                        Timestamp(1000),
                        Identity::generate().public(),
                        format!("n{i}"),
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut wins = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(member) => {
                wins += 1;
                assert_eq!(
                    member.attributes,
                    ticket(1, 0).attributes,
                    "the ticket's attributes"
                );
                assert_eq!(member.enrolled_at, Timestamp(1000));
            }
            Err(e) => assert_eq!(e, RedeemError::Unknown),
        }
    }
    assert_eq!(wins, 1);
    assert_eq!(store.members().await.unwrap().len(), 1);
    assert!(
        store.tickets().await.unwrap().is_empty(),
        "a used-up ticket is removed"
    );
}

/// Expired tickets, re-enrollment and used-up tickets are refused; a refusal spends no
/// use and enrolls nobody.
pub async fn expired_and_reused_tickets_are_refused_and_change_nothing<S: Store>(store: S) {
    store
        .put_ticket("old".into(), ticket(1, 999))
        .await
        .unwrap();
    let id = Identity::generate().public();
    let redeem = |hash: &str, id, name: &str| {
        store.redeem_ticket(hash.into(), Timestamp(1000), id, name.into())
    };
    assert_eq!(
        redeem("old", id, "a").await.unwrap().unwrap_err(),
        RedeemError::Expired
    );
    assert!(store.members().await.unwrap().is_empty());
    // Expiring at this very second still redeems.
    store
        .put_ticket("edge".into(), ticket(1, 1000))
        .await
        .unwrap();
    redeem("edge", Identity::generate().public(), "e")
        .await
        .unwrap()
        .unwrap();
    store
        .put_ticket("two".into(), ticket(2, 2000))
        .await
        .unwrap();
    redeem("two", id, "a").await.unwrap().unwrap();
    assert_eq!(
        redeem("two", id, "a").await.unwrap().unwrap_err(),
        RedeemError::AlreadyMember
    );
    // The refused attempt did not consume the second use.
    redeem("two", Identity::generate().public(), "b")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        redeem("two", Identity::generate().public(), "c")
            .await
            .unwrap()
            .unwrap_err(),
        RedeemError::Unknown
    );
    assert_eq!(
        redeem("never", Identity::generate().public(), "d")
            .await
            .unwrap()
            .unwrap_err(),
        RedeemError::Unknown
    );
}

/// A deleted member is denied re-enrollment until allowed, and its refused attempt
/// spends no use of the ticket.
pub async fn a_denied_identity_cannot_redeem_until_allowed_and_spends_no_use<S: Store>(store: S) {
    store.put_ticket("h".into(), ticket(3, 2000)).await.unwrap();
    let id = Identity::generate().public();
    let redeem = |id| store.redeem_ticket("h".into(), Timestamp(1000), id, "a".into());
    redeem(id).await.unwrap().unwrap();
    let removed = store.deny_member(id, Timestamp(1100)).await.unwrap();
    assert_eq!(removed.unwrap().name, "a");
    assert!(store.member(id).await.unwrap().is_none());
    let denied = store.denied().await.unwrap();
    assert_eq!(denied.len(), 1);
    assert_eq!((denied[0].id, denied[0].denied_at), (id, Timestamp(1100)));
    assert_eq!(redeem(id).await.unwrap().unwrap_err(), RedeemError::Denied);
    let uses: Vec<u32> = store
        .tickets()
        .await
        .unwrap()
        .iter()
        .map(|t| t.1.remaining)
        .collect();
    assert_eq!(uses, vec![2], "the refused redemption spent no use");
    // Deleting someone who is not a member records nothing.
    let stranger = Identity::generate().public();
    assert!(
        store
            .deny_member(stranger, Timestamp(1))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(store.denied().await.unwrap().len(), 1);
    assert!(store.allow(id).await.unwrap());
    assert!(
        !store.allow(id).await.unwrap(),
        "allowing twice finds nothing"
    );
    redeem(id).await.unwrap().unwrap();
    assert!(store.member(id).await.unwrap().is_some());
}

/// Pruning removes expired and used-up tickets only; delete says whether it found one.
pub async fn pruning_removes_dead_tickets_only<S: Store>(store: S) {
    store
        .put_ticket("old".into(), ticket(2, 999))
        .await
        .unwrap();
    store
        .put_ticket("live".into(), ticket(1, 1000))
        .await
        .unwrap();
    store
        .put_ticket("later".into(), ticket(5, 5000))
        .await
        .unwrap();
    store
        .put_ticket("spent".into(), ticket(0, 5000))
        .await
        .unwrap();
    assert_eq!(store.prune_tickets(Timestamp(1000)).await.unwrap(), 2);
    let mut left: Vec<String> = store
        .tickets()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.0)
        .collect();
    left.sort();
    assert_eq!(left, ["later", "live"]);
    assert!(store.delete_ticket("live".into()).await.unwrap());
    assert!(!store.delete_ticket("live".into()).await.unwrap());
    assert_eq!(store.prune_tickets(Timestamp(1000)).await.unwrap(), 0);
}

/// Policies are stored, replaced by id, listed and deleted.
pub async fn policies_round_trip<S: Store>(store: S) {
    store.put_policy(policy("iot")).await.unwrap();
    store.put_policy(policy("web")).await.unwrap();
    let mut changed = policy("iot");
    changed.spec.max_live_leases = Some(9);
    store.put_policy(changed).await.unwrap();
    let policies = store.policies().await.unwrap();
    assert_eq!(policies.len(), 2);
    let iot = policies.iter().find(|p| p.id == "service=iot").unwrap();
    assert_eq!(iot.spec.max_live_leases, Some(9), "replaced");
    assert_eq!(
        iot.spec.grant,
        Grant::Privileges(vec!["WRITE ON iot".into()])
    );
    assert!(store.delete_policy("service=iot".into()).await.unwrap());
    assert!(!store.delete_policy("service=iot".into()).await.unwrap());
    assert_eq!(store.policies().await.unwrap().len(), 1);
}

/// Leases are stored whole, replaced by id (intent, then issued), found and listed in
/// id order.
pub async fn leases_round_trip<S: Store>(store: S) {
    let member = Identity::generate().public();
    assert!(
        store
            .lease("0000000000000001".into())
            .await
            .unwrap()
            .is_none()
    );
    for n in [3, 1, 2] {
        let mut intent = lease(n, member, 5000);
        intent.issued = false;
        store.put_lease(intent).await.unwrap();
    }
    let mut issued = lease(2, member, 5000);
    issued.credential_id = "authz-2".into();
    issued.revoked_at = Some(Timestamp(7));
    store.put_lease(issued).await.unwrap();
    let found = store.lease(format!("{:016x}", 2)).await.unwrap().unwrap();
    assert!(found.issued);
    assert_eq!(found.credential_id, "authz-2");
    assert_eq!(found.revoked_at, Some(Timestamp(7)));
    assert_eq!((found.member, found.expires_at), (member, Timestamp(5000)));
    assert_eq!(found.addon_id.as_deref(), Some("a"));
    assert_eq!(found.auth_scheme, AuthScheme::Token);
    let all = store.leases().await.unwrap();
    assert_eq!(ids(&all), [1, 2, 3].map(|n| format!("{n:016x}")));
}

/// `lease_page` follows the cursor, keeps the filter's member and status, and never
/// lists an intent.
pub async fn lease_pages_follow_the_cursor_and_the_filter<S: Store>(store: S) {
    let (a, b) = (Identity::generate().public(), Identity::generate().public());
    for n in 0..250 {
        // Every third lease is b's; leases 0-99 have expired at t=1000.
        let member = if n % 3 == 0 { b } else { a };
        let expires = if n < 100 { 500 } else { 5000 };
        store.put_lease(lease(n, member, expires)).await.unwrap();
    }
    let mut intent = lease(999, a, 5000);
    intent.issued = false;
    store.put_lease(intent).await.unwrap();
    let all = LeaseFilter {
        member: None,
        status: None,
        now: Timestamp(1000),
    };
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.lease_page(all, after.clone(), 40).await.unwrap();
        assert!(page.len() <= 40);
        let full = page.len() == 40;
        seen.extend(page.into_iter().map(|l| l.id));
        if !full {
            break;
        }
        after = seen.last().cloned();
    }
    assert_eq!(seen.len(), 250, "every issued lease once, no intent");
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let only = |member, status| LeaseFilter {
        member,
        status,
        now: Timestamp(1000),
    };
    let active_b = store
        .lease_page(only(Some(b), Some(LeaseStatus::Active)), None, 1000)
        .await
        .unwrap();
    assert_eq!(active_b.len(), (100..250).filter(|n| n % 3 == 0).count());
    assert!(active_b.iter().all(|l| l.member == b));
    let expired = store
        .lease_page(only(None, Some(LeaseStatus::Expired)), None, 1000)
        .await
        .unwrap();
    assert_eq!(expired.len(), 100);
}

/// What the control re-arms at start-up: every lease whose credential is not yet
/// removed, intents included, whatever its status.
pub async fn owed_revocations_are_the_leases_not_removed<S: Store>(store: S) {
    let member = Identity::generate().public();
    let mut intent = lease(1, member, 5000);
    intent.issued = false;
    let mut revoked = lease(2, member, 5000);
    revoked.revoked_at = Some(Timestamp(10));
    let expired = lease(3, member, 5);
    let mut done = lease(4, member, 5);
    done.removed = true;
    for l in [intent, revoked, expired, done.clone()] {
        store.put_lease(l).await.unwrap();
    }
    let owed: Vec<StoredLease> = store
        .leases()
        .await
        .unwrap()
        .into_iter()
        .filter(|l| !l.removed)
        .collect();
    assert_eq!(ids(&owed), [1, 2, 3].map(|n| format!("{n:016x}")));
    // Marking one removed (a revocation done) is a replace.
    let mut now_done = store.lease(format!("{:016x}", 3)).await.unwrap().unwrap();
    now_done.removed = true;
    store.put_lease(now_done).await.unwrap();
    let owed = store
        .leases()
        .await
        .unwrap()
        .into_iter()
        .filter(|l| !l.removed)
        .count();
    assert_eq!(owed, 2);
}

/// What start-up reads: the leases not yet ended or whose credential is still owed a
/// removal, intents included; history (ended, credential gone) is left out, and a lease
/// whose removal is recorded joins it.
pub async fn open_leases_are_the_live_and_the_owed_not_the_history<S: Store>(store: S) {
    let member = Identity::generate().public();
    let live = lease(1, member, 5000);
    let mut intent = lease(2, member, 5000);
    intent.issued = false;
    let owed = lease(3, member, 500);
    let mut done = lease(4, member, 500);
    done.removed = true;
    let mut revoked = lease(5, member, 5000);
    revoked.revoked_at = Some(Timestamp(400));
    revoked.removed = true;
    for l in [live, intent, owed.clone(), done, revoked] {
        store.put_lease(l).await.unwrap();
    }
    let now = Timestamp(1000);
    let open = store.open_leases(now).await.unwrap();
    assert_eq!(ids(&open), [1, 2, 3].map(|n| format!("{n:016x}")));
    let mut owed = owed;
    owed.removed = true;
    store.put_lease(owed).await.unwrap();
    let open = store.open_leases(now).await.unwrap();
    assert_eq!(ids(&open), [1, 2].map(|n| format!("{n:016x}")));
    let active = LeaseFilter {
        member: None,
        status: Some(LeaseStatus::Active),
        now,
    };
    let listed = store.lease_page(active, None, 10).await.unwrap();
    assert_eq!(
        ids(&listed),
        [format!("{:016x}", 1)],
        "the intent is no lease"
    );
}

/// Pruning deletes only leases that ended at or before the bound and whose credential
/// is gone.
pub async fn pruning_takes_only_ended_leases_whose_credential_is_gone<S: Store>(store: S) {
    let member = Identity::generate().public();
    let mut gone = lease(1, member, 500);
    gone.removed = true;
    let owed = lease(2, member, 500); // expired, credential not yet removed
    let mut revoked = lease(3, member, 5000);
    revoked.revoked_at = Some(Timestamp(400));
    revoked.removed = true;
    let mut recent = lease(4, member, 900);
    recent.removed = true;
    let live = lease(5, member, 5000);
    let mut at_bound = lease(6, member, 600);
    at_bound.removed = true;
    for l in [gone, owed, revoked, recent, live, at_bound] {
        store.put_lease(l).await.unwrap();
    }
    assert_eq!(store.prune_leases(Timestamp(600)).await.unwrap(), 3);
    let left = ids(&store.leases().await.unwrap());
    assert_eq!(
        left,
        [2, 4, 5].map(|n| format!("{n:016x}")),
        "owed, recently ended and live leases stay"
    );
    assert_eq!(store.prune_leases(Timestamp(600)).await.unwrap(), 0);
}

/// Concurrent writes to several tables are all kept.
pub async fn concurrent_writes_are_all_kept<S: Store>(store: S) {
    let store = Arc::new(store);
    let owner = Identity::generate().public();
    let writes: Vec<_> = (0..120u64)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                match i % 3 {
                    0 => store.put_policy(policy(&format!("p{i}"))).await,
                    1 => store.put_member(member(&format!("m{i}"))).await,
                    _ => store.put_lease(lease(i, owner, 5000)).await,
                }
            })
        })
        .collect();
    for write in writes {
        write.await.unwrap().unwrap();
    }
    assert_eq!(store.policies().await.unwrap().len(), 40);
    assert_eq!(store.members().await.unwrap().len(), 40);
    assert_eq!(store.leases().await.unwrap().len(), 40);
}

/// The per-member cap ([`Store::reserve_lease`]): of many reservations at once, exactly
/// the cap's worth are recorded; a lease issued keeps its one place; a revocation, a
/// released reservation and expiry each free one; members are counted apart, and a
/// lease written issued without a reservation counts too.
pub async fn live_leases_are_capped_per_member_in_one_step<S: Store>(store: S) {
    let store = Arc::new(store);
    let (a, b) = (Identity::generate().public(), Identity::generate().public());
    let now = Timestamp(1000);
    let intent = |n: u64, member: PublicIdentity, expires_at: u64| StoredLease {
        issued: false,
        ..lease(n, member, expires_at)
    };
    let attempts: Vec<_> = (0..12u64)
        .map(|n| {
            let store = store.clone();
            let intent = intent(n, a, 2000);
            tokio::spawn(async move { (n, store.reserve_lease(intent, now, 2).await.unwrap()) })
        })
        .collect();
    let mut passed = Vec::new();
    for attempt in attempts {
        match attempt.await.unwrap() {
            (n, Ok(())) => passed.push(format!("{n:016x}")),
            (_, Err(at_cap)) => assert_eq!(at_cap, AtCap { max: 2 }),
        }
    }
    passed.sort();
    assert_eq!(passed.len(), 2, "exactly the cap's worth pass: {passed:?}");
    assert_eq!(
        ids(&store.leases().await.unwrap()),
        passed,
        "only reservations that passed are recorded"
    );
    let refused = async |n: u64, at: Timestamp, max: u32| {
        let reserved = store.reserve_lease(intent(n, a, 3000), at, max).await;
        reserved.unwrap() == Err(AtCap { max })
    };

    // Another member has a count of its own.
    store
        .reserve_lease(intent(100, b, 2000), now, 2)
        .await
        .unwrap()
        .unwrap();
    // Issued, a reservation keeps its one place.
    let mut first = store.lease(passed[0].clone()).await.unwrap().unwrap();
    first.issued = true;
    store.put_lease(first.clone()).await.unwrap();
    assert!(refused(20, now, 2).await);
    // Revoked, it frees it.
    first.revoked_at = Some(now);
    store.put_lease(first).await.unwrap();
    store
        .reserve_lease(intent(21, a, 1500), now, 2)
        .await
        .unwrap()
        .unwrap();
    assert!(refused(22, now, 2).await);
    // A released reservation (its issue failed) frees its place; its intent stays.
    let second = store.lease(passed[1].clone()).await.unwrap().unwrap();
    store.release_lease(second.clone()).await.unwrap();
    assert!(store.lease(second.id).await.unwrap().is_some());
    store
        .reserve_lease(intent(23, a, 3000), now, 2)
        .await
        .unwrap()
        .unwrap();
    assert!(refused(24, now, 2).await);
    // Expiry frees a place with no write: lease 21 ends at 1500.
    let later = Timestamp(1500);
    store
        .reserve_lease(intent(25, a, 3000), later, 2)
        .await
        .unwrap()
        .unwrap();
    assert!(refused(26, later, 2).await);

    // Written issued without a reservation (a record from before reservations), a
    // lease counts all the same.
    let c = Identity::generate().public();
    store.put_lease(lease(30, c, 2000)).await.unwrap();
    let reserved = store.reserve_lease(intent(31, c, 2000), now, 1).await;
    assert_eq!(reserved.unwrap(), Err(AtCap { max: 1 }));
}

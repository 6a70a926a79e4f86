//! The live-lease cap on PostgreSQL, beyond the contract: two replicas reserving for
//! one member at once, the leases of an older schema counted once migrated, and the
//! count served by its index.

use std::sync::Arc;

use leasehold_channel::Identity;
use leasehold_protocol::Timestamp;

use super::schema::COUNT_LIVE;
use super::tests::server;
use super::{PostgresStore, schema};
use crate::store::contract::lease;
use crate::store::{AtCap, Store, StoredLease};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_reserving_for_one_member_at_once_pass_the_cap_exactly() {
    let (pg, first, identity) = server().await;
    let second = PostgresStore::open(&pg.url(), identity.public())
        .await
        .unwrap();
    let replicas = [Arc::new(first), Arc::new(second)];
    let member = Identity::generate().public();
    let now = Timestamp(1000);
    let intent = |n: u64| StoredLease {
        issued: false,
        ..lease(n, member, 5000)
    };
    // Alternately on each replica, all at once.
    let attempts: Vec<_> = (0..16u64)
        .map(|n| {
            let replica = replicas[(n % 2) as usize].clone();
            let intent = intent(n);
            tokio::spawn(async move { replica.reserve_lease(intent, now, 2).await.unwrap() })
        })
        .collect();
    let mut passed = 0;
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(()) => passed += 1,
            Err(at_cap) => assert_eq!(at_cap, AtCap { max: 2 }),
        }
    }
    assert_eq!(passed, 2);
    // One revoked through one replica: the other gives its place to exactly one more.
    let mut held: Vec<StoredLease> = replicas[0].leases().await.unwrap();
    assert_eq!(held.len(), 2);
    let mut revoked = held.pop().unwrap();
    revoked.revoked_at = Some(now);
    replicas[0].put_lease(revoked).await.unwrap();
    let (a, b) = tokio::join!(
        replicas[1].reserve_lease(intent(100), now, 2),
        replicas[0].reserve_lease(intent(101), now, 2),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        usize::from(a.is_ok()) + usize::from(b.is_ok()),
        1,
        "{a:?} {b:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_recorded_before_the_cap_moved_to_the_database_count_once_migrated() {
    let (pg, _store, _identity) = server().await;
    let url = pg.create_database("older").unwrap();
    let client = super::tests::raw_client(&url).await;
    // The schema as version 2 left it, with three of one member's leases.
    client
        .batch_execute("CREATE TABLE leasehold_schema (version INTEGER NOT NULL)")
        .await
        .unwrap();
    for (at, migration) in schema::MIGRATIONS[..2].iter().enumerate() {
        client.batch_execute(migration).await.unwrap();
        client
            .execute(
                "INSERT INTO leasehold_schema (version) VALUES ($1)",
                &[&(at as i32 + 1)],
            )
            .await
            .unwrap();
    }
    let member = Identity::generate().public();
    let issued = lease(1, member, 5000);
    let revoked = StoredLease {
        revoked_at: Some(Timestamp(10)),
        ..lease(2, member, 5000)
    };
    let intent = StoredLease {
        issued: false,
        ..lease(3, member, 5000)
    };
    for l in [issued, revoked, intent] {
        client
            .execute(
                "INSERT INTO leases (id, member, issued, removed, ended_at, record)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &l.id,
                    &l.member.to_string(),
                    &l.issued,
                    &l.removed,
                    &(l.ended_at().0 as i64),
                    &serde_json::to_string(&l).unwrap(),
                ],
            )
            .await
            .unwrap();
    }
    let store = PostgresStore::init(&url, Identity::generate().public())
        .await
        .unwrap();
    let next = StoredLease {
        issued: false,
        ..lease(4, member, 5000)
    };
    let now = Timestamp(1000);
    assert_eq!(
        store.reserve_lease(next.clone(), now, 1).await.unwrap(),
        Err(AtCap { max: 1 }),
        "the issued lease counts"
    );
    assert!(
        store.reserve_lease(next, now, 2).await.unwrap().is_ok(),
        "the revoked lease and the unfinished intent do not"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_count_can_be_a_range_scan_of_its_partial_index() {
    let (_pg, store, _identity) = server().await;
    let client = store.client().await.unwrap();
    // An empty table is cheapest to read whole: ask the planner whether the index
    // serves the query at all (its predicate matches the statement's).
    client
        .batch_execute("SET enable_seqscan = off")
        .await
        .unwrap();
    let plan: Vec<String> = client
        .query(&format!("EXPLAIN {COUNT_LIVE}"), &[&"member", &1000i64])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("leases_live"), "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reservation_refuses_an_isolation_where_its_count_could_miss_another() {
    let (_pg, store, _identity) = server().await;
    let client = store.client().await.unwrap();
    // A database whose default is repeatable read: the count's snapshot would predate
    // the lock, and a reservation committed meanwhile would go unseen.
    client
        .batch_execute("SET default_transaction_isolation = 'repeatable read'")
        .await
        .unwrap();
    let error = client
        .query_one(
            "SELECT leasehold_reserve_lease('m', 1, 8, 'id', false, false, 5000, '{}')",
            &[],
        )
        .await
        .unwrap_err();
    let message = error.as_db_error().map(|e| e.message().to_owned());
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("read committed")),
        "{error:?}"
    );
}

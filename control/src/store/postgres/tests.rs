//! The store contract against a real PostgreSQL (a server of the test's own, from
//! the testkit harness), and what only a shared store must do: two replicas on one
//! database agree on tickets and claims, the schema and identity are checked.

use std::collections::BTreeMap;
use std::sync::Arc;

use leasehold_channel::Identity;
use leasehold_protocol::Timestamp;
use leasehold_testkit::postgres::Postgres;

use super::{PgError, PostgresStore, schema};
use crate::store::{Claimed, Store, StoredLease, StoredTicket};

/// A server of the test's own and a store on it, initialized for a fresh identity.
pub(crate) async fn server() -> (Postgres, PostgresStore, Identity) {
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .unwrap()
        .expect("PostgreSQL (Debian package postgresql) is required: scripts/test.sh installs it");
    let identity = Identity::generate();
    let store = PostgresStore::init(&pg.url(), identity.public())
        .await
        .unwrap_or_else(|e| panic!("init: {e}\n{}", pg.log()));
    (pg, store, identity)
}

/// A plain client of `url`, for tests that read or shape the database behind the
/// store's back.
pub(super) async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = url
        .parse::<tokio_postgres::Config>()
        .unwrap()
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

async fn fresh() -> (Postgres, PostgresStore) {
    let (pg, store, _) = server().await;
    (pg, store)
}

crate::store_contract!(fresh);

fn lease(id: &str, expires_at: u64) -> StoredLease {
    StoredLease {
        id: id.into(),
        member: Identity::generate().public(),
        created_at: Timestamp(1),
        expires_at: Timestamp(expires_at),
        credential_id: format!("user-{id}"),
        auth_scheme: leasehold_protocol::AuthScheme::Token,
        endpoint_url: "http://influx".into(),
        revoked_at: None,
        removed: false,
        issued: true,
        addon_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_use_ticket_redeemed_on_two_replicas_at_once_enrolls_exactly_one() {
    let (pg, first, identity) = server().await;
    let second = Arc::new(
        PostgresStore::open(&pg.url(), identity.public())
            .await
            .unwrap(),
    );
    let first = Arc::new(first);
    for round in 0..10 {
        let hash = format!("ticket-{round}");
        first
            .put_ticket(
                hash.clone(),
                StoredTicket {
                    attributes: BTreeMap::new(),
                    expires_at: Timestamp(u64::from(u32::MAX)),
                    remaining: 1,
                },
            )
            .await
            .unwrap();
        let redeem = |store: Arc<PostgresStore>, hash: String| {
            tokio::spawn(async move {
                store
                    .redeem_ticket(
                        hash,
                        Timestamp(10),
                        Identity::generate().public(),
                        "edge".into(),
                    )
                    .await
                    .unwrap()
            })
        };
        let a = redeem(first.clone(), hash.clone());
        let b = redeem(second.clone(), hash.clone());
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        assert_eq!(
            usize::from(a.is_ok()) + usize::from(b.is_ok()),
            1,
            "round {round}: {a:?} {b:?}"
        );
    }
    assert_eq!(first.members().await.unwrap().len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_revocation_is_claimed_by_one_replica_until_its_claim_lapses() {
    let (pg, first, identity) = server().await;
    let second = PostgresStore::open(&pg.url(), identity.public())
        .await
        .unwrap();
    for i in 0..20 {
        first
            .put_lease(lease(&format!("{i:016x}"), 100))
            .await
            .unwrap();
    }
    // Not yet due: nobody claims anything.
    assert!(
        first
            .claim_due(Timestamp(99), Timestamp(129), 100)
            .await
            .unwrap()
            .is_empty()
    );
    // Due: each lease goes to exactly one of the replicas claiming at the same time.
    let (a, b) = tokio::join!(
        first.claim_due(Timestamp(100), Timestamp(130), 15),
        second.claim_due(Timestamp(100), Timestamp(130), 15)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(
        a.iter().chain(&b).all(|c| !c.taken_over),
        "nobody held them before: {a:?} {b:?}"
    );
    let (a, b) = (ids(a), ids(b));
    let mut all: Vec<_> = a.iter().chain(&b).cloned().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 20, "every due lease claimed once: {a:?} {b:?}");
    assert_eq!(a.len() + b.len(), 20);
    // The holder renews its claim; the other replica cannot take it while current.
    let mine = a.first().or(b.first()).unwrap().clone();
    let (holder, other) = if a.contains(&mine) {
        (&first, &second)
    } else {
        (&second, &first)
    };
    let renewed = holder
        .claim_revocation(mine.clone(), Timestamp(110), Timestamp(140))
        .await
        .unwrap();
    assert_eq!(renewed.map(|c| c.taken_over), Some(false), "its own claim");
    assert!(
        other
            .claim_revocation(mine.clone(), Timestamp(120), Timestamp(150))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        other
            .claim_due(Timestamp(120), Timestamp(150), 100)
            .await
            .unwrap()
            .is_empty()
    );
    // The holder dies: its claim lapses and the other replica takes the lease over,
    // told that it is a takeover (the holder may have removed the credential).
    let taken = other
        .claim_due(Timestamp(140), Timestamp(170), 100)
        .await
        .unwrap();
    assert!(
        taken.contains(&Claimed {
            id: mine.clone(),
            taken_over: true
        }),
        "{taken:?}"
    );
    assert!(
        holder
            .claim_revocation(mine.clone(), Timestamp(141), Timestamp(171))
            .await
            .unwrap()
            .is_none()
    );
    // Renewing the claim taken over is no takeover; taking one over one by one is.
    let renewed = other
        .claim_revocation(mine.clone(), Timestamp(150), Timestamp(180))
        .await
        .unwrap();
    assert_eq!(renewed.map(|c| c.taken_over), Some(false));
    let retaken = holder
        .claim_revocation(mine.clone(), Timestamp(180), Timestamp(210))
        .await
        .unwrap();
    assert_eq!(retaken.map(|c| c.taken_over), Some(true));
    // Recorded removed: never claimed again.
    let mut done = other.lease(mine.clone()).await.unwrap().unwrap();
    done.removed = true;
    other.put_lease(done).await.unwrap();
    assert!(
        other
            .claim_revocation(mine.clone(), Timestamp(500), Timestamp(530))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        !ids(first
            .claim_due(Timestamp(500), Timestamp(530), 100)
            .await
            .unwrap())
        .contains(&mine)
    );
}

/// The lease ids of claims.
fn ids(claims: Vec<Claimed>) -> Vec<String> {
    claims.into_iter().map(|c| c.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn housekeeping_runs_on_one_replica_at_a_time_and_a_dead_holder_releases_it() {
    let (pg, first, identity) = server().await;
    let second = PostgresStore::open(&pg.url(), identity.public())
        .await
        .unwrap();
    let held = first
        .exclusive("sweep")
        .await
        .unwrap()
        .expect("free at first");
    assert!(second.exclusive("sweep").await.unwrap().is_none());
    // Another job's lock is another lock.
    assert!(second.exclusive("prune").await.unwrap().is_some());
    drop(held);
    // Released with the holder's session, which PostgreSQL notices shortly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if second.exclusive("sweep").await.unwrap().is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lock was never released"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_another_identity_a_newer_schema_and_an_uninitialized_database() {
    let (pg, store, _identity) = server().await;
    let stranger = Identity::generate().public();
    let refused = PostgresStore::open(&pg.url(), stranger).await.unwrap_err();
    assert!(
        matches!(refused, PgError::IdentityMismatch { .. }),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("same identity key"),
        "{refused}"
    );
    assert!(
        !refused.to_string().contains(pg.password()),
        "no secret in: {refused}"
    );
    // `init` with another key does not take the database over either.
    let refused = PostgresStore::init(&pg.url(), stranger).await.unwrap_err();
    assert!(
        matches!(refused, PgError::IdentityMismatch { .. }),
        "{refused}"
    );
    // Nor does a second `control init` (refused before it creates anything).
    let refused = PostgresStore::prepare(&pg.url()).await.unwrap_err();
    assert!(
        matches!(refused, PgError::AlreadyInitialized { .. }),
        "{refused}"
    );

    let empty = pg.create_database("empty").unwrap();
    let refused = PostgresStore::open(&empty, stranger).await.unwrap_err();
    assert!(matches!(refused, PgError::NoIdentity), "{refused}");

    store
        .execute(
            "INSERT INTO leasehold_schema (version) VALUES ($1)",
            &[&(schema::CURRENT + 1)],
        )
        .await
        .unwrap();
    let refused = PostgresStore::open(&pg.url(), stranger).await.unwrap_err();
    assert!(matches!(refused, PgError::Newer { .. }), "{refused}");
    assert!(
        refused
            .to_string()
            .contains("newer than this control knows"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_is_unavailable_and_the_store_recovers_when_it_is_back() {
    let (pg, store, _) = server().await;
    store
        .put_lease(lease("0000000000000001", 100))
        .await
        .unwrap();
    let mut pg = tokio::task::spawn_blocking(move || {
        let mut pg = pg;
        // A clean stop: the harness runs with synchronous_commit=off, so a kill -9
        // may lose the last commits, which is not what this test is about.
        pg.stop().unwrap();
        pg
    })
    .await
    .unwrap();
    let error = store.lease("0000000000000001".into()).await.unwrap_err();
    assert!(error.is_unavailable(), "{error}");
    let error = store
        .put_lease(lease("0000000000000002", 100))
        .await
        .unwrap_err();
    assert!(error.is_unavailable(), "{error}");
    assert!(
        !error.to_string().contains(pg.password()),
        "no secret in: {error}"
    );
    pg = tokio::task::spawn_blocking(move || {
        pg.start_again().unwrap();
        pg
    })
    .await
    .unwrap();
    // The pool replaces its broken connections: reads work again, nothing was lost.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let found = loop {
        match store.lease("0000000000000001".into()).await {
            Ok(found) => break found,
            Err(error) => {
                assert!(error.is_unavailable(), "{error}");
                assert!(
                    std::time::Instant::now() < deadline,
                    "never recovered: {error}\n{}",
                    pg.log()
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    assert!(found.is_some());
    assert!(
        store
            .lease("0000000000000002".into())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_session_asks_the_server_for_short_keepalives() {
    let (pg, _store, _identity) = server().await;
    let client = raw_client(&pg.url()).await;
    // Accepted from an ordinary session, and in effect on a TCP connection (over a Unix
    // socket the server reports 0 whatever is set).
    client
        .batch_execute(super::claims::SESSION_KEEPALIVES)
        .await
        .unwrap();
    for (setting, expected) in [
        ("tcp_keepalives_idle", "3"),
        ("tcp_keepalives_interval", "1"),
        ("tcp_keepalives_count", "3"),
    ] {
        let row = client
            .query_one(&format!("SHOW {setting}"), &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), expected, "{setting}");
    }
}

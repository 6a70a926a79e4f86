//! Upgrading a control's database from the previous release's schema (version 2):
//! `control migrate` keeps its records, applies each migration once (run twice, or by
//! two replicas at once), refuses another control's database or an empty one with
//! nothing changed; `serve` names the command; and the previous release's statements
//! still run against the migrated schema (its replicas keep serving during a rolling
//! upgrade).

use std::collections::BTreeMap;

use leasehold_channel::{Identity, PublicIdentity};
use leasehold_protocol::{MemberRecord, Timestamp};

use super::tests::{raw_client, server};
use super::{PgError, PostgresStore, schema};
use crate::store::contract::lease;
use crate::store::{Store, StoredLease};

/// The schema version of the previous release.
const PREVIOUS: usize = 2;

/// The previous release's statement recording a lease, as it ran (its replicas still
/// run it during a rolling upgrade).
async fn put_lease_as_previous_release(client: &tokio_postgres::Client, l: &StoredLease) {
    client
        .execute(
            "INSERT INTO leases (id, member, issued, removed, ended_at, record)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (id) DO UPDATE SET member = EXCLUDED.member, issued = EXCLUDED.issued,
                 removed = EXCLUDED.removed, ended_at = EXCLUDED.ended_at,
                 record = EXCLUDED.record,
                 claimed_by = CASE WHEN EXCLUDED.removed THEN NULL ELSE leases.claimed_by END,
                 claimed_until = CASE WHEN EXCLUDED.removed THEN NULL ELSE leases.claimed_until END",
            &[
                &l.id,
                &l.member.to_string(),
                &l.issued,
                &l.removed,
                &(l.ended_at().0 as i64),
                &serde_json::to_string(l).unwrap(),
            ],
        )
        .await
        .unwrap();
}

/// A database `name` as the previous release's `control init` left it for `owner`,
/// with a member and two of its leases (one issued, one revoked).
async fn previous_release_database(
    pg: &leasehold_testkit::postgres::Postgres,
    name: &str,
    owner: PublicIdentity,
) -> (String, MemberRecord, Vec<StoredLease>) {
    let url = pg.create_database(name).unwrap();
    let client = raw_client(&url).await;
    client
        .batch_execute("CREATE TABLE leasehold_schema (version INTEGER NOT NULL)")
        .await
        .unwrap();
    for (at, migration) in schema::MIGRATIONS[..PREVIOUS].iter().enumerate() {
        client.batch_execute(migration).await.unwrap();
        client
            .execute(
                "INSERT INTO leasehold_schema (version) VALUES ($1)",
                &[&(at as i32 + 1)],
            )
            .await
            .unwrap();
    }
    client
        .execute(
            "INSERT INTO leasehold_meta (key, value) VALUES ($1, $2)",
            &[&schema::IDENTITY_KEY, &owner.to_string()],
        )
        .await
        .unwrap();
    let member = MemberRecord {
        id: Identity::generate().public(),
        name: "edge".into(),
        attributes: BTreeMap::from([("site".to_owned(), "north".to_owned())]),
        enrolled_at: Timestamp(5),
    };
    client
        .execute(
            "INSERT INTO members (id, record) VALUES ($1, $2)",
            &[
                &member.id.to_string(),
                &serde_json::to_string(&member).unwrap(),
            ],
        )
        .await
        .unwrap();
    let leases = vec![
        lease(1, member.id, 5000),
        StoredLease {
            revoked_at: Some(Timestamp(10)),
            ..lease(2, member.id, 5000)
        },
    ];
    for l in &leases {
        put_lease_as_previous_release(&client, l).await;
    }
    (url, member, leases)
}

/// Records compared by their stored form (they have no `PartialEq`).
fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap()
}

async fn version_of(url: &str) -> i32 {
    schema::version(&raw_client(url).await).await.unwrap()
}

async fn sorted_leases(store: &PostgresStore) -> Vec<StoredLease> {
    let mut leases = store.leases().await.unwrap();
    leases.sort_by(|a, b| a.id.cmp(&b.id));
    leases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_schema_is_migrated_once_keeping_its_members_and_leases() {
    let (pg, _store, _identity) = server().await;
    let owner = Identity::generate().public();
    let (url, member, leases) = previous_release_database(&pg, "previous", owner).await;

    // `serve` refuses it, naming the command.
    let refused = PostgresStore::open(&url, owner).await.unwrap_err();
    assert!(matches!(refused, PgError::Older { found: 2 }), "{refused}");
    assert!(
        refused
            .to_string()
            .contains("run `leasehold control migrate --store URL`"),
        "{refused}"
    );

    let migrated = PostgresStore::upgrade(&url, owner).await.unwrap();
    assert_eq!(
        migrated,
        schema::Migrated {
            from: 2,
            to: schema::CURRENT
        }
    );
    assert!(migrated.applied());
    assert_eq!(version_of(&url).await, schema::CURRENT);
    // Twice: nothing more to apply.
    let again = PostgresStore::upgrade(&url, owner).await.unwrap();
    assert_eq!(
        again,
        schema::Migrated {
            from: schema::CURRENT,
            to: schema::CURRENT
        }
    );
    assert!(!again.applied());
    let rows: i64 = raw_client(&url)
        .await
        .query_one("SELECT count(*) FROM leasehold_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, i64::from(schema::CURRENT), "one row per version");

    let store = PostgresStore::open(&url, owner).await.unwrap();
    assert_eq!(
        json(&store.members().await.unwrap()),
        json(&vec![member.clone()])
    );
    assert_eq!(json(&sorted_leases(&store).await), json(&leases));
    // The issued lease holds its place under the member's cap once migrated; the
    // revoked one does not.
    let next = StoredLease {
        issued: false,
        ..lease(3, member.id, 5000)
    };
    assert!(
        store
            .reserve_lease(next.clone(), Timestamp(1000), 1)
            .await
            .unwrap()
            .is_err()
    );
    assert!(
        store
            .reserve_lease(next, Timestamp(1000), 2)
            .await
            .unwrap()
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_controls_database_is_refused_with_nothing_changed() {
    let (pg, _store, _identity) = server().await;
    let owner = Identity::generate().public();
    let (url, _member, _leases) = previous_release_database(&pg, "theirs", owner).await;
    let stranger = Identity::generate().public();

    let refused = PostgresStore::upgrade(&url, stranger).await.unwrap_err();
    assert!(
        matches!(refused, PgError::NotThisControl { .. }),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("nothing was changed"),
        "{refused}"
    );
    assert!(!refused.to_string().contains(pg.password()), "{refused}");
    assert_eq!(version_of(&url).await, 2, "no migration applied");
    // Nor does `control init` (with a new identity) or `init` with another key apply any.
    let refused = PostgresStore::prepare(&url).await.unwrap_err();
    assert!(
        matches!(refused, PgError::AlreadyInitialized { .. }),
        "{refused}"
    );
    assert!(refused.to_string().contains("control migrate"), "{refused}");
    let refused = PostgresStore::init(&url, stranger).await.unwrap_err();
    assert!(
        matches!(refused, PgError::IdentityMismatch { .. }),
        "{refused}"
    );
    assert_eq!(version_of(&url).await, 2, "no migration applied");

    // An empty database is `control init`'s: neither migrated nor served.
    let empty = pg.create_database("empty_for_migrate").unwrap();
    let refused = PostgresStore::upgrade(&empty, owner).await.unwrap_err();
    assert!(matches!(refused, PgError::NoIdentity), "{refused}");
    let created: bool = raw_client(&empty)
        .await
        .query_one("SELECT to_regclass('leasehold_schema') IS NOT NULL", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!created, "a refused migrate created its schema table");
    let refused = PostgresStore::open(&empty, owner).await.unwrap_err();
    assert!(matches!(refused, PgError::NoIdentity), "{refused}");
    assert!(refused.to_string().contains("control init"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_migrating_at_once_apply_each_migration_once() {
    let (pg, _store, _identity) = server().await;
    let owner = Identity::generate().public();
    let (url, _member, leases) = previous_release_database(&pg, "raced", owner).await;
    let (a, b) = tokio::join!(
        PostgresStore::upgrade(&url, owner),
        PostgresStore::upgrade(&url, owner)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        usize::from(a.applied()) + usize::from(b.applied()),
        1,
        "{a:?} {b:?}"
    );
    let versions: Vec<i32> = raw_client(&url)
        .await
        .query("SELECT version FROM leasehold_schema ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, (1..=schema::CURRENT).collect::<Vec<_>>());
    let store = PostgresStore::open(&url, owner).await.unwrap();
    assert_eq!(json(&sorted_leases(&store).await), json(&leases));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_releases_lease_statement_still_runs_on_the_current_schema() {
    // A replica of the previous release left running after the migration (a rolling
    // upgrade) keeps recording leases, and this release reads them.
    let (pg, store, _identity) = server().await;
    let client = raw_client(&pg.url()).await;
    let member = Identity::generate().public();
    let mut recorded = lease(7, member, 5000);
    put_lease_as_previous_release(&client, &recorded).await;
    assert_eq!(
        json(&store.lease(recorded.id.clone()).await.unwrap()),
        json(&Some(recorded.clone()))
    );
    recorded.removed = true;
    put_lease_as_previous_release(&client, &recorded).await;
    assert_eq!(
        json(&store.lease(recorded.id.clone()).await.unwrap()),
        json(&Some(recorded))
    );
    // A lease reserved on this release and revoked by the previous one gives its
    // place under the cap back (its end moves to the revocation).
    let now = Timestamp(1000);
    let held = StoredLease {
        issued: false,
        ..lease(8, member, 5000)
    };
    assert!(
        store
            .reserve_lease(held.clone(), now, 1)
            .await
            .unwrap()
            .is_ok()
    );
    let next = StoredLease {
        issued: false,
        ..lease(9, member, 5000)
    };
    assert!(
        store
            .reserve_lease(next.clone(), now, 1)
            .await
            .unwrap()
            .is_err()
    );
    let revoked = StoredLease {
        revoked_at: Some(Timestamp(900)),
        ..held
    };
    put_lease_as_previous_release(&client, &revoked).await;
    assert!(store.reserve_lease(next, now, 1).await.unwrap().is_ok());
}

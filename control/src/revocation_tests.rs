//! The limits on revocation work ([`crate::revocation_limits`]) against an InfluxDB
//! slow to revoke: many leases due at once are worked a few at a time, and the request
//! path is not held up by them.

use std::sync::Arc;
use std::time::Duration;

use leasehold_channel::{Identity, PublicIdentity, Secret};
use leasehold_protocol::{AddonConfig, Reply, Request, Timestamp};
use leasehold_testkit::v2server::V2Server;
use tokio_util::sync::CancellationToken;

use crate::control::Control;
use crate::datadir::DataDir;
use crate::ops::tests::record;
use crate::revocation_limits::ATTEMPTS;
use crate::store::{MemoryStore, Store};

/// Has `admin` configure the add-on on `v2`: 600-s leases, up to 1,000 per member.
async fn configure_addon<S: Store>(
    control: &Arc<Control<S>>,
    admin: PublicIdentity,
    v2: &V2Server,
) {
    let addon = AddonConfig::Influxdb {
        endpoint_url: v2.url(),
        token: Secret::new(v2.admin_token()),
        org_id: v2.org_id().to_owned(),
        permissions: serde_json::json!([{"action": "write", "resource": {"type": "buckets"}}]),
        default_ttl_secs: Some(600),
        max_ttl_secs: Some(600),
        max_live_leases: Some(1000),
        ca_pem: None,
    };
    let configure = Request::AddonConfigure {
        addon,
        skip_verify: true,
    };
    control.handle(admin, configure).await.unwrap();
}

/// Polls `done` every 20 ms for up to 30 s; panics with `what` if it never holds.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_revoked_a_few_at_a_time_while_lease_create_still_succeeds() {
    let v2 = V2Server::start_default().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = MemoryStore::new();
    let admin = Identity::generate().public();
    store
        .put_member(record(admin, "admin", &[("role", "admin")]))
        .await
        .unwrap();
    let member = Identity::generate().public();
    store.put_member(record(member, "m", &[])).await.unwrap();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let control = Control::start(
        Identity::generate(),
        store.clone(),
        DataDir::new(dir.path()),
        vec!["127.0.0.1:4100".into()],
        shutdown.clone(),
    )
    .await
    .unwrap();
    configure_addon(&control, admin, &v2).await;

    // Three times as many leases as attempts allowed, all due at once.
    let mut ids = Vec::new();
    for _ in 0..3 * ATTEMPTS {
        let create = Request::LeaseCreate { ttl_secs: None };
        let Reply::Lease(lease) = control.handle(member, create).await.unwrap() else {
            panic!("not a lease")
        };
        ids.push(lease.id);
    }
    v2.hold_deletes(true);
    for id in &ids {
        control.schedule(Timestamp(0), id.clone());
    }
    wait_until("the first revocations reach InfluxDB", || {
        v2.deletes_held().0 >= ATTEMPTS as u64
    })
    .await;
    // Time for any revocation beyond the limit to reach InfluxDB too (with no limit,
    // all of them do at once).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (held, most) = v2.deletes_held();
    assert!(
        most <= ATTEMPTS as u64,
        "{most} revocations in flight at once, more than the limit of {ATTEMPTS} (now {held})"
    );

    // The request path is not behind the backlog.
    let create = Request::LeaseCreate { ttl_secs: None };
    let Reply::Lease(fresh) = control.handle(member, create).await.unwrap() else {
        panic!("not a lease")
    };
    let metrics = control.metrics().render();
    let owed = format!("{} {}", crate::metrics::REVOCATIONS_OWED, ids.len());
    assert!(
        metrics.contains(&owed),
        "the backlog is shown: {owed} in\n{metrics}"
    );

    // InfluxDB answers again: every one is revoked, once, and the fresh lease is left.
    v2.hold_deletes(false);
    wait_until("every lease due is revoked", || {
        v2.authorization_count() == 1
    })
    .await;
    let fresh = store.lease(fresh.id).await.unwrap().unwrap();
    assert_eq!(v2.authorizations()[0].id, fresh.credential_id);
    for id in &ids {
        let lease = store.lease(id.clone()).await.unwrap().unwrap();
        assert!(lease.removed, "{id} recorded removed");
    }
    assert!(
        v2.deletes_held().1 <= ATTEMPTS as u64,
        "never more than the limit"
    );
}

/// A due lease of no member this control knows, issued under the current add-on.
fn due_lease(n: usize) -> crate::store::StoredLease {
    crate::store::StoredLease {
        id: format!("{n:016x}"),
        member: Identity::generate().public(),
        created_at: Timestamp(1),
        expires_at: Timestamp(2),
        credential_id: format!("{n:016x}"),
        auth_scheme: leasehold_protocol::AuthScheme::Token,
        endpoint_url: String::new(),
        revoked_at: None,
        removed: false,
        issued: true,
        addon_id: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_claims_only_what_it_has_room_for_and_issues_meanwhile() {
    use crate::revocation_limits::HELD;
    use crate::store::PostgresStore;

    let (pg, store, identity) = crate::store::postgres::tests::server().await;
    let v2 = V2Server::start_default().await.unwrap();
    let admin = Identity::generate().public();
    store
        .put_member(record(admin, "admin", &[("role", "admin")]))
        .await
        .unwrap();
    let member = Identity::generate().public();
    store.put_member(record(member, "m", &[])).await.unwrap();
    // More due than one replica may hold: the rest are for the other replicas.
    let due = HELD + 44;
    for n in 0..due {
        store.put_lease(due_lease(n)).await.unwrap();
    }
    v2.hold_deletes(true);
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let replica = PostgresStore::open(&pg.url(), identity.public())
        .await
        .unwrap();
    let control = Control::start(
        identity,
        replica,
        DataDir::new(dir.path()),
        vec!["127.0.0.1:4100".into()],
        shutdown.clone(),
    )
    .await
    .unwrap();
    configure_addon(&control, admin, &v2).await;
    wait_until("the first revocations reach InfluxDB", || {
        v2.deletes_held().0 >= ATTEMPTS as u64
    })
    .await;
    // Two more claim polls: with no room left, this replica claims nothing more.
    tokio::time::sleep(crate::control::CLAIM_POLL * 5 / 2).await;
    let now = Timestamp::now();
    let other = PostgresStore::open(&pg.url(), control.identity().public())
        .await
        .unwrap();
    let left = other
        .claim_due(now, Timestamp(now.0 + 30), 10 * due)
        .await
        .unwrap();
    assert_eq!(
        left.len(),
        due - HELD,
        "the replica held {HELD} and left the rest to the others"
    );
    let (_, most) = v2.deletes_held();
    assert!(most <= ATTEMPTS as u64, "{most} revocations at once");

    // The pool is not the revocations': a lease is issued meanwhile.
    let create = Request::LeaseCreate { ttl_secs: None };
    let reply = control.handle(member, create).await.unwrap();
    assert!(matches!(reply, Reply::Lease(_)), "{reply:?}");
    v2.hold_deletes(false);
}

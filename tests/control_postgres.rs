//! A replicated control on a real PostgreSQL (a server of the test's own): two
//! replicas with one identity share members, tickets, add-on settings and leases; each lease's
//! credential is removed by exactly one of them; a replica killed (`kill -9`) or
//! aborted mid-issue leaves nothing behind, the other finishing its revocations; a
//! member's live-lease cap holds across the replicas. (Replicas killed round after
//! round under load, and PostgreSQL restarted under load: `control_ha.rs`.)

mod common;

use common::replicas::{copy_dir, readyz, replica};
use common::setup::eventually;
use common::{EVENT_DEADLINE, Env};
use leasehold_channel::home::Home;
use leasehold_protocol::client::{Client, ClientError};
use leasehold_protocol::{ErrorCode, Reply, Request};
use leasehold_testkit::postgres::Postgres;
use leasehold_testkit::v2server::V2Server;

/// The lease ids each log says it removed the credential of.
fn removals(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("lease credential removed from InfluxDB"))
        .filter_map(|l| {
            let at = l.find("lease.id=")? + "lease.id=".len();
            Some(
                l[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_hexdigit())
                    .collect(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_share_the_store_and_each_credential_is_removed_once_whoever_dies() {
    let mut pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .unwrap()
        .expect("PostgreSQL (Debian package postgresql) is required: scripts/test.sh installs it");
    let v2 = V2Server::start_default().await.unwrap();
    let mut env = Env::new();
    env.set_env("LEASEHOLD_STORE_URL", &pg.url());
    let a = format!("127.0.0.1:{}", env.control_port);
    let b = format!("127.0.0.1:{}", common::free_port());
    let init = env.json(&[
        "control",
        "init",
        "--listen",
        &a,
        "--advertise",
        &format!("{a},{b}"),
    ]);
    assert!(!init.to_string().contains(pg.password()), "{init}");
    // Another `control init` on the same database, and one asking for TLS of a server
    // without it: refused, with nothing created (so each can be run again once fixed).
    let mut other = Env::new();
    other.set_env("LEASEHOLD_STORE_URL", &pg.url());
    let (code, stderr) = other.fails(&["control", "init"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("already belongs to control"), "{stderr}");
    assert!(
        !other.data_dir().exists(),
        "a refused init created {:?}",
        other.data_dir()
    );
    let mut tls = Env::new();
    tls.set_env(
        "LEASEHOLD_STORE_URL",
        &format!("{}?sslmode=require", pg.url()),
    );
    let (code, stderr) = tls.fails(&["control", "init"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("sslmode=require"), "{stderr}");
    assert!(!stderr.contains(pg.password()), "{stderr}");
    assert!(!tls.data_dir().exists());
    // The second replica: the same identity key, copied before any add-on exists.
    let data_b = env.dir.path().join("replica-b");
    copy_dir(&env.data_dir(), &data_b);
    let replica_a = env.serve_with("info", &[]);
    let (replica_b, admin_b) = replica(&env, &data_b, &b, None);
    // Configured through A: B learns of it from the store (sealed there).
    assert_eq!(readyz(admin_b).await, 503, "no add-on yet");
    env.configure_v2(&v2, &[]);
    eventually(EVENT_DEADLINE, "B to follow the add-on", async || {
        readyz(admin_b).await == 200
    })
    .await;
    let followed = std::fs::read_to_string(data_b.join("addon.json")).unwrap();
    assert!(
        followed.contains(v2.org_id()),
        "B's add-on is the one configured on A"
    );

    // A ticket redeemed on whichever replica the client starts at; the member is
    // everyone's.
    env.enrolled_identity("app", &[]);
    const LEASES: usize = 6;
    let mut ids = Vec::new();
    for _ in 0..LEASES {
        let lease = env.json(&["lease", "create", "--identity", "app", "--ttl", "2s"]);
        assert_eq!(lease["status"], "active", "{lease}");
        ids.push(lease["id"].as_str().unwrap().to_owned());
    }
    let listed = env.json(&["lease", "list", "--identity", "app"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(LEASES), "{listed}");

    // Both replicas alive: every credential removed at expiry, each by one replica.
    eventually(EVENT_DEADLINE, "every credential removed", async || {
        v2.authorization_count() == 0
    })
    .await;
    let logs = || format!("{}\n{}", replica_a.log(), replica_b.log());
    eventually(EVENT_DEADLINE, "every removal recorded", async || {
        removals(&logs()).len() >= LEASES
    })
    .await;
    let mut removed = removals(&logs());
    removed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(
        removed,
        expected,
        "each lease removed exactly once:\n{}",
        logs()
    );

    // Replica A killed: the clients move to B, which also revokes what A issued.
    replica_a.kill9();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let lease = env.json(&["lease", "create", "--identity", "app", "--ttl", "2s"]);
        ids.push(lease["id"].as_str().unwrap().to_owned());
    }
    eventually(EVENT_DEADLINE, "B removes every credential", async || {
        v2.authorization_count() == 0
    })
    .await;

    // A back, aborting right after InfluxDB created a credential (before recording it
    // issued): the intent it recorded first is B's to act on at expiry.
    let (aborting, _) = replica(
        &env,
        &env.data_dir(),
        &a,
        Some("abort-after-credential-created"),
    );
    // Each create starts at a random replica: a few reach A (those on B just work).
    for _ in 0..30 {
        if aborting
            .log()
            .contains("aborting after the credential was created")
        {
            break;
        }
        env.run(&["lease", "create", "--identity", "app", "--ttl", "2s"]);
    }
    assert!(
        aborting
            .log()
            .contains("aborting after the credential was created"),
        "the client never reached the aborting replica:\n{}",
        aborting.log()
    );
    eventually(
        EVENT_DEADLINE,
        "the orphan's credential removed by B",
        async || v2.authorization_count() == 0,
    )
    .await;
    // Logged once the removal is recorded, a moment after InfluxDB saw it.
    eventually(
        EVENT_DEADLINE,
        "B to record the removal of the intent's credential",
        async || replica_b.log().contains("never issued"),
    )
    .await;

    // PostgreSQL stopped: B issues nothing (no credential it could not record) and
    // says it is not ready; back, B serves again, nothing lost.
    assert_eq!(readyz(admin_b).await, 200);
    tokio::task::block_in_place(|| pg.stop()).unwrap();
    let (code, stderr) = env.fails(&["lease", "create", "--identity", "app", "--ttl", "2s"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("store unavailable"), "{stderr}");
    assert_eq!(
        v2.authorization_count(),
        0,
        "no credential created unrecorded"
    );
    eventually(EVENT_DEADLINE, "B not ready", async || {
        readyz(admin_b).await == 503
    })
    .await;
    tokio::task::block_in_place(|| pg.start_again()).unwrap();
    eventually(EVENT_DEADLINE, "B ready again", async || {
        readyz(admin_b).await == 200
    })
    .await;
    let lease = env.json(&["lease", "create", "--identity", "app", "--ttl", "2s"]);
    assert_eq!(lease["status"], "active", "{lease}");
    let listed = env.json(&["lease", "list", "--identity", "app"]);
    assert!(listed.as_array().unwrap().len() > LEASES, "{listed}");
    eventually(EVENT_DEADLINE, "its credential removed", async || {
        v2.authorization_count() == 0
    })
    .await;
    for log in [replica_b.log(), aborting.log()] {
        assert!(
            !log.contains(pg.password()),
            "the store's password logged:\n{log}"
        );
    }
    drop(replica_b);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_members_live_lease_cap_holds_across_two_replicas() {
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await
        .unwrap()
        .expect("PostgreSQL (Debian package postgresql) is required: scripts/test.sh installs it");
    let v2 = V2Server::start_default().await.unwrap();
    let mut env = Env::new();
    env.set_env("LEASEHOLD_STORE_URL", &pg.url());
    let a = format!("127.0.0.1:{}", env.control_port);
    let b = format!("127.0.0.1:{}", common::free_port());
    let advertise = format!("{a},{b}");
    env.json(&["control", "init", "--listen", &a, "--advertise", &advertise]);
    let data_b = env.dir.path().join("replica-b");
    copy_dir(&env.data_dir(), &data_b);
    let _replica_a = env.serve_with("info", &[]);
    let (_replica_b, admin_b) = replica(&env, &data_b, &b, None);
    env.configure_v2(&v2, &["--max-live-leases", "2"]);
    eventually(EVENT_DEADLINE, "B to follow the add-on", async || {
        readyz(admin_b).await == 200
    })
    .await;
    env.enrolled_identity("app", &[]);
    let home = Home::new(env.home());
    let identity = home.load_identity("app").unwrap();
    let enrollment = home.load_enrollment("app").unwrap();
    assert_eq!(enrollment.addrs, [a, b]);
    // A client of replica 0 (A) or 1 (B), whichever the other's state.
    let on = async |replica: usize| {
        Client::connect_starting_at(&enrollment.addrs, replica, &enrollment.control, &identity)
            .await
            .unwrap()
    };
    let create = || Request::LeaseCreate {
        ttl_secs: Some(600),
    };
    let at_cap = |answer: &Result<Reply, ClientError>| {
        matches!(answer, Err(ClientError::Remote(e))
            if e.code == ErrorCode::Conflict && e.message.contains("2 live leases"))
    };

    // Eight creates at once, alternately on A and B: exactly two leases.
    let mut clients = Vec::new();
    for i in 0..8 {
        clients.push(on(i % 2).await);
    }
    let attempts: Vec<_> = clients
        .into_iter()
        .map(|mut client| tokio::spawn(async move { client.call(create()).await }))
        .collect();
    let mut leases = Vec::new();
    for attempt in attempts {
        match attempt.await.unwrap() {
            Ok(Reply::Lease(lease)) => leases.push(lease.id),
            refused => assert!(at_cap(&refused), "{refused:?}"),
        }
    }
    assert_eq!(leases.len(), 2, "{leases:?}");
    assert_eq!(v2.authorization_count(), 2, "no credential beyond the cap");
    for replica in [0, 1] {
        assert!(at_cap(&on(replica).await.call(create()).await));
    }

    // One revoked on A: one more on B, then neither has room.
    let revoked = on(0)
        .await
        .call(Request::LeaseRevoke {
            id: leases[0].clone(),
        })
        .await;
    assert!(matches!(revoked, Ok(Reply::Lease(_))), "{revoked:?}");
    let again = on(1).await.call(create()).await;
    assert!(matches!(again, Ok(Reply::Lease(_))), "{again:?}");
    for replica in [0, 1] {
        assert!(at_cap(&on(replica).await.call(create()).await));
    }
}

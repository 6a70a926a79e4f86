//! The highly available control of `examples/docker-compose.ha.yml` on a real Docker
//! engine, with no registry: the images as the Docker test makes them, PostgreSQL built
//! from `examples/postgres/Dockerfile` (Debian's package on the project's base image;
//! cached by Docker after the first build). The example runs with its InfluxDB 1.x
//! override under a project name of its own and is taken down with its volumes at the
//! end, passed or failed. It shows:
//!
//! 1. three replicas on one PostgreSQL, one control identity, all three ready (store
//!    reachable, add-on configured); the sidecar holds a lease;
//! 2. the replica the sidecar's channel is on killed: the sidecar goes on leasing from
//!    the others, and every write the app makes through it is answered 204.

use std::time::Instant;

use super::docker::{
    SLOW, app_writes, build_images, random_hex, renewals, unique_suffix, wait_healthy,
};
use super::engine::{Compose, docker, messages, require_engine, wait_for};
use super::repo;

/// Short leases, so that renewals come every few seconds.
const LEASE_TTL: &str = "12s";
/// Leases the sidecar must install with a replica dead.
const RENEWALS_AFTER_KILL: u64 = 3;
const REPLICAS: [&str; 3] = ["control", "control-2", "control-3"];

#[test]
fn docker_ha_control_survives_the_replica_the_sidecar_is_on_being_killed() {
    require_engine();
    let started = Instant::now();
    let phase = |what: &str| eprintln!("[{:>5.1}s] {what}", started.elapsed().as_secs_f64());
    let run_id = unique_suffix();
    let (image, influxdb1_image) = build_images(&run_id);
    let compose = Compose::new(
        &format!("leaseholdha{run_id}"),
        vec![
            repo("examples/docker-compose.yml"),
            repo("examples/docker-compose.influxdb1.yml"),
            repo("examples/docker-compose.ha.yml"),
        ],
        [
            ("LEASEHOLD_IMAGE", image.0.as_str()),
            ("INFLUXDB1_IMAGE", &influxdb1_image),
            ("INFLUXDB_ADMIN_PASSWORD", &random_hex(16)),
            ("INFLUXDB_ADMIN_TOKEN", "unused-with-influxdb-1"),
            ("LEASEHOLD_PG_PASSWORD", &random_hex(16)),
            ("LEASE_TTL", LEASE_TTL),
            ("APP_WRITE_INTERVAL", "0.5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    );
    compose.run(&["build", "postgres"]);
    phase("images ready");
    compose.run(&["up", "--detach", "--no-build"]);
    let replicas = REPLICAS.map(|s| compose.container(s));
    let app = compose.container("app");
    wait_healthy(&compose.container("leasehold"));
    for replica in &replicas {
        wait_healthy(replica);
    }
    phase("three replicas ready; the sidecar holds a lease");
    let identities: Vec<String> = replicas
        .iter()
        .map(|r| {
            let serving = messages(r, "control serving");
            serving[0]["control"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(
        identities.iter().all(|id| *id == identities[0]),
        "one control identity: {identities:?}"
    );

    // The sidecar keeps its channel open between renewals: the replica that issued its
    // latest lease is the one it is on.
    let issued = |replica: &str| messages(replica, "lease issued");
    let on = wait_for("a lease issued", SLOW, || {
        replicas
            .iter()
            .filter_map(|r| {
                let last = issued(r).last()?["timestamp"].as_str()?.to_owned();
                Some((last, r.clone()))
            })
            .max()
            .map(|(_, r)| r)
    });
    let before = renewals(&app).expect("the sidecar's metrics");
    let others: Vec<&String> = replicas.iter().filter(|r| **r != on).collect();
    let issued_by_others = || others.iter().map(|r| issued(r).len()).sum::<usize>();
    let others_before = issued_by_others();
    // SIGKILL at once, and no restart (a stopped container stays down).
    docker(&["stop", "--time", "0", &on]);
    phase("the sidecar's replica killed");
    wait_for("renewals from the other replicas", SLOW, || {
        (renewals(&app)? >= before + RENEWALS_AFTER_KILL).then_some(())
    });
    assert!(
        issued_by_others() >= others_before + RENEWALS_AFTER_KILL as usize,
        "the leases came from the replicas still up"
    );
    let writes = app_writes(&app);
    assert!(
        writes.len() >= 10 && writes.iter().all(|s| s == "204"),
        "every write through the sidecar is answered 204: {writes:?}"
    );
    phase(&format!(
        "{RENEWALS_AFTER_KILL} leases from the other replicas; {} writes, all 204",
        writes.len()
    ));
}

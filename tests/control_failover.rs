//! Clients fail over between the control's addresses: a control initialised with two
//! advertised addresses, one of them dead (a socket bound and listening that never
//! accepts: the TCP handshake completes, the Noise one never does, the hardest kind of
//! dead replica to notice). Tickets carry both; the CLI and the proxy start at a random
//! one and move on after the failover timeout.

mod common;

use std::time::{Duration, Instant};

use common::setup::eventually;
use common::{EVENT_DEADLINE, Env};
use leasehold_testkit::v2server::V2Server;

/// Lease lifetime for the proxy: renewal at ~60% ± 10% leaves over two seconds for a
/// failover of one second.
const PROXY_TTL: &str = "6s";
/// Renewals the proxy must make (each on a fresh channel: see `--idle-timeout`).
const RENEWALS: f64 = 4.0;

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_replica_costs_the_cli_a_second_and_the_proxy_no_503() {
    let v2 = V2Server::start_default().await.unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    let mut env = Env::new();
    let live_addr = format!("127.0.0.1:{}", env.control_port);
    let advertise = format!("{dead_addr},{live_addr}");
    let init = env.json(&[
        "control",
        "init",
        "--listen",
        &live_addr,
        "--advertise",
        &advertise,
    ]);
    assert_eq!(
        init["advertise"],
        serde_json::json!([dead_addr, live_addr]),
        "{init}"
    );
    // Idle channels closed after a second: every proxy renewal opens a new channel, so
    // each one starts over at a random address.
    let _control = env.serve_with("info", &["--idle-timeout", "1s"]);

    // The ticket carries both addresses; enrollment itself fails over.
    let ticket = env.ticket(&[], &[]);
    let line = std::fs::read_to_string(&ticket).unwrap();
    assert!(
        line.trim().ends_with(&format!("@{dead_addr},{live_addr}")),
        "{line}"
    );
    env.ok(&["identity", "create", "app"]);
    env.ok(&["enroll", ticket.to_str().unwrap(), "--identity", "app"]);

    // "Unavailable" is worth a try on the other replica; when that one is dead too, the
    // control's own refusal is what the user reads.
    let (code, stderr) = env.fails(&["lease", "create", "--identity", "app"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("no InfluxDB add-on"), "{stderr}");
    env.configure_v2(&v2, &[]);

    // Several creates, so that both starting points are taken (each is a coin toss).
    for attempt in 1..=4 {
        let started = Instant::now();
        let lease = env.json(&["lease", "create", "--identity", "app", "--ttl", "60s"]);
        assert_eq!(lease["status"], "active", "{lease}");
        // Recorded, not asserted: the machine may be loaded.
        println!(
            "lease create {attempt} with one of two control addresses dead: {:?}",
            started.elapsed()
        );
    }

    let proxy = env.proxy("app", &["--ttl", PROXY_TTL]);
    eventually(EVENT_DEADLINE, "the proxy's first lease", async || {
        proxy.admin_status("/readyz").await == 200
    })
    .await;
    let write = format!(
        "{}/api/v2/write?org={}&bucket=telemetry&precision=s",
        proxy.url(),
        v2.org_name()
    );
    let client = reqwest::Client::new();
    let renewals = || async {
        let text = reqwest::get(proxy.admin_url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("leasehold_proxy_lease_renewals_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let first = renewals().await;
    let started = Instant::now();
    let mut writes = 0;
    // Writes all along, through every renewal: each must be accepted.
    while renewals().await < first + RENEWALS {
        assert!(
            started.elapsed() < EVENT_DEADLINE,
            "the proxy renewed {} times in {EVENT_DEADLINE:?}:\n{}",
            renewals().await - first,
            proxy.log()
        );
        let status = client
            .post(&write)
            .body(format!("cpu,host=a usage={writes} 1700000000\n"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 204, "write {writes} refused:\n{}", proxy.log());
        writes += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "the proxy renewed {RENEWALS} times in {:?} with one control address dead; {writes} writes, all 204",
        started.elapsed()
    );
    drop(dead);
}

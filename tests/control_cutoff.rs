//! A replica cut off from PostgreSQL but not from its clients: it reports not-ready,
//! refuses `lease create` with "store unavailable" without creating any InfluxDB
//! credential, and its clients fail over to the replica that still reaches the store.
//! Once the link is back, it is ready and issues again.
//!
//! The layout, made by the test with `ip netns` (root and iproute2 required; the test
//! fails without them):
//!
//! ```text
//!   this host                                   namespace
//!   CLI, proxy ── client link (veth) ─────────── replica A
//!   InfluxDB (v2 test server) on that link's address   │
//!   PostgreSQL on loopback and ─ store link (veth) ────┘   ← cut: `ip link set down`
//!   replica B (loopback; PostgreSQL over loopback)
//! ```
//!
//! Taking the store link down on this side drops A's packets to PostgreSQL without a
//! word (no reset, no ICMP, no failed address resolution): the hardest cut to notice,
//! which only the store connection's own timeouts (TCP user timeout and keepalives for
//! established connections, the connect timeout for new ones) tell A of. With the
//! system's TCP defaults instead, A's `lease create` waited out the client's 30 s.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::netns::Netns;
use common::replicas::{copy_dir, readyz, start_replica};
use common::setup::eventually;
use common::{EVENT_DEADLINE, Env, ProxyProcess, reserve_port};
use leasehold_control::backend::parse_lease_description;
use leasehold_testkit::postgres::Postgres;
use leasehold_testkit::v2server::{V2Options, V2Server};

/// The proxy's lease: it renews between 54% and 67% of it, so at least a third (five
/// seconds) is left for a renewal that starts at the cut-off replica, waits for its
/// refusal (its store timeouts: three seconds) and moves on to the other one.
const PROXY_TTL: &str = "15s";
/// Renewals the proxy must make while A is cut off: every one of them on B.
const RENEWALS_DURING_CUT: f64 = 2.0;
/// At most this many `lease create`s from the CLI holding both addresses while A is
/// cut off, waiting for one that starts at A (each starts at a random replica: the
/// chance that none does is 2^-30).
const CLI_CREATES_MAX: usize = 30;

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_cut_off_from_postgres_refuses_to_issue_and_clients_fail_over() {
    // Declared first, dropped last: every process in the namespace is gone by then.
    let mut ns = Netns::new();
    let store_link = ns.add_link();
    let store_ip: IpAddr = store_link.host_ip.parse().unwrap();
    let pg = tokio::task::spawn_blocking(move || Postgres::start_also_on(&[store_ip]))
        .await
        .unwrap()
        .expect("PostgreSQL (Debian package postgresql) is required: scripts/test.sh installs it");
    // On the client link's address: reached by A in the namespace and by B and the
    // proxy here, whatever happens to the store link.
    let v2 = V2Server::start_on(V2Options::random(), ns.host_ip.parse().unwrap())
        .await
        .unwrap();

    let mut env = Env::new();
    env.set_env("LEASEHOLD_STORE_URL", &pg.url());
    let a = format!("{}:{}", ns.inside_ip, env.control_port);
    let b = format!("127.0.0.1:{}", reserve_port());
    env.ok(&[
        "control",
        "init",
        "--listen",
        &b,
        "--advertise",
        &format!("{a},{b}"),
    ]);
    let data_b = env.dir.path().join("replica-b");
    copy_dir(&env.data_dir(), &data_b);
    let mut command_a = ns.command(&env, &["control", "serve", "--idle-timeout", "1s"]);
    command_a
        .env("LEASEHOLD_STORE_URL", pg.url_via(store_ip))
        .env(
            "LEASEHOLD_CONTROL_ADMIN_LISTEN",
            format!("{}:0", ns.inside_ip),
        );
    let (replica_a, admin_a) = start_replica(&env, command_a, &env.data_dir(), &a);
    let command_b = env.command(&["control", "serve", "--idle-timeout", "1s"]);
    let (replica_b, admin_b) = start_replica(&env, command_b, &data_b, &b);
    let logs = || {
        format!(
            "--- A ---\n{}\n--- B ---\n{}",
            replica_a.log(),
            replica_b.log()
        )
    };
    env.configure_v2(&v2, &[]);
    for admin in [admin_a, admin_b] {
        eventually(EVENT_DEADLINE, "both replicas ready", async || {
            readyz(admin).await == 200
        })
        .await;
    }

    // `app` holds both addresses; `app-on-a` is the same member with A's alone.
    env.enrolled_identity("app", &[]);
    only_at(&env, "app", "app-on-a", &a);
    let lease = env.json(&["lease", "create", "--identity", "app-on-a", "--ttl", "1m"]);
    assert_eq!(
        lease["status"], "active",
        "A issues before the cut: {lease}"
    );

    let proxy = env.proxy("app", &["--ttl", PROXY_TTL]);
    proxy.wait_ready().await;
    let writer = Writer::start(&proxy, &v2);

    // The cut.
    ns.set_link(&store_link, false);
    let cut_at = Instant::now();
    eventually(EVENT_DEADLINE, "A to report not-ready", async || {
        readyz(admin_a).await == 503
    })
    .await;
    println!("A not-ready {:?} after the cut", cut_at.elapsed());
    let renewals_at_cut = renewals(&proxy).await;

    // A alone: refused, clearly, and nothing created in InfluxDB (every credential
    // there belongs to a lease the store records: checked once the link is back).
    let started = Instant::now();
    let (code, stderr) = env.fails(&["lease", "create", "--identity", "app-on-a"]);
    println!("lease create on A alone refused in {:?}", started.elapsed());
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("store unavailable"), "{stderr}\n{}", logs());
    let credentials_during_cut = credential_leases(&v2);
    // Counted as a refusal for want of the store, for the operator's dashboards.
    let metrics = reqwest::get(format!("http://{admin_a}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(|l| l
            .strip_prefix(r#"leasehold_control_leases_refused_total{reason="store"} "#)
            .and_then(|n| n.parse::<f64>().ok())
            .is_some_and(|n| n >= 1.0)),
        "{metrics}"
    );

    // The CLI with both addresses: a lease every time, from B; until one of them has
    // started at A (a coin toss each) and been sent on by A's refusal.
    let mut moved_on = false;
    for attempt in 1..=CLI_CREATES_MAX {
        let started = Instant::now();
        let out = env
            .command(&["--output", "json", "lease", "create", "--identity", "app"])
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "lease create {attempt}: {stderr}");
        let lease: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(lease["status"], "active", "{lease}");
        let from_a = stderr.contains("cannot serve; trying another");
        println!(
            "lease create {attempt} with A cut off: {:?}{}",
            started.elapsed(),
            if from_a { " (refused by A first)" } else { "" }
        );
        if from_a {
            moved_on = true;
            break;
        }
    }
    assert!(
        moved_on,
        "no lease create started at A in {CLI_CREATES_MAX} attempts"
    );
    // The proxy renews on B, writing all along.
    eventually(EVENT_DEADLINE, "the proxy to renew on B", async || {
        renewals(&proxy).await >= renewals_at_cut + RENEWALS_DURING_CUT
    })
    .await;
    assert_eq!(
        readyz(admin_a).await,
        503,
        "A stays not-ready while cut off:\n{}",
        logs()
    );
    println!("A cut off for {:?}", cut_at.elapsed());

    // The link back: A ready again, and issuing.
    ns.set_link(&store_link, true);
    let restored_at = Instant::now();
    eventually(EVENT_DEADLINE, "A to be ready again", async || {
        readyz(admin_a).await == 200
    })
    .await;
    println!(
        "A ready {:?} after the link came back",
        restored_at.elapsed()
    );
    let lease = env.json(&["lease", "create", "--identity", "app-on-a", "--ttl", "1m"]);
    assert_eq!(lease["status"], "active", "A issues again: {lease}");

    let (writes, refused) = writer.stop().await;
    assert!(
        refused.is_empty(),
        "writes refused through the proxy: {refused:?}\n{}\n{}",
        proxy.log(),
        logs()
    );
    assert!(writes > 0);
    assert_eq!(v2.point_count("telemetry"), writes, "every write landed");
    println!("{writes} writes through the proxy, all 204");

    // No credential without its lease record: A created none it could not record.
    let recorded: BTreeSet<String> = env
        .json(&["lease", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_owned())
        .collect();
    let orphans: Vec<&String> = credentials_during_cut.difference(&recorded).collect();
    assert!(
        orphans.is_empty(),
        "credentials with no lease record: {orphans:?}\n{}",
        logs()
    );
}

/// Gives local identity `from`'s key to `to`, enrolled with the same control at
/// `addr` alone: a client that can reach only that replica.
fn only_at(env: &Env, from: &str, to: &str, addr: &str) {
    let home = env.home();
    std::fs::copy(
        home.join(format!("identities/{from}.key")),
        home.join(format!("identities/{to}.key")),
    )
    .unwrap();
    let path = home.join(format!("enrollments/{from}.json"));
    let mut enrollment: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    enrollment["addrs"] = serde_json::json!([addr]);
    std::fs::write(
        home.join(format!("enrollments/{to}.json")),
        enrollment.to_string(),
    )
    .unwrap();
}

/// The lease ids of the credentials InfluxDB holds (from their descriptions).
fn credential_leases(v2: &V2Server) -> BTreeSet<String> {
    v2.authorizations()
        .iter()
        .map(|auth| {
            parse_lease_description(&auth.description)
                .unwrap_or_else(|| panic!("not a lease's credential: {:?}", auth.description))
                .0
                .to_owned()
        })
        .collect()
}

/// The proxy's count of lease renewals.
async fn renewals(proxy: &ProxyProcess) -> f64 {
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
}

/// Writes through the proxy every 100 ms until stopped, keeping every answer that is
/// not 204.
struct Writer {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<(usize, u16)>)>,
}

impl Writer {
    fn start(proxy: &ProxyProcess, v2: &V2Server) -> Self {
        let url = format!(
            "{}/api/v2/write?org={}&bucket=telemetry&precision=s",
            proxy.url(),
            v2.org_name()
        );
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut writes, mut refused) = (0, Vec::new());
            while !stopping.load(Ordering::Relaxed) {
                let status = client
                    .post(&url)
                    .body(format!(
                        "cpu,host=a usage={writes} {}\n",
                        1_700_000_000 + writes
                    ))
                    .send()
                    .await
                    .map_or(0, |r| r.status().as_u16());
                if status != 204 {
                    refused.push((writes, status));
                }
                writes += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (writes, refused)
        });
        Self { stop, task }
    }

    /// Stops writing; returns how many writes were sent and those not answered 204.
    async fn stop(self) -> (usize, Vec<(usize, u16)>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

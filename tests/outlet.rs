//! The data path over the secure channel: `leasehold proxy --outlet` → Noise channel →
//! `leasehold outlet` → a private InfluxDB, with real processes.
//!
//! The two-host test puts the sidecar in its own network namespace (the "device"),
//! joined to this host (the "database": InfluxDB on loopback, the outlet on the veth
//! address, the control) by one veth pair, made and removed by the test. It needs root
//! and `ip` (iproute2), and fails loudly without them.

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::netns::Netns;
use common::python::official_v2_client_writes;
use common::setup::start_influxd;
use common::{EVENT_DEADLINE, Env, Process, STARTUP_DEADLINE, path_str, unique_name};
use leasehold_testkit::influxd::Influxd;

/// A running `leasehold outlet` and its identity.
struct Outlet {
    process: Process,
    addr: SocketAddr,
    admin: SocketAddr,
    id: String,
}

/// Enrolls `name` with `role=outlet` (if not yet) and starts it on `listen`, relaying to
/// `upstream`, admitting `allow`.
fn start_outlet(env: &Env, name: &str, listen: &str, upstream: &str, allow: &[&str]) -> Outlet {
    if env.run(&["identity", "show", name]).status.code() != Some(0) {
        env.enrolled_identity(name, &["role=outlet"]);
    }
    let id = env.json(&["identity", "show", name])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ready = env.home().join(unique_name("outlet.ready"));
    let mut args = vec![
        "outlet",
        "--identity",
        name,
        "--listen",
        listen,
        "--upstream",
        upstream,
        "--admin-listen",
        "127.0.0.1:0",
        "--shutdown-grace",
        "2s",
        "--ready-file",
        path_str(&ready),
    ];
    for a in allow {
        args.extend_from_slice(&["--allow", a]);
    }
    let log = env.home().join(unique_name("outlet.log"));
    let mut process = Process::spawn_logged(env.command(&args).env("RUST_LOG", "debug"), log);
    let addrs: BTreeMap<String, SocketAddr> = process.wait_ready_file(&ready, "the outlet");
    Outlet {
        process,
        addr: addrs["listen"],
        admin: addrs["admin"],
        id,
    }
}

/// A proxy process with the addresses it bound.
struct Sidecar {
    process: Process,
    listen: SocketAddr,
    admin: SocketAddr,
}

impl Sidecar {
    fn url(&self) -> String {
        format!("http://{}", self.listen)
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + STARTUP_DEADLINE;
        let client = client();
        loop {
            let url = format!("http://{}/readyz", self.admin);
            if let Ok(r) = client.get(&url).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "proxy not ready:\n{}",
                self.process.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Starts `leasehold proxy --outlet` for `identity` listening on `ip`, from `command`
/// (already holding `proxy --identity ...`).
fn start_sidecar(env: &Env, mut command: Command, ip: &str, outlet: &Outlet, ttl: &str) -> Sidecar {
    let ready = env.home().join(unique_name("proxy.ready"));
    let listen = format!("{ip}:0");
    let outlet_addr = outlet.addr.to_string();
    command.args([
        "--ttl",
        ttl,
        "--outlet",
        &outlet_addr,
        "--outlet-identity",
        &outlet.id,
        "--listen",
        &listen,
        "--admin-listen",
        &listen,
        "--ready-file",
        path_str(&ready),
    ]);
    command.env("RUST_LOG", "debug");
    let log = env.home().join(unique_name("proxy.log"));
    let mut process = Process::spawn_logged(&mut command, log);
    let addrs = process.wait_ready_file(&ready, "the proxy");
    Sidecar {
        process,
        listen: addrs["listen"],
        admin: addrs["admin"],
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(EVENT_DEADLINE)
        .build()
        .unwrap()
}

async fn write(client: &reqwest::Client, base: &str, line: String) -> u16 {
    match client
        .post(format!("{base}/write?db=telemetry"))
        .body(line)
        .send()
        .await
    {
        Ok(response) => response.status().as_u16(),
        Err(_) => 0,
    }
}

/// About 1 MiB of gzip (at least), `lines` points of measurement `big`.
fn gzip_batch(lines: u64) -> Vec<u8> {
    let mut text = String::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..lines {
        // xorshift: values that do not compress away.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!(
            "big,host=h{} v={}i,s=\"{:016x}{:016x}\" {}\n",
            i % 50,
            x >> 1,
            x,
            x.rotate_left(17),
            1_600_000_000_000_000_000u64 + i
        ));
    }
    let mut child = Command::new("gzip")
        .arg("-6")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip is required");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(text.as_bytes()).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// `leasehold health --url URL` run inside `ns`: whether it got an answer.
fn reachable_from(ns: &Netns, env: &Env, url: &str) -> bool {
    ns.command(env, &["health", "--url", url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// `control init` listening on every address (loopback for this host's tools, the veth
/// address for the device) and advertising both.
fn init_control_for(env: &Env, host_ip: &str) {
    let port = env.control_port;
    env.ok(&[
        "control",
        "init",
        "--listen",
        &format!("0.0.0.0:{port}"),
        "--advertise",
        &format!("127.0.0.1:{port}"),
        "--advertise",
        &format!("{host_ip}:{port}"),
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_writes_land_only_through_the_outlet() {
    let ns = Netns::new();
    let db = Influxd::start()
        .await
        .expect("a real influxd (Debian package influxdb) is required");
    let mut env = Env::new();
    init_control_for(&env, &ns.host_ip);
    let _control = env.serve();
    env.configure_v1(&db, &[r#"WRITE ON "telemetry""#, r#"READ ON "telemetry""#]);
    let outlet = start_outlet(
        &env,
        "outlet",
        &format!("{}:0", ns.host_ip),
        db.url(),
        &["site=field"],
    );
    env.enrolled_identity("device", &["site=field"]);

    // The device reaches neither InfluxDB's port on this host nor a loopback copy.
    let influx_port = db.http_addr().port();
    assert!(
        !reachable_from(&ns, &env, &format!("http://127.0.0.1:{influx_port}/ping"))
            && !reachable_from(
                &ns,
                &env,
                &format!("http://{}:{influx_port}/ping", ns.host_ip)
            ),
        "the device must not reach influxd directly"
    );
    // ...while the same probe from this host does: the check can fail.
    assert!(
        env.command(&["health", "--url", &format!("{}/ping", db.url())])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success()
    );

    let proxy = ns.command(&env, &["proxy", "--identity", "device"]);
    let sidecar = start_sidecar(&env, proxy, &ns.inside_ip, &outlet, "30s");
    sidecar.wait_ready().await;
    let client = client();
    for i in 0..3 {
        let status = write(&client, &sidecar.url(), format!("small,i={i} v=1\n")).await;
        assert_eq!(status, 204, "{}", sidecar.process.log());
    }
    assert_eq!(db.count("telemetry", "small").await.unwrap(), 3);

    // A gzip batch of over 1 MiB on the wire.
    let lines = 40_000;
    let batch = gzip_batch(lines);
    assert!(batch.len() >= 1 << 20, "batch is {} bytes", batch.len());
    let response = client
        .post(format!("{}/write?db=telemetry&precision=n", sidecar.url()))
        .header("Content-Encoding", "gzip")
        .body(batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204, "{}", response.text().await.unwrap());
    assert_eq!(db.count("telemetry", "big").await.unwrap(), lines);

    let metrics = client
        .get(format!("http://{}/metrics", outlet.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("leasehold_outlet_channels_admitted_total"),
        "{metrics}"
    );
    drop(sidecar);
    drop(outlet);
    drop(ns);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_member_is_cut_off_others_continue() {
    let db = start_influxd().await;
    let mut env = Env::new();
    let _control = env.serve_v1(&db, &[r#"WRITE ON "telemetry""#]);
    let outlet = start_outlet(&env, "outlet", "127.0.0.1:0", db.url(), &[]);
    env.enrolled_identity("kept", &[]);
    env.enrolled_identity("gone", &[]);
    let kept = start_sidecar(
        &env,
        env.command(&["proxy", "--identity", "kept"]),
        "127.0.0.1",
        &outlet,
        "5s",
    );
    let gone = start_sidecar(
        &env,
        env.command(&["proxy", "--identity", "gone"]),
        "127.0.0.1",
        &outlet,
        "5s",
    );
    kept.wait_ready().await;
    gone.wait_ready().await;
    let client = client();
    assert_eq!(
        write(&client, &gone.url(), "m,who=gone v=1\n".into()).await,
        204
    );
    let gone_id = env.json(&["identity", "show", "gone"])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    env.ok(&["member", "delete", &gone_id]);

    // Writes by the deleted member stop once its last credential lapses (a few
    // seconds: 5 s leases); the other member's go on throughout.
    let deadline = Instant::now() + EVENT_DEADLINE;
    let mut seq = 0u64;
    loop {
        seq += 1;
        let kept_status = write(&client, &kept.url(), format!("m,who=kept v={seq} {seq}\n")).await;
        assert_eq!(kept_status, 204, "{}", kept.process.log());
        let gone_status = write(&client, &gone.url(), format!("m,who=gone v={seq} {seq}\n")).await;
        if gone_status != 204 {
            assert!(
                gone_status == 503 || gone_status == 502 || gone_status == 401,
                "unexpected {gone_status}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the deleted member still writes:\n{}",
            outlet.process.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It stays cut off, and the kept member still writes.
    for i in 0..5u64 {
        assert_ne!(
            write(&client, &gone.url(), format!("m,who=gone v={i}\n")).await,
            204
        );
        assert_eq!(
            write(&client, &kept.url(), format!("m,who=kept2 v={i}\n")).await,
            204
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_answers_while_the_outlet_restarts_and_recovers_by_itself() {
    let db = start_influxd().await;
    let mut env = Env::new();
    let _control = env.serve_v1(&db, &[r#"WRITE ON "telemetry""#]);
    // A fixed port, so the restarted outlet is where the proxy looks.
    let port = common::reserve_port();
    let listen = format!("127.0.0.1:{port}");
    let outlet = start_outlet(&env, "outlet", &listen, db.url(), &[]);
    env.enrolled_identity("app", &[]);
    let sidecar = start_sidecar(
        &env,
        env.command(&["proxy", "--identity", "app"]),
        "127.0.0.1",
        &outlet,
        "30s",
    );
    sidecar.wait_ready().await;
    let url = Arc::new(sidecar.url());
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..3u64)
        .map(|w| {
            let (url, ok, failed, stop) = (url.clone(), ok.clone(), failed.clone(), stop.clone());
            tokio::spawn(async move {
                let client = client();
                let mut seq = 0u64;
                let mut odd = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    seq += 1;
                    match write(&client, &url, format!("load,w={w} v={seq}i\n")).await {
                        204 => ok.fetch_add(1, Ordering::Relaxed),
                        502 | 503 => failed.fetch_add(1, Ordering::Relaxed),
                        other => {
                            odd.push(other);
                            0
                        }
                    };
                }
                odd
            })
        })
        .collect();
    let wait_for = |counter: Arc<AtomicU64>, what: &'static str| async move {
        let start = counter.load(Ordering::Relaxed);
        let deadline = Instant::now() + EVENT_DEADLINE;
        while counter.load(Ordering::Relaxed) < start + 5 {
            assert!(Instant::now() < deadline, "no {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    wait_for(ok.clone(), "writes before the restart").await;
    outlet.process.kill9();
    wait_for(failed.clone(), "502/503 while the outlet is down").await;
    let outlet = start_outlet(&env, "outlet", &listen, db.url(), &[]);
    wait_for(ok.clone(), "writes after the restart").await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        let odd = writer.await.unwrap();
        assert!(odd.is_empty(), "answers other than 204/502/503: {odd:?}");
    }
    drop(outlet);
}

#[tokio::test(flavor = "multi_thread")]
async fn official_v2_python_client_writes_through_the_outlet() {
    let v2 = leasehold_testkit::v2server::V2Server::start_default()
        .await
        .unwrap();
    let mut env = Env::new();
    env.init_control();
    let _control = env.serve();
    env.configure_v2(&v2, &[]);
    let outlet = start_outlet(&env, "outlet", "127.0.0.1:0", &v2.url(), &[]);
    env.enrolled_identity("app", &[]);
    let sidecar = start_sidecar(
        &env,
        env.command(&["proxy", "--identity", "app"]),
        "127.0.0.1",
        &outlet,
        "30s",
    );
    sidecar.wait_ready().await;
    official_v2_client_writes(&v2, sidecar.url()).await;
    drop(outlet);
}

/// The value of an outlet counter in its `/metrics`.
async fn outlet_counter(outlet: &Outlet, name: &str) -> u64 {
    let text = client()
        .get(format!("http://{}/metrics", outlet.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn open_channels_outlive_their_first_credential_while_leases_renew() {
    let db = start_influxd().await;
    let mut env = Env::new();
    let _control = env.serve_v1(&db, &[r#"WRITE ON "telemetry""#]);
    let outlet = start_outlet(&env, "outlet", "127.0.0.1:0", db.url(), &[]);
    env.enrolled_identity("app", &[]);
    // 5 s leases, renewed at ~60%: the keep-alive channels below outlive several.
    let sidecar = start_sidecar(
        &env,
        env.command(&["proxy", "--identity", "app"]),
        "127.0.0.1",
        &outlet,
        "5s",
    );
    sidecar.wait_ready().await;
    let client = client();
    let mut sent = 0u64;
    let mut failures = Vec::new();
    // Until two renewals have reached the outlet on open channels.
    let deadline = Instant::now() + EVENT_DEADLINE;
    while outlet_counter(&outlet, "leasehold_outlet_renewals_total").await < 2 {
        assert!(
            Instant::now() < deadline,
            "no renewals:\n{}",
            outlet.process.log()
        );
        sent += 1;
        match write(
            &client,
            &sidecar.url(),
            format!("renewing v={sent} {sent}\n"),
        )
        .await
        {
            204 => {}
            other => failures.push(other),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(failures.is_empty(), "non-204 answers: {failures:?}");
    assert_eq!(
        db.count("telemetry", "renewing").await.unwrap(),
        sent,
        "every 204 is a point"
    );
    assert_eq!(
        outlet_counter(&outlet, "leasehold_outlet_channels_expired_total").await,
        0,
        "no channel in use lapsed"
    );
}

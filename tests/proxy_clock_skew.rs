//! A sidecar whose wall clock is wrong still holds leases: real `leasehold proxy`
//! processes under Debian's `faketime` (wall clock 10 minutes ahead or behind, the
//! monotonic clock left alone), a real control and a real InfluxDB 1.x.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::setup::start_influxd;
use common::{Env, bin, free_port};

/// Lease lifetime the proxies ask for: short, so several renewals fit in the test.
const TTL_SECS: u64 = 10;
/// Leases each proxy must have obtained before the test is satisfied (two renewals).
const LEASES: usize = 3;

/// A `leasehold proxy` under `faketime`; killed when dropped.
struct SkewedProxy {
    child: Child,
    log: std::path::PathBuf,
    port: u16,
    admin_port: u16,
}

impl SkewedProxy {
    fn start(env: &Env, identity: &str, offset: &str) -> Self {
        let faketime = Path::new("/usr/bin/faketime");
        assert!(
            faketime.exists(),
            "Debian's faketime is required (apt-get install -y faketime; scripts/test.sh installs it)"
        );
        let (port, admin_port) = (free_port(), free_port());
        let log = env.home().join(format!("proxy-{identity}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let ttl = format!("{TTL_SECS}s");
        let child = Command::new(faketime)
            .args([
                "-f",
                offset,
                bin(),
                "proxy",
                "--identity",
                identity,
                "--ttl",
                &ttl,
            ])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
            .env("LEASEHOLD_HOME", env.home())
            // Only the wall clock is wrong, as on a device that booted with a bad one.
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("RUST_LOG", "info")
            .env("LEASEHOLD_LOG_FORMAT", "json")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Self {
            child,
            log,
            port,
            admin_port,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_ready(&self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.admin_port);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = reqwest::get(&url).await
                && response.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "proxy never became ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SkewedProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The control's leases for `member`, oldest first: `created_at` (control clock, s).
fn leases_of(env: &Env, member: &str) -> Vec<u64> {
    let list = env.json(&["lease", "list"]);
    let mut created: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|lease| lease["issued_for"] == member)
        .map(|lease| {
            common::time(&lease["created_at"])
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        })
        .collect();
    created.sort_unstable();
    created
}

/// The JSON log lines whose message is `message` (fields sit beside it).
fn log_events(log: &str, message: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["message"] == message)
        .collect()
}

/// A duration field logged in seconds (`lifetime_secs=9.5`).
fn secs(value: &serde_json::Value) -> f64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("a duration in seconds: {value}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wall_clock_ten_minutes_off_either_way_still_holds_leases() {
    let db = start_influxd().await;
    let mut env = Env::new();
    let _control = env.serve_v1(&db, &[r#"WRITE ON "telemetry""#]);
    let mut proxies = Vec::new();
    for (name, offset) in [("ahead", "+10m"), ("behind", "-10m")] {
        env.enrolled_identity(name, &[]);
        let id = env.json(&["identity", "show", name])["id"]
            .as_str()
            .unwrap()
            .to_owned();
        proxies.push((name, id, SkewedProxy::start(&env, name, offset)));
    }
    for (_, _, proxy) in &proxies {
        proxy.wait_ready().await;
    }

    // Write through both until each has renewed twice: every write lands.
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut writes = 0;
    loop {
        for (name, _, proxy) in &proxies {
            let response = client
                .post(format!(
                    "http://127.0.0.1:{}/write?db=telemetry",
                    proxy.port
                ))
                .body(format!("skew,proxy={name} v=1 {}\n", writes + 1))
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                204,
                "write {writes} through the {name} proxy:\n{}",
                proxy.log()
            );
        }
        writes += 1;
        let renewed = proxies
            .iter()
            .all(|(_, _, proxy)| log_events(&proxy.log(), "lease installed").len() >= LEASES);
        if renewed {
            break;
        }
        assert!(Instant::now() < deadline, "no renewals in time");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(writes > 1);
    assert_eq!(db.count("telemetry", "skew").await.unwrap(), 2 * writes);

    for (name, id, proxy) in &proxies {
        // The control's view first, then the log: the log may only have more.
        let created = leases_of(&env, id);
        let log = proxy.log();
        // Renewed at about 60% of the lifetime (54-66%), the lifetime being what the
        // control stated, counted on the monotonic clock despite the wall clock.
        let installed = log_events(&log, "lease installed");
        assert!(installed.len() >= LEASES, "{name}:\n{log}");
        let mut shortest = f64::MAX;
        for fields in &installed {
            let (lifetime, renew_after) = (
                secs(&fields["lifetime_secs"]),
                secs(&fields["renew_after_secs"]),
            );
            assert!(
                lifetime <= TTL_SECS as f64 && lifetime > TTL_SECS as f64 / 2.0,
                "{name}: {fields}"
            );
            let share = renew_after / lifetime;
            assert!((0.539..=0.661).contains(&share), "{name}: {fields}");
            shortest = shortest.min(lifetime);
        }
        // Every lease the control issued was used (none wasted as "expired on
        // arrival"), and none was asked for sooner than the schedule allows: 54% of the
        // shortest lifetime, less a second for the control's whole-second timestamps.
        assert!(
            created.len() <= installed.len() + 1,
            "{name}: {created:?}\n{log}"
        );
        let least_gap = (shortest * 0.54).floor() as u64 - 1;
        for pair in created.windows(2) {
            assert!(
                pair[1] - pair[0] >= least_gap,
                "{name}: leases created at {created:?}\n{log}"
            );
        }
        assert!(!log.contains("before it could be used"), "{name}:\n{log}");
        // The skew is measured and reported.
        let warnings = log_events(
            &log,
            "this host's clock differs from the control's (positive: ours is ahead); leases are timed on the monotonic clock and stay valid, but fix the clock (NTP) for readable logs and timestamps",
        );
        let skew_ms = warnings
            .first()
            .and_then(|fields| fields["skew_ms"].as_i64())
            .unwrap_or_else(|| panic!("{name}: no clock warning\n{log}"));
        let expected = if *name == "ahead" { 600_000 } else { -600_000 };
        assert!((skew_ms - expected).abs() < 30_000, "{name}: {skew_ms}");
    }
}

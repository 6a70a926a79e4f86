//! The scripts a newcomer runs, for real:
//! - the README's "run" command, `scripts/demo.sh`, end to end: a real InfluxDB 1.x, the
//!   control, the proxy, and writes without credentials through it while leases rotate.
//!   The demo is given the binary under test (`LEASEHOLD_BIN`, so it does not build in
//!   release mode) and short leases, and must stop by itself. The proxy binds port 0
//!   and the demo reads the ports it got from its ready file; the control's and
//!   InfluxDB's ports are written into configuration first, so they come from
//!   [`common::reserve_port`], outside the range any `bind(0)` draws from.
//!   `influxd` is required (`scripts/test.sh` installs it): without it this test fails.
//! - `examples/walkthrough.sh` (DESIGN.md's walk-through) against the InfluxDB v2 test
//!   server.

mod common;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use leasehold_testkit::v2server::V2Server;

/// How long the demo writes.
const DURATION_SECS: u64 = 25;
/// Lease lifetime: renewals at ~60% give several rotations within `DURATION_SECS`.
const LEASE_TTL_SECS: u64 = 5;
/// Set-up and tear-down on top of the writing time, generously.
const SLACK: Duration = Duration::from_secs(90);

fn script(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `n` distinct loopback ports for listeners whose address is configured before they
/// bind: see [`common::reserve_port`].
fn reserved_ports(n: usize) -> Vec<u16> {
    (0..n).map(|_| common::reserve_port()).collect()
}

/// Runs the demo with `env`; see [`run_script`].
fn run_demo(env: &[(&str, String)], timeout: Duration) -> (Option<i32>, String) {
    run_script("scripts/demo.sh", env, timeout)
}

/// Runs the bash script at `path` (relative to the repository) with `env`; returns (exit
/// code, stdout and stderr together). The script is sent SIGTERM (the scripts clean up
/// on it) if it overruns `timeout`. Output goes to a file, not a pipe: a process the
/// script failed to stop must not keep the test waiting for end-of-file.
fn run_script(path: &str, env: &[(&str, String)], timeout: Duration) -> (Option<i32>, String) {
    let log = tempfile::NamedTempFile::new().unwrap();
    // One open file description for both, so that lines interleave in order.
    let out = log.reopen().unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(script(path))
        .env_remove("RUST_LOG")
        .env_remove("LEASEHOLD_HOME")
        // The scripts run side by side: each control's admin listener on a port of its own.
        .env("LEASEHOLD_CONTROL_ADMIN_LISTEN", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("running bash {path}: {e}"));
    let read_log = || std::fs::read_to_string(log.path()).unwrap();
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let status = child.wait().unwrap();
            panic!(
                "{path} overran {timeout:?} ({status}); its output:\n{}",
                read_log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = read_log();
    // Shown by the harness when the test fails (or with --nocapture).
    println!("--- {path} ---\n{output}");
    (status.code(), output)
}

/// The numbers of the demo's last line:
/// `summary: writes_sent=N writes_204=N points_in_influxdb=N lease_rotations=N result=ok`.
#[derive(Debug)]
struct Summary {
    sent: u64,
    ok: u64,
    points: u64,
    rotations: u64,
    result: String,
}

fn summary(output: &str) -> Summary {
    let line = output
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("summary: "))
        .unwrap_or_else(|| panic!("no summary line in the demo's output:\n{output}"));
    let field = |name: &str| -> &str {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {name}= in the summary {line:?}"))
    };
    let number = |name: &str| -> u64 {
        field(name)
            .parse()
            .unwrap_or_else(|e| panic!("{name} in {line:?}: {e}"))
    };
    Summary {
        sent: number("writes_sent"),
        ok: number("writes_204"),
        points: number("points_in_influxdb"),
        rotations: number("lease_rotations"),
        result: field("result").to_owned(),
    }
}

/// Lease ids the demo printed as active in its progress lines.
fn active_leases(output: &str) -> BTreeSet<String> {
    output
        .lines()
        .filter_map(|l| l.split(" active ").nth(1))
        .flat_map(|rest| {
            let rest = rest.split('|').next().unwrap_or_default();
            rest.split_whitespace()
                .filter(|w| w.len() == 16 && w.chars().all(|c| c.is_ascii_hexdigit()))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn require_influxd() {
    let installed = Command::new("influxd")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        installed,
        "influxd is not installed: the demo test needs InfluxDB 1.x \
         (`apt-get install influxdb`, or run ./scripts/test.sh which installs it)"
    );
}

#[test]
fn demo_rotates_leases_and_every_write_lands() {
    require_influxd();
    let ports = reserved_ports(3);
    let env = [
        ("LEASEHOLD_BIN", env!("CARGO_BIN_EXE_leasehold").to_owned()),
        ("DEMO_DURATION", DURATION_SECS.to_string()),
        ("DEMO_LEASE_TTL", LEASE_TTL_SECS.to_string()),
        ("DEMO_PROXY_PORT", "0".to_owned()),
        ("DEMO_ADMIN_PORT", "0".to_owned()),
        ("DEMO_CONTROL_PORT", ports[0].to_string()),
        ("DEMO_INFLUXDB_PORT", ports[1].to_string()),
        ("DEMO_INFLUXDB_RPC_PORT", ports[2].to_string()),
    ];
    let started = Instant::now();
    let (code, output) = run_demo(&env, Duration::from_secs(DURATION_SECS) + SLACK);
    assert_eq!(code, Some(0), "the demo failed; its output:\n{output}");
    assert!(
        started.elapsed() >= Duration::from_secs(DURATION_SECS),
        "DEMO_DURATION={DURATION_SECS} but the demo ended early:\n{output}"
    );

    let s = summary(&output);
    assert_eq!(s.result, "ok", "{s:?}\n{output}");
    // Five writes a second for DURATION_SECS, less whatever curl's latency eats.
    assert!(
        s.sent >= DURATION_SECS * 2,
        "too few writes: {s:?}\n{output}"
    );
    assert_eq!(s.ok, s.sent, "a write failed: {s:?}\n{output}");
    assert_eq!(s.points, s.ok, "InfluxDB lost points: {s:?}\n{output}");
    assert!(s.rotations >= 1, "no lease rotation: {s:?}\n{output}");
    let seen = active_leases(&output);
    assert!(
        seen.len() >= 2,
        "the progress lines should show the active lease changing, saw {seen:?}:\n{output}"
    );

    // Everything was torn down: the temporary home is gone and the configured ports are
    // free. (The proxy's came from `bind(0)`: another process may hold them by now.)
    let home = output
        .lines()
        .find_map(|l| l.split("LEASEHOLD_HOME=").nth(1))
        .map(|rest| rest.trim_end_matches(')').to_owned())
        .unwrap_or_else(|| panic!("the demo did not print its LEASEHOLD_HOME:\n{output}"));
    assert!(!Path::new(&home).exists(), "{home} was left behind");
    for port in &ports {
        TcpListener::bind(("127.0.0.1", *port))
            .unwrap_or_else(|e| panic!("port {port} is still held after the demo: {e}"));
    }
}

#[test]
fn demo_refuses_a_missing_binary() {
    require_influxd();
    let (code, output) = run_demo(
        &[("LEASEHOLD_BIN", "/nonexistent/leasehold".to_owned())],
        Duration::from_secs(30),
    );
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("LEASEHOLD_BIN=/nonexistent/leasehold is not an executable"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn walkthrough_runs_against_the_v2_test_server() {
    let v2 = V2Server::start_default().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ports = reserved_ports(3);
    let env = [
        ("LEASEHOLD_BIN", env!("CARGO_BIN_EXE_leasehold").to_owned()),
        ("INFLUXDB_ENDPOINT_URL", v2.url()),
        ("INFLUXDB_ADMIN_TOKEN", v2.admin_token().to_owned()),
        ("INFLUXDB_ORG_ID", v2.org_id().to_owned()),
        ("CONTROL_LISTEN", format!("127.0.0.1:{}", ports[0])),
        ("PROXY_LISTEN", format!("127.0.0.1:{}", ports[1])),
        ("PROXY_ADMIN_LISTEN", format!("127.0.0.1:{}", ports[2])),
        ("WALKTHROUGH_DIR", dir.path().display().to_string()),
        ("WALKTHROUGH_FOREGROUND", "0".to_owned()),
    ];
    // The v2 server runs on this runtime's workers while this thread waits.
    let (code, output) = run_script("examples/walkthrough.sh", &env, Duration::from_secs(60));
    assert_eq!(code, Some(0), "the walk-through failed:\n{output}");
    assert!(output.contains("HTTP 204"), "{output}");
    assert_eq!(v2.point_count("telemetry"), 1, "{output}");
    // The manual lease was revoked (its authorization deleted), and the proxy, stopped
    // before the control, gave its own lease back: nothing is left in InfluxDB.
    assert_eq!(v2.authorization_count(), 0, "{output}");
    // The admin token never reached the script's output.
    assert!(
        !output.contains(v2.admin_token()),
        "the admin token leaked:\n{output}"
    );
    for name in ["control-host", "client-host"] {
        assert!(dir.path().join(name).is_dir(), "no {name} home");
    }
}

//! The benchmark harness (`bench/run.sh`) in smoke mode: about a second per contender
//! and scenario, one round, with the debug `leasehold` binary — enough to prove that the
//! harness still runs end to end (sink, issuer, control, leasehold, nginx, HAProxy, wrk,
//! the open-loop generator, start-to-ready, a real influxd) and prints its table. The
//! figures themselves mean nothing here; BENCHMARKS.md has real ones.
//!
//! Needs the Debian packages `wrk nginx haproxy influxdb` (scripts/test.sh installs
//! them). A missing tool fails the test: the harness must not rot silently.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

/// The `sink` helper binary from the `bench/sink` workspace crate, built in the same
/// profile as this test. `cargo test --workspace` has built it already (its own
/// integration tests need it); when this test runs alone, or the binary is older than
/// its sources, it is built here.
fn sink_binary(root: &Path) -> PathBuf {
    let sink = Path::new(env!("CARGO_BIN_EXE_leasehold")).with_file_name("sink");
    if !is_fresh(&sink, &root.join("bench/sink")) {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "leasehold-bench-sink", "--bin", "sink"])
            .current_dir(root)
            .status()
            .expect("running cargo to build the sink");
        assert!(status.success(), "building bench/sink failed");
    }
    assert!(sink.exists(), "no sink binary at {}", sink.display());
    sink
}

/// Whether `binary` exists and is newer than every file under `sources`.
fn is_fresh(binary: &Path, sources: &Path) -> bool {
    let Ok(built) = binary.metadata().and_then(|m| m.modified()) else {
        return false;
    };
    built >= newest(sources)
}

/// The latest modification time of any file under `dir`.
fn newest(dir: &Path) -> SystemTime {
    let mut newest_seen = SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let time = if path.is_dir() {
            newest(&path)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH)
        };
        newest_seen = newest_seen.max(time);
    }
    newest_seen
}

#[test]
fn harness_runs_every_contender_and_prints_its_table() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sink = sink_binary(root);
    // `timeout` bounds a hung harness; its TERM trap still stops what it started.
    let out = Command::new("timeout")
        .args(["--signal=TERM", "150", "bash"])
        .arg(root.join("bench/run.sh"))
        .arg("--smoke")
        .env("LEASEHOLD_BIN", env!("CARGO_BIN_EXE_leasehold"))
        .env("SINK_BIN", &sink)
        .env("BENCH_SECONDS", "1")
        .env_remove("BENCH_ROUNDS")
        .env_remove("BENCH_OUT")
        .env_remove("BENCH_KEEP")
        .env_remove("RUST_LOG")
        .output()
        .expect("running bench/run.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench/run.sh --smoke failed ({}):\n{stderr}\n{stdout}",
        out.status
    );

    for heading in [
        "### (a) small writes",
        "### (b) 1 MiB gzip batches",
        "### (b') the same batches to an upstream reading",
        "### (c) open loop at 1000 requests/s",
        "### Through leasehold to a real InfluxDB 1.x",
        "### leasehold footprint and start-up",
        "### Lease issuance",
    ] {
        assert!(stdout.contains(heading), "no {heading:?} in:\n{stdout}");
    }
    // Every contender has a row with a positive request rate in (a) and (b).
    for section in ["### (a)", "### (b)", "### (b')"] {
        let table = stdout.split(section).nth(1).unwrap();
        let table = table.split("### ").next().unwrap();
        for contender in ["direct", "leasehold", "nginx", "haproxy"] {
            let row = table
                .lines()
                .find(|l| l.starts_with(&format!("| {contender} |")))
                .unwrap_or_else(|| panic!("no {contender} row in {section}:\n{table}"));
            let rps: f64 = row.split('|').nth(2).unwrap().trim().parse().unwrap();
            assert!(rps > 0.0, "{row}");
        }
    }
    for row in [
        "| influxdb-direct |",
        "| influxdb-leasehold |",
        "| leasehold |",
    ] {
        assert!(stdout.contains(row), "no {row:?} in:\n{stdout}");
    }
    let ready = stdout
        .lines()
        .find(|l| l.starts_with("| start to ready, median"))
        .unwrap_or_else(|| panic!("no start-to-ready row in:\n{stdout}"));
    let ms: f64 = ready.split('|').nth(2).unwrap().trim().parse().unwrap();
    assert!(ms > 0.0 && ms < 10_000.0, "{ready}");
}

//! A replicated control for the tests on a shared PostgreSQL: replicas of one control
//! (one identity key, copied into each replica's data directory) started on the
//! addresses `control init --advertise` gave, each reporting its admin listener.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use leasehold_control::failpoint;

use super::{Env, Process, path_str, unique_name};

/// Copies a data directory (identity key, settings, add-on) to another replica's: how
/// an operator provisions the identity key to each replica.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A replica serving `data` on `listen` (with `failpoint` armed, if any), ready once
/// it listens; with its admin address.
pub fn replica(
    env: &Env,
    data: &Path,
    listen: &str,
    failpoint: Option<&str>,
) -> (Process, SocketAddr) {
    let (mut process, ready) = spawn_replica(env, data, listen, failpoint);
    let addrs = process.wait_ready_file(&ready, "the replica to listen");
    (process, addrs["admin"])
}

/// [`replica`], started again as a service manager would (systemd's
/// `Restart=on-failure`) when it exits at start-up because PostgreSQL did not answer
/// in time, a few times at most: on a loaded machine a connection can take longer than
/// the replica's connect timeout. Any other exit fails the test.
pub fn replica_restarted_on_failure(env: &Env, data: &Path, listen: &str) -> (Process, SocketAddr) {
    const ATTEMPTS: usize = 3;
    for attempt in 1..=ATTEMPTS {
        let (mut process, ready) = spawn_replica(env, data, listen, None);
        match process.ready_file_or_exit(&ready, "the replica to listen") {
            Ok(addrs) => return (process, addrs["admin"]),
            Err(status)
                if attempt < ATTEMPTS && process.log().contains("PostgreSQL is unreachable") =>
            {
                eprintln!(
                    "replica exited at start-up ({status}), started again:\n{}",
                    process.log()
                );
            }
            Err(status) => panic!(
                "the replica exited at start-up ({status}):\n{}",
                process.log()
            ),
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// Spawns a replica; returns it and its ready file.
fn spawn_replica(
    env: &Env,
    data: &Path,
    listen: &str,
    failpoint: Option<&str>,
) -> (Process, std::path::PathBuf) {
    let mut command = env.command(&["control", "serve"]);
    if let Some(point) = failpoint {
        command.env(failpoint::ENV, point);
    }
    spawn_from(env, command, data, listen)
}

/// Starts a replica from `command` (`leasehold control serve` built by the caller, say
/// run in a network namespace) serving `data` on `listen`; waits until it listens and
/// returns it with its admin address.
pub fn start_replica(
    env: &Env,
    command: Command,
    data: &Path,
    listen: &str,
) -> (Process, SocketAddr) {
    let (mut process, ready) = spawn_from(env, command, data, listen);
    let addrs = process.wait_ready_file(&ready, "the replica to listen");
    (process, addrs["admin"])
}

/// Spawns `command` as a replica serving `data` on `listen`, logging to a file of its
/// own; returns it and its ready file.
fn spawn_from(
    env: &Env,
    mut command: Command,
    data: &Path,
    listen: &str,
) -> (Process, std::path::PathBuf) {
    let name = unique_name("replica");
    let ready = env.home().join(format!("{name}.ready"));
    command
        .args(["--data-dir", path_str(data), "--listen", listen])
        .args(["--ready-file", path_str(&ready)])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null());
    let process = Process::spawn_logged(&mut command, env.home().join(format!("{name}.log")));
    (process, ready)
}

/// The status of a replica's `/readyz` (0 when it does not answer).
pub async fn readyz(admin: SocketAddr) -> u16 {
    match reqwest::get(format!("http://{admin}/readyz")).await {
        Ok(answer) => answer.status().as_u16(),
        Err(_) => 0,
    }
}

//! Control replicas sharing one store (PostgreSQL): a second data directory with the
//! same identity key, `control serve` on an address of its own, and its readiness.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

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

/// Starts a replica from `command` (`leasehold control serve` built by the caller, say
/// with a failpoint, or run in a network namespace) serving `data` on `listen`; waits
/// until it listens and returns it with its admin address.
pub fn start_replica(
    env: &Env,
    mut command: Command,
    data: &Path,
    listen: &str,
) -> (Process, SocketAddr) {
    let name = unique_name("replica");
    let ready = env.home().join(format!("{name}.ready"));
    command
        .args(["--data-dir", path_str(data), "--listen", listen])
        .args(["--ready-file", path_str(&ready)])
        .env("RUST_LOG", "info");
    let mut process = Process::spawn_logged(&mut command, env.home().join(format!("{name}.log")));
    let addrs = process.wait_ready_file(&ready, "the replica to listen");
    (process, addrs["admin"])
}

/// The status of a replica's `/readyz` (0 when it does not answer).
pub async fn readyz(admin: SocketAddr) -> u16 {
    match reqwest::get(format!("http://{admin}/readyz")).await {
        Ok(answer) => answer.status().as_u16(),
        Err(_) => 0,
    }
}

//! A replicated control for the tests on a shared PostgreSQL: replicas of one control
//! (one identity key, copied into each replica's data directory) started on the
//! addresses `control init --advertise` gave, each reporting its admin listener.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use leasehold_control::failpoint;

use super::{Env, Process, path_str, unique_name};

/// Copies a data directory (identity key, settings, add-on) to another replica's.
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
    let name = unique_name("replica");
    let ready = env.home().join(format!("{name}.ready"));
    let mut command = env.command(&[
        "control",
        "serve",
        "--data-dir",
        path_str(data),
        "--listen",
        listen,
        "--ready-file",
        path_str(&ready),
    ]);
    command.env("RUST_LOG", "info").stdout(Stdio::null());
    if let Some(point) = failpoint {
        command.env(failpoint::ENV, point);
    }
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

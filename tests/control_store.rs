//! What the control keeps on disk, and how it stops: "the control keeps no token"
//! (neither the store nor `lease show/list` carry a lease token), tickets are stored
//! hashed, `addon.json` and every key file are 0600, and SIGTERM stops `control serve`
//! cleanly (exit 0) with the store intact for the next start.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::Env;
use leasehold_testkit::v2server::V2Server;
use serde_json::Value;

/// The secret part of a ticket line `lht1:<control>:<secret>@<addrs>`.
fn ticket_secret(ticket: &str) -> String {
    let before_addrs = ticket.trim().split('@').next().unwrap();
    before_addrs.rsplit(':').next().unwrap().to_owned()
}

/// Whether `haystack` contains `needle` as bytes.
fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_keeps_no_token_and_only_hashed_tickets() {
    let v2 = V2Server::start_default().await.unwrap();
    let mut env = Env::new();
    env.init_control();
    let control = env.serve();
    env.configure_v2(&v2, &[]);
    env.ok(&["identity", "create", "app"]);
    let ticket_path = env.ticket(&["service=app"], &[]);
    let secret = ticket_secret(&std::fs::read_to_string(&ticket_path).unwrap());
    assert!(secret.len() >= 16, "a real secret: {secret:?}");
    env.ok(&["enroll", ticket_path.to_str().unwrap(), "--identity", "app"]);
    // An unredeemed ticket too: stored, and still only as a hash.
    let unused = env.ticket(&[], &[]);
    let unused_secret = ticket_secret(&std::fs::read_to_string(&unused).unwrap());
    let lease = env.json(&["lease", "create", "--identity", "app"]);
    let token = lease["token"].as_str().unwrap().to_owned();
    let id = lease["id"].as_str().unwrap().to_owned();

    // Records read back never carry the token, for the member or the admin.
    let no_token = |record: &Value| record.get("token").is_none_or(Value::is_null);
    let shown = env.json(&["lease", "show", &id, "--identity", "app"]);
    assert_eq!(shown["id"], id.as_str());
    assert!(no_token(&shown), "{shown}");
    for listing in [
        env.json(&["lease", "list", "--identity", "app"]),
        env.json(&["lease", "list"]),
    ] {
        let leases = listing.as_array().unwrap();
        assert!(!leases.is_empty());
        assert!(leases.iter().all(no_token), "{listing}");
    }

    // SIGTERM: a clean stop, exit 0.
    let status = control.stop();
    assert!(status.success(), "control serve on SIGTERM: {status}");

    let store = std::fs::read(env.data_dir().join("store.redb")).unwrap();
    assert!(contains(&store, &id), "the scan sees the store's contents");
    for (what, secret) in [
        ("lease token", token.as_str()),
        ("redeemed ticket secret", secret.as_str()),
        ("unredeemed ticket secret", unused_secret.as_str()),
        ("admin token", v2.admin_token()),
    ] {
        assert!(!contains(&store, secret), "the store holds the {what}");
    }

    // Key files, the add-on settings (which hold the admin token) and the store (every
    // member and lease record) are 0600.
    let addon = env.data_dir().join("addon.json");
    assert_eq!(mode(&addon), 0o600, "{}", addon.display());
    let store = env.data_dir().join("store.redb");
    assert_eq!(mode(&store), 0o600, "{}", store.display());
    let keys: Vec<_> = files(env.home())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "key"))
        .collect();
    assert!(keys.len() >= 3, "control, admin and app keys: {keys:?}");
    for key in keys {
        assert_eq!(mode(&key), 0o600, "{}", key.display());
    }

    // The store is intact for the next start: the lease is still there.
    let _control = env.serve();
    assert_eq!(env.json(&["lease", "show", &id])["id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_control_cleanly_while_clients_are_connected() {
    let v2 = V2Server::start_default().await.unwrap();
    let mut env = Env::new();
    env.init_control();
    let control = env.serve();
    env.configure_v2(&v2, &[]);
    env.enrolled_identity("app", &[]);
    env.json(&["lease", "create", "--identity", "app"]);
    // An idle TCP client holding a connection open does not keep it from stopping.
    let _idle = std::net::TcpStream::connect(("127.0.0.1", env.control_port)).unwrap();
    let log = control.log.clone();
    let status = control.stop();
    assert!(status.success(), "exit status {status}");
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("shutting down"), "{log}");
}

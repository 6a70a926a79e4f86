//! Network namespaces for tests that need another "host": `ip netns` and veth pairs,
//! made and removed by the test. They need root and `ip` (iproute2), and fail loudly
//! without them: a missing prerequisite is a failure, never a skip.
//!
//! A [`Netns`] starts with one link to this host ([`Netns::host_ip`] on this side,
//! [`Netns::inside_ip`] in the namespace); [`Netns::add_link`] adds more, each its own
//! /30, so that one of them can be cut ([`Netns::set_link`]) while the others carry on.
//! Servers on this side listen on loopback or on a link's `host_ip`, never on every
//! address.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::Env;

/// /30 subnets handed out in 10.200.0.0–10.249.255.255: 50 × 250 × 60 of them.
const SUBNETS: u32 = 50 * 250 * 60;

/// One veth pair between this host and a namespace.
#[derive(Debug, Clone)]
pub struct Link {
    /// This side's interface.
    pub veth: String,
    /// This side's address.
    pub host_ip: String,
    /// The namespace's address.
    pub inside_ip: String,
}

/// A network namespace joined to this one by veth pairs; removed on drop, also when
/// the test fails half-way through making it.
pub struct Netns {
    name: String,
    tag: String,
    links: Vec<Link>,
    /// The first link's address on this side.
    pub host_ip: String,
    /// The first link's address in the namespace.
    pub inside_ip: String,
}

impl Netns {
    /// A namespace with loopback up and one link to this host.
    pub fn new() -> Self {
        // Short (interface names hold 15 bytes) and unique: the pid in hex, then a
        // count of this process's namespaces.
        static MADE: AtomicU32 = AtomicU32::new(0);
        let tag = format!(
            "{:x}{}",
            std::process::id(),
            MADE.fetch_add(1, Ordering::Relaxed)
        );
        let mut ns = Self {
            name: format!("lh-dev-{tag}"),
            tag,
            links: Vec::new(),
            host_ip: String::new(),
            inside_ip: String::new(),
        };
        ip(&["netns", "add", &ns.name]);
        ns.inside(&["link", "set", "lo", "up"]);
        let first = ns.add_link();
        ns.host_ip = first.host_ip;
        ns.inside_ip = first.inside_ip;
        ns
    }

    /// Another veth pair to this host, on a /30 of its own, up on both sides.
    pub fn add_link(&mut self) -> Link {
        let (host_ip, inside_ip) = next_subnet();
        let link = Link {
            veth: format!("lhv{}x{}", self.tag, self.links.len()),
            host_ip,
            inside_ip,
        };
        let peer = format!("{}p", link.veth);
        assert!(peer.len() <= 15, "interface name too long: {peer}");
        // Recorded first: dropped half-made, the namespace still removes it.
        self.links.push(link.clone());
        ip(&[
            "link", "add", &link.veth, "type", "veth", "peer", "name", &peer,
        ]);
        ip(&["link", "set", &peer, "netns", &self.name]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", link.host_ip),
            "dev",
            &link.veth,
        ]);
        ip(&["link", "set", &link.veth, "up"]);
        self.inside(&[
            "addr",
            "add",
            &format!("{}/30", link.inside_ip),
            "dev",
            &peer,
        ]);
        self.inside(&["link", "set", &peer, "up"]);
        // This side's hardware address pinned in the namespace: with the link down, what
        // the namespace sends (a new connection's SYN too) leaves and is lost, instead of
        // failing at once for want of an ARP answer.
        let mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", link.veth))
            .expect("the veth's hardware address");
        self.inside(&[
            "neigh",
            "replace",
            &link.host_ip,
            "lladdr",
            mac.trim(),
            "dev",
            &peer,
            "nud",
            "permanent",
        ]);
        link
    }

    /// Takes `link` down or up on this side. Down, the namespace's side loses its
    /// carrier and what it sends is dropped without a word (no reset, no ICMP, not even
    /// a failed address resolution: the neighbour entry is pinned): a cut cable, which
    /// a client notices only by its own timeouts.
    pub fn set_link(&self, link: &Link, up: bool) {
        ip(&["link", "set", &link.veth, if up { "up" } else { "down" }]);
    }

    /// `leasehold args...` run inside the namespace, with `env`'s environment.
    pub fn command(&self, env: &Env, args: &[&str]) -> Command {
        let template = env.command(args);
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]);
        command.arg(template.get_program());
        command.args(template.get_args());
        for (key, value) in template.get_envs() {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        command.stdin(Stdio::null());
        command
    }

    fn inside(&self, args: &[&str]) {
        let mut full = vec!["netns", "exec", &self.name, "ip"];
        full.extend_from_slice(args);
        ip(&full);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth pairs; the link deletes are for a
        // namespace that was never made.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
        for link in &self.links {
            let _ = Command::new("ip")
                .args(["link", "del", &link.veth])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A fresh /30 (this side's address, the namespace's): unique within this process,
/// and offset by the pid so that concurrent test processes pick different ones.
fn next_subnet() -> (String, String) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = (std::process::id().wrapping_mul(16) + NEXT.fetch_add(1, Ordering::Relaxed)) % SUBNETS;
    let (a, b) = (200 + n / (250 * 60), n / 60 % 250);
    let c = 4 * (n % 60);
    (
        format!("10.{a}.{b}.{}", c + 1),
        format!("10.{a}.{b}.{}", c + 2),
    )
}

/// Runs `ip args...`; panics with its error unless it succeeds.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("`ip` (Debian package iproute2) is required, and root");
    assert!(
        out.status.success(),
        "ip {} failed (root is required): {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

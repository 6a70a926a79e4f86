//! Shared harness for the integration tests: a temporary `$LEASEHOLD_HOME`, the real
//! `leasehold` binary, and a control process that can be stopped, killed and restarted.
//!
//! Ports: a proxy binds port 0 and reports the addresses it got (`--ready-file`). The
//! control's address is part of its persisted configuration (tickets and enrollments
//! carry it, and a restart must come back on it), so it is chosen once per [`Env`] by
//! [`reserve_port`], outside the kernel's ephemeral range where no `bind(0)` or outgoing
//! connection of another test can take it; `control serve` reports the address it bound
//! in its ready file, and the harness waits for that file from *that* process (a
//! process that exits first fails the test with its log).
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant, SystemTime};

pub mod netns;
pub mod python;
pub mod replicas;
pub mod setup;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_leasehold")
}

/// A free loopback port (bound and released). Racy as a listen port: another process
/// may take it before the caller binds it. Use it for unique names; for a child
/// process's listener pass port 0 and a ready file ([`Process::wait_ready_file`]).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Lowest and highest port [`reserve_port`] hands out: below Linux's ephemeral range
/// (32768–60999 by default), so neither `bind(0)` nor an outgoing connection picks them.
const RESERVED_PORTS: (u16, u16) = (20_000, 32_000);

/// A loopback port for a listener whose address must be known before it binds (the
/// control's, which is persisted). Unique within this process, free when chosen, and
/// outside the ephemeral range; each test process starts at its own offset so that
/// concurrent test runs do not walk the same ports.
pub fn reserve_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = RESERVED_PORTS.1 - RESERVED_PORTS.0;
    let base = (std::process::id() % u32::from(span)) as u16;
    for _ in 0..span {
        let step = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = RESERVED_PORTS.0 + (base + step) % span;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {RESERVED_PORTS:?}");
}

/// Polls `check` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An RFC 3339 time from a JSON record, as a `SystemTime`.
pub fn time(value: &serde_json::Value) -> SystemTime {
    humantime::parse_rfc3339(value.as_str().expect("a time string")).expect("RFC 3339")
}

/// A leasehold home with its own control.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub control_port: u16,
    extra_env: Vec<(String, String)>,
}

impl Env {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            control_port: reserve_port(),
            extra_env: Vec::new(),
        }
    }

    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.home().join("control")
    }

    /// Sets an environment variable for every command run from now on.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.extra_env.push((key.into(), value.into()));
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env("LEASEHOLD_HOME", self.home())
            .env_remove("RUST_LOG")
            .env_remove("INFLUXDB_ADMIN_TOKEN")
            .env_remove("INFLUXDB_ADMIN_PASSWORD")
            // Every control's admin listener on a port of its own (the default is fixed).
            .env("LEASEHOLD_CONTROL_ADMIN_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null());
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs a command to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "leasehold {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail; returns (exit code, stderr).
    pub fn fails(&self, args: &[&str]) -> (i32, String) {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "leasehold {args:?} unexpectedly succeeded"
        );
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs a command with `--output json`; returns the parsed record.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["--output", "json"];
        full.extend_from_slice(args);
        serde_json::from_str(&self.ok(&full)).unwrap()
    }

    /// `control init` on this env's port.
    pub fn init_control(&self) {
        self.ok(&[
            "control",
            "init",
            "--listen",
            &format!("127.0.0.1:{}", self.control_port),
        ]);
    }

    /// Starts `control serve` and waits until it accepts connections.
    pub fn serve(&self) -> ControlProcess {
        self.serve_with_log_level("info")
    }

    pub fn serve_with_log_level(&self, level: &str) -> ControlProcess {
        self.serve_with(level, &[])
    }

    /// Starts `control serve` with `extra` flags at log level `level` and waits until
    /// it reports that it listens on this env's control port.
    pub fn serve_with(&self, level: &str, extra: &[&str]) -> ControlProcess {
        self.serve_reporting(level, extra).0
    }

    /// [`Env::serve_with`], also returning the addresses the control reported
    /// (`listen`, `admin`).
    pub fn serve_reporting(
        &self,
        level: &str,
        extra: &[&str],
    ) -> (
        ControlProcess,
        std::collections::BTreeMap<String, SocketAddr>,
    ) {
        let name = unique_name("control");
        let log = self.home().join(format!("{name}.log"));
        let ready = self.home().join(format!("{name}.ready"));
        let mut args = vec!["control", "serve", "--ready-file", path_str(&ready)];
        args.extend_from_slice(extra);
        let mut process = Process::spawn(self.command(&args).env("RUST_LOG", level), log);
        let addrs = process.wait_ready_file(&ready, "the control to listen");
        let listen = addrs.get("listen");
        assert_eq!(
            listen.map(SocketAddr::port),
            Some(self.control_port),
            "the control reported {addrs:?}"
        );
        (process, addrs)
    }

    /// Creates identity `name` and enrolls it with a fresh ticket carrying `attributes`.
    pub fn enrolled_identity(&self, name: &str, attributes: &[&str]) {
        self.ok(&["identity", "create", name]);
        let ticket = self.ticket(attributes, &[]);
        self.ok(&["enroll", ticket.to_str().unwrap(), "--identity", name]);
    }

    /// Creates a ticket and writes it to a file; returns the path.
    pub fn ticket(&self, attributes: &[&str], extra: &[&str]) -> PathBuf {
        let mut args = vec!["ticket", "create"];
        for a in attributes {
            args.extend_from_slice(&["--attribute", a]);
        }
        args.extend_from_slice(extra);
        let line = self.ok(&args);
        let path = self.home().join(unique_name("ticket"));
        std::fs::write(&path, line).unwrap();
        path
    }
}

/// A spawned `leasehold` process whose output goes to a log file; killed when dropped.
pub struct Process {
    child: Child,
    pub log: PathBuf,
}

/// A running `leasehold control serve`.
pub type ControlProcess = Process;

impl Process {
    fn spawn(command: &mut Command, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Self { child, log }
    }

    /// Waits until the process has written its `--ready-file` (`KEY=ADDR` lines) and
    /// returns the addresses. Fails with the process's log if it exits first or the
    /// file does not appear within a generous deadline.
    pub fn wait_ready_file(
        &mut self,
        path: &Path,
        what: &str,
    ) -> std::collections::BTreeMap<String, SocketAddr> {
        match self.ready_file_or_exit(path, what) {
            Ok(addrs) => addrs,
            Err(status) => panic!("{what}: the process exited ({status}):\n{}", self.log()),
        }
    }

    /// [`Process::wait_ready_file`], but a process that exits first is the caller's
    /// to judge: its exit status.
    pub fn ready_file_or_exit(
        &mut self,
        path: &Path,
        what: &str,
    ) -> Result<std::collections::BTreeMap<String, SocketAddr>, std::process::ExitStatus> {
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            // Renamed into place whole: once it exists, it is complete.
            if let Ok(text) = std::fs::read_to_string(path) {
                return Ok(text
                    .lines()
                    .map(|line| {
                        let (key, addr) = line.split_once('=').expect("KEY=ADDR");
                        (key.to_owned(), addr.parse().expect("a socket address"))
                    })
                    .collect());
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(status);
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {STARTUP_DEADLINE:?} waiting for {what}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`TERM`, `INT`, ...) without waiting.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `kill -9`: no chance to clean up.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then wait for the exit status (failing the test, with the log, if the
    /// process has not exited within [`EVENT_DEADLINE`]).
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        match self.wait_exit(EVENT_DEADLINE) {
            Some(status) => status,
            None => panic!(
                "still running {EVENT_DEADLINE:?} after SIGTERM:\n{}",
                self.log()
            ),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long to wait for something a process does by itself (an expiry, a retry, a
/// sweep, a recovery): generous, for a loaded 2-core machine; a passing test never
/// waits this long, so it costs nothing.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(60);

/// How long a child may take to start listening: generous, for a loaded 2-core machine.
pub const STARTUP_DEADLINE: Duration = Duration::from_secs(60);

/// A name unique within this test process (log, ready and ticket files).
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A path as `&str` for a command line (test paths are UTF-8).
pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// A running `leasehold proxy`.
pub struct ProxyProcess {
    process: Process,
    pub port: u16,
    pub admin_port: u16,
}

impl Env {
    /// Starts `leasehold proxy --identity NAME` on ephemeral ports with `extra` flags
    /// and waits until it reports the addresses it bound. Does not wait for readiness:
    /// see [`ProxyProcess::wait_ready`].
    pub fn proxy(&self, identity: &str, extra: &[&str]) -> ProxyProcess {
        let mut args = vec!["proxy", "--identity", identity];
        args.extend_from_slice(extra);
        self.proxy_command(self.command(&args).env("RUST_LOG", "info"))
    }

    /// Starts a proxy from a prepared `leasehold proxy ...` command (environment,
    /// flags), adding `--listen`/`--admin-listen` on port 0 and a ready file; waits
    /// until it reports its addresses.
    pub fn proxy_command(&self, command: &mut Command) -> ProxyProcess {
        let name = unique_name("proxy");
        let ready = self.home().join(format!("{name}.ready"));
        command.args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--ready-file",
            path_str(&ready),
        ]);
        let mut process = Process::spawn(command, self.home().join(format!("{name}.log")));
        let addrs = process.wait_ready_file(&ready, "the proxy to listen");
        let port = |key: &str| {
            addrs
                .get(key)
                .unwrap_or_else(|| panic!("no {key}= in the ready file: {addrs:?}"))
                .port()
        };
        ProxyProcess {
            port: port("listen"),
            admin_port: port("admin"),
            process,
        }
    }
}

impl ProxyProcess {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The status of an admin endpoint.
    pub async fn admin_status(&self, path: &str) -> u16 {
        match reqwest::get(self.admin_url(path)).await {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + STARTUP_DEADLINE;
        while self.admin_status("/readyz").await != 200 {
            assert!(
                Instant::now() < deadline,
                "proxy not ready:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGTERM, then wait for the exit status.
    pub fn stop(self) -> std::process::ExitStatus {
        self.process.stop()
    }

    /// The underlying process (signals, exit status).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }
}

/// The command line configuring the v2 add-on for `url` and `org_id` with `permissions`
/// (the admin token comes from the environment).
pub fn v2_addon_args<'a>(url: &'a str, org_id: &'a str, permissions: &'a str) -> Vec<&'a str> {
    vec![
        "addon",
        "configure",
        "influxdb",
        "--endpoint-url",
        url,
        "--org-id",
        org_id,
        "--permissions",
        permissions,
    ]
}

/// v2 permissions to write every bucket of the org.
pub const WRITE_BUCKETS: &str = r#"[{"action":"write","resource":{"type":"buckets"}}]"#;

impl Env {
    /// `addon configure influxdb` against the v2 test server (admin token from the
    /// environment, as a user would pass it), plus `extra` flags.
    pub fn configure_v2(&mut self, v2: &leasehold_testkit::v2server::V2Server, extra: &[&str]) {
        self.set_env("INFLUXDB_ADMIN_TOKEN", v2.admin_token());
        let url = v2.url();
        let mut args = v2_addon_args(&url, v2.org_id(), WRITE_BUCKETS);
        args.extend_from_slice(extra);
        self.ok(&args);
    }

    /// `addon configure influxdb-v1` against a real influxd with `privileges`.
    pub fn configure_v1(&mut self, db: &leasehold_testkit::influxd::Influxd, privileges: &[&str]) {
        self.set_env("INFLUXDB_ADMIN_PASSWORD", db.admin_password());
        let mut args = vec![
            "addon",
            "configure",
            "influxdb-v1",
            "--endpoint-url",
            db.url(),
            "--username",
            db.admin_user(),
        ];
        for p in privileges {
            args.extend_from_slice(&["--privileges", p]);
        }
        self.ok(&args);
    }
}

impl Process {
    /// Spawns `command` with its output going to `log` (for commands the helpers above
    /// do not build, e.g. run in another network namespace).
    pub fn spawn_logged(command: &mut Command, log: PathBuf) -> Self {
        Self::spawn(command, log)
    }
}

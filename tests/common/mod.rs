//! Shared harness for the integration tests: a temporary `$LEASEHOLD_HOME`, the real
//! `leasehold` binary, and a control process that can be stopped, killed and restarted.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_leasehold")
}

/// A free loopback port (bound and released; the caller binds it again at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
            control_port: free_port(),
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
        let log = self.home().join(format!("control-{}.log", free_port()));
        let process = Process::spawn(
            self.command(&["control", "serve"]).env("RUST_LOG", level),
            log,
        );
        wait_for_port(self.control_port, "the control to listen");
        process
    }

    /// Starts `control serve` with `extra` flags, logging at `level`, and waits until it
    /// accepts connections.
    pub fn serve_with(&self, level: &str, extra: &[&str]) -> ControlProcess {
        let log = self.home().join(format!("control-{}.log", free_port()));
        let mut args = vec!["control", "serve"];
        args.extend_from_slice(extra);
        let process = Process::spawn(self.command(&args).env("RUST_LOG", level), log);
        wait_for_port(self.control_port, "the control to listen");
        process
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
        let path = self.home().join(format!("ticket-{}", free_port()));
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

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
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

    /// SIGTERM, then wait for the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_port(port: u16, what: &str) {
    wait_until(Duration::from_secs(10), what, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// A running `leasehold proxy`.
pub struct ProxyProcess {
    process: Process,
    pub port: u16,
    pub admin_port: u16,
}

impl Env {
    /// Starts `leasehold proxy --identity NAME` on free ports with `extra` flags. Does
    /// not wait for readiness: see [`ProxyProcess::wait_ready`].
    pub fn proxy(&self, identity: &str, extra: &[&str]) -> ProxyProcess {
        let (port, admin_port) = (free_port(), free_port());
        let log = self.home().join(format!("proxy-{port}.log"));
        let listen = format!("127.0.0.1:{port}");
        let admin = format!("127.0.0.1:{admin_port}");
        let mut args = vec![
            "proxy",
            "--identity",
            identity,
            "--listen",
            &listen,
            "--admin-listen",
            &admin,
        ];
        args.extend_from_slice(extra);
        let process = Process::spawn(self.command(&args).env("RUST_LOG", "info"), log);
        wait_for_port(admin_port, "the proxy to listen");
        ProxyProcess {
            process,
            port,
            admin_port,
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

    /// The status of an admin endpoint.
    pub async fn admin_status(&self, path: &str) -> u16 {
        match reqwest::get(self.admin_url(path)).await {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        }
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
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

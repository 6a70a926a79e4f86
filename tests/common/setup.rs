//! Set-up repeated across the integration tests: a real `influxd`, a `control serve`
//! with the v1 add-on configured, the lease users InfluxDB holds, polling for an async
//! condition, and a control running inside the test process.

use std::net::SocketAddr;
use std::time::Duration;

use leasehold_channel::home::Home;
use leasehold_control::datadir::{DataDir, Settings};
use leasehold_control::server::Limits;
use leasehold_testkit::influxd::Influxd;
use leasehold_testkit::v2server::V2Server;
use tokio_util::sync::CancellationToken;

use super::{ControlProcess, Env};

/// A real `influxd`; the test fails loudly when the binary is missing.
pub async fn start_influxd() -> Influxd {
    Influxd::start()
        .await
        .expect("a real influxd (Debian package influxdb) is required")
}

/// The lease users present on `db` (named `leasehold_…`).
pub async fn lease_users(db: &Influxd) -> Vec<String> {
    db.show_users()
        .await
        .unwrap()
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("leasehold_"))
        .collect()
}

/// Polls an async condition until it holds, failing the test after `timeout` (the
/// test thread may block; the runtime has workers).
pub async fn eventually(timeout: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes one point to a v2 test server with `token`; returns the status.
pub async fn write_v2(v2: &V2Server, token: &str) -> u16 {
    let url = format!(
        "{}/api/v2/write?org={}&bucket=telemetry&precision=s",
        v2.url(),
        v2.org_name()
    );
    reqwest::Client::new()
        .post(url)
        .header("Authorization", format!("Token {token}"))
        .body("cpu,host=a usage=1 1700000000\n")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

impl Env {
    /// `control init`, a serving control, and the v1 add-on configured against `db`
    /// with `privileges`.
    pub fn serve_v1(&mut self, db: &Influxd, privileges: &[&str]) -> ControlProcess {
        self.init_control();
        let control = self.serve();
        self.configure_v1(db, privileges);
        control
    }

    /// `lease revoke` of `lease` (a `lease create` record) by its holder `app`.
    pub fn revoke_as_app(&self, lease: &serde_json::Value) {
        self.ok(&[
            "lease",
            "revoke",
            lease["id"].as_str().unwrap(),
            "--identity",
            "app",
        ]);
    }
}

/// A fresh env whose control serves the v1 add-on (`privileges` on `db`) and has the
/// identity `app` enrolled.
pub fn v1_control_with_app(db: &Influxd, privileges: &[&str]) -> (Env, ControlProcess) {
    let mut env = Env::new();
    let control = env.serve_v1(db, privileges);
    env.enrolled_identity("app", &[]);
    (env, control)
}

/// A control initialised in a temporary home and running inside the test process.
pub struct InProcessControl {
    pub dir: tempfile::TempDir,
    pub home: Home,
    pub addr: SocketAddr,
    pub running: leasehold_control::Running,
    pub shutdown: CancellationToken,
}

/// Initialises a control listening on an ephemeral loopback port and starts it with
/// `limits`.
pub async fn start_in_process(limits: Limits) -> InProcessControl {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    let data = DataDir::new(home.control_dir());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = Settings {
        listen: addr,
        advertise: vec![addr.to_string()],
    };
    leasehold_control::init(&home, &data, &settings)
        .await
        .unwrap();
    let shutdown = CancellationToken::new();
    let running = leasehold_control::start_with_limits(&data, listener, shutdown.clone(), limits)
        .await
        .unwrap();
    InProcessControl {
        dir,
        home,
        addr,
        running,
        shutdown,
    }
}

//! A real InfluxDB 1.x (`influxd`, Debian package `influxdb`) for integration tests.
//!
//! [`Influxd::start`] writes a config into a fresh temporary directory (meta, data and
//! WAL inside it), picks free loopback ports for HTTP and the RPC service, starts
//! `influxd -config FILE` as a child process with its output in `influxd.log` next to
//! the config, waits until it serves `/ping`, then creates an admin user with a random
//! password and the database `telemetry`. Authentication is on, as in production: every
//! helper authenticates, and a test can check what a leased user may and may not do.
//!
//! The process never outlives the harness: [`Drop`] kills and reaps it. [`Influxd::stop`]
//! and [`Influxd::start_again`] take the server down and bring it back on the same port
//! with the same data, for "InfluxDB unreachable at expiry" tests.
//!
//! Readiness is decided by two signals together: the child's own log says it is
//! listening on *our* address, and `/ping` answers 204. The ping alone could be answered
//! by another test's influxd that won a race for the same port while ours failed to
//! bind; the log line cannot.
//!
//! If `influxd` is missing, [`Influxd::start`] fails with [`InfluxdError::NotInstalled`]:
//! tests that need it must fail, never skip.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;

/// How long `influxd` may take to answer `/ping` after it is started: generous, since
/// parallel tests start several at once on a loaded machine. [`Influxd::start`] tries
/// once more on fresh ports after a timeout.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Influxd::stop`] waits after SIGTERM before it kills the process.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The database every harness creates.
pub const TELEMETRY_DB: &str = "telemetry";
/// The admin user every harness creates.
pub const ADMIN_USER: &str = "admin";

/// The binary started; found on `PATH`.
const INFLUXD: &str = "influxd";
/// Fresh port pairs tried by [`Influxd::start`] before giving up on port clashes.
const PORT_ATTEMPTS: usize = 5;
/// Attempts by [`Influxd::start_again`] to re-bind the same ports.
const REBIND_ATTEMPTS: usize = 20;
const POLL: Duration = Duration::from_millis(50);
const LOG_TAIL_LINES: usize = 25;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Everything that can go wrong driving `influxd`. `Debug` prints the same text as
/// `Display`, so that a test's `.unwrap()` shows the install hint or the log tail
/// readably rather than as one escaped string.
#[non_exhaustive]
pub enum InfluxdError {
    /// `influxd` is not on `PATH`.
    NotInstalled,
    /// A local operation (temp dir, config, log, spawn, signal) failed.
    Io {
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// `influxd` exited during startup.
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// The end of its log.
        log_tail: String,
    },
    /// `influxd` could not bind its ports after several attempts.
    PortClash {
        /// The end of its log from the last attempt.
        log_tail: String,
    },
    /// `influxd` did not become ready in time.
    Timeout {
        /// How long we waited.
        waited: Duration,
        /// The end of its log.
        log_tail: String,
    },
    /// The operation needs a running server, and it is stopped.
    NotRunning,
    /// [`Influxd::start_again`] was called while the server is running.
    AlreadyRunning,
    /// An HTTP request failed before an answer arrived.
    Http(reqwest::Error),
    /// InfluxDB answered with an unexpected HTTP status.
    Status {
        /// The status.
        status: StatusCode,
        /// The body, verbatim.
        body: String,
    },
    /// An InfluxQL statement failed: InfluxDB reports these as HTTP 200 with
    /// `results[].error`.
    Statement {
        /// Index of the failing statement in the query.
        statement: usize,
        /// InfluxDB's error message.
        error: String,
    },
    /// The answer was not the JSON shape InfluxDB documents.
    BadResponse(String),
}

impl fmt::Display for InfluxdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotInstalled => write!(
                f,
                "`{INFLUXD}` was not found on PATH: install the Debian package `influxdb` \
                 (apt-get install influxdb); tests against a real InfluxDB 1.x cannot run without it"
            ),
            Self::Io { what, source } => write!(f, "{what}: {source}"),
            Self::Exited { status, log_tail } => {
                write!(
                    f,
                    "influxd exited during startup ({status}); log tail:\n{log_tail}"
                )
            }
            Self::PortClash { log_tail } => write!(
                f,
                "influxd could not bind its loopback ports after several attempts; log tail:\n{log_tail}"
            ),
            Self::Timeout { waited, log_tail } => write!(
                f,
                "influxd did not answer /ping within {waited:?}; log tail:\n{log_tail}"
            ),
            Self::NotRunning => f.write_str("influxd is stopped"),
            Self::AlreadyRunning => f.write_str("influxd is already running"),
            Self::Http(e) => write!(f, "HTTP request to influxd failed: {e}"),
            Self::Status { status, body } => write!(f, "influxd answered {status}: {body}"),
            Self::Statement { statement, error } => {
                write!(f, "InfluxQL statement {statement} failed: {error}")
            }
            Self::BadResponse(what) => write!(f, "unexpected answer from influxd: {what}"),
        }
    }
}

impl fmt::Debug for InfluxdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for InfluxdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Http(e) => Some(e),
            _ => None,
        }
    }
}

impl From<reqwest::Error> for InfluxdError {
    fn from(e: reqwest::Error) -> Self {
        Self::Http(e)
    }
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> InfluxdError {
    move |source| InfluxdError::Io { what, source }
}

/// A running (or deliberately stopped) `influxd` with auth enabled on loopback.
pub struct Influxd {
    child: Option<Child>,
    http_port: u16,
    rpc_port: u16,
    url: String,
    admin_password: String,
    /// Serving HTTPS with a test CA's certificate (`server.pem`, `server.key`).
    https: bool,
    /// Logging every statement it executes (`[data] query-log-enabled`).
    log_queries: bool,
    client: reqwest::Client,
    config_path: PathBuf,
    log_path: PathBuf,
    // Dropped last: the child is killed in `Drop::drop` before its files go.
    dir: TempDir,
}

impl fmt::Debug for Influxd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Influxd")
            .field("url", &self.url)
            .field("pid", &self.pid())
            .field("dir", &self.dir.path())
            .field("admin_password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// How one launch attempt ended, when it did not end ready.
enum LaunchFailure {
    /// Another process holds one of our ports.
    PortClash(String),
    Fatal(InfluxdError),
}

impl Influxd {
    /// Starts a fresh `influxd` in a temporary directory, creates the admin user
    /// ([`ADMIN_USER`], random password) and the database [`TELEMETRY_DB`].
    pub async fn start() -> Result<Self, InfluxdError> {
        Self::start_with(None, false).await
    }

    /// [`Influxd::start`], with InfluxDB's query log on (`[data] query-log-enabled`):
    /// every statement it executes is logged, passwords redacted by InfluxDB, and
    /// [`Influxd::executed`] reads them back. That is how a test counts what reached
    /// InfluxDB (each `DROP USER`, say) rather than what a client says it sent.
    pub async fn start_logging_queries() -> Result<Self, InfluxdError> {
        Self::start_with(None, true).await
    }

    /// [`Influxd::start`], serving HTTPS (`[http] https-enabled`) with the server
    /// certificate of `ca`; the harness's own client trusts `ca`, nothing else does.
    pub async fn start_https(ca: &crate::tls::TestCa) -> Result<Self, InfluxdError> {
        Self::start_with(Some(ca), false).await
    }

    async fn start_with(
        https: Option<&crate::tls::TestCa>,
        log_queries: bool,
    ) -> Result<Self, InfluxdError> {
        ensure_installed()?;
        let mut influxd = Self::unstarted(https)?;
        influxd.log_queries = log_queries;
        let mut last_clash = String::new();
        // A start that timed out is retried once, on fresh ports (a stuck start-up is
        // rare; twice in a row is a real problem worth failing on).
        let mut timeout_retries = 1;
        for _ in 0..PORT_ATTEMPTS {
            let (http_port, rpc_port) = free_port_pair()?;
            influxd.set_ports(http_port, rpc_port)?;
            match influxd.launch().await {
                Ok(()) => {
                    influxd.bootstrap().await?;
                    return Ok(influxd);
                }
                Err(LaunchFailure::PortClash(tail)) => last_clash = tail,
                Err(LaunchFailure::Fatal(InfluxdError::Timeout { .. })) if timeout_retries > 0 => {
                    timeout_retries -= 1;
                }
                Err(LaunchFailure::Fatal(e)) => return Err(e),
            }
        }
        Err(InfluxdError::PortClash {
            log_tail: last_clash,
        })
    }

    /// A harness with its directory and password but no ports and no process yet.
    fn unstarted(https: Option<&crate::tls::TestCa>) -> Result<Self, InfluxdError> {
        let dir = tempfile::Builder::new()
            .prefix("leasehold-influxd-")
            .tempdir()
            .map_err(io_err("creating the influxd temp dir"))?;
        let mut client = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT);
        if let Some(ca) = https {
            fs::write(dir.path().join("server.pem"), &ca.server_cert_pem)
                .map_err(io_err("writing the influxd certificate"))?;
            fs::write(dir.path().join("server.key"), &ca.server_key_pem)
                .map_err(io_err("writing the influxd key"))?;
            client =
                client.add_root_certificate(reqwest::Certificate::from_pem(ca.ca_pem.as_bytes())?);
        }
        let client = client.build()?;
        Ok(Self {
            child: None,
            http_port: 0,
            rpc_port: 0,
            url: String::new(),
            admin_password: random_password()?,
            https: https.is_some(),
            log_queries: false,
            client,
            config_path: dir.path().join("influxd.conf"),
            log_path: dir.path().join("influxd.log"),
            dir,
        })
    }

    fn set_ports(&mut self, http_port: u16, rpc_port: u16) -> Result<(), InfluxdError> {
        self.http_port = http_port;
        self.rpc_port = rpc_port;
        let scheme = if self.https { "https" } else { "http" };
        self.url = format!("{scheme}://127.0.0.1:{http_port}");
        self.write_config()
    }

    /// The HTTP base URL, `http://127.0.0.1:PORT` (`https://` from
    /// [`Influxd::start_https`]; no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.http_port))
    }

    /// The admin user's name ([`ADMIN_USER`]).
    pub fn admin_user(&self) -> &str {
        ADMIN_USER
    }

    /// The admin user's password, random per harness.
    pub fn admin_password(&self) -> &str {
        &self.admin_password
    }

    /// The process id while running; `None` after [`Influxd::stop`].
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The temporary directory holding config, data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The log file (`influxd`'s stdout and stderr, all launches appended).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Runs `q` (one or more `;`-separated InfluxQL statements) as the admin user and
    /// returns the whole JSON answer. A statement error is an [`InfluxdError::Statement`].
    pub async fn query(&self, q: &str) -> Result<Value, InfluxdError> {
        self.query_as(ADMIN_USER, &self.admin_password, None, q)
            .await
    }

    /// Runs `q` as the admin user against database `db` (for `SELECT`s).
    pub async fn query_db(&self, db: &str, q: &str) -> Result<Value, InfluxdError> {
        self.query_as(ADMIN_USER, &self.admin_password, Some(db), q)
            .await
    }

    /// Runs `q` as `user`/`password`, optionally against `db`. A refused login is an
    /// [`InfluxdError::Status`] with 401 (or 403 for missing privileges).
    pub async fn query_as(
        &self,
        user: &str,
        password: &str,
        db: Option<&str>,
        q: &str,
    ) -> Result<Value, InfluxdError> {
        let mut form = vec![("q", q)];
        if let Some(db) = db {
            form.push(("db", db));
        }
        let response = self
            .client
            .post(format!("{}/query", self.url))
            .basic_auth(user, Some(password))
            .form(&form)
            .send()
            .await?;
        let status = response.status();
        let body = response.text().await?;
        check_answer(status, body)
    }

    /// Every statement InfluxDB executed, in order, as its query log gives them
    /// (identifiers unquoted where they need no quotes, passwords `[REDACTED]`). Empty
    /// unless started by [`Influxd::start_logging_queries`].
    pub fn executed(&self) -> Vec<String> {
        read_log_from(&self.log_path, 0)
            .lines()
            .filter(|line| line.contains(r#"msg="Executing query""#))
            .filter_map(|line| logfmt_value(line, "query"))
            .collect()
    }

    /// Creates database `name` (a no-op if it exists).
    pub async fn create_database(&self, name: &str) -> Result<(), InfluxdError> {
        self.query(&format!("CREATE DATABASE {}", quote_ident(name)))
            .await
            .map(drop)
    }

    /// `SHOW USERS`: every user with whether it is an admin.
    pub async fn show_users(&self) -> Result<Vec<(String, bool)>, InfluxdError> {
        let answer = self.query("SHOW USERS").await?;
        rows(&answer)
            .map(|row| match row.as_slice() {
                [Value::String(user), Value::Bool(admin), ..] => Ok((user.clone(), *admin)),
                other => Err(InfluxdError::BadResponse(format!(
                    "SHOW USERS row {other:?}"
                ))),
            })
            .collect()
    }

    /// `SHOW GRANTS FOR user`: `(database, privilege)` pairs, privilege as InfluxDB
    /// spells it (`READ`, `WRITE`, `ALL PRIVILEGES`). A missing user is a
    /// [`InfluxdError::Statement`] with "user not found".
    pub async fn show_grants(&self, user: &str) -> Result<Vec<(String, String)>, InfluxdError> {
        let answer = self
            .query(&format!("SHOW GRANTS FOR {}", quote_ident(user)))
            .await?;
        rows(&answer)
            .map(|row| match row.as_slice() {
                [Value::String(db), Value::String(privilege), ..] => {
                    Ok((db.clone(), privilege.clone()))
                }
                other => Err(InfluxdError::BadResponse(format!(
                    "SHOW GRANTS row {other:?}"
                ))),
            })
            .collect()
    }

    /// The number of points in `measurement` of `db` (0 if the measurement does not
    /// exist). `count(*)` counts per field; a point is counted once, by its most
    /// counted field.
    pub async fn count(&self, db: &str, measurement: &str) -> Result<u64, InfluxdError> {
        let answer = self
            .query_db(
                db,
                &format!("SELECT count(*) FROM {}", quote_ident(measurement)),
            )
            .await?;
        let mut max = 0;
        for row in rows(&answer) {
            // Column 0 is the time; the rest are `count_<field>`.
            for cell in row.iter().skip(1) {
                max = max.max(cell.as_u64().unwrap_or(0));
            }
        }
        Ok(max)
    }

    /// Writes line protocol `lines` to `db` as `user`/`password` and returns the status
    /// (204 on success, 401 for bad credentials, 403 without the privilege).
    pub async fn write(
        &self,
        db: &str,
        lines: &str,
        user: &str,
        password: &str,
    ) -> Result<StatusCode, InfluxdError> {
        let response = self
            .client
            .post(format!("{}/write", self.url))
            .query(&[("db", db)])
            .basic_auth(user, Some(password))
            .body(lines.to_owned())
            .send()
            .await?;
        Ok(response.status())
    }

    /// Stops the server: SIGTERM, then SIGKILL if it has not exited within
    /// [`STOP_TIMEOUT`]. The data stays; [`Influxd::start_again`] brings it back.
    /// A no-op when already stopped.
    pub async fn stop(&mut self) -> Result<(), InfluxdError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // std can only SIGKILL; a graceful stop flushes like a real shutdown would.
        let terminated = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if terminated {
            let deadline = Instant::now() + STOP_TIMEOUT;
            while Instant::now() < deadline {
                if child
                    .try_wait()
                    .map_err(io_err("waiting for influxd"))?
                    .is_some()
                {
                    return Ok(());
                }
                tokio::time::sleep(POLL).await;
            }
        }
        kill_and_reap(&mut child);
        Ok(())
    }

    /// Starts the stopped server again on the same port with the same data and users.
    pub async fn start_again(&mut self) -> Result<(), InfluxdError> {
        if self.child.is_some() {
            return Err(InfluxdError::AlreadyRunning);
        }
        let mut last_clash = String::new();
        for _ in 0..REBIND_ATTEMPTS {
            match self.launch().await {
                Ok(()) => return Ok(()),
                // The port may be briefly held by someone else; it has to be this one.
                Err(LaunchFailure::PortClash(tail)) => {
                    last_clash = tail;
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(LaunchFailure::Fatal(e)) => return Err(e),
            }
        }
        Err(InfluxdError::PortClash {
            log_tail: last_clash,
        })
    }

    /// Spawns `influxd` on the configured ports and waits until it is ready.
    async fn launch(&mut self) -> Result<(), LaunchFailure> {
        let fatal = LaunchFailure::Fatal;
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(io_err("opening the influxd log"))
            .map_err(fatal)?;
        let log_start = log
            .metadata()
            .map_err(io_err("reading the influxd log"))
            .map_err(fatal)?
            .len();
        let stderr = log
            .try_clone()
            .map_err(io_err("opening the influxd log"))
            .map_err(fatal)?;
        let child = Command::new(INFLUXD)
            .arg("-config")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => InfluxdError::NotInstalled,
                _ => InfluxdError::Io {
                    what: "starting influxd",
                    source: e,
                },
            })
            .map_err(fatal)?;
        self.child = Some(child);
        match self.wait_ready(log_start).await {
            Ok(()) => Ok(()),
            Err(failure) => {
                if let Some(mut child) = self.child.take() {
                    kill_and_reap(&mut child);
                }
                Err(failure)
            }
        }
    }

    async fn wait_ready(&mut self, log_start: u64) -> Result<(), LaunchFailure> {
        let listening = format!("addr=127.0.0.1:{}", self.http_port);
        let ping = format!("{}/ping", self.url);
        let started = Instant::now();
        loop {
            let child = self.child.as_mut().expect("launched");
            let exited = child
                .try_wait()
                .map_err(io_err("waiting for influxd"))
                .map_err(LaunchFailure::Fatal)?;
            if let Some(status) = exited {
                let tail = log_tail(&self.log_path, log_start);
                return Err(if tail.contains("address already in use") {
                    LaunchFailure::PortClash(tail)
                } else {
                    LaunchFailure::Fatal(InfluxdError::Exited {
                        status,
                        log_tail: tail,
                    })
                });
            }
            let log = read_log_from(&self.log_path, log_start);
            if log
                .lines()
                .any(|l| l.contains("Listening on HTTP") && l.contains(&listening))
            {
                let answer = self.client.get(&ping).timeout(POLL * 20).send().await;
                if answer.is_ok_and(|r| r.status() == StatusCode::NO_CONTENT) {
                    return Ok(());
                }
            }
            if started.elapsed() > STARTUP_TIMEOUT {
                return Err(LaunchFailure::Fatal(InfluxdError::Timeout {
                    waited: STARTUP_TIMEOUT,
                    log_tail: log_tail(&self.log_path, log_start),
                }));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Creates the admin user and the telemetry database on a fresh server.
    async fn bootstrap(&self) -> Result<(), InfluxdError> {
        // With auth on and no users yet, InfluxDB accepts exactly this one statement
        // without credentials: creating the first admin.
        let response = self
            .client
            .post(format!("{}/query", self.url))
            .form(&[(
                "q",
                format!(
                    "CREATE USER {} WITH PASSWORD {} WITH ALL PRIVILEGES",
                    quote_ident(ADMIN_USER),
                    quote_string(&self.admin_password)
                ),
            )])
            .send()
            .await?;
        let status = response.status();
        check_answer(status, response.text().await?)?;
        self.create_database(TELEMETRY_DB).await
    }

    fn write_config(&self) -> Result<(), InfluxdError> {
        let dir = self.dir.path();
        let path = |name: &str| toml_string(&dir.join(name).to_string_lossy());
        let config = format!(
            r#"# Generated by leasehold-testkit for one test run.
reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"

[meta]
  dir = {meta}
  logging-enabled = false

[data]
  dir = {data}
  wal-dir = {wal}
  query-log-enabled = {log_queries}
  trace-logging-enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[continuous_queries]
  enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{http}"
  auth-enabled = true
  log-enabled = false
  pprof-enabled = false
{https}

[logging]
  format = "logfmt"
  level = "info"
  suppress-logo = true

[[graphite]]
  enabled = false

[[collectd]]
  enabled = false

[[opentsdb]]
  enabled = false

[[udp]]
  enabled = false
"#,
            rpc = self.rpc_port,
            http = self.http_port,
            log_queries = self.log_queries,
            https = if self.https {
                format!(
                    "  https-enabled = true\n  https-certificate = {}\n  https-private-key = {}\n",
                    path("server.pem"),
                    path("server.key")
                )
            } else {
                String::new()
            },
            meta = path("meta"),
            data = path("data"),
            wal = path("wal"),
        );
        fs::write(&self.config_path, config).map_err(io_err("writing the influxd config"))
    }
}

impl Drop for Influxd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }
}

fn kill_and_reap(child: &mut Child) {
    // Errors mean it is already gone; `wait` reaps it either way.
    let _ = child.kill();
    let _ = child.wait();
}

/// Fails with [`InfluxdError::NotInstalled`] unless `influxd` can be executed.
fn ensure_installed() -> Result<(), InfluxdError> {
    match Command::new(INFLUXD)
        .arg("version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => Ok(()),
        Ok(_) => Err(InfluxdError::NotInstalled),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(InfluxdError::NotInstalled),
        Err(e) => Err(InfluxdError::Io {
            what: "running `influxd version`",
            source: e,
        }),
    }
}

/// Two distinct free loopback ports. Both listeners are held until both are chosen, so
/// the pair is distinct; they may still be taken before `influxd` binds them, which
/// [`Influxd::start`] handles by retrying.
fn free_port_pair() -> Result<(u16, u16), InfluxdError> {
    let bind =
        || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_err("finding a free port"));
    let (a, b) = (bind()?, bind()?);
    let port = |l: &TcpListener| {
        l.local_addr()
            .map(|a| a.port())
            .map_err(io_err("finding a free port"))
    };
    Ok((port(&a)?, port(&b)?))
}

fn random_password() -> Result<String, InfluxdError> {
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).map_err(|e| InfluxdError::Io {
        what: "generating the admin password",
        source: io::Error::other(e.to_string()),
    })?;
    Ok(data_encoding::HEXLOWER.encode(&bytes))
}

/// The log written since byte `start` (this launch), lossily decoded.
fn read_log_from(path: &Path, start: u64) -> String {
    let mut text = Vec::new();
    if let Ok(mut file) = File::open(path)
        && file.seek(SeekFrom::Start(start)).is_ok()
    {
        let _ = file.read_to_end(&mut text);
    }
    String::from_utf8_lossy(&text).into_owned()
}

fn log_tail(path: &Path, start: u64) -> String {
    let log = read_log_from(path, start);
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
    if tail.is_empty() {
        format!("(nothing in {})", path.display())
    } else {
        tail
    }
}

/// The value of `key` in a logfmt line, quotes and escapes undone.
fn logfmt_value(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    let Some(quoted) = rest.strip_prefix('"') else {
        return Some(rest.split(' ').next().unwrap_or_default().to_owned());
    };
    let mut value = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => value.push(chars.next()?),
            other => value.push(other),
        }
    }
    None
}

/// Turns a `/query` answer into its JSON, or the first error it reports: InfluxQL
/// statement errors come back as HTTP 200 with `results[].error`.
fn check_answer(status: StatusCode, body: String) -> Result<Value, InfluxdError> {
    if status != StatusCode::OK {
        return Err(InfluxdError::Status { status, body });
    }
    let value: Value = serde_json::from_str(&body)
        .map_err(|e| InfluxdError::BadResponse(format!("{e}: {body}")))?;
    if let Some(error) = value.get("error").and_then(Value::as_str) {
        return Err(InfluxdError::Statement {
            statement: 0,
            error: error.to_owned(),
        });
    }
    let results = value
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| InfluxdError::BadResponse(format!("no `results`: {body}")))?;
    for (i, result) in results.iter().enumerate() {
        if let Some(error) = result.get("error").and_then(Value::as_str) {
            let statement = result
                .get("statement_id")
                .and_then(Value::as_u64)
                .map_or(i, |n| n as usize);
            return Err(InfluxdError::Statement {
                statement,
                error: error.to_owned(),
            });
        }
    }
    Ok(value)
}

/// Every row of every series of every result.
fn rows(answer: &Value) -> impl Iterator<Item = &Vec<Value>> {
    answer["results"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["series"].as_array().into_iter().flatten())
        .flat_map(|s| s["values"].as_array().into_iter().flatten())
        .filter_map(Value::as_array)
}

/// An InfluxQL double-quoted identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// An InfluxQL single-quoted string literal.
pub fn quote_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_the_delimiters() {
        assert_eq!(quote_ident(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote_string("it's"), r"'it\'s'");
    }

    #[test]
    fn rows_flattens_every_series_and_tolerates_empty_results() {
        let answer: Value = serde_json::from_str(
            r#"{"results":[{"statement_id":0,"series":[{"columns":["user","admin"],"values":[["a",true],["b",false]]}]},{"statement_id":1}]}"#,
        )
        .unwrap();
        assert_eq!(rows(&answer).count(), 2);
        assert_eq!(
            rows(&serde_json::json!({"results":[{"statement_id":0}]})).count(),
            0
        );
    }

    #[tokio::test]
    async fn a_taken_port_is_reported_as_a_clash_not_as_ready() {
        // Someone else holds the HTTP port and accepts connections on it: the harness must
        // notice that its own influxd failed to bind instead of trusting that socket.
        let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let taken = squatter.local_addr().unwrap().port();
        let (_, rpc) = free_port_pair().unwrap();
        let mut influxd = Influxd::unstarted(None).unwrap();
        influxd.set_ports(taken, rpc).unwrap();
        match influxd.launch().await {
            Err(LaunchFailure::PortClash(tail)) => assert!(tail.contains("address already in use")),
            Err(LaunchFailure::Fatal(e)) => panic!("expected a port clash, got {e}"),
            Ok(()) => panic!("expected a port clash, but it claims to be ready"),
        }
        assert_eq!(influxd.pid(), None);
    }

    #[test]
    fn logfmt_values_are_unquoted_and_unescaped() {
        let line = r#"ts=1 lvl=info msg="Executing query" log_id=x service=query query="DROP USER \"a b\"" n=3"#;
        assert_eq!(
            logfmt_value(line, "query").as_deref(),
            Some(r#"DROP USER "a b""#)
        );
        assert_eq!(logfmt_value(line, "n").as_deref(), Some("3"));
        assert_eq!(logfmt_value(line, "service").as_deref(), Some("query"));
        assert_eq!(logfmt_value(line, "missing"), None);
    }

    #[test]
    fn not_installed_says_which_package_to_install() {
        let message = InfluxdError::NotInstalled.to_string();
        assert!(message.contains("Debian package `influxdb`"), "{message}");
    }
}

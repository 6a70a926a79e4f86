//! A real PostgreSQL server (Debian package `postgresql`) of the test's own, for the
//! control's shared-store tests: no system service is used or needed.
//!
//! [`Postgres::start`] runs `initdb` into a fresh temporary directory (a superuser
//! `leasehold` with a random password, password auth over TCP, `fsync` off: the data is
//! thrown away), then `pg_ctl start` on a free loopback port with its Unix socket in the
//! same directory, and creates the database `leasehold`. [`Postgres::url`] is what a
//! control is given (`postgres://leasehold:…@127.0.0.1:PORT/leasehold`).
//!
//! PostgreSQL refuses to run as root, and the tests run as root here: the server then
//! runs as the unprivileged `postgres` user (created by the Debian package), or
//! `nobody` where that does not exist, and the temporary directory is handed to it.
//!
//! [`Postgres::start_tls`] does the same with `ssl = on`, serving a certificate and key
//! the test gives (from [`crate::tls::TestCa`], say): the key file is the server's user's
//! and 0600, as PostgreSQL demands. Its clients choose plain or TLS (`sslmode`).
//!
//! [`Postgres::start_also_on`] makes it listen on more addresses than loopback (a veth
//! address, for a replica in a network namespace of the test's own), reached through
//! [`Postgres::url_via`]; password auth applies there too.
//!
//! [`Postgres::psql`] runs a query as the superuser, for tests that check what the
//! control recorded.
//!
//! [`Postgres::stop`], [`Postgres::kill`] and [`Postgres::start_again`] take it down
//! (cleanly, or as a crash would) and bring it back on the same port with the same data,
//! for "PostgreSQL restarted under load" tests. [`Drop`] stops it at once
//! (`pg_ctl stop -m immediate`), so no server outlives its test.
//!
//! The binaries are looked up in `/usr/lib/postgresql/<version>/bin` (newest version
//! first; Debian does not put `initdb` or `pg_ctl` on `PATH`), then on `PATH`. Missing,
//! [`Postgres::start`] fails with [`PostgresError::NotInstalled`]: tests that need it
//! fail, never skip (`scripts/test.sh` installs it).

use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

/// The superuser every harness creates.
pub const USER: &str = "leasehold";
/// The database every harness creates.
pub const DATABASE: &str = "leasehold";
/// How long `pg_ctl` waits for the server to start or stop: generous, since parallel
/// tests start several at once on a loaded machine.
pub const PG_CTL_TIMEOUT: Duration = Duration::from_secs(60);
/// Fresh ports tried by [`Postgres::start`] before giving up on port clashes.
const PORT_ATTEMPTS: usize = 5;
/// Attempts by [`Postgres::start_again`] to re-bind the same port.
const REBIND_ATTEMPTS: usize = 20;
const LOG_TAIL_LINES: usize = 25;

/// Everything that can go wrong driving PostgreSQL. `Debug` prints the same text as
/// `Display`, so a test's `.unwrap()` shows the install hint or the log tail readably.
#[non_exhaustive]
pub enum PostgresError {
    /// `initdb`/`pg_ctl` not found.
    NotInstalled,
    /// A local operation (temporary directory, ownership, spawning) failed.
    Io {
        /// What was being done.
        what: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// A PostgreSQL program failed.
    Command {
        /// Which.
        what: String,
        /// Its output and the end of the server log.
        output: String,
    },
}

impl fmt::Display for PostgresError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotInstalled => write!(
                f,
                "PostgreSQL is not installed (no initdb/pg_ctl under /usr/lib/postgresql/*/bin \
                 or on PATH): install the Debian package `postgresql` (scripts/test.sh does)"
            ),
            Self::Io { what, source } => write!(f, "{what}: {source}"),
            Self::Command { what, output } => write!(f, "{what} failed:\n{output}"),
        }
    }
}

impl fmt::Debug for PostgresError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for PostgresError {}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> PostgresError {
    move |source| PostgresError::Io { what, source }
}

/// The certificate and key a server with TLS serves, PEM.
pub struct ServerTls {
    /// The certificate (chain), leaf first.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl From<&crate::tls::TestCa> for ServerTls {
    fn from(ca: &crate::tls::TestCa) -> Self {
        Self {
            cert_pem: ca.server_cert_pem.clone(),
            key_pem: ca.server_key_pem.clone(),
        }
    }
}

/// A running PostgreSQL of the test's own.
pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    /// Who the server runs as (uid, gid), when the test runs as root.
    run_as: Option<(u32, u32)>,
    port: u16,
    password: String,
    running: bool,
    /// Whether it serves TLS (its certificate and key in the temporary directory).
    tls: bool,
    /// Addresses listened on besides loopback.
    also_on: Vec<IpAddr>,
}

impl fmt::Debug for Postgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Postgres")
            .field("dir", &self.dir.path())
            .field("port", &self.port)
            .field("running", &self.running)
            .finish_non_exhaustive()
    }
}

impl Postgres {
    /// Initializes and starts a server on a free loopback port; see the module docs.
    pub fn start() -> Result<Self, PostgresError> {
        Self::start_with(None, &[])
    }

    /// [`Postgres::start`], with TLS on, serving `tls`.
    pub fn start_tls(tls: &ServerTls) -> Result<Self, PostgresError> {
        Self::start_with(Some(tls), &[])
    }

    /// [`Postgres::start`], listening on `addrs` too (each must be an address of this
    /// host already), with password auth for clients on their subnets.
    pub fn start_also_on(addrs: &[IpAddr]) -> Result<Self, PostgresError> {
        Self::start_with(None, addrs)
    }

    fn start_with(tls: Option<&ServerTls>, addrs: &[IpAddr]) -> Result<Self, PostgresError> {
        let bin = find_bin().ok_or(PostgresError::NotInstalled)?;
        let run_as = if running_as_root() {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("leasehold-pg")
            .tempdir()
            .map_err(io_err("creating the temporary directory"))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).map_err(io_err(
                "handing the temporary directory to the server's user",
            ))?;
        }
        let mut password = [0u8; 16];
        getrandom::fill(&mut password).expect("the operating system's random source failed");
        let mut pg = Self {
            dir,
            bin,
            run_as,
            port: 0,
            password: data_encoding::HEXLOWER.encode(&password),
            running: false,
            tls: false,
            also_on: addrs.to_vec(),
        };
        pg.init()?;
        if let Some(tls) = tls {
            pg.install_tls(tls)?;
        }
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            pg.port = free_port().map_err(io_err("finding a free port"))?;
            match pg.pg_ctl_start() {
                Ok(()) => {
                    pg.create_database(DATABASE)?;
                    return Ok(pg);
                }
                // Most likely another process took the port between our check and
                // the server's bind: try another.
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// `postgres://leasehold:PASSWORD@127.0.0.1:PORT/leasehold`.
    pub fn url(&self) -> String {
        self.url_for(DATABASE)
    }

    /// The URL of database `name` on this server.
    pub fn url_for(&self, name: &str) -> String {
        format!(
            "postgres://{USER}:{}@127.0.0.1:{}/{name}",
            self.password, self.port
        )
    }

    /// The URL of the database `leasehold` through `addr`, one of
    /// [`Postgres::start_also_on`]'s addresses.
    pub fn url_via(&self, addr: IpAddr) -> String {
        format!(
            "postgres://{USER}:{}@{addr}:{}/{DATABASE}",
            self.password, self.port
        )
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The directory holding its Unix socket (`.s.PGSQL.PORT`).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// Creates database `name` (a fresh one per test, say); returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String, PostgresError> {
        let port = self.port.to_string();
        let socket = self.socket_dir();
        self.run(
            "createdb",
            &["-h", path_str(&socket), "-p", &port, "-U", USER, name],
        )?;
        Ok(self.url_for(name))
    }

    /// Runs `sql` in the database `leasehold` with `psql` (over the Unix socket) and
    /// returns its rows, one line each, columns separated by `|`: how a test looks
    /// at what the control recorded, beside what it says.
    pub fn psql(&self, sql: &str) -> Result<Vec<String>, PostgresError> {
        let port = self.port.to_string();
        let socket = self.socket_dir();
        let output = self.run(
            "psql",
            &[
                "-h",
                path_str(&socket),
                "-p",
                &port,
                "-U",
                USER,
                "-d",
                DATABASE,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
        )?;
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_owned)
            .collect())
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`).
    pub fn stop(&mut self) -> Result<(), PostgresError> {
        self.pg_ctl_stop("fast")
    }

    /// Stops the server as a crash would (`pg_ctl stop -m immediate`: no checkpoint,
    /// crash recovery at the next start). The server runs with
    /// `synchronous_commit=off` for speed, so the last commits (up to a fraction of a
    /// second) may be lost, as on a real server so configured: a test that counts
    /// records across a restart uses [`Postgres::stop`].
    pub fn kill(&mut self) -> Result<(), PostgresError> {
        self.pg_ctl_stop("immediate")
    }

    /// Starts the stopped server again on the same port with the same data.
    pub fn start_again(&mut self) -> Result<(), PostgresError> {
        let mut last = None;
        for _ in 0..REBIND_ATTEMPTS {
            match self.pg_ctl_start() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// The server's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn init(&self) -> Result<(), PostgresError> {
        let pwfile = self.dir.path().join("pwfile");
        fs::write(&pwfile, &self.password).map_err(io_err("writing the password file"))?;
        fs::create_dir(self.socket_dir()).map_err(io_err("creating the socket directory"))?;
        if let Some((uid, gid)) = self.run_as {
            for path in [&pwfile, &self.socket_dir()] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .map_err(io_err("handing a file to the server's user"))?;
            }
        }
        let data = self.data_dir();
        let result = self.run(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                USER,
                "--pwfile",
                path_str(&pwfile),
                // Only the test (as the server's user, over the socket) gets in without
                // the password; TCP clients authenticate as a control would.
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let _ = fs::remove_file(&pwfile);
        result?;
        if !self.also_on.is_empty() {
            // initdb's rules admit TCP from loopback only; `samenet` is every subnet
            // this host has an address in (the veth links).
            let hba = data.join("pg_hba.conf");
            let mut rules = fs::read_to_string(&hba).map_err(io_err("reading pg_hba.conf"))?;
            rules.push_str("host all all samenet scram-sha-256\n");
            fs::write(&hba, rules).map_err(io_err("writing pg_hba.conf"))?;
        }
        Ok(())
    }

    /// Writes the certificate and key where the server reads them: the key 0600 and
    /// the server's user's, or PostgreSQL refuses to start.
    fn install_tls(&mut self, tls: &ServerTls) -> Result<(), PostgresError> {
        use std::os::unix::fs::OpenOptionsExt;
        let (cert, key) = self.tls_files();
        fs::write(&cert, &tls.cert_pem).map_err(io_err("writing the server certificate"))?;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key)
            .map_err(io_err("creating the server key file"))?;
        io::Write::write_all(&mut file, tls.key_pem.as_bytes())
            .map_err(io_err("writing the server key"))?;
        if let Some((uid, gid)) = self.run_as {
            for path in [&cert, &key] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .map_err(io_err("handing a TLS file to the server's user"))?;
            }
        }
        self.tls = true;
        Ok(())
    }

    fn tls_files(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("server.crt"),
            self.dir.path().join("server.key"),
        )
    }

    fn pg_ctl_start(&mut self) -> Result<(), PostgresError> {
        let listen: Vec<String> = std::iter::once("127.0.0.1".to_owned())
            .chain(self.also_on.iter().map(IpAddr::to_string))
            .collect();
        let mut options = format!(
            "-p {} -k {} -c listen_addresses={} -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off",
            self.port,
            path_str(&self.socket_dir()),
            listen.join(",")
        );
        if self.tls {
            let (cert, key) = self.tls_files();
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                path_str(&cert),
                path_str(&key)
            ));
        }
        let data = self.data_dir();
        let log = self.log_path();
        let timeout = PG_CTL_TIMEOUT.as_secs().to_string();
        self.run(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-t",
                &timeout,
                "-D",
                path_str(&data),
                "-l",
                path_str(&log),
                "-o",
                &options,
            ],
        )?;
        self.running = true;
        Ok(())
    }

    fn pg_ctl_stop(&mut self, mode: &str) -> Result<(), PostgresError> {
        let data = self.data_dir();
        let timeout = PG_CTL_TIMEOUT.as_secs().to_string();
        self.run(
            "pg_ctl",
            &[
                "stop",
                "-w",
                "-t",
                &timeout,
                "-m",
                mode,
                "-D",
                path_str(&data),
            ],
        )?;
        self.running = false;
        Ok(())
    }

    /// Runs PostgreSQL program `program` as the server's user; fails with its output
    /// and the log's tail unless it succeeds.
    fn run(&self, program: &str, args: &[&str]) -> Result<Output, PostgresError> {
        let mut command = Command::new(self.bin.join(program));
        command
            .args(args)
            // The test's working directory may be closed to the server's user.
            .current_dir(self.dir.path())
            .env_remove("PGDATA")
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        let output = command
            .output()
            .map_err(io_err("running a PostgreSQL program"))?;
        if output.status.success() {
            return Ok(output);
        }
        Err(PostgresError::Command {
            what: format!("{program} {}", args.join(" ")),
            output: format!(
                "{}{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                log_tail(&self.log()),
            ),
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self.kill();
        }
    }
}

/// The directory holding `initdb` and `pg_ctl`: the newest Debian version's, else the
/// one on `PATH`.
fn find_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|dir| has_tools(dir)))
}

fn has_tools(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "createdb", "psql"]
        .iter()
        .all(|tool| dir.join(tool).is_file())
}

/// Whether this process runs as root: `/proc/self` belongs to the effective user.
fn running_as_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The uid and gid of `postgres`, or else `nobody`, from `/etc/passwd`.
fn unprivileged_user() -> Result<(u32, u32), PostgresError> {
    let passwd = fs::read_to_string("/etc/passwd").map_err(io_err("reading /etc/passwd"))?;
    let find = |name: &str| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields.as_slice() {
                [user, _, uid, gid, ..] if *user == name => {
                    Some((uid.parse().ok()?, gid.parse().ok()?))
                }
                _ => None,
            }
        })
    };
    find("postgres")
        .or_else(|| find("nobody"))
        .ok_or(PostgresError::Io {
            what: "finding an unprivileged user to run PostgreSQL as (postgres or nobody)",
            source: io::ErrorKind::NotFound.into(),
        })
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

fn log_tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    if lines.is_empty() {
        String::new()
    } else {
        format!("--- server log (tail) ---\n{}\n", lines[start..].join("\n"))
    }
}

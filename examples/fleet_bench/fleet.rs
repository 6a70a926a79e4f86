//! The control under test: one or more `leasehold control serve` processes (the release
//! binary built next to this example) sharing one identity and one store, on loopback
//! ports fixed at start so that a restarted replica comes back where its clients look.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::Context;
use leasehold_channel::home::Home;
use leasehold_channel::{Identity, PublicIdentity};
use leasehold_control::StoreLocation;
use leasehold_control::datadir::{DataDir, Settings};

use crate::report::process_cpu;

/// The clients of a benchmark all connect from 127.0.0.1, where a real fleet comes from
/// many hosts: the per-source cap on connections still in their handshake is raised to
/// the total cap (its default, 1024), which stays as shipped.
const PER_SOURCE_CAP: &str = "1024";

/// Replicas of one control, stopped or serving.
pub struct Fleet {
    bin: PathBuf,
    home: Home,
    data: Vec<DataDir>,
    listen: Vec<SocketAddr>,
    store_url: Option<String>,
    children: Vec<Child>,
    /// Each serving replica's admin listener (`/readyz`).
    admin: Vec<SocketAddr>,
    /// The control's identity (every replica's).
    pub control: PublicIdentity,
}

impl Fleet {
    /// `control init` in `root` (the store at `store_url`, or the embedded one), and the
    /// data directory copied for each further replica. Nothing is started.
    pub async fn init(
        root: &Path,
        replicas: usize,
        store_url: Option<&str>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(replicas >= 1, "at least one replica");
        anyhow::ensure!(
            store_url.is_some() || replicas == 1,
            "several replicas need a shared (PostgreSQL) store"
        );
        let bin = binary()?;
        let home = Home::new(root.join("home"));
        let listen = (0..replicas)
            .map(|_| free_port())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let settings = Settings {
            listen: listen[0],
            advertise: listen.iter().map(ToString::to_string).collect(),
        };
        let location = match store_url {
            Some(url) => StoreLocation::from_str(url).map_err(anyhow::Error::msg)?,
            None => StoreLocation::Embedded,
        };
        let first = DataDir::new(root.join("replica-0"));
        let identity = leasehold_control::init_with_store(&home, &first, &settings, &location)
            .await?
            .public();
        let mut data = vec![first];
        for i in 1..replicas {
            let copy = DataDir::new(root.join(format!("replica-{i}")));
            copy_dir(data[0].path(), copy.path())?;
            data.push(copy);
        }
        Ok(Self {
            bin,
            home,
            data,
            listen,
            store_url: store_url.map(str::to_owned),
            children: Vec::new(),
            admin: Vec::new(),
            control: identity,
        })
    }

    /// The `leasehold` binary the replicas run.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The home holding the `admin` identity, enrolled with the first replica.
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// The first replica's data directory (its embedded store, if it has one).
    pub fn data(&self) -> &DataDir {
        &self.data[0]
    }

    /// Every replica's address, as a ticket carries them.
    pub fn addrs(&self) -> Vec<String> {
        self.listen.iter().map(ToString::to_string).collect()
    }

    /// Copies the replicas' logs (`replica-N.log`, warnings and errors) into the
    /// directory `FLEET_LOGS` names, if set: the temporary home goes at the end.
    pub fn keep_logs(&self) -> anyhow::Result<()> {
        let Some(dir) = std::env::var_os("FLEET_LOGS") else {
            return Ok(());
        };
        std::fs::create_dir_all(&dir)?;
        for i in 0..self.listen.len() {
            let name = format!("replica-{i}.log");
            let from = self.home.root().join(&name);
            std::fs::copy(&from, std::path::Path::new(&dir).join(&name))
                .with_context(|| format!("copying {}", from.display()))?;
        }
        Ok(())
    }

    /// The local admin identity.
    pub fn admin(&self) -> anyhow::Result<Identity> {
        Ok(self.home.load_identity("admin")?)
    }

    /// Starts every replica at once; returns when all are ready, with the time from
    /// spawning the first to the last ready file (start-up, store checks and the
    /// store scan included).
    pub fn start(&mut self) -> anyhow::Result<Duration> {
        anyhow::ensure!(self.children.is_empty(), "already serving");
        let spawned = Instant::now();
        let mut ready_files = Vec::new();
        for (i, (data, listen)) in self.data.iter().zip(&self.listen).enumerate() {
            let ready = self.home.root().join(format!("replica-{i}.ready"));
            let _ = std::fs::remove_file(&ready);
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.home.root().join(format!("replica-{i}.log")))?;
            let mut command = Command::new(&self.bin);
            command
                .arg("--home")
                .arg(self.home.root())
                .args(["control", "serve", "--data-dir"])
                .arg(data.path())
                .args(["--listen", &listen.to_string()])
                .args(["--max-unauthenticated-per-ip", PER_SOURCE_CAP])
                .arg("--ready-file")
                .arg(&ready)
                .env("LEASEHOLD_CONTROL_ADMIN_LISTEN", "127.0.0.1:0")
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(log);
            if let Some(url) = &self.store_url {
                command.env("LEASEHOLD_STORE_URL", url);
            }
            let child = command
                .spawn()
                .with_context(|| format!("starting {}", self.bin.display()))?;
            self.children.push(child);
            ready_files.push(ready);
        }
        let deadline = spawned + Duration::from_secs(600);
        for ready in &ready_files {
            loop {
                if let Ok(text) = std::fs::read_to_string(ready)
                    && let Some(admin) = text.lines().find_map(|l| l.strip_prefix("admin="))
                {
                    self.admin.push(admin.trim().parse()?);
                    break;
                }
                for child in &mut self.children {
                    if let Some(status) = child.try_wait()? {
                        anyhow::bail!(
                            "control serve exited ({status}); see {}",
                            self.home.root().display()
                        );
                    }
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "control serve not ready in 600 s"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok(spawned.elapsed())
    }

    /// Waits until every replica answers `/readyz` with 200 (store reachable, add-on
    /// known: a replica learns an add-on configured through another from the store).
    pub async fn ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        for admin in &self.admin {
            let url = format!("http://{admin}/readyz");
            while !reqwest::get(&url)
                .await
                .is_ok_and(|answer| answer.status().is_success())
            {
                anyhow::ensure!(Instant::now() < deadline, "{url} not ready in 60 s");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// The sum over the replicas of the `/metrics` sample `name` (a counter's
    /// `_total` included); a replica that does not answer counts nothing.
    pub async fn metric(&self, name: &str) -> f64 {
        let mut sum = 0.0;
        for admin in &self.admin {
            let Ok(answer) = reqwest::get(format!("http://{admin}/metrics")).await else {
                continue;
            };
            let text = answer.text().await.unwrap_or_default();
            sum += text
                .lines()
                .filter_map(|line| line.split_once(' '))
                .filter(|(sample, _)| {
                    *sample == name || sample.strip_suffix("_total") == Some(name)
                })
                .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
                .sum::<f64>();
        }
        sum
    }

    /// Kills every replica (`SIGKILL`, as a crash or a node loss would) and waits for
    /// them to be gone.
    pub fn kill(&mut self) {
        self.admin.clear();
        for mut child in self.children.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops every replica as an operator would (`SIGTERM`: the store closed cleanly)
    /// and waits for them to be gone.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.admin.clear();
        for mut child in self.children.drain(..) {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()?;
            anyhow::ensure!(status.success(), "kill -TERM {} failed", child.id());
            child.wait()?;
        }
        Ok(())
    }

    /// The CPU time (user + system) every serving replica has used so far.
    pub fn cpu(&self) -> Duration {
        self.children
            .iter()
            .filter_map(|child| process_cpu(&child.id().to_string()))
            .sum()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `leasehold`, built next to this example (`cargo build --release --bin leasehold`).
fn binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(|examples| examples.parent())
        .context("the example's directory")?
        .join("leasehold");
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: cargo build --release --bin leasehold",
        bin.display()
    );
    Ok(bin)
}

/// A loopback port free now (the kernel's choice), for a replica to listen on.
fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Copies a data directory (identity key, settings, add-on) for another replica.
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

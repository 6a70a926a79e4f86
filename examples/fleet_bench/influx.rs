//! The InfluxDB stand-in (the testkit's V2Server) in a process of its own: a child of
//! this benchmark run in `serve-influx` mode. In the benchmark's own process it shared
//! the runtime with 10,000 clients, and in the thundering herd the replicas' calls to it
//! timed out because the clients starved it; a real InfluxDB is not starved by the
//! sidecars' handshakes either.
//!
//! The child prints one line, `URL ORG_ID TOKEN`, on its stdout (a pipe to the parent:
//! the token is in no argv and no log) and serves until its stdin closes, which happens
//! when the parent exits, however it exits.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use leasehold_testkit::v2server::V2Server;

/// The stand-in running in a child process, stopped when dropped.
pub struct Influx {
    child: Child,
    /// Its base URL.
    pub url: String,
    /// Its organization id.
    pub org_id: String,
    /// Its operator token.
    pub token: String,
}

impl Influx {
    /// Starts `this executable serve-influx` and reads where it listens.
    /// (Blocking: called once, at set-up.)
    pub fn spawn() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the benchmark's executable")?;
        let mut child = Command::new(exe)
            .arg("serve-influx")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the InfluxDB stand-in")?;
        let stdout = child.stdout.take().context("the stand-in's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the stand-in's address")?;
        let mut words = line.split_whitespace().map(str::to_owned);
        let (Some(url), Some(org_id), Some(token)) = (words.next(), words.next(), words.next())
        else {
            anyhow::bail!("the InfluxDB stand-in exited before saying where it listens");
        };
        Ok(Self {
            child,
            url,
            org_id,
            token,
        })
    }
}

impl Drop for Influx {
    fn drop(&mut self) {
        // Closing its stdin would do; killing does not wait for in-flight requests.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The child's side: serves until stdin closes.
pub async fn serve() -> anyhow::Result<()> {
    let v2 = V2Server::start_default().await?;
    println!("{} {} {}", v2.url(), v2.org_id(), v2.admin_token());
    // Read to the end: EOF (or an error) means the parent is gone.
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await?;
    v2.stop().await;
    Ok(())
}

//! The InfluxDB stand-in (the testkit's V2Server) in a process of its own: a child of
//! this benchmark run in `serve-influx` mode. In the benchmark's own process it shared
//! the runtime with 10,000 clients, and in the thundering herd the replicas' calls to it
//! timed out because the clients starved it; a real InfluxDB is not starved by the
//! sidecars' handshakes either.
//!
//! The parent makes the stand-in's operator token and org id and writes them as the
//! first line of the child's stdin (a pipe: the token is in no argv, no output and no
//! log); the child answers with one line, its URL, on its stdout and serves until its
//! stdin closes, which happens when the parent exits, however it exits.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use leasehold_testkit::v2server::{V2Options, V2Server};

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
        let options = V2Options::random();
        let mut stdin = child.stdin.take().context("the stand-in's stdin")?;
        writeln!(stdin, "{} {}", options.admin_token, options.org_id)
            .context("handing the stand-in its token")?;
        // Kept open: the child serves until it closes.
        child.stdin = Some(stdin);
        let stdout = child.stdout.take().context("the stand-in's stdout")?;
        let mut url = String::new();
        BufReader::new(stdout)
            .read_line(&mut url)
            .context("reading the stand-in's address")?;
        let url = url.trim().to_owned();
        if url.is_empty() {
            anyhow::bail!("the InfluxDB stand-in exited before saying where it listens");
        }
        Ok(Self {
            child,
            url,
            org_id: options.org_id,
            token: options.admin_token,
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

/// The child's side: takes its token and org id from the first line of stdin, serves
/// until stdin closes.
pub async fn serve() -> anyhow::Result<()> {
    let first = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).map(|_| line)
    })
    .await??;
    let mut words = first.split_whitespace().map(str::to_owned);
    let (Some(admin_token), Some(org_id)) = (words.next(), words.next()) else {
        anyhow::bail!("serve-influx: expected `TOKEN ORG_ID` on the first line of stdin");
    };
    let v2 = V2Server::start(V2Options {
        admin_token,
        org_id,
        ..V2Options::random()
    })
    .await?;
    println!("{}", v2.url());
    // Read to the end: EOF (or an error) means the parent is gone.
    tokio::task::spawn_blocking(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    })
    .await?;
    v2.stop().await;
    Ok(())
}

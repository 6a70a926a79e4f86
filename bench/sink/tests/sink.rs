//! The helpers `bench/run.sh` relies on, run as the harness runs them. (Being an
//! integration test also makes `cargo test --workspace` build `target/debug/sink`, which
//! `tests/bench_smoke.rs` then uses.)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

const SINK: &str = env!("CARGO_BIN_EXE_sink");

/// A `sink serve`/`sink issuer` child, killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(role: &str) -> Self {
        let mut child = Command::new(SINK)
            .args([role, "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        Self { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request on a fresh connection; the whole answer.
fn exchange(addr: &str, method: &str, path: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn serve_reads_the_body_and_answers_204() {
    let sink = Server::start("serve");
    let body = "cpu,host=a usage=1 1700000000\n".repeat(1000);
    let answer = exchange(&sink.addr, "POST", "/write?db=telemetry", &body);
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
}

#[test]
fn issuer_creates_lists_and_deletes_authorizations() {
    let issuer = Server::start("issuer");
    let created = exchange(&issuer.addr, "POST", "/api/v2/authorizations", "{}");
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    assert!(created.contains(r#""id":"0000000000000001""#), "{created}");
    assert!(created.contains(r#""token":"bench-token-"#), "{created}");
    let second = exchange(&issuer.addr, "POST", "/api/v2/authorizations", "{}");
    assert!(second.contains(r#""id":"0000000000000002""#), "{second}");
    let list = exchange(&issuer.addr, "GET", "/api/v2/authorizations?orgID=1", "");
    assert!(list.contains(r#"{"authorizations":[]}"#), "{list}");
    let deleted = exchange(
        &issuer.addr,
        "DELETE",
        "/api/v2/authorizations/0000000000000001",
        "",
    );
    assert!(deleted.starts_with("HTTP/1.1 204"), "{deleted}");
    let other = exchange(&issuer.addr, "GET", "/api/v2/write", "");
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
}

#[test]
fn load_sends_at_the_rate_and_reports_percentiles() {
    let sink = Server::start("serve");
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.lp");
    std::fs::write(&body, "cpu,host=a usage=1 1700000000\n").unwrap();
    let out = Command::new(SINK)
        .args(["load", "--url"])
        .arg(format!("http://{}/write?db=telemetry", sink.addr))
        .args(["--rate", "200", "--seconds", "0.5", "--warmup", "0.1"])
        .args(["--connections", "2", "--body"])
        .arg(&body)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result = stdout.lines().find(|l| l.starts_with("RESULT ")).unwrap();
    let field = |key: &str| -> u64 {
        result
            .split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in {result}"))
            .parse()
            .unwrap()
    };
    assert_eq!(field("requests"), 100, "{result}");
    assert_eq!(field("errors"), 0, "{result}");
    assert!(field("p50_us") <= field("p99_us"), "{result}");
    assert!(field("p99_us") <= field("max_us"), "{result}");
}

#[test]
fn load_counts_refused_requests_as_errors() {
    // A server that answers 503 to everything: nothing is recorded as a latency.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buffer = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buffer) {
                    if n == 0
                        || stream
                            .write_all(
                                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}",
                            )
                            .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.lp");
    std::fs::write(&body, "x").unwrap();
    let out = Command::new(SINK)
        .args(["load", "--url"])
        .arg(format!("http://{addr}/write"))
        .args([
            "--rate",
            "100",
            "--seconds",
            "0.2",
            "--warmup",
            "0",
            "--connections",
            "1",
        ])
        .arg("--body")
        .arg(&body)
        .output()
        .unwrap();
    // Every request failed, so there is no latency to report: the command fails.
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no request completed"));
}

#[test]
fn ports_are_distinct() {
    let out = Command::new(SINK).args(["ports", "5"]).output().unwrap();
    let mut ports: Vec<u16> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 5);
}

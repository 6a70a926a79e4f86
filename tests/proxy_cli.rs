//! `leasehold proxy` as a process, flag by flag: `--ticket` (first start enrolls, a
//! restart does not), SIGTERM during a slow streaming upload (completes within
//! `--shutdown-grace`, cut at its end), `--upstream`, `--max-connections`,
//! `--log-format json`, and the exit code 1 paths.
//!
//! The upstream is the InfluxDB v2 test server (or a recording stand-in for
//! `--upstream`); every listener binds port 0.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{EVENT_DEADLINE, Env, ProxyProcess};
use leasehold_testkit::v2server::V2Server;

/// A serving control with the v2 add-on configured; nothing enrolled but the admin.
fn control(v2: &V2Server) -> (Env, common::ControlProcess) {
    let mut env = Env::new();
    env.init_control();
    let control = env.serve();
    env.configure_v2(v2, &[]);
    (env, control)
}

/// A raw HTTP/1.1 connection to the proxy.
fn connect(proxy: &ProxyProcess) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    stream.set_read_timeout(Some(EVENT_DEADLINE)).unwrap();
    stream
}

/// Reads one response head (up to the blank line); empty if the connection closed
/// first (or was reset).
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// `POST /api/v2/write` with a chunked body, head only.
fn start_upload(stream: &mut TcpStream, v2: &V2Server) {
    let head = format!(
        "POST /api/v2/write?org={}&bucket=telemetry&precision=s HTTP/1.1\r\n\
         Host: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        v2.org_name()
    );
    stream.write_all(head.as_bytes()).unwrap();
}

/// One chunk carrying one line-protocol point.
fn chunk(i: usize) -> Vec<u8> {
    let line = format!("upload,seq={i} v=1 {}\n", 1_700_000_000 + i);
    format!("{:x}\r\n{line}\r\n", line.len()).into_bytes()
}

/// A proxy for `app` with shutdown grace `grace`, and a chunked upload through it whose
/// first chunk the upstream is already reading.
async fn upload_in_flight(
    v2: &V2Server,
    grace: &str,
) -> (Env, common::ControlProcess, ProxyProcess, TcpStream) {
    let (env, control) = control(v2);
    env.enrolled_identity("app", &[]);
    let proxy = env.proxy("app", &["--shutdown-grace", grace]);
    proxy.wait_ready().await;

    let seen = v2.requests_seen();
    let mut upload = connect(&proxy);
    start_upload(&mut upload, v2);
    upload.write_all(&chunk(0)).unwrap();
    // The proxy is forwarding it: the upstream has the request (and is reading its body).
    common::wait_until(EVENT_DEADLINE, "the upload to reach InfluxDB", || {
        v2.requests_seen() > seen
    });
    (env, control, proxy, upload)
}

#[tokio::test(flavor = "multi_thread")]
async fn ticket_enrolls_on_first_start_and_a_restart_does_not_enroll_again() {
    let v2 = V2Server::start_default().await.unwrap();
    let (env, _control) = control(&v2);
    let ticket = env.ticket(&["service=edge"], &[]);
    let ticket = ticket.to_str().unwrap();
    assert!(!env.home().join("identities/edge.key").exists());

    // First start: creates the identity, redeems the (single-use) ticket, serves.
    let proxy = env.proxy("edge", &["--ticket", ticket]);
    proxy.wait_ready().await;
    assert!(proxy.log().contains("enrolled"), "{}", proxy.log());
    let key = env.home().join("identities/edge.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", key.display());
    assert_eq!(env.json(&["member", "list"]).as_array().unwrap().len(), 2);
    let status = proxy.stop();
    assert!(status.success(), "{status}");

    // Restart with the spent ticket: already enrolled, so it is not redeemed again
    // (it would be refused) and the proxy serves.
    let proxy = env.proxy("edge", &["--ticket", ticket]);
    proxy.wait_ready().await;
    assert!(!proxy.log().contains("enrolled"), "{}", proxy.log());
    assert_eq!(env.json(&["member", "list"]).as_array().unwrap().len(), 2);
    let write = reqwest::Client::new()
        .post(format!(
            "{}/api/v2/write?org={}&bucket=telemetry&precision=s",
            proxy.url(),
            v2.org_name()
        ))
        .body("cpu v=1 1700000000\n")
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 204);
    assert!(proxy.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_a_slow_upload_finish_within_the_grace_period() {
    let v2 = V2Server::start_default().await.unwrap();
    let (_env, _control, mut proxy, mut upload) = upload_in_flight(&v2, "60s").await;
    proxy.process().signal("TERM");
    // The rest of the body trickles in after the signal.
    for i in 1..6 {
        std::thread::sleep(Duration::from_millis(200));
        upload.write_all(&chunk(i)).unwrap();
    }
    upload.write_all(b"0\r\n\r\n").unwrap();
    let head = read_head(&mut upload);
    assert!(
        head.starts_with("HTTP/1.1 204"),
        "{head:?}\n{}",
        proxy.log()
    );
    assert_eq!(v2.point_count("telemetry"), 6);
    let status = proxy.process().wait_exit(EVENT_DEADLINE);
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        proxy.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_cuts_an_upload_still_running_when_the_grace_period_ends() {
    const GRACE: Duration = Duration::from_secs(2);
    let v2 = V2Server::start_default().await.unwrap();
    let (_env, _control, mut proxy, mut upload) = upload_in_flight(&v2, "2s").await;
    let signalled = Instant::now();
    proxy.process().signal("TERM");
    // An upload that never ends: a chunk every 100 ms until the proxy hangs up.
    let mut writer = upload.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for i in 1.. {
            std::thread::sleep(Duration::from_millis(100));
            if writer.write_all(&chunk(i)).is_err() {
                return;
            }
        }
    });
    let status = proxy.process().wait_exit(EVENT_DEADLINE);
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        proxy.log()
    );
    assert!(
        signalled.elapsed() >= GRACE,
        "stopped before the grace period ended"
    );
    let head = read_head(&mut upload);
    assert!(
        !head.starts_with("HTTP/1.1 2"),
        "a cut upload is not a success: {head:?}"
    );
    trickle.join().unwrap();
    assert_eq!(
        v2.point_count("telemetry"),
        0,
        "nothing of the cut upload landed"
    );
}

/// A stand-in upstream that answers 204 to everything and records request heads.
fn recording_upstream() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&heads);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let recorded = Arc::clone(&recorded);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                loop {
                    let mut head = String::new();
                    let mut length = 0usize;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        head.push_str(&line);
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    recorded.lock().unwrap().push(head);
                    let answer = "HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";
                    if writer.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, heads)
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_flag_overrides_the_addon_endpoint() {
    let v2 = V2Server::start_default().await.unwrap();
    let (env, _control) = control(&v2);
    env.enrolled_identity("app", &[]);
    let (upstream, heads) = recording_upstream();
    let proxy = env.proxy("app", &["--upstream", &upstream]);
    proxy.wait_ready().await;
    let before = v2.requests_seen();
    let response = reqwest::Client::new()
        .post(format!("{}/api/v2/write?bucket=telemetry", proxy.url()))
        .body("cpu v=1\n")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let heads = heads.lock().unwrap().clone();
    let write = heads
        .iter()
        .find(|h| h.starts_with("POST /api/v2/write"))
        .unwrap_or_else(|| panic!("the write did not reach --upstream: {heads:?}"));
    // With the lease's token, a real authorization in the add-on's InfluxDB.
    let tokens: Vec<String> = v2.authorizations().into_iter().map(|a| a.token).collect();
    assert!(
        tokens.iter().any(|t| write.contains(&format!("Token {t}"))),
        "{write}"
    );
    assert_eq!(
        v2.point_count("telemetry"),
        0,
        "nothing went to the add-on's URL"
    );
    assert!(v2.requests_seen() >= before);
}

#[tokio::test(flavor = "multi_thread")]
async fn max_connections_flag_limits_concurrent_connections() {
    let v2 = V2Server::start_default().await.unwrap();
    let (env, _control) = control(&v2);
    env.enrolled_identity("app", &[]);
    let proxy = env.proxy("app", &["--max-connections", "1"]);
    proxy.wait_ready().await;
    let ping = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    // The first connection is served and kept alive, holding the only slot.
    let mut first = connect(&proxy);
    first.write_all(ping).unwrap();
    let head = read_head(&mut first);
    assert!(head.starts_with("HTTP/1.1 204"), "{head:?}");
    // A second is closed without an answer.
    let mut second = connect(&proxy);
    let _ = second.write_all(ping);
    assert_eq!(read_head(&mut second), "");
    // Once the first goes, there is room again.
    drop(first);
    common::wait_until(EVENT_DEADLINE, "a free connection slot", || {
        let mut again = connect(&proxy);
        let _ = again.write_all(ping);
        read_head(&mut again).starts_with("HTTP/1.1 204")
    });
}

/// Asserts every line of `log` is a JSON object with a level and a message.
fn assert_json_lines(what: &str, log: &str) {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "{what} logged nothing");
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {line}"));
        assert!(value["level"].is_string(), "{what}: {line}");
        assert!(value["message"].is_string(), "{what}: {line}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn log_format_json_writes_one_json_object_per_line() {
    let v2 = V2Server::start_default().await.unwrap();
    let mut env = Env::new();
    env.init_control();
    let control = env.serve_with("debug", &["--log-format", "json"]);
    env.configure_v2(&v2, &[]);
    env.enrolled_identity("app", &[]);
    let mut proxy = env.proxy("app", &["--log-format", "json"]);
    proxy.wait_ready().await;
    let response = reqwest::get(format!("{}/ping", proxy.url())).await.unwrap();
    assert_eq!(response.status(), 204);
    let proxy_log = proxy.process().log.clone();
    assert!(proxy.stop().success());
    let control_log = control.log.clone();
    assert!(control.stop().success());
    assert_json_lines("proxy", &std::fs::read_to_string(proxy_log).unwrap());
    assert_json_lines("control", &std::fs::read_to_string(control_log).unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_failures_exit_1_and_usage_errors_exit_2() {
    let v2 = V2Server::start_default().await.unwrap();
    let (env, control) = control(&v2);
    env.enrolled_identity("app", &[]);

    // The control is down: a runtime failure.
    control.kill9();
    let (code, stderr) = env.fails(&["lease", "create", "--identity", "app"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");

    // The listen address is taken.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = env.fails(&["proxy", "--identity", "app", "--listen", &addr]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );

    // An identity that was never enrolled.
    let (code, stderr) = env.fails(&["proxy", "--identity", "ghost", "--listen", "127.0.0.1:0"]);
    assert_eq!(code, 1, "{stderr}");

    // A health probe of something that does not answer 2xx.
    let (code, stderr) = env.fails(&["health", "--url", &format!("{}/nowhere", v2.url())]);
    assert_eq!(code, 1, "{stderr}");

    // Usage errors, for contrast.
    let (code, _) = env.fails(&["proxy", "--identity", "app", "--max-connections", "many"]);
    assert_eq!(code, 2);
    let (code, _) = env.fails(&["proxy", "--identity", "app", "--shutdown-grace", "soon"]);
    assert_eq!(code, 2);
}

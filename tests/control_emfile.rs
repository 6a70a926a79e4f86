//! The control's accept loop survives running out of file descriptors: it backs off,
//! logs once per interval rather than once per attempt, and serves the waiting client
//! as soon as a descriptor is free again.
//!
//! Alone in its test binary: it lowers this process's own open-files limit and uses up
//! every descriptor, which would disturb any other test running beside it. Linux only
//! (it recognises EMFILE by number).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::setup::{InProcessControl, start_in_process};
use leasehold_channel::conn::Channel;
use leasehold_control::server::Limits;
use leasehold_protocol::{
    Outcome, PROTOCOL_VERSION, Reply, Request, RequestEnvelope, ResponseEnvelope,
};

const EMFILE: i32 = 24;
const PATIENCE: Duration = Duration::from_secs(30);

/// Log lines, collected in memory (writing a log file would need a descriptor).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_accept_loop_backs_off_on_emfile_logs_once_and_keeps_serving() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_env_filter("leasehold_control=warn")
        .with_ansi(false)
        .init();

    let InProcessControl {
        dir: _dir,
        home,
        addr,
        running,
        shutdown,
    } = start_in_process(Limits::default()).await;
    let admin = home.load_identity("admin").unwrap();
    let control = running.identity;

    // Use up every descriptor but one, under a low limit so that this is quick.
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    rlimit::setrlimit(rlimit::Resource::NOFILE, 256, hard).unwrap();
    let mut hog = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(file) => hog.push(file),
            Err(error) if error.raw_os_error() == Some(EMFILE) => break,
            Err(error) => panic!("unexpected error filling the descriptor table: {error}"),
        }
    }
    assert!(
        hog.pop().is_some(),
        "more than 256 descriptors were open already"
    );
    // The client takes the last descriptor; the control cannot accept it.
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let client = tokio::spawn(async move {
        let mut channel = Channel::connect(stream, &admin, &control, PATIENCE)
            .await
            .unwrap();
        let request = RequestEnvelope {
            v: PROTOCOL_VERSION,
            id: 1,
            req: Request::Ping,
        };
        channel
            .send(&serde_json::to_vec(&request).unwrap())
            .await
            .unwrap();
        let answer: ResponseEnvelope =
            serde_json::from_slice(&channel.recv().await.unwrap()).unwrap();
        answer
    });
    wait_for("the accept failure to be logged", || {
        log.text().contains("accept failed")
    })
    .await;
    let failing_since = Instant::now();
    // Let the loop retry a few times (10, 20, 40, 80, 160 ms ...) while still out of
    // descriptors; it must neither give up nor log each attempt.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lines = log.text().matches("accept failed").count();
    let intervals = failing_since.elapsed().as_secs() / 10 + 1;
    assert!(
        lines as u64 <= intervals,
        "{lines} lines in {intervals} log interval(s):\n{}",
        log.text()
    );
    assert!(
        !client.is_finished(),
        "the client was served without a descriptor"
    );

    drop(hog);
    let answer = tokio::time::timeout(PATIENCE, client)
        .await
        .expect("the waiting client is served once descriptors are free")
        .unwrap();
    assert!(matches!(answer.outcome, Outcome::Ok(Reply::Pong { .. })));
    rlimit::setrlimit(rlimit::Resource::NOFILE, soft, hard).unwrap();
    shutdown.cancel();
    running.wait().await;
}

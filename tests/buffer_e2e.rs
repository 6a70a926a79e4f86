//! Store and forward end to end (`leasehold proxy --buffer-dir`): real control, proxy
//! and InfluxDB 1.x processes; the 2.x write API against the v2 test server (the Debian
//! `influxd` is 1.x, which has no `/api/v2/write`).
//!
//! Outages are short (a few seconds, not the minutes a device sees) so the suite stays
//! fast; the mechanism does not depend on their length.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{ControlProcess, EVENT_DEADLINE, Env, ProxyProcess, path_str};
use leasehold_testkit::influxd::Influxd;
use leasehold_testkit::v2server::V2Server;

/// A serving control with the v1 add-on (WRITE/READ on telemetry) and an enrolled `app`.
async fn setup() -> (Influxd, Env, ControlProcess) {
    let db = Influxd::start()
        .await
        .expect("a real influxd (Debian package influxdb) is required");
    let mut env = Env::new();
    env.init_control();
    let control = env.serve();
    env.configure_v1(&db, &[r#"WRITE ON "telemetry""#, r#"READ ON "telemetry""#]);
    env.enrolled_identity("app", &[]);
    (db, env, control)
}

fn buffered_proxy(env: &Env, dir: &Path, extra: &[&str]) -> ProxyProcess {
    let mut args = vec!["--buffer-dir", path_str(dir)];
    args.extend_from_slice(extra);
    env.proxy("app", &args)
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// One acknowledged point: its id and where its time must lie (ns since the epoch).
#[derive(Debug, Clone, Copy)]
struct Sent {
    id: u64,
    earliest: u64,
    latest: u64,
    /// Acknowledged as stored on the device rather than delivered.
    buffered: bool,
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// Writes point `id` in one of four shapes: explicit ns timestamp; none (ns); none with
/// `precision=s`; gzip, none, `precision=ms`. Returns the answer and the time window.
async fn write_point(
    client: &reqwest::Client,
    base: &str,
    id: u64,
) -> (reqwest::StatusCode, Option<Sent>, String) {
    let before = now_ns();
    let (query, body, gz, unit) = match id % 4 {
        0 => ("", format!("buf,id={id} v={id}i {before}\n"), false, 1),
        1 => ("", format!("buf,id={id} v={id}i\n"), false, 1),
        2 => (
            "&precision=s",
            format!("buf,id={id} v={id}i\n"),
            false,
            1_000_000_000,
        ),
        _ => (
            "&precision=ms",
            format!("buf,id={id} v={id}i\n"),
            true,
            1_000_000,
        ),
    };
    let mut request = client.post(format!("{base}/write?db=telemetry{query}"));
    request = if gz {
        request
            .header("Content-Encoding", "gzip")
            .body(gzip(body.as_bytes()))
    } else {
        request.body(body)
    };
    let response = request.send().await.unwrap();
    let after = now_ns();
    let status = response.status();
    let buffered = response.headers().contains_key("x-leasehold-buffered");
    let text = response.text().await.unwrap_or_default();
    let sent = (status == 204).then(|| {
        let (earliest, latest) = if id.is_multiple_of(4) {
            (before, before)
        } else {
            (before / unit * unit, after)
        };
        Sent {
            id,
            earliest,
            latest,
            buffered,
        }
    });
    (status, sent, text)
}

/// Two writers until `stop`; every answer must be 204. Returns what was acknowledged.
fn spawn_load(base: String, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<Vec<Sent>>> {
    (0..2u64)
        .map(|writer| {
            let (base, stop) = (base.clone(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut sent = Vec::new();
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = writer * 1_000_000 + seq;
                    seq += 1;
                    let (status, ack, text) = write_point(&client, &base, id).await;
                    assert_eq!(status, 204, "write {id} answered {status}: {text}");
                    sent.extend(ack);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                sent
            })
        })
        .collect()
}

async fn join(writers: Vec<tokio::task::JoinHandle<Vec<Sent>>>) -> Vec<Sent> {
    let mut all = Vec::new();
    for writer in writers {
        all.extend(writer.await.unwrap());
    }
    all
}

/// A metric's value from `/metrics`.
async fn metric(proxy: &ProxyProcess, name: &str) -> Option<f64> {
    let text = reqwest::get(proxy.admin_url("/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn readyz(proxy: &ProxyProcess) -> (u16, String) {
    match reqwest::get(proxy.admin_url("/readyz")).await {
        Ok(response) => (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        ),
        Err(_) => (0, String::new()),
    }
}

/// Waits (on the proxy's own figures) until the buffer is empty.
async fn wait_drained(proxy: &ProxyProcess) {
    let deadline = Instant::now() + EVENT_DEADLINE;
    while metric(proxy, "leasehold_proxy_buffer_bytes").await != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "the buffer never drained:\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every point `buf` holds: id → time (ns).
async fn stored_points(db: &Influxd) -> std::collections::BTreeMap<u64, u64> {
    let answer = db.query_db("telemetry", "SELECT v FROM buf").await.unwrap();
    let mut points = std::collections::BTreeMap::new();
    if let Some(values) = answer["results"][0]["series"][0]["values"].as_array() {
        for row in values {
            let time = common::time(&row[0])
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            points.insert(row[1].as_u64().unwrap(), time);
        }
    }
    points
}

/// InfluxDB holds exactly the acknowledged points, each at a time within its write
/// window (not the replay time).
async fn assert_exactly(db: &Influxd, sent: &[Sent]) {
    let points = stored_points(db).await;
    assert_eq!(points.len(), sent.len(), "points stored vs acknowledged");
    for s in sent {
        let time = *points
            .get(&s.id)
            .unwrap_or_else(|| panic!("acknowledged point {} is missing", s.id));
        assert!(
            (s.earliest..=s.latest).contains(&time),
            "point {} at {time}, written in [{}, {}] (buffered: {})",
            s.id,
            s.earliest,
            s.latest,
            s.buffered
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn control_down_past_the_lease_life_loses_no_write() {
    let (db, env, control) = setup().await;
    db.create_database("telemetry").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let buffer = dir.path().join("buffer");
    let proxy = buffered_proxy(&env, &buffer, &["--ttl", "4s"]);
    proxy.wait_ready().await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_load(proxy.url(), stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    control.kill9();
    // The lease lapses (at most 4 s); /readyz says "buffering", distinctly.
    let deadline = Instant::now() + EVENT_DEADLINE;
    loop {
        let (status, body) = readyz(&proxy).await;
        if status == 503 {
            assert!(body.starts_with("buffering"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "the lease never lapsed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        metric(&proxy, "leasehold_proxy_buffer_bytes")
            .await
            .unwrap()
            > 0.0
    );
    assert!(
        metric(&proxy, "leasehold_proxy_buffer_oldest_age_seconds")
            .await
            .unwrap()
            > 0.0
    );
    assert_eq!(
        metric(&proxy, "leasehold_proxy_buffer_limit_bytes").await,
        Some((1u64 << 30) as f64)
    );
    let _control = env.serve();
    // Writes continue while the backlog replays, behind it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = join(writers).await;
    wait_drained(&proxy).await;
    assert!(
        sent.iter().filter(|s| s.buffered).count() > 10,
        "the outage buffered too few writes to mean anything"
    );
    assert_exactly(&db, &sent).await;
    assert_eq!(readyz(&proxy).await, (200, "ready\n".into()));
    // Nothing of the lease reaches the disk.
    for entry in std::fs::read_dir(&buffer).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("leasehold_"), "a lease user name on disk");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn influxdb_down_under_load_then_back_loses_no_write() {
    let (mut db, env, _control) = setup().await;
    db.create_database("telemetry").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = buffered_proxy(&env, &dir.path().join("buffer"), &[]);
    proxy.wait_ready().await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = spawn_load(proxy.url(), stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    db.stop().await.unwrap();
    // Thirty seconds without InfluxDB, writes going on all the while.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (status, body) = readyz(&proxy).await;
    assert_eq!(status, 200);
    assert!(body.starts_with("buffering"), "{body}");
    db.start_again().await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = join(writers).await;
    wait_drained(&proxy).await;
    assert!(sent.iter().filter(|s| s.buffered).count() > 10);
    assert_exactly(&db, &sent).await;
}

/// Writes `count` points while InfluxDB is down (all buffered), then `kill -9`s the proxy.
async fn buffer_then_kill(db: &mut Influxd, env: &Env, buffer: &Path, count: u64) -> Vec<Sent> {
    let mut proxy = buffered_proxy(env, buffer, &[]);
    proxy.wait_ready().await;
    db.stop().await.unwrap();
    let client = reqwest::Client::new();
    let mut sent = Vec::new();
    for id in 0..count {
        let (status, ack, text) = write_point(&client, &proxy.url(), id).await;
        assert_eq!(status, 204, "{text}");
        let ack = ack.unwrap();
        assert!(ack.buffered);
        sent.push(ack);
    }
    proxy.process().signal("KILL");
    assert!(proxy.process().wait_exit(EVENT_DEADLINE).is_some());
    sent
}

fn last_segment(buffer: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(buffer)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .filter(|p| std::fs::metadata(p).unwrap().len() > 0)
        .collect();
    segments.sort();
    segments.pop().expect("a non-empty segment")
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_outage_then_restart_delivers_every_acknowledged_write() {
    let (mut db, env, _control) = setup().await;
    db.create_database("telemetry").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let buffer = dir.path().join("buffer");
    let sent = buffer_then_kill(&mut db, &env, &buffer, 40).await;
    db.start_again().await.unwrap();
    let proxy = buffered_proxy(&env, &buffer, &[]);
    wait_drained(&proxy).await;
    assert_exactly(&db, &sent).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_torn_tail_is_dropped_and_the_rest_delivered() {
    let (mut db, env, _control) = setup().await;
    db.create_database("telemetry").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let buffer = dir.path().join("buffer");
    let mut sent = buffer_then_kill(&mut db, &env, &buffer, 20).await;
    // Cut the last record short, as a crash in the middle of its write would.
    let segment = last_segment(&buffer);
    let len = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let torn = sent.pop().unwrap();
    db.start_again().await.unwrap();
    let proxy = buffered_proxy(&env, &buffer, &[]);
    wait_drained(&proxy).await;
    assert_exactly(&db, &sent).await;
    assert!(!stored_points(&db).await.contains_key(&torn.id));
    assert!(
        proxy.log().contains("torn or corrupt tail"),
        "{}",
        proxy.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_buffer_answers_503_with_retry_after_and_loses_nothing_acknowledged() {
    let (mut db, env, _control) = setup().await;
    db.create_database("telemetry").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = buffered_proxy(
        &env,
        &dir.path().join("buffer"),
        &["--buffer-max-bytes", "2KiB"],
    );
    proxy.wait_ready().await;
    db.stop().await.unwrap();
    let client = reqwest::Client::new();
    let mut sent = Vec::new();
    let mut refused = 0;
    for id in 0..200 {
        let (status, ack, text) = write_point(&client, &proxy.url(), id).await;
        match status.as_u16() {
            204 => sent.push(ack.unwrap()),
            503 => {
                assert!(text.contains("buffer is full"), "{text}");
                refused += 1;
            }
            other => panic!("unexpected {other}: {text}"),
        }
    }
    assert!(refused > 0 && !sent.is_empty(), "{refused} refused");
    let full = client
        .post(format!("{}/write?db=telemetry", proxy.url()))
        .body("buf,id=999999 v=1i\n")
        .send()
        .await
        .unwrap();
    assert_eq!(full.status(), 503);
    assert_eq!(full.headers()["retry-after"], "5");
    db.start_again().await.unwrap();
    wait_drained(&proxy).await;
    assert_exactly(&db, &sent).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn influxdb_refusals_pass_through_and_are_not_buffered() {
    let (db, env, _control) = setup().await;
    db.create_database("telemetry").await.unwrap();
    db.create_database("other").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = buffered_proxy(&env, &dir.path().join("buffer"), &[]);
    proxy.wait_ready().await;
    let client = reqwest::Client::new();
    let bad = client
        .post(format!("{}/write?db=telemetry", proxy.url()))
        .body("this is not line protocol\n")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(!bad.headers().contains_key("x-leasehold-buffered"));
    assert!(bad.text().await.unwrap().contains("error"));
    let denied = client
        .post(format!("{}/write?db=other", proxy.url()))
        .body("buf,id=1 v=1i\n")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403, "the lease grants only telemetry");
    let ok = client
        .post(format!("{}/write?db=telemetry", proxy.url()))
        .body("buf,id=2 v=2i\n")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 204);
    assert!(!ok.headers().contains_key("x-leasehold-buffered"));
    assert_eq!(
        metric(&proxy, "leasehold_proxy_buffer_bytes").await,
        Some(0.0)
    );
    assert_eq!(stored_points(&db).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_writes_during_upstream_5xx_are_stored_and_replayed_with_their_times() {
    let v2 = V2Server::start_default().await.unwrap();
    let mut env = Env::new();
    env.init_control();
    let _control = env.serve();
    env.configure_v2(&v2, &[]);
    env.enrolled_identity("app", &[]);
    let dir = tempfile::tempdir().unwrap();
    let proxy = buffered_proxy(&env, &dir.path().join("buffer"), &[]);
    proxy.wait_ready().await;
    v2.set_failing(true);
    let client = reqwest::Client::new();
    let url = format!(
        "{}/api/v2/write?org={}&bucket=b&precision=s",
        proxy.url(),
        v2.org_name()
    );
    let before = now_ns() / 1_000_000_000;
    for (i, gz) in [(1, false), (2, true), (3, false)] {
        let body = format!("m,id={i} v={i}i\n");
        let request = client.post(&url);
        let request = if gz {
            request
                .header("Content-Encoding", "gzip")
                .body(gzip(body.as_bytes()))
        } else {
            request.body(body)
        };
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 204);
        assert!(response.headers().contains_key("x-leasehold-buffered"));
    }
    let after = now_ns() / 1_000_000_000;
    v2.set_failing(false);
    wait_drained(&proxy).await;
    let points = v2.points();
    assert_eq!(points.len(), 3, "{points:?}");
    for (i, point) in points.iter().enumerate() {
        assert_eq!(point.bucket, "b");
        assert_eq!(point.precision.as_deref(), Some("s"));
        let (head, time) = point.line.rsplit_once(' ').unwrap();
        assert_eq!(head, format!("m,id={} v={}i", i + 1, i + 1));
        let time: u64 = time.parse().unwrap();
        assert!(
            (before..=after).contains(&time),
            "{time} not in [{before}, {after}]"
        );
    }
}

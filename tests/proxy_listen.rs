//! `localhost` works whichever loopback it resolves to: the proxy (and its admin
//! listener) serve on 127.0.0.1 and ::1 at the same port, as its default does.
//! (The default itself, and its fallback on a host without IPv6, are unit-tested in
//! `src/cli/proxy.rs` and `proxy/src/proxy.rs`.)

mod common;

use std::time::{Duration, Instant};

use common::Env;
use leasehold_testkit::v2server::V2Server;

/// A port free on the IPv6 loopback (and, almost surely, on the IPv4 one).
fn free_dual_port() -> u16 {
    std::net::TcpListener::bind("[::1]:0")
        .expect("the IPv6 loopback ::1 is required")
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn both_loopbacks_serve_the_proxy_and_its_probes() {
    let v2 = V2Server::start_default().await.unwrap();
    let mut env = Env::new();
    env.init_control();
    let _control = env.serve();
    env.configure_v2(&v2, &[]);
    env.enrolled_identity("app", &[]);

    let (port, admin_port) = (free_dual_port(), free_dual_port());
    let listen = |host: &str, port: u16| format!("{host}:{port}");
    let log = env.home().join("proxy.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = env
        .command(&[
            "proxy",
            "--identity",
            "app",
            "--listen",
            &listen("127.0.0.1", port),
            "--listen",
            &listen("[::1]", port),
            "--admin-listen",
            &listen("127.0.0.1", admin_port),
            "--admin-listen",
            &listen("[::1]", admin_port),
        ])
        .env("RUST_LOG", "info")
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    for host in ["127.0.0.1", "[::1]"] {
        let ready = format!("http://{host}:{admin_port}/readyz");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = client.get(&ready).send().await.map(|r| r.status().as_u16());
            if status.as_ref().is_ok_and(|s| *s == 200) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{ready} never answered 200 ({status:?}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for (n, host) in ["127.0.0.1", "[::1]"].into_iter().enumerate() {
        let written = client
            .post(format!(
                "http://{host}:{port}/api/v2/write?org={}&bucket=telemetry",
                v2.org_name()
            ))
            .body(format!("m v={n}"))
            .send()
            .await
            .unwrap();
        assert_eq!(written.status(), 204, "through {host}");
        assert_eq!(v2.point_count("telemetry"), n + 1);
    }
    let _ = child.kill();
    let _ = child.wait();
}

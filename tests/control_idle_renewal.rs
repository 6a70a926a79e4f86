//! The control closes idle member channels; the proxy must not notice. With an idle
//! limit far below the renewal interval, every renewal finds its channel closed, opens a
//! new one at once, and succeeds: no failed attempt, no gap in the lease. The new
//! channels are resumed ones.

mod common;

use std::time::Duration;

use common::{Env, wait_until};
use leasehold_testkit::v2server::V2Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_succeed_when_the_control_has_closed_the_idle_channel() {
    let v2 = V2Server::start_default().await.unwrap();
    let mut env = Env::new();
    env.init_control();
    let control = env.serve_with(
        "info,leasehold_control::server=debug",
        &["--idle-timeout", "1s"],
    );
    env.configure_v2(&v2, &[]);
    env.enrolled_identity("app", &[]);
    // Renewed at about 60% of 3 s: each time after the channel sat idle past 1 s.
    let proxy = env.proxy("app", &["--ttl", "3s"]);
    proxy.wait_ready().await;
    wait_until(Duration::from_secs(60), "four leases installed", || {
        proxy.log().matches("lease installed").count() >= 4
    });
    let (proxy_log, control_log) = (proxy.log(), control.log());
    let idle_closes = control_log.matches("closing idle channel").count();
    assert!(
        idle_closes >= 3,
        "expected the control to close the idle channel before each renewal, saw {idle_closes}:\n{control_log}"
    );
    assert!(
        proxy_log.matches("connected to the control").count() >= 4,
        "each renewal reconnects:\n{proxy_log}"
    );
    // The first channel is a full handshake; the reconnects resume with the ticket the
    // previous channel brought (the sidecar keeps it in memory).
    let resumed = control_log.matches("resumed=true").count();
    assert!(
        resumed >= 3 && control_log.contains("resumed=false"),
        "expected one full handshake, then resumed channels, saw {resumed} resumed:\n{control_log}"
    );
    assert!(
        !proxy_log.contains("could not obtain a lease"),
        "a renewal failed:\n{proxy_log}"
    );
    assert_eq!(proxy.admin_status("/readyz").await, 200);
}

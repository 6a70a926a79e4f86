//! Several requests in flight on one channel: the control answers every one, each under
//! its own id, with leases issued concurrently (and group-committed), and a refused
//! request among them gets its own refusal without disturbing the rest.

mod common;

use std::collections::{HashMap, HashSet};

use common::setup::{InProcessControl, start_in_process};
use leasehold_channel::{PublicIdentity, Secret};
use leasehold_control::server::Limits;
use leasehold_protocol::client::{Client, ClientError};
use leasehold_protocol::{AddonConfig, ErrorCode, Reply, Request};
use leasehold_testkit::v2server::V2Server;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_on_one_channel_are_all_answered_by_id() {
    let v2 = V2Server::start_default().await.unwrap();
    let InProcessControl {
        dir: _dir,
        home,
        addr,
        running,
        shutdown,
    } = start_in_process(Limits::default()).await;
    let control: PublicIdentity = running.identity;
    let admin = home.load_identity("admin").unwrap();
    let mut client = Client::connect_to(&[addr.to_string()], &control, &admin)
        .await
        .unwrap();
    client
        .call(Request::AddonConfigure {
            addon: AddonConfig::Influxdb {
                endpoint_url: v2.url(),
                token: Secret::new(v2.admin_token()),
                org_id: v2.org_id().to_owned(),
                permissions: serde_json::json!([{"action":"write","resource":{"type":"buckets"}}]),
                default_ttl_secs: Some(600),
                max_ttl_secs: Some(900),
                max_live_leases: Some(64),
                ca_pem: None,
            },
            skip_verify: false,
        })
        .await
        .unwrap();

    // 40 leases, one refused request (TTL above the maximum) and a ping, all sent
    // before any answer is read.
    let mut expected = HashMap::new();
    for n in 0..42 {
        let (request, kind) = match n {
            17 => (
                Request::LeaseCreate {
                    ttl_secs: Some(901),
                },
                "refused",
            ),
            29 => (Request::Ping, "ping"),
            _ => (Request::LeaseCreate { ttl_secs: None }, "lease"),
        };
        expected.insert(client.submit(request).await.unwrap(), kind);
    }
    let mut tokens = HashSet::new();
    let mut lease_ids = HashSet::new();
    while !expected.is_empty() {
        let (id, reply) = client.next_answer().await.unwrap();
        let kind = expected
            .remove(&id)
            .unwrap_or_else(|| panic!("answer {id} is unexpected or repeated"));
        match (kind, reply) {
            ("lease", Ok(Reply::Lease(lease))) => {
                assert!(tokens.insert(lease.token.expect("a token").expose().to_owned()));
                assert!(lease_ids.insert(lease.id));
            }
            ("refused", Err(ClientError::Remote(error))) => {
                assert_eq!(error.code, ErrorCode::BadRequest, "{}", error.message);
                assert!(error.message.contains("900"), "{}", error.message);
            }
            ("ping", Ok(Reply::Pong { .. })) => {}
            (kind, other) => panic!("request {id} ({kind}) got {other:?}"),
        }
    }
    assert_eq!(tokens.len(), 40);
    // Every lease is in InfluxDB and in the store.
    let authorizations = v2.authorizations();
    for token in &tokens {
        assert!(authorizations.iter().any(|a| &a.token == token));
    }
    let Reply::Leases { leases: listed } = client.call(Request::LeaseList).await.unwrap() else {
        panic!("lease list answered something else");
    };
    let listed: HashSet<_> = listed.into_iter().map(|l| l.id).collect();
    assert!(lease_ids.is_subset(&listed));

    // The channel still works one request at a time afterwards.
    assert!(matches!(
        client.call(Request::Ping).await.unwrap(),
        Reply::Pong { .. }
    ));
    shutdown.cancel();
    running.wait().await;
}

//! Client failover over real loopback TCP: a client given several control addresses,
//! the first of which is dead, reaches the live one. "Dead" in both ways a replica
//! dies: a closed port (refused at once) and a socket that is bound and listening but
//! never accepts (a stopped process: the kernel completes the TCP handshake, nothing
//! answers the Noise one), which only the failover timeout gets past.

use std::time::{Duration, Instant};

use leasehold_channel::conn::Channel;
use leasehold_channel::{ChannelError, Identity};
use leasehold_protocol::client::{Client, ClientError, FAILOVER_TIMEOUT, worth_another_replica};
use leasehold_protocol::{
    ErrorCode, Outcome, PROTOCOL_VERSION, Reply, Request, RequestEnvelope, ResponseEnvelope,
    WireError,
};
use tokio::net::TcpListener;

/// A control stand-in that answers every request with `Pong`.
async fn live_control(control: Identity) -> String {
    stand_in(control, true).await
}

/// A control stand-in that answers every request with `Pong`, or if not `serving`,
/// with "unavailable" (a replica that lost its store).
async fn stand_in(control: Identity, serving: bool) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let control = control.clone();
            tokio::spawn(async move {
                let mut channel = Channel::accept(stream, &control, Duration::from_secs(10))
                    .await
                    .unwrap();
                loop {
                    let message = match channel.recv().await {
                        Err(ChannelError::Closed) => return,
                        other => other.unwrap(),
                    };
                    let request: RequestEnvelope = serde_json::from_slice(&message).unwrap();
                    let outcome = if serving {
                        Outcome::Ok(Reply::Pong {
                            control: control.public(),
                        })
                    } else {
                        Outcome::Err(WireError::new(ErrorCode::Unavailable, "store unavailable"))
                    };
                    let answer = ResponseEnvelope {
                        v: PROTOCOL_VERSION,
                        id: request.id,
                        outcome,
                    };
                    channel
                        .send(&serde_json::to_vec(&answer).unwrap())
                        .await
                        .unwrap();
                }
            });
        }
    });
    addr
}

/// A port nothing listens on.
fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

async fn ping(client: &mut Client) {
    match client.call(Request::Ping).await.unwrap() {
        Reply::Pong { .. } => {}
        other => panic!("unexpected answer {other:?}"),
    }
}

#[tokio::test]
async fn a_dead_first_address_costs_at_most_the_failover_timeout() {
    let control = Identity::generate();
    let live = live_control(control.clone()).await;
    // Listening, never accepting: connects succeed into the backlog, then silence.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let client_identity = Identity::generate();

    for dead in [closed_port(), silent_addr] {
        let addrs = vec![dead.clone(), live.clone()];
        let started = Instant::now();
        let mut client =
            Client::connect_starting_at(&addrs, 0, &control.public(), &client_identity)
                .await
                .unwrap_or_else(|e| panic!("with {dead} dead: {e}"));
        ping(&mut client).await;
        // Recorded, not asserted: the machine may be loaded.
        println!(
            "dead first address {dead}: connected to the live one in {:?} (failover timeout {FAILOVER_TIMEOUT:?})",
            started.elapsed()
        );
    }

    // The random start reaches the live control whichever address it picks.
    let addrs = vec![closed_port(), live.clone()];
    for _ in 0..4 {
        let mut client = Client::connect_to(&addrs, &control.public(), &client_identity)
            .await
            .unwrap();
        ping(&mut client).await;
    }
}

#[tokio::test]
async fn every_address_dead_names_them_all() {
    let control = Identity::generate();
    let addrs = vec![closed_port(), closed_port()];
    let error = Client::connect_to(&addrs, &control.public(), &Identity::generate())
        .await
        .err()
        .expect("no control is up");
    assert!(
        matches!(error, ClientError::Unreachable { .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains(&addrs[0]) && text.contains(&addrs[1]),
        "{text}"
    );
}

#[tokio::test]
async fn a_replica_that_cannot_serve_is_worth_a_try_elsewhere() {
    let control = Identity::generate();
    let me = Identity::generate();
    let addrs = vec![
        stand_in(control.clone(), false).await,
        live_control(control.clone()).await,
    ];
    let mut refusing = Client::connect_starting_at(&addrs, 0, &control.public(), &me)
        .await
        .unwrap();
    assert_eq!(refusing.addr_index(), 0);
    let refusal = refusing.call(Request::Ping).await.expect_err("unavailable");
    assert!(worth_another_replica(&refusal), "{refusal:?}");
    let mut other = refusing
        .connect_elsewhere(&addrs, &control.public(), &me)
        .await
        .unwrap();
    assert_eq!(other.addr_index(), 1);
    ping(&mut other).await;

    // A refusal on the merits is the same everywhere; a broken channel reconnects.
    let not_member = ClientError::Remote(WireError::new(ErrorCode::Unauthorized, "no"));
    assert!(!worth_another_replica(&not_member));
}

//! The secure channel over loopback TCP: what a sidecar pays per lease renewal when it
//! connects fresh (handshake plus one request), and per request on an open channel.
//!
//! The runtime is single-threaded so that the figures measure the channel's own cost
//! (Noise, Ed25519 proofs, framing, two loopback round trips) rather than cross-thread
//! wake-ups on a busy machine. Both ends set `TCP_NODELAY`, as the client and the
//! control do.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use leasehold_channel::conn::{Channel, HANDSHAKE_TIMEOUT};
use leasehold_channel::frame::{self, Decoded};
use leasehold_channel::handshake::{self, Initiator};
use leasehold_channel::resume::{Resuming, respond_resumed};
use leasehold_channel::resumption::TicketKey;
use leasehold_channel::time::Timestamp;
use leasehold_channel::{ChannelError, Identity, PublicIdentity};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;

/// About the size of a lease request envelope.
const REQUEST: [u8; 256] = [0x5a; 256];

/// Starts an echo server on an ephemeral loopback port: every accepted connection is
/// handshaken as `control`, then every message is sent straight back.
fn echo_server(rt: &Runtime, control: Identity) -> SocketAddr {
    rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let control = control.clone();
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    let mut channel = Channel::accept(stream, &control, HANDSHAKE_TIMEOUT)
                        .await
                        .expect("server handshake");
                    loop {
                        match channel.recv().await {
                            Ok(message) => channel.send(&message).await.expect("echo"),
                            Err(ChannelError::Closed) => return,
                            Err(e) => panic!("server receive failed: {e}"),
                        }
                    }
                });
            }
        });
        addr
    })
}

async fn connect(
    addr: SocketAddr,
    client: &Identity,
    control: &PublicIdentity,
) -> Channel<TcpStream> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    Channel::connect(stream, client, control, HANDSHAKE_TIMEOUT)
        .await
        .expect("client handshake")
}

async fn round_trip(channel: &mut Channel<TcpStream>) {
    channel.send(&REQUEST).await.expect("send");
    let answer = channel.recv().await.expect("recv");
    assert_eq!(answer.len(), REQUEST.len());
    black_box(answer);
}

fn bench_channel(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let control = Identity::generate();
    let pin = control.public();
    let client = Identity::generate();
    let addr = echo_server(&rt, control);

    let mut group = c.benchmark_group("channel");
    group.throughput(Throughput::Elements(1));

    // TCP connect, Noise IK handshake with both identity proofs, one request and its
    // answer, close: a sidecar's renewal when it keeps no connection open.
    group.bench_function("connect_handshake_round_trip", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut channel = connect(addr, &client, &pin).await;
                round_trip(&mut channel).await;
                channel.shutdown().await.expect("shutdown");
            })
        })
    });

    // One request and its answer on a channel that is already open.
    let mut channel = rt.block_on(async {
        let mut channel = connect(addr, &client, &pin).await;
        // The first send carries the client's proof; do it before measuring.
        round_trip(&mut channel).await;
        channel
    });
    group.bench_function("round_trip_open_channel", |b| {
        b.iter(|| rt.block_on(round_trip(&mut channel)))
    });

    // The handshake alone, both peers, in memory: the cryptography a fresh channel costs
    // the two machines together (four X25519 operations per side for Noise IK, an
    // ephemeral key each, and the two Ed25519 identity proofs).
    let control = Identity::generate();
    let pin = control.public();
    group.bench_function("handshake_both_peers_in_memory", |b| {
        b.iter(|| {
            let (initiator, msg1) = Initiator::start(&client, &pin).expect("start");
            let (pending, msg2) = handshake::respond(&control, &msg1).expect("respond");
            let (_session, framed) = initiator.finish(&msg2).expect("finish");
            let Ok(Decoded::Frame { body, .. }) = frame::decode(&framed) else {
                panic!("the proof is one whole frame");
            };
            black_box(pending.verify(body).expect("verify"));
        })
    });

    // A resumed channel's handshake, both peers, in memory: one X25519 key generation
    // and one DH per side, the ticket opened and a new one granted.
    let tickets = TicketKey::new(&control);
    let ticket = {
        let (initiator, msg1) = Initiator::start_asking_ticket(&client, &pin).expect("start");
        let (_, msg2) =
            handshake::respond_granting(&control, Some(&tickets), &msg1, Timestamp::now())
                .expect("respond");
        let (_, _, ticket) = initiator.finish_with_ticket(&msg2).expect("finish");
        ticket.expect("granted")
    };
    group.bench_function("resumed_handshake_both_peers_in_memory", |b| {
        b.iter(|| {
            let (resuming, msg1) = Resuming::start(&ticket).expect("start");
            let (pending, msg2) =
                respond_resumed(&tickets, &msg1, Timestamp::now()).expect("respond");
            let (_session, framed, _next) = resuming.finish(&msg2).expect("finish");
            let Ok(Decoded::Frame { body, .. }) = frame::decode(&framed) else {
                panic!("the confirmation is one whole frame");
            };
            black_box(pending.verify(body).expect("verify"));
        })
    });
    group.finish();
}

criterion_group!(benches, bench_channel);
criterion_main!(benches);

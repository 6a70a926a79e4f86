//! What a peer can hold on the control before and after proving membership: a
//! non-member gets one enrollment within the deadline, 64 KiB at most; an idle member
//! channel is closed; unauthenticated connections are capped per source and in total.
//! A real control on loopback, spoken to with the channel's own client pieces (and raw
//! sockets where a peer must misbehave).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::setup::start_in_process;
use leasehold_channel::conn::Channel;
use leasehold_channel::ticket::{Ticket, encode_secret};
use leasehold_channel::{ChannelError, Identity, PublicIdentity};
use leasehold_control::server::Limits;
use leasehold_protocol::{
    ErrorCode, Outcome, PROTOCOL_VERSION, Reply, Request, RequestEnvelope, ResponseEnvelope,
};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

/// How long any event here may take before the test fails: generous, for a busy machine.
const PATIENCE: Duration = Duration::from_secs(30);

struct Control {
    addr: SocketAddr,
    identity: PublicIdentity,
    admin: Identity,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Control {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn control(limits: Limits) -> Control {
    let control = start_in_process(limits).await;
    Control {
        addr: control.addr,
        identity: control.running.identity,
        admin: control.home.load_identity("admin").unwrap(),
        shutdown: control.shutdown,
        _dir: control.dir,
    }
}

/// A TCP connection to the control from the loopback address `source`.
async fn tcp_from(source: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// A channel to the control as `identity`, from loopback address `source`, with the
/// identity proof sent (the handshake complete on both sides).
async fn channel_from(source: &str, control: &Control, identity: &Identity) -> Channel<TcpStream> {
    let stream = tcp_from(source, control.addr).await;
    let mut channel = Channel::connect(stream, identity, &control.identity, PATIENCE)
        .await
        .unwrap();
    channel.flush().await.unwrap();
    channel
}

async fn send(channel: &mut Channel<TcpStream>, id: u64, req: Request) {
    let bytes = serde_json::to_vec(&RequestEnvelope {
        v: PROTOCOL_VERSION,
        id,
        req,
    })
    .unwrap();
    channel.send(&bytes).await.unwrap();
}

async fn answer(channel: &mut Channel<TcpStream>) -> Result<ResponseEnvelope, ChannelError> {
    let bytes = tokio::time::timeout(PATIENCE, channel.recv())
        .await
        .expect("an answer or a close in time")?;
    Ok(serde_json::from_slice(&bytes).unwrap())
}

async fn call(channel: &mut Channel<TcpStream>, id: u64, req: Request) -> ResponseEnvelope {
    send(channel, id, req).await;
    answer(channel).await.unwrap()
}

/// Waits until the control closes `channel`, which must send nothing before.
async fn closed(channel: &mut Channel<TcpStream>) {
    match answer(channel).await {
        Err(_) => {}
        Ok(answer) => panic!("expected the channel to close, got answer {}", answer.id),
    }
}

/// Whether the control closed a raw connection (it never writes to one that has not
/// spoken), waiting at most `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(within, stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => panic!("the control wrote to a connection that never spoke"),
        Err(_) => false,
    }
}

fn refused_as_non_member(answer: &ResponseEnvelope) -> bool {
    matches!(&answer.outcome, Outcome::Err(e) if e.code == ErrorCode::Unauthorized)
}

fn limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_secs(2),
        ..Limits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_member_request_other_than_enrollment_is_refused_and_the_channel_closed() {
    let control = control(limits()).await;
    let mut channel = channel_from("127.0.0.1", &control, &Identity::generate()).await;
    let refused = call(&mut channel, 1, Request::Ping).await;
    assert!(refused_as_non_member(&refused));
    closed(&mut channel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_non_member_is_closed_at_its_deadline() {
    let control = control(limits()).await;
    let mut channel = channel_from("127.0.0.1", &control, &Identity::generate()).await;
    let start = Instant::now();
    closed(&mut channel).await;
    assert!(start.elapsed() >= limits().handshake_timeout - Duration::from_millis(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_member_message_over_64_kib_closes_the_channel_unanswered() {
    let control = control(limits()).await;
    let mut channel = channel_from("127.0.0.1", &control, &Identity::generate()).await;
    // Still a well-formed request, just too big for someone unknown.
    let big = Request::Enroll {
        secret: leasehold_channel::Secret::new("x".repeat(70 << 10)),
        name: "big".into(),
    };
    let bytes = serde_json::to_vec(&RequestEnvelope {
        v: PROTOCOL_VERSION,
        id: 1,
        req: big,
    })
    .unwrap();
    // The control may close before the whole message is written.
    let _ = channel.send(&bytes).await;
    closed(&mut channel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrollment_makes_the_channel_a_members_and_a_refused_one_closes_it() {
    let control = control(limits()).await;
    let mut admin = channel_from("127.0.0.1", &control, &control.admin).await;
    let ticket = match call(
        &mut admin,
        1,
        Request::TicketCreate {
            attributes: Default::default(),
            expires_in_secs: 600,
            usage_count: 1,
        },
    )
    .await
    .outcome
    {
        Outcome::Ok(Reply::Ticket(ticket)) => ticket,
        other => panic!("no ticket: {other:?}"),
    };
    let ticket: Ticket = ticket.ticket.expose().parse().unwrap();
    let secret = encode_secret(&ticket.secret);

    // A wrong secret: refused, and that was the one request.
    let mut wrong = channel_from("127.0.0.1", &control, &Identity::generate()).await;
    let refused = call(
        &mut wrong,
        1,
        Request::Enroll {
            secret: encode_secret(&[7; 32]),
            name: "wrong".into(),
        },
    )
    .await;
    assert!(matches!(refused.outcome, Outcome::Err(_)));
    closed(&mut wrong).await;

    // The right one: enrolled, and the same channel goes on as a member's.
    let newcomer = Identity::generate();
    let mut channel = channel_from("127.0.0.1", &control, &newcomer).await;
    let enrolled = call(
        &mut channel,
        1,
        Request::Enroll {
            secret,
            name: "newcomer".into(),
        },
    )
    .await;
    assert!(
        matches!(enrolled.outcome, Outcome::Ok(Reply::Member(ref m)) if m.id == newcomer.public())
    );
    for id in 2..5 {
        let pong = call(&mut channel, id, Request::Ping).await;
        assert!(matches!(pong.outcome, Outcome::Ok(Reply::Pong { .. })));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_member_channel_is_closed_and_a_busy_one_is_not() {
    let idle_timeout = Duration::from_secs(1);
    let control = control(Limits {
        idle_timeout,
        ..limits()
    })
    .await;
    // Busy: a request every 300 ms for three idle periods, every one answered.
    let mut busy = channel_from("127.0.0.1", &control, &control.admin).await;
    let mut id = 0;
    let until = Instant::now() + 3 * idle_timeout;
    while Instant::now() < until {
        id += 1;
        let pong = call(&mut busy, id, Request::Ping).await;
        assert!(matches!(pong.outcome, Outcome::Ok(Reply::Pong { .. })));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Then idle: closed by the control, not before the idle limit.
    let start = Instant::now();
    closed(&mut busy).await;
    assert!(start.elapsed() >= idle_timeout - Duration::from_millis(400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_connections_are_capped_per_source_and_in_total() {
    // A long handshake deadline: any close seen here is the cap's doing.
    let control = control(Limits {
        handshake_timeout: Duration::from_secs(120),
        max_unauthenticated: 3,
        max_unauthenticated_per_ip: 2,
        ..Limits::default()
    })
    .await;
    let short = Duration::from_millis(300);
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tcp_from("127.0.0.2", control.addr).await);
    }
    // A third from the same source is closed at once.
    let mut over = tcp_from("127.0.0.2", control.addr).await;
    assert!(closed_within(&mut over, PATIENCE).await);
    // Another source still gets in (the total is 3)...
    held.push(tcp_from("127.0.0.3", control.addr).await);
    // ...and then the total is full for everyone.
    let mut over_total = tcp_from("127.0.0.4", control.addr).await;
    assert!(closed_within(&mut over_total, PATIENCE).await);
    for stream in &mut held {
        assert!(
            !closed_within(stream, short).await,
            "an admitted connection was closed"
        );
    }
    // A place freed is a place for the next connection, a member's here; once
    // authenticated, the member no longer counts.
    drop(held.pop());
    let deadline = Instant::now() + PATIENCE;
    let mut admin = loop {
        assert!(Instant::now() < deadline, "the freed place never came back");
        let stream = tcp_from("127.0.0.1", control.addr).await;
        match Channel::connect(stream, &control.admin, &control.identity, PATIENCE).await {
            Ok(mut channel) => {
                send(&mut channel, 1, Request::Ping).await;
                if let Ok(pong) = answer(&mut channel).await {
                    break (channel, pong);
                }
            }
            Err(_) => continue,
        }
    };
    assert!(matches!(admin.1.outcome, Outcome::Ok(Reply::Pong { .. })));
    let mut stranger = channel_from("127.0.0.5", &control, &Identity::generate()).await;
    assert!(refused_as_non_member(
        &call(&mut stranger, 1, Request::Ping).await
    ));
    let pong = call(&mut admin.0, 2, Request::Ping).await;
    assert!(matches!(pong.outcome, Outcome::Ok(Reply::Pong { .. })));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_lists_are_answered_one_at_a_time_without_holding_up_the_rest() {
    let control = control(limits()).await;
    let mut admin = channel_from("127.0.0.1", &control, &control.admin).await;
    // Lists (one in progress at a time per channel) interleaved with pings.
    for id in 1..=20 {
        let req = if id % 2 == 0 {
            Request::MemberList
        } else {
            Request::Ping
        };
        send(&mut admin, id, req).await;
    }
    let mut answered = std::collections::BTreeSet::new();
    for _ in 1..=20 {
        let answer = answer(&mut admin).await.unwrap();
        match (answer.id % 2, &answer.outcome) {
            (0, Outcome::Ok(Reply::Members { members, .. })) => assert_eq!(members.len(), 1),
            (1, Outcome::Ok(Reply::Pong { .. })) => {}
            (_, other) => panic!("answer {} is {other:?}", answer.id),
        }
        assert!(answered.insert(answer.id), "answer {} repeated", answer.id);
    }
    assert_eq!(answered.len(), 20);
}

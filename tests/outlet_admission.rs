//! Who the outlet admits, checked against the outlet itself (the library, with a control
//! key made here so any credential can be forged): only the control's unexpired,
//! untampered credential about the channel's own identity, with the `--allow`
//! attributes; a channel lives as long as its credential is renewed; tampered,
//! replayed and reordered frames end the channel. After every refusal the outlet still
//! serves members, and on shutdown lets open channels finish.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use leasehold_channel::conn::Channel;
use leasehold_channel::membership::Membership;
use leasehold_channel::{ChannelError, Identity, PublicIdentity};
use leasehold_proxy::outlet::tunnel::{DATA, END, MAX_MESSAGE, MEMBERSHIP, REFUSED};
use leasehold_proxy::outlet::{self, OutletConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Generous: a passing test never waits this long.
const DEADLINE: Duration = Duration::from_secs(60);

struct Fixture {
    control: Identity,
    outlet_id: PublicIdentity,
    addr: SocketAddr,
    _shutdown: tokio_util::sync::DropGuard,
}

/// An upstream that echoes every byte back: what the outlet relays is checked end to
/// end without InfluxDB. Its URL.
async fn echo_upstream() -> String {
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", echo.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    upstream
}

/// An echo server standing in for InfluxDB, and an outlet in front of it admitting
/// members with `site=field`.
async fn fixture() -> Fixture {
    let upstream = echo_upstream().await;
    let control = Identity::generate();
    let me = Identity::generate();
    let outlet_id = me.public();
    let shutdown = CancellationToken::new();
    let running = outlet::start(
        OutletConfig {
            upstream,
            allow: vec![("site".into(), "field".into())],
            ..OutletConfig::default()
        },
        me,
        control.public(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        shutdown.clone(),
    )
    .unwrap();
    Fixture {
        control,
        outlet_id,
        addr: running.listen_addr(),
        _shutdown: shutdown.drop_guard(),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn credential(control: &Identity, subject: PublicIdentity, site: &str, expires_at: u64) -> String {
    Membership {
        subject,
        attributes: BTreeMap::from([("site".to_owned(), site.to_owned())]),
        expires_at,
    }
    .sign(control)
}

fn tagged(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut message = vec![tag];
    message.extend_from_slice(body);
    message
}

/// Opens a channel as `me` and presents `credential`.
async fn present(f: &Fixture, me: &Identity, credential: &str) -> Channel<TcpStream> {
    let tcp = TcpStream::connect(f.addr).await.unwrap();
    let mut channel = Channel::connect(tcp, me, &f.outlet_id, DEADLINE)
        .await
        .unwrap();
    channel.set_max_message(MAX_MESSAGE);
    channel
        .send(&tagged(MEMBERSHIP, credential.as_bytes()))
        .await
        .unwrap();
    channel
}

/// The refusal reason the outlet sends, failing if it sends anything else.
async fn refused(mut channel: Channel<TcpStream>) -> String {
    let message = tokio::time::timeout(DEADLINE, channel.recv())
        .await
        .expect("an answer")
        .expect("a refusal message");
    assert_eq!(message.first(), Some(&REFUSED), "{message:?}");
    String::from_utf8(message[1..].to_vec()).unwrap()
}

/// Sends bytes through and expects them echoed.
async fn echoes(channel: &mut Channel<TcpStream>, payload: &[u8]) {
    channel.send(&tagged(DATA, payload)).await.unwrap();
    let mut got = Vec::new();
    while got.len() < payload.len() {
        let message = tokio::time::timeout(DEADLINE, channel.recv())
            .await
            .expect("an echo")
            .expect("an open channel");
        assert_eq!(message.first(), Some(&DATA), "{message:?}");
        got.extend_from_slice(&message[1..]);
    }
    assert_eq!(got, payload);
}

/// A member that is admitted: the outlet keeps serving.
async fn member_still_served(f: &Fixture) {
    let me = Identity::generate();
    let mut channel = present(
        f,
        &me,
        &credential(&f.control, me.public(), "field", now() + 600),
    )
    .await;
    echoes(&mut channel, b"still serving").await;
}

#[tokio::test]
async fn only_current_members_with_the_allowed_attributes_are_admitted() {
    let f = fixture().await;
    member_still_served(&f).await;

    // A fresh identity that is not a member: it can only sign its own credential.
    let stranger = Identity::generate();
    let forged = credential(&stranger, stranger.public(), "field", now() + 600);
    let reason = refused(present(&f, &stranger, &forged).await).await;
    assert!(reason.contains("signature"), "{reason}");
    member_still_served(&f).await;

    // Expired.
    let me = Identity::generate();
    let expired = credential(&f.control, me.public(), "field", now() - 1);
    let reason = refused(present(&f, &me, &expired).await).await;
    assert!(reason.contains("expired"), "{reason}");
    member_still_served(&f).await;

    // One byte flipped (in the payload's base64: still valid text).
    let good = credential(&f.control, me.public(), "field", now() + 600);
    let mut bytes = good.clone().into_bytes();
    bytes[10] = if bytes[10] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    let reason = refused(present(&f, &me, &tampered).await).await;
    assert!(
        reason.contains("signature") || reason.contains("malformed"),
        "{reason}"
    );
    member_still_served(&f).await;

    // A member, but outside --allow site=field.
    let elsewhere = credential(&f.control, me.public(), "office", now() + 600);
    let reason = refused(present(&f, &me, &elsewhere).await).await;
    assert!(reason.contains("site"), "{reason}");
    member_still_served(&f).await;

    // Another member's valid credential, on this identity's channel.
    let other = Identity::generate();
    let theirs = credential(&f.control, other.public(), "field", now() + 600);
    let reason = refused(present(&f, &me, &theirs).await).await;
    assert!(reason.contains("another identity"), "{reason}");
    member_still_served(&f).await;

    // No credential at all: data first.
    let tcp = TcpStream::connect(f.addr).await.unwrap();
    let mut channel = Channel::connect(tcp, &me, &f.outlet_id, DEADLINE)
        .await
        .unwrap();
    channel
        .send(&tagged(DATA, b"GET / HTTP/1.1\r\n"))
        .await
        .unwrap();
    let reason = refused(channel).await;
    assert!(reason.contains("membership credential first"), "{reason}");
    member_still_served(&f).await;
}

/// Resolves once the outlet has closed `channel` (it reads the end of the stream).
async fn closed_by_outlet(channel: &mut Channel<TcpStream>) {
    let ended = tokio::time::timeout(DEADLINE, channel.recv())
        .await
        .expect("the outlet closes the channel");
    assert!(
        matches!(ended, Err(ChannelError::Closed | ChannelError::Io(_))),
        "{ended:?}"
    );
}

#[tokio::test]
async fn a_channel_lives_as_long_as_its_credential_is_renewed() {
    let f = fixture().await;
    let me = Identity::generate();
    // Both expire in two seconds; one channel gets a renewal.
    let short = credential(&f.control, me.public(), "field", now() + 2);
    let mut lapsing = present(&f, &me, &short).await;
    let mut renewed = present(&f, &me, &short).await;
    echoes(&mut lapsing, b"a").await;
    echoes(&mut renewed, b"b").await;
    let later = credential(&f.control, me.public(), "field", now() + 600);
    renewed
        .send(&tagged(MEMBERSHIP, later.as_bytes()))
        .await
        .unwrap();
    closed_by_outlet(&mut lapsing).await;
    // The renewed one outlived the first credential: it still echoes.
    echoes(&mut renewed, b"still here").await;

    // A renewal that does not verify ends the channel at once.
    let bad = credential(&f.control, me.public(), "office", now() + 600);
    renewed
        .send(&tagged(MEMBERSHIP, bad.as_bytes()))
        .await
        .unwrap();
    closed_by_outlet(&mut renewed).await;
    member_still_served(&f).await;
}

/// An admitted channel taken apart, so frames can be tampered with on the wire.
async fn admitted_raw(f: &Fixture) -> (TcpStream, leasehold_channel::session::Session) {
    let me = Identity::generate();
    let mut channel = present(
        f,
        &me,
        &credential(&f.control, me.public(), "field", now() + 600),
    )
    .await;
    echoes(&mut channel, b"admitted").await;
    let (tcp, session, _, _) = channel.into_parts();
    (tcp, session)
}

/// Reads until the outlet closes the connection (without answering).
async fn outlet_hangs_up(tcp: &mut TcpStream) {
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(DEADLINE, tcp.read(&mut buf))
        .await
        .expect("the outlet hangs up");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the outlet answered a bad frame"
    );
}

#[tokio::test]
async fn tampered_replayed_and_reordered_frames_end_the_channel() {
    let f = fixture().await;

    let (mut tcp, mut session) = admitted_raw(&f).await;
    let mut frame = Vec::new();
    session.seal(&tagged(DATA, b"hello"), &mut frame).unwrap();
    let last = frame.len() - 1;
    frame[last] ^= 1;
    tcp.write_all(&frame).await.unwrap();
    outlet_hangs_up(&mut tcp).await;

    let (mut tcp, mut session) = admitted_raw(&f).await;
    let mut frame = Vec::new();
    session.seal(&tagged(DATA, b"once"), &mut frame).unwrap();
    tcp.write_all(&frame).await.unwrap();
    tcp.write_all(&frame).await.unwrap();
    // The echo of the first copy may come back; then the replay ends it.
    outlet_hangs_up_after_echo(&mut tcp).await;

    let (mut tcp, mut session) = admitted_raw(&f).await;
    let (mut first, mut second) = (Vec::new(), Vec::new());
    session.seal(&tagged(DATA, b"1"), &mut first).unwrap();
    session.seal(&tagged(DATA, b"2"), &mut second).unwrap();
    tcp.write_all(&second).await.unwrap();
    tcp.write_all(&first).await.unwrap();
    outlet_hangs_up(&mut tcp).await;

    member_still_served(&f).await;
}

/// Like [`outlet_hangs_up`], but the first message may still be echoed.
async fn outlet_hangs_up_after_echo(tcp: &mut TcpStream) {
    let mut buf = [0u8; 256];
    let mut answered = 0;
    loop {
        match tokio::time::timeout(DEADLINE, tcp.read(&mut buf))
            .await
            .expect("the outlet hangs up")
        {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                answered += n;
                // One sealed echo of "once" is 4 + 16 + 1 + 1 + 4 bytes.
                assert!(answered <= 26, "the outlet answered the replay");
            }
        }
    }
}

#[tokio::test]
async fn shutdown_stops_accepting_lets_open_channels_finish_then_ends() {
    let upstream = echo_upstream().await;
    let control = Identity::generate();
    let me = Identity::generate();
    let outlet_id = me.public();
    let shutdown = CancellationToken::new();
    let running = outlet::start(
        OutletConfig {
            upstream,
            // Longer than the test: the drain must end because the channel does.
            shutdown_grace: DEADLINE * 2,
            ..OutletConfig::default()
        },
        me,
        control.public(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        shutdown.clone(),
    )
    .unwrap();
    let addr = running.listen_addr();
    let f = Fixture {
        control,
        outlet_id,
        addr,
        _shutdown: CancellationToken::new().drop_guard(),
    };
    let member = Identity::generate();
    let mut open = present(
        &f,
        &member,
        &credential(&f.control, member.public(), "x", now() + 600),
    )
    .await;
    echoes(&mut open, b"before").await;

    shutdown.cancel();
    // New connections are refused once the listener is gone...
    let deadline = std::time::Instant::now() + DEADLINE;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(std::time::Instant::now() < deadline, "still accepting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...the open channel still works, and once it ends the outlet stops.
    echoes(&mut open, b"during the drain").await;
    open.send(&[END]).await.unwrap();
    tokio::time::timeout(DEADLINE, running.wait())
        .await
        .expect("the outlet stops once its last channel ended");
}

//! The secure channel over real loopback TCP: a good exchange, and each kind of bad
//! peer rejected with the right error, without panics, while the listener keeps serving.

use std::time::Duration;

use leasehold_channel::conn::Channel;
use leasehold_channel::frame;
use leasehold_channel::handshake::Initiator;
use leasehold_channel::{ChannelError, Identity, PublicIdentity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Handshake timeout: generous for a loaded machine (the silent client waits it out).
const TIMEOUT: Duration = Duration::from_secs(5);

/// A channel to `addr` as `client`, pinning `pin`; panics if it cannot be opened.
async fn connect(
    addr: std::net::SocketAddr,
    client: &Identity,
    pin: &PublicIdentity,
) -> Channel<TcpStream> {
    let stream = TcpStream::connect(addr).await.unwrap();
    Channel::connect(stream, client, pin, TIMEOUT)
        .await
        .unwrap()
}

/// An echo server that reports how each connection ended.
async fn server(
    control: Identity,
) -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<Result<(), ChannelError>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (control, tx) = (control.clone(), tx.clone());
            tokio::spawn(async move {
                let result = async {
                    let mut channel = Channel::accept(stream, &control, TIMEOUT).await?;
                    loop {
                        let message = match channel.recv().await {
                            Err(ChannelError::Closed) => return Ok(()),
                            other => other?,
                        };
                        channel.send(&message).await?;
                    }
                }
                .await;
                let _ = tx.send(result);
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn echo_over_loopback() {
    let control = Identity::generate();
    let pin = control.public();
    let (addr, mut ended) = server(control).await;
    let client = Identity::generate();
    let mut channel = connect(addr, &client, &pin).await;
    for size in [0, 1, 1000, 200_000] {
        let message = vec![size as u8; size];
        channel.send(&message).await.unwrap();
        assert_eq!(channel.recv().await.unwrap(), message);
    }
    assert_eq!(channel.peer(), pin);
    drop(channel);
    assert!(ended.recv().await.unwrap().is_ok());
}

#[tokio::test]
async fn wrong_pinned_key_is_refused_and_the_server_keeps_serving() {
    let control = Identity::generate();
    let pin = control.public();
    let (addr, mut ended) = server(control).await;
    let client = Identity::generate();
    let wrong_pin = Identity::generate().public();
    let result = Channel::connect(
        TcpStream::connect(addr).await.unwrap(),
        &client,
        &wrong_pin,
        TIMEOUT,
    )
    .await;
    assert!(
        matches!(result, Err(ChannelError::Closed | ChannelError::Io(_))),
        "{:?}",
        result.err()
    );
    assert!(matches!(
        ended.recv().await.unwrap(),
        Err(ChannelError::Handshake)
    ));
    // Still serving.
    let mut ok = connect(addr, &client, &pin).await;
    ok.send(b"x").await.unwrap();
    assert_eq!(ok.recv().await.unwrap(), b"x");
}

#[tokio::test]
async fn garbage_oversized_and_truncated_input_are_refused() {
    let control = Identity::generate();
    let pin = control.public();
    let (addr, mut ended) = server(control).await;

    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage.write_all(&[0, 0, 0, 80]).await.unwrap();
    garbage.write_all(&[0x5a; 80]).await.unwrap();
    assert!(matches!(
        ended.recv().await.unwrap(),
        Err(ChannelError::Handshake)
    ));

    let mut oversized = TcpStream::connect(addr).await.unwrap();
    oversized
        .write_all(&[0x7f, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    assert!(matches!(
        ended.recv().await.unwrap(),
        Err(ChannelError::FrameTooLarge { .. })
    ));

    let client = Identity::generate();
    let (_, msg1) = Initiator::start(&client, &pin).unwrap();
    let mut wire = Vec::new();
    frame::encode(&msg1, &mut wire).unwrap();
    let mut truncated = TcpStream::connect(addr).await.unwrap();
    truncated.write_all(&wire[..wire.len() - 10]).await.unwrap();
    truncated.shutdown().await.unwrap();
    assert!(matches!(
        ended.recv().await.unwrap(),
        Err(ChannelError::Io(_))
    ));

    let _silent = TcpStream::connect(addr).await.unwrap();
    assert!(matches!(
        ended.recv().await.unwrap(),
        Err(ChannelError::HandshakeTimeout)
    ));
}

#[tokio::test]
async fn a_replayed_session_is_refused_and_the_server_keeps_serving() {
    let control = Identity::generate();
    let pin = control.public();
    let (addr, mut ended) = server(control).await;
    let client = Identity::generate();

    // Record the raw bytes of a real session through a relay, then replay the client's
    // side into a fresh connection: the handshake answer differs, so nothing decrypts.
    let (relay_addr, recorded) = relay(addr).await;
    let mut channel = connect(relay_addr, &client, &pin).await;
    channel.send(b"lease please").await.unwrap();
    assert_eq!(channel.recv().await.unwrap(), b"lease please");
    drop(channel);
    assert!(ended.recv().await.unwrap().is_ok());
    let bytes = recorded.await.unwrap();
    let mut replay = TcpStream::connect(addr).await.unwrap();
    replay.write_all(&bytes).await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, replay.read_to_end(&mut sink)).await;
    assert!(matches!(
        ended.recv().await.unwrap(),
        Err(ChannelError::Decrypt | ChannelError::BadProof)
    ));

    // The server keeps serving.
    let mut ok = connect(addr, &client, &pin).await;
    ok.send(b"x").await.unwrap();
    assert_eq!(ok.recv().await.unwrap(), b"x");
}

#[tokio::test]
async fn a_tampered_fresh_message_fails_authentication_and_the_server_keeps_serving() {
    let control = Identity::generate();
    let pin = control.public();
    let (addr, mut ended) = server(control).await;
    let client = Identity::generate();

    // Client frames: 1 handshake, 2 the identity proof, 3 the first message. A relay
    // flips one bit in the third, a message never sent before (so this is not a replay).
    let relay_addr = tampering_relay(addr, 3).await;
    let mut channel = connect(relay_addr, &client, &pin).await;
    channel.send(b"lease please").await.unwrap();
    assert!(
        matches!(ended.recv().await.unwrap(), Err(ChannelError::Decrypt)),
        "a modified frame fails authentication"
    );
    // The client sees its channel closed, never an answer.
    let answer = tokio::time::timeout(Duration::from_secs(60), channel.recv()).await;
    assert!(matches!(answer, Ok(Err(_))), "{answer:?}");

    // The server keeps serving.
    let mut ok = connect(addr, &client, &pin).await;
    ok.send(b"x").await.unwrap();
    assert_eq!(ok.recv().await.unwrap(), b"x");
}

#[tokio::test]
async fn thousands_of_messages_cross_the_rekey_interval_on_one_channel() {
    use leasehold_channel::session::REKEY_INTERVAL;
    let control = Identity::generate();
    let pin = control.public();
    let (addr, mut ended) = server(control).await;
    let client = Identity::generate();
    let mut channel = connect(addr, &client, &pin).await;
    // Past two rekeys in each direction (the echo answers every message).
    let count = 2 * REKEY_INTERVAL + 76;
    assert!(count >= 1_100);
    for i in 0..count {
        let message = format!("message {i}");
        channel.send(message.as_bytes()).await.unwrap();
        assert_eq!(
            channel.recv().await.unwrap(),
            message.as_bytes(),
            "message {i}"
        );
    }
    drop(channel);
    assert!(ended.recv().await.unwrap().is_ok());
}

/// A TCP relay to `target` that flips the last bit of the client's `nth` frame
/// (1-based; 4-byte big-endian length prefixes) and relays everything else unchanged.
async fn tampering_relay(target: std::net::SocketAddr, nth: usize) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.unwrap();
        let mut server = TcpStream::connect(target).await.unwrap();
        let (mut client_read, mut client_write) = client.split();
        let (mut server_read, mut server_write) = server.split();
        let upstream = async {
            for n in 1.. {
                let mut prefix = [0u8; 4];
                if client_read.read_exact(&mut prefix).await.is_err() {
                    break;
                }
                let mut body = vec![0u8; u32::from_be_bytes(prefix) as usize];
                if client_read.read_exact(&mut body).await.is_err() {
                    break;
                }
                if n == nth {
                    *body.last_mut().expect("a non-empty frame") ^= 1;
                }
                if server_write.write_all(&prefix).await.is_err()
                    || server_write.write_all(&body).await.is_err()
                {
                    break;
                }
            }
            let _ = server_write.shutdown().await;
        };
        // When the server hangs up, so does the relay: the client sees the close.
        let downstream = async {
            let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
            let _ = client_write.shutdown().await;
        };
        tokio::join!(upstream, downstream);
    });
    addr
}

/// A TCP relay to `target` that records what the client sent.
async fn relay(
    target: std::net::SocketAddr,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut client, _) = listener.accept().await.unwrap();
        let mut server = TcpStream::connect(target).await.unwrap();
        let (mut client_read, mut client_write) = client.split();
        let (mut server_read, mut server_write) = server.split();
        let mut recorded = Vec::new();
        let upstream = async {
            let mut buf = [0u8; 4096];
            loop {
                let n = client_read.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    let _ = server_write.shutdown().await;
                    break;
                }
                recorded.extend_from_slice(&buf[..n]);
                server_write.write_all(&buf[..n]).await.unwrap();
            }
        };
        let downstream = tokio::io::copy(&mut server_read, &mut client_write);
        let _ = tokio::join!(upstream, downstream);
        recorded
    });
    (addr, task)
}

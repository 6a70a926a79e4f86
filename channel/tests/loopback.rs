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

const TIMEOUT: Duration = Duration::from_secs(2);

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
async fn replayed_and_tampered_frames_are_refused() {
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

    // Flip one bit of the client's first transport frame (the proof): refused.
    let mut tampered = bytes.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&tampered).await.unwrap();
    let _ = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut sink)).await;
    assert!(ended.recv().await.unwrap().is_err());
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

//! Message framing on raw HTTP/1 connections, both ways: the request-smuggling rules
//! (CL+TE read as chunked, differing `Content-Length`s, obs-fold, a space before a colon
//! refused), hop-by-hop headers stripped, pipelined requests, chunked bodies with
//! extensions and trailers, and every kind of upstream response framing. Whichever path
//! serves a request (the HTTP/1 fast path or hyper), these hold.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::*;

/// Each request the raw upstream read: its head, and its body (decoded).
type Recorded = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// An upstream on raw TCP that records each request (head and decoded body) and
/// answers with `answer` (the same bytes for every request).
struct RawUpstream {
    url: String,
    requests: Recorded,
}

impl RawUpstream {
    async fn start(answer: &'static [u8]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests: Recorded = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    while let Some((head, body)) = read_request(&mut stream, &mut buf).await {
                        seen.lock().unwrap().push((head, body));
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                        // A close-delimited answer ends with the connection.
                        if !answer
                            .windows(15)
                            .any(|w| w.eq_ignore_ascii_case(b"content-length:"))
                            && !answer
                                .windows(18)
                                .any(|w| w.eq_ignore_ascii_case(b"transfer-encoding:"))
                            && !answer.starts_with(b"HTTP/1.1 204")
                        {
                            return;
                        }
                    }
                });
            }
        });
        Self { url, requests }
    }

    fn requests(&self) -> Vec<(String, Vec<u8>)> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads one request (head, then a `Content-Length` or chunked body) from `stream`.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(String, Vec<u8>)> {
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        fill(stream, buf).await?;
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    buf.drain(..head_end);
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if lower.contains("transfer-encoding: chunked") {
        loop {
            let line_end = loop {
                if let Some(at) = buf.windows(2).position(|w| w == b"\r\n") {
                    break at;
                }
                fill(stream, buf).await?;
            };
            let size = usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16)
                .expect("the proxy writes plain hex chunk sizes");
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                fill(stream, buf).await?;
            }
            body.extend_from_slice(&buf[..size]);
            assert_eq!(&buf[size..size + 2], b"\r\n");
            buf.drain(..size + 2);
            if size == 0 {
                break;
            }
        }
    } else if let Some(line) = lower.lines().find(|l| l.starts_with("content-length:")) {
        let len: usize = line["content-length:".len()..].trim().parse().unwrap();
        while buf.len() < len {
            fill(stream, buf).await?;
        }
        body = buf.drain(..len).collect();
    }
    Some((head, body))
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

/// Writes `request` on a new connection and reads until the proxy closes it or
/// `answers` responses (counted by their status lines) have arrived.
async fn exchange(proxy: &Proxy, request: &[u8], answers: usize) -> String {
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(DEADLINE, async {
        loop {
            let text = String::from_utf8_lossy(&seen);
            if text.matches("HTTP/1.1 ").count() >= answers && complete(&text) {
                return;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("answers in time");
    String::from_utf8_lossy(&seen).into_owned()
}

/// Whether the last response in `text` is complete (its head, and a chunked body's end
/// or a `Content-Length` body).
fn complete(text: &str) -> bool {
    let Some(start) = text.rfind("HTTP/1.1 ") else {
        return false;
    };
    let last = &text[start..];
    let Some(head_end) = last.find("\r\n\r\n") else {
        return false;
    };
    let (head, body) = (last[..head_end].to_ascii_lowercase(), &last[head_end + 4..]);
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with("0\r\n\r\n");
    }
    match head.lines().find(|l| l.starts_with("content-length:")) {
        Some(line) => body.len() >= line["content-length:".len()..].trim().parse().unwrap(),
        None => true,
    }
}

const NO_CONTENT: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";

async fn proxy_for(upstream: &RawUpstream) -> Proxy {
    Proxy::with_token(config(), &upstream.url).await
}

#[tokio::test]
async fn content_length_with_chunked_is_read_as_chunked_and_the_connection_closed() {
    let upstream = RawUpstream::start(NO_CONTENT).await;
    let proxy = proxy_for(&upstream).await;
    // A front end that believed the Content-Length would see a second request in
    // "hello...": the proxy reads the chunked body, and closes the connection after.
    let answer = exchange(
        &proxy,
        b"POST /write?db=x HTTP/1.1\r\nhost: localhost\r\ncontent-length: 4\r\n\
          transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        1,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    let requests = upstream.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].1, b"hello");
    assert!(
        !requests[0]
            .0
            .to_ascii_lowercase()
            .contains("content-length"),
        "{}",
        requests[0].0
    );
}

#[tokio::test]
async fn malformed_framing_and_headers_get_400_and_reach_nothing() {
    let upstream = RawUpstream::start(NO_CONTENT).await;
    let proxy = proxy_for(&upstream).await;
    for bad in [
        // Two different lengths.
        &b"POST /write HTTP/1.1\r\nhost: localhost\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello!"[..],
        // A length that is not a number.
        b"POST /write HTTP/1.1\r\nhost: localhost\r\ncontent-length: 5x\r\n\r\nhello",
        // obs-fold.
        b"POST /write HTTP/1.1\r\nhost: localhost\r\nx-a: 1\r\n folded\r\ncontent-length: 5\r\n\r\nhello",
        // A space before the colon.
        b"POST /write HTTP/1.1\r\nhost: localhost\r\ncontent-length : 5\r\n\r\nhello",
        // A coding other than chunked last.
        b"POST /write HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked, identity\r\n\r\n",
    ] {
        let answer = exchange(&proxy, bad, 1).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{}: {answer}",
            String::from_utf8_lossy(bad)
        );
    }
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn hop_by_hop_and_client_credentials_are_stripped() {
    let upstream = RawUpstream::start(NO_CONTENT).await;
    let proxy = proxy_for(&upstream).await;
    let answer = exchange(
        &proxy,
        b"POST /write?db=x&u=me&p=pw HTTP/1.1\r\nHost: localhost\r\nAuthorization: Token mine\r\n\
          Proxy-Authorization: Basic eA==\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\
          Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\n\
          X-Kept: yes\r\nContent-Length: 3\r\n\r\nm=1",
        1,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    let (head, body) = upstream.requests().pop().unwrap();
    let lower = head.to_ascii_lowercase();
    assert!(lower.starts_with("post /write?db=x http/1.1\r\n"), "{head}");
    for gone in [
        "token mine",
        "proxy-authorization",
        "x-hop",
        "keep-alive",
        "te:",
        "proxy-connection",
        "connection:",
    ] {
        assert!(!lower.contains(gone), "{gone} in {head}");
    }
    assert!(lower.contains("authorization: token token-1\r\n"), "{head}");
    assert!(lower.contains("x-kept: yes\r\n"), "{head}");
    assert_eq!(lower.matches("host: ").count(), 1, "{head}");
    assert_eq!(body, b"m=1");
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let upstream = RawUpstream::start(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let proxy = proxy_for(&upstream).await;
    let answer = exchange(
        &proxy,
        b"POST /write?n=1 HTTP/1.1\r\nhost: localhost\r\ncontent-length: 1\r\n\r\na\
          GET /query?n=2 HTTP/1.1\r\nhost: localhost\r\n\r\n\
          POST /write?n=3 HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n1\r\nc\r\n0\r\n\r\n",
        3,
    )
    .await;
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 3, "{answer}");
    let requests = upstream.requests();
    let targets: Vec<_> = requests
        .iter()
        .map(|(head, _)| head.split(' ').nth(1).unwrap().to_owned())
        .collect();
    assert_eq!(targets, ["/write?n=1", "/query?n=2", "/write?n=3"]);
    assert_eq!(requests[0].1, b"a");
    assert_eq!(requests[2].1, b"c");
}

#[tokio::test]
async fn chunk_extensions_and_trailers_are_read_and_dropped() {
    let upstream = RawUpstream::start(NO_CONTENT).await;
    let proxy = proxy_for(&upstream).await;
    let answer = exchange(
        &proxy,
        b"POST /write HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n\
          3;name=value\r\nabc\r\nA \r\n0123456789\r\n0\r\nx-trailer: 1\r\n\r\n",
        1,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    let (head, body) = upstream.requests().pop().unwrap();
    assert_eq!(body, b"abc0123456789");
    assert!(!head.to_ascii_lowercase().contains("x-trailer"), "{head}");
}

#[tokio::test]
async fn a_malformed_chunked_body_never_completes_upstream() {
    let upstream = RawUpstream::start(NO_CONTENT).await;
    let proxy = proxy_for(&upstream).await;
    // Bare LF after the size: refused, and the connection closed.
    let answer = exchange(
        &proxy,
        b"POST /write HTTP/1.1\r\nhost: localhost\r\ntransfer-encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        1,
    )
    .await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4") || answer.starts_with("HTTP/1.1 502"),
        "{answer}"
    );
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn upstream_framing_of_every_kind_reaches_the_client_intact() {
    for (answer, body) in [
        (
            &b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: keep-alive\r\n\r\nhello"[..],
            "hello",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2;x=y\r\nhe\r\n3\r\nllo\r\n0\r\ntrailer: 1\r\n\r\n",
            "hello",
        ),
        (b"HTTP/1.1 200 OK\r\n\r\nhello, until close", "hello, until close"),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            "ok",
        ),
    ] {
        let upstream = RawUpstream::start(answer).await;
        let proxy = proxy_for(&upstream).await;
        let (status, headers, got) = proxy.get(&proxy.url("/query?q=x")).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(answer));
        assert_eq!(got, body, "{}", String::from_utf8_lossy(answer));
        assert!(headers.get("keep-alive").is_none());
        // The connection to the proxy is still usable after each kind.
        assert_eq!(proxy.get(&proxy.url("/query?q=y")).await.0, 200);
    }
}

#[tokio::test]
async fn a_head_request_gets_its_length_and_no_body() {
    let upstream = RawUpstream::start(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n").await;
    let proxy = proxy_for(&upstream).await;
    // `Connection: close`, so that the end of the answer is the end of the connection.
    let answer = exchange(
        &proxy,
        b"HEAD /ping HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
        2,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-length: 5\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with("\r\n\r\n"), "{answer}");
}

#[tokio::test]
async fn an_upstream_that_refuses_a_body_midway_has_its_answer_delivered() {
    // Reads the head, answers 413 at once and hangs up (as InfluxDB does for a body over
    // its limit), never reading the body.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    if fill(&mut stream, &mut buf).await.is_none() {
                        return;
                    }
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 413 Request Entity Too Large\r\ncontent-length: 9\r\n\
                          connection: close\r\n\r\ntoo large",
                    )
                    .await;
                let _ = stream.shutdown().await;
            });
        }
    });
    let proxy = Proxy::with_token(config(), &url).await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    const LEN: usize = 32 * 1024 * 1024;
    let sender = tokio::spawn(async move {
        let head = format!(
            "POST /write?db=x HTTP/1.1\r\nhost: localhost\r\ncontent-length: {LEN}\r\n\r\n"
        );
        writer.write_all(head.as_bytes()).await.ok()?;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..LEN / chunk.len() {
            writer.write_all(&chunk).await.ok()?;
        }
        Some(())
    });
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(DEADLINE, async {
        loop {
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("the proxy answers and closes");
    let answer = String::from_utf8_lossy(&seen);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.ends_with("too large"), "{answer}");
    sender.abort();
}

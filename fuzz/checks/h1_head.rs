//! What must hold when the HTTP/1 fast path's head parser (`h1::head`) meets arbitrary
//! bytes. The first byte picks the side: even, a request head; odd, an upstream response
//! head (bit 1: the request was `HEAD`).
//!
//! - Never a panic.
//! - A request accepted for the fast path is one hyper would accept and read the same
//!   way (method and target valid for `http`, names and values valid header bytes), and
//!   the upstream head written from it is a well-formed head with exactly one `Host`,
//!   one `Authorization`, framing that says what the parser decided, and none of the
//!   hop-by-hop or credential headers.
//! - A response head written for the client is well-formed, declares exactly the
//!   framing decided, and carries no hop-by-hop or `Access-Control-*` header.
//!
//! Shared by the libFuzzer target (`fuzz_targets/h1_head.rs`) and the stable test that
//! replays the committed corpus (`proxy/tests/fuzz_corpus.rs`).

use leasehold_proxy::h1::head::{self, Framing, Parsed, ParsedResponse};

/// Headers never forwarded either way (hop-by-hop, or the client's credentials).
const NEVER: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// Panics if the head parser mishandles `data`.
pub fn check(data: &[u8]) {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    if mode.is_multiple_of(2) {
        check_request(input);
    } else {
        check_response(input, mode & 2 != 0);
    }
}

fn check_request(input: &[u8]) {
    let mut slots = head::header_slots();
    let Parsed::Fast(request) = head::parse_request(input, &mut slots) else {
        return;
    };
    assert!(request.len <= input.len());
    // What hyper would make of the same request line.
    http::Method::from_bytes(request.method.as_bytes()).expect("a method hyper accepts");
    let uri: http::Uri = request.target.parse().expect("a target hyper accepts");
    assert_eq!(
        uri.path_and_query().map(|pq| pq.as_str()),
        Some(request.target),
        "hyper would read another target"
    );
    assert!(uri.authority().is_none());
    assert_ne!(request.method, "CONNECT");
    let mut out = Vec::new();
    request.write_upstream(request.target, b"upstream:8086", b"Token lease", &mut out);
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Request::new(&mut headers);
    let status = parsed.parse(&out).expect("the upstream head parses");
    assert_eq!(status, httparse::Status::Complete(out.len()));
    assert_eq!(parsed.method, Some(request.method));
    assert_eq!(parsed.path, Some(request.target));
    let count = |name: &str| {
        parsed
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .count()
    };
    assert_eq!(count("host"), 1);
    assert_eq!(count("authorization"), 1);
    for name in NEVER {
        assert_eq!(count(name), 0, "{name} forwarded");
    }
    for header in parsed.headers.iter() {
        http::HeaderName::from_bytes(header.name.as_bytes()).expect("a valid header name");
        http::HeaderValue::from_bytes(header.value).expect("a valid header value");
    }
    let lengths: Vec<&[u8]> = parsed
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| h.value)
        .collect();
    let chunked = count("transfer-encoding");
    match request.framing {
        Framing::Chunked => {
            assert_eq!(chunked, 1);
            assert!(lengths.is_empty());
        }
        Framing::Length(n) => {
            assert_eq!(chunked, 0);
            assert_eq!(lengths.len(), 1);
            let value: u64 = std::str::from_utf8(lengths[0]).unwrap().parse().unwrap();
            assert_eq!(value, n);
            assert!(n > 0);
        }
        Framing::Empty => {
            assert_eq!(chunked, 0);
            assert!(lengths.len() <= 1);
            assert!(lengths.iter().all(|v| v.iter().all(|&b| b == b'0')));
        }
        Framing::UntilClose => panic!("a request is never delimited by the close"),
    }
}

fn check_response(input: &[u8], head_request: bool) {
    let mut slots = head::header_slots();
    let Ok(ParsedResponse::Final(response)) = head::parse_response(input, &mut slots, head_request)
    else {
        return;
    };
    assert!(response.len <= input.len());
    assert!((200..1000).contains(&response.status));
    let close_client = input.len().is_multiple_of(2);
    let mut out = Vec::new();
    response.write_client(close_client, &mut out);
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Response::new(&mut headers);
    let status = parsed.parse(&out).expect("the client head parses");
    assert_eq!(status, httparse::Status::Complete(out.len()));
    assert_eq!(parsed.code, Some(response.status));
    assert_eq!(parsed.version, Some(1));
    let count = |name: &str| {
        parsed
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .count()
    };
    for name in NEVER {
        if *name == "connection" && close_client {
            assert_eq!(count(name), 1);
        } else {
            assert_eq!(count(name), 0, "{name} forwarded");
        }
    }
    assert!(
        parsed
            .headers
            .iter()
            .all(|h| !h.name.to_ascii_lowercase().starts_with("access-control-"))
    );
    let chunked = count("transfer-encoding");
    let lengths = count("content-length");
    match response.framing {
        Framing::Length(_) => assert_eq!((chunked, lengths), (0, 1)),
        Framing::Chunked | Framing::UntilClose => assert_eq!((chunked, lengths), (1, 0)),
        Framing::Empty => assert_eq!(chunked, 0),
    }
}

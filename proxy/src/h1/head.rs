//! Request and response heads on the HTTP/1 fast path: parsed with `httparse` (the parser
//! hyper uses, with hyper's settings), judged, and rewritten for the other side (pure).
//!
//! **Only the common case is accepted; everything else goes to hyper.** A request head
//! is [`Parsed::Fast`] only if it is HTTP/1.1, origin-form with a target of plain URL
//! characters, not `CONNECT`, and carries at most one `Host`, at most one
//! `Content-Length` (plain digits) or exactly one `Transfer-Encoding: chunked` (never
//! both), no `Expect`, `Upgrade` or `Origin`, and a `Connection` naming only `close` or
//! `keep-alive`. Anything else, malformed heads included, is [`Parsed::Unusual`]: the
//! connection is handed to hyper with the bytes read so far, and hyper applies its own
//! rules (400 for obs-fold, a space before a colon, differing `Content-Length`s; CL+TE
//! read as chunked, then the connection closed; 431 for an oversized head; `100
//! Continue`; HTTP/1.0; HTTP/2). So the fast path never has to be as permissive as
//! hyper, only never more.
//!
//! **Rewriting.** The upstream head is the client's, byte for byte, minus the client's
//! credentials and hop-by-hop headers (`rewrite.rs` lists them), with the mapped target,
//! the upstream's `Host` and the lease's `Authorization`, and the framing re-declared
//! (`Content-Length` as received, or `Transfer-Encoding: chunked`, re-chunked by the
//! caller). The client's head is the upstream's, minus hop-by-hop headers and (the fast
//! path serves no allow-listed origin) every `Access-Control-*`, with the framing
//! re-declared the same way.

use std::mem::MaybeUninit;

use httparse::{Header, ParserConfig, Status};

/// Most header lines in a head (hyper's default).
pub const MAX_HEADERS: usize = 100;

/// Longest request target (hyper's limit: longer ones get `414` from hyper).
const MAX_TARGET_LEN: usize = 65534;

/// Uninitialised header slots for one parse (`httparse` fills them; no zeroing).
pub type HeaderSlots<'b> = [MaybeUninit<Header<'b>>; MAX_HEADERS];

/// Fresh slots for [`parse_request`] or [`parse_response`].
pub fn header_slots<'b>() -> HeaderSlots<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// A request head on the fast path.
#[derive(Debug)]
pub struct RequestHead<'h, 'b> {
    /// Bytes of the head, blank line included.
    pub len: usize,
    /// The method, as sent.
    pub method: &'b str,
    /// The request target (origin form).
    pub target: &'b str,
    /// The body's framing.
    pub framing: Framing,
    /// The client asked to close the connection after this request.
    pub close: bool,
    /// The `Host` value, if any.
    pub host: Option<&'b [u8]>,
    /// The `Sec-Fetch-Site` value, if any.
    pub sec_fetch_site: Option<&'b [u8]>,
    headers: &'h [Header<'b>],
    /// Bit `i` set: header `i` is forwarded.
    forward: u128,
}

/// What [`parse_request`] made of the bytes so far.
#[derive(Debug)]
pub enum Parsed<'h, 'b> {
    /// The head is not complete yet.
    Partial,
    /// Not for the fast path (malformed, or anything but the common case): hyper takes
    /// the connection.
    Unusual,
    /// A common-case request.
    Fast(RequestHead<'h, 'b>),
}

/// What a header means to the fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Forwarded as is.
    Keep,
    /// Not forwarded (hop-by-hop, or the client's credentials; `Host` is replaced).
    Drop,
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    SecFetchSite,
    /// Sends the request to hyper.
    Unusual,
    /// `Access-Control-*` (responses: dropped).
    Cors,
}

/// Classifies a header name (case-insensitively) by its length first, so a typical name
/// costs one or two comparisons.
fn kind(name: &str) -> Kind {
    let is = |candidate: &str| name.eq_ignore_ascii_case(candidate);
    match name.len() {
        2 if is("te") => Kind::Drop,
        4 if is("host") => Kind::Host,
        6 if is("expect") || is("origin") => Kind::Unusual,
        7 if is("trailer") => Kind::Drop,
        7 if is("upgrade") => Kind::Unusual,
        10 if is("connection") => Kind::Connection,
        10 if is("keep-alive") => Kind::Drop,
        13 if is("authorization") => Kind::Drop,
        14 if is("content-length") => Kind::ContentLength,
        14 if is("sec-fetch-site") => Kind::SecFetchSite,
        16 if is("proxy-connection") => Kind::Drop,
        17 if is("transfer-encoding") => Kind::TransferEncoding,
        18 if is("proxy-authenticate") => Kind::Drop,
        19 if is("proxy-authorization") => Kind::Drop,
        n if n >= 15 && name.as_bytes()[..15].eq_ignore_ascii_case(b"access-control-") => {
            Kind::Cors
        }
        _ => Kind::Keep,
    }
}

/// Bytes allowed in a fast-path request target: RFC 3986 unreserved, sub-delims, `:`,
/// `@`, `/`, `?` and `%`. Every one of them passes `http::Uri` unchanged, so the target
/// means to the fast path what it would mean to hyper; anything else (`#`, quotes,
/// braces, non-ASCII) goes to hyper.
fn is_target_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'/'
                | b'?'
                | b'%'
        )
}

/// A `Content-Length` value of plain digits that fits comfortably in a `u64` (at most
/// 18 digits); anything else (signs, lists, spaces, huge values) is for hyper to judge.
fn plain_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0u64, |n, digit| n * 10 + u64::from(digit - b'0')),
    )
}

/// The comma-separated tokens of a header value, trimmed, empty ones skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Parses a request head from the start of `buf`.
pub fn parse_request<'h, 'b>(buf: &'b [u8], slots: &'h mut HeaderSlots<'b>) -> Parsed<'h, 'b> {
    let mut request = httparse::Request::new(&mut []);
    // hyper's settings for requests: the defaults (no obs-fold, no space before a colon,
    // single spaces in the request line).
    let len =
        match ParserConfig::default().parse_request_with_uninit_headers(&mut request, buf, slots) {
            Ok(Status::Complete(len)) => len,
            Ok(Status::Partial) => return Parsed::Partial,
            Err(_) => return Parsed::Unusual,
        };
    let (Some(method), Some(target), Some(1)) = (request.method, request.path, request.version)
    else {
        return Parsed::Unusual;
    };
    if method == "CONNECT"
        || !target.starts_with('/')
        || target.len() > MAX_TARGET_LEN
        || !target.bytes().all(is_target_byte)
    {
        return Parsed::Unusual;
    }
    let headers: &'h [Header<'b>] = request.headers;
    let mut head = RequestHead {
        len,
        method,
        target,
        framing: Framing::Empty,
        close: false,
        host: None,
        sec_fetch_site: None,
        headers,
        forward: 0,
    };
    for (i, header) in headers.iter().enumerate() {
        let value = header.value;
        match kind(header.name) {
            Kind::Keep | Kind::Cors => head.forward |= 1 << i,
            Kind::Drop => {}
            Kind::Unusual => return Parsed::Unusual,
            Kind::Host => {
                if head.host.replace(value).is_some() {
                    return Parsed::Unusual;
                }
            }
            Kind::SecFetchSite => {
                if head.sec_fetch_site.replace(value).is_some() {
                    return Parsed::Unusual;
                }
                head.forward |= 1 << i;
            }
            Kind::ContentLength => {
                let Some(length) = plain_length(value) else {
                    return Parsed::Unusual;
                };
                if head.framing != Framing::Empty {
                    return Parsed::Unusual;
                }
                head.framing = Framing::Length(length);
                head.forward |= 1 << i;
            }
            Kind::TransferEncoding => {
                if head.framing != Framing::Empty || !value.eq_ignore_ascii_case(b"chunked") {
                    return Parsed::Unusual;
                }
                head.framing = Framing::Chunked;
            }
            Kind::Connection => {
                for token in tokens(value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        head.close = true;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                        // Names further hop-by-hop headers: rare, hyper's path has it.
                        return Parsed::Unusual;
                    }
                }
            }
        }
    }
    if head.framing == Framing::Length(0) {
        head.framing = Framing::Empty;
    }
    Parsed::Fast(head)
}

impl RequestHead<'_, '_> {
    /// Writes the upstream request head to `out`: `path` as the target, the forwarded
    /// headers, `host` and `authorization`, and `Transfer-Encoding: chunked` for a
    /// chunked body (whose framing the caller re-creates).
    pub fn write_upstream(&self, path: &str, host: &[u8], authorization: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        out.extend_from_slice(host);
        out.extend_from_slice(b"\r\nauthorization: ");
        out.extend_from_slice(authorization);
        out.extend_from_slice(b"\r\n");
        write_headers(self.headers, self.forward, out);
        if self.framing == Framing::Chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

fn write_headers(headers: &[Header<'_>], forward: u128, out: &mut Vec<u8>) {
    for (i, header) in headers.iter().enumerate() {
        if forward & (1 << i) != 0 {
            out.extend_from_slice(header.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(header.value);
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// An upstream response head.
#[derive(Debug)]
pub struct ResponseHead<'h, 'b> {
    /// Bytes of the head, blank line included.
    pub len: usize,
    /// The status code.
    pub status: u16,
    reason: &'b str,
    /// The body's framing.
    pub framing: Framing,
    /// The upstream connection cannot carry another request.
    pub close: bool,
    headers: &'h [Header<'b>],
    forward: u128,
}

/// An upstream response that cannot be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadResponse {
    /// Not a valid HTTP/1 response head.
    #[error("invalid HTTP response head from the upstream")]
    Malformed,
    /// `Content-Length` values that are invalid or disagree.
    #[error("invalid Content-Length in the upstream's response")]
    Length,
    /// `101 Switching Protocols`, never asked for.
    #[error("unexpected protocol switch from the upstream")]
    Upgrade,
}

/// What [`parse_response`] made of the bytes so far.
#[derive(Debug)]
pub enum ParsedResponse<'h, 'b> {
    /// The head is not complete yet.
    Partial,
    /// An interim `1xx` answer of `len` bytes, to skip (hyper's client skips them too).
    Interim(usize),
    /// The response head.
    Final(ResponseHead<'h, 'b>),
}

/// Parses an upstream response head from the start of `buf`, for a request whose method
/// was `HEAD` when `head_request`.
pub fn parse_response<'h, 'b>(
    buf: &'b [u8],
    slots: &'h mut HeaderSlots<'b>,
    head_request: bool,
) -> Result<ParsedResponse<'h, 'b>, BadResponse> {
    let mut response = httparse::Response::new(&mut []);
    // hyper's client settings: the defaults, so obs-fold and a space before a colon are
    // refused in responses too (copied through, a folded value would put a line break
    // in the client's head).
    let len =
        match ParserConfig::default().parse_response_with_uninit_headers(&mut response, buf, slots)
        {
            Ok(Status::Complete(len)) => len,
            Ok(Status::Partial) => return Ok(ParsedResponse::Partial),
            Err(_) => return Err(BadResponse::Malformed),
        };
    let (Some(version), Some(status)) = (response.version, response.code) else {
        return Err(BadResponse::Malformed);
    };
    // Three digits, first one 1–5 or more: `021` parses as 21, which `http` (and so
    // hyper's client) refuses, and which would not fit the client's status line.
    if status < 100 {
        return Err(BadResponse::Malformed);
    }
    if status == 101 {
        return Err(BadResponse::Upgrade);
    }
    if (100..200).contains(&status) {
        return Ok(ParsedResponse::Interim(len));
    }
    let headers: &'h [Header<'b>] = response.headers;
    let mut close = version == 0;
    let mut chunked = None;
    let mut length: Option<u64> = None;
    let mut names_others = false;
    let mut forward = 0u128;
    for (i, header) in headers.iter().enumerate() {
        let value = header.value;
        match kind(header.name) {
            // `Upgrade` is hop-by-hop; `Expect` and `Origin` mean nothing in a response.
            Kind::Unusual if header.name.eq_ignore_ascii_case("upgrade") => {}
            Kind::Keep | Kind::Host | Kind::SecFetchSite | Kind::Unusual => forward |= 1 << i,
            Kind::Drop | Kind::Cors => {}
            Kind::ContentLength => {
                for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    let parsed = plain_length(token).ok_or(BadResponse::Length)?;
                    if length.replace(parsed).is_some_and(|seen| seen != parsed) {
                        return Err(BadResponse::Length);
                    }
                }
            }
            Kind::TransferEncoding => {
                // The last coding decides, over all the lines (hyper's rule).
                chunked = Some(
                    tokens(value)
                        .last()
                        .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")),
                );
            }
            Kind::Connection => {
                for token in tokens(value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        if version == 0 {
                            close = false;
                        }
                    } else {
                        names_others = true;
                    }
                }
            }
        }
    }
    if names_others {
        forward &= !named_by_connection(headers);
    }
    let no_body = head_request || status == 204 || status == 304;
    let framing = match (no_body, chunked, length) {
        (true, _, _) => Framing::Empty,
        (false, Some(true), _) => Framing::Chunked,
        (false, Some(false), _) | (false, None, None) => Framing::UntilClose,
        (false, None, Some(0)) => Framing::Empty,
        (false, None, Some(n)) => Framing::Length(n),
    };
    if framing == Framing::UntilClose {
        close = true;
    }
    // A body-less answer keeps its `Content-Length` (a HEAD's says what a GET would get).
    if no_body {
        for (i, header) in headers.iter().enumerate() {
            if kind(header.name) == Kind::ContentLength {
                forward |= 1 << i;
            }
        }
    }
    Ok(ParsedResponse::Final(ResponseHead {
        len,
        status,
        reason: response.reason.unwrap_or(""),
        framing,
        close,
        headers,
        forward,
    }))
}

/// The headers that `Connection` values name (hop-by-hop by declaration), as a mask.
fn named_by_connection(headers: &[Header<'_>]) -> u128 {
    let mut named = 0u128;
    for header in headers {
        if kind(header.name) != Kind::Connection {
            continue;
        }
        for token in tokens(header.value) {
            for (i, other) in headers.iter().enumerate() {
                if other.name.as_bytes().eq_ignore_ascii_case(token) {
                    named |= 1 << i;
                }
            }
        }
    }
    named
}

impl ResponseHead<'_, '_> {
    /// Writes the client's response head to `out`: the status line (as HTTP/1.1, with
    /// the upstream's reason), the forwarded headers, the framing (`Content-Length`, or
    /// `Transfer-Encoding: chunked` for anything the caller re-chunks), and
    /// `Connection: close` when `close_client`.
    pub fn write_client(&self, close_client: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(b"HTTP/1.1 ");
        write_decimal(u64::from(self.status), out);
        out.push(b' ');
        // An empty reason gets the standard one, as hyper writes it.
        let reason = match self.reason {
            "" => http::StatusCode::from_u16(self.status)
                .ok()
                .and_then(|status| status.canonical_reason())
                .unwrap_or(""),
            reason => reason,
        };
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        write_headers(self.headers, self.forward, out);
        match self.framing {
            Framing::Empty => {}
            Framing::Length(n) => {
                out.extend_from_slice(b"content-length: ");
                write_decimal(n, out);
                out.extend_from_slice(b"\r\n");
            }
            Framing::Chunked | Framing::UntilClose => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            }
        }
        if close_client {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends `n` in decimal.
pub fn write_decimal(n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast(bytes: &[u8]) -> Option<(Framing, bool, String)> {
        let mut slots = header_slots();
        match parse_request(bytes, &mut slots) {
            Parsed::Fast(head) => {
                let mut out = Vec::new();
                head.write_upstream(head.target, b"up:8086", b"Token t", &mut out);
                Some((head.framing, head.close, String::from_utf8(out).unwrap()))
            }
            Parsed::Partial => panic!("partial: {}", String::from_utf8_lossy(bytes)),
            Parsed::Unusual => None,
        }
    }

    #[test]
    fn a_common_write_is_rewritten_minimally() {
        let (framing, close, out) = fast(
            b"POST /write?db=x HTTP/1.1\r\nHost: localhost:8086\r\nAuthorization: Token mine\r\n\
              Content-Length: 5\r\nUser-Agent: t\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n\
              Content-Encoding: gzip\r\n\r\nhello",
        )
        .unwrap();
        assert_eq!(framing, Framing::Length(5));
        assert!(!close);
        assert_eq!(
            out,
            "POST /write?db=x HTTP/1.1\r\nhost: up:8086\r\nauthorization: Token t\r\n\
             Content-Length: 5\r\nUser-Agent: t\r\nContent-Encoding: gzip\r\n\r\n"
        );
    }

    #[test]
    fn chunked_and_close_are_recognised() {
        let (framing, close, out) = fast(
            b"POST /w HTTP/1.1\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\nTE: trailers\r\n\r\n",
        )
        .unwrap();
        assert_eq!(framing, Framing::Chunked);
        assert!(close);
        assert!(out.ends_with("authorization: Token t\r\ntransfer-encoding: chunked\r\n\r\n"));
        assert_eq!(fast(b"GET / HTTP/1.1\r\n\r\n").unwrap().0, Framing::Empty);
        let zero = fast(b"POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n").unwrap();
        assert_eq!(zero.0, Framing::Empty);
    }

    #[test]
    fn anything_unusual_goes_to_hyper() {
        for unusual in [
            // Smuggling material: CL+TE, TE+CL, two CLs (even equal), two TEs, other codings.
            &b"POST / HTTP/1.1\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 5, 5\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: +5\r\n\r\n",
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked, identity\r\n\r\n",
            // Malformed: obs-fold, a space before the colon, a bare header name.
            b"GET / HTTP/1.1\r\nx-a: 1\r\n  folded\r\n\r\n",
            b"GET / HTTP/1.1\r\ncontent-length : 5\r\n\r\n",
            b"GET / HTTP/1.1\r\nx-a\r\n\r\n",
            // Not the common case.
            b"GET / HTTP/1.0\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"CONNECT h:1 HTTP/1.1\r\n\r\n",
            b"GET http://h/ HTTP/1.1\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n\r\n",
            b"GET /a#b HTTP/1.1\r\n\r\n",
            b"GET /a\"b HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 5\r\n\r\n",
            b"GET / HTTP/1.1\r\nupgrade: h2c\r\n\r\n",
            b"GET / HTTP/1.1\r\norigin: http://evil\r\n\r\n",
            b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
            b"GET / HTTP/1.1\r\nconnection: x-hop\r\nx-hop: 1\r\n\r\n",
        ] {
            assert!(
                fast(unusual).is_none(),
                "{}",
                String::from_utf8_lossy(unusual)
            );
        }
    }

    #[test]
    fn a_partial_head_asks_for_more() {
        let mut slots = header_slots();
        assert!(matches!(
            parse_request(b"GET / HTTP/1.1\r\nhost: lo", &mut slots),
            Parsed::Partial
        ));
    }

    fn response(
        bytes: &[u8],
        head_request: bool,
    ) -> Result<(u16, Framing, bool, String), BadResponse> {
        let mut slots = header_slots();
        match parse_response(bytes, &mut slots, head_request)? {
            ParsedResponse::Final(head) => {
                let mut out = Vec::new();
                head.write_client(false, &mut out);
                Ok((
                    head.status,
                    head.framing,
                    head.close,
                    String::from_utf8(out).unwrap(),
                ))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn responses_lose_hop_by_hop_and_cors_headers() {
        let (status, framing, close, out) = response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close, x-hop\r\nx-hop: 1\r\n\
              Access-Control-Allow-Origin: *\r\nRetry-After: 3\r\nKeep-Alive: 1\r\n\r\nok",
            false,
        )
        .unwrap();
        assert_eq!((status, framing, close), (200, Framing::Length(2), true));
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nRetry-After: 3\r\ncontent-length: 2\r\n\r\n"
        );
    }

    #[test]
    fn response_framing_follows_hyper() {
        let framing = |bytes: &[u8], head| response(bytes, head).map(|r| (r.1, r.2));
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n",
                false
            ),
            Ok((Framing::Chunked, false))
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", false),
            Ok((Framing::UntilClose, true))
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\n\r\n", false),
            Ok((Framing::UntilClose, true))
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n", true),
            Ok((Framing::Empty, false))
        );
        assert_eq!(
            framing(b"HTTP/1.1 204 No Content\r\n\r\n", false),
            Ok((Framing::Empty, false))
        );
        assert_eq!(
            framing(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", false),
            Ok((Framing::Length(1), true))
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\ncontent-length: 1, 1\r\n\r\n", false),
            Ok((Framing::Length(1), false))
        );
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
                false
            ),
            Err(BadResponse::Length)
        );
        assert_eq!(
            framing(b"HTTP/1.1 101 Switching\r\n\r\n", false),
            Err(BadResponse::Upgrade)
        );
        // Found by fuzzing: a header named just `Access-Control-`, a status under 100,
        // and a folded value in the client's head.
        let (.., out) = response(
            b"HTTP/1.1 204 No Content\r\naccess-control-: 1\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(out, "HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(
            framing(b"HTTP/1.1 021 OK\r\ncontent-length: 1\r\n\r\n", false),
            Err(BadResponse::Malformed)
        );
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\nx-a: 1\r\n connection: close\r\n\r\n",
                false
            ),
            Err(BadResponse::Malformed)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\ncontent-length : 1\r\n\r\n", false),
            Err(BadResponse::Malformed)
        );
        let mut slots = header_slots();
        assert!(matches!(
            parse_response(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1", &mut slots, false),
            Ok(ParsedResponse::Interim(25))
        ));
    }

    #[test]
    fn decimals() {
        for n in [0u64, 7, 10, 1042, u64::MAX] {
            let mut out = Vec::new();
            write_decimal(n, &mut out);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}

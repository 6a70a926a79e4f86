//! Test harness: a fake lease source, a fake InfluxDB that records what reaches it, a
//! proxy started on ephemeral loopback ports, and a small HTTP client.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use leasehold_channel::{Identity, Secret};
use leasehold_protocol::{AuthScheme, LeaseRecord, LeaseStatus, Timestamp};
use leasehold_proxy::{Config, LeaseSource, Running, SourceError};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long to wait for something the proxy does by itself (readiness, a renewal, a
/// drain, a close): generous, for a loaded 2-core machine. A passing test never waits
/// this long; no test asserts an upper bound on how long something took.
pub const DEADLINE: Duration = Duration::from_secs(60);
pub type TestBody = BoxBody<Bytes, BoxError>;

// ---------------------------------------------------------------------------------------
// Fake lease source

/// Hands out leases `token-1`, `token-2`, ... (or `user1:pass1`, ... for Basic); fails
/// while `fail` is set. Clones share state, so a test keeps one to steer and inspect.
#[derive(Clone)]
pub struct FakeSource {
    state: Arc<SourceState>,
}

struct SourceState {
    calls: AtomicUsize,
    fail: AtomicBool,
    /// Calls after this many fail (`usize::MAX`: never), set before the proxy starts so
    /// that no renewal can slip in between "ready" and a later `set_fail`.
    fail_after: AtomicUsize,
    /// When each call was made, in order.
    call_times: Mutex<Vec<std::time::SystemTime>>,
    ttl_secs: AtomicU64,
    scheme: AuthScheme,
    endpoint: Mutex<String>,
    last_expires_at: Mutex<Option<Timestamp>>,
}

impl FakeSource {
    pub fn new(scheme: AuthScheme, endpoint: &str, ttl_secs: u64) -> Self {
        Self {
            state: Arc::new(SourceState {
                calls: AtomicUsize::new(0),
                fail: AtomicBool::new(false),
                fail_after: AtomicUsize::new(usize::MAX),
                call_times: Mutex::new(Vec::new()),
                ttl_secs: AtomicU64::new(ttl_secs),
                scheme,
                endpoint: Mutex::new(endpoint.to_owned()),
                last_expires_at: Mutex::new(None),
            }),
        }
    }

    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    pub fn set_fail(&self, fail: bool) {
        self.state.fail.store(fail, Ordering::SeqCst);
    }

    /// Every call after the first `calls` fails (`usize::MAX` lifts it).
    pub fn fail_after(&self, calls: usize) {
        self.state.fail_after.store(calls, Ordering::SeqCst);
    }

    /// When each fetch was made, in order.
    pub fn call_times(&self) -> Vec<std::time::SystemTime> {
        self.state.call_times.lock().unwrap().clone()
    }

    pub fn last_expires_at(&self) -> Option<Timestamp> {
        *self.state.last_expires_at.lock().unwrap()
    }
}

impl LeaseSource for FakeSource {
    async fn fetch(&mut self) -> Result<LeaseRecord, SourceError> {
        let n = self.state.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.state
            .call_times
            .lock()
            .unwrap()
            .push(std::time::SystemTime::now());
        if self.state.fail.load(Ordering::SeqCst)
            || n > self.state.fail_after.load(Ordering::SeqCst)
        {
            return Err(SourceError::Other("injected failure".into()));
        }
        let token = match self.state.scheme {
            AuthScheme::Token => format!("token-{n}"),
            AuthScheme::Basic => format!("user{n}:pass{n}"),
        };
        let created_at = Timestamp::now();
        let expires_at = created_at.plus_secs(self.state.ttl_secs.load(Ordering::SeqCst));
        *self.state.last_expires_at.lock().unwrap() = Some(expires_at);
        Ok(LeaseRecord {
            id: format!("{n:016x}"),
            issued_for: Identity::from_seed(&[9; 32]).public(),
            created_at,
            expires_at,
            token: Some(Secret::new(token)),
            status: LeaseStatus::Active,
            auth_scheme: self.state.scheme,
            endpoint_url: self.state.endpoint.lock().unwrap().clone(),
            // As the control states it: what is left of the lease as it answers.
            ttl_ms: Some(
                expires_at
                    .to_system()
                    .duration_since(std::time::SystemTime::now())
                    .map_or(0, |left| left.as_millis() as u64),
            ),
            membership: None,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Fake upstream

/// What the fake InfluxDB saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub authorization: Option<String>,
    pub host: Option<String>,
    pub content_encoding: Option<String>,
    pub version: http::Version,
    pub body_len: usize,
    pub body_hash: u64,
    /// Which upstream connection carried it (1 for the first accepted, and so on).
    pub connection: usize,
}

#[derive(Default)]
pub struct UpstreamState {
    pub seen: Mutex<Vec<Seen>>,
    /// Connections accepted so far.
    pub connections: AtomicUsize,
    /// Requests with exactly this `Authorization` get a 401.
    pub reject: Mutex<Option<String>>,
    /// `/slow` signals this when it has the request, then waits for `release`.
    pub slow_entered: Notify,
    pub release: Notify,
}

/// A small InfluxDB stand-in:
/// - `/status/CODE` answers CODE with `Retry-After: 42` and a JSON body;
/// - `/gzip` answers [`GZIP_BODY`] with `Content-Encoding: gzip`;
/// - `/slow` answers only once released;
/// - `/close` answers 204 with `Connection: close`, then closes the connection;
/// - anything else reads the whole body and answers 204.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub state: Arc<UpstreamState>,
    stop: CancellationToken,
}

/// Bytes that look like gzip; the proxy must not care what they are.
pub const GZIP_BODY: &[u8] = &[
    0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0x07,
    0x00,
];

impl FakeUpstream {
    pub async fn start() -> Self {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    pub fn start_on(listener: TcpListener) -> Self {
        Self::serve(listener, None)
    }

    pub fn start_tls(listener: TcpListener, tls: tokio_rustls::TlsAcceptor) -> Self {
        Self::serve(listener, Some(tls))
    }

    fn serve(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(UpstreamState::default());
        let stop = CancellationToken::new();
        let (s, st) = (Arc::clone(&state), stop.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    () = st.cancelled() => return,
                    accepted = listener.accept() => accepted.unwrap(),
                };
                let state = Arc::clone(&s);
                let connection = state.connections.fetch_add(1, Ordering::SeqCst) + 1;
                let tls = tls.clone();
                let stop = st.clone();
                tokio::spawn(async move {
                    let service =
                        service_fn(move |req| respond(Arc::clone(&state), connection, req));
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let conn = builder.serve_connection(TokioIo::new(stream), service);
                            tokio::select! { _ = conn => {}, () = stop.cancelled() => {} }
                        }
                        None => {
                            let conn = builder.serve_connection(TokioIo::new(stream), service);
                            tokio::select! { _ = conn => {}, () = stop.cancelled() => {} }
                        }
                    }
                });
            }
        });
        Self { addr, state, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream saw no request")
    }

    pub fn reject(&self, authorization: &str) {
        *self.state.reject.lock().unwrap() = Some(authorization.to_owned());
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn respond(
    state: Arc<UpstreamState>,
    connection: usize,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, mut body) = req.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let mut body_len = 0;
    let mut hasher = Fnv::default();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("request body").into_data() {
            body_len += data.len();
            hasher.write(&data);
        }
    }
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        authorization: header("authorization"),
        host: header("host"),
        content_encoding: header("content-encoding"),
        version: parts.version,
        body_len,
        body_hash: hasher.0,
        connection,
    };
    let authorization = seen.authorization.clone();
    state.seen.lock().unwrap().push(seen);

    if authorization.is_some() && *state.reject.lock().unwrap() == authorization {
        return Ok(reply(
            StatusCode::UNAUTHORIZED,
            r#"{"code":"unauthorized","message":"unauthorized access"}"#,
        ));
    }
    let path = parts.uri.path();
    if let Some(code) = path.strip_prefix("/status/") {
        let status = StatusCode::from_u16(code.parse().unwrap()).unwrap();
        let mut response = reply(
            status,
            &format!(r#"{{"code":"upstream","message":"upstream said {code}"}}"#),
        );
        response
            .headers_mut()
            .insert("retry-after", "42".parse().unwrap());
        return Ok(response);
    }
    if path == "/gzip" {
        let mut response = Response::new(Full::new(Bytes::from_static(GZIP_BODY)));
        response
            .headers_mut()
            .insert("content-encoding", "gzip".parse().unwrap());
        return Ok(response);
    }
    if path == "/close" {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        response
            .headers_mut()
            .insert("connection", "close".parse().unwrap());
        return Ok(response);
    }
    if path == "/slow" {
        let released = state.release.notified();
        state.slow_entered.notify_one();
        released.await;
        return Ok(reply(StatusCode::OK, "slow done"));
    }
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

fn reply(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        "application/json; charset=utf-8".parse().unwrap(),
    );
    response
}

/// FNV-1a, to compare large bodies without keeping them.
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The proxy under test

pub struct Proxy {
    pub running: Option<Running>,
    pub shutdown: CancellationToken,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub client: Client<HttpConnector, TestBody>,
}

impl Proxy {
    /// Starts a proxy on ephemeral loopback ports without waiting for a lease.
    pub async fn start(config: Config, source: FakeSource) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let running = leasehold_proxy::start(
            config.validate().unwrap(),
            source,
            listener,
            admin,
            shutdown.clone(),
        )
        .unwrap();
        Self {
            addr: running.proxy_addr(),
            admin: running.admin_addr(),
            running: Some(running),
            shutdown,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Starts a proxy and waits for its first lease.
    /// A ready proxy holding a 300-second token lease for `endpoint`.
    pub async fn with_token(config: Config, endpoint: &str) -> Self {
        Self::ready(config, FakeSource::new(AuthScheme::Token, endpoint, 300)).await
    }

    pub async fn ready(config: Config, source: FakeSource) -> Self {
        let mut proxy = Self::start(config, source).await;
        tokio::time::timeout(DEADLINE, proxy.running.as_mut().unwrap().ready())
            .await
            .expect("proxy ready in time")
            .unwrap();
        proxy
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub async fn send(&self, request: Request<TestBody>) -> Response<Incoming> {
        tokio::time::timeout(DEADLINE, self.client.request(request))
            .await
            .expect("response in time")
            .expect("response")
    }

    /// GET `url`, returning status, headers and the whole body.
    pub async fn get(&self, url: &str) -> (StatusCode, http::HeaderMap, Bytes) {
        read(self.send(Request::get(url).body(empty()).unwrap()).await).await
    }

    /// A client connection of its own (HTTP/1.1), to see what happens per connection.
    pub async fn connect(&self) -> hyper::client::conn::http1::SendRequest<TestBody> {
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        sender
    }

    /// [`Proxy::connect`] without Nagle's delay: each body chunk goes out as its own
    /// segment at once.
    pub async fn connect_nodelay(&self) -> hyper::client::conn::http1::SendRequest<TestBody> {
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        sender
    }

    /// A ready token-lease proxy in front of `upstream` served under the base path
    /// `/influx`.
    pub async fn under_base_path(upstream: &FakeUpstream) -> Self {
        let config = Config {
            upstream: Some(format!("{}/influx", upstream.url())),
            ..config()
        };
        Self::with_token(config, &upstream.url()).await
    }

    /// Stops the proxy and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let running = self.running.take().unwrap();
        tokio::time::timeout(DEADLINE, running.wait())
            .await
            .expect("proxy stopped in time")
            .unwrap();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        ..Config::default()
    }
}

pub fn empty() -> TestBody {
    Full::new(Bytes::new()).map_err(|e| match e {}).boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

pub async fn read(response: Response<Incoming>) -> (StatusCode, http::HeaderMap, Bytes) {
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("response body").to_bytes();
    (parts.status, parts.headers, bytes)
}

/// GET `path_and_query` on a connection from [`Proxy::connect`]; the status.
pub async fn get_on(
    connection: &mut hyper::client::conn::http1::SendRequest<TestBody>,
    path_and_query: &str,
) -> StatusCode {
    connection
        .ready()
        .await
        .expect("the proxy kept the connection open");
    let request = Request::get(path_and_query)
        .header("host", "localhost")
        .body(empty())
        .unwrap();
    let response = tokio::time::timeout(DEADLINE, connection.send_request(request))
        .await
        .expect("response in time")
        .expect("response");
    read(response).await.0
}

/// Whether the upstream saw the warm-up request (`SHOW DATABASES`).
pub fn is_warmup(seen: &Seen) -> bool {
    seen.method == "GET"
        && seen.path == "/query"
        && seen.query.as_deref() == Some("q=SHOW%20DATABASES")
}

/// The token a request carried, from the `Authorization` the upstream saw.
pub fn token_of(seen: &Seen) -> &str {
    seen.authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Token "))
        .expect("a Token header")
}

/// Polls `check` until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// A chunked body of known content

/// `len` bytes of a fixed pattern in `chunk`-sized frames with no length announced, so
/// it goes out with `Transfer-Encoding: chunked`.
pub struct PatternBody {
    sent: usize,
    len: usize,
    chunk: usize,
}

impl PatternBody {
    pub fn new(len: usize, chunk: usize) -> Self {
        Self {
            sent: 0,
            len,
            chunk,
        }
    }

    pub fn byte(i: usize) -> u8 {
        ((i * 31 + 7) % 251) as u8
    }

    pub fn hash(len: usize) -> u64 {
        let mut fnv = Fnv::default();
        let bytes: Vec<u8> = (0..len).map(Self::byte).collect();
        fnv.write(&bytes);
        fnv.0
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.sent >= self.len {
            return Poll::Ready(None);
        }
        let end = (self.sent + self.chunk).min(self.len);
        let data: Vec<u8> = (self.sent..end).map(Self::byte).collect();
        self.sent = end;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(data)))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// Writes `request` on a raw connection and returns what one read brings back (empty if
/// the proxy closed the connection instead of answering).
pub async fn send_and_read(stream: &mut tokio::net::TcpStream, request: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request).await.unwrap();
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    buf.truncate(n);
    buf
}

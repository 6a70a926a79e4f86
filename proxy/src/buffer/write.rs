//! The request path of a line-protocol write when the buffer is on.
//!
//! The body is read whole (bounded), because a write that fails upstream must still be
//! there to store. Then: if nothing is buffered and a lease is held, it goes to InfluxDB
//! at once and InfluxDB's answer is the client's — except an answer that means "not
//! now" (5xx, 429), a connection failure or no answer in time, which send it to disk.
//! If something is buffered already, or no lease is held, it goes to disk directly,
//! behind what is waiting. Stored writes are answered `204` once they are durable.

use std::io::Read;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_ENCODING, HOST, RETRY_AFTER};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use tracing::{debug, info, warn};

use super::stamp::{self, Precision};
use super::{AppendError, Buffer, Outcome, classify, now_ns, record};
use crate::drain::close_after;
use crate::forward::Shared;
use crate::responses::{self, ErrorCode, ProxyBody};
use crate::rewrite;
use crate::timed_body::TimedBody;

/// The largest write body accepted (after gzip decompression) when buffering is on;
/// InfluxDB's own default limit is 25 MB.
pub const MAX_WRITE_BYTES: usize = 32 * 1024 * 1024;

/// The header on a `204` that means "stored on this device", not yet in InfluxDB.
pub const BUFFERED_HEADER: &str = "x-leasehold-buffered";

/// `Retry-After` on a full buffer: replay frees room at its own pace.
const FULL_RETRY_AFTER_SECS: u64 = 5;

/// Whether a request is a line-protocol write (the only requests buffered).
pub fn is_write(request: &Request<Incoming>) -> bool {
    request.method() == Method::POST && record::is_write_path(request.uri().path())
}

/// Answers a write: delivered now, or stored and delivered later.
pub async fn handle_write(
    buffer: &Buffer,
    shared: &Shared,
    request: Request<Incoming>,
    keep_cors: bool,
) -> Response<ProxyBody> {
    let arrival_ns = now_ns();
    let (mut parts, body) = request.into_parts();
    let query = parts.uri.query();
    let Some(precision) = Precision::from_query(query) else {
        return invalid("invalid precision: use one of ns, us, ms, s, m, h");
    };
    let limited = Limited::new(
        TimedBody::new(body, shared.body_read_timeout),
        MAX_WRITE_BYTES,
    );
    let body = match limited.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            let too_large = error.is::<http_body_util::LengthLimitError>();
            debug!(%error, "reading a write body failed");
            let (status, message) = if too_large {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "write body too large for the store-and-forward buffer (32 MiB)",
                )
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    "the request body could not be read",
                )
            };
            let mut response = responses::error(status, ErrorCode::Invalid, message);
            close_after(&mut response);
            return response;
        }
    };
    let gzip = parts
        .headers
        .get(CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));

    if buffer.is_empty()
        && let Some(credential) = shared.store.current(tokio::time::Instant::now())
    {
        let upstream = credential.upstream();
        let target = std::mem::take(&mut parts.uri).into_parts().path_and_query;
        let uri = upstream
            .target_path(target.clone())
            .and_then(|path| upstream.absolute_uri(path));
        let Ok(uri) = uri else {
            return invalid("invalid request target");
        };
        let client_version = parts.version;
        let mut upstream_parts = parts.clone();
        rewrite::prepare_request_headers(&mut upstream_parts.headers);
        upstream_parts.headers.remove(HOST);
        upstream_parts
            .headers
            .insert(AUTHORIZATION, credential.header().clone());
        upstream_parts.uri = uri;
        upstream_parts.version = Version::HTTP_11;
        let generation = credential.generation();
        drop(credential);
        let request = Request::from_parts(upstream_parts, Full::new(body.clone()));
        let started = tokio::time::Instant::now();
        let sent = tokio::time::timeout(
            buffer.config.upstream_timeout,
            buffer.client.request(request),
        )
        .await;
        match sent {
            Ok(Ok(response))
                if classify(response.status()) != Outcome::Retry
                    || response.status() == StatusCode::UNAUTHORIZED =>
            {
                shared.metrics.observe_upstream_latency(started.elapsed());
                if response.status() == StatusCode::UNAUTHORIZED
                    && shared.store.request_renewal(generation)
                {
                    info!(generation, "upstream answered 401; lease renewal requested");
                }
                let (mut parts, body) = response.into_parts();
                rewrite::prepare_response_headers(&mut parts.headers, keep_cors);
                parts.version = Version::HTTP_11;
                return Response::from_parts(parts, Either::Left(body));
            }
            Ok(Ok(response)) => {
                debug!(status = %response.status(), "InfluxDB cannot take the write now; buffering it");
            }
            Ok(Err(error)) => {
                let (_, message) = crate::connector::describe_error(&error);
                debug!(error = %message, "InfluxDB unreachable; buffering the write");
            }
            Err(_) => debug!("InfluxDB did not answer in time; buffering the write"),
        }
        parts.uri = match target {
            Some(target) => target.into(),
            None => http::Uri::from_static("/"),
        };
        parts.version = client_version;
    }
    store(buffer, &parts, &body, gzip, precision, arrival_ns).await
}

/// Stamps, encodes and durably appends a write; `204` once it is on disk.
async fn store(
    buffer: &Buffer,
    parts: &http::request::Parts,
    body: &Bytes,
    gzip: bool,
    precision: Precision,
    arrival_ns: u64,
) -> Response<ProxyBody> {
    let plain = if gzip {
        match gunzip(body) {
            Ok(plain) => std::borrow::Cow::Owned(plain),
            Err(message) => return invalid(message),
        }
    } else {
        std::borrow::Cow::Borrowed(&body[..])
    };
    let stamped = stamp::stamp(&plain, precision.of(arrival_ns));
    let target = record::stored_target(parts.uri.path(), parts.uri.query());
    let mut encoded = Vec::new();
    record::encode(&mut encoded, arrival_ns, &target, &stamped);
    match buffer.append(encoded, arrival_ns).await {
        Ok(()) => {
            let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
                .headers_mut()
                .insert(BUFFERED_HEADER, HeaderValue::from_static("1"));
            response
        }
        Err(AppendError::Full) => {
            warn!(
                limit = buffer.stats.limit,
                "write buffer full; answering 503"
            );
            let mut response = responses::error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "the write buffer is full: InfluxDB has been unreachable for too long; retry later",
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(FULL_RETRY_AFTER_SECS));
            response
        }
        Err(error) => {
            warn!(%error, "storing a write failed; answering 503");
            let mut response = responses::error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                &error.to_string(),
            );
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(FULL_RETRY_AFTER_SECS));
            response
        }
    }
}

/// Decompresses a gzip body, bounded by [`MAX_WRITE_BYTES`].
fn gunzip(body: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut plain = Vec::with_capacity(body.len().saturating_mul(4).min(MAX_WRITE_BYTES));
    let limit = u64::try_from(MAX_WRITE_BYTES).unwrap_or(u64::MAX) + 1;
    flate2::read::MultiGzDecoder::new(body)
        .take(limit)
        .read_to_end(&mut plain)
        .map_err(|_| "invalid gzip body")?;
    if plain.len() > MAX_WRITE_BYTES {
        return Err("gzip body too large for the store-and-forward buffer (32 MiB decompressed)");
    }
    Ok(plain)
}

fn invalid(message: &str) -> Response<ProxyBody> {
    responses::error(StatusCode::BAD_REQUEST, ErrorCode::Invalid, message)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn gzip_is_bounded_and_checked() {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(b"cpu v=1\n").unwrap();
        let gz = encoder.finish().unwrap();
        assert_eq!(gunzip(&gz).unwrap(), b"cpu v=1\n");
        assert!(gunzip(b"not gzip").is_err());
        let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        bomb.write_all(&vec![b'a'; MAX_WRITE_BYTES + 1]).unwrap();
        assert!(gunzip(&bomb.finish().unwrap()).is_err());
    }
}

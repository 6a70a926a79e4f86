//! The write endpoints: `POST /api/v2/write` and the v1-compatible `POST /write`.
//!
//! Checks run in influxd's order (`http/write_handler.go`): credential (401), query
//! parameters (400/404), write permission on the bucket (403 `insufficient permissions
//! for write`, also for an inactive token), then the body: gzip when
//! `Content-Encoding: gzip`, empty is 400 `writing requires points`. Lines are counted,
//! not stored as points: blank lines and `#` comments are skipped, a line without a
//! field set is 400 and nothing of that batch is recorded.

use std::io::Read;

use bytes::Bytes;
use http::header::CONTENT_ENCODING;
use http::request::Parts;
use hyper::body::Incoming;

use super::inspect::WrittenPoint;
use super::request::{Query, header_token, read_body, v1_token};
use super::shared::Shared;
use super::store::Action;
use super::wire::ApiError;

/// Largest accepted body, before and after gzip decoding.
const MAX_BODY: usize = 16 << 20;

/// Where a batch goes, from the query string.
struct Target {
    bucket: String,
    precision: Option<String>,
}

/// `POST /api/v2/write?org=&bucket=&precision=`.
pub(crate) async fn v2(shared: &Shared, parts: Parts, body: Incoming) -> Result<(), ApiError> {
    let query = Query::parse(parts.uri.query());
    let token = header_token(&parts.headers);
    let auth_id = authenticate(shared, token.as_deref())?;
    let precision = query.owned("precision");
    if precision
        .as_deref()
        .is_some_and(|p| !["ns", "us", "ms", "s"].contains(&p))
    {
        return Err(ApiError::invalid(
            "invalid precision; valid precision units are ns, us, ms, and s",
        ));
    }
    // OSS requires `org` or `orgID`, Cloud ignores both and uses the token's org; this
    // server accepts neither being present, but a wrong one is the contract's 400.
    if let Some(org) = query.get("orgID").or_else(|| query.get("org")) {
        let ok = shared.with_store(|s| org == s.org_id || org == s.org_name);
        if !ok {
            return Err(ApiError::invalid(
                "failed to decode request body: organization not found",
            ));
        }
    }
    let bucket = query
        .owned("bucket")
        .ok_or_else(|| ApiError::not_found("bucket \"\" not found"))?;
    let target = Target { bucket, precision };
    accept(shared, &auth_id, target, &parts, body).await
}

/// `POST /write?db=&rp=&precision=` (v1 compatibility). The bucket is `db`, or `db/rp`
/// when `rp` is given and is not `autogen`, as 2.x names buckets for DBRP mappings.
pub(crate) async fn v1(shared: &Shared, parts: Parts, body: Incoming) -> Result<(), ApiError> {
    let query = Query::parse(parts.uri.query());
    let token = v1_token(&parts.headers, &query);
    let auth_id = authenticate(shared, token.as_deref())?;
    let db = query
        .get("db")
        .ok_or_else(|| ApiError::not_found("no dbrp mapping found"))?;
    let bucket = match query.get("rp") {
        Some(rp) if rp != "autogen" => format!("{db}/{rp}"),
        _ => db.to_owned(),
    };
    let target = Target {
        bucket,
        precision: query.owned("precision"),
    };
    accept(shared, &auth_id, target, &parts, body).await
}

/// 401 unless `token` names an existing authorization; returns its id.
fn authenticate(shared: &Shared, token: Option<&str>) -> Result<String, ApiError> {
    let token = token.ok_or_else(ApiError::unauthorized)?;
    shared
        .with_store(|s| s.by_token(token).map(|a| a.id.clone()))
        .ok_or_else(ApiError::unauthorized)
}

async fn accept(
    shared: &Shared,
    auth_id: &str,
    target: Target,
    parts: &Parts,
    body: Incoming,
) -> Result<(), ApiError> {
    let allowed = shared.with_store(|s| {
        s.get(auth_id)
            .is_some_and(|a| a.permits(Action::Write, "buckets", &s.org_id, Some(&target.bucket)))
    });
    if !allowed {
        return Err(ApiError::forbidden("insufficient permissions for write"));
    }
    let raw = read_body(body, MAX_BODY).await?;
    let gzip = parts
        .headers
        .get(CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes() == b"gzip" || v.as_bytes() == b"x-gzip");
    let data = if gzip { gunzip(&raw)? } else { raw };
    if data.is_empty() {
        return Err(ApiError::invalid("writing requires points"));
    }
    let lines = parse_lines(&data)?;
    let points = lines.into_iter().map(|line| WrittenPoint {
        bucket: target.bucket.clone(),
        authorization_id: auth_id.to_owned(),
        precision: target.precision.clone(),
        line,
    });
    shared.with_store(|s| s.record(points));
    Ok(())
}

fn gunzip(raw: &[u8]) -> Result<Bytes, ApiError> {
    let mut out = Vec::new();
    let read = flate2::read::GzDecoder::new(raw)
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut out);
    match read {
        Err(e) => Err(ApiError::invalid(format!("unable to read data: {e}"))),
        Ok(n) if n > MAX_BODY => Err(ApiError::too_large(
            "unable to read data: points batch is too large",
        )),
        Ok(_) => Ok(out.into()),
    }
}

/// The non-blank, non-comment lines of a batch, each checked to have a field set.
pub(crate) fn parse_lines(data: &[u8]) -> Result<Vec<String>, ApiError> {
    let text = std::str::from_utf8(data)
        .map_err(|_| ApiError::invalid("unable to parse points: invalid UTF-8"))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            if has_fields(line) {
                Ok(line.to_owned())
            } else {
                Err(ApiError::invalid(format!(
                    "unable to parse '{line}': missing fields"
                )))
            }
        })
        .collect()
}

/// Whether the part after the first unescaped space (the field set) has a `key=value`.
fn has_fields(line: &str) -> bool {
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ' ' => return line[i + 1..].trim_start().contains('='),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_lines_and_rejects_fieldless_ones() {
        let body = b"# comment\ncpu,host=a usage=1 1\n\n  mem free=2i\r\nmy\\ measurement v=1\n";
        let lines = parse_lines(body).expect("valid");
        assert_eq!(
            lines,
            [
                "cpu,host=a usage=1 1",
                "mem free=2i",
                "my\\ measurement v=1"
            ]
        );
        let err = parse_lines(b"cpu usage=1\nbroken\n").expect_err("invalid");
        assert_eq!(err.message, "unable to parse 'broken': missing fields");
        assert!(parse_lines(b"cpu,host=a\\ b").is_err());
        assert!(parse_lines(b"\xff\xfe x=1").is_err());
    }

    #[test]
    fn gunzip_round_trips_and_rejects_garbage() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(b"cpu v=1\n").expect("write");
        let gz = enc.finish().expect("finish");
        assert_eq!(&gunzip(&gz).expect("gzip")[..], b"cpu v=1\n");
        assert_eq!(
            gunzip(b"not gzip").expect_err("garbage").status.as_u16(),
            400
        );
    }
}

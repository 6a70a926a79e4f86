//! Pure header and query rewriting between the application and InfluxDB.
//!
//! What leaves the application must not carry its own credentials (so a misconfigured
//! client cannot bypass or confuse the lease) and must not carry hop-by-hop headers
//! (RFC 9110 §7.6.1: they describe one connection, and the proxy is a different
//! connection on each side). Everything else passes untouched — in particular
//! `Content-Encoding`, `Content-Length` and `Retry-After`.
//!
//! These run on every request, so the common case allocates nothing: the query is only
//! rebuilt when it really holds `u` or `p`, and `Connection` tokens are only collected
//! when they name something other than `close`/`keep-alive`.

use http::header::{
    AUTHORIZATION, CONNECTION, EXPECT, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER,
    TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Headers that only describe one hop (plus the legacy `Proxy-Connection`), besides
/// `Connection` itself.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    // Standard names compare as enum tags; only the two non-standard ones compare text.
    [
        PROXY_AUTHENTICATE,
        PROXY_AUTHORIZATION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
        UPGRADE,
    ]
    .contains(name)
        || matches!(name.as_str(), "keep-alive" | "proxy-connection")
}

/// Prepares a client request's headers for the upstream: hop-by-hop headers, the
/// client's `Authorization` and `Expect` (the server side already answered
/// `100 Continue` when the body was read) are removed. The caller then inserts the
/// lease's `Authorization`, and replaces `Host` with the upstream's (or removes it for
/// the HTTP client to set): every HTTP/1.1 request has one, and replacing it costs one
/// map operation where removing it first would cost two.
pub fn prepare_request_headers(headers: &mut HeaderMap) {
    strip(headers, &[AUTHORIZATION, EXPECT], false);
}

/// Prepares an upstream response's headers for the client: hop-by-hop headers go, and
/// `Access-Control-*` unless `keep_cors` (the request came from an allow-listed origin:
/// InfluxDB 1.x grants CORS to any `Origin`, see `browser.rs`); everything else
/// (status-related headers such as `Retry-After` included) stays.
pub fn prepare_response_headers(headers: &mut HeaderMap, keep_cors: bool) {
    strip(headers, &[], !keep_cors);
}

/// Removes `Connection`, every header it names, the fixed hop-by-hop set and `also`,
/// and `Access-Control-*` when `cors` is set.
///
/// This runs twice per proxied request, so it walks the names present once and removes
/// only those it finds: `HeaderMap::remove` hashes its argument even for an absent name,
/// and removing the dozen candidates one by one was 8% of the proxy's instructions per
/// small write.
fn strip(headers: &mut HeaderMap, also: &[HeaderName], cors: bool) {
    // Allocates only when there is something to remove, which a typical write lacks.
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if *name == CONNECTION
            || is_hop_by_hop(name)
            || also.contains(name)
            || (cors && name.as_str().starts_with("access-control-"))
        {
            doomed.push(name.clone());
        }
    }
    if doomed.is_empty() {
        return;
    }
    let names_others = headers
        .get_all(CONNECTION)
        .iter()
        .any(|value| connection_tokens(value).any(|t| !is_builtin_token(t)));
    if names_others {
        // Rare: the client declared extension hop-by-hop headers. Copy the values out so
        // the map can be mutated while walking them.
        let values: Vec<HeaderValue> = headers.get_all(CONNECTION).iter().cloned().collect();
        for value in &values {
            for token in connection_tokens(value) {
                headers.remove(token);
            }
        }
    }
    for name in &doomed {
        headers.remove(name);
    }
}

fn connection_tokens(value: &HeaderValue) -> impl Iterator<Item = &str> {
    value
        .to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn is_builtin_token(token: &str) -> bool {
    token.eq_ignore_ascii_case("close") || token.eq_ignore_ascii_case("keep-alive")
}

/// The query string without its `u` and `p` parameters (InfluxDB 1.x credentials), or
/// `None` when it has none, so the caller can keep the original without allocating.
///
/// Keys are matched as InfluxDB (Go's `url.ParseQuery`) would decode them, so the
/// percent-encoded spellings `%75` and `%70` are removed too. Pairs are split on `;` as
/// well as `&`: Go before 1.17 (older InfluxDB builds) treats both as separators, so a
/// `db=x;u=me` must lose its `u` as surely as `db=x&u=me`. Kept pairs keep the separator
/// that preceded them.
pub fn strip_credential_params(query: &str) -> Option<String> {
    if !has_credential_param(query) {
        return None;
    }
    let mut out = String::with_capacity(query.len());
    for pair in query_pairs(query).filter(|p| !p.is_empty() && !is_credential_param(p)) {
        if !out.is_empty() {
            // The byte before a pair that is not the first is its separator.
            let start = pair.as_ptr() as usize - query.as_ptr() as usize;
            out.push_str(&query[start - 1..start]);
        }
        out.push_str(pair);
    }
    Some(out)
}

/// Whether a pair of `query` is a credential: `query_pairs(query).any(is_credential_param)`
/// in one pass over the bytes, a key looked at only when it starts with `u`, `p` or `%`.
/// Runs on every request with a query; the iterator version (a two-character split
/// pattern) was ~600 instructions for `db=telemetry&precision=s`.
fn has_credential_param(query: &str) -> bool {
    let bytes = query.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        let end = bytes[start..]
            .iter()
            .position(|&b| b == b'&' || b == b';')
            .map_or(bytes.len(), |at| start + at);
        if matches!(bytes[start], b'u' | b'p' | b'%') && is_credential_param(&query[start..end]) {
            return true;
        }
        start = end + 1;
    }
    false
}

/// The `key=value` pairs of a query, split on `&` and `;`.
fn query_pairs(query: &str) -> impl Iterator<Item = &str> {
    query.split(['&', ';'])
}

fn is_credential_param(pair: &str) -> bool {
    // A byte scan: `=` is ASCII, and the general `split_once` searcher, run for every
    // pair of every request, showed up in the per-request profile.
    let key = match pair.bytes().position(|b| b == b'=') {
        Some(at) => &pair[..at],
        None => pair,
    };
    matches!(key, "u" | "p") || key.eq_ignore_ascii_case("%75") || key.eq_ignore_ascii_case("%70")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use http::header::HOST;

    use super::*;

    #[test]
    fn the_byte_scan_finds_what_the_pairs_hold() {
        for (query, has) in [
            ("", false),
            ("db=x", false),
            ("u=a", true),
            ("db=x&p", true),
            ("db=x;%75=a", true),
            ("up=1&pu=2&%7=3", false),
            ("&&u", true),
            ("a&", false),
        ] {
            assert_eq!(has_credential_param(query), has, "{query}");
        }
    }

    #[test]
    fn queries_without_credentials_are_left_alone() {
        assert_eq!(strip_credential_params("db=x&precision=s"), None);
        assert_eq!(strip_credential_params(""), None);
        assert_eq!(strip_credential_params("user=u&pp=1&up=2"), None);
    }

    #[test]
    fn credentials_are_removed_in_any_spelling() {
        assert_eq!(strip_credential_params("u=a&p=b").as_deref(), Some(""));
        assert_eq!(
            strip_credential_params("db=x&u=a&q=select&p=b").as_deref(),
            Some("db=x&q=select")
        );
        assert_eq!(
            strip_credential_params("%75=a&%70=b&db=x").as_deref(),
            Some("db=x")
        );
        assert_eq!(strip_credential_params("u&db=x").as_deref(), Some("db=x"));
    }

    #[test]
    fn semicolons_separate_pairs_like_ampersands() {
        assert_eq!(strip_credential_params("db=x;rp=y"), None);
        assert_eq!(
            strip_credential_params("db=x;u=me;p=pw").as_deref(),
            Some("db=x")
        );
        assert_eq!(
            strip_credential_params("u=me;db=x&p=pw;rp=y").as_deref(),
            Some("db=x;rp=y")
        );
        assert_eq!(
            strip_credential_params("q=select;%70=pw").as_deref(),
            Some("q=select")
        );
    }

    #[test]
    fn request_headers_lose_credentials_and_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Token client"));
        h.insert(HOST, HeaderValue::from_static("localhost:8086"));
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive, X-Hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(PROXY_AUTHORIZATION, HeaderValue::from_static("Basic x"));
        h.insert("content-encoding", HeaderValue::from_static("gzip"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        prepare_request_headers(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        // `Host` is the caller's to replace.
        assert_eq!(left, ["content-encoding", "content-type", "host"]);
    }

    #[test]
    fn response_headers_keep_retry_after() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("30"));
        h.insert(CONNECTION, HeaderValue::from_static("close"));
        h.insert("content-encoding", HeaderValue::from_static("gzip"));
        prepare_response_headers(&mut h, false);
        assert_eq!(h.len(), 2);
        assert_eq!(h["retry-after"], "30");
    }

    #[test]
    fn cors_headers_go_unless_the_origin_was_allowed() {
        let cors = || {
            let mut h = HeaderMap::new();
            h.insert(
                "access-control-allow-origin",
                HeaderValue::from_static("https://evil.example"),
            );
            h.insert(
                "access-control-expose-headers",
                HeaderValue::from_static("Date"),
            );
            h.insert("content-type", HeaderValue::from_static("application/json"));
            h
        };
        let mut h = cors();
        prepare_response_headers(&mut h, false);
        assert_eq!(
            h.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["content-type"]
        );
        let mut h = cors();
        prepare_response_headers(&mut h, true);
        assert_eq!(h.len(), 3);
    }

    proptest! {
        #[test]
        fn stripped_queries_never_hold_credentials(pairs in proptest::collection::vec(("[a-z%0-9]{0,3}", "[a-z0-9]{0,3}", "[&;]"), 0..8)) {
            let query: String = pairs.iter().map(|(k, v, sep)| format!("{k}={v}{sep}")).collect();
            prop_assert_eq!(has_credential_param(&query), query_pairs(&query).any(is_credential_param));
            let out = strip_credential_params(&query);
            let kept = out.as_deref().unwrap_or(&query);
            prop_assert!(!query_pairs(kept).any(is_credential_param));
            // Non-credential pairs keep their order.
            let expected: Vec<_> = query_pairs(&query).filter(|p| !p.is_empty() && !is_credential_param(p)).collect();
            let got: Vec<_> = query_pairs(kept).filter(|p| !p.is_empty()).collect();
            prop_assert_eq!(expected, got);
        }
    }
}

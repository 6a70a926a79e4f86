//! The upstream InfluxDB base URL, parsed once, and how a request's path maps onto it.
//!
//! The base URL comes either from `--upstream` (parsed at config validation) or from a
//! lease's `endpoint_url` (parsed when the lease arrives). Both are checked before any
//! request depends on them, so the request path only glues pre-validated pieces together:
//! scheme and authority are reference-counted clones, and the path is reused untouched
//! unless a base path has to be prefixed or credentials stripped from the query.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Uri};

use crate::rewrite;

/// Why a base URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamUrlError {
    /// Not a URL at all.
    #[error("not a valid URL")]
    Malformed,
    /// Only `http` and `https` are proxied to.
    #[error("the scheme must be http or https")]
    Scheme,
    /// A base URL needs a host.
    #[error("the URL has no host")]
    NoHost,
    /// `user:password@` in the URL: credentials come from the lease, never the URL.
    #[error("the URL must not contain credentials (user:password@)")]
    Userinfo,
    /// A base URL cannot carry a query or fragment.
    #[error("the URL must not have a query string or fragment")]
    Query,
}

/// A validated `http(s)://host[:port][/base/path]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// Base path without the trailing slash; `None` for the root.
    base_path: Option<Box<str>>,
    /// The `Host` header for requests sent in origin form, built once here rather than
    /// formatted per request (what hyper-util's pooled client does).
    host: HeaderValue,
}

/// A request target that cannot be forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// Not origin-form (`*`, or no leading `/`).
    #[error("the request target must be a path starting with `/`")]
    NotOriginForm,
    /// A `.` or `..` segment (also percent-encoded) under the upstream's base path: the
    /// upstream or a proxy in front of it may resolve it out of the base path, with the
    /// lease attached.
    #[error("the request path must not contain `.` or `..` segments")]
    DotSegment,
}

impl Upstream {
    /// Parses and validates a base URL.
    pub fn parse(url: &str) -> Result<Self, UpstreamUrlError> {
        if url.contains('#') {
            return Err(UpstreamUrlError::Query);
        }
        let uri: Uri = url
            .trim()
            .parse()
            .map_err(|_| UpstreamUrlError::Malformed)?;
        let scheme = uri.scheme().cloned().ok_or(UpstreamUrlError::Scheme)?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(UpstreamUrlError::Scheme);
        }
        let authority = uri.authority().cloned().ok_or(UpstreamUrlError::NoHost)?;
        if authority.as_str().contains('@') {
            return Err(UpstreamUrlError::Userinfo);
        }
        if authority.host().is_empty() {
            return Err(UpstreamUrlError::NoHost);
        }
        if uri.query().is_some() {
            return Err(UpstreamUrlError::Query);
        }
        let path = uri.path().trim_end_matches('/');
        let base_path = (!path.is_empty()).then(|| path.into());
        let host = host_header(&scheme, &authority)?;
        Ok(Self {
            scheme,
            authority,
            base_path,
            host,
        })
    }

    /// Whether requests go over TLS.
    pub fn is_https(&self) -> bool {
        self.scheme == Scheme::HTTPS
    }

    /// `host[:port]`: where to connect.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The `Host` header value: the host, and the port unless it is the scheme's
    /// default (as hyper-util's client writes it).
    pub fn host_header(&self) -> &HeaderValue {
        &self.host
    }

    /// The absolute URI to send a client request for `target` to: the base path
    /// prefixed, `u`/`p` removed from the query. Allocates only when one of those applies.
    pub fn target_uri(&self, target: Option<PathAndQuery>) -> Result<Uri, TargetError> {
        self.absolute_uri(self.target_path(target)?)
    }

    /// The path and query to send upstream for a client's `target` (see
    /// [`Self::target_uri`]); on its own, it is the origin form of the request target.
    pub fn target_path(&self, target: Option<PathAndQuery>) -> Result<PathAndQuery, TargetError> {
        match target {
            Some(pq) => self.map_path(pq),
            None => self.map_path(PathAndQuery::from_static("/")),
        }
    }

    /// `path` (from [`Self::target_path`]) on this upstream, in absolute form.
    pub fn absolute_uri(&self, path: PathAndQuery) -> Result<Uri, TargetError> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path);
        Uri::from_parts(parts).map_err(|_| TargetError::NotOriginForm)
    }

    fn map_path(&self, pq: PathAndQuery) -> Result<PathAndQuery, TargetError> {
        match self.map_target(pq.as_str())? {
            Cow::Borrowed(_) => Ok(pq),
            Cow::Owned(out) => PathAndQuery::from_maybe_shared(Bytes::from(out))
                .map_err(|_| TargetError::NotOriginForm),
        }
    }

    /// [`Self::target_path`] on a target's text (the HTTP/1 fast path's, which has no
    /// `PathAndQuery`): borrowed unless a base path is prefixed or credentials stripped.
    pub fn map_target<'a>(&self, target: &'a str) -> Result<Cow<'a, str>, TargetError> {
        let (path, query) = match target.find('?') {
            Some(at) => (&target[..at], Some(&target[at + 1..])),
            None => (target, None),
        };
        if !path.starts_with('/') {
            return Err(TargetError::NotOriginForm);
        }
        // Only a base path can be escaped; without one the scan is skipped.
        if self.base_path.is_some() && has_dot_segment(path) {
            return Err(TargetError::DotSegment);
        }
        let stripped = query.and_then(rewrite::strip_credential_params);
        if self.base_path.is_none() && stripped.is_none() {
            return Ok(Cow::Borrowed(target));
        }
        let base = self.base_path.as_deref().unwrap_or("");
        let query = match &stripped {
            Some(q) => q.as_str(),
            None => query.unwrap_or(""),
        };
        let mut out = String::with_capacity(base.len() + path.len() + 1 + query.len());
        out.push_str(base);
        out.push_str(path);
        if !query.is_empty() {
            out.push('?');
            out.push_str(query);
        }
        Ok(Cow::Owned(out))
    }
}

/// Whether `path` has a segment that is `.` or `..` once percent-decoded, splitting on
/// `/`, `\\` and their encoded forms too (servers differ in what they decode before
/// resolving, so the strictest reading is the safe one). No allocation: one pass over
/// the bytes, counting the dots of the current segment.
fn has_dot_segment(path: &str) -> bool {
    let bytes = path.as_bytes();
    // Dots in the current segment, or `None` once it holds anything else.
    let mut dots = Some(0u8);
    let mut i = 0;
    while i < bytes.len() {
        let (unit, width) = match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match (
                    bytes[i + 1].to_ascii_lowercase(),
                    bytes[i + 2].to_ascii_lowercase(),
                ) {
                    (b'2', b'e') => (b'.', 3),
                    (b'2', b'f') | (b'5', b'c') => (b'/', 3),
                    _ => (b'%', 1),
                }
            }
            b'\\' => (b'/', 1),
            other => (other, 1),
        };
        match unit {
            b'/' => {
                if matches!(dots, Some(1 | 2)) {
                    return true;
                }
                dots = Some(0);
            }
            b'.' => dots = dots.map(|n| n.saturating_add(1)),
            _ => dots = None,
        }
        i += width;
    }
    matches!(dots, Some(1 | 2))
}

/// The `Host` value for `authority`: without the port when it is the scheme's default.
fn host_header(scheme: &Scheme, authority: &Authority) -> Result<HeaderValue, UpstreamUrlError> {
    let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
    let value = match authority.port_u16() {
        Some(port) if port != default_port => HeaderValue::from_str(authority.as_str()),
        _ => HeaderValue::from_str(authority.host()),
    };
    value.map_err(|_| UpstreamUrlError::Malformed)
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme,
            self.authority,
            self.base_path.as_deref().unwrap_or("")
        )
    }
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Upstream({self})")
    }
}

/// `url` with any `user:password@` replaced, for error messages about URLs that were
/// refused (and so may be exactly the ones that carry credentials).
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(start), Some(at)) if at > start => {
            format!("{}<redacted>{}", &url[..start + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(upstream: &str, pq: &str) -> String {
        let up = Upstream::parse(upstream).unwrap();
        up.target_uri(Some(pq.parse().unwrap()))
            .unwrap()
            .to_string()
    }

    #[test]
    fn parses_valid_bases() {
        let up = Upstream::parse("https://influx.example:8443/").unwrap();
        assert!(up.is_https());
        assert_eq!(up.to_string(), "https://influx.example:8443");
        assert_eq!(
            Upstream::parse("http://h/influx/").unwrap().to_string(),
            "http://h/influx"
        );
    }

    #[test]
    fn refuses_bad_bases() {
        assert_eq!(
            Upstream::parse("not a url"),
            Err(UpstreamUrlError::Malformed)
        );
        assert_eq!(Upstream::parse("ftp://h"), Err(UpstreamUrlError::Scheme));
        assert_eq!(
            Upstream::parse("/just/a/path"),
            Err(UpstreamUrlError::Scheme)
        );
        assert_eq!(
            Upstream::parse("http://u:pw@h"),
            Err(UpstreamUrlError::Userinfo)
        );
        assert_eq!(
            Upstream::parse("http://h/?x=1"),
            Err(UpstreamUrlError::Query)
        );
        assert_eq!(Upstream::parse("http://h/#x"), Err(UpstreamUrlError::Query));
    }

    #[test]
    fn maps_paths_and_queries() {
        assert_eq!(
            target("http://h:8086", "/write?db=x&precision=s"),
            "http://h:8086/write?db=x&precision=s"
        );
        assert_eq!(
            target("http://h/base/", "/api/v2/write?org=o"),
            "http://h/base/api/v2/write?org=o"
        );
        assert_eq!(
            target("http://h", "/query?u=me&db=x&p=pw"),
            "http://h/query?db=x"
        );
        assert_eq!(target("http://h/b", "/query?u=me&p=pw"), "http://h/b/query");
        let up = Upstream::parse("http://h").unwrap();
        assert_eq!(up.target_uri(None).unwrap().to_string(), "http://h/");
        assert_eq!(
            up.target_uri(Some(PathAndQuery::from_static("*"))),
            Err(TargetError::NotOriginForm)
        );
    }

    #[test]
    fn host_header_omits_only_the_default_port() {
        let host = |url: &str| Upstream::parse(url).unwrap().host_header().clone();
        assert_eq!(host("http://h:8086/base"), "h:8086");
        assert_eq!(host("http://h:80"), "h");
        assert_eq!(host("http://h"), "h");
        assert_eq!(host("https://h:443"), "h");
        assert_eq!(host("https://h:80"), "h:80");
        assert_eq!(host("http://[::1]:8086"), "[::1]:8086");
        assert_eq!(host("http://[::1]:80"), "[::1]");
        let up = Upstream::parse("http://h:8086/base").unwrap();
        assert_eq!(up.authority().as_str(), "h:8086");
        let path = up
            .target_path(Some("/write?db=x&u=a".parse().unwrap()))
            .unwrap();
        assert_eq!(path.as_str(), "/base/write?db=x");
        assert_eq!(Uri::from(path).to_string(), "/base/write?db=x");
    }

    #[test]
    fn dot_segments_under_a_base_path_are_refused() {
        let up = Upstream::parse("http://h/influx").unwrap();
        for bad in [
            "/../admin",
            "/a/../../x",
            "/./write",
            "/..",
            "/.",
            "/%2e%2e/x",
            "/%2E%2e/x",
            "/.%2e/x",
            "/%2e./x",
            "/%2e/x",
            "/a/..%2fb",
            "/a/%2e%2e%2fsecret",
            "/a\\..\\b",
            "/a/..%5cb",
            "/..?db=x",
        ] {
            assert_eq!(
                up.target_path(Some(bad.parse().unwrap())),
                Err(TargetError::DotSegment),
                "{bad}"
            );
        }
        for good in [
            "/write",
            "/a.b/c",
            "/...",
            "/a/.x",
            "/x..",
            "/%2e%2e%2e",
            "/%2",
            "/%",
        ] {
            assert!(
                up.target_path(Some(good.parse().unwrap())).is_ok(),
                "{good}"
            );
        }
        // Without a base path there is nothing to escape: forwarded as given.
        let root = Upstream::parse("http://h").unwrap();
        assert!(root.target_path(Some("/../x".parse().unwrap())).is_ok());
    }

    #[test]
    fn redacts_userinfo() {
        assert_eq!(redact_url("https://u:secret@h/x"), "https://<redacted>@h/x");
        assert_eq!(redact_url("https://h/x"), "https://h/x");
    }
}

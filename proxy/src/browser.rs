//! Keeping web pages out: which `Host` and `Origin` a request may carry (pure).
//!
//! The sidecar injects a credential into whatever reaches it, so a page the user opens
//! in a browser must not be able to reach it: a cross-site `POST /write` is a CORS
//! "simple request" that needs no preflight, and with DNS rebinding (a name of the
//! attacker's that resolves to 127.0.0.1) a page can read answers too. Applications and
//! the official clients never send `Origin` or `Sec-Fetch-Site`; browsers always do on
//! such requests, and a rebinding page's requests carry the attacker's name in `Host`.
//! So, unless allow-listed:
//!
//! - a request with `Origin` is refused, and so is one whose `Sec-Fetch-Site` is other
//!   than `none` (typed by the user) or `same-origin`;
//! - a `Host` that is not a loopback name or address, nor the listen address, is
//!   refused. When the proxy listens on an unspecified address (`0.0.0.0`, `::`), every
//!   local address is its listen address, so any IP literal is accepted; rebinding
//!   needs a *name*, and names other than `localhost` must be allow-listed;
//! - `Access-Control-*` response headers are dropped (InfluxDB 1.x echoes any `Origin`
//!   into `Access-Control-Allow-Origin`);
//! - `OPTIONS` preflights are answered by the proxy itself.
//!
//! **Cost on the request path.** Three header look-ups and byte comparisons; no
//! allocation. Allow-lists are lower-cased once at start-up and compared with
//! `eq_ignore_ascii_case`.

use std::net::{IpAddr, SocketAddr};

use http::header::{HOST, ORIGIN};
use http::{HeaderMap, HeaderName, HeaderValue, Uri};

/// `Sec-Fetch-Site`, sent by browsers on every request they make. A prebuilt name: a
/// `&str` key would be parsed and validated on every look-up.
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// An allow-list entry that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllowListError {
    /// `--allow-origin` must be `scheme://host[:port]`, as browsers send it.
    #[error(
        "--allow-origin {0:?} must be an origin such as http://localhost:3000 (scheme://host[:port], no path; `*` is not accepted)"
    )]
    Origin(String),
    /// `--allow-host` must be a bare host name or address.
    #[error("--allow-host {0:?} must be a host name or IP address, without scheme or port")]
    Host(String),
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// It came from a web page whose origin is not allow-listed.
    Origin,
    /// Its `Host` is neither local nor allow-listed.
    Host,
}

impl Refusal {
    /// The message for the 403 body: what happened and how to allow it.
    pub fn message(self) -> &'static str {
        match self {
            Self::Origin => {
                "requests from web pages are refused: this request carries an Origin (or Sec-Fetch-Site) header; start the proxy with --allow-origin ORIGIN to allow a page"
            }
            Self::Host => {
                "the Host header names neither a loopback address nor the proxy's listen address; start the proxy with --allow-host NAME to allow it"
            }
        }
    }
}

/// What the request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not from a browser (or a browser typing the URL): forward; CORS headers are
    /// dropped from the answer.
    Allowed,
    /// From an allow-listed origin: forward, and the answer may carry CORS headers.
    AllowedOrigin,
    /// Refuse with 403.
    Refused(Refusal),
}

/// The allow-lists and the listen address, prepared once.
#[derive(Debug, Clone)]
pub struct BrowserPolicy {
    origins: Box<[Box<str>]>,
    hosts: Box<[Box<str>]>,
    listen: IpAddr,
    /// `listen`'s address as a `Host` names it (IPv6 without brackets).
    listen_text: Box<str>,
}

impl BrowserPolicy {
    /// Validates the allow-lists (`--allow-origin`, `--allow-host`).
    pub fn new(
        origins: &[String],
        hosts: &[String],
        listen: SocketAddr,
    ) -> Result<Self, AllowListError> {
        let origins = origins
            .iter()
            .map(|origin| {
                normalize_origin(origin).ok_or_else(|| AllowListError::Origin(origin.clone()))
            })
            .collect::<Result<_, _>>()?;
        let hosts = hosts
            .iter()
            .map(|host| normalize_host(host).ok_or_else(|| AllowListError::Host(host.clone())))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            origins,
            hosts,
            listen: listen.ip(),
            listen_text: listen.ip().to_string().into(),
        })
    }

    /// Judges a request by its headers (and, for HTTP/2, the `:authority` in `uri`).
    pub fn check(&self, headers: &HeaderMap, uri: &Uri) -> Verdict {
        let host = match headers.get(HOST) {
            Some(value) => Some(value.as_bytes()),
            None => uri.authority().map(|a| a.as_str().as_bytes()),
        };
        self.judge(
            host,
            headers.get(ORIGIN),
            headers.get(&SEC_FETCH_SITE).map(HeaderValue::as_bytes),
        )
    }

    /// [`Self::check`] on the raw values of `Host`, `Origin` and `Sec-Fetch-Site` (the
    /// HTTP/1 fast path's, which builds no `HeaderMap`).
    pub fn judge(
        &self,
        host: Option<&[u8]>,
        origin: Option<&HeaderValue>,
        sec_fetch_site: Option<&[u8]>,
    ) -> Verdict {
        // HTTP/1.0 may have no Host at all; browsers always send one.
        if let Some(host) = host
            && !self.host_allowed(host)
        {
            return Verdict::Refused(Refusal::Host);
        }
        if let Some(origin) = origin {
            return if self.origin_allowed(origin) {
                Verdict::AllowedOrigin
            } else {
                Verdict::Refused(Refusal::Origin)
            };
        }
        match sec_fetch_site {
            None | Some(b"none" | b"same-origin") => Verdict::Allowed,
            Some(_) => Verdict::Refused(Refusal::Origin),
        }
    }

    /// Whether `origin` is on the allow-list.
    pub fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        let origin = origin.as_bytes();
        let origin = origin.strip_suffix(b"/").unwrap_or(origin);
        self.origins
            .iter()
            .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(origin))
    }

    fn host_allowed(&self, host: &[u8]) -> bool {
        let Some(name) = host_part(host) else {
            return false;
        };
        // The usual names are compared as bytes first: parsing an address is ~170
        // instructions, on every request (against ~9,400 for all of a small write).
        if name == b"127.0.0.1" || name == self.listen_text.as_bytes() || is_localhost(name) {
            return true;
        }
        if let Some(ip) = parse_ip(name)
            && (ip.is_loopback() || ip == self.listen || self.listen.is_unspecified())
        {
            return true;
        }
        self.hosts
            .iter()
            .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(name))
    }
}

/// The host of a `Host` value without its port (`[v6]` keeps its brackets off).
fn host_part(host: &[u8]) -> Option<&[u8]> {
    if let Some(rest) = host.strip_prefix(b"[") {
        let end = rest.iter().position(|&b| b == b']')?;
        let after = &rest[end + 1..];
        return (after.is_empty() || after.starts_with(b":")).then_some(&rest[..end]);
    }
    let end = host.iter().position(|&b| b == b':').unwrap_or(host.len());
    let name = &host[..end];
    // A trailing dot names the same host (`localhost.`).
    Some(name.strip_suffix(b".").unwrap_or(name))
}

fn is_localhost(name: &[u8]) -> bool {
    const LOCALHOST: &[u8] = b"localhost";
    const SUFFIX: &[u8] = b".localhost";
    // RFC 6761: `localhost` and every name under it resolve to loopback.
    name.eq_ignore_ascii_case(LOCALHOST)
        || (name.len() > SUFFIX.len()
            && name[name.len() - SUFFIX.len()..].eq_ignore_ascii_case(SUFFIX))
}

fn parse_ip(name: &[u8]) -> Option<IpAddr> {
    std::str::from_utf8(name).ok()?.parse().ok()
}

/// `scheme://host[:port]`, lower-cased, without a trailing `/`; `None` if it is not an
/// origin.
fn normalize_origin(origin: &str) -> Option<Box<str>> {
    let trimmed = origin.trim();
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed == "null" {
        // What sandboxed frames and `file:` pages send; only by explicit choice.
        return Some(trimmed.into());
    }
    let uri: Uri = trimmed.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?;
    let bare = uri.path().is_empty() || uri.path() == "/";
    if !bare
        || uri.query().is_some()
        || authority.as_str().contains('@')
        || authority.host().is_empty()
    {
        return None;
    }
    Some(
        format!("{scheme}://{authority}")
            .to_ascii_lowercase()
            .into(),
    )
}

/// A host name or address, lower-cased; `None` if it has a scheme, port or path.
fn normalize_host(host: &str) -> Option<Box<str>> {
    let host = host.trim();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.parse::<IpAddr>().is_ok() {
        return Some(host.to_ascii_lowercase().into());
    }
    let valid = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    valid.then(|| host.trim_end_matches('.').to_ascii_lowercase().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str], hosts: &[&str], listen: &str) -> BrowserPolicy {
        let own = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        BrowserPolicy::new(&own(origins), &own(hosts), listen.parse().unwrap()).unwrap()
    }

    fn verdict(policy: &BrowserPolicy, headers: &[(&'static str, &'static str)]) -> Verdict {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_static(value));
        }
        policy.check(&map, &Uri::from_static("/write"))
    }

    #[test]
    fn local_hosts_pass_and_others_are_refused() {
        let p = policy(&[], &[], "127.0.0.1:8086");
        for host in [
            "localhost",
            "LocalHost:8086",
            "localhost.:8086",
            "app.localhost:8086",
            "127.0.0.1:8086",
            "127.1.2.3",
            "[::1]:8086",
            "[::1]",
        ] {
            assert_eq!(verdict(&p, &[("host", host)]), Verdict::Allowed, "{host}");
        }
        for host in [
            "evil.example:8086",
            "localhost.evil.example",
            "10.0.0.5:8086",
            "[::1",
            "[::1]x",
            "influx-sidecar",
            "",
        ] {
            assert_eq!(
                verdict(&p, &[("host", host)]),
                Verdict::Refused(Refusal::Host),
                "{host}"
            );
        }
        // No Host at all (HTTP/1.0): nothing to judge.
        assert_eq!(verdict(&p, &[]), Verdict::Allowed);
    }

    #[test]
    fn the_listen_address_and_allow_listed_names_pass() {
        let p = policy(&[], &["Influx-Sidecar", "10.1.1.1"], "10.0.0.5:8086");
        for host in [
            "10.0.0.5:8086",
            "influx-sidecar:8086",
            "INFLUX-SIDECAR",
            "10.1.1.1",
        ] {
            assert_eq!(verdict(&p, &[("host", host)]), Verdict::Allowed, "{host}");
        }
        assert_eq!(
            verdict(&p, &[("host", "10.0.0.6")]),
            Verdict::Refused(Refusal::Host)
        );
        // Listening everywhere: every address is a listen address, names are not.
        let p = policy(&[], &[], "0.0.0.0:8086");
        assert_eq!(verdict(&p, &[("host", "10.0.0.6:8086")]), Verdict::Allowed);
        assert_eq!(
            verdict(&p, &[("host", "rebind.evil.example:8086")]),
            Verdict::Refused(Refusal::Host)
        );
    }

    #[test]
    fn browser_requests_are_refused_unless_their_origin_is_listed() {
        let p = policy(&["http://LOCALHOST:3000/"], &[], "127.0.0.1:8086");
        let h = ("host", "127.0.0.1:8086");
        assert_eq!(
            verdict(&p, &[h, ("origin", "https://evil.example")]),
            Verdict::Refused(Refusal::Origin)
        );
        assert_eq!(
            verdict(&p, &[h, ("origin", "null")]),
            Verdict::Refused(Refusal::Origin)
        );
        assert_eq!(
            verdict(&p, &[h, ("origin", "http://localhost:3000")]),
            Verdict::AllowedOrigin
        );
        assert_eq!(
            verdict(&p, &[h, ("origin", "http://localhost:3001")]),
            Verdict::Refused(Refusal::Origin)
        );
        assert_eq!(
            verdict(&p, &[h, ("sec-fetch-site", "cross-site")]),
            Verdict::Refused(Refusal::Origin)
        );
        assert_eq!(
            verdict(&p, &[h, ("sec-fetch-site", "same-site")]),
            Verdict::Refused(Refusal::Origin)
        );
        assert_eq!(
            verdict(&p, &[h, ("sec-fetch-site", "none")]),
            Verdict::Allowed
        );
        assert_eq!(
            verdict(&p, &[h, ("sec-fetch-site", "same-origin")]),
            Verdict::Allowed
        );
        // The Host check comes first.
        assert_eq!(
            verdict(
                &p,
                &[
                    ("host", "evil.example"),
                    ("origin", "http://localhost:3000")
                ]
            ),
            Verdict::Refused(Refusal::Host)
        );
    }

    #[test]
    fn http2_authority_stands_in_for_host() {
        let p = policy(&[], &[], "127.0.0.1:8086");
        let uri = |u: &'static str| Uri::from_static(u);
        assert_eq!(
            p.check(&HeaderMap::new(), &uri("http://127.0.0.1:8086/write")),
            Verdict::Allowed
        );
        assert_eq!(
            p.check(&HeaderMap::new(), &uri("http://evil.example:8086/write")),
            Verdict::Refused(Refusal::Host)
        );
    }

    #[test]
    fn bad_allow_list_entries_are_refused() {
        let listen = "127.0.0.1:8086".parse().unwrap();
        for origin in [
            "*",
            "localhost:3000",
            "http://h/path",
            "http://u@h",
            "http://h?x",
            "",
        ] {
            assert!(
                matches!(
                    BrowserPolicy::new(&[origin.into()], &[], listen),
                    Err(AllowListError::Origin(_))
                ),
                "{origin}"
            );
        }
        for host in ["http://h", "h:8086", "h/x", "", "a b"] {
            assert!(
                matches!(
                    BrowserPolicy::new(&[], &[host.into()], listen),
                    Err(AllowListError::Host(_))
                ),
                "{host}"
            );
        }
        assert!(BrowserPolicy::new(&["null".into()], &["[::2]".into()], listen).is_ok());
    }
}

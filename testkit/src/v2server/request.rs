//! Reading a request: decoded query parameters, the credential it carries, and a
//! bounded body. Nothing here trusts its input: bad input becomes an [`ApiError`].

use bytes::Bytes;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;

use super::wire::ApiError;

/// Query parameters in order, percent-decoded (`+` is a space).
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub(crate) fn parse(query: Option<&str>) -> Self {
        let pairs = query
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect();
        Self(pairs)
    }

    /// The first value of `name`, if present and non-empty (Go's `Values.Get` plus the
    /// usual `!= ""` check).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub(crate) fn owned(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_owned)
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: Option<&u8>) -> Option<u8> {
    let c = char::from(*b?);
    c.to_digit(16).map(|d| d as u8)
}

/// The token of `Authorization: Token T` or `Authorization: Bearer T` (the v2 API).
pub(crate) fn header_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    match scheme {
        "Token" | "Bearer" => Some(rest.trim().to_owned()).filter(|t| !t.is_empty()),
        _ => None,
    }
}

/// The token of a v1-compatible request (`swaggerV1Compat.yml`): the `Token`/`Bearer`
/// header, else `Authorization: Basic` whose password is the token, else the `p` query
/// parameter (`u` is a user name and is not checked).
pub(crate) fn v1_token(headers: &HeaderMap, query: &Query) -> Option<String> {
    if let Some(token) = header_token(headers) {
        return Some(token);
    }
    let basic = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| data_encoding::BASE64.decode(b64.trim().as_bytes()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|pair| pair.split_once(':').map(|(_, p)| p.to_owned()));
    basic.filter(|p| !p.is_empty()).or_else(|| query.owned("p"))
}

/// Collects at most `limit` bytes of body; more is 413, a broken body is 400.
pub(crate) async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::too_large(
            format!("unable to read data: request body exceeds {limit} bytes"),
        )),
        Err(_) => Err(ApiError::invalid("unable to read request body")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn query_decodes_and_takes_first() {
        let q = Query::parse(Some("org=my+org&bucket=a%2Fb&bucket=x&p=&bad=%zz&t=%4"));
        assert_eq!(q.get("org"), Some("my org"));
        assert_eq!(q.get("bucket"), Some("a/b"));
        assert_eq!(q.get("p"), None);
        assert_eq!(q.get("bad"), Some("%zz"));
        assert_eq!(q.get("t"), Some("%4"));
        assert_eq!(Query::parse(None).get("x"), None);
    }

    #[test]
    fn credentials_from_headers_and_query() {
        let mut h = HeaderMap::new();
        assert_eq!(header_token(&h), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("Token abc"));
        assert_eq!(header_token(&h).as_deref(), Some("abc"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(header_token(&h).as_deref(), Some("abc"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("token abc"));
        assert_eq!(header_token(&h), None);
        // "user:tok" in base64
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjp0b2s="),
        );
        assert_eq!(v1_token(&h, &Query::parse(None)).as_deref(), Some("tok"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(
            v1_token(&h, &Query::parse(Some("u=x&p=q"))).as_deref(),
            Some("q")
        );
    }
}

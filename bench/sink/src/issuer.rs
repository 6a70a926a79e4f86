//! A stub of the InfluxDB v2 authorizations API, just enough for the control's
//! `influxdb` add-on: `POST /api/v2/authorizations` answers `201` with a fresh 16-hex
//! id and token, `DELETE /api/v2/authorizations/{id}` answers `204`, and the sweep's
//! `GET /api/v2/authorizations` an empty list. It checks nothing: the benchmark is about
//! leasehold's own cost, not a backend's (the contract-following test server in
//! `leasehold-testkit` is what the tests use).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

use crate::answer::{read_body, status};

const PATH: &str = "/api/v2/authorizations";

/// Issues numbered authorizations.
#[derive(Clone, Debug, Default)]
pub struct Issuer {
    next: Arc<AtomicU64>,
}

impl Issuer {
    /// Answers one request.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let Some(_) = read_body(request).await else {
            return status(StatusCode::BAD_REQUEST);
        };
        match (method, path.as_str()) {
            (Method::POST, PATH) => {
                let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
                json(
                    StatusCode::CREATED,
                    format!(
                        r#"{{"id":"{n:016x}","token":"bench-token-{n:016x}","status":"active","description":"","permissions":[]}}"#
                    ),
                )
            }
            (Method::GET, PATH) => json(StatusCode::OK, r#"{"authorizations":[]}"#.to_owned()),
            (Method::DELETE, p) if p.starts_with(PATH) => status(StatusCode::NO_CONTENT),
            _ => status(StatusCode::NOT_FOUND),
        }
    }
}

fn json(code: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

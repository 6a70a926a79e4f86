//! Small HTTP helpers shared by the sink's server and the issuer stub (a leaf module,
//! so neither imports the other for them).

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

/// An empty answer with `status`.
pub fn status(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

/// Drains a request body, returning it whole (the issuer's bodies are small).
pub async fn read_body(request: Request<Incoming>) -> Option<Bytes> {
    request
        .into_body()
        .collect()
        .await
        .ok()
        .map(|b| b.to_bytes())
}

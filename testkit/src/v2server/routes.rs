//! Routing and the authorization endpoints (`/api/v2/authorizations[/{authID}]`), plus
//! `/ping` and `/health`. Every answer is built here: JSON bodies with
//! `application/json; charset=utf-8`, errors as the contract's `Error` with influxd's
//! `X-Platform-Error-Code` header, injected failures as 503 with `Retry-After: 1`.

use std::convert::Infallible;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Serialize;
use serde_json::json;

use super::ids::check_id;
use super::request::{Query, header_token, read_body};
use super::shared::Shared;
use super::store::{Action, ListFilter};
use super::wire::{ApiError, PatchAuthorization, PostAuthorization, parse_json};
use super::write;

/// Version reported by `/ping` and `/health` (the server follows the 2.x contract).
const VERSION: &str = "v2.7.11";
/// Largest JSON request body.
const MAX_JSON: usize = 1 << 20;
const AUTHORIZATIONS: &str = "/api/v2/authorizations";

/// Answers one request; never fails (errors become `Error` bodies).
pub(crate) async fn handle(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    shared.count_request();
    if shared.failing() {
        let mut resp = error(&ApiError::unavailable());
        resp.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        return Ok(resp);
    }
    Ok(route(shared, req).await.unwrap_or_else(|e| error(&e)))
}

async fn route(shared: &Shared, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, ApiError> {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let method = req.method().clone();
    if let Some(id) = path
        .strip_prefix(AUTHORIZATIONS)
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|id| !id.contains('/'))
    {
        return match method {
            Method::GET => get_one(shared, &req, id),
            Method::PATCH => patch(shared, req, id).await,
            Method::DELETE => {
                shared.delete_gate().await;
                delete(shared, &req, id)
            }
            _ => Err(ApiError::method_not_allowed()),
        };
    }
    match (path.as_str(), method) {
        ("/ping", Method::GET | Method::HEAD) => Ok(ping()),
        ("/health", Method::GET) => Ok(json_response(
            StatusCode::OK,
            to_json(&json!({
                "name": "influxdb",
                "message": "ready for queries and writes",
                "status": "pass",
                "checks": [],
                "version": VERSION,
                "commit": "leasehold-testkit",
            })),
        )),
        (AUTHORIZATIONS, Method::GET) => list(shared, &req),
        (AUTHORIZATIONS, Method::POST) => create(shared, req).await,
        ("/api/v2/write", Method::POST) => {
            let (parts, body) = req.into_parts();
            write::v2(shared, parts, body).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        ("/write", Method::POST) => {
            let (parts, body) = req.into_parts();
            write::v1(shared, parts, body).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        ("/ping" | "/health" | AUTHORIZATIONS | "/api/v2/write" | "/write", _) => {
            Err(ApiError::method_not_allowed())
        }
        _ => Err(ApiError::not_found("path not found")),
    }
}

/// The authorization endpoints need a token with `action` on `authorizations` in the
/// org (the operator token has it); anything else is the contract's 401.
fn require(shared: &Shared, headers: &HeaderMap, action: Action) -> Result<(), ApiError> {
    let token = header_token(headers).ok_or_else(ApiError::unauthorized)?;
    let allowed = shared.with_store(|s| {
        s.by_token(&token)
            .is_some_and(|a| a.permits(action, "authorizations", &s.org_id, None))
    });
    if allowed {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

async fn create(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let (parts, body) = req.into_parts();
    require(shared, &parts.headers, Action::Write)?;
    let post: PostAuthorization = parse_json(&read_body(body, MAX_JSON).await?)?;
    let created = shared.with_store(|s| {
        let id = s.create(post, SystemTime::now())?.id.clone();
        let auth = s.get(&id).ok_or_else(ApiError::authorization_not_found)?;
        Ok::<_, ApiError>(to_json(&s.render(auth, true)))
    })?;
    Ok(json_response(StatusCode::CREATED, created))
}

fn list(shared: &Shared, req: &Request<Incoming>) -> Result<Response<Full<Bytes>>, ApiError> {
    require(shared, req.headers(), Action::Read)?;
    let q = Query::parse(req.uri().query());
    let filter = ListFilter {
        id: q.owned("id"),
        org_id: q.owned("orgID"),
        org: q.owned("org"),
        user_id: q.owned("userID"),
        user: q.owned("user"),
        token: q.owned("token"),
    };
    let auths = shared.with_store(|s| {
        let found = s.list(&filter)?;
        let authorizations = found.into_iter().map(|a| s.render(a, false));
        Ok::<_, ApiError>(to_json(&json!({
            "links": { "self": AUTHORIZATIONS },
            "authorizations": authorizations.collect::<Vec<_>>(),
        })))
    })?;
    Ok(json_response(StatusCode::OK, auths))
}

fn get_one(
    shared: &Shared,
    req: &Request<Incoming>,
    id: &str,
) -> Result<Response<Full<Bytes>>, ApiError> {
    require(shared, req.headers(), Action::Read)?;
    check_id(id)?;
    let found = shared.with_store(|s| s.get(id).map(|a| to_json(&s.render(a, false))));
    let auth = found.ok_or_else(ApiError::authorization_not_found)?;
    Ok(json_response(StatusCode::OK, auth))
}

async fn patch(
    shared: &Shared,
    req: Request<Incoming>,
    id: &str,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let (parts, body) = req.into_parts();
    require(shared, &parts.headers, Action::Write)?;
    check_id(id)?;
    let update: PatchAuthorization = parse_json(&read_body(body, MAX_JSON).await?)?;
    let updated = shared.with_store(|s| {
        s.patch(id, update, SystemTime::now())?;
        let auth = s.get(id).ok_or_else(ApiError::authorization_not_found)?;
        Ok::<_, ApiError>(to_json(&s.render(auth, false)))
    })?;
    Ok(json_response(StatusCode::OK, updated))
}

fn delete(
    shared: &Shared,
    req: &Request<Incoming>,
    id: &str,
) -> Result<Response<Full<Bytes>>, ApiError> {
    require(shared, req.headers(), Action::Write)?;
    check_id(id)?;
    if shared.with_store(|s| s.delete(id)) {
        Ok(empty(StatusCode::NO_CONTENT))
    } else {
        Err(ApiError::authorization_not_found())
    }
}

fn ping() -> Response<Full<Bytes>> {
    let mut resp = empty(StatusCode::NO_CONTENT);
    let headers = resp.headers_mut();
    headers.insert("X-Influxdb-Build", HeaderValue::from_static("OSS"));
    headers.insert("X-Influxdb-Version", HeaderValue::from_static(VERSION));
    resp
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::default());
    *resp.status_mut() = status;
    resp
}

fn to_json(body: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(body).expect("answers serialize")
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

fn error(e: &ApiError) -> Response<Full<Bytes>> {
    let mut resp = json_response(e.status, to_json(&e.body()));
    resp.headers_mut()
        .insert("X-Platform-Error-Code", HeaderValue::from_static(e.code));
    resp
}

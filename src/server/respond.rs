//! One request to one response: the `Host` check, the body read, the
//! access rules ([`Access`]), the registry's answer, and the headers each
//! kind of reply carries.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONNECTION,
    CONTENT_SECURITY_POLICY, CONTENT_TYPE, HOST, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode, Version};
use tokio::sync::Semaphore;

use super::access::{Access, Refusal};
use super::stream::{ReplyBody, CHUNK};
use crate::monitor::service::{Answer, Reply, Streamed};
use crate::monitor::SharedRegistry;

/// Largest request body read (form bodies are `appid=ID`).
const MAX_REQUEST_BODY: usize = 16 * 1024;

/// RFC 9112 §3.2: an HTTP/1.1 request without `Host`, or any request with
/// more than one, is a `400`. (HTTP/1.0 clients, such as the reference's,
/// may leave it out.)
fn check_host(request: &Request<Incoming>) -> Result<(), Reply> {
    let hosts = request.headers().get_all(HOST).iter().count();
    if hosts > 1 {
        return Err(Reply::error(400, "more than one Host header"));
    }
    if hosts == 0 && request.version() >= Version::HTTP_11 {
        return Err(Reply::error(400, "an HTTP/1.1 request needs a Host header"));
    }
    Ok(())
}

/// The dashboard page's policy: its script from its own path
/// (`/dashboard.js`), no inline script, its fetches to this server only, no
/// framing. (Its rows carry `style` attributes, hence inline styles.)
const DASHBOARD_CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The realm of a `401`'s `WWW-Authenticate`.
const REALM: &str = r#"Basic realm="heartbeat", charset="UTF-8""#;

/// Where a request came from and arrived.
#[derive(Debug, Clone, Copy)]
pub(super) struct Peers {
    /// The client's address.
    pub(super) peer: IpAddr,
    /// The server's address on the connection.
    pub(super) local: IpAddr,
}

pub(super) async fn respond(
    state: Arc<SharedRegistry>,
    access: Arc<Access>,
    streams: Arc<Semaphore>,
    peers: Peers,
    body_timeout: Duration,
    request: Request<Incoming>,
) -> Result<Response<ReplyBody>, Infallible> {
    let peer = peers.peer;
    // PROTOCOL.md: GET and POST only. `HEAD` would run the command (register
    // an app) while hiding the reply, so it is refused like the others.
    if !matches!(*request.method(), Method::GET | Method::POST) {
        let mut response = reply(Reply::error(
            405,
            format!("method {} not allowed: use GET or POST", request.method()),
        ));
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, POST"));
        tracing::info!(%peer, method = %request.method(), "request refused: method not allowed");
        return Ok(response);
    }
    if let Err(refusal) = check_host(&request) {
        tracing::info!(%peer, "request refused: {}", refusal.body);
        return Ok(reply(refusal));
    }
    let version = request.version();
    let host = request.headers().get(HOST).cloned();
    let authorization = request.headers().get(AUTHORIZATION).cloned();
    let target = request
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned());
    let collect = Limited::new(request.into_body(), MAX_REQUEST_BODY).collect();
    let body = match tokio::time::timeout(body_timeout, collect).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(_)) => {
            tracing::info!(%peer, "request refused: body too large or cut short");
            return Ok(reply(Reply::error(
                413,
                format!("request body over {MAX_REQUEST_BODY} bytes or cut short"),
            )));
        }
        Err(_elapsed) => {
            tracing::info!(%peer, "request refused: body not received in time");
            // the rest of the body is never read: close the connection
            let mut response = reply(Reply::error(
                408,
                format!(
                    "request body not received within {} ms",
                    body_timeout.as_millis()
                ),
            ));
            response
                .headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return Ok(response);
        }
    };
    let form = (!body.is_empty()).then_some(&body[..]);
    let command = SharedRegistry::parse(&target, form, peer);
    let operator_view = command.as_ref().is_ok_and(|c| c.is_operator_view());
    let checked = access
        .check(
            command.as_ref().ok(),
            host.as_ref().map(HeaderValue::as_bytes),
            authorization.as_ref().map(HeaderValue::as_bytes),
            peer,
            peers.local,
        )
        .await;
    if let Err(refusal) = checked {
        let mut response = match refusal {
            Refusal::ForeignHost => reply(Reply::error(421, refusal)),
            Refusal::Unauthorized => {
                let mut response = reply(Reply::error(401, refusal));
                let headers = response.headers_mut();
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static(REALM));
                response
            }
        };
        if operator_view {
            same_origin(&mut response);
        }
        add_headers(&mut response, &access);
        return Ok(response);
    }
    let answer = match command {
        Ok(command) => state.answer_command(command, peer),
        Err(refused) => Answer::Ready(refused),
    };
    let mut response = match answer {
        Answer::Ready(ready) => {
            let json = ready.content_type == crate::monitor::render::api::JSON
                || ready.content_type == crate::monitor::render::dashboard::JAVASCRIPT;
            let mut response = reply(ready);
            if json {
                operator_view_headers(&mut response);
            }
            response
        }
        // rendered a chunk at a time as hyper writes it: see `stream`
        Answer::Streamed(streamed) => streamed_response(streamed, &streams, version, peer).await,
    };
    if operator_view {
        same_origin(&mut response);
    }
    add_headers(&mut response, &access);
    Ok(response)
}

/// The web config's `http_server_config.headers`, over the reply's own.
fn add_headers(response: &mut Response<ReplyBody>, access: &Access) {
    for (name, value) in &access.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
}

/// A whole-registry reply, rendered as it is written, under the cap on
/// replies in progress.
async fn streamed_response(
    streamed: Streamed,
    streams: &Arc<Semaphore>,
    version: Version,
    peer: IpAddr,
) -> Response<ReplyBody> {
    // each holds its snapshot until written: a bounded number at once
    let Ok(permit) = Arc::clone(streams).try_acquire_owned() else {
        tracing::debug!(%peer, "request refused: too many whole-registry replies in progress");
        let mut response = reply(Reply::error(
            503,
            "too many whole-registry replies in progress: retry in a second",
        ));
        let headers = response.headers_mut();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    let content_type = streamed.content_type();
    let no_store = streamed.no_store();
    let page = content_type == crate::monitor::render::api::HTML;
    // sorting the snapshot (100 000 keys: tens of ms) and rendering
    // the first chunk block: not on an async worker, where they
    // would stall every connection it serves
    let body =
        tokio::task::spawn_blocking(move || ReplyBody::stream(streamed.chunks(CHUNK), permit))
            .await;
    let Ok(body) = body else {
        return reply(Reply::error(500, "the reply could not be rendered"));
    };
    let close_delimited = version < Version::HTTP_11 && body.is_streamed();
    let mut response = response(200, content_type, body);
    if no_store {
        operator_view_headers(&mut response);
    }
    if page {
        response.headers_mut().insert(
            CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DASHBOARD_CSP),
        );
    }
    if close_delimited {
        // its end is the connection's: it cannot be kept alive (an
        // HTTP/1.0 response keeps hyper from adding `keep-alive`)
        *response.version_mut() = Version::HTTP_10;
        let headers = response.headers_mut();
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// An operator's view is for this origin only: no
/// `Access-Control-Allow-Origin`, so that a page from elsewhere cannot
/// read it through the operator's browser.
fn same_origin(response: &mut Response<ReplyBody>) {
    response.headers_mut().remove(ACCESS_CONTROL_ALLOW_ORIGIN);
}

/// The dashboard and its API (history included): never cached, never
/// sniffed as anything else.
fn operator_view_headers(response: &mut Response<ReplyBody>) {
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        hyper::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

fn reply(reply: Reply) -> Response<ReplyBody> {
    response(reply.status, reply.content_type, reply.body.into())
}

fn response(status: u16, content_type: &'static str, body: ReplyBody) -> Response<ReplyBody> {
    let mut response = Response::new(body);
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

//! One request to one response: the `Host` check, the body read, the
//! registry's answer, and the headers each kind of reply carries.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HOST,
    RETRY_AFTER,
};
use hyper::{Method, Request, Response, StatusCode, Version};
use tokio::sync::Semaphore;

use super::stream::{ReplyBody, CHUNK};
use crate::monitor::service::{Answer, Reply};
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

pub(super) async fn respond(
    state: Arc<SharedRegistry>,
    streams: Arc<Semaphore>,
    peer: IpAddr,
    body_timeout: Duration,
    request: Request<Incoming>,
) -> Result<Response<ReplyBody>, Infallible> {
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
    Ok(match state.answer(&target, form, peer) {
        Answer::Ready(ready) => {
            let json = ready.content_type == crate::monitor::render::api::JSON;
            let mut response = reply(ready);
            if json {
                operator_view_headers(&mut response);
            }
            response
        }
        // rendered a chunk at a time as hyper writes it: see `stream`
        Answer::Streamed(streamed) => {
            // each holds its snapshot until written: a bounded number at once
            let Ok(permit) = streams.try_acquire_owned() else {
                tracing::debug!(%peer, "request refused: too many whole-registry replies in progress");
                let mut response = reply(Reply::error(
                    503,
                    "too many whole-registry replies in progress: retry in a second",
                ));
                let headers = response.headers_mut();
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
                return Ok(response);
            };
            let content_type = streamed.content_type();
            let no_store = streamed.no_store();
            // sorting the snapshot (100 000 keys: tens of ms) and rendering
            // the first chunk block: not on an async worker, where they
            // would stall every connection it serves
            let body = tokio::task::spawn_blocking(move || {
                ReplyBody::stream(streamed.chunks(CHUNK), permit)
            })
            .await;
            let Ok(body) = body else {
                return Ok(reply(Reply::error(500, "the reply could not be rendered")));
            };
            let close_delimited = version < Version::HTTP_11 && body.is_streamed();
            let mut response = response(200, content_type, body);
            if no_store {
                operator_view_headers(&mut response);
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
    })
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

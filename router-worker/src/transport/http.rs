//! HTTP/1.1 for web and WebSocket transports, on hyper: the request head's
//! limits ([`MAX_HEAD_BYTES`], [`MAX_HEADERS`]; 431 past them, 400 for a
//! malformed head), the head's deadline (the transport's
//! `open_handshake_timeout`, which also bounds an idle kept-alive
//! connection's wait for its next request, so a client trickling bytes is
//! cut off), keep-alive and pipelining, chunked bodies and `Expect:
//! 100-continue`. A WebSocket upgrade leaves HTTP at the 101: the stream,
//! with whatever hyper read past the request, goes to the WebSocket codec
//! in the same task.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{Io, ListenerSettings, Peer};
use crate::realms::Realms;

/// Largest request head accepted (request line and headers).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header lines accepted.
pub const MAX_HEADERS: usize = 64;
/// Requests one connection may make before it is closed.
const MAX_REQUESTS_PER_CONNECTION: u32 = 10_000;
/// How long a request body may take to arrive.
const BODY_DEADLINE: Duration = Duration::from_secs(30);

/// A response body: bytes, or a file streamed.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A response with `code`, a body and its content type.
pub fn response(code: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if !content_type.is_empty() {
        set(&mut r, "content-type", content_type);
    }
    set(&mut r, "x-content-type-options", "nosniff");
    r
}

/// A plain-text response; without a body, `404 Not Found` and the like.
pub fn text(code: u16, body: Option<&str>) -> Response<Body> {
    let body = body.map_or_else(
        || {
            let s = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            format!("{} {}\n", s.as_u16(), s.canonical_reason().unwrap_or(""))
        },
        str::to_owned,
    );
    response(code, "text/plain; charset=utf-8", body)
}

/// Set a header (values are the router's own; one that is not a valid
/// header value is left out).
pub fn set<B>(r: &mut Response<B>, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(HeaderName::from_static(name), v);
    }
}

/// The headers Crossbar.io's bridge and long-poll services send: no
/// caching, the request's origin allowed with credentials (as
/// autobahn-js's requests carry them), and, for a preflight, the
/// `methods` allowed.
pub fn uncached_cors<B>(r: &mut Response<B>, origin: &Option<String>, preflight: Option<&str>) {
    set(
        r,
        "cache-control",
        "no-store, no-cache, must-revalidate, max-age=0",
    );
    set(
        r,
        "access-control-allow-origin",
        origin.as_deref().unwrap_or("*"),
    );
    set(r, "access-control-allow-credentials", "true");
    if let Some(methods) = preflight {
        set(r, "access-control-allow-methods", methods);
        set(r, "access-control-allow-headers", "Content-Type");
    }
}

/// A header of the request, as text (the first, if repeated).
pub fn header<'a>(h: &'a hyper::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Why a body could not be taken: the status and the text.
#[derive(Debug)]
pub struct BodyError(pub u16, pub String);

/// A request's body, at most `limit` bytes (`limit_key` names the option
/// that sets it), within [`BODY_DEADLINE`]. With `required`, a request
/// without `Content-Length` or `Transfer-Encoding` is refused.
pub async fn read_body(
    parts: &hyper::http::request::Parts,
    body: Incoming,
    limit: u64,
    required: bool,
    limit_key: &str,
) -> Result<Bytes, BodyError> {
    let h = &parts.headers;
    let declared = header(h, "content-length").and_then(|v| v.parse::<u64>().ok());
    if required && declared.is_none() && !h.contains_key("transfer-encoding") {
        return Err(BodyError(
            400,
            "a Content-Length header (or a chunked body) is required".into(),
        ));
    }
    let too_big = |len: Option<u64>| {
        let size = len.map_or_else(
            || "a chunked request body".to_owned(),
            |l| format!("request body of {l} bytes"),
        );
        BodyError(
            413,
            format!("{size} is over the limit of {limit} bytes ({limit_key})"),
        )
    };
    if let Some(len) = declared.filter(|&l| l > limit) {
        return Err(too_big(Some(len)));
    }
    let room = usize::try_from(limit).unwrap_or(usize::MAX);
    match tokio::time::timeout(BODY_DEADLINE, Limited::new(body, room).collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_big(declared)),
        Ok(Err(e)) => Err(BodyError(400, format!("the body could not be read: {e}"))),
        Err(_) => Err(BodyError(
            400,
            format!(
                "the body did not arrive within {} s",
                BODY_DEADLINE.as_secs()
            ),
        )),
    }
}

/// What the services need of the connection a request came on.
pub(super) struct Conn {
    pub(super) peer: Peer,
    pub(super) settings: Arc<ListenerSettings>,
    pub(super) realms: Realms,
    pub(super) shutdown: CancellationToken,
    served: AtomicU32,
    /// A WebSocket upgrade the service accepted: the connection carries it
    /// on once the 101 is written.
    upgrade: Mutex<Option<Upgrade>>,
}

/// An accepted WebSocket upgrade, waiting for its stream.
pub(super) struct Upgrade {
    pub(super) on: hyper::upgrade::OnUpgrade,
    pub(super) kind: UpgradeKind,
}

/// What runs on an upgraded connection.
pub(super) enum UpgradeKind {
    /// A WAMP session with the WebSocket path's settings.
    Wamp(Box<super::websocket::Accepted>, Arc<ListenerSettings>),
    /// `websocket.testee`'s echo.
    Echo(Option<super::deflate::Agreed>),
    /// MQTT over WebSocket, with the `mqtt` path's settings.
    Mqtt(Arc<ListenerSettings>),
}

impl Conn {
    /// Carry on with `kind` once the 101 is out.
    pub(super) fn upgrade_to(&self, req: &mut Request<Incoming>, kind: UpgradeKind) {
        let on = hyper::upgrade::on(req);
        if let Ok(mut slot) = self.upgrade.lock() {
            *slot = Some(Upgrade { on, kind });
        }
    }
}

/// The comma-separated tokens of every value of a header (`Connection:
/// keep-alive, Upgrade`), trimmed.
pub fn tokens<'h>(h: &'h hyper::HeaderMap, name: &str) -> impl Iterator<Item = &'h str> + 'h {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Does the client keep the connection for another request?
fn keep_alive(version: hyper::Version, headers: &hyper::HeaderMap) -> bool {
    let has = |token: &str| tokens(headers, "connection").any(|t| t.eq_ignore_ascii_case(token));
    match version {
        hyper::Version::HTTP_11 => !has("close"),
        hyper::Version::HTTP_10 => has("keep-alive"),
        _ => false,
    }
}

/// Serve one connection: requests one after another while the client keeps
/// it alive, until one is a WebSocket upgrade, which then runs here.
///
/// Not an `async fn`: the HTTP phase is made (and boxed) before the future
/// exists, so the future, which lives as long as a WebSocket session may,
/// keeps none of the arguments.
#[allow(clippy::manual_async_fn)]
pub fn serve_connection<S: Io>(
    stream: S,
    peer: Peer,
    settings: Arc<ListenerSettings>,
    realms: Realms,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send {
    // Boxed: hyper's connection is freed before a WebSocket session starts
    // (a session may last for days).
    let phase = Box::pin(http_phase(
        stream,
        peer,
        settings.clone(),
        realms,
        shutdown.clone(),
    ));
    async move {
        let Some((io, early, kind, peer, realms)) = phase.await else {
            return;
        };
        match kind {
            UpgradeKind::Wamp(accepted, ws) => {
                // `unbox`: the box is freed now, not when this arm ends
                // (after the session).
                let session = super::websocket::session(
                    io,
                    early,
                    unbox(accepted),
                    peer,
                    ws,
                    realms,
                    shutdown,
                );
                Box::pin(session).await
            }
            UpgradeKind::Echo(deflate) => {
                Box::pin(super::websocket::echo(
                    io, early, deflate, settings, shutdown,
                ))
                .await
            }
            UpgradeKind::Mqtt(mqtt) => {
                Box::pin(super::mqtt::serve_websocket(
                    io, early, peer, mqtt, realms, shutdown,
                ))
                .await
            }
        }
    }
}

/// The value in a box, the box freed.
#[allow(clippy::boxed_local)]
fn unbox<T>(b: Box<T>) -> T {
    *b
}

/// HTTP until the connection ends, or until an upgrade: then the stream,
/// what hyper read past the request, and what runs on it.
pub(super) async fn http_phase<S: Io>(
    stream: S,
    peer: Peer,
    settings: Arc<ListenerSettings>,
    realms: Realms,
    shutdown: CancellationToken,
) -> Option<(S, Bytes, UpgradeKind, Peer, Realms)> {
    let conn = Arc::new(Conn {
        peer,
        settings: settings.clone(),
        realms,
        shutdown: shutdown.clone(),
        served: AtomicU32::new(0),
        upgrade: Mutex::new(None),
    });
    let c = conn.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let c = c.clone();
        async move { Ok::<_, Infallible>(exchange(req, &c).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.handshake_timeout)
        .max_headers(MAX_HEADERS)
        .max_header_size(MAX_HEAD_BYTES)
        // Room for a whole head; bodies stream through it.
        .max_buf_size(2 * MAX_HEAD_BYTES)
        // `Content-Type`, as Crossbar.io (Twisted) and most servers write them.
        .title_case_headers(true)
        .keep_alive(true);
    let http = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(http);
    let done = tokio::select! {
        r = &mut http => r,
        _ = shutdown.cancelled() => {
            http.as_mut().graceful_shutdown();
            tokio::time::timeout(Duration::from_secs(5), &mut http)
                .await
                .unwrap_or(Ok(()))
        }
    };
    if let Err(e) = done {
        debug!(cause = %e, "HTTP connection ended");
    }
    let upgrade = conn.upgrade.lock().ok().and_then(|mut s| s.take())?;
    let upgraded = match upgrade.on.await {
        Ok(u) => u,
        Err(e) => {
            debug!(cause = %e, "WebSocket upgrade lost");
            return None;
        }
    };
    // The stream itself (not hyper's box around it), and the bytes hyper
    // read past the request: the client's first frames.
    let Ok(parts) = upgraded.downcast::<TokioIo<S>>() else {
        debug!("WebSocket upgrade: the stream is not the connection's");
        return None;
    };
    Some((
        parts.io.into_inner(),
        parts.read_buf,
        upgrade.kind,
        conn.peer.clone(),
        conn.realms.clone(),
    ))
}

/// Answer one request: the service's response, with `Connection` set.
async fn exchange(req: Request<Incoming>, conn: &Conn) -> Response<Body> {
    let n = conn.served.fetch_add(1, Ordering::Relaxed) + 1;
    let keep = keep_alive(req.version(), req.headers())
        && n < MAX_REQUESTS_PER_CONNECTION
        && !conn.shutdown.is_cancelled();
    let mut r = super::web::route(req, conn).await;
    if r.status() == StatusCode::SWITCHING_PROTOCOLS {
        return r;
    }
    let keep = keep && r.headers().get("connection").is_none_or(|v| v != "close");
    set(
        &mut r,
        "connection",
        if keep { "keep-alive" } else { "close" },
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_by_version_and_header() {
        let h = |v: &str| {
            let mut m = hyper::HeaderMap::new();
            if !v.is_empty() {
                m.insert("connection", HeaderValue::from_str(v).unwrap());
            }
            m
        };
        assert!(keep_alive(hyper::Version::HTTP_11, &h("")));
        assert!(!keep_alive(hyper::Version::HTTP_11, &h("Close")));
        assert!(keep_alive(
            hyper::Version::HTTP_11,
            &h("upgrade, keep-alive")
        ));
        assert!(!keep_alive(hyper::Version::HTTP_10, &h("")));
        assert!(keep_alive(hyper::Version::HTTP_10, &h("Keep-Alive")));
    }
}

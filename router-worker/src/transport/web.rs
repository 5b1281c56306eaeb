//! `web` transports: static files and WAMP-over-WebSocket paths on one
//! HTTP port, as Crossbar.io's web transport. `checked_head` also guards
//! plain `websocket` transports.
//!
//! The request head is read here first, bounded in size
//! ([`MAX_HEAD_BYTES`], [`MAX_HEADERS`]) and time (the transport's
//! `open_handshake_timeout`, for the whole head, so a client trickling
//! bytes is cut off). A WebSocket upgrade on a `websocket` path is handed,
//! head included, to [`super::websocket`]; anything else is answered by
//! its service (static files, json, the HTTP bridge, ...), and an HTTP/1.1
//! client may send its next request on the same connection (keep-alive,
//! at most [`MAX_REQUESTS_PER_CONNECTION`], the next head within
//! [`KEEP_ALIVE_IDLE`]); a request with a body the service does not read
//! closes the connection after its answer.
//!
//! Static files never leave their directory: `..` segments (plain or
//! percent-encoded) are refused, and the resolved file (symlinks followed)
//! must lie inside the canonical root. Every miss is the same bare 404.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{Io, ListenerSettings, Peer};
use crate::realms::Realms;

/// Largest request head accepted (request line and headers).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header lines accepted.
pub const MAX_HEADERS: usize = 64;

/// A web transport's paths, resolved at bind time.
#[derive(Debug)]
pub struct WebSettings {
    /// `websocket` paths by name (`ws`), each with its own WAMP settings.
    pub websockets: HashMap<String, Arc<ListenerSettings>>,
    /// `static` paths: name (`/` for the root) → canonical directory.
    pub statics: HashMap<String, PathBuf>,
    /// `static` paths' options, by the same names.
    pub static_options: HashMap<String, crate::config::StaticOptions>,
    /// `json` paths: name → the serialized value.
    pub json: HashMap<String, JsonPath>,
    /// `redirect` paths: name → where to.
    pub redirects: HashMap<String, String>,
    /// `nodeinfo` paths' names.
    pub nodeinfo: std::collections::HashSet<String>,
    /// `archive` paths.
    pub archives: HashMap<String, super::archive::Archive>,
    /// `caller` and `publisher` paths (the HTTP bridge).
    pub bridges: HashMap<String, super::bridge::Bridge>,
    /// `longpoll` paths.
    pub longpolls: HashMap<String, Arc<super::longpoll::LongPoll>>,
    /// What renders the node-info page; set by the router worker once it
    /// has joined its controller.
    pub node_info: NodeInfoHook,
}

/// Renders the node-info page (HTML).
pub type NodeInfoFn = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send>>
        + Send
        + Sync,
>;

/// Where a router finds its [`NodeInfoFn`], once there is one.
#[derive(Clone, Default)]
pub struct NodeInfoHook(Arc<std::sync::OnceLock<NodeInfoFn>>);

impl NodeInfoHook {
    /// Install the renderer (only the first one counts).
    pub fn set(&self, render: NodeInfoFn) {
        let _ = self.0.set(render);
    }

    /// The renderer, if installed.
    pub fn get(&self) -> Option<&NodeInfoFn> {
        self.0.get()
    }
}

impl std::fmt::Debug for NodeInfoHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("NodeInfoHook")
            .field(&self.0.get().is_some())
            .finish()
    }
}

/// Requests one connection may make before it is closed.
const MAX_REQUESTS_PER_CONNECTION: u32 = 10_000;
/// How long a kept-alive connection may wait for its next request head.
const KEEP_ALIVE_IDLE: Duration = Duration::from_secs(15);

/// How a response ends the exchange: the connection stays open for the
/// next request (`Connection: keep-alive`), or closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    pub keep: bool,
}

impl End {
    pub(super) const CLOSE: End = End { keep: false };

    pub(super) fn header(self) -> &'static str {
        if self.keep { "keep-alive" } else { "close" }
    }

    /// After the response: flush for the next request, or close.
    pub(super) async fn finish<S: Io>(self, stream: &mut S) -> std::io::Result<()> {
        if self.keep {
            stream.flush().await
        } else {
            stream.shutdown().await
        }
    }
}

/// Serve one connection of a web transport: requests one after another
/// while the client keeps the connection alive (HTTP/1.1), until one is a
/// WebSocket upgrade.
pub async fn handle_connection<S: Io>(
    mut stream: S,
    peer: Peer,
    settings: Arc<ListenerSettings>,
    realms: Realms,
    shutdown: CancellationToken,
) {
    let Some(web) = settings.web.clone() else {
        return;
    };
    let mut carry = Vec::new();
    let mut served = 0u32;
    loop {
        let deadline = if served == 0 {
            settings.handshake_timeout
        } else {
            KEEP_ALIVE_IDLE
        };
        let Some((head, req)) = Box::pin(checked_head(
            &mut stream,
            std::mem::take(&mut carry),
            deadline,
            &shutdown,
        ))
        .await
        else {
            return;
        };
        served += 1;
        let path = req.target.split(['?', '#']).next().unwrap_or("/");
        // The longest configured service path the request's path starts
        // with (`api/call` before `api`), or `/` for the root itself.
        let key = service_key(&web, path);
        if let Some(ws) = web.websockets.get(&key) {
            if req.upgrade {
                Box::pin(super::websocket::handle_connection(
                    stream,
                    head,
                    req.head_len,
                    peer,
                    ws.clone(),
                    realms,
                    shutdown,
                ))
                .await;
            } else {
                not_upgraded(&mut stream, ws).await;
            }
            return;
        }
        let keep =
            req.keep_alive && served < MAX_REQUESTS_PER_CONNECTION && !shutdown.is_cancelled();
        // What the connection reads next (what came after this request),
        // or `None` when it closes.
        let next = if let Some(bridge) = web.bridges.get(key.as_str()) {
            super::bridge::handle(
                &mut stream,
                head,
                End { keep },
                peer.ip,
                &settings.trusted_proxies,
                bridge,
                &realms,
            )
            .await
        } else if let Some(lp) = web.longpolls.get(key.as_str()) {
            let rest = under_service(&key, path);
            Box::pin(super::longpoll::handle(
                &mut stream,
                head,
                rest,
                End { keep },
                &peer,
                lp,
                &realms,
                &shutdown,
            ))
            .await
        } else {
            // Other services take no body: a request with one is
            // answered, then the connection closes (its body is not read).
            let end = End {
                keep: keep && !req.body,
            };
            let ok = Box::pin(serve(&mut stream, &web, &key, path, &req.method, end))
                .await
                .is_ok();
            (ok && end.keep).then(|| head.get(req.head_len..).unwrap_or_default().to_vec())
        };
        match next {
            Some(rest) => carry = rest,
            None => return,
        }
    }
}

/// Answer one request on a static, json, nodeinfo, archive or redirect
/// path.
async fn serve<S: Io>(
    stream: &mut S,
    web: &WebSettings,
    key: &str,
    path: &str,
    method: &str,
    end: End,
) -> std::io::Result<()> {
    if method != "GET" && method != "HEAD" {
        return respond(stream, 405, "Method Not Allowed", None, end).await;
    }
    let head_only = method == "HEAD";
    if let Some(j) = web.json.get(key) {
        return send_with(
            stream,
            (200, "OK"),
            "application/json",
            j.cache,
            j.extra,
            j.body.as_bytes(),
            head_only,
            end,
        )
        .await;
    }
    if web.nodeinfo.contains(key) {
        let page = match web.node_info.get() {
            Some(render) => tokio::time::timeout(Duration::from_secs(5), render())
                .await
                .ok()
                .flatten(),
            None => None,
        };
        return match page {
            Some(html) => {
                send(
                    stream,
                    200,
                    "OK",
                    "text/html; charset=utf-8",
                    "no-cache",
                    html.as_bytes(),
                    head_only,
                    end,
                )
                .await
            }
            None => {
                respond(
                    stream,
                    503,
                    "Service Unavailable",
                    Some("The node's information is not available now: try again.\n"),
                    end,
                )
                .await
            }
        };
    }
    if let Some(archive) = web.archives.get(key) {
        let (name, object) = archive.get(under_service(key, path));
        return match object {
            super::archive::Object::Found(bytes) => {
                let ct = content_type(Path::new(&name), &archive.mime_types);
                send(stream, 200, "OK", &ct, "no-cache", &bytes, head_only, end).await
            }
            super::archive::Object::NotFound => respond(stream, 404, "Not Found", None, end).await,
            super::archive::Object::Unreadable => {
                respond(stream, 500, "Internal Server Error", None, end).await
            }
        };
    }
    if let Some(to) = web.redirects.get(key) {
        return redirect(stream, 302, "Found", to, end).await;
    }
    serve_static(stream, web, path, head_only, end).await
}

/// The path under a service's own segments (`lp/open` → `open`).
fn under_service<'a>(key: &str, path: &'a str) -> &'a str {
    let path = path.trim_start_matches('/');
    if key == "/" {
        return path;
    }
    let segs = key.split('/').count();
    path.splitn(segs + 1, '/').nth(segs).unwrap_or("")
}

/// A redirect with no body.
async fn redirect<S: Io>(
    stream: &mut S,
    code: u16,
    reason: &str,
    to: &str,
    end: End,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: {}\r\n\r\n",
        end.header()
    );
    stream.write_all(head.as_bytes()).await?;
    end.finish(stream).await
}

/// A plain HTTP request on a WebSocket endpoint: a status page (Crossbar.io's
/// `enable_webstatus`, on by default), or 426 Upgrade Required.
pub(super) async fn not_upgraded<S: Io>(stream: &mut S, settings: &ListenerSettings) {
    let text = "This is a WAMP WebSocket endpoint: connect with a WebSocket client.\n";
    let _ = if settings.enable_webstatus {
        let page = format!(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>WAMP endpoint</title></head><body><p>{text}</p><p>Subprotocols: {}.</p></body></html>",
            super::websocket::SUBPROTOCOLS
                .iter()
                .filter(|(_, ser, _)| settings.serializers.contains(ser))
                .map(|(name, ..)| *name)
                .collect::<Vec<_>>()
                .join(", ")
        );
        send(
            stream,
            200,
            "OK",
            "text/html; charset=utf-8",
            "no-cache",
            page.as_bytes(),
            false,
            End::CLOSE,
        )
        .await
    } else {
        respond(stream, 426, "Upgrade Required", Some(text), End::CLOSE).await
    };
}

/// The service a request path names: the longest configured key its
/// segments start with, else `/` for the root itself, else "".
fn service_key(web: &WebSettings, path: &str) -> String {
    let segs: Vec<&str> = path
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let known = |k: &str| {
        web.websockets.contains_key(k)
            || web.bridges.contains_key(k)
            || web.json.contains_key(k)
            || web.redirects.contains_key(k)
            || web.nodeinfo.contains(k)
            || web.archives.contains_key(k)
            || web.longpolls.contains_key(k)
    };
    for i in (1..=segs.len()).rev() {
        let k = segs[..i].join("/");
        if known(&k) {
            return k;
        }
        // A longer static path wins over a shorter service (`api/docs`
        // over `api`): no service, the file is looked up.
        if web.statics.contains_key(&k) {
            return String::new();
        }
    }
    // An archive at the root serves every path no other service takes.
    if segs.is_empty() || web.archives.contains_key("/") {
        "/".into()
    } else {
        String::new()
    }
}

/// A whole response with a body.
#[allow(clippy::too_many_arguments)]
async fn send<S: Io>(
    stream: &mut S,
    code: u16,
    reason: &str,
    content_type: &str,
    cache: &str,
    body: &[u8],
    head_only: bool,
    end: End,
) -> std::io::Result<()> {
    send_with(
        stream,
        (code, reason),
        content_type,
        cache,
        "",
        body,
        head_only,
        end,
    )
    .await
}

/// As [`send`], with `extra` header lines (each ending in CRLF).
#[allow(clippy::too_many_arguments)]
pub(super) async fn send_with<S: Io>(
    stream: &mut S,
    (code, reason): (u16, &str),
    content_type: &str,
    cache: &str,
    extra: &str,
    body: &[u8],
    head_only: bool,
    end: End,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nX-Content-Type-Options: nosniff\r\nCache-Control: {cache}\r\n{extra}Connection: {}\r\n\r\n",
        body.len(),
        end.header()
    );
    stream.write_all(head.as_bytes()).await?;
    if !head_only {
        stream.write_all(body).await?;
    }
    end.finish(stream).await
}

/// A `json` path's answer, made once at start.
#[derive(Debug, Clone)]
pub struct JsonPath {
    /// The value, serialized (pretty with `options.prettify`).
    pub body: String,
    /// `Cache-Control`.
    pub cache: &'static str,
    /// Headers for cross-origin requests (`options.allow_cross_origin`).
    pub extra: &'static str,
}

impl JsonPath {
    /// The answer of a `json` path with Crossbar.io's options.
    pub fn new(value: &serde_json::Value, o: &crate::config::JsonOptions) -> JsonPath {
        let body = if o.prettify {
            serde_json::to_string_pretty(value).unwrap_or_default()
        } else {
            value.to_string()
        };
        JsonPath {
            body,
            cache: if o.discourage_caching {
                "no-store, no-cache, must-revalidate, max-age=0"
            } else {
                "no-cache"
            },
            extra: if o.allow_cross_origin {
                "Access-Control-Allow-Origin: *\r\nAccess-Control-Allow-Credentials: true\r\n"
            } else {
                ""
            },
        }
    }
}

/// What the router needs of a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Request {
    pub method: String,
    pub target: String,
    /// It asks for a WebSocket upgrade.
    pub upgrade: bool,
    /// HTTP/1.1 without `Connection: close`, or HTTP/1.0 with
    /// `Connection: keep-alive`.
    pub keep_alive: bool,
    /// It announces a body (`Content-Length` above 0, or
    /// `Transfer-Encoding`).
    pub body: bool,
    /// Bytes of the head itself (what follows is body or the next request).
    pub head_len: usize,
}

/// Read and check an HTTP request head within `deadline` and the size
/// limits, starting with the bytes in `carry` (read with an earlier
/// request): the head's bytes (with whatever followed them) and what it
/// asks, or `None` after answering 400/431 (or closing on a timeout).
pub(super) async fn checked_head<S: Io>(
    stream: &mut S,
    carry: Vec<u8>,
    deadline: Duration,
    shutdown: &CancellationToken,
) -> Option<(Vec<u8>, Request)> {
    let head = tokio::select! {
        _ = shutdown.cancelled() => return None,
        r = tokio::time::timeout(deadline, read_head(stream, carry)) => r,
    };
    let head = match head {
        Err(_) => {
            debug!(
                timeout_ms = deadline.as_millis() as u64,
                "HTTP request head not complete in time: closed"
            );
            return None;
        }
        Ok(Err(HeadError::Io)) => return None,
        Ok(Err(HeadError::TooLarge)) => {
            let _ = respond(
                stream,
                431,
                "Request Header Fields Too Large",
                None,
                End::CLOSE,
            )
            .await;
            return None;
        }
        Ok(Err(HeadError::Malformed)) => {
            let _ = respond(stream, 400, "Bad Request", None, End::CLOSE).await;
            return None;
        }
        Ok(Ok(h)) => h,
    };
    match parse(&head) {
        Ok(req) => Some((head, req)),
        Err(HeadError::TooLarge) => {
            let _ = respond(
                stream,
                431,
                "Request Header Fields Too Large",
                None,
                End::CLOSE,
            )
            .await;
            None
        }
        Err(_) => {
            let _ = respond(stream, 400, "Bad Request", None, End::CLOSE).await;
            None
        }
    }
}

enum HeadError {
    Io,
    TooLarge,
    Malformed,
}

/// Read up to the blank line ending the head, after the bytes already
/// in `buf`; at most [`MAX_HEAD_BYTES`].
async fn read_head<S: Io>(stream: &mut S, mut buf: Vec<u8>) -> Result<Vec<u8>, HeadError> {
    let mut from = 0;
    buf.reserve(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&buf, from) {
            // Whatever follows the head stays in `buf` too: a WebSocket
            // client may send its first frame right away.
            return if end > MAX_HEAD_BYTES {
                Err(HeadError::TooLarge)
            } else {
                Ok(buf)
            };
        }
        if buf.len() >= MAX_HEAD_BYTES {
            return Err(HeadError::TooLarge);
        }
        from = buf.len().saturating_sub(3);
        let n = stream.read(&mut chunk).await.map_err(|_| HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Io);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Where the head in `buf` ends (after its blank line), searching from
/// `from`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| from + p + 4)
}

/// What a complete request head asks.
fn parse(head: &[u8]) -> Result<Request, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(head) {
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        _ => return Err(HeadError::Malformed),
    };
    let has = |name: &str, token: &str| {
        req.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case(name)
                && String::from_utf8_lossy(h.value)
                    .to_ascii_lowercase()
                    .split(',')
                    .any(|t| t.trim() == token)
        })
    };
    let upgrade = has("upgrade", "websocket");
    let keep_alive = match req.version {
        Some(1) => !has("connection", "close"),
        _ => has("connection", "keep-alive"),
    };
    let body = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            || (h.name.eq_ignore_ascii_case("content-length")
                && std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    != Some(0))
    });
    Ok(Request {
        method: req.method.unwrap_or("").to_owned(),
        target: req.path.unwrap_or("/").to_owned(),
        upgrade,
        keep_alive,
        body,
        head_len,
    })
}

async fn respond<S: Io>(
    stream: &mut S,
    code: u16,
    reason: &str,
    body: Option<&str>,
    end: End,
) -> std::io::Result<()> {
    let body = body.map_or_else(|| format!("{code} {reason}\n"), str::to_owned);
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nX-Content-Type-Options: nosniff\r\nConnection: {}\r\n\r\n",
        body.len(),
        end.header()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    end.finish(stream).await
}

/// What a request path names under a static root, if anything.
enum Resolved {
    File(PathBuf),
    /// A directory asked for without its trailing slash.
    Redirect(String),
    /// A directory with no `index.html` (listed if the path allows it).
    Directory(PathBuf),
    NotFound,
}

/// The name of the static path a request path falls under.
fn root_name<'a>(statics: &'a HashMap<String, PathBuf>, path: &str) -> Option<&'a str> {
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?;
    static_root(statics, &decoded).map(|(k, _, _)| k)
}

/// The static path a decoded request path falls under (the longest name
/// its segments start with, else `/`): name, directory, and the rest.
fn static_root<'a>(
    statics: &'a HashMap<String, PathBuf>,
    decoded: &str,
) -> Option<(&'a str, &'a PathBuf, String)> {
    let trimmed = decoded.trim_start_matches('/');
    let segs: Vec<&str> = trimmed.split('/').collect();
    for i in (1..=segs.len()).rev() {
        let k = segs[..i].join("/");
        if k.is_empty() {
            continue;
        }
        if let Some((name, root)) = statics.get_key_value(&k) {
            return Some((name.as_str(), root, segs[i..].join("/")));
        }
    }
    statics
        .get_key_value("/")
        .map(|(name, root)| (name.as_str(), root, trimmed.to_owned()))
}

/// Map `path` onto the static directories. Pure apart from the file
/// system lookups, so the traversal rules are unit-tested.
fn resolve(statics: &HashMap<String, PathBuf>, path: &str) -> Resolved {
    let Ok(decoded) = percent_encoding::percent_decode_str(path).decode_utf8() else {
        return Resolved::NotFound;
    };
    let Some((_, root, rest)) = static_root(statics, &decoded) else {
        return Resolved::NotFound;
    };
    let mut file = root.clone();
    for seg in rest.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Resolved::NotFound,
            s if s.contains(['\\', '\0']) => return Resolved::NotFound,
            s => file.push(s),
        }
    }
    // Symlinks are followed, but the target must stay inside the root.
    let Ok(real) = file.canonicalize() else {
        return Resolved::NotFound;
    };
    if !real.starts_with(root) {
        return Resolved::NotFound;
    }
    if real.is_dir() {
        if !decoded.ends_with('/') {
            return Resolved::Redirect(format!("{path}/"));
        }
        let index = real.join("index.html");
        return match index.canonicalize() {
            Ok(i) if i.starts_with(root) && i.is_file() => Resolved::File(i),
            _ => Resolved::Directory(real),
        };
    }
    if real.is_file() {
        Resolved::File(real)
    } else {
        Resolved::NotFound
    }
}

async fn serve_static<S: Io>(
    stream: &mut S,
    web: &WebSettings,
    path: &str,
    head_only: bool,
    end: End,
) -> std::io::Result<()> {
    let default = crate::config::StaticOptions::default();
    let options = root_name(&web.statics, path)
        .and_then(|n| web.static_options.get(n))
        .unwrap_or(&default);
    let cache = match options.cache_timeout {
        Some(s) if s > 0 => format!("max-age={s}"),
        _ => "no-cache".to_owned(),
    };
    match resolve(&web.statics, path) {
        Resolved::NotFound => respond(stream, 404, "Not Found", None, end).await,
        Resolved::Directory(_) if !options.enable_directory_listing => {
            respond(stream, 404, "Not Found", None, end).await
        }
        Resolved::Directory(dir) => {
            let page = listing(&dir, path).await;
            send(
                stream,
                200,
                "OK",
                "text/html; charset=utf-8",
                "no-cache",
                page.as_bytes(),
                head_only,
                end,
            )
            .await
        }
        Resolved::Redirect(to) => redirect(stream, 301, "Moved Permanently", &to, end).await,
        Resolved::File(file) => {
            let Ok(f) = tokio::fs::File::open(&file).await else {
                return respond(stream, 404, "Not Found", None, end).await;
            };
            let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {len}\r\nX-Content-Type-Options: nosniff\r\nCache-Control: {cache}\r\nConnection: {}\r\n\r\n",
                content_type(&file, &options.mime_types),
                end.header()
            );
            stream.write_all(head.as_bytes()).await?;
            if !head_only {
                // Exactly the announced length (a file that grew meanwhile
                // must not spill into the next response).
                let mut f = f.take(len);
                let sent =
                    tokio::time::timeout(Duration::from_secs(300), tokio::io::copy(&mut f, stream))
                        .await
                        .map_err(|_| std::io::Error::other("static file transfer timed out"))??;
                if sent != len {
                    // The file shrank: the response is short; only closing
                    // tells the client.
                    return stream.shutdown().await;
                }
            }
            end.finish(stream).await
        }
    }
}

/// A directory's entries as a page of links (names escaped, links
/// percent-encoded; following one goes through the same checks).
async fn listing(dir: &Path, path: &str) -> String {
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut names = Vec::new();
    if let Ok(mut rd) = tokio::fs::read_dir(dir).await {
        while let Ok(Some(e)) = rd.next_entry().await {
            let mut name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().await.is_ok_and(|t| t.is_dir()) {
                name.push('/');
            }
            names.push(name);
        }
    }
    names.sort();
    let title = esc(&percent_encoding::percent_decode_str(path).decode_utf8_lossy());
    let mut out = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title></head><body><h1>{title}</h1><ul>"
    );
    for n in names {
        let link: String =
            percent_encoding::utf8_percent_encode(&n, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
                .replace("%2F", "/")
                .replace("%2E", ".")
                .replace("%2D", "-")
                .replace("%5F", "_");
        out.push_str(&format!("<li><a href=\"{link}\">{}</a></li>", esc(&n)));
    }
    out.push_str("</ul></body></html>\n");
    out
}

fn content_type(file: &Path, overrides: &std::collections::BTreeMap<String, String>) -> String {
    if let Some(ext) = file.extension().and_then(|e| e.to_str())
        && let Some(t) = overrides
            .get(&format!(".{ext}"))
            .or_else(|| overrides.get(ext))
    {
        return t.clone();
    }
    let mime = mime_guess::from_path(file).first_or_octet_stream();
    if mime.type_() == "text" || mime.subtype() == "javascript" || mime.subtype() == "json" {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    }
}

/// Bytes read to tell a universal transport's protocols apart, handed
/// back first to whichever serves the connection, then the stream itself.
pub(super) struct Replay<S> {
    first: Bytes,
    inner: S,
}

impl<S> Replay<S> {
    pub(super) fn new(bytes: Vec<u8>, inner: S) -> Replay<S> {
        Replay {
            first: Bytes::from(bytes),
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.first.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, out);
        }
        let n = this.first.len().min(out.remaining());
        out.put_slice(&this.first[..n]);
        this.first.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A head of exactly 16 KiB (blank line included) is read, one byte
    /// more is too large, whichever read brings the end, and the bytes
    /// after the head stay.
    #[test]
    fn the_head_limit_is_exactly_16_kib() {
        use tokio::io::AsyncWriteExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let head = |len: usize| {
            let mut h = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
            h.resize(len - 4, b'a');
            h.extend_from_slice(b"\r\n\r\n");
            h
        };
        for (len, ok) in [
            (MAX_HEAD_BYTES, true),
            (MAX_HEAD_BYTES + 1, false),
            (17_000, false),
        ] {
            for first in [0, 100, len - 2] {
                let h = head(len);
                let got = rt.block_on(async {
                    let (mut tx, mut rx) = tokio::io::duplex(64 * 1024);
                    let mut sent = h[first..].to_vec();
                    sent.extend_from_slice(b"FRAME");
                    tx.write_all(&sent).await.unwrap();
                    read_head(&mut rx, h[..first].to_vec()).await
                });
                match got {
                    Ok(buf) => {
                        assert!(ok, "{len} bytes read ({first} before)");
                        assert!(buf.ends_with(b"\r\n\r\nFRAME") || buf.ends_with(b"\r\n\r\n"));
                    }
                    Err(HeadError::TooLarge) => assert!(!ok, "{len} refused ({first} before)"),
                    Err(_) => panic!("{len}: wrong error"),
                }
            }
        }
    }

    /// The byte a universal transport reads to tell protocols apart is
    /// replayed, then the stream, unchanged.
    #[test]
    fn a_sniffed_byte_is_replayed() {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async {
                // Bytes a frame guard would read as a 2^63-byte frame
                // (here RawSocket's would-be bytes), then more.
                let mut rest = vec![0x82, 0x7F, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
                rest.extend_from_slice(b"ET /ws HTTP/1.1\r\nHost: x\r\n");
                async fn drain<S: AsyncRead + Unpin>(mut s: S) -> std::io::Result<Vec<u8>> {
                    let mut all = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        match s.read(&mut buf).await? {
                            0 => return Ok(all),
                            n => all.extend_from_slice(&buf[..n]),
                        }
                    }
                }
                let replayed = Replay::new(b"G".to_vec(), std::io::Cursor::new(rest.clone()));
                let all = drain(replayed).await.unwrap();
                assert_eq!(all[0], b'G');
                assert_eq!(&all[1..], &rest[..]);
            });
    }

    fn tree() -> (tempfile::TempDir, HashMap<String, PathBuf>) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("www");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("index.html"), "<h1>hi</h1>").unwrap();
        std::fs::write(root.join("sub/app.js"), "x").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("out")).unwrap();
        std::os::unix::fs::symlink(root.join("sub/app.js"), root.join("in")).unwrap();
        let mut m = HashMap::new();
        m.insert("/".to_owned(), root.canonicalize().unwrap());
        (dir, m)
    }

    fn file(r: Resolved) -> Option<String> {
        match r {
            Resolved::File(p) => Some(p.file_name().unwrap().to_string_lossy().into_owned()),
            _ => None,
        }
    }

    #[test]
    fn files_index_and_redirects() {
        let (_d, m) = tree();
        assert_eq!(file(resolve(&m, "/")).as_deref(), Some("index.html"));
        assert_eq!(file(resolve(&m, "/sub/app.js")).as_deref(), Some("app.js"));
        assert_eq!(
            file(resolve(&m, "/sub/%61pp.js")).as_deref(),
            Some("app.js")
        );
        assert_eq!(file(resolve(&m, "/in")).as_deref(), Some("app.js"));
        assert!(matches!(resolve(&m, "/sub"), Resolved::Redirect(to) if to == "/sub/"));
        assert!(
            matches!(resolve(&m, "/sub/"), Resolved::Directory(_)),
            "no index: a listing, if allowed"
        );
    }

    #[test]
    fn nothing_outside_the_root() {
        let (_d, m) = tree();
        for p in [
            "/../secret.txt",
            "/sub/../../secret.txt",
            "/%2e%2e/secret.txt",
            "/%2E%2E%2Fsecret.txt",
            "/sub/..%2f..%2fsecret.txt",
            "/..%5csecret.txt",
            "/out",
            "/nope",
            "/index.html%00.js",
            "/%ff",
        ] {
            assert!(
                matches!(resolve(&m, p), Resolved::NotFound),
                "{p} was served"
            );
        }
    }
}

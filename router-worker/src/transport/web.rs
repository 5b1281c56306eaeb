//! `web` transports: static files and WAMP-over-WebSocket paths on one
//! HTTP port, as Crossbar.io's web transport. [`route`] answers each
//! request [`super::http`] reads (hyper): a WebSocket upgrade on a
//! `websocket` path, or the service the path names (static files, json,
//! the HTTP bridge, long-poll, ...); a request with a body a service does
//! not read closes the connection after its answer.
//!
//! Static files never leave their directory: `..` segments (plain or
//! percent-encoded) are refused, and the resolved file (symlinks followed)
//! must lie inside the canonical root. Every miss is the same bare 404.
//! The chosen file's bytes go out through tower-http's `ServeFile`
//! (ranges, conditional requests); tower-http's `ServeDir` is not used,
//! as it follows symlinks out of the root.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use hyper::Response;
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::ListenerSettings;
use super::http::{self, Body};

/// A web transport's paths, resolved at bind time.
#[derive(Debug)]
pub struct WebSettings {
    /// `websocket` paths by name (`ws`), each with its own WAMP settings.
    pub websockets: HashMap<String, Arc<ListenerSettings>>,
    /// `mqtt` paths (MQTT over WebSocket) by name, each with its own
    /// settings.
    pub mqtts: HashMap<String, Arc<ListenerSettings>>,
    /// `static` paths: name (`/` for the root) → canonical directory.
    pub statics: HashMap<String, PathBuf>,
    /// `static` paths' options, by the same names.
    pub static_options: HashMap<String, trellis_config::router::StaticOptions>,
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

/// Does the request announce a body (`Content-Length` above 0, or
/// `Transfer-Encoding`)?
fn has_body<B>(req: &hyper::Request<B>) -> bool {
    req.headers().contains_key("transfer-encoding")
        || http::header(req.headers(), "content-length").is_some_and(|v| v != "0")
}

/// Answer one request of a connection: the service its path names (web
/// transports), or the WebSocket endpoint (WebSocket transports).
pub(super) async fn route(mut req: hyper::Request<Incoming>, conn: &http::Conn) -> Response<Body> {
    let settings = &conn.settings;
    let Some(web) = settings.web.clone() else {
        // A WebSocket transport: every path is its endpoint.
        return websocket_path(&mut req, conn, settings.clone());
    };
    let path = req.uri().path().to_owned();
    // The longest configured service path the request's path starts with
    // (`api/call` before `api`), or `/` for the root itself.
    let key = service_key(&web, &path);
    if let Some(ws) = web.websockets.get(&key) {
        return websocket_path(&mut req, conn, ws.clone());
    }
    if let Some(m) = web.mqtts.get(&key) {
        let r = super::websocket::UpgradeRequest::of(&req);
        if !r.asks_websocket() {
            return http::text(
                426,
                Some(
                    "an MQTT over WebSocket endpoint: connect an MQTT client with ws:// or wss://\n",
                ),
            );
        }
        return match super::websocket::accept_mqtt(&r, m) {
            Ok(resp) => {
                conn.upgrade_to(&mut req, http::UpgradeKind::Mqtt(m.clone()));
                resp
            }
            Err(refused) => refused.response(),
        };
    }
    if let Some(bridge) = web.bridges.get(key.as_str()) {
        return super::bridge::handle(req, conn, bridge).await;
    }
    if let Some(lp) = web.longpolls.get(key.as_str()) {
        let rest = under_service(&key, &path).to_owned();
        return Box::pin(super::longpoll::handle(req, &rest, conn, lp)).await;
    }
    // Other services take no body: a request with one is answered, then
    // the connection closes (its body is not read).
    let body = has_body(&req);
    let mut r = Box::pin(serve(&req, &web, &key, &path)).await;
    if body {
        http::set(&mut r, "connection", "close");
    }
    r
}

/// A request on a WebSocket path: the upgrade (the connection carries on
/// as WebSocket once the 101 is out), or the status page.
fn websocket_path(
    req: &mut hyper::Request<Incoming>,
    conn: &http::Conn,
    ws: Arc<ListenerSettings>,
) -> Response<Body> {
    let testee = ws.kind == trellis_config::router::TransportKind::WebsocketTestee;
    let r = super::websocket::UpgradeRequest::of(req);
    if !r.asks_websocket() && !testee {
        return not_upgraded(&ws);
    }
    let answer = if testee {
        super::websocket::accept_echo(&r, &ws)
            .map(|(resp, deflate)| (resp, http::UpgradeKind::Echo(deflate)))
    } else {
        super::websocket::accept_wamp(&r, &ws).map(|a| {
            let resp = a.response();
            (resp, http::UpgradeKind::Wamp(Box::new(a), ws.clone()))
        })
    };
    match answer {
        Ok((resp, kind)) => {
            conn.upgrade_to(req, kind);
            resp
        }
        Err(refused) => refused.response(),
    }
}

/// Answer one request on a static, json, nodeinfo, archive or redirect
/// path.
async fn serve<B>(
    req: &hyper::Request<B>,
    web: &WebSettings,
    key: &str,
    path: &str,
) -> Response<Body> {
    let method = req.method();
    if method != hyper::Method::GET && method != hyper::Method::HEAD {
        return http::text(405, None);
    }
    if let Some(j) = web.json.get(key) {
        let mut r = http::response(200, "application/json", j.body.clone());
        http::set(&mut r, "cache-control", j.cache);
        if j.cross_origin {
            http::set(&mut r, "access-control-allow-origin", "*");
            http::set(&mut r, "access-control-allow-credentials", "true");
        }
        return r;
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
                let mut r = http::response(200, "text/html; charset=utf-8", html);
                http::set(&mut r, "cache-control", "no-cache");
                r
            }
            None => http::text(
                503,
                Some("The node's information is not available now: try again.\n"),
            ),
        };
    }
    if let Some(archive) = web.archives.get(key) {
        let (name, object) = archive.get(under_service(key, path));
        return match object {
            super::archive::Object::Found(bytes) => {
                let ct = content_type(Path::new(&name), &archive.mime_types);
                let mut r = http::response(200, &ct, bytes);
                http::set(&mut r, "cache-control", "no-cache");
                r
            }
            super::archive::Object::NotFound => http::text(404, None),
            super::archive::Object::Unreadable => http::text(500, None),
        };
    }
    if let Some(to) = web.redirects.get(key) {
        return redirect(302, to);
    }
    serve_static(req, web, path).await
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
fn redirect(code: u16, to: &str) -> Response<Body> {
    let mut r = http::response(code, "", Bytes::new());
    http::set(&mut r, "location", to);
    r
}

/// A plain HTTP request on a WebSocket endpoint: a status page (Crossbar.io's
/// `enable_webstatus`, on by default), or 426 Upgrade Required.
pub(super) fn not_upgraded(settings: &ListenerSettings) -> Response<Body> {
    let text = "This is a WAMP WebSocket endpoint: connect with a WebSocket client.\n";
    let mut r = if settings.enable_webstatus {
        let page = format!(
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>WAMP endpoint</title></head><body><p>{text}</p><p>Subprotocols: {}.</p></body></html>",
            super::websocket::SUBPROTOCOLS
                .iter()
                .filter(|(_, ser, _)| settings.serializers.contains(ser))
                .map(|(name, ..)| *name)
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut r = http::response(200, "text/html; charset=utf-8", page);
        http::set(&mut r, "cache-control", "no-cache");
        r
    } else {
        http::text(426, Some(text))
    };
    http::set(&mut r, "connection", "close");
    r
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
            || web.mqtts.contains_key(k)
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

/// A `json` path's answer, made once at start.
#[derive(Debug, Clone)]
pub struct JsonPath {
    /// The value, serialized (pretty with `options.prettify`).
    pub body: String,
    /// `Cache-Control`.
    pub cache: &'static str,
    /// `options.allow_cross_origin`: any origin may read it.
    pub cross_origin: bool,
}

impl JsonPath {
    /// The answer of a `json` path with Crossbar.io's options.
    pub fn new(value: &serde_json::Value, o: &trellis_config::router::JsonOptions) -> JsonPath {
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
            cross_origin: o.allow_cross_origin,
        }
    }
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

/// A static path's `options.default_file` (a single-page application's
/// `index.html`), for a request that names nothing there: the file, if it
/// is one inside the path's directory.
fn fallback(
    statics: &HashMap<String, PathBuf>,
    path: &str,
    options: &trellis_config::router::StaticOptions,
) -> Option<PathBuf> {
    let name = options.default_file.as_deref()?;
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .ok()?;
    let (_, root, _) = static_root(statics, &decoded)?;
    let file = root
        .join(name.trim_start_matches('/'))
        .canonicalize()
        .ok()?;
    (file.starts_with(root) && file.is_file()).then_some(file)
}

async fn serve_static<B>(req: &hyper::Request<B>, web: &WebSettings, path: &str) -> Response<Body> {
    let default = trellis_config::router::StaticOptions::default();
    let options = root_name(&web.statics, path)
        .and_then(|n| web.static_options.get(n))
        .unwrap_or(&default);
    let cache = match options.cache_timeout {
        Some(s) if s > 0 => format!("max-age={s}"),
        _ => "no-cache".to_owned(),
    };
    let path_and_query = req.uri().path_and_query().map_or(path, |p| p.as_str());
    let mut resolved = resolve(&web.statics, path);
    let unlisted = matches!(resolved, Resolved::Directory(_)) && !options.enable_directory_listing;
    if (matches!(resolved, Resolved::NotFound) || unlisted)
        && let Some(file) = fallback(&web.statics, path, options)
    {
        resolved = Resolved::File(file);
    }
    match resolved {
        Resolved::NotFound => http::text(404, None),
        Resolved::Directory(_) if !options.enable_directory_listing => http::text(404, None),
        Resolved::Directory(dir) => {
            let page = listing(&dir, path).await;
            let mut r = http::response(200, "text/html; charset=utf-8", page);
            // HEAD: hyper sends the headers (with the length) and no body.
            http::set(&mut r, "cache-control", "no-cache");
            r
        }
        Resolved::Redirect(to) => {
            // The query stays with the redirected path.
            let to = match path_and_query.split_once('?') {
                Some((_, q)) => format!("{to}?{q}"),
                None => to,
            };
            redirect(301, &to)
        }
        Resolved::File(file) => {
            // The file's bytes through tower-http (ranges, conditional
            // requests, HEAD), after our own checks chose the file.
            let mut plain = hyper::Request::new(());
            *plain.method_mut() = req.method().clone();
            *plain.uri_mut() = req.uri().clone();
            for name in [
                "range",
                "if-range",
                "if-modified-since",
                "if-unmodified-since",
            ] {
                if let Some(v) = req.headers().get(name) {
                    plain.headers_mut().insert(name, v.clone());
                }
            }
            let served =
                tower::ServiceExt::oneshot(tower_http::services::ServeFile::new(&file), plain)
                    .await;
            let Ok(r) = served;
            let (mut parts, body) = r.into_parts();
            if parts.status == hyper::StatusCode::NOT_FOUND {
                return http::text(404, None);
            }
            if let Ok(v) =
                hyper::header::HeaderValue::from_str(&content_type(&file, &options.mime_types))
            {
                parts.headers.insert("content-type", v);
            }
            let mut r =
                Response::from_parts(parts, body.map_err(std::io::Error::other).boxed_unsync());
            http::set(&mut r, "cache-control", &cache);
            http::set(&mut r, "x-content-type-options", "nosniff");
            r
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
    use tokio::io::AsyncReadExt;

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

//! WAMP over WebSocket: the opening handshake, subprotocol negotiation,
//! and the connection around the sans-IO codec in [`super::wscodec`].
//!
//! Subprotocols: `wamp.2.json`, `wamp.2.msgpack`, `wamp.2.cbor`, and the
//! batched variants `wamp.2.json.batched` (each message followed by 0x18)
//! and `wamp.2.msgpack.batched` (each message preceded by its 4-byte
//! big-endian length). The client's order of preference decides among the
//! ones this transport offers; a client offering none gets HTTP 400 with a
//! body that lists what it could have asked for.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use proto::Serializer;
use tokio::io::{AsyncReadExt, ReadBuf};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::deflate::Agreed;
use super::http::{self, Body};
use super::wscodec::{CodecError, Decoder, Encoder, Event, OP_PING, OP_PONG, OutFrame};
use super::{Io, ListenerSettings, Peer};
use crate::outbound::OutMsg;
use crate::realm::TransportInfo;
use crate::realms::Realms;
use crate::session;
use crate::session::transport::{CloseKind, Queued, Transport, TransportError};

/// The WAMP subprotocols, in the router's order: name, serializer, batched.
pub const SUBPROTOCOLS: [(&str, Serializer, bool); 5] = [
    ("wamp.2.json", Serializer::Json, false),
    ("wamp.2.msgpack", Serializer::MsgPack, false),
    ("wamp.2.cbor", Serializer::Cbor, false),
    ("wamp.2.json.batched", Serializer::Json, true),
    ("wamp.2.msgpack.batched", Serializer::MsgPack, true),
];

/// Separator after each message in `wamp.2.json.batched`.
pub(super) const JSON_BATCH_SEPARATOR: u8 = 0x18;

/// Does `origin` match `pattern` (`*` matches any run of characters)?
fn origin_matches(pattern: &str, origin: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == origin;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !origin.starts_with(first) || !origin[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &origin[first.len()..origin.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// Pick the subprotocol for a client's offer.
fn negotiate(
    offered: &[String],
    allowed: &[Serializer],
    require: bool,
) -> Result<Option<(&'static str, Serializer, bool)>, String> {
    for o in offered {
        if let Some(p) = SUBPROTOCOLS
            .iter()
            .find(|(name, ser, _)| name == o && allowed.contains(ser))
        {
            return Ok(Some(*p));
        }
    }
    let ours: Vec<&str> = SUBPROTOCOLS
        .iter()
        .filter(|(_, s, _)| allowed.contains(s))
        .map(|(n, _, _)| *n)
        .collect();
    if offered.is_empty() {
        if require {
            return Err(format!(
                "this WAMP endpoint requires a WebSocket subprotocol: send Sec-WebSocket-Protocol with one of {}",
                ours.join(", ")
            ));
        }
        if allowed.contains(&Serializer::Json) {
            return Ok(None);
        }
    }
    Err(format!(
        "none of the offered WebSocket subprotocols ({}) is supported here: use one of {}",
        offered.join(", "),
        ours.join(", ")
    ))
}

/// An upgrade request the router takes: the response's headers, and what
/// the connection agreed.
#[derive(Debug)]
pub(super) struct Accepted {
    /// `Sec-WebSocket-Accept` and the agreed extras, for the 101.
    headers: Vec<(&'static str, String)>,
    /// The WAMP subprotocol (name, serializer, batched).
    protocol: (&'static str, Serializer, bool),
    /// The HTTP details for authenticators.
    http: proto::Dict,
    /// The tracking cookie's id.
    cookie: Option<String>,
    deflate: Option<Agreed>,
}

impl Accepted {
    /// The 101 response.
    pub(super) fn response(&self) -> hyper::Response<Body> {
        switching(&self.headers)
    }
}

/// An upgrade request the router refuses: the HTTP answer.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refused {
    status: u16,
    text: String,
}

impl Refused {
    fn bad(text: impl Into<String>) -> Refused {
        Refused {
            status: 400,
            text: text.into(),
        }
    }

    /// The answer; the connection closes after it.
    pub(super) fn response(self) -> hyper::Response<Body> {
        let mut text = self.text;
        text.push('\n');
        let mut r = http::text(self.status, Some(&text));
        if self.status == 426 {
            http::set(&mut r, "sec-websocket-version", "13");
        }
        http::set(&mut r, "connection", "close");
        r
    }
}

/// The parts of an upgrade request the handshake reads.
pub(super) struct UpgradeRequest<'h> {
    pub method: &'h hyper::Method,
    pub version: hyper::Version,
    pub target: &'h str,
    pub headers: &'h hyper::HeaderMap,
}

impl<'h> UpgradeRequest<'h> {
    pub(super) fn of<B>(req: &'h hyper::Request<B>) -> UpgradeRequest<'h> {
        UpgradeRequest {
            method: req.method(),
            version: req.version(),
            target: req.uri().path_and_query().map_or("/", |p| p.as_str()),
            headers: req.headers(),
        }
    }

    /// Does it ask for a WebSocket upgrade (`Upgrade: websocket`)?
    pub(super) fn asks_websocket(&self) -> bool {
        self.tokens("upgrade")
            .any(|t| t.eq_ignore_ascii_case("websocket"))
    }

    /// Every value of a header.
    fn values(&self, name: &'h str) -> impl Iterator<Item = &'h str> + 'h {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
    }

    /// The comma-separated tokens of every value of a header.
    fn tokens(&self, name: &'h str) -> impl Iterator<Item = &'h str> + 'h {
        http::tokens(self.headers, name)
    }
}

/// RFC 6455's checks of the opening handshake: the `Sec-WebSocket-Accept`
/// value, or why the request is not a WebSocket upgrade the router takes.
fn check_upgrade(r: &UpgradeRequest<'_>) -> Result<String, Refused> {
    if r.method != hyper::Method::GET {
        return Err(Refused::bad(
            "a WebSocket upgrade must be a GET request (RFC 6455, 4.1)",
        ));
    }
    if r.version != hyper::Version::HTTP_11 {
        return Err(Refused::bad("a WebSocket upgrade needs HTTP/1.1"));
    }
    if !r
        .tokens("connection")
        .any(|t| t.eq_ignore_ascii_case("upgrade"))
    {
        return Err(Refused::bad(
            "a WebSocket upgrade needs the header `Connection: Upgrade`",
        ));
    }
    if !r.tokens("sec-websocket-version").any(|t| t == "13") {
        return Err(Refused {
            status: 426,
            text: "this endpoint speaks WebSocket version 13 (RFC 6455): send `Sec-WebSocket-Version: 13`".into(),
        });
    }
    match r.values("sec-websocket-key").next().map(str::trim) {
        Some(key) if !key.is_empty() => Ok(super::wscodec::accept_key(key)),
        _ => Err(Refused::bad(
            "a WebSocket upgrade needs a `Sec-WebSocket-Key` header",
        )),
    }
}

/// The 101 response with `headers` (`Sec-WebSocket-Accept` first).
fn switching(headers: &[(&'static str, String)]) -> hyper::Response<Body> {
    let mut r = hyper::Response::new(http::full(Bytes::new()));
    *r.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
    http::set(&mut r, "upgrade", "websocket");
    http::set(&mut r, "connection", "Upgrade");
    for (name, value) in headers {
        if let Ok(v) = hyper::header::HeaderValue::from_str(value) {
            r.headers_mut()
                .append(hyper::header::HeaderName::from_static(name), v);
        }
    }
    r
}

/// The transport's `allowed_origins`, against the request's `Origin`.
fn check_origin(r: &UpgradeRequest<'_>, settings: &ListenerSettings) -> Result<(), Refused> {
    if let (Some(allowed), Some(origin)) = (&settings.allowed_origins, r.values("origin").next()) {
        let origin = origin.to_ascii_lowercase();
        let null_ok = settings.allow_null_origin && origin == "null";
        if !null_ok
            && !allowed
                .iter()
                .any(|p| origin_matches(&p.to_ascii_lowercase(), &origin))
        {
            debug!(origin = %origin, "WebSocket upgrade refused: origin not allowed");
            return Err(Refused {
                status: 403,
                text: format!(
                    "origin {origin} is not allowed to open this endpoint (the path's options.allowed_origins)"
                ),
            });
        }
    }
    Ok(())
}

/// Decide an MQTT over WebSocket upgrade (a web path of type `mqtt`):
/// the subprotocol `mqtt` (MQTT 3.1.1 and 5.0; `mqttv3.1` is taken too),
/// and the origin check. The 101 response.
pub(super) fn accept_mqtt(
    r: &UpgradeRequest<'_>,
    settings: &ListenerSettings,
) -> Result<hyper::Response<Body>, Refused> {
    let accept = check_upgrade(r)?;
    check_origin(r, settings)?;
    let mut headers = vec![("sec-websocket-accept", accept)];
    let offered: Vec<&str> = r.tokens("sec-websocket-protocol").collect();
    if !offered.is_empty() {
        let Some(p) = ["mqtt", "mqttv3.1"]
            .into_iter()
            .find(|p| offered.iter().any(|o| o.eq_ignore_ascii_case(p)))
        else {
            return Err(Refused::bad(format!(
                "this is an MQTT over WebSocket endpoint: offer the subprotocol \"mqtt\" (offered: {})",
                offered.join(", ")
            )));
        };
        headers.push(("sec-websocket-protocol", p.to_owned()));
    }
    Ok(switching(&headers))
}

/// Decide a WAMP upgrade request: the subprotocol (serializer), the origin
/// check, cookie tracking, permessage-deflate, and the HTTP details for
/// authenticators.
pub(super) fn accept_wamp(
    r: &UpgradeRequest<'_>,
    settings: &ListenerSettings,
) -> Result<Accepted, Refused> {
    let accept = check_upgrade(r)?;
    let offered: Vec<String> = r
        .tokens("sec-websocket-protocol")
        .map(str::to_owned)
        .collect();
    let mut extra: Vec<(&'static str, String)> = vec![("sec-websocket-accept", accept)];
    // Cookie tracking: the connection's cookie (a new one is set); it is a
    // credential, so authenticators get the Cookie header without it.
    let mut cookie = None;
    if let Some(store) = &settings.cookies {
        let presented = r.values("cookie").find_map(|v| store.presented(v));
        let (id, new) = store.track(presented);
        if new {
            extra.push(("set-cookie", store.set_cookie(&id)));
        }
        cookie = Some(id);
    }
    // For authenticators: the headers (names lowercased; repeated ones
    // joined with ", ") and the request URI. Their size is bounded by the
    // head's limits.
    let mut headers = proto::Dict::new();
    for (name, value) in r.headers {
        let mut value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == "cookie"
            && let Some(store) = &settings.cookies
        {
            value = store.without_ours(&value);
            if value.is_empty() {
                continue;
            }
        }
        match headers.get_mut(name.as_str()) {
            Some(proto::Value::Str(existing)) => {
                existing.push_str(", ");
                existing.push_str(&value);
            }
            _ => {
                headers.insert(name.as_str().to_owned(), proto::Value::Str(value));
            }
        }
    }
    check_origin(r, settings)?;
    let protocol = match negotiate(
        &offered,
        &settings.serializers,
        settings.require_subprotocol,
    ) {
        Ok(Some(p)) => {
            extra.push(("sec-websocket-protocol", p.0.to_owned()));
            p
        }
        Ok(None) => ("wamp.2.json", Serializer::Json, false),
        Err(text) => {
            debug!(offered = ?offered, "WebSocket upgrade refused: {text}");
            return Err(Refused::bad(text));
        }
    };
    let deflate = agree_deflate(r, settings);
    if let Some(a) = &deflate {
        extra.push(("sec-websocket-extensions", a.response.clone()));
    }
    let mut http = proto::Dict::new();
    http.insert("http_headers_received".into(), headers.into());
    http.insert("http_request_uri".into(), r.target.into());
    Ok(Accepted {
        headers: extra,
        protocol,
        http,
        cookie,
        deflate,
    })
}

/// `websocket.testee`'s upgrade: RFC 6455's checks and permessage-deflate.
pub(super) fn accept_echo(
    r: &UpgradeRequest<'_>,
    settings: &ListenerSettings,
) -> Result<(hyper::Response<Body>, Option<Agreed>), Refused> {
    let accept = check_upgrade(r)?;
    let deflate = agree_deflate(r, settings);
    let mut headers = vec![("sec-websocket-accept", accept)];
    if let Some(a) = &deflate {
        headers.push(("sec-websocket-extensions", a.response.clone()));
    }
    Ok((switching(&headers), deflate))
}

/// permessage-deflate, if the transport offers it and the request's offer
/// can be honoured.
fn agree_deflate(r: &UpgradeRequest<'_>, settings: &ListenerSettings) -> Option<Agreed> {
    let cfg = settings.compression.as_ref()?;
    let offers: Vec<&str> = r.values("sec-websocket-extensions").collect();
    super::deflate::negotiate(&offers, cfg)
}

/// The WAMP session of an upgraded connection: `early` is what the client
/// sent after its request, already read. Made here, synchronously, so that
/// the future (which lives as long as the session) holds the session and
/// nothing of the upgrade (`accepted` is dropped here, its response
/// headers with it).
pub(super) fn session<S: Io>(
    io: S,
    early: Bytes,
    mut accepted: Accepted,
    peer: Peer,
    settings: Arc<ListenerSettings>,
    realms: Realms,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    use futures::FutureExt;
    let protocol = accepted.protocol.0;
    debug!(protocol, "WebSocket connection open");
    let http = std::mem::take(&mut accepted.http);
    let cookie = accepted.cookie.take();
    let transport = WsTransport::new(io, early, accepted, &settings);
    let (peer_ip, desc, proxy) = behind_proxy(&peer, &http, &settings.trusted_proxies);
    let info = TransportInfo::new("websocket", protocol, desc).with(
        peer.cred,
        proxy,
        peer.client_cert.clone(),
    );
    let conn = session::Connection {
        peer_ip,
        transport: info,
        http,
        cookie: settings.cookies.clone().zip(cookie),
    };
    session::run(
        transport,
        super::listener::SessionOf(settings),
        realms,
        conn,
        shutdown,
    )
    .map(|()| info!("connection closed"))
}

/// The client's address, its description for the transport details, and
/// the proxy's (when a trusted proxy forwarded the connection).
fn behind_proxy(
    peer: &Peer,
    http: &proto::Dict,
    trusted: &trellis_config::net::Networks,
) -> (Option<std::net::IpAddr>, String, Option<String>) {
    let Some(ip) = peer.ip.filter(|_| !trusted.is_empty()) else {
        return (peer.ip, peer.desc.clone(), None);
    };
    let header = |name: &str| match http.get("http_headers_received") {
        Some(proto::Value::Dict(h)) => h.get(name).and_then(proto::Value::as_str),
        _ => None,
    };
    let client =
        super::forwarded::client_ip(ip, header("forwarded"), header("x-forwarded-for"), trusted);
    if client == ip {
        return (peer.ip, peer.desc.clone(), None);
    }
    let family = if client.is_ipv4() { "tcp4" } else { "tcp6" };
    (
        Some(client),
        format!("{family}:{client}"),
        Some(peer.desc.clone()),
    )
}

/// `websocket.testee`: echo every message back (no WAMP), for the
/// Autobahn|TestSuite, through the same codec and writer as the WAMP
/// transports. Limits are the transport's `max_message_size` and
/// `max_frame_size`; with `compression.deflate`, permessage-deflate is
/// negotiated as on the WAMP transports, and echoed messages are
/// compressed.
pub(super) async fn echo<S: Io>(
    io: S,
    early: Bytes,
    deflate: Option<Agreed>,
    settings: Arc<ListenerSettings>,
    shutdown: CancellationToken,
) {
    let mut conn = WsConn::new(io, early, &settings, deflate.as_ref());
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => {
                return conn.close(1001, "router shutting down", false).await;
            }
            m = conn.next_message() => m,
        };
        match msg {
            Ok((text, data)) => {
                conn.queue(text, data);
                if conn.flush().await.is_err() {
                    return;
                }
            }
            Err(TransportError::Closed) | Err(TransportError::Io(_)) => return,
            Err(e) => {
                let code = close_code_of(&e);
                return conn.close(code, &e.to_string(), false).await;
            }
        }
    }
}

/// The close code a read error owes the peer.
fn close_code_of(e: &TransportError) -> u16 {
    match e {
        TransportError::TooBig(_) | TransportError::PeerLimit(_) => 1009,
        TransportError::InvalidPayload(_) => 1007,
        TransportError::Protocol(_) => 1002,
        _ => 1001,
    }
}

/// Crossbar.io's WebSocket tunables that act on an open connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct WsTuning {
    /// Largest outgoing frame payload (0: a message is one frame).
    pub auto_fragment_size: u32,
    /// Payload bytes of the router's pings.
    pub ping_size: u8,
    /// How long the router waits for the peer's close frame.
    pub close_timeout_ms: u32,
    /// Drop the connection on a protocol violation instead of closing it.
    pub fail_by_drop: bool,
}

/// Frames collected before a write, at most (two I/O slices each, well
/// within the kernel's 1024 per `writev`).
const MAX_OUT_FRAMES: usize = 256;
/// Room for frames a connection keeps between writes: none (an idle
/// session holds no frame list; measured 230 B less per idle session,
/// for an allocation per write batch).
const OUT_FRAMES_KEPT: usize = 0;
/// Bytes one socket read takes when no large frame is awaited. They are
/// Read what `io` has onto the stack (at most [`READ_AHEAD`] bytes) and
/// append it to `rbuf`: a connection waiting for its next message holds
/// no read buffer. The stack buffer lives for this poll only, never across
/// an await.
pub(super) fn poll_read_stack<S: tokio::io::AsyncRead>(
    io: Pin<&mut S>,
    cx: &mut std::task::Context<'_>,
    rbuf: &mut BytesMut,
) -> Poll<std::io::Result<usize>> {
    let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); READ_AHEAD];
    let mut buf = ReadBuf::uninit(&mut stack);
    match io.poll_read(cx, &mut buf) {
        Poll::Ready(Ok(())) => {
            rbuf.extend_from_slice(buf.filled());
            Poll::Ready(Ok(buf.filled().len()))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// read onto the stack and copied to the connection's buffer, which an
/// idle connection does not hold at all.
const READ_AHEAD: usize = 16 * 1024;

/// One open WebSocket connection: the stream and the codec around it. The
/// codec decides; this moves bytes.
pub(super) struct WsConn<S> {
    io: S,
    /// Bytes read and not yet taken by the decoder (no allocation while
    /// empty).
    rbuf: BytesMut,
    decoder: Decoder,
    encoder: Encoder,
    /// Frames to write, and how many of their bytes are already on the
    /// wire: a write cut short (its future dropped, or the peer not
    /// reading) resumes there.
    out: Vec<OutFrame>,
    out_written: usize,
    out_bytes: usize,
    /// Collected bytes that trigger a write before the flush.
    write_buffer_size: usize,
    /// When bytes last arrived (keepalive).
    last_seen: std::time::Instant,
    tuning: WsTuning,
}

impl<S: Io> WsConn<S> {
    /// A connection whose first bytes (after the request head) are
    /// `early` (copied: the buffer they came in is not kept).
    fn new(
        io: S,
        early: Bytes,
        settings: &ListenerSettings,
        deflate: Option<&Agreed>,
    ) -> WsConn<S> {
        WsConn {
            io,
            rbuf: BytesMut::from(&early[..]),
            decoder: Decoder::new(settings.max_message_size, settings.max_frame_size, deflate),
            encoder: Encoder::new(deflate, settings.tuning.auto_fragment_size as usize),
            out: Vec::new(),
            out_written: 0,
            out_bytes: 0,
            write_buffer_size: settings.write_buffer_size,
            last_seen: std::time::Instant::now(),
            tuning: settings.tuning,
        }
    }

    /// Queue a message's frames.
    fn queue(&mut self, text: bool, data: Bytes) {
        self.out_bytes += self.encoder.message(text, data, &mut self.out);
    }

    fn queue_control(&mut self, frame: OutFrame) {
        self.out_bytes += frame.len();
        self.out.push(frame);
    }

    /// The next data message; pings are answered and the peer's close is
    /// answered on the way. Cancel-safe: what was read stays in `rbuf`,
    /// what was written is counted in `out_written`.
    async fn next_message(&mut self) -> Result<(bool, Bytes), TransportError> {
        loop {
            let event = match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(e)) => e,
                Ok(None) => {
                    self.read_more().await?;
                    continue;
                }
                Err(e) => return Err(codec_error(e)),
            };
            match event {
                Event::Message { text, data } => return Ok((text, data)),
                Event::Ping(payload) => {
                    self.queue_control(OutFrame::control(OP_PONG, payload));
                    self.flush().await?;
                }
                Event::Pong => {}
                Event::Close { code, .. } => {
                    // The closing handshake: the peer's code echoed, then
                    // the router ends the TCP connection.
                    if self.out_written == 0 {
                        self.queue_control(OutFrame::close(code, ""));
                        if self.flush().await.is_ok() {
                            let _ = tokio::io::AsyncWriteExt::shutdown(&mut self.io).await;
                        }
                    }
                    return Err(TransportError::Closed);
                }
            }
        }
    }

    /// Read what the connection has: onto the stack and then into `rbuf`,
    /// or, while a large frame is awaited, straight into room reserved for
    /// it.
    async fn read_more(&mut self) -> Result<(), TransportError> {
        let want = self.decoder.wanted(&self.rbuf);
        if self.rbuf.is_empty() {
            // Release the buffer: the connection may idle for days.
            self.rbuf = BytesMut::new();
        }
        let (io, rbuf) = (&mut self.io, &mut self.rbuf);
        let n = std::future::poll_fn(|cx| {
            if want > READ_AHEAD {
                rbuf.reserve(want);
                return tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, rbuf);
            }
            poll_read_stack(Pin::new(&mut *io), cx, rbuf)
        })
        .await
        .map_err(|e| TransportError::Io(e.to_string()))?;
        if n == 0 {
            return Err(TransportError::Closed);
        }
        self.last_seen = std::time::Instant::now();
        Ok(())
    }

    /// Write the collected frames, resuming after what is already written:
    /// many frames in one vectored write.
    async fn write_out(&mut self) -> Result<(), TransportError> {
        while self.out_written < self.out_bytes {
            let (out, io, done) = (&self.out, &mut self.io, self.out_written);
            let mut slices = Vec::with_capacity(out.len() * 2);
            let mut skip = done;
            for f in out {
                for part in [f.head(), &f.body[..]] {
                    if skip >= part.len() {
                        skip -= part.len();
                    } else {
                        slices.push(std::io::IoSlice::new(&part[skip..]));
                        skip = 0;
                    }
                }
            }
            let n = std::future::poll_fn(|cx| Pin::new(&mut *io).poll_write_vectored(cx, &slices))
                .await
                .map_err(|e| TransportError::Io(e.to_string()))?;
            if n == 0 {
                return Err(TransportError::Closed);
            }
            self.out_written += n;
        }
        self.out.clear();
        // A burst of up to MAX_OUT_FRAMES frames leaves no large list behind.
        self.out.shrink_to(OUT_FRAMES_KEPT);
        self.out_written = 0;
        self.out_bytes = 0;
        Ok(())
    }

    /// Write everything queued and flush the stream (TLS holds records
    /// until then).
    async fn flush(&mut self) -> Result<(), TransportError> {
        self.write_out().await?;
        tokio::io::AsyncWriteExt::flush(&mut self.io)
            .await
            .map_err(|e| TransportError::Io(e.to_string()))
    }

    /// The router closes: its close frame, then what the peer still sends
    /// is read until its close frame (so the TCP connection ends cleanly
    /// instead of with a reset), within `close_handshake_timeout`. With
    /// `drop_now`, or with a frame half written (the peer stopped
    /// reading: a close frame now would land inside it), the connection
    /// just ends.
    async fn close(&mut self, code: u16, reason: &str, drop_now: bool) {
        if self.out_written == 0 && !drop_now {
            let wait = Duration::from_millis(u64::from(self.tuning.close_timeout_ms.max(1)));
            let _ = tokio::time::timeout(wait, async {
                self.queue_control(OutFrame::close(Some(code), reason));
                if self.flush().await.is_err() {
                    return;
                }
                loop {
                    match self.decoder.decode(&mut self.rbuf) {
                        Ok(Some(Event::Close { .. })) => return,
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            if self.read_more().await.is_err() {
                                return;
                            }
                        }
                        Err(_) => break,
                    }
                }
                // The stream is not frames any more (a violation, a message
                // too big): read and drop what the peer still sends until
                // it closes, so that unread bytes do not turn the close
                // into a reset that loses the close frame.
                self.rbuf = BytesMut::new();
                let mut sink = [0u8; 4096];
                while let Ok(n) = self.io.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        }
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::io::AsyncWriteExt::shutdown(&mut self.io),
        )
        .await;
    }
}

/// A codec error as the session's transport error.
fn codec_error(e: CodecError) -> TransportError {
    match e {
        CodecError::Protocol(s) => TransportError::Protocol(s),
        CodecError::TooBig(s) => TransportError::TooBig(s),
        CodecError::InvalidPayload(s) => TransportError::InvalidPayload(s),
    }
}

/// One negotiated WAMP-over-WebSocket connection.
pub struct WsTransport<S> {
    conn: WsConn<S>,
    serializer: Serializer,
    batched: bool,
    /// Messages already split out of a batched frame.
    pending: VecDeque<Bytes>,
    max_message_size: usize,
}

/// The messages of one frame (or long-poll body): itself, or, batched,
/// each message followed by 0x18 (JSON) or preceded by its 4-byte length
/// (MessagePack).
pub(super) fn split_batch(
    serializer: Serializer,
    batched: bool,
    mut data: Bytes,
    pending: &mut VecDeque<Bytes>,
) -> Result<(), TransportError> {
    if !batched {
        pending.push_back(data);
        return Ok(());
    }
    if serializer == Serializer::Json {
        for part in data.split(|b| *b == JSON_BATCH_SEPARATOR) {
            if !part.is_empty() {
                pending.push_back(Bytes::copy_from_slice(part));
            }
        }
        return Ok(());
    }
    while data.has_remaining() {
        if data.len() < 4 {
            return Err(TransportError::Protocol(format!(
                "batch ends with {} stray byte(s) instead of a 4-byte length",
                data.len()
            )));
        }
        let len = data.get_u32() as usize;
        if len > data.len() {
            return Err(TransportError::Protocol(format!(
                "batch announces a {len}-byte message but only {} bytes follow",
                data.len()
            )));
        }
        pending.push_back(data.split_to(len));
    }
    Ok(())
}

impl<S: Io> WsTransport<S> {
    /// The transport of an accepted upgrade (for the benchmark's ceiling,
    /// which runs the same stack without the session).
    pub(super) fn new(
        io: S,
        early: Bytes,
        accepted: Accepted,
        settings: &ListenerSettings,
    ) -> WsTransport<S> {
        let (_, serializer, batched) = accepted.protocol;
        WsTransport {
            conn: WsConn::new(io, early, settings, accepted.deflate.as_ref()),
            serializer,
            batched,
            pending: VecDeque::new(),
            max_message_size: settings.max_message_size,
        }
    }
}

impl<S: Io> Transport for WsTransport<S> {
    fn out_limit(&self) -> usize {
        self.max_message_size
    }

    fn serializer(&self) -> Serializer {
        self.serializer
    }

    async fn ping(&mut self) -> Result<(), TransportError> {
        // auto_ping_size bytes; what they are does not matter (any
        // traffic counts as an answer).
        let payload: Vec<u8> = (0..self.conn.tuning.ping_size).collect();
        self.conn
            .queue_control(OutFrame::control(OP_PING, Bytes::from(payload)));
        self.conn.flush().await
    }

    fn last_seen(&self) -> std::time::Instant {
        self.conn.last_seen
    }

    async fn recv(&mut self) -> Result<Bytes, TransportError> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Ok(b);
            }
            let (text, data) = self.conn.next_message().await?;
            if text == self.serializer.is_binary() {
                let (got, uses) = if text {
                    ("text", "binary")
                } else {
                    ("binary", "text")
                };
                return Err(TransportError::Protocol(format!(
                    "{got} frame received, but the negotiated serializer ({}) uses {uses} frames",
                    self.serializer.name()
                )));
            }
            if !self.batched {
                // One message per frame: no queue (which an idle session
                // would keep).
                return Ok(data);
            }
            split_batch(self.serializer, self.batched, data, &mut self.pending)?;
        }
    }

    type Later = std::convert::Infallible;

    fn queue(&mut self, msg: &Arc<OutMsg>) -> Result<Queued<Self::Later>, TransportError> {
        let Some(enc) = msg.encoded(self.serializer) else {
            // Logged where encoding failed; nothing sensible to send.
            return Ok(Queued::Yes);
        };
        let body = if self.batched {
            let raw = enc.as_bytes();
            let mut buf = BytesMut::with_capacity(raw.len() + 4);
            if self.serializer == Serializer::Json {
                buf.put_slice(raw);
                buf.put_u8(JSON_BATCH_SEPARATOR);
            } else {
                buf.put_u32(raw.len() as u32);
                buf.put_slice(raw);
            }
            buf.freeze()
        } else {
            enc.bytes()
        };
        self.conn.queue(!self.serializer.is_binary(), body);
        let full = self.conn.out.len() >= MAX_OUT_FRAMES
            || self.conn.out_bytes >= self.conn.write_buffer_size;
        Ok(if full { Queued::Full } else { Queued::Yes })
    }

    async fn finish(&mut self, later: Self::Later) -> Result<(), TransportError> {
        match later {}
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        self.conn.flush().await
    }

    async fn close(&mut self, kind: CloseKind, reason: &str) {
        let code = match kind {
            CloseKind::Normal => 1000,
            CloseKind::ProtocolError => 1002,
            CloseKind::TooBig => 1009,
            CloseKind::InvalidPayload => 1007,
            CloseKind::GoingAway => 1001,
        };
        let violation = matches!(
            kind,
            CloseKind::ProtocolError | CloseKind::TooBig | CloseKind::InvalidPayload
        );
        // `fail_by_drop`: a violator gets no closing handshake.
        let drop_now = violation && self.conn.tuning.fail_by_drop;
        self.conn.close(code, reason, drop_now).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn client_preference_wins_among_offered() {
        let all = Serializer::ALL.to_vec();
        let p = negotiate(&s(&["wamp.2.cbor", "wamp.2.json"]), &all, true)
            .unwrap()
            .unwrap();
        assert_eq!(p.0, "wamp.2.cbor");
        let p = negotiate(&s(&["foo", "wamp.2.msgpack.batched"]), &all, true)
            .unwrap()
            .unwrap();
        assert_eq!((p.1, p.2), (Serializer::MsgPack, true));
    }

    #[test]
    fn refusals_say_what_would_work() {
        let json_only = vec![Serializer::Json];
        let e = negotiate(&s(&["wamp.2.msgpack"]), &json_only, true).unwrap_err();
        assert!(
            e.contains("wamp.2.json") && !e.contains("wamp.2.cbor"),
            "{e}"
        );
        let e = negotiate(&[], &json_only, true).unwrap_err();
        assert!(e.contains("requires a WebSocket subprotocol"), "{e}");
        assert_eq!(negotiate(&[], &json_only, false).unwrap(), None);
    }
}

#[cfg(test)]
mod handshake_tests {
    use super::*;

    fn settings(extra: &str) -> ListenerSettings {
        let cfg: trellis_config::router::TransportConfig = serde_json::from_str(&format!(
            r#"{{"type":"websocket","endpoint":{{"type":"tcp","port":0}}{extra}}}"#
        ))
        .unwrap();
        ListenerSettings::from_config(0, &cfg, None, Default::default())
    }

    const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    fn request(lines: &str) -> Vec<u8> {
        format!("GET /ws?x=1 HTTP/1.1\r\nHost: a\r\n{lines}\r\n").into_bytes()
    }

    /// A raw request head as hyper hands it on.
    fn parsed(head: &[u8]) -> hyper::Request<()> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(head).unwrap();
        let mut b = hyper::Request::builder()
            .method(req.method.unwrap())
            .uri(req.path.unwrap())
            .version(if req.version == Some(1) {
                hyper::Version::HTTP_11
            } else {
                hyper::Version::HTTP_10
            });
        for h in req.headers.iter() {
            b = b.header(h.name, h.value);
        }
        b.body(()).unwrap()
    }

    fn accept(head: &[u8], s: &ListenerSettings) -> Result<Accepted, Refused> {
        accept_wamp(&UpgradeRequest::of(&parsed(head)), s)
    }

    /// The response's status and headers as text.
    fn head_of(r: &hyper::Response<Body>) -> String {
        let mut out = format!("{}\r\n", r.status().as_u16());
        for (k, v) in r.headers() {
            out.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap()));
        }
        out
    }

    fn ok(lines: &str) -> String {
        format!(
            "Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n{KEY}{lines}"
        )
    }

    #[test]
    fn an_upgrade_is_answered_with_the_accept_key_and_the_agreement() {
        let s = settings(r#","options":{"compression":{"deflate":{}}}"#);
        let a = accept(
            &request(&ok(
                "Sec-WebSocket-Protocol: wamp.2.cbor, wamp.2.json\r\nSec-WebSocket-Extensions: permessage-deflate\r\nX-Two: a\r\nX-Two: b\r\n",
            )),
            &s,
        )
        .unwrap();
        let r = head_of(&a.response());
        assert!(r.starts_with("101\r\n"), "{r}");
        assert!(
            r.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
            "{r}"
        );
        assert!(r.contains("sec-websocket-protocol: wamp.2.cbor\r\n"), "{r}");
        assert!(
            r.contains("sec-websocket-extensions: permessage-deflate\r\n"),
            "{r}"
        );
        assert_eq!(a.protocol.1, Serializer::Cbor);
        assert!(a.deflate.is_some());
        assert_eq!(
            a.http
                .get("http_request_uri")
                .and_then(proto::Value::as_str),
            Some("/ws?x=1")
        );
        let Some(proto::Value::Dict(h)) = a.http.get("http_headers_received") else {
            panic!("no headers");
        };
        assert_eq!(h.get("x-two").and_then(proto::Value::as_str), Some("a, b"));
        // No subprotocol offered, none required: JSON, and none named in
        // the response.
        let lax = settings(r#","options":{"require_websocket_subprotocol":false}"#);
        let a = accept(&request(&ok("")), &lax).unwrap();
        assert_eq!(a.protocol.0, "wamp.2.json");
        assert!(!head_of(&a.response()).contains("sec-websocket-protocol"));
    }

    #[test]
    fn refusals_name_what_is_missing() {
        let s = settings("");
        let refused = |head: Vec<u8>| accept(&head, &s).err().unwrap();
        let r = refused(b"POST /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n".to_vec());
        assert!(r.text.contains("GET"), "{r:?}");
        let r = refused(request(&format!(
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n{KEY}"
        )));
        assert!(r.text.contains("Connection: Upgrade"), "{r:?}");
        let r = refused(request(&format!(
            "Upgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 8\r\n{KEY}"
        )));
        assert_eq!(r.status, 426, "{r:?}");
        let r = refused(request(
            "Upgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\n",
        ));
        assert!(r.text.contains("Sec-WebSocket-Key"), "{r:?}");
        let r = refused(request(&ok("Sec-WebSocket-Protocol: mqtt\r\n")));
        assert_eq!(r.status, 400);
        assert!(r.text.contains("wamp.2.json"), "{r:?}");
        let s = settings(r#","options":{"allowed_origins":["https://*.example.com"]}"#);
        let r = accept(&request(&ok("Origin: https://evil.org\r\n")), &s)
            .err()
            .unwrap();
        assert_eq!(r.status, 403, "{r:?}");
        let fine = ok("Origin: https://app.example.com\r\nSec-WebSocket-Protocol: wamp.2.json\r\n");
        assert!(accept(&request(&fine), &s).is_ok());
    }
}

#[cfg(test)]
mod origin_tests {
    use super::origin_matches;

    #[test]
    fn origin_patterns() {
        assert!(origin_matches("*", "https://a.example.com"));
        assert!(origin_matches(
            "https://*.example.com",
            "https://app.example.com"
        ));
        assert!(!origin_matches(
            "https://*.example.com",
            "https://example.com.evil.org"
        ));
        assert!(!origin_matches(
            "https://*.example.com",
            "http://app.example.com"
        ));
        assert!(origin_matches(
            "http://127.0.0.1:8000",
            "http://127.0.0.1:8000"
        ));
        assert!(!origin_matches(
            "http://127.0.0.1:8000",
            "http://127.0.0.1:8001"
        ));
        assert!(origin_matches(
            "https://*.example.*",
            "https://a.example.org"
        ));
    }
}

#[cfg(test)]
mod size_probe {
    /// Idle memory per session depends on these sizes; the benchmark's idle
    /// scenario measures the whole, this keeps the state machines in check.
    #[test]
    fn session_state_stays_small() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let _c = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (s, _) = l.accept().await.unwrap();
            let cfg: trellis_config::router::TransportConfig =
                serde_json::from_str(r#"{"type":"websocket","endpoint":{"type":"tcp","port":0}}"#)
                    .unwrap();
            let settings = std::sync::Arc::new(super::ListenerSettings::from_config(
                0,
                &cfg,
                None,
                Default::default(),
            ));
            let realms: crate::realms::Realms = Default::default();
            let t = super::WsTransport {
                conn: super::WsConn::new(s, bytes::Bytes::new(), &settings, None),
                serializer: proto::Serializer::Json,
                batched: false,
                pending: Default::default(),
                max_message_size: 1,
            };
            let run = crate::session::run(
                t,
                &settings.session,
                &realms,
                crate::session::Connection {
                    peer_ip: None,
                    transport: crate::realm::TransportInfo::new(
                        "websocket",
                        "wamp.2.json",
                        addr.to_string(),
                    ),
                    http: proto::Dict::new(),
                    cookie: None,
                },
                tokio_util::sync::CancellationToken::new(),
            );
            // The one box an established WebSocket session keeps (the
            // established phase inside; the upgrade's state is not).
            // (About 1750 bytes before the session's write, `outbound`,
            // kept its arguments once and its rare ends boxed; about 1450
            // before a write that completes at once kept no future, 1264
            // after: one allocator size class down, 1280 bytes; 1208 once
            // `inbound` kept its arguments once; 968 once the established
            // phase kept no state of a step that did not wait, and one
            // reference to the joined session: 1024 bytes, a class down;
            // 944 once `stats`' identity of the session went into its
            // meter; 896, a class down again, once the realm's handle was
            // one pointer and the traffic counts 32 bits.)
            let size = std::mem::size_of_val(&run);
            assert!(size <= 896, "session::run future grew to {size} bytes");
            // The connection's task holds this one for the connection's
            // whole life: every transport kind's future is boxed behind it.
            let (s2, _) = {
                let _c2 = tokio::net::TcpStream::connect(addr).await.unwrap();
                l.accept().await.unwrap()
            };
            let task = super::super::handle(
                s2,
                super::super::Peer::tcp(addr),
                settings.clone(),
                realms.clone(),
                tokio_util::sync::CancellationToken::new(),
            );
            // (Since the connection's future is made synchronously and
            // boxed, the task holds a pointer to it.)
            let size = std::mem::size_of_val(&task);
            assert!(
                size <= 16,
                "the connection task's future grew to {size} bytes"
            );
            // The HTTP phase and each kind of session are boxed: the
            // future the task holds for the connection's life is small
            // (an inline `websocket.testee` echo once made every WAMP
            // connection's 4 KB larger).
            let (s4, _) = {
                let _c4 = tokio::net::TcpStream::connect(addr).await.unwrap();
                l.accept().await.unwrap()
            };
            let web = super::super::http::serve_connection(
                s4,
                super::super::Peer::tcp(addr),
                settings.clone(),
                realms.clone(),
                tokio_util::sync::CancellationToken::new(),
            );
            let size = std::mem::size_of_val(&web);
            assert!(size < 512, "a web connection's future grew to {size} bytes");
        });
    }
}

#[cfg(test)]
mod frames {
    use super::*;
    use futures::StreamExt;
    use proto::{Message, Payload, Value};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::Message as WsMessage;
    use tokio_tungstenite::tungstenite::protocol::Role;

    fn event(size: usize) -> Message {
        Message::Event(proto::message::Event {
            subscription: 1,
            publication: size as u64 + 1,
            details: proto::Dict::new(),
            payload: Payload::args(vec![Value::Bytes(vec![7u8; size])]),
        })
    }

    fn settings() -> ListenerSettings {
        let cfg: trellis_config::router::TransportConfig =
            serde_json::from_str(r#"{"type":"websocket","endpoint":{"type":"tcp","port":0}}"#)
                .unwrap();
        let mut s = ListenerSettings::from_config(0, &cfg, None, Default::default());
        s.write_buffer_size = 4096;
        s
    }

    /// Frames written by the router arrive whole and in order at a
    /// tungstenite client, through a pipe far smaller than the messages, so
    /// every write is cut short and resumed; the client's pings are
    /// answered and its close is echoed.
    #[test]
    fn frames_reach_a_client_through_partial_writes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (server, client) = tokio::io::duplex(1000);
            let mut t = WsTransport {
                conn: WsConn::new(server, Bytes::new(), &settings(), None),
                serializer: Serializer::MsgPack,
                batched: false,
                pending: VecDeque::new(),
                max_message_size: 1 << 20,
            };
            let sizes = [0usize, 100, 130, 5000, 70_000, 3];
            let reader = tokio::spawn(async move {
                let mut c = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
                let mut got = Vec::new();
                while got.len() < 6 {
                    match c.next().await {
                        Some(Ok(WsMessage::Binary(b))) => {
                            got.push(Serializer::MsgPack.decode(&b).unwrap())
                        }
                        other => panic!("unexpected {other:?}"),
                    }
                }
                use futures::SinkExt;
                c.send(WsMessage::Ping(Bytes::from_static(b"are you there")))
                    .await
                    .unwrap();
                c.send(WsMessage::Binary(Bytes::from_static(b"\x93\x06\xa0\x80")))
                    .await
                    .unwrap();
                let pong = c.next().await;
                c.close(None).await.unwrap();
                let after = c.next().await;
                (got, pong, after)
            });
            for size in sizes {
                t.feed(&OutMsg::new(event(size))).await.unwrap();
            }
            t.flush().await.unwrap();
            assert!(t.conn.out.is_empty() && t.conn.out_written == 0 && t.conn.out_bytes == 0);
            // The client's message after its ping (the pong went out).
            let b = t.recv().await.unwrap();
            assert_eq!(&b[..], b"\x93\x06\xa0\x80");
            assert!(matches!(t.recv().await, Err(TransportError::Closed)));
            let (got, pong, after) = reader.await.unwrap();
            let want: Vec<Message> = sizes.iter().map(|&s| event(s)).collect();
            assert_eq!(got, want);
            assert!(
                matches!(pong, Some(Ok(WsMessage::Pong(ref p))) if &p[..] == b"are you there"),
                "{pong:?}"
            );
            // The close handshake completed: the client saw the echo.
            assert!(
                matches!(after, None | Some(Ok(WsMessage::Close(_)))),
                "{after:?}"
            );
        });
    }
}

//! WAMP over WebSocket: the listener, subprotocol negotiation, framing.
//!
//! Subprotocols: `wamp.2.json`, `wamp.2.msgpack`, `wamp.2.cbor`, and the
//! batched variants `wamp.2.json.batched` (each message followed by 0x18)
//! and `wamp.2.msgpack.batched` (each message preceded by its 4-byte
//! big-endian length). The client's order of preference decides among the
//! ones this transport offers; a client offering none gets HTTP 400 with a
//! body that lists what it could have asked for.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use proto::Serializer;
use tokio::io::AsyncReadExt;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::{Io, ListenerSettings, Peer};
use crate::outbound::{Encoded, OutMsg};
use crate::realm::TransportInfo;
use crate::realms::Realms;
use crate::session;
use crate::session::transport::{CloseKind, Transport, TransportError};

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

/// Serve one connection as WAMP over WebSocket. Not an `async fn` (its
/// arguments would be stored twice in a future that lives as long as the
/// session), and the opening handshake is boxed and freed: what stays for
/// the connection's life is the session and a few pointers.
#[allow(clippy::manual_async_fn)]
pub(super) fn handle_connection<S: Io>(
    stream: S,
    deflate: Option<super::deflate::Agreed>,
    peer: Peer,
    settings: Arc<ListenerSettings>,
    realms: Realms,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send {
    async move {
        let upgraded = Box::pin(upgrade(stream, deflate, peer, &settings, &shutdown)).await;
        let Some((transport, conn)) = upgraded else {
            return;
        };
        session::run(transport, &settings.session, &realms, conn, shutdown).await;
        info!("connection closed");
    }
}

/// The WebSocket opening handshake: subprotocol (serializer), origin check,
/// the HTTP details for authenticators. `None` if the connection is refused
/// or lost.
async fn upgrade<S: Io>(
    stream: S,
    deflate: Option<super::deflate::Agreed>,
    peer: Peer,
    settings: &ListenerSettings,
    shutdown: &CancellationToken,
) -> Option<(WsTransport<S>, session::Connection)> {
    let mut chosen: Option<(&'static str, Serializer, bool)> = None;
    let mut http = proto::Dict::new();
    let mut cookie: Option<String> = None;
    // The error type is tungstenite's Callback signature, not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        let offered: Vec<String> = req
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        // For authenticators: the headers (names lowercased; repeated ones
        // joined with ", ") and the request URI. Their size is bounded by
        // the handshake's limits.
        let mut headers = proto::Dict::new();
        // Cookie tracking: the connection's cookie (a new one is set); it
        // is a credential, so authenticators get the Cookie header
        // without it.
        if let Some(store) = &settings.cookies {
            let presented = req
                .headers()
                .get_all("cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|v| store.presented(v));
            let (id, new) = store.track(presented);
            if new && let Ok(v) = HeaderValue::from_str(&store.set_cookie(&id)) {
                resp.headers_mut().append("set-cookie", v);
            }
            cookie = Some(id);
        }
        for (name, value) in req.headers() {
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
        if let (Some(allowed), Some(origin)) =
            (&settings.allowed_origins, req.headers().get("origin"))
        {
            let origin = String::from_utf8_lossy(origin.as_bytes()).to_ascii_lowercase();
            let null_ok = settings.allow_null_origin && origin == "null";
            if !null_ok
                && !allowed
                    .iter()
                    .any(|p| origin_matches(&p.to_ascii_lowercase(), &origin))
            {
                debug!(origin = %origin, "WebSocket upgrade refused: origin not allowed");
                let mut r = ErrorResponse::new(Some(format!(
                    "origin {origin} is not allowed to open this WAMP endpoint (the transport's options.allowed_origins)"
                )));
                *r.status_mut() = StatusCode::FORBIDDEN;
                return Err(r);
            }
        }
        if let Some(a) = &deflate
            && let Ok(v) = HeaderValue::from_str(&a.response)
        {
            resp.headers_mut().insert("sec-websocket-extensions", v);
        }
        http.insert("http_headers_received".into(), headers.into());
        http.insert("http_request_uri".into(), req.uri().to_string().into());
        match negotiate(
            &offered,
            &settings.serializers,
            settings.require_subprotocol,
        ) {
            Ok(Some(p)) => {
                resp.headers_mut()
                    .insert("sec-websocket-protocol", HeaderValue::from_static(p.0));
                chosen = Some(p);
                Ok(resp)
            }
            Ok(None) => {
                chosen = Some(("wamp.2.json", Serializer::Json, false));
                Ok(resp)
            }
            Err(text) => {
                debug!(offered = ?offered, "WebSocket upgrade refused: {text}");
                let mut r = ErrorResponse::new(Some(text));
                *r.status_mut() = StatusCode::BAD_REQUEST;
                Err(r)
            }
        }
    };
    // Boxed, like every phase that ends: the task's future is as large as
    // its largest state, and it lives as long as the connection.
    let accept = Box::pin(tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        callback,
        Some(settings.ws_config),
    ));
    let ws = tokio::select! {
        _ = shutdown.cancelled() => return None,
        r = tokio::time::timeout(settings.handshake_timeout, accept) => match r {
            Err(_) => {
                debug!(timeout_ms = settings.handshake_timeout.as_millis() as u64, "WebSocket opening handshake timed out");
                return None;
            }
            Ok(Err(e)) => {
                debug!(cause = %e, "WebSocket opening handshake failed");
                return None;
            }
            Ok(Ok(ws)) => ws,
        },
    };
    let (protocol, serializer, batched) = chosen?;
    debug!(protocol, "WebSocket connection open");
    let transport = WsTransport {
        last_seen: std::time::Instant::now(),
        ws,
        out: Vec::new(),
        out_written: 0,
        out_bytes: 0,
        write_buffer_size: settings.write_buffer_size,
        serializer,
        batched,
        pending: VecDeque::new(),
        max_message_size: settings.max_message_size,
        tuning: settings.tuning,
        deflate: deflate
            .as_ref()
            .map(|a| Box::new(super::deflate::Deflater::new(a))),
    };
    let (peer_ip, desc, proxy) = behind_proxy(&peer, &http, &settings.trusted_proxies);
    let mut info = TransportInfo::new("websocket", protocol, desc);
    info.cred = peer.cred;
    info.proxy = proxy;
    info.client_cert = peer.client_cert.clone();
    let conn = session::Connection {
        peer_ip,
        transport: info,
        http,
        cookie: settings.cookies.clone().zip(cookie),
    };
    Some((transport, conn))
}

/// The client's address, its description for the transport details, and
/// the proxy's (when a trusted proxy forwarded the connection).
fn behind_proxy(
    peer: &Peer,
    http: &proto::Dict,
    trusted: &super::forwarded::TrustedProxies,
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
/// Autobahn|TestSuite. Limits are the transport's `max_message_size` and
/// `max_frame_size`; tungstenite answers pings and checks the protocol.
/// With `compression.deflate`, permessage-deflate is negotiated as on the
/// WAMP transports (the same inflater in the read path), and echoed
/// messages are compressed.
pub(super) async fn echo<S: Io>(
    stream: S,
    agreed: Option<super::deflate::Agreed>,
    settings: Arc<ListenerSettings>,
    shutdown: CancellationToken,
) {
    #[allow(clippy::result_large_err)]
    let callback = |_: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        if let Some(a) = &agreed
            && let Ok(v) = HeaderValue::from_str(&a.response)
        {
            resp.headers_mut().insert("sec-websocket-extensions", v);
        }
        Ok(resp)
    };
    let accept =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(settings.ws_config));
    let mut ws = match tokio::time::timeout(settings.handshake_timeout, accept).await {
        Ok(Ok(ws)) => ws,
        _ => return,
    };
    let mut deflater = agreed.as_ref().map(super::deflate::Deflater::new);
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = ws.close(None).await;
                return;
            }
            m = ws.next() => m,
        };
        match msg {
            Some(Ok(m @ (WsMessage::Text(_) | WsMessage::Binary(_)))) => {
                let sent = match &mut deflater {
                    Some(d) => echo_compressed(&mut ws, d, m).await,
                    None => ws.send(m).await.is_ok(),
                };
                if !sent {
                    return;
                }
            }
            Some(Ok(WsMessage::Close(_))) | None => {
                // tungstenite has queued the close reply; flush it out.
                let _ = ws.flush().await;
                return;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) => {
                let _ = ws.flush().await;
                return;
            }
        }
    }
}

/// Echo one message compressed (RSV1), written as the WAMP transports
/// write their frames: tungstenite's own frames flushed first, then the
/// frame straight to the stream.
async fn echo_compressed<S: Io>(
    ws: &mut WebSocketStream<S>,
    d: &mut super::deflate::Deflater,
    m: WsMessage,
) -> bool {
    use tokio::io::AsyncWriteExt;
    let (opcode, data) = match m {
        WsMessage::Text(t) => (1, Bytes::from(t)),
        WsMessage::Binary(b) => (2, b),
        _ => return true,
    };
    let frame = match d.compress(&data) {
        Some(c) => OutFrame::with_first_byte(0x80 | 0x40 | opcode, Bytes::from(c)),
        None => OutFrame::with_first_byte(0x80 | opcode, data),
    };
    if ws.flush().await.is_err() {
        return false;
    }
    let inner = ws.get_mut();
    inner
        .write_all(&frame.head[..usize::from(frame.head_len)])
        .await
        .is_ok()
        && inner.write_all(&frame.body).await.is_ok()
        && inner.flush().await.is_ok()
}

/// One negotiated WebSocket connection.
pub struct WsTransport<S> {
    ws: WebSocketStream<S>,
    /// Data frames the router writes itself (see [`OutFrame`]), and how
    /// many of their bytes are already on the wire: a write cut short (a
    /// session killed while its peer does not read) resumes there.
    out: Vec<OutFrame>,
    out_written: usize,
    out_bytes: usize,
    /// Collected bytes that trigger a write before the flush.
    write_buffer_size: usize,
    /// When a frame last arrived (keepalive).
    last_seen: std::time::Instant,
    serializer: Serializer,
    batched: bool,
    /// Messages already split out of a batched frame.
    pending: VecDeque<Bytes>,
    max_message_size: usize,
    tuning: WsTuning,
    /// permessage-deflate's compressor, when negotiated.
    deflate: Option<Box<super::deflate::Deflater>>,
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
/// Room for frames a session keeps between writes.
const OUT_FRAMES_KEPT: usize = 8;

/// A WebSocket data frame written by the router itself rather than by
/// tungstenite: server frames are not masked, so a frame is a header and
/// the encoded message, which is shared by every subscriber of an event and
/// goes to the socket with a vectored write instead of being copied into a
/// per-connection buffer first.
struct OutFrame {
    head: [u8; 10],
    head_len: u8,
    body: Bytes,
}

impl OutFrame {
    /// A final (unfragmented) frame: `opcode` 1 is text, 2 binary.
    #[cfg(test)]
    fn new(opcode: u8, body: Bytes) -> OutFrame {
        OutFrame::with_first_byte(0x80 | opcode, body)
    }

    /// A frame whose first byte (FIN, RSV1, opcode) is given.
    fn with_first_byte(first: u8, body: Bytes) -> OutFrame {
        let mut head = [0u8; 10];
        head[0] = first;
        let len = body.len();
        let head_len = if len < 126 {
            head[1] = len as u8;
            2
        } else if let Ok(short) = u16::try_from(len) {
            head[1] = 126;
            head[2..4].copy_from_slice(&short.to_be_bytes());
            4
        } else {
            head[1] = 127;
            head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            10
        };
        OutFrame {
            head,
            head_len,
            body,
        }
    }

    fn len(&self) -> usize {
        usize::from(self.head_len) + self.body.len()
    }
}

impl<S: Io> WsTransport<S> {
    /// Write the collected frames, resuming after what is already written.
    /// tungstenite's own frames (pongs) are flushed first: its buffer only
    /// ever holds whole frames, and it writes nothing while this runs.
    async fn write_out(&mut self) -> Result<(), TransportError> {
        if self.out.is_empty() {
            return Ok(());
        }
        if self.out_written == 0 {
            self.ws
                .flush()
                .await
                .map_err(|e| map_ws_error(e, self.max_message_size))?;
        }
        while self.out_written < self.out_bytes {
            let (out, ws, done) = (&self.out, &mut self.ws, self.out_written);
            let mut slices = Vec::with_capacity(out.len() * 2);
            let mut skip = done;
            for f in out {
                for part in [&f.head[..usize::from(f.head_len)], &f.body[..]] {
                    if skip >= part.len() {
                        skip -= part.len();
                    } else {
                        slices.push(std::io::IoSlice::new(&part[skip..]));
                        skip = 0;
                    }
                }
            }
            let n = std::future::poll_fn(|cx| {
                std::pin::Pin::new(ws.get_mut()).poll_write_vectored(cx, &slices)
            })
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

    fn unbatch(&mut self, data: Bytes) -> Result<(), TransportError> {
        split_batch(self.serializer, self.batched, data, &mut self.pending)
    }
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

fn map_ws_error(e: tungstenite::Error, max: usize) -> TransportError {
    use tungstenite::Error as E;
    use tungstenite::error::CapacityError as C;
    match e {
        E::ConnectionClosed | E::AlreadyClosed => TransportError::Closed,
        // A peer that drops TCP without a close frame has simply gone.
        E::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake) => {
            TransportError::Closed
        }
        E::Capacity(C::MessageTooLong { size, max_size }) => TransportError::TooBig(format!(
            "message of {size} bytes exceeds this transport's max_message_size of {max_size} bytes"
        )),
        E::Capacity(c) => TransportError::TooBig(format!("{c} (max_message_size is {max} bytes)")),
        E::Protocol(p) => TransportError::Protocol(format!("WebSocket protocol error: {p}")),
        E::Utf8(u) => TransportError::InvalidPayload(format!("text frame is not valid UTF-8: {u}")),
        E::Io(io) => {
            let inner = io.get_ref();
            if let Some(too_big) =
                inner.and_then(|e| e.downcast_ref::<super::frame_guard::FrameTooBig>())
            {
                TransportError::TooBig(too_big.to_string())
            } else if let Some(e) =
                inner.and_then(|e| e.downcast_ref::<super::deflate::InflateError>())
            {
                match e {
                    super::deflate::InflateError::TooBig { .. } => {
                        TransportError::TooBig(e.to_string())
                    }
                    super::deflate::InflateError::Corrupt(_) => {
                        TransportError::Protocol(e.to_string())
                    }
                }
            } else {
                TransportError::Io(io.to_string())
            }
        }
        other => TransportError::Io(other.to_string()),
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
        let payload: Vec<u8> = (0..self.tuning.ping_size).collect();
        self.ws
            .send(WsMessage::Ping(Bytes::from(payload)))
            .await
            .map_err(|e| map_ws_error(e, self.max_message_size))
    }

    fn last_seen(&self) -> std::time::Instant {
        self.last_seen
    }

    async fn recv(&mut self) -> Result<Bytes, TransportError> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Ok(b);
            }
            let msg = match self.ws.next().await {
                None => return Err(TransportError::Closed),
                Some(Err(e)) => return Err(map_ws_error(e, self.max_message_size)),
                Some(Ok(m)) => m,
            };
            self.last_seen = std::time::Instant::now();
            match msg {
                WsMessage::Text(t) => {
                    if self.serializer.is_binary() {
                        return Err(TransportError::Protocol(format!(
                            "text frame received, but the negotiated serializer ({}) uses binary frames",
                            self.serializer.name()
                        )));
                    }
                    self.unbatch(Bytes::from(t))?;
                }
                WsMessage::Binary(b) => {
                    if !self.serializer.is_binary() {
                        return Err(TransportError::Protocol(format!(
                            "binary frame received, but the negotiated serializer ({}) uses text frames",
                            self.serializer.name()
                        )));
                    }
                    self.unbatch(b)?;
                }
                WsMessage::Close(_) => return Err(TransportError::Closed),
                // tungstenite answers pings itself.
                WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_) => {}
            }
        }
    }

    async fn feed(&mut self, msg: &Arc<OutMsg>) -> Result<(), TransportError> {
        let Some(enc) = msg.encoded(self.serializer) else {
            // Logged where encoding failed; nothing sensible to send.
            return Ok(());
        };
        let opcode = if self.serializer.is_binary() { 2 } else { 1 };
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
            match enc {
                Encoded::Text(t) => Bytes::from(t.clone()),
                Encoded::Binary(b) => b.clone(),
            }
        };
        // permessage-deflate: RSV1 marks a compressed message.
        let (body, rsv1) = match &mut self.deflate {
            Some(d) if body.len() >= super::deflate::MIN_COMPRESSED => match d.compress(&body) {
                Some(c) => (Bytes::from(c), 0x40),
                None => (body, 0),
            },
            _ => (body, 0),
        };
        let piece = self.tuning.auto_fragment_size as usize;
        if piece > 0 && body.len() > piece {
            // auto_fragment_size: the first frame has the opcode (and
            // RSV1), continuations opcode 0, the last one FIN.
            let mut at = 0;
            while at < body.len() {
                let end = (at + piece).min(body.len());
                let fin = if end == body.len() { 0x80 } else { 0 };
                let first = if at == 0 { rsv1 | opcode } else { 0 };
                let frame = OutFrame::with_first_byte(fin | first, body.slice(at..end));
                self.out_bytes += frame.len();
                self.out.push(frame);
                at = end;
            }
        } else {
            let frame = OutFrame::with_first_byte(0x80 | rsv1 | opcode, body);
            self.out_bytes += frame.len();
            self.out.push(frame);
        }
        if self.out.len() >= MAX_OUT_FRAMES || self.out_bytes >= self.write_buffer_size {
            self.write_out().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        self.write_out().await?;
        self.ws
            .flush()
            .await
            .map_err(|e| map_ws_error(e, self.max_message_size))
    }

    async fn close(&mut self, kind: CloseKind, reason: &str) {
        let code = match kind {
            CloseKind::Normal => CloseCode::Normal,
            CloseKind::ProtocolError => CloseCode::Protocol,
            CloseKind::TooBig => CloseCode::Size,
            CloseKind::InvalidPayload => CloseCode::Invalid,
            CloseKind::GoingAway => CloseCode::Away,
        };
        // Close reasons are limited to 123 bytes by the WebSocket spec.
        let mut end = reason.len().min(120);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let frame = CloseFrame {
            code,
            reason: reason[..end].into(),
        };
        let violation = matches!(
            kind,
            CloseKind::ProtocolError | CloseKind::TooBig | CloseKind::InvalidPayload
        );
        if self.out_written > 0 || (violation && self.tuning.fail_by_drop) {
            // A data frame is half written (the peer stopped reading): a
            // close frame now would land inside it. Or `fail_by_drop`: a
            // violator gets no closing handshake. Just end the connection.
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::io::AsyncWriteExt::shutdown(self.ws.get_mut()),
            )
            .await;
            return;
        }
        let wait = Duration::from_millis(u64::from(self.tuning.close_timeout_ms.max(1)));
        let _ = tokio::time::timeout(wait, async {
            let _ = self.ws.close(Some(frame)).await;
            // Drain until the peer's close arrives, so the TCP connection
            // ends cleanly instead of with a reset.
            loop {
                match self.ws.next().await {
                    Some(Ok(WsMessage::Close(_))) => return,
                    Some(Ok(_)) => {}
                    _ => break,
                }
            }
            // tungstenite stops reading after a failure (a violation, a
            // message too big): read and drop what the peer still sends
            // until it closes, so that unread bytes do not turn the close
            // into a reset that loses the close frame.
            let mut sink = [0u8; 4096];
            while let Ok(n) = self.ws.get_mut().read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
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
            let cfg: crate::config::TransportConfig =
                serde_json::from_str(r#"{"type":"websocket","endpoint":{"type":"tcp","port":0}}"#)
                    .unwrap();
            let settings = std::sync::Arc::new(super::ListenerSettings::from_config(
                0,
                &cfg,
                None,
                Default::default(),
            ));
            let realms: crate::realms::Realms = Default::default();
            let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                s,
                tokio_tungstenite::tungstenite::protocol::Role::Server,
                None,
            )
            .await;
            let t = super::WsTransport {
                last_seen: std::time::Instant::now(),
                ws,
                out: Vec::new(),
                out_written: 0,
                out_bytes: 0,
                write_buffer_size: 0,
                serializer: proto::Serializer::Json,
                batched: false,
                pending: Default::default(),
                max_message_size: 1,
                tuning: Default::default(),
                deflate: None,
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
            let size = std::mem::size_of_val(&run);
            eprintln!("RUN {size}");
            assert!(size < 14000, "session::run future grew to {size} bytes");
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
            let size = std::mem::size_of_val(&task);
            assert!(
                size < 512,
                "the connection task's future grew to {size} bytes"
            );
        });
    }
}

#[cfg(test)]
mod frames {
    use super::*;
    use proto::{Message, Payload, Value};
    use tokio_tungstenite::tungstenite::protocol::Role;

    fn event(size: usize) -> Message {
        Message::Event(proto::message::Event {
            subscription: 1,
            publication: size as u64 + 1,
            details: proto::Dict::new(),
            payload: Payload::args(vec![Value::Bytes(vec![7u8; size])]),
        })
    }

    #[test]
    fn headers_for_every_length_class() {
        for (len, head) in [
            (0usize, vec![0x82, 0]),
            (125, vec![0x82, 125]),
            (126, vec![0x82, 126, 0, 126]),
            (65535, vec![0x82, 126, 0xFF, 0xFF]),
            (65536, vec![0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let f = OutFrame::new(2, Bytes::from(vec![0u8; len]));
            assert_eq!(
                &f.head[..usize::from(f.head_len)],
                &head[..],
                "length {len}"
            );
            assert_eq!(f.len(), head.len() + len);
        }
    }

    /// Frames written by the router itself arrive whole and in order at a
    /// tungstenite client, through a pipe far smaller than the messages, so
    /// every write is cut short and resumed.
    #[test]
    fn direct_frames_reach_a_client_through_partial_writes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (server, client) = tokio::io::duplex(1000);
            let ws = WebSocketStream::from_raw_socket(server, Role::Server, None).await;
            let mut t = WsTransport {
                ws,
                out: Vec::new(),
                out_written: 0,
                out_bytes: 0,
                write_buffer_size: 4096,
                last_seen: std::time::Instant::now(),
                serializer: Serializer::MsgPack,
                batched: false,
                pending: VecDeque::new(),
                max_message_size: 1 << 20,
                tuning: Default::default(),
                deflate: None,
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
                got
            });
            for size in sizes {
                t.feed(&OutMsg::new(event(size))).await.unwrap();
            }
            t.flush().await.unwrap();
            let got = reader.await.unwrap();
            let want: Vec<Message> = sizes.iter().map(|&s| event(s)).collect();
            assert_eq!(got, want);
            assert!(t.out.is_empty() && t.out_written == 0 && t.out_bytes == 0);
        });
    }
}

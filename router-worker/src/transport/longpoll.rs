//! WAMP over HTTP long-poll (the WAMP Advanced Profile's transport, and
//! Crossbar.io's `longpoll` web service): the fallback autobahn-js speaks
//! where WebSocket is blocked.
//!
//! `POST <path>/open` with `{"protocols": [...]}` creates a transport and
//! answers `{"transport": id, "protocol": p}`; then `POST
//! <path>/<id>/send` carries the client's messages (204), `POST
//! <path>/<id>/receive` waits up to `request_timeout` for the router's
//! (200 with one message, or all pending ones in the batched protocols;
//! 204 when none came), and `POST <path>/<id>/close` ends it (204).
//!
//! Each transport runs an ordinary session ([`crate::session::run`]) over
//! a [`LongPollTransport`]. Everything is bounded: the router's messages
//! waiting for a poll (`queue_limit_messages`, `queue_limit_bytes`: a
//! client that stops polling is closed, costing no one else), the client's
//! messages waiting for the session, the transports per path
//! (`max_connections`), and a transport nobody polls for
//! `session_timeout` is closed.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::Serializer;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::bridge::{Answer, Head, deny};
use super::http::Body;
use super::websocket::JSON_BATCH_SEPARATOR;
use super::{ListenerSettings, Peer};
use crate::outbound::OutMsg;
use crate::realm::TransportInfo;
use crate::realms::Realms;
use crate::session::{
    self, transport::CloseKind, transport::Queued, transport::Transport, transport::TransportError,
};
use trellis_config::router::LongPollOptions;

/// Client messages (or batches) waiting for the session, per transport.
const INBOUND_QUEUE: usize = 64;
/// Largest `open` request body.
const MAX_OPEN_BODY: u64 = 64 * 1024;

/// The protocols, in the router's order of preference among equals (the
/// client's order decides).
const PROTOCOLS: [(&str, Serializer, bool); 4] = [
    ("wamp.2.json", Serializer::Json, false),
    ("wamp.2.msgpack", Serializer::MsgPack, false),
    ("wamp.2.json.batched", Serializer::Json, true),
    ("wamp.2.msgpack.batched", Serializer::MsgPack, true),
];

/// One `longpoll` path: its settings and open transports.
pub struct LongPoll {
    settings: Arc<ListenerSettings>,
    options: LongPollOptions,
    transports: Mutex<HashMap<String, Arc<Shared>>>,
}

impl std::fmt::Debug for LongPoll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LongPoll")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The router's messages for one transport, waiting for a poll.
#[derive(Default)]
struct Out {
    queue: VecDeque<Bytes>,
    bytes: usize,
}

/// What the HTTP requests and the session of one transport share.
struct Shared {
    serializer: Serializer,
    batched: bool,
    inbound: mpsc::Sender<Bytes>,
    out: Mutex<Out>,
    ready: Notify,
    /// When a request last came for this transport.
    seen: Mutex<Instant>,
    /// The session ended (or the client closed): no more sends.
    closed: CancellationToken,
}

impl Shared {
    fn touch(&self) {
        if let Ok(mut t) = self.seen.lock() {
            *t = Instant::now();
        }
    }

    fn idle_for(&self) -> Duration {
        self.seen.lock().map(|t| t.elapsed()).unwrap_or_default()
    }

    /// Take what one poll returns: one message, or every pending one in
    /// the batched protocols.
    fn take(&self) -> Option<Vec<u8>> {
        let mut out = self.out.lock().ok()?;
        if out.queue.is_empty() {
            return None;
        }
        let n = if self.batched { out.queue.len() } else { 1 };
        let mut body = Vec::new();
        for msg in out.queue.drain(..n) {
            if self.batched {
                if self.serializer == Serializer::Json {
                    body.extend_from_slice(&msg);
                    body.push(JSON_BATCH_SEPARATOR);
                } else {
                    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
                    body.extend_from_slice(&msg);
                }
            } else {
                body.extend_from_slice(&msg);
            }
        }
        out.bytes = out.queue.iter().map(Bytes::len).sum();
        Some(body)
    }
}

impl LongPoll {
    pub fn new(settings: ListenerSettings, options: LongPollOptions) -> LongPoll {
        LongPoll {
            settings: Arc::new(settings),
            options,
            transports: Mutex::default(),
        }
    }

    fn get(&self, id: &str) -> Option<Arc<Shared>> {
        self.transports.lock().ok()?.get(id).cloned()
    }

    fn remove(&self, id: &str) {
        if let Ok(mut t) = self.transports.lock() {
            t.remove(id);
        }
    }

    fn request_timeout(&self) -> Option<Duration> {
        (self.options.request_timeout > 0)
            .then(|| Duration::from_secs(self.options.request_timeout))
    }
}

/// Serve one request under a longpoll path; `rest` is the path after the
/// service's own segments (`open`, `<id>/send`, ...).
pub(super) async fn handle(
    req: hyper::Request<hyper::body::Incoming>,
    rest: &str,
    conn: &super::http::Conn,
    lp: &Arc<LongPoll>,
) -> hyper::Response<Body> {
    let (parts, body) = req.into_parts();
    let h = Head::of(&parts);
    let origin = h.origin.clone();
    let parts_of_path: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    if h.method == "OPTIONS" {
        return reply(204, "", None, &origin, true);
    }
    if h.method != "POST" {
        let a = deny(
            405,
            format!(
                "HTTP method {} not allowed on a long-poll path: use POST",
                h.method
            ),
        );
        let mut r = reply_json(&a, &origin);
        super::http::set(&mut r, "connection", "close");
        return r;
    }
    let limit = match parts_of_path.as_slice() {
        ["open"] => MAX_OPEN_BODY,
        [_, "send"] => lp.settings.max_message_size as u64,
        _ => 0,
    };
    let body = match super::http::read_body(&parts, body, limit, false, "max_message_size").await {
        Ok(b) => b,
        Err(e) => {
            let mut r = reply_json(&deny(e.0, e.1), &origin);
            super::http::set(&mut r, "connection", "close");
            return r;
        }
    };
    let shutdown = &conn.shutdown;
    let answer = match parts_of_path.as_slice() {
        ["open"] => match start(&body, &h, &conn.peer, lp, &conn.realms, shutdown) {
            Ok(answer) => Outcome::Opened(answer),
            Err(a) => Outcome::Failed(a),
        },
        [id, "send"] => send(id, body, lp).await,
        [id, "receive"] => {
            let Some(t) = lp.get(id) else {
                return reply_json(&not_found_answer(), &origin);
            };
            t.touch();
            let body = receive(&t, lp, shutdown).await;
            t.touch();
            if body.is_none() && t.closed.is_cancelled() {
                // The session ended and everything it sent was taken.
                lp.remove(id);
                return reply_json(&not_found_answer(), &origin);
            }
            let ct = match t.serializer {
                Serializer::Json => "application/json; charset=utf-8",
                _ => "application/x-msgpack",
            };
            return match body {
                Some(b) => reply(200, ct, Some(b), &origin, false),
                None => reply(204, "", None, &origin, false),
            };
        }
        [id, "close"] => {
            // Also for a transport already gone (its session ended with
            // GOODBYE before the client's close came): nothing to close.
            if let Some(t) = lp.get(id) {
                t.closed.cancel();
                t.ready.notify_waiters();
                lp.remove(id);
            }
            Outcome::Done
        }
        _ => Outcome::Failed(not_found_answer()),
    };
    match answer {
        Outcome::Done => reply(204, "", None, &origin, false),
        Outcome::Failed(a) => reply_json(&a, &origin),
        Outcome::Opened(text) => reply(
            200,
            "application/json; charset=utf-8",
            Some(text.into_bytes()),
            &origin,
            false,
        ),
    }
}

/// How a request is answered.
enum Outcome {
    /// 204.
    Done,
    /// `open`'s answer (200, JSON).
    Opened(String),
    /// An error, as JSON.
    Failed(Answer),
}

fn not_found_answer() -> Answer {
    deny(
        404,
        "no such long-poll transport (closed, timed out, or never opened): open a new one",
    )
}

/// `open`: pick the protocol, start the transport and its session; the
/// answer's JSON.
fn start(
    body: &[u8],
    h: &Head,
    peer: &Peer,
    lp: &Arc<LongPoll>,
    realms: &Realms,
    shutdown: &CancellationToken,
) -> Result<String, Answer> {
    let json: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| deny(400, format!("the open request's body is not JSON: {e}")))?;
    let offered: Vec<&str> = json
        .get("protocols")
        .and_then(|p| p.as_array())
        .ok_or_else(|| {
            deny(
                400,
                "the open request needs {\"protocols\": [\"wamp.2.json\", ...]}",
            )
        })?
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    let allowed = &lp.settings.serializers;
    let Some(&(protocol, serializer, batched)) = offered.iter().find_map(|o| {
        PROTOCOLS
            .iter()
            .find(|(name, ser, _)| name == o && allowed.contains(ser))
    }) else {
        let ours: Vec<&str> = PROTOCOLS
            .iter()
            .filter(|(_, s, _)| allowed.contains(s))
            .map(|(n, ..)| *n)
            .collect();
        return Err(deny(
            400,
            format!(
                "no common protocol: offered {offered:?}, this path speaks {}",
                ours.join(", ")
            ),
        ));
    };
    let id = new_id();
    let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
    let shared = Arc::new(Shared {
        serializer,
        batched,
        inbound: tx,
        out: Mutex::default(),
        ready: Notify::new(),
        seen: Mutex::new(Instant::now()),
        closed: CancellationToken::new(),
    });
    {
        let mut all = lp
            .transports
            .lock()
            .map_err(|_| deny(500, "the long-poll registry failed"))?;
        if all.len() >= lp.settings.max_connections {
            return Err(deny(
                503,
                "too many long-poll transports on this path (options.max_connections): try again later",
            ));
        }
        all.insert(id.clone(), shared.clone());
    }
    // For authenticators, as over WebSocket: the open request's headers.
    let mut headers = proto::Dict::new();
    for (name, value) in &h.headers {
        match headers.get_mut(name.as_str()) {
            Some(proto::Value::Str(existing)) => {
                existing.push_str(", ");
                existing.push_str(value);
            }
            _ => {
                headers.insert(name.clone(), proto::Value::Str(value.clone()));
            }
        }
    }
    let mut http = proto::Dict::new();
    http.insert("http_headers_received".into(), headers.into());
    http.insert("http_request_uri".into(), h.target.clone().into());
    let conn = session::Connection {
        peer_ip: peer.ip,
        transport: TransportInfo::new("longpoll", protocol, peer.desc.clone()).with(
            None,
            None,
            peer.client_cert.clone(),
        ),
        http,
        cookie: None,
    };
    let transport = LongPollTransport {
        shared: shared.clone(),
        inbound: rx,
        pending: VecDeque::new(),
        limit_messages: lp.options.queue_limit_messages,
        limit_bytes: lp.options.queue_limit_bytes,
        max_message_size: lp.settings.max_message_size,
        cut_off: false,
    };
    let (lp2, realms, shutdown, key) = (lp.clone(), realms.clone(), shutdown.clone(), id.clone());
    let session_timeout = Duration::from_secs(lp.options.session_timeout);
    tokio::spawn(async move {
        let settings = lp2.settings.clone();
        let watch = shared.clone();
        let idle = async {
            // A transport nobody polls or sends on is closed.
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if !session_timeout.is_zero() && watch.idle_for() > session_timeout {
                    info!(
                        timeout_s = session_timeout.as_secs(),
                        "long-poll transport not polled within session_timeout: closed"
                    );
                    watch.closed.cancel();
                    return;
                }
            }
        };
        tokio::select! {
            _ = session::run(transport, &settings.session, &realms, conn, shutdown) => {}
            _ = idle => {}
        }
        shared.closed.cancel();
        shared.ready.notify_waiters();
        // Pending messages stay for a last poll while the session timeout
        // runs; then the transport is gone.
        if !shared
            .out
            .lock()
            .map(|o| o.queue.is_empty())
            .unwrap_or(true)
        {
            tokio::time::sleep(session_timeout.min(Duration::from_secs(30))).await;
        }
        lp2.remove(&key);
    });
    debug!(protocol, "long-poll transport opened");
    Ok(serde_json::json!({"transport": id, "protocol": protocol}).to_string())
}

/// A random transport id: 16 characters of [A-Za-z0-9] (95 bits).
fn new_id() -> String {
    use rand::RngExt;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..16)
        .map(|_| char::from(CHARS[rng.random_range(0..CHARS.len())]))
        .collect()
}

/// `send`: hand the body to the session (waiting at most the request
/// timeout for room).
async fn send(id: &str, body: Bytes, lp: &LongPoll) -> Outcome {
    let Some(t) = lp.get(id).filter(|t| !t.closed.is_cancelled()) else {
        return Outcome::Failed(not_found_answer());
    };
    t.touch();
    let wait = lp.request_timeout().unwrap_or(Duration::from_secs(10));
    match tokio::time::timeout(wait, t.inbound.send(body)).await {
        Ok(Ok(())) => Outcome::Done,
        Ok(Err(_)) => Outcome::Failed(not_found_answer()),
        Err(_) => Outcome::Failed(deny(
            503,
            "the session is not taking messages fast enough: try again",
        )),
    }
}

/// `receive`: what is pending, or wait for it (up to the request timeout,
/// or until the transport closes).
async fn receive(t: &Shared, lp: &LongPoll, shutdown: &CancellationToken) -> Option<Vec<u8>> {
    let deadline = lp
        .request_timeout()
        .map(|d| tokio::time::Instant::now() + d);
    loop {
        let notified = t.ready.notified();
        if let Some(body) = t.take() {
            return Some(body);
        }
        if t.closed.is_cancelled() {
            return None;
        }
        let wait = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = notified => {}
            _ = t.closed.cancelled() => {}
            _ = shutdown.cancelled() => return t.take(),
            _ = wait => return None,
        }
    }
}

fn reply_json(a: &Answer, origin: &Option<String>) -> hyper::Response<Body> {
    reply(
        a.0,
        "application/json; charset=utf-8",
        Some(a.1.to_string().into_bytes()),
        origin,
        false,
    )
}

/// A response with the headers Crossbar.io's long-poll service sends
/// (no caching; the request's origin allowed, with credentials, as
/// autobahn-js's requests carry them).
fn reply(
    code: u16,
    content_type: &str,
    body: Option<Vec<u8>>,
    origin: &Option<String>,
    preflight: bool,
) -> hyper::Response<Body> {
    let mut r = super::http::response(code, content_type, body.unwrap_or_default());
    super::http::uncached_cors(&mut r, origin, preflight.then_some("POST,OPTIONS"));
    r
}

/// One long-poll transport as the session sees it.
pub struct LongPollTransport {
    shared: Arc<Shared>,
    inbound: mpsc::Receiver<Bytes>,
    /// Messages already split out of a batch.
    pending: VecDeque<Bytes>,
    limit_messages: usize,
    limit_bytes: usize,
    max_message_size: usize,
    /// Over the queue limits: only the session's ABORT goes out now.
    cut_off: bool,
}

impl LongPollTransport {
    fn unbatch(&mut self, data: Bytes) -> Result<(), TransportError> {
        super::websocket::split_batch(
            self.shared.serializer,
            self.shared.batched,
            data,
            &mut self.pending,
        )
    }
}

impl Transport for LongPollTransport {
    fn out_limit(&self) -> usize {
        self.max_message_size
    }

    fn serializer(&self) -> Serializer {
        self.shared.serializer
    }

    async fn recv(&mut self) -> Result<Bytes, TransportError> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                if b.len() > self.max_message_size {
                    return Err(TransportError::TooBig(format!(
                        "message of {} bytes exceeds this transport's max_message_size of {} bytes",
                        b.len(),
                        self.max_message_size
                    )));
                }
                return Ok(b);
            }
            let data = tokio::select! {
                m = self.inbound.recv() => match m {
                    Some(d) => d,
                    None => return Err(TransportError::Closed),
                },
                _ = self.shared.closed.cancelled() => return Err(TransportError::Closed),
            };
            self.unbatch(data)?;
        }
    }

    type Later = std::convert::Infallible;

    fn queue(&mut self, msg: &Arc<OutMsg>) -> Result<Queued<Self::Later>, TransportError> {
        let Some(enc) = msg.encoded(self.shared.serializer) else {
            return Ok(Queued::Yes);
        };
        let bytes = Bytes::copy_from_slice(enc.as_bytes());
        let Ok(mut out) = self.shared.out.lock() else {
            return Err(TransportError::Closed);
        };
        let over_messages = self.limit_messages > 0 && out.queue.len() >= self.limit_messages;
        let over_bytes = self.limit_bytes > 0 && out.bytes + bytes.len() > self.limit_bytes;
        if self.cut_off {
            // The session's last word (its ABORT, saying why) goes out
            // whatever the limits.
        } else if over_messages || over_bytes {
            // Cut off: what waits is dropped, so that the client's next
            // poll brings the ABORT that says why.
            let text = format!(
                "the client is not polling: {} messages ({} bytes) waited for it, over the transport's options.queue_limit_messages {} or queue_limit_bytes {}; the session is closed",
                out.queue.len(),
                out.bytes,
                self.limit_messages,
                self.limit_bytes
            );
            out.queue.clear();
            out.bytes = 0;
            self.cut_off = true;
            return Err(TransportError::Slow(text));
        }
        out.bytes += bytes.len();
        out.queue.push_back(bytes);
        Ok(Queued::Yes)
    }

    async fn finish(&mut self, later: Self::Later) -> Result<(), TransportError> {
        match later {}
    }

    async fn flush(&mut self) -> Result<(), TransportError> {
        self.shared.ready.notify_waiters();
        Ok(())
    }

    async fn close(&mut self, _kind: CloseKind, _reason: &str) {
        self.shared.closed.cancel();
        self.shared.ready.notify_waiters();
    }

    async fn ping(&mut self) -> Result<(), TransportError> {
        // Polls keep the transport alive; there is nothing to ping.
        Ok(())
    }

    fn last_seen(&self) -> Instant {
        self.shared
            .seen
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|_| Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(serializer: Serializer, batched: bool) -> Shared {
        Shared {
            serializer,
            batched,
            inbound: mpsc::channel(1).0,
            out: Mutex::default(),
            ready: Notify::new(),
            seen: Mutex::new(Instant::now()),
            closed: CancellationToken::new(),
        }
    }

    fn push(s: &Shared, m: &[u8]) {
        let mut o = s.out.lock().unwrap();
        o.bytes += m.len();
        o.queue.push_back(Bytes::copy_from_slice(m));
    }

    #[test]
    fn a_poll_takes_one_message_or_a_batch() {
        let s = shared(Serializer::Json, false);
        push(&s, b"[1]");
        push(&s, b"[2]");
        assert_eq!(s.take().unwrap(), b"[1]");
        assert_eq!(s.take().unwrap(), b"[2]");
        assert!(s.take().is_none());
        let s = shared(Serializer::Json, true);
        push(&s, b"[1]");
        push(&s, b"[2]");
        assert_eq!(s.take().unwrap(), b"[1]\x18[2]\x18");
        assert_eq!(s.out.lock().unwrap().bytes, 0);
        let s = shared(Serializer::MsgPack, true);
        push(&s, b"ab");
        assert_eq!(s.take().unwrap(), b"\0\0\0\x02ab");
    }

    #[test]
    fn ids_are_random_and_long() {
        let a = new_id();
        let b = new_id();
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}

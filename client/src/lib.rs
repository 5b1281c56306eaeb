//! # client: Trellis's async WAMP client and component runner
//!
//! An async WAMP client over RawSocket (Unix socket or TCP) and WebSocket,
//! on [`proto`]'s messages and codecs; [`component`] keeps a component
//! joined across router restarts.
//!
//! Trellis's own processes use it: workers on their control link to the
//! controller, `trellis status`/`stop`, container and router components.
//! It is deliberately small: caller, callee, publisher and subscriber over
//! RawSocket (Unix or TCP), WebSocket, or an in-memory [`Link`]; anonymous,
//! ticket, WAMP-CRA (salted or not) or cryptosign authentication.
//! Interop tests use autobahn, never this client.
//!
//! One driver task owns the connection. [`Client`] handles send commands to
//! it over a bounded channel; answers come back on oneshot channels.
//! Invocation handlers run as their own tasks, at most
//! [`MAX_CONCURRENT_INVOCATIONS`] at a time; more are refused with
//! `trellis.error.busy`.

pub mod component;

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio_util::codec::Framed;

use proto::message::{
    Call, Goodbye, Hello, Id, Message, Payload, Publish, Register, Subscribe, WampError, Yield,
};
use proto::rawsocket::{self, Frame, RawSocketCodec};
use proto::{Dict, Serializer, Value, dict};

/// Invocation handlers running at once, per client.
pub const MAX_CONCURRENT_INVOCATIONS: usize = 64;

/// How the client joins.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The realm to join.
    pub realm: String,
    /// The authid to announce.
    pub authid: Option<String>,
    /// A ticket: when set, the client offers `ticket` authentication.
    pub ticket: Option<String>,
    /// A WAMP-CRA secret (the password, or a derived key when the router
    /// sends no salt): when set, the client offers `wampcra`.
    pub wampcra: Option<String>,
    /// An Ed25519 seed: when set, the client offers `cryptosign` with its
    /// public key.
    pub cryptosign: Option<[u8; 32]>,
    /// The serializer to negotiate.
    pub serializer: Serializer,
    /// Deadline for the RawSocket handshake and the WAMP opening.
    pub open_timeout: Duration,
}

impl ClientConfig {
    /// Anonymous, JSON, 10 s opening deadline.
    pub fn new(realm: &str) -> ClientConfig {
        ClientConfig {
            realm: realm.to_owned(),
            authid: None,
            ticket: None,
            wampcra: None,
            cryptosign: None,
            serializer: Serializer::Json,
            open_timeout: Duration::from_secs(10),
        }
    }
}

/// A WAMP error answer, or a local failure expressed the same way.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{uri}{}", describe_args(.payload))]
pub struct CallError {
    /// The error URI (`wamp.error.no_such_procedure`, an application URI,
    /// or `trellis.error.connection_lost` when the session ended).
    pub uri: String,
    /// The error's args and kwargs.
    pub payload: Payload,
}

fn describe_args(p: &Payload) -> String {
    match p.args.first() {
        Some(Value::Str(s)) => format!(": {s}"),
        Some(v) => format!(": {v:?}"),
        None => String::new(),
    }
}

impl CallError {
    /// An error with one message argument.
    pub fn new(uri: &str, message: impl Into<String>) -> CallError {
        CallError {
            uri: uri.to_owned(),
            payload: Payload::args(vec![Value::Str(message.into())]),
        }
    }

    /// The error of a request whose session ended before its answer.
    pub fn lost(reason: &str) -> CallError {
        CallError::new(
            LOST,
            format!("the WAMP session ended before the answer came ({reason})"),
        )
    }
}

/// The URI of errors for requests the session ended under.
pub const LOST: &str = "trellis.error.connection_lost";

/// Why a client could not connect.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The socket could not be reached.
    #[error("cannot connect: {0}")]
    Io(#[from] std::io::Error),
    /// The peer is not a RawSocket WAMP router or refused the handshake.
    #[error("RawSocket handshake failed: {0}")]
    Handshake(String),
    /// The router answered HELLO with ABORT.
    #[error("the router refused the session: {reason}{}", .message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Aborted {
        /// ABORT's reason URI.
        reason: String,
        /// ABORT's details.message, if any.
        message: Option<String>,
    },
    /// Anything else in the opening went wrong.
    #[error("{0}")]
    Protocol(String),
    /// The opening took longer than `open_timeout`.
    #[error("the router did not answer within {0:?}")]
    Timeout(Duration),
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Procedure = Arc<dyn Fn(Payload, Dict) -> BoxFuture<Result<Payload, CallError>> + Send + Sync>;
type EventHandler = Arc<dyn Fn(Payload, Dict) + Send + Sync>;

enum Pending {
    Call(oneshot::Sender<Result<Payload, CallError>>),
    Register(oneshot::Sender<Result<Id, CallError>>, Procedure),
    Subscribe(oneshot::Sender<Result<Id, CallError>>, EventHandler),
    Publish(oneshot::Sender<Result<Id, CallError>>),
}

enum Command {
    Request(Message, Pending),
    Send(Message),
    Leave(oneshot::Sender<()>),
}

/// A joined WAMP session. Cheap to clone; all clones share the session.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::Sender<Command>,
    next_id: Arc<AtomicU64>,
    session: Id,
    welcome: Arc<Dict>,
    closed: watch::Receiver<Option<String>>,
}

/// A byte stream the client runs on.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// What carries a joined session's messages: RawSocket over a stream, or
/// (in the router) an in-memory link to a realm, without serialization.
pub trait Link: Send + 'static {
    /// Send one message.
    fn send(&mut self, msg: Message) -> impl Future<Output = Result<(), String>> + Send;
    /// The next message; `None` when the link is closed. Cancel-safe.
    fn recv(&mut self) -> impl Future<Output = Option<Result<Message, String>>> + Send;
    /// Close the link (best effort).
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// A WebSocket connection.
struct WsLink<S> {
    ws: tokio_tungstenite::WebSocketStream<S>,
    serializer: Serializer,
}

impl<S: Io> Link for WsLink<S> {
    async fn send(&mut self, msg: Message) -> Result<(), String> {
        use tokio_tungstenite::tungstenite::Message as Ws;
        let bytes = self
            .serializer
            .encode_to_vec(&msg)
            .map_err(|e| format!("cannot encode {}: {e}", msg.name()))?;
        let frame = if self.serializer.is_binary() {
            Ws::Binary(bytes.into())
        } else {
            Ws::Text(
                String::from_utf8(bytes)
                    .map_err(|e| format!("JSON encoding is not UTF-8: {e}"))?
                    .into(),
            )
        };
        self.ws
            .send(frame)
            .await
            .map_err(|e| format!("connection failed: {e}"))
    }

    async fn recv(&mut self) -> Option<Result<Message, String>> {
        use tokio_tungstenite::tungstenite::Message as Ws;
        loop {
            let data = match self.ws.next().await? {
                Err(e) => return Some(Err(format!("connection failed: {e}"))),
                Ok(Ws::Text(t)) => t.as_bytes().to_vec(),
                Ok(Ws::Binary(b)) => b.to_vec(),
                Ok(Ws::Close(_)) => return None,
                Ok(_) => continue,
            };
            return Some(
                self.serializer
                    .decode(&data)
                    .map_err(|e| format!("the router sent an undecodable message: {e}")),
            );
        }
    }

    async fn close(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
    }
}

/// A joined RawSocket connection.
struct RawLink<S> {
    framed: Framed<S, RawSocketCodec>,
    serializer: Serializer,
    peer_max: usize,
}

impl<S: Io> Link for RawLink<S> {
    async fn send(&mut self, msg: Message) -> Result<(), String> {
        let bytes = self
            .serializer
            .encode_to_vec(&msg)
            .map_err(|e| format!("cannot encode {}: {e}", msg.name()))?;
        if bytes.len() > self.peer_max {
            return Err(format!(
                "{} of {} bytes is larger than the router accepts",
                msg.name(),
                bytes.len()
            ));
        }
        self.framed
            .send(Frame::Message(bytes.into()))
            .await
            .map_err(|e| format!("connection failed: {e}"))
    }

    async fn recv(&mut self) -> Option<Result<Message, String>> {
        loop {
            match self.framed.next().await? {
                Err(e) => return Some(Err(format!("connection failed: {e}"))),
                Ok(Frame::Ping(b)) => {
                    if self.framed.send(Frame::Pong(b)).await.is_err() {
                        return None;
                    }
                }
                Ok(Frame::Pong(_)) => {}
                Ok(Frame::Message(b)) => {
                    return Some(
                        self.serializer
                            .decode(&b)
                            .map_err(|e| format!("the router sent an undecodable message: {e}")),
                    );
                }
            }
        }
    }

    async fn close(&mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.framed.close()).await;
    }
}

impl Client {
    /// Connect over a Unix socket and join.
    ///
    /// # Errors
    /// [`ConnectError`] saying which step failed.
    pub async fn connect_unix(path: &Path, cfg: &ClientConfig) -> Result<Client, ConnectError> {
        let stream = tokio::net::UnixStream::connect(path).await?;
        Client::open(stream, cfg).await
    }

    /// Connect over TCP (`host:port`) and join.
    ///
    /// # Errors
    /// [`ConnectError`] saying which step failed.
    pub async fn connect_tcp(addr: &str, cfg: &ClientConfig) -> Result<Client, ConnectError> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        Client::open(stream, cfg).await
    }

    /// Connect over WebSocket (`ws://host:port/path`) and join.
    ///
    /// # Errors
    /// [`ConnectError`] saying which step failed.
    pub async fn connect_ws(url: &str, cfg: &ClientConfig) -> Result<Client, ConnectError> {
        let open = async {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut req = url
                .into_client_request()
                .map_err(|e| ConnectError::Handshake(format!("bad WebSocket URL {url:?}: {e}")))?;
            let protocol = match cfg.serializer {
                Serializer::Json => "wamp.2.json",
                Serializer::MsgPack => "wamp.2.msgpack",
                Serializer::Cbor => "wamp.2.cbor",
            };
            req.headers_mut().insert(
                "sec-websocket-protocol",
                tokio_tungstenite::tungstenite::http::HeaderValue::from_static(protocol),
            );
            let (ws, _) = tokio_tungstenite::connect_async(req)
                .await
                .map_err(|e| ConnectError::Handshake(format!("WebSocket: {e}")))?;
            join(
                WsLink {
                    ws,
                    serializer: cfg.serializer,
                },
                cfg,
            )
            .await
        };
        match tokio::time::timeout(cfg.open_timeout, open).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout(cfg.open_timeout)),
        }
    }

    /// Run the RawSocket handshake and the WAMP opening on `stream`.
    ///
    /// # Errors
    /// [`ConnectError`] saying which step failed.
    pub async fn open<S: Io>(stream: S, cfg: &ClientConfig) -> Result<Client, ConnectError> {
        match tokio::time::timeout(cfg.open_timeout, open(stream, cfg)).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError::Timeout(cfg.open_timeout)),
        }
    }

    /// A client on an already joined session carried by `link`.
    pub fn from_link<L: Link>(link: L, session: Id, welcome: Dict) -> Client {
        start(link, session, welcome)
    }

    /// The session id the router gave.
    pub fn session_id(&self) -> Id {
        self.session
    }

    /// WELCOME.Details (authid, authrole, roles, ...).
    pub fn welcome(&self) -> &Dict {
        &self.welcome
    }

    fn id(&self) -> Id {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    async fn request<T>(
        &self,
        msg: Message,
        pending: Pending,
        rx: oneshot::Receiver<Result<T, CallError>>,
    ) -> Result<T, CallError> {
        if self
            .commands
            .send(Command::Request(msg, pending))
            .await
            .is_err()
        {
            return Err(CallError::lost(&self.close_reason()));
        }
        rx.await
            .unwrap_or_else(|_| Err(CallError::lost(&self.close_reason())))
    }

    /// Call a procedure.
    ///
    /// # Errors
    /// The callee's or router's error, or [`LOST`].
    pub async fn call(&self, procedure: &str, payload: Payload) -> Result<Payload, CallError> {
        self.call_with(procedure, Dict::new(), payload).await
    }

    /// Call a procedure with CALL.Options (`timeout`, ...).
    ///
    /// # Errors
    /// The callee's or router's error, or [`LOST`].
    pub async fn call_with(
        &self,
        procedure: &str,
        options: Dict,
        payload: Payload,
    ) -> Result<Payload, CallError> {
        let (tx, rx) = oneshot::channel();
        let msg = Message::Call(Call {
            request: self.id(),
            options,
            procedure: procedure.to_owned(),
            payload,
        });
        self.request(msg, Pending::Call(tx), rx).await
    }

    /// Register a procedure; `handler` gets the call's payload and the
    /// INVOCATION details.
    ///
    /// # Errors
    /// The router's error (`wamp.error.procedure_already_exists`, ...).
    pub async fn register<F, Fut>(&self, procedure: &str, handler: F) -> Result<Id, CallError>
    where
        F: Fn(Payload, Dict) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Payload, CallError>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let handler: Procedure = Arc::new(move |p, d| Box::pin(handler(p, d)));
        let msg = Message::Register(Register {
            request: self.id(),
            options: Dict::new(),
            procedure: procedure.to_owned(),
        });
        self.request(msg, Pending::Register(tx, handler), rx).await
    }

    /// Subscribe to a topic; `handler` gets each event's payload and details.
    ///
    /// # Errors
    /// The router's error (`wamp.error.not_authorized`, ...).
    pub async fn subscribe<F>(&self, topic: &str, handler: F) -> Result<Id, CallError>
    where
        F: Fn(Payload, Dict) + Send + Sync + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let msg = Message::Subscribe(Subscribe {
            request: self.id(),
            options: Dict::new(),
            topic: topic.to_owned(),
        });
        self.request(msg, Pending::Subscribe(tx, Arc::new(handler)), rx)
            .await
    }

    /// Publish an event and wait for the router's acknowledgement.
    ///
    /// # Errors
    /// The router's error, or [`LOST`].
    pub async fn publish(&self, topic: &str, payload: Payload) -> Result<(), CallError> {
        self.publish_with(topic, Dict::new(), payload)
            .await
            .map(|_| ())
    }

    /// Publish with PUBLISH.Options (`exclude`, `eligible`, `retain`, ...),
    /// acknowledged; the publication id.
    ///
    /// # Errors
    /// The router's error, or [`LOST`].
    pub async fn publish_with(
        &self,
        topic: &str,
        mut options: Dict,
        payload: Payload,
    ) -> Result<Id, CallError> {
        let (tx, rx) = oneshot::channel();
        options.insert("acknowledge".into(), Value::Bool(true));
        let msg = Message::Publish(Publish {
            request: self.id(),
            options,
            topic: topic.to_owned(),
            payload,
        });
        self.request(msg, Pending::Publish(tx), rx).await
    }

    /// Say GOODBYE and wait (at most 2 s) for the router's answer.
    pub async fn leave(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Leave(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), rx).await;
        }
    }

    /// Wait until the session ends; the reason (a GOODBYE/ABORT URI or a
    /// network error).
    pub async fn closed(&self) -> String {
        let mut rx = self.closed.clone();
        loop {
            if let Some(r) = rx.borrow().clone() {
                return r;
            }
            if rx.changed().await.is_err() {
                return "the client's driver stopped".to_owned();
            }
        }
    }

    /// True once the session has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.borrow().is_some()
    }

    fn close_reason(&self) -> String {
        self.closed
            .borrow()
            .clone()
            .unwrap_or_else(|| "closed".into())
    }
}

async fn open<S: Io>(mut stream: S, cfg: &ClientConfig) -> Result<Client, ConnectError> {
    // Announce 16 MiB (exponent 15), the most RawSocket can say.
    let ser = rawsocket::serializer_id(cfg.serializer);
    stream
        .write_all(&[rawsocket::MAGIC, 0xF0 | ser, 0, 0])
        .await?;
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).await?;
    if reply[0] != rawsocket::MAGIC {
        return Err(ConnectError::Handshake(format!(
            "the peer is not a RawSocket WAMP router (first byte {:#04x})",
            reply[0]
        )));
    }
    if reply[1] & 0x0F == 0 {
        let code = reply[1] >> 4;
        let why = match code {
            rawsocket::handshake_error::SERIALIZER_UNSUPPORTED => "serializer unsupported",
            rawsocket::handshake_error::LENGTH_UNACCEPTABLE => "maximum length unacceptable",
            rawsocket::handshake_error::RESERVED_BITS => "reserved bits used",
            rawsocket::handshake_error::CONNECTION_LIMIT => "connection limit reached",
            _ => "unknown error",
        };
        return Err(ConnectError::Handshake(format!(
            "the router refused: {why} (code {code})"
        )));
    }
    if reply[1] & 0x0F != ser {
        return Err(ConnectError::Handshake(
            "the router answered with another serializer".into(),
        ));
    }
    let peer_max = 1usize << (9 + (reply[1] >> 4));
    let link = RawLink {
        framed: Framed::new(
            stream,
            RawSocketCodec {
                max_incoming: 1 << 24,
            },
        ),
        serializer: cfg.serializer,
        peer_max,
    };
    join(link, cfg).await
}

/// HELLO, the authentication exchange, WELCOME: then the driver runs.
async fn join<L: Link>(mut link: L, cfg: &ClientConfig) -> Result<Client, ConnectError> {
    let mut details = dict! {
        "roles" => dict! {
            "caller" => dict! { "features" => Dict::new() },
            "callee" => dict! { "features" => Dict::new() },
            "publisher" => dict! { "features" => Dict::new() },
            "subscriber" => dict! { "features" => Dict::new() },
        },
    };
    if let Some(a) = &cfg.authid {
        details.insert("authid".into(), Value::Str(a.clone()));
    }
    let mut methods = Vec::new();
    if cfg.cryptosign.is_some() {
        methods.push(Value::Str("cryptosign".into()));
    }
    if cfg.wampcra.is_some() {
        methods.push(Value::Str("wampcra".into()));
    }
    if cfg.ticket.is_some() {
        methods.push(Value::Str("ticket".into()));
    }
    if let Some(seed) = &cfg.cryptosign {
        details.insert(
            "authextra".into(),
            Value::Dict(dict! { "pubkey" => proto::auth::cryptosign_pubkey(seed) }),
        );
    }
    if !methods.is_empty() {
        details.insert("authmethods".into(), Value::List(methods));
    }
    let hello = Message::Hello(Hello {
        realm: cfg.realm.clone(),
        details,
    });
    link.send(hello).await.map_err(ConnectError::Protocol)?;
    loop {
        let msg = match link.recv().await {
            None => {
                return Err(ConnectError::Protocol(
                    "the router closed the connection".into(),
                ));
            }
            Some(Err(e)) => return Err(ConnectError::Protocol(e)),
            Some(Ok(m)) => m,
        };
        match msg {
            Message::Welcome(w) => return Ok(start(link, w.session, w.details)),
            Message::Abort(a) => {
                return Err(ConnectError::Aborted {
                    reason: a.reason,
                    message: a
                        .details
                        .get("message")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                });
            }
            Message::Challenge(c) => {
                let signature = answer_challenge(cfg, &c.authmethod, &c.extra)?;
                let auth = Message::Authenticate(proto::message::Authenticate {
                    signature,
                    extra: Dict::new(),
                });
                link.send(auth).await.map_err(ConnectError::Protocol)?;
            }
            other => {
                return Err(ConnectError::Protocol(format!(
                    "expected WELCOME, ABORT or CHALLENGE, got {}",
                    other.name()
                )));
            }
        }
    }
}

/// The AUTHENTICATE signature for a CHALLENGE.
fn answer_challenge(
    cfg: &ClientConfig,
    method: &str,
    extra: &Dict,
) -> Result<String, ConnectError> {
    let missing = || {
        ConnectError::Protocol(format!(
            "the router challenged with {method}, which this client was not given credentials for"
        ))
    };
    match method {
        "ticket" => cfg.ticket.clone().ok_or_else(missing),
        "wampcra" => {
            let password = cfg.wampcra.as_deref().ok_or_else(missing)?;
            let challenge = extra
                .get("challenge")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ConnectError::Protocol("WAMP-CRA CHALLENGE without a challenge string".into())
                })?;
            let key = match extra.get("salt").and_then(Value::as_str) {
                Some(salt) => proto::auth::derive_key(
                    password,
                    salt,
                    extra
                        .get("iterations")
                        .and_then(Value::as_u64)
                        .and_then(|n| u32::try_from(n).ok())
                        .unwrap_or(1000),
                    extra
                        .get("keylen")
                        .and_then(Value::as_u64)
                        .and_then(|n| usize::try_from(n).ok())
                        .unwrap_or(32),
                ),
                None => password.to_owned(),
            };
            Ok(proto::auth::cra_sign(key.as_bytes(), challenge))
        }
        "cryptosign" => {
            let seed = cfg.cryptosign.as_ref().ok_or_else(missing)?;
            let challenge = extra
                .get("challenge")
                .and_then(Value::as_str)
                .and_then(|h| hex::decode(h).ok())
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    ConnectError::Protocol(
                        "cryptosign CHALLENGE without a 32-byte hex challenge".into(),
                    )
                })?;
            Ok(proto::auth::cryptosign_sign(seed, &challenge))
        }
        other => Err(ConnectError::Protocol(format!(
            "the router challenged with {other:?}, which this client does not speak"
        ))),
    }
}

/// Run the driver for a joined session.
fn start<L: Link>(link: L, session: Id, welcome: Dict) -> Client {
    let (commands, rx) = mpsc::channel(256);
    let (closed_tx, closed) = watch::channel(None);
    let driver = Driver {
        link,
        commands: commands.downgrade(),
        pending: HashMap::new(),
        procedures: HashMap::new(),
        handlers: HashMap::new(),
        invocations: Arc::new(Semaphore::new(MAX_CONCURRENT_INVOCATIONS)),
        leaving: None,
    };
    tokio::spawn(driver.run(rx, closed_tx));
    Client {
        commands,
        next_id: Arc::new(AtomicU64::new(1)),
        session,
        welcome: Arc::new(welcome),
        closed,
    }
}

struct Driver<L> {
    link: L,
    /// For invocation tasks to send their answers; weak so that dropping
    /// every [`Client`] ends the session.
    commands: mpsc::WeakSender<Command>,
    pending: HashMap<Id, Pending>,
    procedures: HashMap<Id, Procedure>,
    handlers: HashMap<Id, EventHandler>,
    invocations: Arc<Semaphore>,
    leaving: Option<oneshot::Sender<()>>,
}

impl<L: Link> Driver<L> {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        closed: watch::Sender<Option<String>>,
    ) {
        let reason = loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    None => {
                        let bye = goodbye("wamp.close.close_realm");
                        let _ = self.write(&bye).await;
                        break "the client was dropped".to_owned();
                    }
                    Some(c) => if let Err(e) = self.command(c).await {
                        break e;
                    },
                },
                msg = self.link.recv() => match msg {
                    None => break "connection lost".to_owned(),
                    Some(Err(e)) => break e,
                    Some(Ok(m)) => if let Some(end) = self.incoming(m).await {
                        break end;
                    },
                },
            }
        };
        for (_, p) in self.pending.drain() {
            let e = CallError::lost(&reason);
            match p {
                Pending::Call(tx) => drop(tx.send(Err(e))),
                Pending::Register(tx, _) | Pending::Subscribe(tx, _) => drop(tx.send(Err(e))),
                Pending::Publish(tx) => drop(tx.send(Err(e))),
            }
        }
        if let Some(tx) = self.leaving.take() {
            let _ = tx.send(());
        }
        let _ = closed.send(Some(reason));
        self.link.close().await;
    }

    async fn write(&mut self, msg: &Message) -> Result<(), String> {
        self.link.send(msg.clone()).await
    }

    async fn command(&mut self, c: Command) -> Result<(), String> {
        match c {
            Command::Request(msg, pending) => {
                let id = msg.request_id().unwrap_or(0);
                match self.write(&msg).await {
                    Ok(()) => {
                        self.pending.insert(id, pending);
                        Ok(())
                    }
                    Err(e) => {
                        let err = CallError::new("trellis.error.invalid_argument", e);
                        match pending {
                            Pending::Call(tx) => drop(tx.send(Err(err))),
                            Pending::Register(tx, _) | Pending::Subscribe(tx, _) => {
                                drop(tx.send(Err(err)))
                            }
                            Pending::Publish(tx) => drop(tx.send(Err(err))),
                        }
                        Ok(())
                    }
                }
            }
            Command::Send(msg) => {
                if let Err(e) = self.write(&msg).await {
                    // An answer too large for the router: say so instead.
                    if let Message::Yield(y) = &msg {
                        let err = error_reply(
                            y.request,
                            &CallError::new("trellis.error.invalid_argument", e),
                        );
                        self.write(&err).await?;
                    }
                }
                Ok(())
            }
            Command::Leave(tx) => {
                self.leaving = Some(tx);
                self.write(&goodbye("wamp.close.close_realm")).await
            }
        }
    }

    /// Handle one message from the router; `Some(reason)` ends the session.
    async fn incoming(&mut self, m: Message) -> Option<String> {
        match m {
            Message::Result(r) => {
                if let Some(Pending::Call(tx)) = self.pending.remove(&r.request) {
                    let _ = tx.send(Ok(r.payload));
                }
            }
            Message::Error(e) => {
                let err = CallError {
                    uri: e.error,
                    payload: e.payload,
                };
                match self.pending.remove(&e.request) {
                    Some(Pending::Call(tx)) => drop(tx.send(Err(err))),
                    Some(Pending::Register(tx, _) | Pending::Subscribe(tx, _)) => {
                        drop(tx.send(Err(err)))
                    }
                    Some(Pending::Publish(tx)) => drop(tx.send(Err(err))),
                    None => {}
                }
            }
            Message::Registered(r) => {
                if let Some(Pending::Register(tx, handler)) = self.pending.remove(&r.request) {
                    self.procedures.insert(r.registration, handler);
                    let _ = tx.send(Ok(r.registration));
                }
            }
            Message::Subscribed(s) => {
                if let Some(Pending::Subscribe(tx, handler)) = self.pending.remove(&s.request) {
                    self.handlers.insert(s.subscription, handler);
                    let _ = tx.send(Ok(s.subscription));
                }
            }
            Message::Published(p) => {
                if let Some(Pending::Publish(tx)) = self.pending.remove(&p.request) {
                    let _ = tx.send(Ok(p.publication));
                }
            }
            Message::Event(e) => {
                if let Some(h) = self.handlers.get(&e.subscription) {
                    h(e.payload, e.details);
                }
            }
            Message::Invocation(inv) => {
                let Some(handler) = self.procedures.get(&inv.registration).cloned() else {
                    let err = CallError::new(
                        "wamp.error.no_such_registration",
                        "this client holds no such registration",
                    );
                    return self.write(&error_reply(inv.request, &err)).await.err();
                };
                let Ok(permit) = self.invocations.clone().try_acquire_owned() else {
                    let err = CallError::new(
                        "trellis.error.busy",
                        "too many calls in progress on this callee; retry later",
                    );
                    return self.write(&error_reply(inv.request, &err)).await.err();
                };
                let Some(commands) = self.commands.upgrade() else {
                    return Some("the client was dropped".into());
                };
                let request = inv.request;
                tokio::spawn(async move {
                    let answer = match handler(inv.payload, inv.details).await {
                        Ok(payload) => Message::Yield(Yield {
                            request,
                            options: Dict::new(),
                            payload,
                        }),
                        Err(e) => error_reply(request, &e),
                    };
                    let _ = commands.send(Command::Send(answer)).await;
                    drop(permit);
                });
            }
            Message::Interrupt(_) => {}
            Message::Goodbye(g) => {
                if self.leaving.is_none() {
                    let _ = self.write(&goodbye("wamp.close.goodbye_and_out")).await;
                }
                return Some(g.reason);
            }
            Message::Abort(a) => return Some(a.reason),
            Message::Unregistered(_) | Message::Unsubscribed(_) => {}
            other => {
                return Some(format!(
                    "the router sent {} in an established session",
                    other.name()
                ));
            }
        }
        None
    }
}

fn goodbye(reason: &str) -> Message {
    Message::Goodbye(Goodbye {
        details: Dict::new(),
        reason: reason.to_owned(),
    })
}

fn error_reply(request: Id, e: &CallError) -> Message {
    Message::Error(WampError {
        request_type: 68,
        request,
        details: Dict::new(),
        error: e.uri.clone(),
        payload: e.payload.clone(),
    })
}

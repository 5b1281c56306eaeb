//! A realm: a sans-IO core that routes, and the tokio actor that runs it.
//!
//! - [`core`]: [`Core`], the realm's state and rules. It takes [`Input`]s
//!   (a session's message, a timer firing, a session leaving, a router-made
//!   call, a minted token) and answers with [`Effect`]s (send to a session,
//!   kill a session, start or cancel a timer, mint a token, answer a
//!   router-made call). It never touches a socket, a channel, a clock or a
//!   task; its unit tests (`tests.rs`) drive it with fake time and a seeded
//!   random number generator.
//! - [`pubsub`] and [`rpc`]: the Pub/Sub and RPC halves of the core;
//!   [`crate::authz::dynamic`] parks messages for dynamic authorizers and
//!   [`crate::meta`] answers the meta API, both over the same core.
//! - This file: the actor. Session tasks talk to it through [`RealmHandle`]
//!   over a bounded channel (so a flooding client is slowed down, not
//!   buffered without limit) and receive [`OutMsg`]s on their own bounded
//!   queue. The actor never waits on a session: it `try_send`s, and a
//!   session whose queue is full is closed with a reason in the log (the
//!   slow-peer policy), so one slow peer cannot stall a realm or grow its
//!   memory.

pub mod cluster;
pub mod core;
mod deadlines;
pub mod pubsub;
mod queue;
pub mod rpc;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};
use proto::errors::uri as wamp_uri;
use proto::message::{CallResult, code};
use proto::{Dict, Id, Message, Payload, Serializer, Value};
use rand::SeedableRng;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::authz::Authorizer;
use trellis_config::router::RealmConfig;

pub use self::core::{
    AtomicHistogram, CallOutcome, Close, Core, Effect, Histogram, INTERNAL, Input, LATENCY_BUCKETS,
    MAX_TESTAMENTS, Mint, RealmStats, TOO_MANY_CALLS, Timer,
};
pub(crate) use self::core::{Testament, error_msg};
pub use self::pubsub::receives;
pub use proto::options::Audience;

/// Commands queued per realm before senders wait.
const REALM_QUEUE: usize = 4096;
/// Commands handled per wakeup before yielding to the scheduler.
const BATCH: usize = 512;

/// Where `trellis.token.issue` mints one-time login tokens.
#[derive(Debug, Clone)]
pub struct TokenMint {
    /// The store (the first transport's with token auth).
    pub store: Arc<crate::tokens::TokenStore>,
    /// The longest lifetime a token may get.
    pub max_age: Duration,
}

/// Who a session is, as the realm needs it for authorization, disclosure
/// and the meta API.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Authenticated identity. (The four names are `Box<str>`: every
    /// session keeps its details for its whole life, and a `String`'s
    /// spare capacity field is 8 bytes of each.)
    pub authid: Box<str>,
    /// Role used for every authorization decision.
    pub authrole: Box<str>,
    /// How the session authenticated.
    pub authmethod: Box<str>,
    /// Who authenticated it (`static`, `dynamic`).
    pub authprovider: Box<str>,
    /// Serializer in use, for logs and the meta API.
    pub serializer: Serializer,
    /// The HELLO features the router acts on (kept as flags: clients send
    /// kilobytes of feature dicts, and every session would hold a copy).
    pub features: ClientFeatures,
    /// Transport details for the meta API.
    pub transport: TransportInfo,
    /// Extra data from the authenticator, given to the client in WELCOME
    /// and to dynamic authorizers.
    pub authextra: Dict,
    /// Calls this session may have in flight (its transport's
    /// `max_calls_in_flight`).
    pub max_calls: usize,
}

/// Client features from HELLO that change what the router sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientFeatures {
    /// The callee handles INTERRUPT.
    pub callee_call_canceling: bool,
    /// The callee accepts progressive call invocations.
    pub callee_progressive_call_invocations: bool,
    /// Payload passthru mode (`payload_passthru_mode`) announced as caller,
    /// callee and publisher.
    pub caller_ppt: bool,
    pub callee_ppt: bool,
    pub publisher_ppt: bool,
}

impl ClientFeatures {
    /// Read the features from HELLO.Details.roles.
    pub fn from_roles(roles: &Dict) -> ClientFeatures {
        let has = |role: &str, feature: &str| {
            roles
                .get(role)
                .and_then(Value::as_dict)
                .and_then(|r| r.get("features"))
                .and_then(Value::as_dict)
                .and_then(|f| f.get(feature))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        ClientFeatures {
            callee_call_canceling: has("callee", "call_canceling"),
            callee_progressive_call_invocations: has("callee", "progressive_call_invocations"),
            caller_ppt: has("caller", "payload_passthru_mode"),
            callee_ppt: has("callee", "payload_passthru_mode"),
            publisher_ppt: has("publisher", "payload_passthru_mode"),
        }
    }
}

/// How a session is connected, for the meta API.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportInfo {
    /// `websocket`, `rawsocket`.
    pub kind: &'static str,
    /// The negotiated subprotocol (`wamp.2.json`, ...).
    pub protocol: &'static str,
    /// `tcp4:127.0.0.1:52312`.
    pub peer: Box<str>,
    /// MQTT: the client id (`mqtt_client_id`).
    pub mqtt_client_id: Option<Box<str>>,
    /// What few connections have (Unix sockets, proxies, client
    /// certificates): boxed, as every session keeps its details for its
    /// whole life.
    extra: Option<Box<TransportExtra>>,
}

/// The rarer details of a connection.
#[derive(Debug, Clone, PartialEq)]
struct TransportExtra {
    /// Unix sockets: the peer's uid and pid (SO_PEERCRED).
    cred: Option<(u32, Option<i32>)>,
    /// The trusted proxy the connection came through (its `peer` form),
    /// when `peer` is the client named in its forwarding header.
    proxy: Option<String>,
    /// TLS with client certificates: the client's (`client_cert`).
    client_cert: Option<Arc<Dict>>,
}

impl TransportInfo {
    /// A connection's details (`peer` as `tcp4:ip:port` or `unix:pid=…`).
    pub fn new(kind: &'static str, protocol: &'static str, peer: String) -> TransportInfo {
        TransportInfo {
            kind,
            protocol,
            peer: peer.into_boxed_str(),
            mqtt_client_id: None,
            extra: None,
        }
    }

    /// Add the rarer details: a Unix socket peer's uid and pid
    /// (SO_PEERCRED), the trusted proxy the connection came through, the
    /// TLS client's certificate.
    pub fn with(
        mut self,
        cred: Option<(u32, Option<i32>)>,
        proxy: Option<String>,
        client_cert: Option<Arc<Dict>>,
    ) -> TransportInfo {
        self.extra = (cred.is_some() || proxy.is_some() || client_cert.is_some()).then(|| {
            Box::new(TransportExtra {
                cred,
                proxy,
                client_cert,
            })
        });
        self
    }

    /// As a WAMP dict (`type`, `protocol`, `peer`, and for Unix sockets
    /// `peer_uid` and `peer_pid`).
    pub fn to_dict(&self) -> Dict {
        let mut d = proto::dict! { "type" => self.kind, "protocol" => self.protocol, "peer" => &*self.peer };
        if let Some(id) = &self.mqtt_client_id {
            d.insert("mqtt_client_id".into(), Value::from(&**id));
        }
        let Some(x) = self.extra.as_deref() else {
            return d;
        };
        if let Some(proxy) = &x.proxy {
            d.insert("proxy".into(), proxy.as_str().into());
        }
        if let Some(c) = &x.client_cert {
            d.insert("client_cert".into(), Dict::clone(c).into());
        }
        if let Some((uid, pid)) = x.cred {
            d.insert("peer_uid".into(), u64::from(uid).into());
            if let Some(pid) = pid {
                d.insert("peer_pid".into(), i64::from(pid).into());
            }
        }
        d
    }
}

/// A session's side of the realm: where the realm sends its messages.
#[derive(Debug)]
pub enum SessionLink {
    /// The session's bounded outbound queue, and its kill switch (slow
    /// peer, protocol violation, meta kill), read by the session's task.
    Queue(crate::outbound::OutboxSender),
    /// A session inside the router whose requests wait for their answers
    /// one by one ([`crate::local::LocalSession`]): each answer goes
    /// straight to the request waiting for it.
    Direct(crate::local::DirectLink),
}

/// Why a call made by the router itself failed.
#[derive(Debug, Clone, PartialEq)]
pub enum InternalCallError {
    /// Nobody registered the procedure.
    NoSuchProcedure,
    /// The callee answered with ERROR.
    Error {
        /// The error URI.
        uri: String,
        /// The first positional argument, if it is a string.
        message: String,
    },
    /// No answer within the deadline.
    Timeout,
    /// The realm stopped.
    Gone,
}

/// What session tasks (and the realm's own timers) send to a realm.
#[derive(Debug)]
pub enum RealmCommand {
    /// New roles, permissions and URI checking (a config reload).
    Reconfigure {
        /// The realm's new config (same name).
        cfg: Box<RealmConfig>,
    },
    /// Close every session: the realm was removed.
    Close,
    /// The router is shutting down: every session is told GOODBYE, and any
    /// that joins from now on.
    Shutdown,
    /// Admit a session under the id it chose; `false` if the id is taken.
    Join {
        id: Id,
        /// Boxed: the realm's queue holds commands by value, and this one,
        /// rare, would double every slot.
        info: Box<SessionInfo>,
        link: SessionLink,
        reply: oneshot::Sender<bool>,
    },
    /// Call a procedure as the router (dynamic authenticators).
    InternalCall {
        procedure: String,
        /// Boxed, as `MetaLocal`'s: the queue holds commands by value.
        payload: Box<Payload>,
        timeout_ms: u64,
        reply: oneshot::Sender<Result<Payload, InternalCallError>>,
    },
    /// A session ended (GOODBYE, close, error): drop everything it held.
    Leave { session: Id },
    /// A session's statistics (the realm's `stats`): published as
    /// `wamp.session.on_stats` with these arguments.
    SessionStats { args: Vec<Value> },
    /// As `Leave`, answering once everything the session held is gone: a
    /// client's GOODBYE is answered only then, so that a client that
    /// rejoins at once finds its procedures free.
    LeaveAndTell {
        session: Id,
        done: oneshot::Sender<()>,
    },
    /// A client-to-router message of an established session. Boxed: the
    /// realm's queue holds commands by value, and a message (about 170
    /// bytes) would be copied whole at every step from the session's task
    /// to the realm's core, where a box is one word.
    Message { session: Id, msg: Box<Message> },
    /// A message produced by a task the realm started (a minted token).
    Deliver { to: Id, msg: Box<Message> },
    /// Answer when the realm gets to it (the controller's liveness check:
    /// a realm stuck in a loop never does).
    Ping { reply: oneshot::Sender<()> },
    /// The realm's figures (metrics).
    Stats { reply: oneshot::Sender<RealmStats> },
    /// A publication from another node of the cluster.
    Remote(bytes::Bytes),
    /// A call, cancel or answer from another member.
    RemoteRpc(bytes::Bytes),
    /// A registration of another member appeared or went away.
    RemoteRegistry(Box<cluster::RegistryEntry>),
    /// A member of the cluster is gone.
    MemberDown { member: Arc<str>, why: &'static str },
    /// The directory lost this router's entry for a registration.
    RegistryLost { session: Id, registration: Id },
    /// The backplane's connection went down or came back.
    Link(bool),
    /// A member stopped answering (`false`) or answers again.
    Reachable { member: Arc<str>, yes: bool },
    /// Answer a meta query of another member with this realm's part.
    MetaLocal {
        procedure: String,
        payload: Box<Payload>,
        reply: oneshot::Sender<Result<Payload, (String, String)>>,
    },
    /// The other members' answers to a meta query.
    Gathered {
        gather: Box<cluster::Gather>,
        remote: Vec<Result<Payload, (String, String)>>,
    },
    /// The directory answered a claim.
    ClaimDone {
        session: Id,
        request: Id,
        outcome: cluster::Claimed,
    },
}

/// Why a realm did not take a publication from the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteRefused {
    /// Its queue is full (dropped and counted by the caller).
    Full,
    /// It has stopped.
    Stopped,
}

/// The realm's actor has stopped: it takes no more commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealmStopped;

/// What [`RealmHandle::forward`] did with a command.
pub enum Sent<'a> {
    /// In the realm's queue.
    Done,
    /// The realm has stopped.
    Stopped,
    /// The queue is full: this send waits for room.
    Waiting(Pin<Box<dyn Future<Output = Result<(), RealmStopped>> + Send + 'a>>),
}

/// A cheap, clonable handle to a running realm: one pointer (every
/// session holds one for its whole life).
#[derive(Clone, Debug)]
pub struct RealmHandle(Arc<RealmShared>);

impl std::ops::Deref for RealmHandle {
    type Target = RealmShared;

    fn deref(&self) -> &RealmShared {
        &self.0
    }
}

/// What every handle to a realm shares.
#[derive(Debug)]
pub struct RealmShared {
    /// The realm's URI.
    pub name: Arc<str>,
    /// The realm's `stats`: read by each session as it joins, swapped by a
    /// reconfiguration (SIGHUP).
    stats: Arc<ArcSwapOption<trellis_config::router::StatsConfig>>,
    /// Shared with the actor: sessions check their role exists at HELLO;
    /// swapped by a reconfiguration.
    authz: Arc<ArcSwap<Authorizer>>,
    /// Sessions joined right now; the actor keeps it, management reads it.
    sessions: Arc<AtomicUsize>,
    tx: mpsc::Sender<RealmCommand>,
}

impl RealmHandle {
    /// Start the realm actor for `cfg`; with `cluster`, its publications
    /// go to the cluster's other nodes too.
    pub fn spawn(
        cfg: &RealmConfig,
        tokens: Option<TokenMint>,
        cluster: Option<crate::backplane::RealmLink>,
        compat: trellis_config::router::Compat,
    ) -> RealmHandle {
        let (tx, rx) = mpsc::channel(REALM_QUEUE);
        let mut core = Core::new(
            cfg,
            tokens.as_ref().map(|t| t.max_age),
            rand::rngs::SmallRng::from_rng(&mut rand::rng()),
        );
        core.set_member(cluster.as_ref().map(crate::backplane::RealmLink::member));
        core.compat = compat;
        let authz = Arc::new(ArcSwap::new(core.authz().clone()));
        let count = Arc::new(AtomicUsize::new(0));
        let actor = Actor {
            core,
            links: crate::fast::HashMap::default(),
            shared_authz: authz.clone(),
            session_count: count.clone(),
            self_tx: tx.downgrade(),
            timers: deadlines::Deadlines::default(),
            replies: HashMap::new(),
            next_ticket: 0,
            tokens,
            slow: Vec::new(),
            cluster,
            rpc_out: Default::default(),
        };
        tokio::spawn(actor.run(rx));
        RealmHandle(Arc::new(RealmShared {
            name: cfg.name.as_str().into(),
            stats: Arc::new(ArcSwapOption::from(cfg.stats.clone().map(Arc::new))),
            authz,
            sessions: count,
            tx,
        }))
    }

    /// The realm's `stats` (session statistics), if it has them.
    pub fn session_stats(&self) -> Option<Arc<trellis_config::router::StatsConfig>> {
        self.stats.load_full()
    }

    /// Hand an RPC envelope from another member to the realm, without
    /// waiting.
    ///
    /// # Errors
    /// The realm's queue is full, or it has stopped.
    pub fn remote_rpc(&self, bytes: bytes::Bytes) -> Result<(), RemoteRefused> {
        self.try_command(RealmCommand::RemoteRpc(bytes))
    }

    /// Hand a directory change to the realm (waits for room: directory
    /// changes must not be lost).
    pub async fn remote_registry(&self, e: cluster::RegistryEntry) -> Result<(), RemoteRefused> {
        self.tx
            .send(RealmCommand::RemoteRegistry(Box::new(e)))
            .await
            .map_err(|_| RemoteRefused::Stopped)
    }

    /// This realm's part of another member's meta query.
    pub async fn meta_local(
        &self,
        procedure: String,
        payload: Payload,
    ) -> Result<Payload, (String, String)> {
        let (reply, rx) = oneshot::channel();
        let gone = || {
            (
                "wamp.error.canceled".to_owned(),
                "the realm stopped".to_owned(),
            )
        };
        self.tx
            .send(RealmCommand::MetaLocal {
                procedure,
                payload: Box::new(payload),
                reply,
            })
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Tell the realm about the cluster (a member gone, an entry lost);
    /// waits for room: these must not be lost.
    pub async fn cluster_event(&self, cmd: RealmCommand) -> Result<(), RemoteRefused> {
        self.tx.send(cmd).await.map_err(|_| RemoteRefused::Stopped)
    }

    /// Hand the realm a command if its queue has room now.
    pub(crate) fn try_command(&self, cmd: RealmCommand) -> Result<(), RemoteRefused> {
        self.tx.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => RemoteRefused::Full,
            mpsc::error::TrySendError::Closed(_) => RemoteRefused::Stopped,
        })
    }

    /// Hand a publication from another node to the realm, without
    /// waiting.
    ///
    /// # Errors
    /// The realm's queue is full, or it has stopped.
    pub fn remote(&self, bytes: bytes::Bytes) -> Result<(), RemoteRefused> {
        self.tx
            .try_send(RealmCommand::Remote(bytes))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => RemoteRefused::Full,
                mpsc::error::TrySendError::Closed(_) => RemoteRefused::Stopped,
            })
    }

    /// The realm's roles and permissions as they are now.
    pub fn authz(&self) -> Arc<Authorizer> {
        self.authz.load_full()
    }

    /// Change roles, permissions and URI checking in place; sessions stay.
    /// Sessions that join from now on meter by the new `stats`; sessions
    /// already joined keep theirs.
    pub async fn reconfigure(&self, cfg: &RealmConfig) {
        self.stats.store(cfg.stats.clone().map(Arc::new));
        let _ = self
            .tx
            .send(RealmCommand::Reconfigure {
                cfg: Box::new(cfg.clone()),
            })
            .await;
    }

    /// Wait until the realm's actor has handled everything queued before
    /// this.
    ///
    /// # Errors
    /// [`RealmStopped`] if the realm has stopped.
    pub async fn ping(&self) -> Result<(), RealmStopped> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(RealmCommand::Ping { reply })
            .await
            .map_err(|_| RealmStopped)?;
        answer.await.map_err(|_| RealmStopped)
    }

    /// The realm's figures, once its actor gets to the question.
    ///
    /// # Errors
    /// [`RealmStopped`] if the realm has stopped.
    pub async fn stats(&self) -> Result<RealmStats, RealmStopped> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(RealmCommand::Stats { reply })
            .await
            .map_err(|_| RealmStopped)?;
        answer.await.map_err(|_| RealmStopped)
    }

    /// Close every session of the realm (it was removed from the config).
    pub async fn close(&self) {
        let _ = self.tx.send(RealmCommand::Close).await;
    }

    /// The router is shutting down: the realm tells its sessions GOODBYE
    /// (`wamp.close.system_shutdown`), and those that join later too.
    /// Sessions learn it from the realm rather than each watching the
    /// router's shutdown token, whose lock every session's every turn
    /// would take.
    pub async fn shut_down(&self) {
        let _ = self.tx.send(RealmCommand::Shutdown).await;
    }

    /// Sessions joined to this realm right now.
    pub fn session_count(&self) -> usize {
        self.sessions.load(Ordering::Relaxed)
    }

    /// Send a command, waiting while the realm's queue is full.
    ///
    /// # Errors
    /// [`RealmStopped`] if the realm has stopped.
    ///
    /// Most sends find room at once; only a send that has to wait boxes
    /// its future. Sessions await this in their long-lived state, where an
    /// inline `Sender::send` future (the command twice over, and a
    /// semaphore wait) would cost every idle session its size.
    pub fn send(
        &self,
        cmd: RealmCommand,
    ) -> impl Future<Output = Result<(), RealmStopped>> + Send + '_ {
        let sent = self.forward(cmd);
        async move {
            match sent {
                Sent::Done => Ok(()),
                Sent::Stopped => Err(RealmStopped),
                Sent::Waiting(send) => send.await,
            }
        }
    }

    /// Hand `cmd` to the realm now if its queue has room; otherwise the
    /// send that waits for room (boxed: only a full queue costs a future).
    pub fn forward(&self, cmd: RealmCommand) -> Sent<'_> {
        match self.tx.try_send(cmd) {
            Ok(()) => Sent::Done,
            Err(mpsc::error::TrySendError::Closed(_)) => Sent::Stopped,
            Err(mpsc::error::TrySendError::Full(cmd)) => Sent::Waiting(Box::pin(async move {
                self.tx.send(cmd).await.map_err(|_| RealmStopped)
            })),
        }
    }

    /// Call `procedure` in this realm as the router itself, bounded by
    /// `timeout`.
    ///
    /// # Errors
    /// [`InternalCallError`] saying whether the procedure is missing,
    /// raised an error, did not answer in time, or the realm is gone.
    pub async fn call(
        &self,
        procedure: &str,
        payload: Payload,
        timeout: Duration,
    ) -> Result<Payload, InternalCallError> {
        let (reply, rx) = oneshot::channel();
        let cmd = RealmCommand::InternalCall {
            procedure: procedure.to_owned(),
            payload: Box::new(payload),
            timeout_ms: timeout.as_millis().max(1) as u64,
            reply,
        };
        if self.tx.send(cmd).await.is_err() {
            return Err(InternalCallError::Gone);
        }
        // The realm enforces the timeout itself; this is a backstop.
        match tokio::time::timeout(timeout + Duration::from_secs(1), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(InternalCallError::Gone),
            Err(_) => Err(InternalCallError::Timeout),
        }
    }
}

/// The tokio side of a realm: feeds the core and carries out its effects.
struct Actor {
    core: Core,
    /// Where each joined session's messages go.
    links: crate::fast::HashMap<Id, SessionLink>,
    /// The handles' view of the core's authorizer, swapped on reconfigure.
    shared_authz: Arc<ArcSwap<Authorizer>>,
    /// Mirrors the core's session count for [`RealmHandle::session_count`].
    session_count: Arc<AtomicUsize>,
    /// For timers and minted tokens to report back; weak so the realm
    /// still stops when every handle is gone.
    self_tx: mpsc::WeakSender<RealmCommand>,
    /// Pending timers, polled by the actor's loop.
    timers: deadlines::Deadlines,
    /// Tasks waiting for a router-made call, by ticket.
    replies: HashMap<u64, oneshot::Sender<Result<Payload, InternalCallError>>>,
    next_ticket: u64,
    /// For `trellis.token.issue`.
    tokens: Option<TokenMint>,
    /// Sessions whose queue overflowed while effects were carried out.
    slow: Vec<(Id, usize)>,
    /// The cluster's backplane, for [`Effect::Forward`].
    cluster: Option<crate::backplane::RealmLink>,
    /// RPC records for other members, sent once a batch of input is
    /// handled ([`Effect::ToMember`]).
    rpc_out: crate::backplane::RpcOut,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<RealmCommand>) {
        info!(realm = %self.core.name(), "realm started");
        let mut batch = Vec::with_capacity(BATCH);
        // One sleep for the earliest timer, moved when that changes.
        let sleep = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(sleep);
        let mut armed: Option<tokio::time::Instant> = None;
        loop {
            let next = self.timers.next();
            if next != armed {
                if let Some(at) = next {
                    sleep.as_mut().reset(at);
                }
                armed = next;
            }
            tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    // One clock read per batch: the core needs the time
                    // only for history timestamps (millisecond precision).
                    let now = SystemTime::now();
                    for cmd in batch.drain(..) {
                        self.command(cmd, now);
                    }
                }
                () = &mut sleep, if armed.is_some() => {
                    armed = None;
                    let now = SystemTime::now();
                    for t in self.timers.due(tokio::time::Instant::now()) {
                        self.feed(Input::Timer(t), now);
                    }
                }
            }
            if let Some(link) = &self.cluster {
                // One NATS message per member for what this batch sends.
                self.rpc_out.flush(link);
            }
            self.session_count
                .store(self.core.session_count(), Ordering::Relaxed);
        }
        debug!(realm = %self.core.name(), "realm stopped: no more handles");
    }

    fn command(&mut self, cmd: RealmCommand, now: SystemTime) {
        let input = match cmd {
            RealmCommand::Join {
                id,
                info,
                link,
                reply,
            } => {
                if !self.core.join(id, *info) {
                    let _ = reply.send(false);
                    return;
                }
                self.links.insert(id, link);
                self.session_count
                    .store(self.core.session_count(), Ordering::Relaxed);
                if reply.send(true).is_err() {
                    // The session task went away while joining.
                    Input::Leave { session: id }
                } else {
                    Input::Joined { session: id }
                }
            }
            RealmCommand::InternalCall {
                procedure,
                payload,
                timeout_ms,
                reply,
            } => {
                self.next_ticket += 1;
                self.replies.insert(self.next_ticket, reply);
                Input::InternalCall {
                    ticket: self.next_ticket,
                    procedure,
                    payload,
                    timeout_ms,
                }
            }
            RealmCommand::Leave { session } => Input::Leave { session },
            RealmCommand::SessionStats { args } => Input::MetaEvent {
                topic: "wamp.session.on_stats",
                args,
            },
            RealmCommand::LeaveAndTell { session, done } => {
                self.feed(Input::Leave { session }, now);
                let _ = done.send(());
                return;
            }
            RealmCommand::Ping { reply } => {
                let _ = reply.send(());
                return;
            }
            RealmCommand::Stats { reply } => {
                let _ = reply.send(self.core.stats());
                return;
            }
            RealmCommand::Reconfigure { cfg } => Input::Reconfigure { cfg },
            RealmCommand::Close => Input::Close,
            RealmCommand::Shutdown => Input::Shutdown,
            RealmCommand::Message { session, msg } => Input::Message { session, msg },
            RealmCommand::Deliver { to, msg } => Input::Deliver { to, msg },
            RealmCommand::Remote(bytes) => Input::Remote(bytes),
            RealmCommand::RemoteRpc(bytes) => Input::RemoteRpc(bytes),
            RealmCommand::RemoteRegistry(e) => Input::RemoteRegistry(e),
            RealmCommand::MemberDown { member, why } => Input::MemberDown { member, why },
            RealmCommand::Link(up) => Input::Link(up),
            RealmCommand::Reachable { member, yes } => Input::Reachable { member, yes },
            RealmCommand::MetaLocal {
                procedure,
                payload,
                reply,
            } => {
                // Through the core like any input: what it does (a kill)
                // is carried out now.
                self.feed(Input::MetaLocal { procedure, payload }, now);
                let answer = self
                    .core
                    .meta_answer
                    .take()
                    .unwrap_or_else(|| Err(("wamp.error.canceled".into(), "no answer".into())));
                let _ = reply.send(answer);
                return;
            }
            RealmCommand::Gathered { gather, remote } => Input::Gathered { gather, remote },
            RealmCommand::ClaimDone {
                session,
                request,
                outcome,
            } => Input::ClaimDone {
                session,
                request,
                outcome,
            },
            RealmCommand::RegistryLost {
                session,
                registration,
            } => Input::RegistryLost {
                session,
                registration,
            },
        };
        self.feed(input, now);
    }

    /// Hand one input to the core and carry out what it says, then tell it
    /// of the sessions that could not keep up, until nothing is left.
    fn feed(&mut self, input: Input, now: SystemTime) {
        let mut next = Some(input);
        while let Some(input) = next.take() {
            self.core.handle(input, now);
            for effect in self.core.effects() {
                match effect {
                    Effect::Forward(bytes) => {
                        if let Some(link) = &self.cluster {
                            link.forward(bytes);
                        }
                        continue;
                    }
                    Effect::ToMember(to) => {
                        if let Some(link) = &self.cluster {
                            let (member, record) = *to;
                            self.rpc_out.add(link, member, &record);
                        }
                        continue;
                    }
                    Effect::Registry(op) => {
                        if let Some(link) = &self.cluster {
                            link.registry(*op);
                        }
                        continue;
                    }
                    Effect::Release(key) => {
                        if let Some(link) = &self.cluster {
                            link.release(*key);
                        }
                        continue;
                    }
                    Effect::Gather(g) => {
                        let (Some(link), Some(tx)) = (self.cluster.clone(), self.self_tx.upgrade())
                        else {
                            continue;
                        };
                        tokio::spawn(async move {
                            let remote = link.gather(&g.procedure, &g.payload).await;
                            let _ = tx.send(RealmCommand::Gathered { gather: g, remote }).await;
                        });
                        continue;
                    }
                    Effect::Claim(claim) => {
                        let (Some(link), Some(tx)) = (self.cluster.clone(), self.self_tx.upgrade())
                        else {
                            continue;
                        };
                        tokio::spawn(async move {
                            let outcome = link.claim(&claim.key).await;
                            let _ = tx
                                .send(RealmCommand::ClaimDone {
                                    session: claim.session,
                                    request: claim.request,
                                    outcome,
                                })
                                .await;
                        });
                        continue;
                    }
                    _ => {}
                }
                carry_out(
                    effect,
                    &mut self.links,
                    &mut self.slow,
                    &mut self.timers,
                    &mut self.replies,
                    &self.self_tx,
                    &self.tokens,
                    &self.shared_authz,
                );
            }
            if let Some((session, queue)) = self.slow.pop() {
                next = Some(Input::SlowPeer { session, queue });
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn carry_out(
    effect: Effect,
    links: &mut crate::fast::HashMap<Id, SessionLink>,
    slow: &mut Vec<(Id, usize)>,
    timers: &mut deadlines::Deadlines,
    replies: &mut HashMap<u64, oneshot::Sender<Result<Payload, InternalCallError>>>,
    self_tx: &mpsc::WeakSender<RealmCommand>,
    tokens: &Option<TokenMint>,
    shared_authz: &ArcSwap<Authorizer>,
) {
    match effect {
        Effect::Send { to, msg } => match links.get(&to) {
            Some(SessionLink::Queue(out)) => match out.try_send(msg) {
                Ok(()) => {}
                Err(crate::outbound::SendError::Full) => {
                    if !slow.iter().any(|(s, _)| *s == to) {
                        slow.push((to, out.capacity()));
                    }
                }
                // The session task is ending; its Leave is on the way.
                Err(crate::outbound::SendError::Closed) => {}
            },
            Some(SessionLink::Direct(d)) => d.deliver(msg),
            None => {}
        },
        Effect::Kill { session, close } => match links.get(&session) {
            Some(SessionLink::Queue(out)) => out.kill(&close.reason, close.message),
            Some(SessionLink::Direct(d)) => d.end(&close.reason),
            None => {}
        },
        Effect::Left { session } => {
            links.remove(&session);
        }
        Effect::StartTimer { timer, after_ms } => {
            timers.start(
                timer,
                tokio::time::Instant::now() + Duration::from_millis(after_ms),
            );
        }
        Effect::CancelTimer { timer } => timers.cancel(&timer),
        Effect::Reply { ticket, result } => {
            if let Some(tx) = replies.remove(&ticket) {
                let _ = tx.send(*result);
            }
        }
        Effect::Authz(authz) => shared_authz.store(authz),
        // Carried out by the actor itself (it holds the backplane link).
        Effect::Forward(_)
        | Effect::ToMember(_)
        | Effect::Registry(_)
        | Effect::Claim(_)
        | Effect::Gather(_)
        | Effect::Release(_) => {}
        Effect::Mint(m) => {
            let Mint {
                to,
                request,
                authid,
                role,
                lifetime,
            } = *m;
            let Some(mint) = tokens.clone() else {
                return;
            };
            let weak = self_tx.clone();
            tokio::spawn(async move {
                let msg = match mint
                    .store
                    .mint(&authid, role.as_deref(), lifetime, mint.max_age)
                    .await
                {
                    Ok(token) => Message::Result(CallResult {
                        request,
                        details: Dict::new(),
                        payload: Payload::args(vec![token.into()]),
                    }),
                    Err(e) => {
                        warn!(store = mint.store.kind(), cause = %e.0, "cannot mint a token");
                        error_msg(
                            code::CALL,
                            request,
                            wamp_uri::AUTHENTICATION_FAILED,
                            "token store unavailable: try again shortly".into(),
                        )
                    }
                };
                if let Some(tx) = weak.upgrade() {
                    let _ = tx
                        .send(RealmCommand::Deliver {
                            to,
                            msg: Box::new(msg),
                        })
                        .await;
                }
            });
        }
    }
}

//! The realm actor: one task per realm owns its broker, dealer and sessions.
//!
//! Session tasks talk to it through [`RealmHandle`] over a bounded channel
//! (so a flooding client is slowed down, not buffered without limit) and
//! receive [`OutMsg`]s on their own bounded queue. The realm never waits on
//! a session: it `try_send`s, and a session whose queue is full is closed
//! with a reason in the log (the slow-peer policy), so one slow peer cannot
//! stall a realm or grow its memory.
//!
//! The meta API (`wamp.session.*`, `wamp.registration.*`,
//! `wamp.subscription.*`) lives in [`crate::meta`] as more methods of the
//! same actor.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use proto::errors::uri as wamp_uri;
use proto::message::{
    Call, CallResult, Cancel, Event, Interrupt, Invocation, Publish, Published, Register,
    Registered, Subscribe, Subscribed, Unregister, Unregistered, Unsubscribe, Unsubscribed,
    WampError, Yield, code,
};
use proto::uri::{self, MatchPolicy};
use proto::{Dict, Id, Message, Payload, Serializer, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::authz::{Action, Authorizer};
use crate::broker::{Broker, HistoryEvent, Retained};
use crate::config::{RealmConfig, UriCheck};
use crate::dealer::{Dealer, InvokePolicy, Pending, RegisterError};
use crate::outbound::OutMsg;

/// Commands queued per realm before senders wait.
const REALM_QUEUE: usize = 4096;
/// Commands handled per wakeup before yielding to the scheduler.
const BATCH: usize = 512;
/// Testaments one session may leave.
pub(crate) const MAX_TESTAMENTS: usize = 32;
/// Default event history length when the config names none.
const DEFAULT_HISTORY: usize = 100;
/// The caller id of the router's own calls (authenticators, authorizers);
/// never a session id, which start at 1.
pub(crate) const INTERNAL: Id = 0;
/// How long a dynamic authorizer may take before the action is denied.
const AUTHORIZER_TIMEOUT_MS: u64 = 5_000;
/// Messages a session may have waiting for its authorizer's answer.
const MAX_PARKED: usize = 256;

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
    /// Authenticated identity.
    pub authid: String,
    /// Role used for every authorization decision.
    pub authrole: String,
    /// How the session authenticated.
    pub authmethod: String,
    /// Who authenticated it (`static`, `dynamic`).
    pub authprovider: String,
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
        }
    }
}

/// How a session is connected, for the meta API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportInfo {
    /// `websocket`, `rawsocket`.
    pub kind: &'static str,
    /// The negotiated subprotocol (`wamp.2.json`, ...).
    pub protocol: &'static str,
    /// `tcp4:127.0.0.1:52312`.
    pub peer: String,
    /// Unix sockets: the peer's uid and pid (SO_PEERCRED).
    pub cred: Option<(u32, Option<i32>)>,
    /// The trusted proxy the connection came through (its `peer` form),
    /// when `peer` is the client named in its forwarding header.
    pub proxy: Option<String>,
}

impl TransportInfo {
    /// A connection's details (`peer` as `tcp4:ip:port` or `unix:pid=…`).
    pub fn new(kind: &'static str, protocol: &'static str, peer: String) -> TransportInfo {
        TransportInfo {
            kind,
            protocol,
            peer,
            cred: None,
            proxy: None,
        }
    }

    /// As a WAMP dict (`type`, `protocol`, `peer`, and for Unix sockets
    /// `peer_uid` and `peer_pid`).
    pub fn to_dict(&self) -> Dict {
        let mut d = proto::dict! { "type" => self.kind, "protocol" => self.protocol, "peer" => self.peer.as_str() };
        if let Some(proxy) = &self.proxy {
            d.insert("proxy".into(), proxy.as_str().into());
        }
        if let Some((uid, pid)) = self.cred {
            d.insert("peer_uid".into(), u64::from(uid).into());
            if let Some(pid) = pid {
                d.insert("peer_pid".into(), i64::from(pid).into());
            }
        }
        d
    }
}

/// Lets the realm close a session from outside its task.
#[derive(Debug, Default)]
pub struct KillSwitch {
    token: CancellationToken,
    /// The close reason URI and message; the first kill wins.
    reason: OnceLock<(String, String)>,
}

impl KillSwitch {
    /// Close the session with `reason`; later calls keep the first reason.
    pub fn kill(&self, reason: &str, message: String) {
        let _ = self.reason.set((reason.to_owned(), message));
        self.token.cancel();
    }

    /// Resolves once the session has been killed.
    pub async fn killed(&self) {
        self.token.cancelled().await;
    }

    /// The reason given to [`KillSwitch::kill`].
    pub fn reason(&self) -> Option<&(String, String)> {
        self.reason.get()
    }
}

/// A session's side of the realm: where the realm sends its messages.
#[derive(Debug)]
pub struct SessionLink {
    /// The session's bounded outbound queue.
    pub tx: mpsc::Sender<Arc<OutMsg>>,
    /// To close the session (slow peer, protocol violation, meta kill).
    pub kill: Arc<KillSwitch>,
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

/// Who waits for the answer to a router-made call.
#[derive(Debug)]
enum Waiter {
    /// A task outside the realm (an authenticator call).
    Task(oneshot::Sender<Result<Payload, InternalCallError>>),
    /// The realm itself: a dynamic authorizer's answer for a session.
    Authorize {
        session: Id,
        uri: String,
        action: Action,
        procedure: String,
    },
}

/// A dynamic authorizer's decision, cached per session.
#[derive(Debug, Clone)]
struct Cached {
    allow: bool,
    disclose: bool,
    /// Kept for later actions (`cache: true`), else used once.
    keep: bool,
    /// Why it was denied, when the authorizer failed.
    reason: Option<(&'static str, String)>,
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
    /// Admit a session under the id it chose; `false` if the id is taken.
    Join {
        id: Id,
        info: SessionInfo,
        link: SessionLink,
        reply: oneshot::Sender<bool>,
    },
    /// Call a procedure as the router (dynamic authenticators).
    InternalCall {
        procedure: String,
        payload: Payload,
        timeout_ms: u64,
        reply: oneshot::Sender<Result<Payload, InternalCallError>>,
    },
    /// A session ended (GOODBYE, close, error): drop everything it held.
    Leave { session: Id },
    /// A client-to-router message of an established session.
    Message { session: Id, msg: Message },
    /// A message produced by a task the realm started (a minted token).
    Deliver { to: Id, msg: Message },
    /// Answer when the realm gets to it (the controller's liveness check:
    /// a realm stuck in a loop never does).
    Ping { reply: oneshot::Sender<()> },
    /// A call's `timeout` option expired.
    Timeout {
        invocation: Id,
        caller: Id,
        request: Id,
    },
}

/// The error for a CALL over the session's limit of calls in flight.
pub const TOO_MANY_CALLS: &str = "trellis.error.too_many_calls";

/// The realm's actor has stopped: it takes no more commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealmStopped;

/// A cheap, clonable handle to a running realm.
#[derive(Clone, Debug)]
pub struct RealmHandle {
    /// The realm's URI.
    pub name: Arc<str>,
    /// Shared with the actor: sessions check their role exists at HELLO;
    /// swapped by a reconfiguration.
    authz: Arc<ArcSwap<Authorizer>>,
    /// Sessions joined right now; the actor keeps it, management reads it.
    sessions: Arc<AtomicUsize>,
    tx: mpsc::Sender<RealmCommand>,
}

impl RealmHandle {
    /// Start the realm actor for `cfg`.
    pub fn spawn(cfg: &RealmConfig, tokens: Option<TokenMint>) -> RealmHandle {
        let (tx, rx) = mpsc::channel(REALM_QUEUE);
        let authz = Arc::new(Authorizer::new(&cfg.roles));
        let shared_authz = Arc::new(ArcSwap::new(authz.clone()));
        let mut broker = Broker::new();
        if let Some(store) = &cfg.store {
            for h in &store.event_history {
                broker.add_history(
                    &h.uri,
                    h.match_policy,
                    h.limit.or(store.limit).unwrap_or(DEFAULT_HISTORY),
                );
            }
        }
        let count = Arc::new(AtomicUsize::new(0));
        let realm = Realm {
            shared_authz: shared_authz.clone(),
            session_count: count.clone(),
            name: cfg.name.clone(),
            strict: cfg.options.uri_check == UriCheck::Strict,
            authz: authz.clone(),
            broker,
            dealer: Dealer::new(),
            sessions: HashMap::new(),
            doomed: Vec::new(),
            self_tx: tx.downgrade(),
            timers: HashMap::new(),
            testaments: HashMap::new(),
            waiters: HashMap::new(),
            next_internal: 0,
            tokens,
        };
        tokio::spawn(realm.run(rx));
        RealmHandle {
            name: cfg.name.as_str().into(),
            authz: shared_authz,
            sessions: count,
            tx,
        }
    }

    /// The realm's roles and permissions as they are now.
    pub fn authz(&self) -> Arc<Authorizer> {
        self.authz.load_full()
    }

    /// Change roles, permissions and URI checking in place; sessions stay.
    pub async fn reconfigure(&self, cfg: &RealmConfig) {
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

    /// Close every session of the realm (it was removed from the config).
    pub async fn close(&self) {
        let _ = self.tx.send(RealmCommand::Close).await;
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
        let waiting = match self.tx.try_send(cmd) {
            Ok(()) => Ok(None),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(RealmStopped),
            Err(mpsc::error::TrySendError::Full(cmd)) => Ok(Some(Box::pin(self.tx.send(cmd)))),
        };
        async move {
            match waiting? {
                None => Ok(()),
                Some(send) => send.await.map_err(|_| RealmStopped),
            }
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
            payload,
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

pub(crate) struct SessionEntry {
    pub(crate) info: SessionInfo,
    pub(crate) link: SessionLink,
    /// Set once the session has been killed, so overflow is logged once.
    pub(crate) killed: bool,
    /// Dynamic authorizer answers by (URI, action).
    authz_cache: HashMap<(String, Action), Cached>,
    /// Messages waiting for the dynamic authorizer, in arrival order, so a
    /// session's messages never overtake each other.
    parked: VecDeque<Message>,
    /// An authorizer call for this session is outstanding.
    awaiting_authz: bool,
}

/// A testament: an event published on the session's behalf when it goes.
#[derive(Debug, Clone)]
pub(crate) struct Testament {
    pub(crate) topic: String,
    pub(crate) payload: Payload,
    pub(crate) options: Dict,
    /// `destroyed` or `detached`; Trellis has no session resumption, so
    /// both are published when the session leaves.
    pub(crate) scope: String,
}

pub(crate) struct Realm {
    /// The handles' view of `authz`, swapped together with it.
    pub(crate) shared_authz: Arc<ArcSwap<Authorizer>>,
    /// Mirrors `sessions.len()` for [`RealmHandle::session_count`].
    pub(crate) session_count: Arc<AtomicUsize>,
    pub(crate) name: String,
    /// Whether client URIs must follow the strict rule.
    pub(crate) strict: bool,
    pub(crate) authz: Arc<Authorizer>,
    pub(crate) broker: Broker,
    pub(crate) dealer: Dealer,
    /// Boxed entries: the table keeps spare slots (up to half of them
    /// after a resize), and an empty slot should cost a pointer, not an entry.
    pub(crate) sessions: HashMap<Id, Box<SessionEntry>>,
    /// Sessions killed while handling the current command: they leave the
    /// realm as soon as it is handled, without waiting for their task to
    /// finish closing a connection the peer may not be reading.
    doomed: Vec<Id>,
    /// For call timeouts to report back; weak so the realm still stops when
    /// every handle is gone.
    self_tx: mpsc::WeakSender<RealmCommand>,
    /// Timeout timers of calls in flight, aborted when the call finishes.
    timers: HashMap<Id, tokio::task::AbortHandle>,
    /// Testaments by session.
    pub(crate) testaments: HashMap<Id, Vec<Testament>>,
    /// Router-made calls in flight by request id.
    waiters: HashMap<Id, Waiter>,
    next_internal: Id,
    /// For `trellis.token.issue`.
    tokens: Option<TokenMint>,
}

/// Turn an authorizer's answer into a decision. A boolean is used once; a
/// dict `{allow, disclose, cache}` is kept for the session when `cache` is
/// true. Anything else, an error or a timeout denies, with the cause.
fn parse_authorizer_answer(
    procedure: &str,
    uri: &str,
    action: Action,
    result: Result<Payload, InternalCallError>,
) -> Cached {
    let fail = |text: String| Cached {
        allow: false,
        disclose: false,
        keep: false,
        reason: Some((
            wamp_uri::AUTHORIZATION_FAILED,
            format!("authorizer {procedure:?} could not decide on {action} {uri:?}: {text}"),
        )),
    };
    let payload = match result {
        Ok(p) => p,
        Err(InternalCallError::NoSuchProcedure) => {
            return fail("it is not registered in this realm".into());
        }
        Err(InternalCallError::Timeout) => {
            return fail(format!(
                "it did not answer within {AUTHORIZER_TIMEOUT_MS} ms"
            ));
        }
        Err(InternalCallError::Gone) => return fail("the realm is shutting down".into()),
        Err(InternalCallError::Error { uri: e, message }) => {
            return fail(format!("it raised {e}: {message}"));
        }
    };
    match payload.args.first() {
        Some(Value::Bool(b)) => Cached {
            allow: *b,
            disclose: false,
            keep: false,
            reason: None,
        },
        Some(Value::Dict(d)) => match d.get("allow") {
            Some(Value::Bool(allow)) => Cached {
                allow: *allow,
                disclose: d.get("disclose").and_then(Value::as_bool).unwrap_or(false),
                keep: d.get("cache").and_then(Value::as_bool).unwrap_or(false),
                reason: None,
            },
            _ => fail("its dict answer lacks a boolean \"allow\"".into()),
        },
        None => fail(
            "it returned nothing; expected true/false or {\"allow\": ..., \"cache\": ...}".into(),
        ),
        Some(other) => fail(format!(
            "it returned a {}; expected true/false or {{\"allow\": ..., \"cache\": ...}}",
            other.type_name()
        )),
    }
}

/// Deliver to one session without ever waiting; a full queue closes it.
fn deliver(
    sessions: &mut HashMap<Id, Box<SessionEntry>>,
    doomed: &mut Vec<Id>,
    to: Id,
    msg: Arc<OutMsg>,
) {
    let Some(entry) = sessions.get_mut(&to) else {
        return;
    };
    match entry.link.tx.try_send(msg) {
        Ok(()) => {}
        Err(mpsc::error::TrySendError::Full(_)) => {
            if !entry.killed {
                entry.killed = true;
                let cap = entry.link.tx.max_capacity();
                warn!(
                    session = to,
                    authid = %entry.info.authid,
                    queue = cap,
                    "closing slow session: its outbound queue of {cap} messages is full (the peer does not read fast enough)"
                );
                entry.link.kill.kill(
                    wamp_uri::CLOSE_KILLED,
                    format!("outbound queue overflow: {cap} messages were waiting, the session does not read fast enough"),
                );
                doomed.push(to);
            }
        }
        // The session task is ending; its Leave is on the way.
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

pub(crate) fn error_msg(request_type: u64, request: Id, error: &str, text: String) -> Message {
    Message::Error(WampError {
        request_type,
        request,
        details: Dict::new(),
        error: error.to_owned(),
        payload: Payload::args(vec![Value::Str(text)]),
    })
}

fn opt_bool(options: &Dict, key: &str) -> Result<Option<bool>, String> {
    match options.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(format!(
            "option {key:?} must be a boolean, found {}",
            other.type_name()
        )),
    }
}

fn opt_ids(options: &Dict, key: &str) -> Result<Option<Vec<Id>>, String> {
    match options.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::List(l)) => l
            .iter()
            .map(|v| {
                v.as_id().ok_or_else(|| {
                    format!(
                        "option {key:?} must be a list of session ids, found a {}",
                        v.type_name()
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(other) => Err(format!(
            "option {key:?} must be a list of session ids, found {}",
            other.type_name()
        )),
    }
}

fn opt_strs(options: &Dict, key: &str) -> Result<Option<Vec<String>>, String> {
    match options.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::List(l)) => l
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    format!(
                        "option {key:?} must be a list of strings, found a {}",
                        v.type_name()
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(Value::Str(s)) => Ok(Some(vec![s.clone()])),
        Some(other) => Err(format!(
            "option {key:?} must be a list of strings, found {}",
            other.type_name()
        )),
    }
}

/// The payload passthru options of a message, to be forwarded in the
/// details of what the router sends on; the payload itself is never touched.
/// Both spellings pass: the specification's `ppt_scheme`, `ppt_serializer`,
/// `ppt_cipher`, `ppt_keyid`, and autobahn-python's (and Crossbar.io's)
/// `enc_algo`, `enc_serializer`, `enc_key`.
fn ppt_options(options: &Dict) -> Result<Dict, String> {
    const AUTOBAHN: [&str; 3] = ["enc_algo", "enc_serializer", "enc_key"];
    let mut out = Dict::new();
    for (k, v) in options
        .iter()
        .filter(|(k, _)| k.starts_with("ppt_") || AUTOBAHN.contains(&k.as_str()))
    {
        match v {
            Value::Str(_) => {
                out.insert(k.clone(), v.clone());
            }
            other => {
                return Err(format!(
                    "option {k:?} must be a string, found {}",
                    other.type_name()
                ));
            }
        }
    }
    if out.keys().any(|k| k.starts_with("ppt_")) && !out.contains_key("ppt_scheme") {
        return Err("payload passthru options need \"ppt_scheme\"".into());
    }
    if out.keys().any(|k| k.starts_with("enc_")) && !out.contains_key("enc_algo") {
        return Err("payload passthru options need \"enc_algo\"".into());
    }
    Ok(out)
}

/// Subscriber black- and whitelisting options of one PUBLISH; kept with a
/// retained or recorded event so that later deliveries honour them too.
#[derive(Default, Debug, Clone)]
pub struct Audience {
    exclude: Option<Vec<Id>>,
    exclude_authid: Option<Vec<String>>,
    exclude_authrole: Option<Vec<String>>,
    eligible: Option<Vec<Id>>,
    eligible_authid: Option<Vec<String>>,
    eligible_authrole: Option<Vec<String>>,
}

impl Audience {
    pub(crate) fn parse(o: &Dict) -> Result<Audience, String> {
        Ok(Audience {
            exclude: opt_ids(o, "exclude")?,
            exclude_authid: opt_strs(o, "exclude_authid")?,
            exclude_authrole: opt_strs(o, "exclude_authrole")?,
            eligible: opt_ids(o, "eligible")?,
            eligible_authid: opt_strs(o, "eligible_authid")?,
            eligible_authrole: opt_strs(o, "eligible_authrole")?,
        })
    }

    /// True if the session `id` may receive the event.
    pub(crate) fn admits(&self, id: Id, info: &SessionInfo) -> bool {
        let has =
            |l: &Option<Vec<String>>, v: &str| l.as_ref().is_some_and(|l| l.iter().any(|x| x == v));
        if self.exclude.as_ref().is_some_and(|l| l.contains(&id))
            || has(&self.exclude_authid, &info.authid)
            || has(&self.exclude_authrole, &info.authrole)
        {
            return false;
        }
        self.eligible.as_ref().is_none_or(|l| l.contains(&id))
            && self
                .eligible_authid
                .as_ref()
                .is_none_or(|_| has(&self.eligible_authid, &info.authid))
            && self
                .eligible_authrole
                .as_ref()
                .is_none_or(|_| has(&self.eligible_authrole, &info.authrole))
    }
}

/// Whether session `sid` gets an event on `topic` through a subscription of
/// `policy`: the publisher's audience admits it, and a pattern subscription
/// never leaks a topic its role may not subscribe to. The same for live
/// events, retained events and event history.
pub(crate) fn receives(
    authz: &Authorizer,
    audience: &Audience,
    policy: MatchPolicy,
    topic: &str,
    sid: Id,
    info: &SessionInfo,
) -> bool {
    audience.admits(sid, info)
        && (policy == MatchPolicy::Exact
            || authz
                .authorize(&info.authrole, topic, Action::Subscribe)
                .allow)
}

/// One publication on its way to subscribers.
pub(crate) struct Publication<'a> {
    pub(crate) id: Id,
    pub(crate) topic: &'a str,
    pub(crate) payload: &'a Payload,
    /// Details every EVENT carries (publisher disclosure, ppt_*).
    pub(crate) details: &'a Dict,
    pub(crate) audience: &'a Audience,
    /// The publisher, excluded when `exclude_me` holds.
    pub(crate) exclude: Option<Id>,
}

/// How a caller asked to cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CancelMode {
    Skip,
    Kill,
    KillNoWait,
}

impl Realm {
    async fn run(mut self, mut rx: mpsc::Receiver<RealmCommand>) {
        info!(realm = %self.name, "realm started");
        let mut batch = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut batch, BATCH).await > 0 {
            for cmd in batch.drain(..) {
                self.handle(cmd);
                while let Some(session) = self.doomed.pop() {
                    self.leave(session);
                }
            }
        }
        debug!(realm = %self.name, "realm stopped: no more handles");
    }

    fn handle(&mut self, cmd: RealmCommand) {
        match cmd {
            RealmCommand::Join {
                id,
                info,
                link,
                reply,
            } => {
                if id == INTERNAL || self.sessions.contains_key(&id) {
                    let _ = reply.send(false);
                    return;
                }
                self.sessions.insert(
                    id,
                    Box::new(SessionEntry {
                        info,
                        link,
                        killed: false,
                        authz_cache: HashMap::new(),
                        parked: VecDeque::new(),
                        awaiting_authz: false,
                    }),
                );
                self.session_count
                    .store(self.sessions.len(), Ordering::Relaxed);
                if reply.send(true).is_err() {
                    // The session task went away while joining.
                    self.leave(id);
                } else {
                    self.meta_on_join(id);
                }
            }
            RealmCommand::InternalCall {
                procedure,
                payload,
                timeout_ms,
                reply,
            } => self.internal_call(&procedure, payload, timeout_ms, Waiter::Task(reply)),
            RealmCommand::Leave { session } => self.leave(session),
            RealmCommand::Ping { reply } => {
                let _ = reply.send(());
            }
            RealmCommand::Reconfigure { cfg } => {
                let authz = Arc::new(Authorizer::new(&cfg.roles));
                self.shared_authz.store(authz.clone());
                self.authz = authz;
                self.strict = cfg.options.uri_check == UriCheck::Strict;
                // Cached dynamic authorizer answers were given under the
                // old rules.
                for e in self.sessions.values_mut() {
                    e.authz_cache.clear();
                }
                info!(realm = %self.name, sessions = self.sessions.len(), "realm reconfigured in place: roles and permissions replaced, sessions kept");
            }
            RealmCommand::Close => {
                let ids: Vec<Id> = self.sessions.keys().copied().collect();
                for id in ids {
                    if let Some(e) = self.sessions.get(&id) {
                        e.link.kill.kill(
                            "wamp.close.close_realm",
                            "the realm was removed from the router's configuration".into(),
                        );
                    }
                }
                info!(realm = %self.name, "realm removed: its sessions are closed");
            }
            RealmCommand::Message { session, msg } => {
                if self.sessions.contains_key(&session) {
                    self.dispatch(session, msg);
                }
            }
            RealmCommand::Deliver { to, msg } => {
                if self.sessions.contains_key(&to) {
                    self.send(to, msg);
                }
            }
            RealmCommand::Timeout {
                invocation,
                caller,
                request,
            } => self.call_timed_out(invocation, caller, request),
        }
    }

    pub(crate) fn send(&mut self, to: Id, msg: Message) {
        if to == INTERNAL {
            return self.internal_reply(msg);
        }
        deliver(&mut self.sessions, &mut self.doomed, to, OutMsg::new(msg));
    }

    /// Route a call made by the router (authenticators, authorizers).
    fn internal_call(
        &mut self,
        procedure: &str,
        payload: Payload,
        timeout_ms: u64,
        waiter: Waiter,
    ) {
        let Some((registration, callee)) = self.dealer.route(procedure) else {
            return self.complete(waiter, Err(InternalCallError::NoSuchProcedure));
        };
        self.next_internal = if self.next_internal >= proto::MAX_ID {
            1
        } else {
            self.next_internal + 1
        };
        let request = self.next_internal;
        let mut details = Dict::new();
        if self
            .dealer
            .get(registration)
            .is_some_and(|r| r.policy != MatchPolicy::Exact)
        {
            details.insert("procedure".into(), Value::from(procedure));
        }
        let invocation = self
            .dealer
            .start_call(INTERNAL, request, registration, callee);
        self.start_timer(invocation, INTERNAL, request, timeout_ms);
        self.waiters.insert(request, waiter);
        self.send(
            callee,
            Message::Invocation(Invocation {
                request: invocation,
                registration,
                details,
                payload,
            }),
        );
    }

    /// A RESULT or ERROR addressed to the router itself.
    fn internal_reply(&mut self, msg: Message) {
        let (request, result) = match msg {
            Message::Result(r) => {
                if r.details.get("progress") == Some(&Value::Bool(true)) {
                    return;
                }
                (r.request, Ok(r.payload))
            }
            Message::Error(e) => {
                let err = if e.error == wamp_uri::TIMEOUT {
                    InternalCallError::Timeout
                } else {
                    InternalCallError::Error {
                        message: e
                            .payload
                            .args
                            .first()
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                        uri: e.error,
                    }
                };
                (e.request, Err(err))
            }
            _ => return,
        };
        if let Some(w) = self.waiters.remove(&request) {
            self.complete(w, result);
        }
    }

    fn complete(&mut self, waiter: Waiter, result: Result<Payload, InternalCallError>) {
        match waiter {
            Waiter::Task(tx) => {
                let _ = tx.send(result);
            }
            Waiter::Authorize {
                session,
                uri,
                action,
                procedure,
            } => {
                let cached = parse_authorizer_answer(&procedure, &uri, action, result);
                if let Some(reason) = &cached.reason {
                    warn!(session, %uri, %action, authorizer = %procedure, "{}", reason.1);
                }
                if let Some(e) = self.sessions.get_mut(&session) {
                    e.awaiting_authz = false;
                    e.authz_cache.insert((uri, action), cached);
                }
                self.drain_parked(session);
            }
        }
    }

    /// The (URI, action, options) a message needs authorized, if its
    /// session's role decides through a dynamic authorizer that has not
    /// answered for it yet.
    fn needs_authorizer(
        &self,
        session: Id,
        msg: &Message,
    ) -> Option<(String, Action, Dict, String)> {
        let entry = self.sessions.get(&session)?;
        let procedure = self.authz.authorizer_for(&entry.info.authrole)?;
        let (uri, action, options) = match msg {
            Message::Publish(m) => (&m.topic, Action::Publish, &m.options),
            Message::Subscribe(m) => (&m.topic, Action::Subscribe, &m.options),
            Message::Register(m) => (&m.procedure, Action::Register, &m.options),
            Message::Call(m) => {
                if self.dealer.call_in_flight(session, m.request) {
                    return None;
                }
                (&m.procedure, Action::Call, &m.options)
            }
            _ => return None,
        };
        if entry.authz_cache.contains_key(&(uri.clone(), action)) {
            return None;
        }
        Some((uri.clone(), action, options.clone(), procedure.to_owned()))
    }

    /// Park a message until the session's authorizer has answered.
    fn park(&mut self, session: Id, msg: Message) {
        let Some(entry) = self.sessions.get_mut(&session) else {
            return;
        };
        if entry.parked.len() >= MAX_PARKED {
            return self.kill(
                session,
                wamp_uri::CLOSE_KILLED,
                format!("more than {MAX_PARKED} messages are waiting for the session's authorizer"),
            );
        }
        entry.parked.push_back(msg);
    }

    /// Dispatch parked messages until one needs the authorizer again.
    fn drain_parked(&mut self, session: Id) {
        loop {
            let Some(entry) = self.sessions.get_mut(&session) else {
                return;
            };
            if entry.awaiting_authz {
                return;
            }
            let Some(msg) = entry.parked.pop_front() else {
                return;
            };
            if let Some((uri, action, options, procedure)) = self.needs_authorizer(session, &msg) {
                if let Some(entry) = self.sessions.get_mut(&session) {
                    entry.parked.push_front(msg);
                    entry.awaiting_authz = true;
                }
                self.ask_authorizer(session, uri, action, options, procedure);
                return;
            }
            self.dispatch_now(session, msg);
        }
    }

    fn ask_authorizer(
        &mut self,
        session: Id,
        uri: String,
        action: Action,
        options: Dict,
        procedure: String,
    ) {
        let Some(e) = self.sessions.get(&session) else {
            return;
        };
        let details = proto::dict! {
            "session" => session,
            "authid" => e.info.authid.as_str(),
            "authrole" => e.info.authrole.as_str(),
            "authmethod" => e.info.authmethod.as_str(),
            "authprovider" => e.info.authprovider.as_str(),
            "authextra" => e.info.authextra.clone(),
        };
        let payload = Payload::args(vec![
            details.into(),
            Value::from(uri.as_str()),
            Value::from(action.name()),
            options.into(),
        ]);
        let waiter = Waiter::Authorize {
            session,
            uri,
            action,
            procedure: procedure.clone(),
        };
        self.internal_call(&procedure, payload, AUTHORIZER_TIMEOUT_MS, waiter);
    }

    /// Close a session from the router's side.
    pub(crate) fn kill(&mut self, session: Id, reason: &str, message: String) {
        if let Some(entry) = self.sessions.get_mut(&session) {
            warn!(session, authid = %entry.info.authid, reason, "{message}");
            entry.killed = true;
            entry.link.kill.kill(reason, message);
            self.doomed.push(session);
        }
    }

    /// A dynamic authorizer's answer for this action, if the session's role
    /// has an authorizer; one-time answers are consumed here.
    fn cached_decision(
        &mut self,
        session: Id,
        uri_str: &str,
        action: Action,
    ) -> Option<Result<crate::authz::Decision, (&'static str, String)>> {
        let entry = self.sessions.get_mut(&session)?;
        self.authz.authorizer_for(&entry.info.authrole)?;
        let key = (uri_str.to_owned(), action);
        let cached = entry.authz_cache.get(&key)?.clone();
        if !cached.keep {
            entry.authz_cache.remove(&key);
        }
        Some(match cached.reason {
            Some(r) => Err(r),
            None => Ok(crate::authz::Decision {
                allow: cached.allow,
                disclose: cached.disclose,
                disclose_on_request: true,
            }),
        })
    }

    fn role(&self, session: Id) -> &str {
        self.sessions
            .get(&session)
            .map_or("", |e| e.info.authrole.as_str())
    }

    /// Check a client URI: its syntax under `policy`, the role's permission,
    /// then the reserved `wamp.` prefix. Returns the permission's decision
    /// (disclosure), or the error to send.
    fn check_uri(
        &mut self,
        session: Id,
        uri_str: &str,
        policy: MatchPolicy,
        action: Action,
    ) -> Result<crate::authz::Decision, (&'static str, String)> {
        if let Err(e) = uri::validate(uri_str, policy, self.strict) {
            return Err((wamp_uri::INVALID_URI, e.to_string()));
        }
        // Authorization is decided before anything else, so a role that may
        // not use a URI learns nothing about it.
        // A pattern is authorized as the whole set of URIs it matches: a
        // role allowed one URI must not receive calls or events for others.
        let decision = match self.cached_decision(session, uri_str, action) {
            Some(Err(reason)) => return Err(reason),
            Some(Ok(d)) if d.allow => d,
            Some(Ok(_)) => {
                return Err((
                    wamp_uri::NOT_AUTHORIZED,
                    format!(
                        "session is not authorized to {action} {uri_str:?} (role {:?}): its authorizer denied it",
                        self.role(session)
                    ),
                ));
            }
            None => self
                .authz
                .authorize_pattern(self.role(session), uri_str, policy, action)
                .map_err(|text| (wamp_uri::NOT_AUTHORIZED, text))?,
        };
        if (uri::is_reserved(uri_str) || uri_str.starts_with("trellis."))
            && matches!(action, Action::Register | Action::Publish)
        {
            return Err((
                wamp_uri::INVALID_URI,
                format!(
                    "{uri_str:?}: the \"wamp.\" and \"trellis.\" prefixes are reserved for the router"
                ),
            ));
        }
        Ok(decision)
    }

    /// Whether a caller or publisher is disclosed: when its permission says
    /// so, or when it asks (`disclose_me`) and the permission does not
    /// refuse that (`disclose.on_request: false`, the refusal logged).
    fn disclosed(
        &self,
        session: Id,
        d: crate::authz::Decision,
        asked: bool,
        action: Action,
        uri_str: &str,
    ) -> Result<bool, (&'static str, String)> {
        if d.disclose || !asked {
            return Ok(d.disclose);
        }
        if d.disclose_on_request {
            return Ok(true);
        }
        let text = format!(
            "role {:?} may not disclose its identity when it does {action} on {uri_str:?}: the realm's permission sets disclose.on_request to false; send it without disclose_me",
            self.role(session)
        );
        info!(session, uri = %uri_str, %action, "disclose_me refused: {text}");
        Err((wamp_uri::OPTION_DISALLOWED_DISCLOSE_ME, text))
    }

    fn dispatch(&mut self, session: Id, msg: Message) {
        let waiting = self
            .sessions
            .get(&session)
            .is_some_and(|e| e.awaiting_authz || !e.parked.is_empty());
        if waiting {
            return self.park(session, msg);
        }
        if let Some((uri, action, options, procedure)) = self.needs_authorizer(session, &msg) {
            self.park(session, msg);
            if let Some(e) = self.sessions.get_mut(&session) {
                e.awaiting_authz = true;
            }
            return self.ask_authorizer(session, uri, action, options, procedure);
        }
        self.dispatch_now(session, msg);
    }

    fn dispatch_now(&mut self, session: Id, msg: Message) {
        match msg {
            Message::Publish(m) => self.publish(session, m),
            Message::Subscribe(m) => self.subscribe(session, m),
            Message::Unsubscribe(m) => self.unsubscribe(session, m),
            Message::Register(m) => self.register(session, m),
            Message::Unregister(m) => self.unregister(session, m),
            Message::Call(m) => self.call(session, m),
            Message::Cancel(m) => self.cancel(session, m),
            Message::Yield(m) => self.yield_(session, m),
            Message::Error(m) if m.request_type == code::INVOCATION => {
                self.invocation_error(session, m)
            }
            other => self.kill(
                session,
                wamp_uri::PROTOCOL_VIOLATION,
                format!(
                    "{} is not a message a client may send to a router here",
                    other.name()
                ),
            ),
        }
    }

    // ----- Pub/Sub -----

    /// Deliver one publication to every eligible subscriber: one EVENT per
    /// matching subscription, shared by all its subscribers.
    pub(crate) fn fanout(&mut self, p: &Publication) {
        let Realm {
            broker,
            sessions,
            doomed,
            authz,
            ..
        } = self;
        let mut recipients = Vec::new();
        for sub in broker.matching(p.topic) {
            recipients.clear();
            for &sid in &sub.subscribers {
                if p.exclude == Some(sid) {
                    continue;
                }
                let Some(entry) = sessions.get(&sid) else {
                    continue;
                };
                if receives(authz, p.audience, sub.policy, p.topic, sid, &entry.info) {
                    recipients.push(sid);
                }
            }
            if recipients.is_empty() {
                continue;
            }
            let mut details = p.details.clone();
            if sub.policy != MatchPolicy::Exact {
                details.insert("topic".into(), Value::from(p.topic));
            }
            let event = OutMsg::new(Message::Event(Event {
                subscription: sub.id,
                publication: p.id,
                details,
                payload: p.payload.clone(),
            }));
            for &sid in &recipients {
                deliver(sessions, doomed, sid, event.clone());
            }
        }
        if self.broker.wants_history(p.topic) {
            self.broker.record(&HistoryEvent {
                timestamp: crate::time::now_iso8601(),
                publication: p.id,
                topic: p.topic.to_owned(),
                payload: p.payload.clone(),
                audience: p.audience.clone(),
            });
        }
    }

    /// Publish an event from the router itself (meta events, testaments).
    pub(crate) fn publish_internal(&mut self, topic: &str, payload: Payload, audience: &Audience) {
        self.fanout(&Publication {
            id: rand::random_range(1..=proto::MAX_ID),
            topic,
            payload: &payload,
            details: &Dict::new(),
            audience,
            exclude: None,
        });
    }

    fn publish(&mut self, session: Id, p: Publish) {
        let ack = matches!(p.options.get("acknowledge"), Some(Value::Bool(true)));
        let fail = |realm: &mut Realm, uri: &'static str, text: String| {
            if ack {
                realm.send(session, error_msg(code::PUBLISH, p.request, uri, text));
            } else {
                debug!(session, topic = %p.topic, error = uri, "unacknowledged publish refused: {text}");
            }
        };
        let decision = match self.check_uri(session, &p.topic, MatchPolicy::Exact, Action::Publish)
        {
            Ok(d) => d,
            Err((uri, text)) => return fail(self, uri, text),
        };
        let parsed = (|| {
            let exclude_me = opt_bool(&p.options, "exclude_me")?.unwrap_or(true);
            let disclose_me = opt_bool(&p.options, "disclose_me")?.unwrap_or(false);
            let retain = opt_bool(&p.options, "retain")?.unwrap_or(false);
            Ok::<_, String>((
                exclude_me,
                disclose_me,
                retain,
                Audience::parse(&p.options)?,
                ppt_options(&p.options)?,
            ))
        })();
        let (exclude_me, disclose_me, retain, audience, mut details) = match parsed {
            Ok(x) => x,
            Err(text) => return fail(self, wamp_uri::INVALID_ARGUMENT, text),
        };
        let disclose =
            match self.disclosed(session, decision, disclose_me, Action::Publish, &p.topic) {
                Ok(d) => d,
                Err((uri, text)) => return fail(self, uri, text),
            };
        let publication = rand::random_range(1..=proto::MAX_ID);
        if disclose {
            details.insert("publisher".into(), Value::from(session));
            if let Some(e) = self.sessions.get(&session) {
                details.insert(
                    "publisher_authid".into(),
                    Value::from(e.info.authid.as_str()),
                );
                details.insert(
                    "publisher_authrole".into(),
                    Value::from(e.info.authrole.as_str()),
                );
            }
        }
        self.fanout(&Publication {
            id: publication,
            topic: &p.topic,
            payload: &p.payload,
            details: &details,
            audience: &audience,
            exclude: exclude_me.then_some(session),
        });
        if retain {
            let kept = self.broker.retain(
                &p.topic,
                Retained {
                    publication,
                    details,
                    payload: p.payload,
                    audience,
                    publisher: session,
                },
            );
            if !kept {
                warn!(topic = %p.topic, "event not retained: the realm's limit of retained topics is reached");
            }
        }
        if ack {
            self.send(
                session,
                Message::Published(Published {
                    request: p.request,
                    publication,
                }),
            );
        }
    }

    fn subscribe(&mut self, session: Id, s: Subscribe) {
        let policy = match MatchPolicy::from_option(s.options.get("match")) {
            Ok(p) => p,
            Err(text) => {
                return self.send(
                    session,
                    error_msg(code::SUBSCRIBE, s.request, wamp_uri::INVALID_ARGUMENT, text),
                );
            }
        };
        let get_retained = match opt_bool(&s.options, "get_retained") {
            Ok(g) => g.unwrap_or(false),
            Err(text) => {
                return self.send(
                    session,
                    error_msg(code::SUBSCRIBE, s.request, wamp_uri::INVALID_ARGUMENT, text),
                );
            }
        };
        if let Err((uri, text)) = self.check_uri(session, &s.topic, policy, Action::Subscribe) {
            return self.send(session, error_msg(code::SUBSCRIBE, s.request, uri, text));
        }
        let r = self.broker.subscribe(session, &s.topic, policy);
        debug!(session, topic = %s.topic, %policy, subscription = r.id, created = r.created, "subscribed");
        self.send(
            session,
            Message::Subscribed(Subscribed {
                request: s.request,
                subscription: r.id,
            }),
        );
        if get_retained {
            self.send_retained(session, r.id, policy);
        }
        if r.created {
            self.meta_subscription_created(session, r.id);
        }
        self.meta_event(
            "wamp.subscription.on_subscribe",
            vec![session.into(), r.id.into()],
        );
    }

    fn send_retained(&mut self, session: Id, subscription: Id, policy: MatchPolicy) {
        let Some(entry) = self.sessions.get(&session) else {
            return;
        };
        let info = &entry.info;
        let mut out = Vec::new();
        for (topic, r) in self.broker.retained_for(subscription) {
            // The publisher's audience holds for as long as the event is
            // kept, exactly as for the live event.
            if !receives(&self.authz, &r.audience, policy, topic, session, info) {
                continue;
            }
            let mut details = r.details.clone();
            details.insert("retained".into(), Value::Bool(true));
            if policy != MatchPolicy::Exact {
                details.insert("topic".into(), Value::from(topic));
            }
            out.push(Message::Event(Event {
                subscription,
                publication: r.publication,
                details,
                payload: r.payload.clone(),
            }));
        }
        for m in out {
            self.send(session, m);
        }
    }

    fn unsubscribe(&mut self, session: Id, u: Unsubscribe) {
        match self.broker.unsubscribe(session, u.subscription) {
            Some(r) => {
                self.send(
                    session,
                    Message::Unsubscribed(Unsubscribed {
                        request: u.request,
                        details: None,
                    }),
                );
                self.meta_unsubscribed(session, u.subscription, r.deleted);
            }
            None => self.send(
                session,
                error_msg(
                    code::UNSUBSCRIBE,
                    u.request,
                    wamp_uri::NO_SUCH_SUBSCRIPTION,
                    format!("this session holds no subscription {}", u.subscription),
                ),
            ),
        }
    }

    // ----- RPC -----

    fn register(&mut self, session: Id, r: Register) {
        let fail = |realm: &mut Realm, uri: &'static str, text: String| {
            realm.send(session, error_msg(code::REGISTER, r.request, uri, text));
        };
        let policy = match MatchPolicy::from_option(r.options.get("match")) {
            Ok(p) => p,
            Err(text) => return fail(self, wamp_uri::INVALID_ARGUMENT, text),
        };
        let invoke = match r.options.get("invoke") {
            None | Some(Value::Null) => InvokePolicy::Single,
            Some(Value::Str(s)) => match InvokePolicy::from_name(s) {
                Some(p) => p,
                None => {
                    return fail(
                        self,
                        wamp_uri::INVALID_ARGUMENT,
                        format!(
                            "unknown invoke policy {s:?}: expected single, roundrobin, random, first or last"
                        ),
                    );
                }
            },
            Some(other) => {
                return fail(
                    self,
                    wamp_uri::INVALID_ARGUMENT,
                    format!(
                        "option \"invoke\" must be a string, found {}",
                        other.type_name()
                    ),
                );
            }
        };
        if let Err((uri, text)) = self.check_uri(session, &r.procedure, policy, Action::Register) {
            return fail(self, uri, text);
        }
        let existed = self.dealer.lookup_exact(&r.procedure, policy).is_some();
        match self.dealer.register(session, &r.procedure, policy, invoke) {
            Ok(id) => {
                debug!(session, procedure = %r.procedure, %policy, registration = id, "registered");
                self.send(
                    session,
                    Message::Registered(Registered {
                        request: r.request,
                        registration: id,
                    }),
                );
                if !existed {
                    self.meta_registration_created(session, id);
                }
                self.meta_event(
                    "wamp.registration.on_register",
                    vec![session.into(), id.into()],
                );
            }
            Err(e) => {
                let text = match e {
                    RegisterError::AlreadyExists => {
                        format!(
                            "procedure {:?} is already registered (invoke policy single)",
                            r.procedure
                        )
                    }
                    RegisterError::PolicyMismatch { existing } => format!(
                        "procedure {:?} is already registered with invoke policy {:?}, not {:?}",
                        r.procedure,
                        existing.name(),
                        invoke.name()
                    ),
                    RegisterError::AlreadyRegisteredBySession => {
                        format!("this session has already registered {:?}", r.procedure)
                    }
                };
                fail(self, wamp_uri::PROCEDURE_ALREADY_EXISTS, text);
            }
        }
    }

    fn unregister(&mut self, session: Id, u: Unregister) {
        match self.dealer.unregister(session, u.registration) {
            Some(deleted) => {
                self.send(
                    session,
                    Message::Unregistered(Unregistered {
                        request: u.request,
                        details: None,
                    }),
                );
                self.meta_unregistered(session, u.registration, deleted);
            }
            None => self.send(
                session,
                error_msg(
                    code::UNREGISTER,
                    u.request,
                    wamp_uri::NO_SUCH_REGISTRATION,
                    format!("this session holds no registration {}", u.registration),
                ),
            ),
        }
    }

    fn call(&mut self, session: Id, c: Call) {
        let fail = |realm: &mut Realm, uri: &'static str, text: String| {
            realm.send(session, error_msg(code::CALL, c.request, uri, text));
        };
        if let Some(p) = self.dealer.pending_for_caller(session, c.request) {
            return self.continue_progressive_call(session, p, c);
        }
        let limit = self
            .sessions
            .get(&session)
            .map_or(usize::MAX, |e| e.info.max_calls);
        if self.dealer.calls_of(session) >= limit {
            return fail(
                self,
                TOO_MANY_CALLS,
                format!(
                    "{limit} calls of this session are already in flight (the transport's options.max_calls_in_flight): wait for answers before calling {}",
                    c.procedure
                ),
            );
        }
        let decision = match self.check_uri(session, &c.procedure, MatchPolicy::Exact, Action::Call)
        {
            Ok(d) => d,
            Err((uri, text)) => return fail(self, uri, text),
        };
        let flags = (|| {
            // Milliseconds, as the WAMP spec says (autobahn-python passes
            // CallOptions.timeout through unchanged); fractions round up.
            let timeout = match c.options.get("timeout") {
                None | Some(Value::Null) => 0,
                Some(Value::Float(x)) if x.is_finite() && *x >= 0.0 && *x < 1e12 => x.ceil() as u64,
                Some(v) => v.as_u64().ok_or_else(|| {
                    format!("option \"timeout\" must be a non-negative number of milliseconds, found {v}")
                })?,
            };
            Ok::<_, String>((
                opt_bool(&c.options, "disclose_me")?.unwrap_or(false),
                opt_bool(&c.options, "receive_progress")?.unwrap_or(false),
                opt_bool(&c.options, "progress")?.unwrap_or(false),
                timeout,
                ppt_options(&c.options)?,
            ))
        })();
        let (disclose_me, receive_progress, progress, timeout, mut details) = match flags {
            Ok(x) => x,
            Err(text) => return fail(self, wamp_uri::INVALID_ARGUMENT, text),
        };
        if c.procedure == "trellis.token.issue" {
            return self.issue_token(session, c.request, &c.payload);
        }
        if uri::is_reserved(&c.procedure) {
            return match self.meta_call(session, &c.procedure, c.payload) {
                Ok(payload) => self.send(
                    session,
                    Message::Result(CallResult {
                        request: c.request,
                        details: Dict::new(),
                        payload,
                    }),
                ),
                Err((uri, text)) => fail(self, uri, text),
            };
        }
        let Some((registration, callee)) = self.dealer.route(&c.procedure) else {
            return fail(
                self,
                wamp_uri::NO_SUCH_PROCEDURE,
                format!("no callee is registered for procedure {:?}", c.procedure),
            );
        };
        if progress
            && !self
                .sessions
                .get(&callee)
                .is_some_and(|e| e.info.features.callee_progressive_call_invocations)
        {
            return fail(
                self,
                wamp_uri::FEATURE_NOT_SUPPORTED,
                format!(
                    "the callee of {:?} does not support progressive call invocations",
                    c.procedure
                ),
            );
        }
        if self
            .dealer
            .get(registration)
            .is_some_and(|r| r.policy != MatchPolicy::Exact)
        {
            details.insert("procedure".into(), Value::from(c.procedure.as_str()));
        }
        if receive_progress {
            details.insert("receive_progress".into(), Value::Bool(true));
        }
        if progress {
            details.insert("progress".into(), Value::Bool(true));
        }
        if timeout > 0 {
            details.insert("timeout".into(), Value::from(timeout));
        }
        let disclose =
            match self.disclosed(session, decision, disclose_me, Action::Call, &c.procedure) {
                Ok(d) => d,
                Err((uri, text)) => return fail(self, uri, text),
            };
        if disclose && let Some(e) = self.sessions.get(&session) {
            details.insert("caller".into(), Value::from(session));
            details.insert("caller_authid".into(), Value::from(e.info.authid.as_str()));
            details.insert(
                "caller_authrole".into(),
                Value::from(e.info.authrole.as_str()),
            );
        }
        let invocation = self
            .dealer
            .start_call(session, c.request, registration, callee);
        if progress && let Some(p) = self.dealer.pending_mut(invocation) {
            p.caller_progress = true;
        }
        if timeout > 0 {
            self.start_timer(invocation, session, c.request, timeout);
        }
        self.send(
            callee,
            Message::Invocation(Invocation {
                request: invocation,
                registration,
                details,
                payload: c.payload,
            }),
        );
    }

    /// A CALL reusing the request id of a call in flight: allowed only to
    /// continue a progressive call invocation.
    fn continue_progressive_call(&mut self, session: Id, p: Pending, c: Call) {
        if !p.caller_progress {
            return self.kill(
                session,
                wamp_uri::PROTOCOL_VIOLATION,
                format!(
                    "CALL request id {} is already in use by a call in flight",
                    c.request
                ),
            );
        }
        let more = matches!(c.options.get("progress"), Some(Value::Bool(true)));
        if let Some(pm) = self.dealer.pending_mut(p.invocation) {
            pm.caller_progress = more;
        }
        let mut details = Dict::new();
        if more {
            details.insert("progress".into(), Value::Bool(true));
        }
        self.send(
            p.callee,
            Message::Invocation(Invocation {
                request: p.invocation,
                registration: p.registration,
                details,
                payload: c.payload,
            }),
        );
    }

    /// `trellis.token.issue(authid, role=None, ttl=None)`: mint a one-time
    /// login token. Authorized like any call before it gets here.
    fn issue_token(&mut self, session: Id, request: Id, p: &Payload) {
        let fail = |realm: &mut Realm, uri: &str, text: String| {
            realm.send(session, error_msg(code::CALL, request, uri, text));
        };
        let Some(mint) = self.tokens.clone() else {
            return fail(
                self,
                wamp_uri::NO_SUCH_PROCEDURE,
                "this router has no token store: configure \"token\" in a transport's auth".into(),
            );
        };
        let get = |i: usize, k: &str| {
            p.args
                .get(i)
                .or_else(|| p.kwargs.get(k))
                .filter(|v| !matches!(v, Value::Null))
        };
        let Some(Value::Str(authid)) = get(0, "authid").cloned() else {
            return fail(
                self,
                wamp_uri::INVALID_ARGUMENT,
                "trellis.token.issue(authid, role=None, ttl=None): authid must be a string".into(),
            );
        };
        let role = match get(1, "role") {
            None => None,
            Some(Value::Str(r)) => Some(r.clone()),
            Some(v) => {
                return fail(
                    self,
                    wamp_uri::INVALID_ARGUMENT,
                    format!("role must be a string, found {}", v.type_name()),
                );
            }
        };
        if let Some(r) = &role
            && !self.authz.has_role(r)
        {
            return fail(
                self,
                wamp_uri::NO_SUCH_ROLE,
                format!("role {r:?} does not exist in realm {:?}", self.name),
            );
        }
        let lifetime = match get(2, "ttl") {
            None => mint.max_age,
            Some(v) => match v.as_u64().filter(|n| *n > 0) {
                Some(n) => Duration::from_secs(n).min(mint.max_age),
                None => {
                    return fail(
                        self,
                        wamp_uri::INVALID_ARGUMENT,
                        format!("ttl must be a positive number of seconds, found {v}"),
                    );
                }
            },
        };
        let weak = self.self_tx.clone();
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
                let _ = tx.send(RealmCommand::Deliver { to: session, msg }).await;
            }
        });
    }

    fn start_timer(&mut self, invocation: Id, caller: Id, request: Id, ms: u64) {
        let weak = self.self_tx.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if let Some(tx) = weak.upgrade() {
                let _ = tx
                    .send(RealmCommand::Timeout {
                        invocation,
                        caller,
                        request,
                    })
                    .await;
            }
        });
        self.timers.insert(invocation, task.abort_handle());
    }

    /// Stop a call's timeout timer, if it has one.
    fn cancel_timer(&mut self, invocation: Id) {
        if let Some(t) = self.timers.remove(&invocation) {
            t.abort();
        }
    }

    /// Forget a call and its timer.
    fn finish_call(&mut self, invocation: Id) -> Option<Pending> {
        self.cancel_timer(invocation);
        self.dealer.finish(invocation)
    }

    /// Tell a callee to stop working on an invocation, if it can listen.
    fn interrupt(&mut self, p: &Pending, mode: &str) {
        let supported = self
            .sessions
            .get(&p.callee)
            .is_some_and(|e| e.info.features.callee_call_canceling);
        if supported {
            self.send(
                p.callee,
                Message::Interrupt(Interrupt {
                    request: p.invocation,
                    options: proto::dict! { "mode" => mode },
                }),
            );
        }
    }

    fn call_timed_out(&mut self, invocation: Id, caller: Id, request: Id) {
        self.timers.remove(&invocation);
        let Some(p) = self.dealer.pending_for_caller(caller, request) else {
            return;
        };
        if p.invocation != invocation {
            return;
        }
        self.finish_call(invocation);
        self.interrupt(&p, "killnowait");
        debug!(caller, request, "call timed out");
        self.send(
            caller,
            error_msg(
                code::CALL,
                request,
                wamp_uri::TIMEOUT,
                "the call did not finish within its timeout".into(),
            ),
        );
    }

    fn cancel(&mut self, session: Id, c: Cancel) {
        let mode = match c.options.get("mode") {
            None | Some(Value::Null) => CancelMode::Kill,
            Some(Value::Str(m)) if m == "skip" => CancelMode::Skip,
            Some(Value::Str(m)) if m == "kill" => CancelMode::Kill,
            Some(Value::Str(m)) if m == "killnowait" => CancelMode::KillNoWait,
            Some(other) => {
                return self.send(
                    session,
                    error_msg(
                        code::CANCEL,
                        c.request,
                        wamp_uri::INVALID_ARGUMENT,
                        format!("unknown cancel mode {other}: expected \"skip\", \"kill\" or \"killnowait\""),
                    ),
                );
            }
        };
        let Some(p) = self.dealer.pending_for_caller(session, c.request) else {
            // The call already finished: its RESULT or ERROR is on its way.
            return;
        };
        let callee_listens = self
            .sessions
            .get(&p.callee)
            .is_some_and(|e| e.info.features.callee_call_canceling);
        // A callee that cannot be interrupted gets skip semantics.
        let mode = if callee_listens {
            mode
        } else {
            CancelMode::Skip
        };
        match mode {
            CancelMode::Kill => {
                if p.interrupted {
                    return;
                }
                if let Some(pm) = self.dealer.pending_mut(p.invocation) {
                    pm.interrupted = true;
                }
                // The callee answers with ERROR (or a late RESULT), which
                // reaches the caller as usual.
                self.interrupt(&p, "kill");
            }
            CancelMode::Skip | CancelMode::KillNoWait => {
                self.finish_call(p.invocation);
                if mode == CancelMode::KillNoWait {
                    self.interrupt(&p, "killnowait");
                }
                let name = if mode == CancelMode::Skip {
                    "skip"
                } else {
                    "killnowait"
                };
                self.send(
                    session,
                    error_msg(
                        code::CALL,
                        c.request,
                        wamp_uri::CANCELED,
                        format!("the call was canceled by the caller (mode {name})"),
                    ),
                );
            }
        }
    }

    fn yield_(&mut self, session: Id, y: Yield) {
        let Some(p) = self.dealer.pending_for_callee(session, y.request) else {
            debug!(
                session,
                invocation = y.request,
                "YIELD for an invocation that is no longer pending: dropped"
            );
            return;
        };
        let mut details = match ppt_options(&y.options) {
            Ok(d) => d,
            Err(text) => {
                // The callee's answer is unusable; the caller must not wait.
                self.finish_call(p.invocation);
                self.send(
                    p.caller,
                    error_msg(
                        code::CALL,
                        p.caller_request,
                        wamp_uri::INVALID_ARGUMENT,
                        format!("the callee's YIELD is invalid: {text}"),
                    ),
                );
                return;
            }
        };
        let progress = matches!(y.options.get("progress"), Some(Value::Bool(true)));
        if progress {
            details.insert("progress".into(), Value::Bool(true));
        } else {
            self.finish_call(p.invocation);
        }
        self.send(
            p.caller,
            Message::Result(CallResult {
                request: p.caller_request,
                details,
                payload: y.payload,
            }),
        );
    }

    fn invocation_error(&mut self, session: Id, e: WampError) {
        let Some(p) = self.dealer.pending_for_callee(session, e.request) else {
            debug!(
                session,
                invocation = e.request,
                "ERROR for an invocation that is no longer pending: dropped"
            );
            return;
        };
        self.finish_call(p.invocation);
        let details = ppt_options(&e.details).unwrap_or_default();
        // After a kill-mode CANCEL the caller learns its call was canceled,
        // whatever URI the callee chose for stopping (autobahn-python says
        // wamp.error.runtime_error); the callee's arguments pass through.
        let error = if p.interrupted && e.error != wamp_uri::CANCELED {
            debug!(session, invocation = e.request, callee_error = %e.error, "interrupted call ended: reporting it as canceled");
            wamp_uri::CANCELED.to_owned()
        } else {
            e.error
        };
        self.send(
            p.caller,
            Message::Error(WampError {
                request_type: code::CALL,
                request: p.caller_request,
                details,
                error,
                payload: e.payload,
            }),
        );
    }

    // ----- Sessions -----

    fn leave(&mut self, session: Id) {
        let Some(entry) = self.sessions.remove(&session) else {
            return;
        };
        self.session_count
            .store(self.sessions.len(), Ordering::Relaxed);
        for (sub, r) in self.broker.remove_session(session) {
            self.meta_unsubscribed(session, sub, r.deleted);
        }
        let removed = self.dealer.remove_session(session);
        for &(reg, deleted) in &removed.registrations {
            self.meta_unregistered(session, reg, deleted);
        }
        for p in &removed.orphaned_calls {
            self.cancel_timer(p.invocation);
            self.send(
                p.caller,
                error_msg(
                    code::CALL,
                    p.caller_request,
                    wamp_uri::CANCELED,
                    "the callee left before answering the call".into(),
                ),
            );
        }
        for p in &removed.abandoned_calls {
            self.cancel_timer(p.invocation);
            self.interrupt(p, "killnowait");
        }
        for t in self.testaments.remove(&session).unwrap_or_default() {
            debug!(session, topic = %t.topic, scope = %t.scope, "publishing testament");
            let audience = Audience::parse(&t.options).unwrap_or_default();
            self.publish_internal(&t.topic, t.payload, &audience);
        }
        self.meta_event(
            "wamp.session.on_leave",
            vec![
                session.into(),
                entry.info.authid.as_str().into(),
                entry.info.authrole.as_str().into(),
            ],
        );
        debug!(
            session,
            authid = %entry.info.authid,
            registrations = removed.registrations.len(),
            abandoned_calls = removed.abandoned_calls.len(),
            "session left the realm"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppt_options_are_checked_and_collected() {
        let o = proto::dict! { "ppt_scheme" => "x_custom", "ppt_serializer" => "cbor", "acknowledge" => true };
        let d = ppt_options(&o).unwrap();
        assert_eq!(d.len(), 2);
        assert!(
            ppt_options(&proto::dict! { "ppt_cipher" => "x" }).is_err(),
            "scheme required"
        );
        assert!(
            ppt_options(&proto::dict! { "ppt_scheme" => 1i64 }).is_err(),
            "strings only"
        );
        assert!(ppt_options(&Dict::new()).unwrap().is_empty());
        let autobahn = proto::dict! { "enc_algo" => "x_custom", "enc_serializer" => "json" };
        assert_eq!(ppt_options(&autobahn).unwrap().len(), 2);
        assert!(
            ppt_options(&proto::dict! { "enc_key" => "k" }).is_err(),
            "enc_algo required"
        );
    }
}

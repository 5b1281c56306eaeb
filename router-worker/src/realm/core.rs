//! The realm's core: its sessions, broker and dealer, and the rules that
//! route between them, as a state machine with no I/O.
//!
//! [`Core::handle`] takes one [`Input`] and the wall-clock time, changes the
//! state, and leaves [`Effect`]s for the caller to carry out, in order
//! ([`Core::effects`]). Randomness (publication ids, the `random` invoke
//! policy) comes from the generator the core was built with, so a test
//! seeds it. The Pub/Sub handlers are in [`super::pubsub`], the RPC ones in
//! [`super::rpc`], dynamic authorization in [`crate::authz::dynamic`] and the
//! meta API in [`crate::meta`].

use std::collections::VecDeque;

use crate::fast::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use proto::errors::uri as wamp_uri;
use proto::message::{WampError, code};
use proto::uri::{self, MatchPolicy};
use proto::{Dict, Id, Message, Payload, Value};
use rand::rngs::SmallRng;
use tracing::{debug, info, warn};

use super::{InternalCallError, SessionInfo};
use crate::authz::dynamic::Cached;
use crate::authz::{Action, Authorizer, Decision};
use crate::broker::Broker;
use crate::dealer::Dealer;
use crate::outbound::OutMsg;
use trellis_config::router::{RealmConfig, UriCheck};

/// Testaments one session may leave.
pub const MAX_TESTAMENTS: usize = 32;
/// Default event history length when the config names none.
const DEFAULT_HISTORY: usize = 100;
/// The caller id of the router's own calls (authenticators, authorizers);
/// never a session id, which start at 1.
pub const INTERNAL: Id = 0;
/// The error for a CALL over the session's limit of calls in flight.
pub const TOO_MANY_CALLS: &str = "trellis.error.too_many_calls";

/// A call's timeout timer: the invocation, and the caller's request it
/// answers, so a timer that fires after its call ended (and the invocation
/// id was reused) finds nothing to time out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timer {
    /// The invocation the timer belongs to.
    pub invocation: Id,
    /// The caller ([`INTERNAL`] for the router's own calls).
    pub caller: Id,
    /// The caller's request id.
    pub request: Id,
}

/// What happens to a realm.
#[derive(Debug)]
pub enum Input {
    /// A session admitted by [`Core::join`] has been told so: announce it.
    Joined { session: Id },
    /// A client-to-router message of a joined session (boxed as in
    /// [`super::RealmCommand::Message`]).
    Message { session: Id, msg: Box<Message> },
    /// A session ended (GOODBYE, close, error): drop everything it held.
    Leave { session: Id },
    /// A meta event a session task produced (`wamp.session.on_stats`).
    MetaEvent {
        topic: &'static str,
        args: Vec<Value>,
    },
    /// A session's outbound queue of `queue` messages was full.
    SlowPeer { session: Id, queue: usize },
    /// A timer the core started has fired.
    Timer(Timer),
    /// Call a procedure as the router; answered by [`Effect::Reply`].
    InternalCall {
        ticket: u64,
        procedure: String,
        payload: Box<Payload>,
        timeout_ms: u64,
    },
    /// A message for a session produced outside the core (a minted token).
    Deliver { to: Id, msg: Box<Message> },
    /// New roles, permissions and URI checking; sessions stay.
    Reconfigure { cfg: Box<RealmConfig> },
    /// Close every session: the realm was removed.
    Close,
    /// The router is shutting down: every session, and any that joins
    /// from now on, is told GOODBYE `wamp.close.system_shutdown`.
    Shutdown,
    /// A publication from another node of the cluster ([`Effect::Forward`]
    /// there): deliver it to this node's subscribers.
    Remote(bytes::Bytes),
    /// A call, cancel or answer from another member ([`Effect::ToMember`]
    /// there).
    RemoteRpc(bytes::Bytes),
    /// A registration of another member appeared or went away.
    RemoteRegistry(Box<super::cluster::RegistryEntry>),
    /// A member of the cluster is gone (dead, or the backplane is down).
    MemberDown { member: Arc<str>, why: &'static str },
    /// The directory lost this router's entry for a registration.
    RegistryLost { session: Id, registration: Id },
    /// The backplane's connection went down or came back.
    Link(bool),
    /// A member stopped answering (`false`) or answers again.
    Reachable { member: Arc<str>, yes: bool },
    /// This realm's part of another member's meta query; the answer is
    /// left in [`Core::meta_answer`].
    MetaLocal {
        procedure: String,
        payload: Box<Payload>,
    },
    /// The other members' answers to a [`Effect::Gather`].
    Gathered {
        gather: Box<super::cluster::Gather>,
        remote: Vec<Result<Payload, (String, String)>>,
    },
    /// The directory answered a [`Effect::Claim`].
    ClaimDone {
        session: Id,
        request: Id,
        outcome: super::cluster::Claimed,
    },
}

/// What the core asks its caller to do. Small (the rare variants are
/// boxed): a publication to a thousand subscribers is a thousand of these.
#[derive(Debug)]
pub enum Effect {
    /// Queue a message for a session without waiting; a full queue is
    /// reported back as [`Input::SlowPeer`].
    Send { to: Id, msg: Arc<OutMsg> },
    /// Close a session.
    Kill { session: Id, close: Box<Close> },
    /// The session is gone from the core: forget its link.
    Left { session: Id },
    /// Feed [`Input::Timer`] back after `after_ms` milliseconds.
    StartTimer { timer: Timer, after_ms: u64 },
    /// The timer is no longer wanted.
    CancelTimer { timer: Timer },
    /// Answer the router-made call `ticket`.
    Reply {
        ticket: u64,
        result: Box<Result<Payload, InternalCallError>>,
    },
    /// Mint a one-time login token and deliver the RESULT (or ERROR) with
    /// [`Input::Deliver`].
    Mint(Box<Mint>),
    /// The realm's roles and permissions changed.
    Authz(Arc<Authorizer>),
    /// Send a publication to the cluster's other nodes (encoded): only in
    /// a realm of a clustered node.
    Forward(bytes::Bytes),
    /// Send an RPC envelope to one member of the cluster.
    ToMember(Box<(Arc<str>, bytes::Bytes)>),
    /// Put a local registration into the cluster's directory, or take it
    /// out.
    Registry(Box<super::cluster::RegistryOp>),
    /// Claim a `single` procedure in the directory; answered by
    /// [`Input::ClaimDone`].
    Claim(Box<super::cluster::Claim>),
    /// Give up a claimed procedure (a directory key).
    Release(Box<String>),
    /// Ask every member a meta query; answered by [`Input::Gathered`].
    Gather(Box<super::cluster::Gather>),
}

/// Why a session is closed: the ABORT or GOODBYE reason URI and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub reason: String,
    pub message: String,
}

/// A `trellis.token.issue` call to answer with a fresh token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mint {
    /// The caller.
    pub to: Id,
    /// Its CALL request id.
    pub request: Id,
    pub authid: String,
    pub role: Option<String>,
    pub lifetime: Duration,
}

/// Who waits for the answer to a router-made call.
#[derive(Debug)]
pub(crate) enum Waiter {
    /// A task outside the realm (an authenticator call), by ticket.
    Task(u64),
    /// The realm itself: a dynamic authorizer's answer for a session.
    Authorize {
        session: Id,
        uri: String,
        action: Action,
        procedure: String,
        /// When the authorizer was asked.
        asked: SystemTime,
        /// Asked the legacy way: without the options argument.
        legacy: bool,
    },
}

pub(crate) struct SessionEntry {
    pub(crate) info: SessionInfo,
    /// Set once the session has been killed, so it is killed (and its
    /// overflow logged) once.
    pub(crate) killed: bool,
    /// What a dynamic authorizer left for this session: allocated when its
    /// role first asks one (most sessions never do, and every session's
    /// entry is kept for its whole life).
    pub(crate) dynamic: Option<Box<DynamicAuthz>>,
}

/// A session's dealings with its role's dynamic authorizer.
#[derive(Default)]
pub(crate) struct DynamicAuthz {
    /// The authorizer's answers by (URI, action).
    pub(crate) cache: HashMap<(String, Action), Cached>,
    /// Messages waiting for the authorizer, in arrival order, so a
    /// session's messages never overtake each other.
    pub(crate) parked: VecDeque<Message>,
    /// An authorizer call for this session is outstanding.
    pub(crate) awaiting: bool,
}

impl SessionEntry {
    /// The dynamic authorizer's state, allocated on first use.
    pub(crate) fn dynamic(&mut self) -> &mut DynamicAuthz {
        self.dynamic.get_or_insert_with(Box::default)
    }
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

/// A realm's state: see the module documentation.
pub struct Core {
    pub(crate) name: String,
    /// Whether client URIs must follow the strict rule.
    pub(crate) strict: bool,
    pub(crate) authz: Arc<Authorizer>,
    /// Dynamic authorizers found to take the legacy three arguments,
    /// named in the log once each (bounded).
    pub(crate) legacy_authorizers: std::collections::HashSet<String>,
    /// [`Input::Shutdown`] came: a session that joins now is closed at once.
    pub(crate) shutting_down: bool,
    pub(crate) broker: Broker,
    pub(crate) dealer: Dealer,
    /// Boxed entries: the table keeps spare slots (up to half of them
    /// after a resize), and an empty slot should cost a pointer, not an entry.
    pub(crate) sessions: HashMap<Id, Box<SessionEntry>>,
    /// Sessions killed while handling the current input: they leave the
    /// realm as soon as it is handled, without waiting for their task to
    /// finish closing a connection the peer may not be reading.
    doomed: Vec<Id>,
    /// Timers running for calls in flight.
    pub(crate) timers: HashSet<Timer>,
    /// Testaments by session.
    pub(crate) testaments: HashMap<Id, Vec<Testament>>,
    /// Router-made calls in flight by request id.
    pub(crate) waiters: HashMap<Id, Waiter>,
    pub(crate) next_internal: Id,
    /// The longest token lifetime, when the router has a token store.
    pub(crate) token_max_age: Option<Duration>,
    pub(crate) rng: SmallRng,
    /// The time of the input being handled.
    pub(crate) now: SystemTime,
    /// What the current input asks for, in order.
    pub(crate) fx: Vec<Effect>,
    /// Counters since the realm started.
    pub(crate) stats: Counters,
    /// The node is part of a cluster: publications go to the other nodes
    /// too ([`Effect::Forward`]).
    pub(crate) clustered: bool,
    /// The router's `options.compat`: what `wamp.session.on_leave` carries.
    pub(crate) compat: trellis_config::router::Compat,
    /// This router's member id in the cluster.
    pub(crate) member: Option<Arc<str>>,
    /// Sessions of other members this realm knows (remote callees, remote
    /// callers of calls in flight here), by member.
    pub(crate) remote: HashMap<Id, Arc<str>>,
    /// Remote callees: how many directory registrations each has here.
    pub(crate) remote_callees: HashMap<Id, usize>,
    /// (remote session, its registration id) → the registration here.
    pub(crate) remote_regs: HashMap<(Id, Id), Id>,
    /// Calls of local callers running on another member: (caller,
    /// request) → where.
    pub(crate) remote_calls: HashMap<(Id, Id), super::cluster::RemoteCall>,
    /// Members not heard from for a while: their callees are passed over
    /// while another callee can take a call.
    pub(crate) unreachable: HashSet<Arc<str>>,
    /// The backplane is connected (calls to other members can go out).
    pub(crate) link_up: bool,
    /// `single` REGISTERs waiting for the directory: (session, request) →
    /// the REGISTER and its directory key.
    pub(crate) claims: HashMap<(Id, Id), (proto::message::Register, String)>,
    /// `single` registrations holding a directory key, by registration.
    pub(crate) claimed: HashMap<Id, String>,
    /// The answer to the last [`Input::MetaLocal`].
    pub meta_answer: Option<Result<Payload, (String, String)>>,
    /// Calls waiting for a callee (`store.call-queue`).
    pub(crate) queues: super::queue::CallQueues,
}

/// A realm's counters: plain integers, since only the realm's actor
/// touches them; read with [`Core::stats`].
#[derive(Debug, Clone)]
pub(crate) struct Counters {
    /// Messages from clients, by type code.
    received: [u64; MESSAGE_CODES],
    /// Messages to clients, by type code.
    sent: [u64; MESSAGE_CODES],
    joined: u64,
    left: u64,
    slow_peers: u64,
    /// Calls ended, by [`CallOutcome`].
    calls: [u64; CallOutcome::ALL.len()],
    /// Authorization decisions: [`Action` as index][allowed, denied].
    pub(crate) authz: [[u64; 2]; 4],
    /// Calls' durations, CALL to the end as the router saw it.
    pub(crate) call_duration: Histogram,
    /// Dynamic authorizers' answers, question to answer.
    pub(crate) authorizer_duration: Histogram,
}

/// Upper bounds of the latency histograms, in seconds (the last, unnamed
/// bucket is +Inf).
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// A latency histogram over [`LATENCY_BUCKETS`]: per-bucket counts and
/// the sum of the observed seconds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Histogram {
    /// One count per bound of [`LATENCY_BUCKETS`], then +Inf.
    pub buckets: Vec<u64>,
    pub sum: f64,
}

/// A latency histogram over [`crate::realm::LATENCY_BUCKETS`] that tasks
/// share (rare events: one per login).
#[derive(Debug, Default)]
pub struct AtomicHistogram {
    buckets: [std::sync::atomic::AtomicU64; crate::realm::LATENCY_BUCKETS.len() + 1],
    sum_micros: std::sync::atomic::AtomicU64,
}

impl AtomicHistogram {
    /// Count one duration.
    pub fn observe(&self, d: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let secs = d.as_secs_f64();
        let i = crate::realm::LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(crate::realm::LATENCY_BUCKETS.len());
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Relaxed);
        }
        self.sum_micros
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> crate::realm::Histogram {
        use std::sync::atomic::Ordering::Relaxed;
        crate::realm::Histogram {
            buckets: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
            sum: self.sum_micros.load(Relaxed) as f64 / 1e6,
        }
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram {
            buckets: vec![0; LATENCY_BUCKETS.len() + 1],
            sum: 0.0,
        }
    }

    /// Count one duration of `secs` seconds.
    pub fn observe(&mut self, secs: f64) {
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(n) = self.buckets.get_mut(i) {
            *n += 1;
        }
        self.sum += secs;
    }

    /// Count the time from `started` to `now` (the realm's clock).
    pub fn observe_since(&mut self, started: SystemTime, now: SystemTime) {
        self.observe(now.duration_since(started).map_or(0.0, |d| d.as_secs_f64()));
    }

    /// How many durations were counted.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

impl Counters {
    /// `n` EVENTs sent at once (a publication's fan-out).
    pub(crate) fn events_sent(&mut self, n: usize) {
        self.sent[code::EVENT as usize] += n as u64;
    }
}

/// Message type codes counted (WAMP's go up to 70).
const MESSAGE_CODES: usize = 72;

impl Default for Counters {
    fn default() -> Self {
        Counters {
            received: [0; MESSAGE_CODES],
            sent: [0; MESSAGE_CODES],
            joined: 0,
            left: 0,
            slow_peers: 0,
            calls: [0; CallOutcome::ALL.len()],
            authz: [[0; 2]; 4],
            call_duration: Histogram::new(),
            authorizer_duration: Histogram::new(),
        }
    }
}

/// How a call ended, as the router answered its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// A final RESULT.
    Ok,
    /// An ERROR from the callee (or any error not below).
    Error,
    /// `wamp.error.canceled`.
    Canceled,
    /// `wamp.error.timeout`.
    Timeout,
    /// No callee: `wamp.error.no_such_procedure` or
    /// `wamp.error.no_available_callee`.
    NoCallee,
}

impl CallOutcome {
    /// Every result, in counter order.
    pub const ALL: [CallOutcome; 5] = [
        CallOutcome::Ok,
        CallOutcome::Error,
        CallOutcome::Canceled,
        CallOutcome::Timeout,
        CallOutcome::NoCallee,
    ];

    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::Error => "error",
            CallOutcome::Canceled => "canceled",
            CallOutcome::Timeout => "timeout",
            CallOutcome::NoCallee => "no_callee",
        }
    }

    /// What a message to a caller says of its call, if it ends one.
    fn of(msg: &Message) -> Option<CallOutcome> {
        match msg {
            Message::Result(r) => {
                let progress = matches!(r.details.get("progress"), Some(proto::Value::Bool(true)));
                (!progress).then_some(CallOutcome::Ok)
            }
            Message::Error(e) if e.request_type == proto::message::code::CALL => {
                Some(match e.error.as_str() {
                    wamp_uri::CANCELED => CallOutcome::Canceled,
                    "wamp.error.timeout" => CallOutcome::Timeout,
                    wamp_uri::NO_SUCH_PROCEDURE | "wamp.error.no_available_callee" => {
                        CallOutcome::NoCallee
                    }
                    _ => CallOutcome::Error,
                })
            }
            _ => None,
        }
    }
}

/// A realm's figures at one moment (the metrics a worker reports).
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct RealmStats {
    pub sessions: u64,
    pub registrations: u64,
    pub subscriptions: u64,
    pub sessions_joined: u64,
    pub sessions_left: u64,
    /// Sessions closed because they did not read (their queue was full).
    pub slow_peers_closed: u64,
    /// Messages from clients, by type name (`CALL`), non-zero only.
    pub received: std::collections::BTreeMap<String, u64>,
    /// Messages to clients, by type name, non-zero only.
    pub sent: std::collections::BTreeMap<String, u64>,
    /// Calls ended, by result (`ok`, `error`, ...).
    pub calls: std::collections::BTreeMap<String, u64>,
    /// Authorization decisions by `action/result` (`call/allowed`).
    pub authorizations: std::collections::BTreeMap<String, u64>,
    /// Calls' durations.
    #[serde(default)]
    pub call_duration: Histogram,
    /// Dynamic authorizers' answer times.
    #[serde(default)]
    pub authorizer_duration: Histogram,
}

/// What a session closed for the router's shutdown is told.
pub const SHUTDOWN_MESSAGE: &str = "the router is shutting down";

impl Core {
    /// A realm for `cfg` with no sessions. `token_max_age` is set when the
    /// router can mint login tokens; `rng` makes publication ids and
    /// random callee choices.
    pub fn new(cfg: &RealmConfig, token_max_age: Option<Duration>, rng: SmallRng) -> Core {
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
        Core {
            name: cfg.name.clone(),
            strict: cfg.options.uri_check == UriCheck::Strict,
            authz: Arc::new(Authorizer::new(&cfg.roles)),
            legacy_authorizers: std::collections::HashSet::new(),
            shutting_down: false,
            broker,
            dealer: Dealer::new(),
            sessions: HashMap::default(),
            doomed: Vec::new(),
            timers: HashSet::default(),
            testaments: HashMap::default(),
            waiters: HashMap::default(),
            next_internal: 0,
            token_max_age,
            rng,
            now: SystemTime::UNIX_EPOCH,
            fx: Vec::new(),
            stats: Counters::default(),
            clustered: false,
            compat: trellis_config::router::Compat::default(),
            member: None,
            remote: HashMap::default(),
            remote_callees: HashMap::default(),
            remote_regs: HashMap::default(),
            remote_calls: HashMap::default(),
            unreachable: HashSet::default(),
            link_up: true,
            claims: HashMap::default(),
            claimed: HashMap::default(),
            meta_answer: None,
            queues: super::queue::CallQueues::new(cfg.store.as_ref()),
        }
    }

    /// Share this realm with the cluster's other members, as `member`.
    pub fn set_member(&mut self, member: Option<Arc<str>>) {
        self.clustered = member.is_some();
        self.member = member;
    }

    /// The realm's figures now.
    pub fn stats(&self) -> RealmStats {
        let by_type = |counts: &[u64; MESSAGE_CODES]| {
            counts
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(code, n)| (proto::message::type_name(code as u64).to_owned(), *n))
                .collect()
        };
        let c = &self.stats;
        // In `Action`'s order, as `Counters::authz` is indexed.
        let actions = ["call", "register", "publish", "subscribe"];
        RealmStats {
            sessions: self.sessions.len() as u64,
            registrations: self.dealer.len() as u64,
            subscriptions: self.broker.len() as u64,
            sessions_joined: c.joined,
            sessions_left: c.left,
            slow_peers_closed: c.slow_peers,
            received: by_type(&c.received),
            sent: by_type(&c.sent),
            calls: CallOutcome::ALL
                .iter()
                .zip(c.calls)
                .map(|(r, n)| (r.name().to_owned(), n))
                .collect(),
            authorizations: actions
                .iter()
                .zip(c.authz)
                .flat_map(|(a, [yes, no])| {
                    [(format!("{a}/allowed"), yes), (format!("{a}/denied"), no)]
                })
                .collect(),
            call_duration: c.call_duration.clone(),
            authorizer_duration: c.authorizer_duration.clone(),
        }
    }

    /// The realm's URI.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The roles and permissions in force.
    pub fn authz(&self) -> &Arc<Authorizer> {
        &self.authz
    }

    /// Sessions joined right now.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Admit a session under the id it chose; `false` if the id is taken.
    /// Its `on_join` is published when [`Input::Joined`] follows.
    pub fn join(&mut self, id: Id, info: SessionInfo) -> bool {
        if id == INTERNAL || self.sessions.contains_key(&id) {
            return false;
        }
        self.sessions.insert(
            id,
            Box::new(SessionEntry {
                info,
                killed: false,
                dynamic: None,
            }),
        );
        self.stats.joined += 1;
        true
    }

    /// The effects of the inputs handled since the last call, in order.
    pub fn effects(&mut self) -> std::vec::Drain<'_, Effect> {
        self.fx.drain(..)
    }

    /// Handle one input at wall-clock time `now`; its effects wait in
    /// [`Core::effects`].
    pub fn handle(&mut self, input: Input, now: SystemTime) {
        self.now = now;
        match input {
            Input::Joined { session } => {
                self.meta_on_join(session);
                if self.shutting_down {
                    self.shut_down(session);
                }
            }
            Input::Message { session, msg } => {
                if self.sessions.contains_key(&session) {
                    if let Some(n) = self.stats.received.get_mut(msg.code() as usize) {
                        *n += 1;
                    }
                    self.dispatch(session, msg);
                }
            }
            Input::Leave { session } => self.leave(session),
            Input::MetaEvent { topic, args } => self.meta_event(topic, args),
            Input::SlowPeer { session, queue } => self.slow_peer(session, queue),
            Input::Timer(t) => self.timer_fired(t),
            Input::InternalCall {
                ticket,
                procedure,
                payload,
                timeout_ms,
            } => self.internal_call(&procedure, *payload, timeout_ms, Waiter::Task(ticket)),
            Input::Deliver { to, msg } => {
                if self.sessions.contains_key(&to) {
                    self.send(to, *msg);
                }
            }
            Input::Remote(bytes) => self.remote_publication(&bytes),
            Input::RemoteRpc(bytes) => self.remote_rpc(&bytes),
            Input::RemoteRegistry(e) => self.remote_registry(*e),
            Input::MemberDown { member, why } => self.member_down(&member, why),
            Input::Link(up) => self.link(up),
            Input::Reachable { member, yes } => self.reachable(member, yes),
            Input::Gathered { gather, remote } => self.gathered(*gather, remote),
            Input::MetaLocal { procedure, payload } => {
                self.meta_answer = Some(self.meta_local(&procedure, *payload));
            }
            Input::ClaimDone {
                session,
                request,
                outcome,
            } => self.claim_done(session, request, outcome),
            Input::RegistryLost {
                session,
                registration,
            } => self.registry_lost(session, registration),
            Input::Reconfigure { cfg } => {
                self.authz = Arc::new(Authorizer::new(&cfg.roles));
                self.fx.push(Effect::Authz(self.authz.clone()));
                self.strict = cfg.options.uri_check == UriCheck::Strict;
                // Cached dynamic authorizer answers were given under the
                // old rules.
                for e in self.sessions.values_mut() {
                    if let Some(d) = &mut e.dynamic {
                        d.cache.clear();
                    }
                }
                info!(realm = %self.name, sessions = self.sessions.len(), "realm reconfigured in place: roles and permissions replaced, sessions kept");
            }
            Input::Close => {
                for session in self.session_ids_in_order() {
                    self.fx.push(Effect::Kill {
                        session,
                        close: Box::new(Close {
                            reason: "wamp.close.close_realm".into(),
                            message: "the realm was removed from the router's configuration".into(),
                        }),
                    });
                }
                info!(realm = %self.name, "realm removed: its sessions are closed");
            }
            Input::Shutdown => {
                self.shutting_down = true;
                for session in self.session_ids_in_order() {
                    self.shut_down(session);
                }
            }
        }
        while let Some(session) = self.doomed.pop() {
            self.leave(session);
        }
        // A REGISTER, an ended call or a leaving session may have made room
        // for calls that wait.
        if self.queues.len() > 0 {
            self.drain_call_queues();
        }
    }

    /// Queue a message for a session (or answer the router's own call).
    pub(crate) fn send(&mut self, to: Id, msg: Message) {
        self.send_with(to, msg, None);
    }

    /// [`Core::send`] a message whose encoding in `serializer` is already
    /// at hand (`bytes`), for a session of that serializer to use as is.
    pub(crate) fn send_encoded(
        &mut self,
        to: Id,
        msg: Message,
        serializer: proto::Serializer,
        bytes: bytes::Bytes,
    ) {
        self.send_with(to, msg, Some((serializer, bytes)));
    }

    fn send_with(
        &mut self,
        to: Id,
        msg: Message,
        encoded: Option<(proto::Serializer, bytes::Bytes)>,
    ) {
        if to == INTERNAL {
            return self.internal_reply(msg);
        }
        if let Some(member) = self.member_of(to) {
            return self.send_remote(member, to, msg);
        }
        if let Some(n) = self.stats.sent.get_mut(msg.code() as usize) {
            *n += 1;
        }
        if let Some(r) = CallOutcome::of(&msg) {
            self.stats.calls[r as usize] += 1;
        }
        let msg = match encoded {
            Some((serializer, bytes)) => OutMsg::encoded_as(msg, serializer, bytes),
            None => OutMsg::new(msg),
        };
        self.fx.push(Effect::Send { to, msg });
    }

    pub(crate) fn push(&mut self, effect: Effect) {
        self.fx.push(effect);
    }

    /// Close a session from the router's side; it leaves once the current
    /// input is handled.
    pub(crate) fn kill(&mut self, session: Id, reason: &str, message: String) {
        if let Some(entry) = self.sessions.get_mut(&session) {
            warn!(session, authid = %entry.info.authid, reason, "{message}");
            self.kill_quietly(session, reason, message);
        }
    }

    /// Every session's id, in order (so that closing them all is
    /// deterministic).
    fn session_ids_in_order(&self) -> Vec<Id> {
        let mut ids: Vec<Id> = self.sessions.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Close `session` for the router's shutdown (its task says GOODBYE
    /// and waits briefly for the client's).
    fn shut_down(&mut self, session: Id) {
        self.kill_quietly(
            session,
            wamp_uri::SYSTEM_SHUTDOWN,
            SHUTDOWN_MESSAGE.to_owned(),
        );
    }

    fn kill_quietly(&mut self, session: Id, reason: &str, message: String) {
        let Some(entry) = self.sessions.get_mut(&session) else {
            return;
        };
        if entry.killed {
            return;
        }
        entry.killed = true;
        self.fx.push(Effect::Kill {
            session,
            close: Box::new(Close {
                reason: reason.to_owned(),
                message,
            }),
        });
        self.doomed.push(session);
    }

    /// The slow-peer policy: a session that does not read is closed.
    fn slow_peer(&mut self, session: Id, queue: usize) {
        let Some(entry) = self.sessions.get(&session) else {
            return;
        };
        if entry.killed {
            return;
        }
        self.stats.slow_peers += 1;
        warn!(
            session,
            authid = %entry.info.authid,
            queue,
            "closing slow session: its outbound queue of {queue} messages is full (the peer does not read fast enough)"
        );
        self.kill_quietly(
            session,
            wamp_uri::CLOSE_KILLED,
            format!("outbound queue overflow: {queue} messages were waiting, the session does not read fast enough"),
        );
    }

    pub(crate) fn role(&self, session: Id) -> &str {
        self.sessions
            .get(&session)
            .map_or("", |e| e.info.authrole.as_ref())
    }

    /// Check a client URI: its syntax under `policy`, the role's permission,
    /// then the reserved `wamp.` prefix. Returns the permission's decision
    /// (disclosure), or the error to send.
    pub(crate) fn check_uri(
        &mut self,
        session: Id,
        uri_str: &str,
        policy: MatchPolicy,
        action: Action,
    ) -> Result<Decision, (&'static str, String)> {
        if let Err(e) = uri::validate(uri_str, policy, self.strict) {
            return Err((wamp_uri::INVALID_URI, e.to_string()));
        }
        // Authorization is decided before anything else, so a role that may
        // not use a URI learns nothing about it.
        // A pattern is authorized as the whole set of URIs it matches: a
        // role allowed one URI must not receive calls or events for others.
        let decision = self.decide(session, uri_str, policy, action);
        self.stats.authz[action as usize][usize::from(decision.is_err())] += 1;
        let decision = decision?;
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

    /// The role's permission for `uri_str`, from the authorizer's cached
    /// answer or the static rules.
    fn decide(
        &mut self,
        session: Id,
        uri_str: &str,
        policy: MatchPolicy,
        action: Action,
    ) -> Result<Decision, (&'static str, String)> {
        Ok(match self.cached_decision(session, uri_str, action) {
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
        })
    }

    /// Whether a caller or publisher is disclosed: when its permission says
    /// so, or when it asks (`disclose_me`) and the permission does not
    /// refuse that (`disclose.on_request: false`, the refusal logged).
    pub(crate) fn disclosed(
        &self,
        session: Id,
        d: Decision,
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

    /// Route a message now that nothing (no authorizer) holds it back.
    pub(crate) fn dispatch_now(&mut self, session: Id, msg: Message) {
        if let Some(text) = self.unannounced_passthru(session, &msg) {
            return self.kill(session, wamp_uri::PROTOCOL_VIOLATION, text);
        }
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

    /// A CALL, PUBLISH or YIELD in payload passthru mode (`ppt_scheme`)
    /// from a session that did not announce `payload_passthru_mode` for
    /// that role in HELLO: a protocol violation, as the specification says.
    fn unannounced_passthru(&self, session: Id, msg: &Message) -> Option<String> {
        let (options, role) = match msg {
            Message::Call(m) => (&m.options, "caller"),
            Message::Publish(m) => (&m.options, "publisher"),
            Message::Yield(m) => (&m.options, "callee"),
            _ => return None,
        };
        // Options are usually empty: the session is looked up only for
        // the rare message in passthru mode.
        if !options.contains_key("ppt_scheme") {
            return None;
        }
        let f = self.sessions.get(&session)?.info.features;
        let announced = match role {
            "caller" => f.caller_ppt,
            "publisher" => f.publisher_ppt,
            _ => f.callee_ppt,
        };
        (!announced).then(|| {
            format!(
                "{} carries ppt_scheme, but this session did not announce payload_passthru_mode for its {role} role in HELLO",
                msg.name()
            )
        })
    }

    fn leave(&mut self, session: Id) {
        let Some(entry) = self.sessions.remove(&session) else {
            return;
        };
        self.stats.left += 1;
        self.fx.push(Effect::Left { session });
        for (sub, r) in self.broker.remove_session(session) {
            self.meta_unsubscribed(session, sub, r.deleted);
        }
        self.forget_queued(session);
        let removed = self.dealer.remove_session(session);
        for &(reg, deleted) in &removed.registrations {
            self.unregistered_locally(session, reg);
            self.meta_unregistered(session, reg, deleted);
        }
        if !self.remote_calls.is_empty() {
            self.remote_calls
                .retain(|(caller, _), _| *caller != session);
        }
        for p in &removed.orphaned_calls {
            self.cancel_timer(p);
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
            self.cancel_timer(p);
            self.interrupt(p, proto::options::CancelMode::KillNoWait);
        }
        for t in self.testaments.remove(&session).unwrap_or_default() {
            debug!(session, topic = %t.topic, scope = %t.scope, "publishing testament");
            let audience = proto::options::Audience::parse(&t.options).unwrap_or_default();
            self.publish_internal(&t.topic, t.payload, &audience);
        }
        // Crossbar.io's on_leave carries the session id alone, and
        // monitors written for it (`def on_leave(session_id)`) take one
        // argument; the specification's adds authid and authrole.
        let args = match self.compat {
            trellis_config::router::Compat::Crossbar => vec![session.into()],
            trellis_config::router::Compat::Spec => vec![
                session.into(),
                entry.info.authid.as_ref().into(),
                entry.info.authrole.as_ref().into(),
            ],
        };
        self.meta_event("wamp.session.on_leave", args);
        debug!(
            session,
            authid = %entry.info.authid,
            registrations = removed.registrations.len(),
            abandoned_calls = removed.abandoned_calls.len(),
            "session left the realm"
        );
    }
}

/// An ERROR answering `request` with `error` and a message text.
pub(crate) fn error_msg(request_type: u64, request: Id, error: &str, text: String) -> Message {
    Message::Error(WampError {
        request_type,
        request,
        details: Dict::new(),
        error: error.to_owned(),
        payload: Payload::args(vec![Value::Str(text)]),
    })
}

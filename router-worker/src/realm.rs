//! The realm actor: one task per realm owns its broker, dealer and sessions.
//!
//! Session tasks talk to it through [`RealmHandle`] over a bounded channel
//! (so a flooding client is slowed down, not buffered without limit) and
//! receive [`OutMsg`]s on their own bounded queue. The realm never waits on
//! a session: it `try_send`s, and a session whose queue is full is closed
//! with a reason in the log (the slow-peer policy), so one slow peer cannot
//! stall a realm or grow its memory.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use proto::errors::uri as wamp_uri;
use proto::message::{
    Call, CallResult, Event, Invocation, Publish, Published, Register, Registered, Subscribe,
    Subscribed, Unregister, Unregistered, Unsubscribe, Unsubscribed, WampError, Yield, code,
};
use proto::uri::{self, MatchPolicy};
use proto::{Dict, Id, Message, Payload, Serializer, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::authz::{Action, Authorizer};
use crate::broker::Broker;
use crate::config::{RealmConfig, UriCheck};
use crate::dealer::{Dealer, InvokePolicy, RegisterError};
use crate::outbound::OutMsg;

/// Commands queued per realm before senders wait.
const REALM_QUEUE: usize = 4096;
/// Commands handled per wakeup before yielding to the scheduler.
const BATCH: usize = 512;

/// Who a session is, as the realm needs it for authorization and disclosure.
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
}

/// Lets the realm close a session from outside its task.
#[derive(Debug, Default)]
pub struct KillSwitch {
    token: CancellationToken,
    /// The ABORT reason URI and message; the first kill wins.
    reason: OnceLock<(&'static str, String)>,
}

impl KillSwitch {
    /// Close the session with `reason`; later calls keep the first reason.
    pub fn kill(&self, reason: &'static str, message: String) {
        let _ = self.reason.set((reason, message));
        self.token.cancel();
    }

    /// Resolves once the session has been killed.
    pub async fn killed(&self) {
        self.token.cancelled().await;
    }

    /// The reason given to [`KillSwitch::kill`].
    pub fn reason(&self) -> Option<&(&'static str, String)> {
        self.reason.get()
    }
}

/// A session's side of the realm: where the realm sends its messages.
#[derive(Debug)]
pub struct SessionLink {
    /// The session's bounded outbound queue.
    pub tx: mpsc::Sender<Arc<OutMsg>>,
    /// To close the session (slow peer, protocol violation).
    pub kill: Arc<KillSwitch>,
}

/// What session tasks send to a realm.
#[derive(Debug)]
pub enum RealmCommand {
    /// Admit a session; the realm picks its id.
    Join {
        info: SessionInfo,
        link: SessionLink,
        reply: oneshot::Sender<Id>,
    },
    /// A session ended (GOODBYE, close, error): drop everything it held.
    Leave { session: Id },
    /// A client-to-router message of an established session.
    Message { session: Id, msg: Message },
}

/// A cheap, clonable handle to a running realm.
#[derive(Clone, Debug)]
pub struct RealmHandle {
    /// The realm's URI.
    pub name: Arc<str>,
    /// Shared with the actor: sessions check their role exists at HELLO.
    pub authz: Arc<Authorizer>,
    tx: mpsc::Sender<RealmCommand>,
}

impl RealmHandle {
    /// Start the realm actor for `cfg`.
    pub fn spawn(cfg: &RealmConfig) -> RealmHandle {
        let (tx, rx) = mpsc::channel(REALM_QUEUE);
        let authz = Arc::new(Authorizer::new(&cfg.roles));
        let realm = Realm {
            name: cfg.name.clone(),
            strict: cfg.options.uri_check == UriCheck::Strict,
            authz: authz.clone(),
            broker: Broker::new(),
            dealer: Dealer::new(),
            sessions: HashMap::new(),
        };
        tokio::spawn(realm.run(rx));
        RealmHandle {
            name: cfg.name.as_str().into(),
            authz,
            tx,
        }
    }

    /// Send a command, waiting while the realm's queue is full.
    ///
    /// # Errors
    /// Returns the command if the realm has stopped.
    pub async fn send(&self, cmd: RealmCommand) -> Result<(), RealmCommand> {
        self.tx.send(cmd).await.map_err(|e| e.0)
    }
}

struct SessionEntry {
    info: SessionInfo,
    link: SessionLink,
    /// Set once the session has been killed, so overflow is logged once.
    killed: bool,
}

struct Realm {
    name: String,
    /// Whether client URIs must follow the strict rule.
    strict: bool,
    authz: Arc<Authorizer>,
    broker: Broker,
    dealer: Dealer,
    sessions: HashMap<Id, SessionEntry>,
}

/// Deliver to one session without ever waiting; a full queue closes it.
fn deliver(sessions: &mut HashMap<Id, SessionEntry>, to: Id, msg: Arc<OutMsg>) {
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
            }
        }
        // The session task is ending; its Leave is on the way.
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}

fn error_msg(request_type: u64, request: Id, error: &str, text: String) -> Message {
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
                v.as_u64().ok_or_else(|| {
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

/// Subscriber black- and whitelisting options of one PUBLISH.
#[derive(Default)]
struct Audience {
    exclude: Option<Vec<Id>>,
    exclude_authid: Option<Vec<String>>,
    exclude_authrole: Option<Vec<String>>,
    eligible: Option<Vec<Id>>,
    eligible_authid: Option<Vec<String>>,
    eligible_authrole: Option<Vec<String>>,
}

impl Audience {
    fn parse(o: &Dict) -> Result<Audience, String> {
        Ok(Audience {
            exclude: opt_ids(o, "exclude")?,
            exclude_authid: opt_strs(o, "exclude_authid")?,
            exclude_authrole: opt_strs(o, "exclude_authrole")?,
            eligible: opt_ids(o, "eligible")?,
            eligible_authid: opt_strs(o, "eligible_authid")?,
            eligible_authrole: opt_strs(o, "eligible_authrole")?,
        })
    }

    fn admits(&self, id: Id, info: &SessionInfo) -> bool {
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

impl Realm {
    async fn run(mut self, mut rx: mpsc::Receiver<RealmCommand>) {
        info!(realm = %self.name, "realm started");
        let mut batch = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut batch, BATCH).await > 0 {
            for cmd in batch.drain(..) {
                self.handle(cmd);
            }
        }
        debug!(realm = %self.name, "realm stopped: no more handles");
    }

    fn handle(&mut self, cmd: RealmCommand) {
        match cmd {
            RealmCommand::Join { info, link, reply } => {
                let mut id = rand::random_range(1..=proto::MAX_ID);
                while self.sessions.contains_key(&id) {
                    id = rand::random_range(1..=proto::MAX_ID);
                }
                self.sessions.insert(
                    id,
                    SessionEntry {
                        info,
                        link,
                        killed: false,
                    },
                );
                if reply.send(id).is_err() {
                    // The session task went away while joining.
                    self.leave(id);
                }
            }
            RealmCommand::Leave { session } => self.leave(session),
            RealmCommand::Message { session, msg } => {
                if self.sessions.contains_key(&session) {
                    self.dispatch(session, msg);
                }
            }
        }
    }

    fn send(&mut self, to: Id, msg: Message) {
        deliver(&mut self.sessions, to, OutMsg::new(msg));
    }

    fn kill(&mut self, session: Id, reason: &'static str, message: String) {
        if let Some(entry) = self.sessions.get_mut(&session) {
            warn!(session, authid = %entry.info.authid, reason, "{message}");
            entry.killed = true;
            entry.link.kill.kill(reason, message);
        }
    }

    fn role(&self, session: Id) -> &str {
        self.sessions
            .get(&session)
            .map_or("", |e| e.info.authrole.as_str())
    }

    /// Check a client URI: its syntax under `policy`, the reserved `wamp.`
    /// prefix, then the role's permission. Returns the error to send, if any.
    fn check_uri(
        &self,
        session: Id,
        uri_str: &str,
        policy: MatchPolicy,
        action: Action,
    ) -> Result<bool, (&'static str, String)> {
        if let Err(e) = uri::validate(uri_str, policy, self.strict) {
            return Err((wamp_uri::INVALID_URI, e.to_string()));
        }
        // Authorization is decided before anything else, so a role that may
        // not use a URI learns nothing about it.
        let decision = self.authz.authorize(self.role(session), uri_str, action);
        if !decision.allow {
            return Err((
                wamp_uri::NOT_AUTHORIZED,
                format!(
                    "session is not authorized to {action} {uri_str:?} (role {:?})",
                    self.role(session)
                ),
            ));
        }
        if uri::is_reserved(uri_str) && matches!(action, Action::Register | Action::Publish) {
            return Err((
                wamp_uri::INVALID_URI,
                format!("{uri_str:?}: the \"wamp.\" prefix is reserved for the router"),
            ));
        }
        Ok(decision.disclose)
    }

    fn dispatch(&mut self, session: Id, msg: Message) {
        match msg {
            Message::Publish(m) => self.publish(session, m),
            Message::Subscribe(m) => self.subscribe(session, m),
            Message::Unsubscribe(m) => self.unsubscribe(session, m),
            Message::Register(m) => self.register(session, m),
            Message::Unregister(m) => self.unregister(session, m),
            Message::Call(m) => self.call(session, m),
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

    fn publish(&mut self, session: Id, p: Publish) {
        let ack = matches!(p.options.get("acknowledge"), Some(Value::Bool(true)));
        let fail = |realm: &mut Realm, uri: &'static str, text: String| {
            if ack {
                realm.send(session, error_msg(code::PUBLISH, p.request, uri, text));
            } else {
                debug!(session, topic = %p.topic, error = uri, "unacknowledged publish refused: {text}");
            }
        };
        let disclose_forced =
            match self.check_uri(session, &p.topic, MatchPolicy::Exact, Action::Publish) {
                Ok(d) => d,
                Err((uri, text)) => return fail(self, uri, text),
            };
        let parsed = (|| {
            let exclude_me = opt_bool(&p.options, "exclude_me")?.unwrap_or(true);
            let disclose_me = opt_bool(&p.options, "disclose_me")?.unwrap_or(false);
            Ok::<_, String>((exclude_me, disclose_me, Audience::parse(&p.options)?))
        })();
        let (exclude_me, disclose_me, audience) = match parsed {
            Ok(x) => x,
            Err(text) => return fail(self, wamp_uri::INVALID_ARGUMENT, text),
        };
        let publication = rand::random_range(1..=proto::MAX_ID);
        let mut base = Dict::new();
        if disclose_me || disclose_forced {
            base.insert("publisher".into(), Value::from(session));
            if let Some(e) = self.sessions.get(&session) {
                base.insert(
                    "publisher_authid".into(),
                    Value::from(e.info.authid.as_str()),
                );
                base.insert(
                    "publisher_authrole".into(),
                    Value::from(e.info.authrole.as_str()),
                );
            }
        }
        let Realm {
            broker,
            sessions,
            authz,
            ..
        } = self;
        let mut recipients = Vec::new();
        for sub in broker.matching(&p.topic) {
            recipients.clear();
            for &sid in &sub.subscribers {
                if exclude_me && sid == session {
                    continue;
                }
                let Some(entry) = sessions.get(&sid) else {
                    continue;
                };
                if !audience.admits(sid, &entry.info) {
                    continue;
                }
                // A pattern subscription never leaks a topic the
                // subscriber's role may not subscribe to.
                if sub.policy != MatchPolicy::Exact
                    && !authz
                        .authorize(&entry.info.authrole, &p.topic, Action::Subscribe)
                        .allow
                {
                    continue;
                }
                recipients.push(sid);
            }
            if recipients.is_empty() {
                continue;
            }
            let mut details = base.clone();
            if sub.policy != MatchPolicy::Exact {
                details.insert("topic".into(), Value::from(p.topic.as_str()));
            }
            let event = OutMsg::new(Message::Event(Event {
                subscription: sub.id,
                publication,
                details,
                payload: p.payload.clone(),
            }));
            for &sid in &recipients {
                deliver(sessions, sid, event.clone());
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
    }

    fn unsubscribe(&mut self, session: Id, u: Unsubscribe) {
        match self.broker.unsubscribe(session, u.subscription) {
            Some(_) => self.send(
                session,
                Message::Unsubscribed(Unsubscribed {
                    request: u.request,
                    details: None,
                }),
            ),
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
            Some(_) => self.send(
                session,
                Message::Unregistered(Unregistered {
                    request: u.request,
                    details: None,
                }),
            ),
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
        if self.dealer.call_in_flight(session, c.request) {
            return self.kill(
                session,
                wamp_uri::PROTOCOL_VIOLATION,
                format!(
                    "CALL request id {} is already in use by a call in flight",
                    c.request
                ),
            );
        }
        let disclose_forced =
            match self.check_uri(session, &c.procedure, MatchPolicy::Exact, Action::Call) {
                Ok(d) => d,
                Err((uri, text)) => return fail(self, uri, text),
            };
        let flags = (|| {
            Ok::<_, String>((
                opt_bool(&c.options, "disclose_me")?.unwrap_or(false),
                opt_bool(&c.options, "receive_progress")?.unwrap_or(false),
            ))
        })();
        let (disclose_me, receive_progress) = match flags {
            Ok(x) => x,
            Err(text) => return fail(self, wamp_uri::INVALID_ARGUMENT, text),
        };
        let Some((registration, callee)) = self.dealer.route(&c.procedure) else {
            return fail(
                self,
                wamp_uri::NO_SUCH_PROCEDURE,
                format!("no callee is registered for procedure {:?}", c.procedure),
            );
        };
        let mut details = Dict::new();
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
        if (disclose_me || disclose_forced)
            && let Some(e) = self.sessions.get(&session)
        {
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

    fn yield_(&mut self, session: Id, y: Yield) {
        let Some(p) = self.dealer.pending_for_callee(session, y.request) else {
            debug!(
                session,
                invocation = y.request,
                "YIELD for an invocation that is no longer pending: dropped"
            );
            return;
        };
        let progress = matches!(y.options.get("progress"), Some(Value::Bool(true)));
        let mut details = Dict::new();
        if progress {
            details.insert("progress".into(), Value::Bool(true));
        } else {
            self.dealer.finish(p.invocation);
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
        self.dealer.finish(p.invocation);
        self.send(
            p.caller,
            Message::Error(WampError {
                request_type: code::CALL,
                request: p.caller_request,
                details: Dict::new(),
                error: e.error,
                payload: e.payload,
            }),
        );
    }

    fn leave(&mut self, session: Id) {
        let Some(entry) = self.sessions.remove(&session) else {
            return;
        };
        self.broker.remove_session(session);
        let removed = self.dealer.remove_session(session);
        for p in removed.orphaned_calls {
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
        debug!(
            session,
            authid = %entry.info.authid,
            registrations = removed.registrations.len(),
            abandoned_calls = removed.abandoned_calls.len(),
            "session left the realm"
        );
    }
}

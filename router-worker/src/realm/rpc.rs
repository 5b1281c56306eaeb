//! The core's RPC: REGISTER, UNREGISTER, CALL (with progressive invocations,
//! timeouts and the three cancel modes), YIELD, invocation ERRORs, shared
//! registrations, the router's own calls and `trellis.token.issue`.

use std::time::Duration;

use proto::errors::uri as wamp_uri;
use proto::message::{
    Call, CallResult, Cancel, Interrupt, Invocation, Register, Registered, Unregister,
    Unregistered, WampError, Yield, code,
};
use proto::options::{self, CallOptions, CancelMode, RegisterOptions};
use proto::uri::{self, MatchPolicy};
use proto::{Dict, Id, Message, Payload, Value};
use tracing::debug;

use super::InternalCallError;
use super::core::{Core, Effect, INTERNAL, Mint, TOO_MANY_CALLS, Timer, Waiter, error_msg};
use crate::authz::Action;
use crate::dealer::{Pending, RegisterError};

impl Core {
    /// Route a call made by the router (authenticators, authorizers).
    pub(crate) fn internal_call(
        &mut self,
        procedure: &str,
        payload: Payload,
        timeout_ms: u64,
        waiter: Waiter,
    ) {
        let Some((registration, mut callee)) = self.dealer.route(procedure, &mut self.rng) else {
            return self.complete(waiter, Err(InternalCallError::NoSuchProcedure));
        };
        if self.member_of(callee).is_some() {
            // The router's own calls run on this node's callees: their
            // answers do not travel back across nodes.
            let remote = &self.remote;
            match self
                .dealer
                .reroute(registration, &mut self.rng, |c| remote.contains_key(&c))
            {
                Some(local) => callee = local,
                None => {
                    let message = format!(
                        "the router's own call of {procedure:?} (an authenticator, a dynamic authorizer or a payload mapping) needs a callee on this node, and every callee of it is on another node of the cluster: run one on each node"
                    );
                    return self.complete(
                        waiter,
                        Err(InternalCallError::Error {
                            uri: wamp_uri::NO_AVAILABLE_CALLEE.to_owned(),
                            message,
                        }),
                    );
                }
            }
        }
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
            .start_call(INTERNAL, request, registration, callee, self.now);
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
    pub(crate) fn internal_reply(&mut self, mut msg: Message) {
        // The router reads these arguments: decoded here, once.
        if let Some(p) = msg.payload_mut()
            && let Err(e) = p.decode_raw()
        {
            let request = msg.request_id().unwrap_or_default();
            msg = error_msg(
                code::CALL,
                request,
                wamp_uri::INVALID_ARGUMENT,
                format!("the answer's arguments cannot be read: {e}"),
            );
        }
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
            Waiter::Task(ticket) => self.push(Effect::Reply {
                ticket,
                result: Box::new(result),
            }),
            Waiter::Authorize {
                session,
                uri,
                action,
                procedure,
                asked,
                legacy,
            } => {
                self.stats
                    .authorizer_duration
                    .observe_since(asked, self.now);
                self.authorizer_answered(session, uri, action, &procedure, legacy, result);
            }
        }
    }

    pub(crate) fn register(&mut self, session: Id, r: Register) {
        let fail = |realm: &mut Core, uri: &'static str, text: String| {
            realm.send(session, error_msg(code::REGISTER, r.request, uri, text));
        };
        let RegisterOptions { policy, invoke, .. } = match RegisterOptions::parse(&r.options) {
            Ok(o) => o,
            Err(text) => return fail(self, wamp_uri::INVALID_ARGUMENT, text),
        };
        if let Err((uri, text)) = self.check_uri(session, &r.procedure, policy, Action::Register) {
            return fail(self, uri, text);
        }
        // A single registration in a cluster is claimed across the
        // cluster first (unless this node knows it is taken already).
        if self.clustered
            && invoke == proto::options::InvokePolicy::Single
            && self.dealer.lookup_exact(&r.procedure, policy).is_none()
        {
            return self.claim_single(session, r, policy);
        }
        self.register_now(session, r);
    }

    /// A REGISTER already checked: into the dealer, REGISTERED or ERROR.
    pub(crate) fn register_now(&mut self, session: Id, r: Register) -> Option<Id> {
        let fail = |realm: &mut Core, uri: &'static str, text: String| {
            realm.send(session, error_msg(code::REGISTER, r.request, uri, text));
        };
        let Ok(RegisterOptions {
            policy,
            invoke,
            concurrency,
        }) = RegisterOptions::parse(&r.options)
        else {
            return None;
        };
        let existed = self.dealer.lookup_exact(&r.procedure, policy).is_some();
        match self.dealer.register(session, &r.procedure, policy, invoke) {
            Ok(id) => {
                self.dealer.set_concurrency(id, session, concurrency);
                debug!(session, procedure = %r.procedure, %policy, registration = id, "registered");
                self.registered_locally(session, id, &r.procedure, &r.options);
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
                Some(id)
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
                None
            }
        }
    }

    pub(crate) fn unregister(&mut self, session: Id, u: Unregister) {
        match self.dealer.unregister(session, u.registration) {
            Some(deleted) => {
                self.unregistered_locally(session, u.registration);
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

    pub(crate) fn call(&mut self, session: Id, mut c: Call) {
        let fail = |realm: &mut Core, uri: &'static str, text: String| {
            realm.send(session, error_msg(code::CALL, c.request, uri, text));
        };
        if let Some(p) = self.dealer.pending_for_caller(session, c.request) {
            return self.continue_progressive(session, p, c);
        }
        if self.is_queued(session, c.request) {
            return self.kill(
                session,
                wamp_uri::PROTOCOL_VIOLATION,
                format!(
                    "CALL request id {} is already in use by a call waiting in the call queue",
                    c.request
                ),
            );
        }
        // A call running on another node of the cluster: continued there.
        if !self.remote_calls.is_empty() && self.remote_calls.contains_key(&(session, c.request)) {
            let request = c.request;
            self.forward_to_call(session, request, Message::Call(c));
            return;
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
        let o = match CallOptions::parse(&c.options) {
            Ok(o) => o,
            Err(text) => return fail(self, wamp_uri::INVALID_ARGUMENT, text),
        };
        if (c.procedure == "trellis.token.issue" || uri::is_reserved(&c.procedure))
            && let Err(e) = c.payload.decode_raw()
        {
            // The router reads these arguments itself.
            return fail(
                self,
                wamp_uri::INVALID_ARGUMENT,
                format!("the arguments of {} cannot be read: {e}", c.procedure),
            );
        }
        if c.procedure == "trellis.token.issue" {
            return self.issue_token(session, c.request, &c.payload);
        }
        if uri::is_reserved(&c.procedure) {
            if self.clustered && self.gather(session, c.request, &c.procedure, c.payload.clone()) {
                return;
            }
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
        let Some((registration, callee)) = self.dealer.route(&c.procedure, &mut self.rng) else {
            let text = format!("no callee is registered for procedure {:?}", c.procedure);
            if self.has_call_queue(&c.procedure) {
                return self.queue_call(
                    session,
                    c,
                    o.timeout_ms,
                    wamp_uri::NO_SUCH_PROCEDURE,
                    &text,
                );
            }
            return fail(self, wamp_uri::NO_SUCH_PROCEDURE, text);
        };
        let disclose =
            match self.disclosed(session, decision, o.disclose_me, Action::Call, &c.procedure) {
                Ok(d) => d,
                Err((uri, text)) => return fail(self, uri, text),
            };
        // A callee on a member that cannot be reached: another callee of
        // a shared registration takes the call, if one can.
        let callee = if self.unreachable_callee(callee) {
            match self.pick_reachable(registration, &[]) {
                Some(other) => other,
                None => {
                    let why = if self.link_up {
                        "on nodes that do not answer now"
                    } else {
                        "on other nodes, and this node's link to the cluster is down"
                    };
                    return fail(
                        self,
                        wamp_uri::NO_AVAILABLE_CALLEE,
                        format!("the callees of {:?} are {why}: try again", c.procedure),
                    );
                }
            }
        } else {
            callee
        };
        // Crossbar.io's `concurrency`: a callee at its limit is passed
        // over; with every callee at its limit, the caller is told so.
        let callee = if self.dealer.at_limit(registration, callee) {
            let busy = self.dealer.busy_callees(registration);
            match self.pick_reachable(registration, &busy) {
                Some(other) => other,
                None => {
                    let text = format!(
                        "the callees of {:?} run as many calls as their registration's concurrency allows",
                        c.procedure
                    );
                    if self.has_call_queue(&c.procedure) {
                        return self.queue_call(
                            session,
                            c,
                            o.timeout_ms,
                            wamp_uri::MAX_CONCURRENCY_REACHED,
                            &text,
                        );
                    }
                    debug!(session, procedure = %c.procedure, "call refused: every callee runs as many invocations as its concurrency allows");
                    return fail(
                        self,
                        wamp_uri::MAX_CONCURRENCY_REACHED,
                        format!("{text}: try again later"),
                    );
                }
            }
        } else {
            callee
        };
        self.run_call(session, c, registration, callee, disclose, Vec::new());
    }

    /// Start a call routed to a callee of this node: INVOCATION, timeout.
    /// `caller` may be a session of another node (its identity in
    /// `disclosed`, when disclosed).
    pub(crate) fn invoke(
        &mut self,
        session: Id,
        c: Call,
        registration: Id,
        callee: Id,
        disclosed: Option<(String, String)>,
    ) {
        let fail = |realm: &mut Core, uri: &'static str, text: String| {
            realm.send(session, error_msg(code::CALL, c.request, uri, text));
        };
        let o = match CallOptions::parse(&c.options) {
            Ok(o) => o,
            Err(text) => return fail(self, wamp_uri::INVALID_ARGUMENT, text),
        };
        if o.progress
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
        if o.passthru.contains_key("ppt_scheme")
            && !self
                .sessions
                .get(&callee)
                .is_some_and(|e| e.info.features.callee_ppt)
        {
            return fail(
                self,
                wamp_uri::FEATURE_NOT_SUPPORTED,
                format!(
                    "the callee of {:?} did not announce payload_passthru_mode, so it cannot take a call with ppt_scheme",
                    c.procedure
                ),
            );
        }
        let mut details = o.passthru;
        if self
            .dealer
            .get(registration)
            .is_some_and(|r| r.policy != MatchPolicy::Exact)
        {
            details.insert("procedure".into(), Value::from(c.procedure.as_str()));
        }
        if o.receive_progress {
            details.insert("receive_progress".into(), Value::Bool(true));
        }
        if o.progress {
            details.insert("progress".into(), Value::Bool(true));
        }
        if o.timeout_ms > 0 {
            details.insert("timeout".into(), Value::from(o.timeout_ms));
        }
        if let Some((authid, authrole)) = disclosed {
            details.insert("caller".into(), Value::from(session));
            details.insert("caller_authid".into(), Value::from(authid));
            details.insert("caller_authrole".into(), Value::from(authrole));
        }
        let invocation = self
            .dealer
            .start_call(session, c.request, registration, callee, self.now);
        if o.progress
            && let Some(p) = self.dealer.pending_mut(invocation)
        {
            p.caller_progress = true;
        }
        if o.timeout_ms > 0 {
            self.start_timer(invocation, session, c.request, o.timeout_ms);
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
    pub(crate) fn continue_progressive(&mut self, session: Id, p: Pending, c: Call) {
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
        let more = options::flag(&c.options, "progress");
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
        let fail = |realm: &mut Core, uri: &str, text: String| {
            realm.send(session, error_msg(code::CALL, request, uri, text));
        };
        let Some(max_age) = self.token_max_age else {
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
            None => max_age,
            Some(v) => match v.as_u64().filter(|n| *n > 0) {
                Some(n) => Duration::from_secs(n).min(max_age),
                None => {
                    return fail(
                        self,
                        wamp_uri::INVALID_ARGUMENT,
                        format!("ttl must be a positive number of seconds, found {v}"),
                    );
                }
            },
        };
        self.push(Effect::Mint(Box::new(Mint {
            to: session,
            request,
            authid,
            role,
            lifetime,
        })));
    }

    fn start_timer(&mut self, invocation: Id, caller: Id, request: Id, ms: u64) {
        let timer = Timer {
            invocation,
            caller,
            request,
        };
        self.timers.insert(timer);
        self.push(Effect::StartTimer {
            timer,
            after_ms: ms,
        });
    }

    /// Stop a call's timeout timer, if it has one.
    pub(crate) fn cancel_timer(&mut self, p: &Pending) {
        let timer = Timer {
            invocation: p.invocation,
            caller: p.caller,
            request: p.caller_request,
        };
        // Most calls have no timer: skip hashing the key for them.
        if !self.timers.is_empty() && self.timers.remove(&timer) {
            self.push(Effect::CancelTimer { timer });
        }
    }

    /// Forget a call and its timer.
    fn finish_call(&mut self, p: &Pending) {
        self.cancel_timer(p);
        self.dealer.finish(p.invocation);
        self.stats.call_duration.observe_since(p.started, self.now);
    }

    /// Tell a callee to stop working on an invocation, if it can listen.
    pub(crate) fn interrupt(&mut self, p: &Pending, mode: CancelMode) {
        let supported = self
            .sessions
            .get(&p.callee)
            .is_some_and(|e| e.info.features.callee_call_canceling);
        if supported {
            self.send(
                p.callee,
                Message::Interrupt(Interrupt {
                    request: p.invocation,
                    options: proto::dict! { "mode" => mode.name() },
                }),
            );
        }
    }

    /// A call's `timeout` (or an authorizer's deadline) expired.
    pub(crate) fn timer_fired(&mut self, t: Timer) {
        if !self.timers.remove(&t) {
            return;
        }
        if t.invocation == 0 {
            return self.queued_call_timed_out(t);
        }
        let Some(p) = self.dealer.pending_for_caller(t.caller, t.request) else {
            return;
        };
        if p.invocation != t.invocation {
            return;
        }
        self.dealer.finish(p.invocation);
        self.stats.call_duration.observe_since(p.started, self.now);
        self.interrupt(&p, CancelMode::KillNoWait);
        debug!(caller = t.caller, request = t.request, "call timed out");
        self.send(
            t.caller,
            error_msg(
                code::CALL,
                t.request,
                wamp_uri::TIMEOUT,
                "the call did not finish within its timeout".into(),
            ),
        );
    }

    pub(crate) fn cancel(&mut self, session: Id, c: Cancel) {
        if !self.remote_calls.is_empty() && self.remote_calls.contains_key(&(session, c.request)) {
            let request = c.request;
            self.forward_to_call(session, request, Message::Cancel(c));
            return;
        }
        let mode = match CancelMode::parse(&c.options) {
            Ok(m) => m,
            Err(text) => {
                return self.send(
                    session,
                    error_msg(code::CANCEL, c.request, wamp_uri::INVALID_ARGUMENT, text),
                );
            }
        };
        let Some(p) = self.dealer.pending_for_caller(session, c.request) else {
            // A call waiting in a call queue is taken out; else it already
            // finished: its RESULT or ERROR is on its way.
            self.cancel_queued(session, c.request);
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
                self.interrupt(&p, CancelMode::Kill);
            }
            CancelMode::Skip | CancelMode::KillNoWait => {
                self.finish_call(&p);
                if mode == CancelMode::KillNoWait {
                    self.interrupt(&p, CancelMode::KillNoWait);
                }
                self.send(
                    session,
                    error_msg(
                        code::CALL,
                        c.request,
                        wamp_uri::CANCELED,
                        format!("the call was canceled by the caller (mode {})", mode.name()),
                    ),
                );
            }
        }
    }

    /// The call a callee's YIELD or ERROR answers; `None` (logged) when it
    /// has ended already (canceled, timed out).
    fn answered_call(&self, session: Id, invocation: Id, what: &str) -> Option<Pending> {
        let p = self.dealer.pending_for_callee(session, invocation);
        if p.is_none() {
            debug!(
                session,
                request = invocation,
                "late {what} dropped: the invocation with this request id is no longer pending (its call was canceled or timed out, or its caller left)"
            );
        }
        p
    }

    pub(crate) fn yield_(&mut self, session: Id, y: Yield) {
        let Some(p) = self.answered_call(session, y.request, "YIELD") else {
            return;
        };
        let mut details = match options::passthru(&y.options) {
            Ok(d) => d,
            Err(text) => {
                // The callee's answer is unusable; the caller must not wait.
                self.finish_call(&p);
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
        if details.contains_key("ppt_scheme")
            && self
                .sessions
                .get(&p.caller)
                .is_some_and(|e| !e.info.features.caller_ppt)
        {
            // As the specification says: the callee is told, and the
            // caller must not wait.
            let text = "the caller did not announce payload_passthru_mode, so it cannot take a result with ppt_scheme".to_owned();
            self.finish_call(&p);
            self.send(
                session,
                error_msg(
                    code::YIELD,
                    y.request,
                    wamp_uri::FEATURE_NOT_SUPPORTED,
                    text.clone(),
                ),
            );
            self.send(
                p.caller,
                error_msg(
                    code::CALL,
                    p.caller_request,
                    wamp_uri::FEATURE_NOT_SUPPORTED,
                    format!("the callee's result: {text}"),
                ),
            );
            return;
        }
        if options::flag(&y.options, "progress") {
            details.insert("progress".into(), Value::Bool(true));
        } else {
            self.finish_call(&p);
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

    pub(crate) fn invocation_error(&mut self, session: Id, e: WampError) {
        let Some(p) = self.answered_call(session, e.request, "ERROR") else {
            return;
        };
        self.finish_call(&p);
        let details = options::passthru(&e.details).unwrap_or_default();
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
}

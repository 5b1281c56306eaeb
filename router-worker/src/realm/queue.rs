//! Call queues (Crossbar.io's realm `store.call-queue`): a call to a
//! procedure that matches a queue waits, in order, when no callee can take
//! it now, because none is registered or every one runs as many calls as
//! its `concurrency` allows. It goes out as soon as one can (after a
//! REGISTER, or when a running call ends), or fails when the caller's
//! `timeout` fires, the caller cancels or leaves. Each queue holds at most
//! its `limit` calls; beyond that the caller gets the error it would have
//! had without a queue.

use std::collections::VecDeque;
use std::time::SystemTime;

use proto::errors::uri as wamp_uri;
use proto::message::{Call, code};
use proto::uri::{self, MatchPolicy};
use proto::{Id, Value};
use tracing::debug;

use super::core::{Core, Effect, Timer, error_msg};
use trellis_config::router::StoreConfig;

/// A queue's default bound, as Crossbar.io's.
const DEFAULT_LIMIT: usize = 1000;

/// Timers of queued calls have this invocation id (real ones are never 0).
const QUEUED: Id = 0;

#[derive(Debug)]
pub(crate) struct Queued {
    session: Id,
    call: Call,
    since: SystemTime,
    timeout_ms: u64,
}

/// The realm's call queues, in config order.
#[derive(Debug, Default)]
pub(crate) struct CallQueues {
    /// (pattern, match policy, limit).
    entries: Vec<(String, MatchPolicy, usize)>,
    queued: Vec<VecDeque<Queued>>,
    /// Calls waiting in all queues.
    total: usize,
}

impl CallQueues {
    pub(crate) fn new(store: Option<&StoreConfig>) -> CallQueues {
        let Some(store) = store else {
            return CallQueues::default();
        };
        let entries: Vec<_> = store
            .call_queue
            .iter()
            .map(|q| {
                (
                    q.uri.clone(),
                    q.match_policy,
                    q.limit.or(store.limit).unwrap_or(DEFAULT_LIMIT),
                )
            })
            .collect();
        CallQueues {
            queued: entries.iter().map(|_| VecDeque::new()).collect(),
            entries,
            total: 0,
        }
    }

    /// The first queue whose pattern matches `procedure`.
    fn entry_for(&self, procedure: &str) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        self.entries
            .iter()
            .position(|(pattern, policy, _)| uri::matches(pattern, *policy, procedure))
    }

    /// Calls waiting now.
    pub(crate) fn len(&self) -> usize {
        self.total
    }

    /// Take out the call (`session`, `request`), if it waits.
    fn take(&mut self, session: Id, request: Id) -> Option<Queued> {
        if self.total == 0 {
            return None;
        }
        for q in &mut self.queued {
            if let Some(i) = q
                .iter()
                .position(|w| w.session == session && w.call.request == request)
            {
                self.total -= 1;
                return q.remove(i);
            }
        }
        None
    }
}

impl Core {
    /// Whether calls to `procedure` may wait in a call queue.
    pub(crate) fn has_call_queue(&self, procedure: &str) -> bool {
        self.queues.entry_for(procedure).is_some()
    }

    /// A call no callee can take now, to a procedure with a call queue
    /// ([`Core::has_call_queue`]): queued, or refused with `uri` and `text`
    /// when the queue is full.
    pub(crate) fn queue_call(
        &mut self,
        session: Id,
        c: Call,
        timeout_ms: u64,
        uri: &str,
        text: &str,
    ) {
        let Some(i) = self.queues.entry_for(&c.procedure) else {
            return self.send(
                session,
                error_msg(code::CALL, c.request, uri, text.to_owned()),
            );
        };
        let limit = self.queues.entries[i].2;
        if self.queues.queued[i].len() >= limit {
            let msg = format!(
                "{text}, and its call queue is full ({limit} calls wait: the realm's store.call-queue limit)"
            );
            return self.send(session, error_msg(code::CALL, c.request, uri, msg));
        }
        debug!(session, request = c.request, procedure = %c.procedure, "call queued: no callee can take it now");
        if timeout_ms > 0 {
            let timer = Timer {
                invocation: QUEUED,
                caller: session,
                request: c.request,
            };
            self.timers.insert(timer);
            self.push(Effect::StartTimer {
                timer,
                after_ms: timeout_ms,
            });
        }
        self.queues.queued[i].push_back(Queued {
            session,
            call: c,
            since: self.now,
            timeout_ms,
        });
        self.queues.total += 1;
    }

    fn stop_queue_timer(&mut self, w: &Queued) {
        if w.timeout_ms == 0 {
            return;
        }
        let timer = Timer {
            invocation: QUEUED,
            caller: w.session,
            request: w.call.request,
        };
        if self.timers.remove(&timer) {
            self.push(Effect::CancelTimer { timer });
        }
    }

    /// Send out the calls that a callee can take now, in order.
    pub(crate) fn drain_call_queues(&mut self) {
        for i in 0..self.queues.queued.len() {
            // Each call at most once per round: one that comes back (a
            // callee that cannot take it after all) waits for the next.
            let mut rounds = self.queues.queued[i].len();
            while rounds > 0 {
                rounds -= 1;
                let Some(front) = self.queues.queued[i].front() else {
                    break;
                };
                if self.sessions.contains_key(&front.session)
                    && !self.dealer.can_take(&front.call.procedure)
                {
                    break;
                }
                let Some(w) = self.queues.queued[i].pop_front() else {
                    break;
                };
                self.queues.total -= 1;
                self.stop_queue_timer(&w);
                if !self.sessions.contains_key(&w.session) {
                    continue;
                }
                let mut c = w.call;
                if w.timeout_ms > 0 {
                    // The caller's timeout counts from its CALL.
                    let waited = self
                        .now
                        .duration_since(w.since)
                        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                    let left = w.timeout_ms.saturating_sub(waited).max(1);
                    c.options.insert("timeout".into(), Value::from(left));
                }
                debug!(session = w.session, request = c.request, procedure = %c.procedure, "queued call goes out");
                self.call(w.session, c);
            }
        }
    }

    /// A queued call's timeout fired.
    pub(crate) fn queued_call_timed_out(&mut self, t: Timer) {
        let Some(w) = self.queues.take(t.caller, t.request) else {
            return;
        };
        self.send(
            t.caller,
            error_msg(
                code::CALL,
                t.request,
                wamp_uri::TIMEOUT,
                format!(
                    "the call to {:?} waited {} ms in the call queue and no callee could take it",
                    w.call.procedure, w.timeout_ms
                ),
            ),
        );
    }

    /// The caller cancels a queued call: `true` if it was queued.
    pub(crate) fn cancel_queued(&mut self, session: Id, request: Id) -> bool {
        let Some(w) = self.queues.take(session, request) else {
            return false;
        };
        self.stop_queue_timer(&w);
        self.send(
            session,
            error_msg(
                code::CALL,
                request,
                wamp_uri::CANCELED,
                "the call was canceled by the caller while it waited in the call queue".into(),
            ),
        );
        true
    }

    /// The session left: its queued calls go.
    pub(crate) fn forget_queued(&mut self, session: Id) {
        if self.queues.total == 0 {
            return;
        }
        let mut gone = Vec::new();
        for q in &mut self.queues.queued {
            let mut kept = VecDeque::with_capacity(q.len());
            for w in q.drain(..) {
                if w.session == session {
                    gone.push(w);
                } else {
                    kept.push_back(w);
                }
            }
            *q = kept;
        }
        self.queues.total -= gone.len();
        for w in &gone {
            self.stop_queue_timer(w);
        }
    }

    /// Whether (`session`, `request`) waits in a queue (a CALL reusing its
    /// request id is a protocol violation).
    pub(crate) fn is_queued(&self, session: Id, request: Id) -> bool {
        self.queues.total > 0
            && self.queues.queued.iter().any(|q| {
                q.iter()
                    .any(|w| w.session == session && w.call.request == request)
            })
    }
}

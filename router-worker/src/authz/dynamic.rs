//! Dynamic authorization: a role whose permissions name an authorizer
//! procedure is asked per (URI, action), through a call the realm makes
//! itself. Until it answers, the session's messages wait (parked, in
//! order, at most [`MAX_PARKED`]); its answer is used once, or kept for the
//! session when it says `cache: true`. No answer within
//! [`AUTHORIZER_TIMEOUT_MS`], an error or a malformed answer denies, with
//! the cause in the log and in the client's error.

use proto::errors::uri as wamp_uri;
use proto::{Dict, Id, Message, Payload, Value};
use tracing::warn;

use super::{Action, Decision};
use crate::realm::core::Waiter;
use crate::realm::{Core, InternalCallError};

/// How long a dynamic authorizer may take before the action is denied.
pub const AUTHORIZER_TIMEOUT_MS: u64 = 5_000;
/// Messages a session may have waiting for its authorizer's answer.
pub const MAX_PARKED: usize = 256;
/// Legacy authorizers named in the log (each once).
const MAX_LEGACY_WARNINGS: usize = 64;

/// Whether a Python TypeError says the authorizer has no parameter for the
/// options: `authorize(self, session, uri, action)` called with four
/// arguments (or a plain function with three, or Python 2's wording).
fn takes_no_options(message: &str) -> bool {
    message.contains("takes 4 positional arguments but 5 were given")
        || message.contains("takes 3 positional arguments but 4 were given")
        || message.contains("takes exactly 4 arguments")
}

/// A dynamic authorizer's decision, cached per session.
#[derive(Debug, Clone, PartialEq)]
pub struct Cached {
    pub(crate) allow: bool,
    pub(crate) disclose: bool,
    /// Kept for later actions (`cache: true`), else used once.
    pub(crate) keep: bool,
    /// Why it was denied, when the authorizer failed.
    pub(crate) reason: Option<(&'static str, String)>,
}

/// Turn an authorizer's answer into a decision. A boolean is used once; a
/// dict `{allow, disclose, cache}` is kept for the session when `cache` is
/// true. Anything else, an error or a timeout denies, with the cause.
pub(crate) fn parse_answer(
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

/// What to ask an authorizer: the URI, the action, the message's options
/// and the authorizer procedure.
type Question = (String, Action, Dict, String);

impl Core {
    /// Dispatch a session's message, or park it while its authorizer has
    /// not answered for it (or for an earlier message).
    pub(crate) fn dispatch(&mut self, session: Id, msg: Box<Message>) {
        let waiting = self
            .sessions
            .get(&session)
            .and_then(|e| e.dynamic.as_deref())
            .is_some_and(|d| d.awaiting || !d.parked.is_empty());
        if waiting {
            return self.park(session, *msg);
        }
        if let Some(question) = self.needs_authorizer(session, &msg) {
            self.park(session, *msg);
            if let Some(e) = self.sessions.get_mut(&session) {
                e.dynamic().awaiting = true;
            }
            return self.ask_authorizer(session, question, false);
        }
        self.dispatch_now(session, *msg);
    }

    /// The question a message needs answered, if its session's role decides
    /// through a dynamic authorizer that has not answered for it yet.
    fn needs_authorizer(&self, session: Id, msg: &Message) -> Option<Question> {
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
        if entry
            .dynamic
            .as_ref()
            .is_some_and(|d| d.cache.contains_key(&(uri.clone(), action)))
        {
            return None;
        }
        Some((uri.clone(), action, options.clone(), procedure.to_owned()))
    }

    /// Park a message until the session's authorizer has answered.
    fn park(&mut self, session: Id, msg: Message) {
        let Some(entry) = self.sessions.get_mut(&session) else {
            return;
        };
        let parked = &mut entry.dynamic().parked;
        if parked.len() >= MAX_PARKED {
            return self.kill(
                session,
                wamp_uri::CLOSE_KILLED,
                format!("more than {MAX_PARKED} messages are waiting for the session's authorizer"),
            );
        }
        parked.push_back(msg);
    }

    /// The authorizer answered for `session`: keep the decision and go on
    /// with the parked messages. An authorizer written the legacy way,
    /// `authorize(session, uri, action)`, raises a TypeError at the
    /// options argument: it is asked again without them, as Crossbar.io
    /// means to do (its own fallback looks for Python 2's wording, so the
    /// crossbar-examples authorizer of that shape fails there).
    pub(crate) fn authorizer_answered(
        &mut self,
        session: Id,
        uri: String,
        action: Action,
        procedure: &str,
        legacy: bool,
        result: Result<Payload, InternalCallError>,
    ) {
        if !legacy
            && let Err(InternalCallError::Error { message, .. }) = &result
            && takes_no_options(message)
        {
            if self.legacy_authorizers.len() < MAX_LEGACY_WARNINGS
                && self.legacy_authorizers.insert(procedure.to_owned())
            {
                warn!(authorizer = %procedure, "the authorizer takes Crossbar.io's legacy three arguments (session, uri, action): it is asked again without the options; give it a fourth parameter, options");
            }
            let options = Dict::new();
            return self.ask_authorizer(
                session,
                (uri, action, options, procedure.to_owned()),
                true,
            );
        }
        let cached = parse_answer(procedure, &uri, action, result);
        if let Some(reason) = &cached.reason {
            warn!(session, %uri, %action, authorizer = %procedure, "{}", reason.1);
        }
        if let Some(e) = self.sessions.get_mut(&session) {
            let d = e.dynamic();
            d.awaiting = false;
            d.cache.insert((uri, action), cached);
        }
        self.drain_parked(session);
    }

    /// Dispatch parked messages until one needs the authorizer again.
    fn drain_parked(&mut self, session: Id) {
        loop {
            let Some(d) = self
                .sessions
                .get_mut(&session)
                .and_then(|e| e.dynamic.as_deref_mut())
            else {
                return;
            };
            if d.awaiting {
                return;
            }
            let Some(msg) = d.parked.pop_front() else {
                return;
            };
            if let Some(question) = self.needs_authorizer(session, &msg) {
                if let Some(entry) = self.sessions.get_mut(&session) {
                    let d = entry.dynamic();
                    d.parked.push_front(msg);
                    d.awaiting = true;
                }
                self.ask_authorizer(session, question, false);
                return;
            }
            self.dispatch_now(session, msg);
        }
    }

    /// Ask `procedure` about `uri` and `action`: with the session's
    /// details and the message's options, or, `legacy`, without the options.
    fn ask_authorizer(
        &mut self,
        session: Id,
        (uri, action, options, procedure): Question,
        legacy: bool,
    ) {
        let Some(e) = self.sessions.get(&session) else {
            return;
        };
        let details = proto::dict! {
            "session" => session,
            "authid" => e.info.authid.as_ref(),
            "authrole" => e.info.authrole.as_ref(),
            "authmethod" => e.info.authmethod.as_ref(),
            "authprovider" => e.info.authprovider.as_ref(),
            "authextra" => e.info.authextra.clone(),
        };
        let mut args = vec![
            details.into(),
            Value::from(uri.as_str()),
            Value::from(action.name()),
        ];
        if !legacy {
            args.push(options.into());
        }
        let payload = Payload::args(args);
        let waiter = Waiter::Authorize {
            session,
            uri,
            action,
            procedure: procedure.clone(),
            asked: self.now,
            legacy,
        };
        self.internal_call(&procedure, payload, AUTHORIZER_TIMEOUT_MS, waiter);
    }

    /// A dynamic authorizer's answer for this action, if the session's role
    /// has an authorizer; one-time answers are consumed here.
    pub(crate) fn cached_decision(
        &mut self,
        session: Id,
        uri_str: &str,
        action: Action,
    ) -> Option<Result<Decision, (&'static str, String)>> {
        let entry = self.sessions.get_mut(&session)?;
        self.authz.authorizer_for(&entry.info.authrole)?;
        let cache = &mut entry.dynamic.as_deref_mut()?.cache;
        let key = (uri_str.to_owned(), action);
        let cached = cache.get(&key)?.clone();
        if !cached.keep {
            cache.remove(&key);
        }
        Some(match cached.reason {
            Some(r) => Err(r),
            None => Ok(Decision {
                allow: cached.allow,
                disclose: cached.disclose,
                disclose_on_request: true,
            }),
        })
    }
}

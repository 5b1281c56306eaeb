//! The WAMP meta API: `wamp.session.*`, `wamp.registration.*`,
//! `wamp.subscription.*` procedures and the meta events, realm-local.
//!
//! These are more methods of the realm's core ([`crate::realm::Core`]); calls reach
//! them after the normal authorization check on the procedure URI, so a role
//! sees the meta API only where its permissions allow.

use proto::errors::uri as wamp_uri;
use proto::uri::MatchPolicy;
use proto::{Dict, Id, Payload, Value};

use crate::authz::Action;
use crate::realm::{Audience, Core, MAX_TESTAMENTS, Testament, receives};

use wamp_uri::NO_SUCH_SESSION;

type MetaResult = Result<Payload, (&'static str, String)>;

fn one(v: impl Into<Value>) -> Payload {
    Payload::args(vec![v.into()])
}

fn bad(text: String) -> (&'static str, String) {
    (wamp_uri::INVALID_ARGUMENT, text)
}

fn arg<'a>(
    p: &'a Payload,
    i: usize,
    name: &str,
    proc_: &str,
) -> Result<&'a Value, (&'static str, String)> {
    p.args
        .get(i)
        .or_else(|| p.kwargs.get(name))
        .ok_or_else(|| bad(format!("{proc_} needs argument {} ({name})", i + 1)))
}

fn id_arg(p: &Payload, i: usize, name: &str, proc_: &str) -> Result<Id, (&'static str, String)> {
    let v = arg(p, i, name, proc_)?;
    v.as_id().ok_or_else(|| {
        bad(format!(
            "{proc_}: {name} must be an id (integer), found {}",
            v.type_name()
        ))
    })
}

fn str_arg<'a>(
    p: &'a Payload,
    i: usize,
    name: &str,
    proc_: &str,
) -> Result<&'a str, (&'static str, String)> {
    let v = arg(p, i, name, proc_)?;
    v.as_str().ok_or_else(|| {
        bad(format!(
            "{proc_}: {name} must be a string, found {}",
            v.type_name()
        ))
    })
}

fn opt_arg<'a>(p: &'a Payload, i: usize, name: &str) -> Option<&'a Value> {
    p.args
        .get(i)
        .or_else(|| p.kwargs.get(name))
        .filter(|v| !matches!(v, Value::Null))
}

fn ids(list: impl IntoIterator<Item = Id>) -> Value {
    Value::List(list.into_iter().map(Value::from).collect())
}

fn by_policy(groups: [(MatchPolicy, Vec<Id>); 3]) -> Payload {
    let mut d = Dict::new();
    for (policy, list) in groups {
        d.insert(policy.name().into(), ids(list));
    }
    one(d)
}

fn match_option(p: &Payload, i: usize, proc_: &str) -> Result<MatchPolicy, (&'static str, String)> {
    match opt_arg(p, i, "options") {
        None => Ok(MatchPolicy::Exact),
        Some(Value::Dict(o)) => {
            MatchPolicy::from_option(o.get("match")).map_err(|e| bad(format!("{proc_}: {e}")))
        }
        Some(other) => Err(bad(format!(
            "{proc_}: options must be a dict, found {}",
            other.type_name()
        ))),
    }
}

impl Core {
    /// Session details as `wamp.session.get` and `on_join` report them.
    fn session_details(&self, id: Id) -> Option<Dict> {
        let e = self.sessions.get(&id)?;
        Some(proto::dict! {
            "session" => id,
            "authid" => e.info.authid.as_ref(),
            "authrole" => e.info.authrole.as_ref(),
            "authmethod" => e.info.authmethod.as_ref(),
            "authprovider" => e.info.authprovider.as_ref(),
            "authextra" => Dict::new(),
            "transport" => e.info.transport.to_dict(),
        })
    }

    /// Publish a meta event (fan-out finds nobody when nobody subscribed).
    pub(crate) fn meta_event(&mut self, topic: &str, args: Vec<Value>) {
        self.publish_internal(topic, Payload::args(args), &Audience::default());
    }

    pub(crate) fn meta_on_join(&mut self, session: Id) {
        // Nobody to tell here (and, clustered, maybe someone elsewhere).
        if !self.clustered && self.broker.matching("wamp.session.on_join").is_empty() {
            return;
        }
        if let Some(d) = self.session_details(session) {
            self.meta_event("wamp.session.on_join", vec![d.into()]);
        }
    }

    fn subscription_details(&self, id: Id) -> Option<Dict> {
        let s = self.broker.get(id)?;
        Some(proto::dict! {
            "id" => id,
            "created" => s.created.as_str(),
            "uri" => s.topic.as_str(),
            "match" => s.policy.name(),
        })
    }

    fn registration_details(&self, id: Id) -> Option<Dict> {
        let r = self.dealer.get(id)?;
        Some(proto::dict! {
            "id" => id,
            "created" => r.created.as_str(),
            "uri" => r.procedure.as_str(),
            "match" => r.policy.name(),
            "invoke" => r.invoke.name(),
        })
    }

    pub(crate) fn meta_subscription_created(&mut self, session: Id, id: Id) {
        if let Some(d) = self.subscription_details(id) {
            self.meta_event(
                "wamp.subscription.on_create",
                vec![session.into(), d.into()],
            );
        }
    }

    pub(crate) fn meta_registration_created(&mut self, session: Id, id: Id) {
        if let Some(d) = self.registration_details(id) {
            self.meta_event(
                "wamp.registration.on_create",
                vec![session.into(), d.into()],
            );
        }
    }

    /// A session left a subscription (and it may be gone now).
    pub(crate) fn meta_unsubscribed(&mut self, session: Id, id: Id, deleted: bool) {
        self.meta_event(
            "wamp.subscription.on_unsubscribe",
            vec![session.into(), id.into()],
        );
        if deleted {
            self.meta_event(
                "wamp.subscription.on_delete",
                vec![session.into(), id.into()],
            );
        }
    }

    /// A session left a registration (and it may be gone now).
    pub(crate) fn meta_unregistered(&mut self, session: Id, id: Id, deleted: bool) {
        self.meta_event(
            "wamp.registration.on_unregister",
            vec![session.into(), id.into()],
        );
        if deleted {
            self.meta_event(
                "wamp.registration.on_delete",
                vec![session.into(), id.into()],
            );
        }
    }

    fn filter_roles(
        p: &Payload,
        proc_: &str,
    ) -> Result<Option<Vec<String>>, (&'static str, String)> {
        match opt_arg(p, 0, "filter_authroles") {
            None => Ok(None),
            Some(Value::List(l)) => l
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_owned).ok_or_else(|| {
                        bad(format!(
                            "{proc_}: filter_authroles must be a list of strings"
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(bad(format!(
                "{proc_}: filter_authroles must be a list of strings, found {}",
                other.type_name()
            ))),
        }
    }

    fn kill_args(p: &Payload, first: usize) -> Result<(String, String), (&'static str, String)> {
        let reason = match opt_arg(p, first, "reason") {
            None => wamp_uri::CLOSE_NORMAL.to_owned(),
            Some(Value::Str(s)) => {
                proto::uri::validate(s, MatchPolicy::Exact, false)
                    .map_err(|e| (wamp_uri::INVALID_URI, format!("reason: {e}")))?;
                s.clone()
            }
            Some(other) => {
                return Err(bad(format!(
                    "reason must be a URI string, found {}",
                    other.type_name()
                )));
            }
        };
        let message = match opt_arg(p, first + 1, "message") {
            None => "killed through the meta API".to_owned(),
            Some(Value::Str(s)) => s.clone(),
            Some(other) => {
                return Err(bad(format!(
                    "message must be a string, found {}",
                    other.type_name()
                )));
            }
        };
        Ok((reason, message))
    }

    /// A meta query about a URI or pattern is answered only to a role that
    /// may itself `action` all of it (a dynamic authorizer's role decided
    /// when it allowed the meta procedure).
    fn may_query(
        &self,
        session: Id,
        procedure: &str,
        uri: &str,
        policy: MatchPolicy,
        action: Action,
    ) -> Result<(), (&'static str, String)> {
        let Some(role) = self
            .sessions
            .get(&session)
            .map(|e| e.info.authrole.as_ref())
        else {
            return Ok(());
        };
        if self.authz.authorizer_for(role).is_some() {
            return Ok(());
        }
        self.authz
            .authorize_pattern(role, uri, policy, action)
            .map(|_| ())
            .map_err(|text| (wamp_uri::NOT_AUTHORIZED, format!("{procedure}: {text}")))
    }

    /// Answer a call to a `wamp.*` procedure.
    pub(crate) fn meta_call(&mut self, session: Id, procedure: &str, p: Payload) -> MetaResult {
        let pr = procedure;
        match procedure {
            "wamp.session.count" | "wamp.session.list" => {
                let roles = Self::filter_roles(&p, pr)?;
                let mut list: Vec<Id> = self
                    .sessions
                    .iter()
                    .filter(|(_, e)| {
                        roles
                            .as_ref()
                            .is_none_or(|r| r.iter().any(|x| **x == *e.info.authrole))
                    })
                    .map(|(id, _)| *id)
                    .collect();
                if procedure == "wamp.session.count" {
                    return Ok(one(list.len() as u64));
                }
                list.sort_unstable();
                Ok(one(ids(list)))
            }
            "wamp.session.get" => {
                let id = id_arg(&p, 0, "session", pr)?;
                self.session_details(id)
                    .map(one)
                    .ok_or_else(|| (NO_SUCH_SESSION, format!("no session {id} in this realm")))
            }
            "wamp.session.kill" => {
                let id = id_arg(&p, 0, "session", pr)?;
                let (reason, message) = Self::kill_args(&p, 1)?;
                // The specification: the caller's own session is not one
                // this procedure can find.
                if id == session {
                    return Err((
                        NO_SUCH_SESSION,
                        format!(
                            "{pr} does not close the calling session ({id}): leave with GOODBYE instead"
                        ),
                    ));
                }
                if !self.sessions.contains_key(&id) {
                    return Err((NO_SUCH_SESSION, format!("no session {id} in this realm")));
                }
                self.kill(id, &reason, message);
                Ok(Payload::default())
            }
            "wamp.session.kill_by_authid" | "wamp.session.kill_by_authrole" => {
                let by_role = procedure.ends_with("authrole");
                let key =
                    str_arg(&p, 0, if by_role { "authrole" } else { "authid" }, pr)?.to_owned();
                let (reason, message) = Self::kill_args(&p, 1)?;
                // The caller's own session is never among the killed.
                let mut victims: Vec<Id> = self
                    .sessions
                    .iter()
                    .filter(|(id, e)| {
                        **id != session
                            && if by_role {
                                *e.info.authrole == *key
                            } else {
                                *e.info.authid == *key
                            }
                    })
                    .map(|(id, _)| *id)
                    .collect();
                victims.sort_unstable();
                for id in &victims {
                    self.kill(*id, &reason, message.clone());
                }
                if by_role {
                    Ok(one(victims.len() as u64))
                } else {
                    Ok(one(ids(victims)))
                }
            }
            "wamp.session.add_testament" => {
                let topic = str_arg(&p, 0, "topic", pr)?.to_owned();
                proto::uri::validate(&topic, MatchPolicy::Exact, self.strict)
                    .map_err(|e| (wamp_uri::INVALID_URI, e.to_string()))?;
                let args = match opt_arg(&p, 1, "args") {
                    None => Vec::new(),
                    Some(Value::List(l)) => l.clone(),
                    Some(other) => {
                        return Err(bad(format!(
                            "{pr}: args must be a list, found {}",
                            other.type_name()
                        )));
                    }
                };
                let kwargs = match opt_arg(&p, 2, "kwargs") {
                    None => Dict::new(),
                    Some(Value::Dict(d)) => d.clone(),
                    Some(other) => {
                        return Err(bad(format!(
                            "{pr}: kwargs must be a dict, found {}",
                            other.type_name()
                        )));
                    }
                };
                let opts = match opt_arg(&p, 3, "options") {
                    None => Dict::new(),
                    Some(Value::Dict(d)) => d.clone(),
                    Some(other) => {
                        return Err(bad(format!(
                            "{pr}: options must be a dict, found {}",
                            other.type_name()
                        )));
                    }
                };
                let publish_options = match opts.get("publish_options") {
                    None | Some(Value::Null) => Dict::new(),
                    Some(Value::Dict(d)) => d.clone(),
                    Some(other) => {
                        return Err(bad(format!(
                            "{pr}: publish_options must be a dict, found {}",
                            other.type_name()
                        )));
                    }
                };
                Audience::parse(&publish_options)
                    .map_err(|e| bad(format!("{pr}: publish_options: {e}")))?;
                let scope = match opts.get("scope") {
                    None | Some(Value::Null) => "destroyed".to_owned(),
                    Some(Value::Str(s)) if s == "destroyed" || s == "detached" => s.clone(),
                    Some(other) => {
                        return Err(bad(format!(
                            "{pr}: scope must be \"destroyed\" or \"detached\", found {other}"
                        )));
                    }
                };
                // Publishing a testament is publishing: the role must allow it.
                if !self
                    .authz
                    .authorize(
                        &self
                            .sessions
                            .get(&session)
                            .map(|e| e.info.authrole.clone())
                            .unwrap_or_default(),
                        &topic,
                        Action::Publish,
                    )
                    .allow
                {
                    return Err((
                        wamp_uri::NOT_AUTHORIZED,
                        format!(
                            "session is not authorized to publish {topic:?}, so it may not leave a testament there"
                        ),
                    ));
                }
                let list = self.testaments.entry(session).or_default();
                if list.len() >= MAX_TESTAMENTS {
                    return Err(bad(format!(
                        "a session may leave at most {MAX_TESTAMENTS} testaments"
                    )));
                }
                list.push(Testament {
                    topic,
                    payload: Payload {
                        args,
                        kwargs,
                        passthru: None,
                        raw: None,
                    },
                    options: publish_options,
                    scope,
                });
                Ok(Payload::default())
            }
            "wamp.session.flush_testaments" => {
                let scope = match opt_arg(&p, 0, "options") {
                    Some(Value::Dict(d)) => d
                        .get("scope")
                        .and_then(Value::as_str)
                        .unwrap_or("destroyed")
                        .to_owned(),
                    _ => "destroyed".to_owned(),
                };
                let list = self.testaments.entry(session).or_default();
                let before = list.len();
                list.retain(|t| t.scope != scope);
                Ok(one((before - list.len()) as u64))
            }
            "wamp.registration.list" => Ok(by_policy(self.dealer.ids_by_policy())),
            "wamp.registration.lookup" => {
                let uri = str_arg(&p, 0, "procedure", pr)?;
                let policy = match_option(&p, 1, pr)?;
                self.may_query(session, pr, uri, policy, Action::Call)?;
                Ok(one(self
                    .dealer
                    .lookup_exact(uri, policy)
                    .map_or(Value::Null, Value::from)))
            }
            "wamp.registration.match" => {
                let uri = str_arg(&p, 0, "procedure", pr)?;
                self.may_query(session, pr, uri, MatchPolicy::Exact, Action::Call)?;
                Ok(one(self
                    .dealer
                    .lookup(uri)
                    .map_or(Value::Null, |r| Value::from(r.id))))
            }
            "wamp.registration.get" => {
                let id = id_arg(&p, 0, "registration", pr)?;
                self.registration_details(id).map(one).ok_or_else(|| {
                    (
                        wamp_uri::NO_SUCH_REGISTRATION,
                        format!("no registration {id} in this realm"),
                    )
                })
            }
            "wamp.registration.list_callees" | "wamp.registration.count_callees" => {
                let id = id_arg(&p, 0, "registration", pr)?;
                let reg = self.dealer.get(id).ok_or_else(|| {
                    (
                        wamp_uri::NO_SUCH_REGISTRATION,
                        format!("no registration {id} in this realm"),
                    )
                })?;
                if procedure.ends_with("count_callees") {
                    Ok(one(reg.callees.len() as u64))
                } else {
                    Ok(one(ids(reg.callees.iter().copied())))
                }
            }
            "wamp.subscription.list" => Ok(by_policy(self.broker.ids_by_policy())),
            "wamp.subscription.lookup" => {
                let uri = str_arg(&p, 0, "topic", pr)?;
                let policy = match_option(&p, 1, pr)?;
                self.may_query(session, pr, uri, policy, Action::Subscribe)?;
                Ok(one(self
                    .broker
                    .lookup(uri, policy)
                    .map_or(Value::Null, Value::from)))
            }
            "wamp.subscription.match" => {
                let uri = str_arg(&p, 0, "topic", pr)?;
                self.may_query(session, pr, uri, MatchPolicy::Exact, Action::Subscribe)?;
                let mut found: Vec<Id> = self.broker.matching(uri).iter().map(|s| s.id).collect();
                found.sort_unstable();
                Ok(one(if found.is_empty() {
                    Value::Null
                } else {
                    ids(found)
                }))
            }
            "wamp.subscription.get" => {
                let id = id_arg(&p, 0, "subscription", pr)?;
                self.subscription_details(id).map(one).ok_or_else(|| {
                    (
                        wamp_uri::NO_SUCH_SUBSCRIPTION,
                        format!("no subscription {id} in this realm"),
                    )
                })
            }
            "wamp.subscription.list_subscribers" | "wamp.subscription.count_subscribers" => {
                let id = id_arg(&p, 0, "subscription", pr)?;
                let sub = self.broker.get(id).ok_or_else(|| {
                    (
                        wamp_uri::NO_SUCH_SUBSCRIPTION,
                        format!("no subscription {id} in this realm"),
                    )
                })?;
                if procedure.ends_with("count_subscribers") {
                    Ok(one(sub.subscribers.len() as u64))
                } else {
                    Ok(one(ids(sub.subscribers.iter().copied())))
                }
            }
            "wamp.subscription.get_events" => {
                let id = id_arg(&p, 0, "subscription", pr)?;
                let limit = match opt_arg(&p, 1, "limit") {
                    None => 10,
                    Some(v) => v.as_u64().ok_or_else(|| {
                        bad(format!(
                            "{pr}: limit must be a non-negative integer, found {v}"
                        ))
                    })? as usize,
                };
                let Some(sub) = self.broker.get(id) else {
                    return Err((
                        wamp_uri::NO_SUCH_SUBSCRIPTION,
                        format!("no subscription {id} in this realm"),
                    ));
                };
                // Reading history is subscribing to the past: the role must
                // be allowed the subscription's whole pattern.
                let (topic, policy) = (sub.topic.clone(), sub.policy);
                self.may_query(session, pr, &topic, policy, Action::Subscribe)?;
                let Some(entry) = self.sessions.get(&session) else {
                    return Ok(one(Value::List(Vec::new())));
                };
                let info = &entry.info;
                let events = self.broker.history(id, limit).ok_or_else(|| {
                    (
                        "wamp.error.history_unavailable",
                        format!(
                            "no event history is kept for subscription {id}: configure its topic under the realm's store.event-history"
                        ),
                    )
                })?;
                // The publisher's audience holds for history as for the
                // live event, and so does the role for each concrete topic.
                let list: Vec<Value> = events
                    .into_iter()
                    .filter(|e| receives(&self.authz, &e.audience, policy, &e.topic, session, info))
                    .map(|e| {
                        // Stored as published: arguments that came raw are
                        // decoded for the answer (they decoded on arrival).
                        let p = e.payload.decoded().unwrap_or_default();
                        Value::Dict(proto::dict! {
                            "timestamp" => e.timestamp.as_str(),
                            "subscription" => id,
                            "publication" => e.publication,
                            "topic" => e.topic.as_str(),
                            "args" => p.args.clone(),
                            "kwargs" => p.kwargs.clone(),
                        })
                    })
                    .collect();
                Ok(one(list))
            }
            other => Err((
                wamp_uri::NO_SUCH_PROCEDURE,
                format!("{other:?} is not a meta procedure this router provides"),
            )),
        }
    }
}

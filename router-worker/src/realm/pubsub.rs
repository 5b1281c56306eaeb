//! The core's Pub/Sub: PUBLISH, SUBSCRIBE, UNSUBSCRIBE, retained events,
//! event history and the publisher's audience.

use proto::errors::uri as wamp_uri;
use proto::message::{
    Event, Publish, Published, Subscribe, Subscribed, Unsubscribe, Unsubscribed, code,
};
use proto::options::{self, Audience, PublishOptions, SubscribeOptions};
use proto::uri::MatchPolicy;
use proto::{Dict, Id, Message, Payload, Value};
use rand::RngExt;
use tracing::{debug, warn};

use super::SessionInfo;
use super::core::{Core, Effect, error_msg};
use crate::authz::{Action, Authorizer};
use crate::broker::{HistoryEvent, Retained};
use crate::outbound::OutMsg;

/// Whether session `sid` gets an event on `topic` through a subscription of
/// `policy`: the publisher's audience admits it, and a pattern subscription
/// never leaks a topic its role may not subscribe to. The same for live
/// events, retained events and event history.
pub fn receives(
    authz: &Authorizer,
    audience: &Audience,
    policy: MatchPolicy,
    topic: &str,
    sid: Id,
    info: &SessionInfo,
) -> bool {
    audience.admits(sid, &info.authid, &info.authrole)
        && (policy == MatchPolicy::Exact
            || authz
                .authorize(&info.authrole, topic, Action::Subscribe)
                .allow)
}

/// Where a forwarded publication keeps its EVENT details.
const FORWARDED_DETAILS: &str = "_details";
/// In a forwarded publication: the event is to be retained (`retain`),
/// and by whom it was published.
const FORWARDED_RETAIN: &str = "_retain";

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

impl Core {
    /// Deliver one publication to every eligible subscriber: one EVENT per
    /// matching subscription, shared by all its subscribers.
    pub(crate) fn fanout(&mut self, p: &Publication) {
        let Core {
            broker,
            sessions,
            authz,
            fx,
            stats,
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
            if sub.group.is_some() && recipients.len() > 1 {
                // A shared subscription: one of its subscribers, at
                // random (the publication id is).
                let one = recipients[usize::try_from(p.id).unwrap_or(0) % recipients.len()];
                recipients.clear();
                recipients.push(one);
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
            stats.events_sent(recipients.len());
            for &sid in &recipients {
                fx.push(Effect::Send {
                    to: sid,
                    msg: event.clone(),
                });
            }
        }
        if self.broker.wants_history(p.topic) {
            self.broker.record(&HistoryEvent {
                timestamp: crate::time::iso8601(self.now),
                publication: p.id,
                topic: p.topic.to_owned(),
                payload: p.payload.clone(),
                audience: p.audience.clone(),
            });
        }
    }

    /// Publish an event from the router itself (meta events, testaments).
    pub(crate) fn publish_internal(&mut self, topic: &str, payload: Payload, audience: &Audience) {
        let id = self.rng.random_range(1..=proto::MAX_ID);
        let p = Publication {
            id,
            topic,
            payload: &payload,
            details: &Dict::new(),
            audience,
            exclude: None,
        };
        self.fanout(&p);
        self.forward(&p, None);
    }

    /// In a clustered realm: the publication for the other nodes, as a
    /// MessagePack PUBLISH whose request id is the publication id and whose
    /// options carry the audience and the EVENT details (`_details`). Each
    /// node matches it against its own subscribers; session ids are global,
    /// so `exclude`/`eligible` mean the same everywhere. `retained_by`:
    /// the publisher of an event to retain, so every node retains it.
    pub(crate) fn forward(&mut self, p: &Publication, retained_by: Option<Id>) {
        if !self.clustered {
            return;
        }
        let mut options = p.audience.to_options();
        if !p.details.is_empty() {
            options.insert(FORWARDED_DETAILS.into(), Value::Dict(p.details.clone()));
        }
        if let Some(publisher) = retained_by {
            options.insert(FORWARDED_RETAIN.into(), Value::from(publisher));
        }
        let msg = Message::Publish(Publish {
            request: p.id,
            options,
            topic: p.topic.to_owned(),
            payload: p.payload.clone(),
        });
        match proto::Serializer::MsgPack.encode_to_vec(&msg) {
            Ok(v) => self.fx.push(Effect::Forward(bytes::Bytes::from(v))),
            Err(e) => warn!(topic = %p.topic, "publication not forwarded to the cluster: {e}"),
        }
    }

    /// A publication [`Core::forward`]ed by another node: deliver it here.
    pub(crate) fn remote_publication(&mut self, bytes: &[u8]) {
        let p = match proto::Serializer::MsgPack.decode_forwarding(bytes) {
            Ok(Message::Publish(p)) => p,
            Ok(other) => {
                warn!(
                    message = other.name(),
                    "a cluster node forwarded something other than a publication: dropped"
                );
                return;
            }
            Err(e) => {
                warn!("a publication from the cluster could not be decoded: {e}");
                return;
            }
        };
        let audience = match Audience::parse(&p.options) {
            Ok(a) => a,
            Err(e) => {
                warn!(topic = %p.topic, "a publication from the cluster has a bad audience: {e}");
                return;
            }
        };
        let details = match p.options.get(FORWARDED_DETAILS) {
            Some(Value::Dict(d)) => d.clone(),
            _ => Dict::new(),
        };
        self.fanout(&Publication {
            id: p.request,
            topic: &p.topic,
            payload: &p.payload,
            details: &details,
            audience: &audience,
            exclude: None,
        });
        if let Some(publisher) = p.options.get(FORWARDED_RETAIN).and_then(Value::as_id)
            && !self.broker.retain(
                &p.topic,
                Retained {
                    publication: p.request,
                    details,
                    payload: p.payload,
                    audience,
                    publisher,
                },
            )
        {
            warn!(topic = %p.topic, "event from the cluster not retained: the realm's limit of retained topics is reached");
        }
    }

    pub(crate) fn publish(&mut self, session: Id, p: Publish) {
        let ack = options::flag(&p.options, "acknowledge");
        let fail = |realm: &mut Core, uri: &'static str, text: String| {
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
        let o = match PublishOptions::parse(&p.options) {
            Ok(o) => o,
            Err(text) => return fail(self, wamp_uri::INVALID_ARGUMENT, text),
        };
        let disclose =
            match self.disclosed(session, decision, o.disclose_me, Action::Publish, &p.topic) {
                Ok(d) => d,
                Err((uri, text)) => return fail(self, uri, text),
            };
        let mut details = o.passthru;
        let publication = self.rng.random_range(1..=proto::MAX_ID);
        if disclose {
            details.insert("publisher".into(), Value::from(session));
            if let Some(e) = self.sessions.get(&session) {
                details.insert(
                    "publisher_authid".into(),
                    Value::from(e.info.authid.as_ref()),
                );
                details.insert(
                    "publisher_authrole".into(),
                    Value::from(e.info.authrole.as_ref()),
                );
            }
        }
        let publication_ref = Publication {
            id: publication,
            topic: &p.topic,
            payload: &p.payload,
            details: &details,
            audience: &o.audience,
            exclude: o.exclude_me.then_some(session),
        };
        self.fanout(&publication_ref);
        self.forward(&publication_ref, o.retain.then_some(session));
        if o.retain {
            let kept = self.broker.retain(
                &p.topic,
                Retained {
                    publication,
                    details,
                    payload: p.payload,
                    audience: o.audience,
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

    pub(crate) fn subscribe(&mut self, session: Id, s: Subscribe) {
        let o = match SubscribeOptions::parse(&s.options) {
            Ok(o) => o,
            Err(text) => {
                return self.send(
                    session,
                    error_msg(code::SUBSCRIBE, s.request, wamp_uri::INVALID_ARGUMENT, text),
                );
            }
        };
        let policy = o.policy;
        if let Err((uri, text)) = self.check_uri(session, &s.topic, policy, Action::Subscribe) {
            return self.send(session, error_msg(code::SUBSCRIBE, s.request, uri, text));
        }
        let r = self
            .broker
            .subscribe_in(session, &s.topic, policy, o.share.as_deref());
        debug!(session, topic = %s.topic, %policy, subscription = r.id, created = r.created, "subscribed");
        self.send(
            session,
            Message::Subscribed(Subscribed {
                request: s.request,
                subscription: r.id,
            }),
        );
        if o.get_retained {
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

    pub(crate) fn unsubscribe(&mut self, session: Id, u: Unsubscribe) {
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
}

//! The Broker: subscriptions and who receives a publication (sans-IO).
//!
//! Owned by the realm's core; plain synchronous methods, no sockets, so every
//! rule is unit-tested here. Sessions subscribing to the same (topic, match
//! policy) share one subscription id, as WAMP requires, which also lets the
//! realm encode one EVENT per subscription and serializer for all its
//! subscribers.

use std::collections::{BTreeSet, VecDeque};

use crate::fast::{HashMap, HashSet};

use proto::uri::{self, MatchPolicy};
use proto::{Dict, Id, Payload};

use crate::realm::Audience;

/// Ids grouped by match policy, each group sorted (the meta API's `list`
/// shape for subscriptions and registrations).
pub(crate) fn group_by_policy(
    items: impl Iterator<Item = (MatchPolicy, Id)>,
) -> [(MatchPolicy, Vec<Id>); 3] {
    let mut out = [
        (MatchPolicy::Exact, Vec::new()),
        (MatchPolicy::Prefix, Vec::new()),
        (MatchPolicy::Wildcard, Vec::new()),
    ];
    for (policy, id) in items {
        let i = match policy {
            MatchPolicy::Exact => 0,
            MatchPolicy::Prefix => 1,
            MatchPolicy::Wildcard => 2,
        };
        out[i].1.push(id);
    }
    for (_, ids) in &mut out {
        ids.sort_unstable();
    }
    out
}

/// The id of a subscription or registration: derived from what it is
/// (its kind, match policy and URI), so every node of a cluster gives the
/// same one the same id without asking the others (CLUSTER.md). Uniform
/// over 1..=2^53 like any WAMP id; should two URIs meet on one id (about
/// one chance in 10^9 for 3 000 live ones), the next free id is taken.
pub(crate) fn stable_id(
    kind: &str,
    policy: MatchPolicy,
    uri: &str,
    taken: impl Fn(Id) -> bool,
) -> Id {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(kind.as_bytes());
    h.update([0]);
    h.update(policy.to_string().as_bytes());
    h.update([0]);
    h.update(uri.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    let mut id = u64::from_be_bytes(b) % proto::MAX_ID + 1;
    while taken(id) {
        id = id % proto::MAX_ID + 1;
    }
    id
}

/// One subscription: a topic pattern and the sessions on it.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The subscription id handed to clients.
    pub id: Id,
    /// Topic or pattern.
    pub topic: String,
    /// How `topic` matches publications.
    pub policy: MatchPolicy,
    /// Subscribed sessions, ordered so fan-out order is stable.
    pub subscribers: BTreeSet<Id>,
    /// When the subscription was created (ISO 8601, for the meta API).
    pub created: String,
    /// A shared subscription's group: each event goes to one of its
    /// subscribers (at random), not to all.
    pub group: Option<String>,
}

/// The last event retained on a topic (`retain: true` on PUBLISH).
#[derive(Debug, Clone)]
pub struct Retained {
    /// The publication id.
    pub publication: Id,
    /// EVENT details as first delivered (publisher disclosure, ppt_*).
    pub details: Dict,
    /// The payload.
    pub payload: Payload,
    /// The publisher's session, for `exclude_me`.
    pub publisher: Id,
    /// Who may receive it (the publisher's `eligible`/`exclude` options).
    pub audience: Audience,
}

/// One event kept for `wamp.subscription.get_events`.
#[derive(Debug, Clone)]
pub struct HistoryEvent {
    /// When it was published (ISO 8601).
    pub timestamp: String,
    /// The publication id.
    pub publication: Id,
    /// The concrete topic.
    pub topic: String,
    /// The payload.
    pub payload: Payload,
    /// Who may read it back (the publisher's `eligible`/`exclude` options).
    pub audience: Audience,
}

/// Event history kept for one configured topic or pattern.
#[derive(Debug)]
struct History {
    uri: String,
    policy: MatchPolicy,
    limit: usize,
    events: VecDeque<HistoryEvent>,
}

/// Result of [`Broker::subscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscribed {
    /// The (possibly shared) subscription id.
    pub id: Id,
    /// True if this call created the subscription.
    pub created: bool,
}

/// Result of a successful [`Broker::unsubscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsubscribed {
    /// True if the last subscriber left and the subscription is gone.
    pub deleted: bool,
}

/// All subscriptions of one realm.
#[derive(Debug, Default)]
pub struct Broker {
    subs: HashMap<Id, Subscription>,
    /// Exact subscriptions by topic: the common case, no scan.
    exact: HashMap<String, Id>,
    /// Prefix and wildcard subscriptions by (policy, pattern).
    patterns: HashMap<(MatchPolicy, String), Id>,
    /// Shared subscriptions by (group, policy, pattern).
    shared: HashMap<(String, MatchPolicy, String), Id>,
    /// Which subscriptions each session holds, for cleanup on leave.
    by_session: HashMap<Id, HashSet<Id>>,
    /// Retained events by topic.
    retained: HashMap<String, Retained>,
    /// Most topics retained at once, so retention cannot grow without bound.
    max_retained: usize,
    /// Configured event histories.
    histories: Vec<History>,
}

impl Broker {
    /// An empty broker.
    pub fn new() -> Self {
        Broker {
            max_retained: 100_000,
            ..Broker::default()
        }
    }

    /// Keep the last `limit` events published to topics matching `uri`.
    pub fn add_history(&mut self, uri: &str, policy: MatchPolicy, limit: usize) {
        self.histories.push(History {
            uri: uri.to_owned(),
            policy,
            limit,
            events: VecDeque::new(),
        });
    }

    /// True if some configured history covers `topic` (worth recording).
    pub fn wants_history(&self, topic: &str) -> bool {
        self.histories
            .iter()
            .any(|h| uri::matches(&h.uri, h.policy, topic))
    }

    /// Record a publication in every history that covers its topic.
    pub fn record(&mut self, ev: &HistoryEvent) {
        for h in &mut self.histories {
            if uri::matches(&h.uri, h.policy, &ev.topic) {
                if h.events.len() >= h.limit {
                    h.events.pop_front();
                }
                h.events.push_back(ev.clone());
            }
        }
    }

    /// The last `limit` events (oldest first) of the history kept for the
    /// subscription's own topic and match policy; `None` if there is no
    /// such subscription or no history is configured for it.
    pub fn history(&self, subscription: Id, limit: usize) -> Option<Vec<&HistoryEvent>> {
        let sub = self.subs.get(&subscription)?;
        let h = self
            .histories
            .iter()
            .find(|h| h.uri == sub.topic && h.policy == sub.policy)?;
        let skip = h.events.len().saturating_sub(limit);
        Some(h.events.iter().skip(skip).collect())
    }

    /// Retain `event` as the last one on `topic`. Returns false (and keeps
    /// nothing) when the retention limit is reached for a new topic.
    pub fn retain(&mut self, topic: &str, event: Retained) -> bool {
        let p = &event.payload;
        if p.args.is_empty()
            && p.kwargs.is_empty()
            && p.raw.is_none()
            && p.passthru.as_ref().is_none_or(Vec::is_empty)
        {
            // An empty retained publication clears the topic's (MQTT's
            // rule; WAMP leaves it open).
            self.retained.remove(topic);
            return true;
        }
        if !self.retained.contains_key(topic) && self.retained.len() >= self.max_retained {
            return false;
        }
        self.retained.insert(topic.to_owned(), event);
        true
    }

    /// Retained events a new subscription should receive, by topic.
    pub fn retained_for(&self, subscription: Id) -> Vec<(&str, &Retained)> {
        let Some(sub) = self.subs.get(&subscription) else {
            return Vec::new();
        };
        if sub.policy == MatchPolicy::Exact {
            return self
                .retained
                .get_key_value(&sub.topic)
                .map(|(k, v)| vec![(k.as_str(), v)])
                .unwrap_or_default();
        }
        let mut out: Vec<(&str, &Retained)> = self
            .retained
            .iter()
            .filter(|(t, _)| uri::matches(&sub.topic, sub.policy, t))
            .map(|(t, r)| (t.as_str(), r))
            .collect();
        out.sort_by_key(|(t, _)| *t);
        out
    }

    /// The subscription id for exactly this topic and policy, if any.
    pub fn lookup(&self, topic: &str, policy: MatchPolicy) -> Option<Id> {
        match policy {
            MatchPolicy::Exact => self.exact.get(topic).copied(),
            p => self.patterns.get(&(p, topic.to_owned())).copied(),
        }
    }

    /// Subscription ids by match policy (for `wamp.subscription.list`).
    pub fn ids_by_policy(&self) -> [(MatchPolicy, Vec<Id>); 3] {
        group_by_policy(self.subs.values().map(|s| (s.policy, s.id)))
    }

    /// Subscribe `session` to `topic` under `policy`. Subscribing twice to the
    /// same topic and policy returns the same id (idempotent).
    pub fn subscribe(&mut self, session: Id, topic: &str, policy: MatchPolicy) -> Subscribed {
        self.subscribe_in(session, topic, policy, None)
    }

    /// Subscribe `session` to `topic` under `policy`, in a shared
    /// subscription's `group` if one is given (a subscription of its own,
    /// apart from the unshared one on the same topic).
    pub fn subscribe_in(
        &mut self,
        session: Id,
        topic: &str,
        policy: MatchPolicy,
        group: Option<&str>,
    ) -> Subscribed {
        let existing = match (group, policy) {
            (Some(g), _) => self
                .shared
                .get(&(g.to_owned(), policy, topic.to_owned()))
                .copied(),
            (None, MatchPolicy::Exact) => self.exact.get(topic).copied(),
            (None, _) => self.patterns.get(&(policy, topic.to_owned())).copied(),
        };
        let (id, created) = match existing {
            Some(id) => (id, false),
            None => {
                let kind = match group {
                    Some(g) => format!("shared subscription\0{g}"),
                    None => "subscription".to_owned(),
                };
                let id = stable_id(&kind, policy, topic, |id| self.subs.contains_key(&id));
                self.subs.insert(
                    id,
                    Subscription {
                        id,
                        topic: topic.to_owned(),
                        policy,
                        subscribers: BTreeSet::new(),
                        created: crate::time::now_iso8601(),
                        group: group.map(str::to_owned),
                    },
                );
                match (group, policy) {
                    (Some(g), _) => self
                        .shared
                        .insert((g.to_owned(), policy, topic.to_owned()), id),
                    (None, MatchPolicy::Exact) => self.exact.insert(topic.to_owned(), id),
                    (None, _) => self.patterns.insert((policy, topic.to_owned()), id),
                };
                (id, true)
            }
        };
        if let Some(sub) = self.subs.get_mut(&id) {
            sub.subscribers.insert(session);
        }
        self.by_session.entry(session).or_default().insert(id);
        Subscribed { id, created }
    }

    /// Remove `session` from subscription `id`.
    ///
    /// Returns `None` if the session is not subscribed under that id
    /// (`wamp.error.no_such_subscription`).
    pub fn unsubscribe(&mut self, session: Id, id: Id) -> Option<Unsubscribed> {
        let held = self.by_session.get_mut(&session)?;
        if !held.remove(&id) {
            return None;
        }
        if held.is_empty() {
            self.by_session.remove(&session);
        }
        Some(self.detach(session, id))
    }

    fn detach(&mut self, session: Id, id: Id) -> Unsubscribed {
        let Some(sub) = self.subs.get_mut(&id) else {
            return Unsubscribed { deleted: false };
        };
        sub.subscribers.remove(&session);
        if !sub.subscribers.is_empty() {
            return Unsubscribed { deleted: false };
        }
        if let Some(sub) = self.subs.remove(&id) {
            match (sub.group, sub.policy) {
                (Some(g), p) => self.shared.remove(&(g, p, sub.topic)),
                (None, MatchPolicy::Exact) => self.exact.remove(&sub.topic),
                (None, p) => self.patterns.remove(&(p, sub.topic)),
            };
        }
        Unsubscribed { deleted: true }
    }

    /// Drop every subscription of a session that left. Returns the ids it
    /// held and whether each was deleted.
    pub fn remove_session(&mut self, session: Id) -> Vec<(Id, Unsubscribed)> {
        let Some(held) = self.by_session.remove(&session) else {
            return Vec::new();
        };
        let mut ids: Vec<Id> = held.into_iter().collect();
        ids.sort_unstable();
        ids.into_iter()
            .map(|id| (id, self.detach(session, id)))
            .collect()
    }

    /// Every subscription matching a publication to `topic`.
    pub fn matching(&self, topic: &str) -> Vec<&Subscription> {
        let mut out = Vec::new();
        if let Some(sub) = self.exact.get(topic).and_then(|id| self.subs.get(id)) {
            out.push(sub);
        }
        for ((policy, pattern), id) in &self.patterns {
            if uri::matches(pattern, *policy, topic)
                && let Some(sub) = self.subs.get(id)
            {
                out.push(sub);
            }
        }
        for ((_, policy, pattern), id) in &self.shared {
            if uri::matches(pattern, *policy, topic)
                && let Some(sub) = self.subs.get(id)
            {
                out.push(sub);
            }
        }
        out
    }

    /// A subscription by id.
    pub fn get(&self, id: Id) -> Option<&Subscription> {
        self.subs.get(&id)
    }

    /// Number of live subscriptions.
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// True when there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_topic_shares_one_subscription() {
        let mut b = Broker::new();
        let a = b.subscribe(1, "com.t", MatchPolicy::Exact);
        let c = b.subscribe(2, "com.t", MatchPolicy::Exact);
        assert!(a.created && !c.created);
        assert_eq!(a.id, c.id);
        // Idempotent for the same session.
        assert_eq!(
            b.subscribe(1, "com.t", MatchPolicy::Exact),
            Subscribed {
                id: a.id,
                created: false
            }
        );
        let subs = b.matching("com.t");
        assert_eq!(subs.len(), 1);
        assert_eq!(
            subs[0].subscribers.iter().copied().collect::<Vec<_>>(),
            [1, 2]
        );
    }

    #[test]
    fn a_shared_subscription_is_its_groups_own() {
        let mut b = Broker::new();
        let plain = b.subscribe(1, "jobs.", MatchPolicy::Prefix).id;
        let g = b.subscribe_in(2, "jobs.", MatchPolicy::Prefix, Some("workers"));
        let g2 = b.subscribe_in(3, "jobs.", MatchPolicy::Prefix, Some("workers"));
        let other = b.subscribe_in(4, "jobs.", MatchPolicy::Prefix, Some("audit"));
        assert!(g.created && !g2.created && other.created);
        assert_eq!(g.id, g2.id);
        assert!(g.id != plain && other.id != plain && other.id != g.id);
        let found: Vec<(Id, Option<&str>)> = {
            let mut v: Vec<_> = b
                .matching("jobs.a")
                .iter()
                .map(|s| (s.id, s.group.as_deref()))
                .collect();
            v.sort_unstable();
            v
        };
        let mut want = vec![
            (plain, None),
            (g.id, Some("workers")),
            (other.id, Some("audit")),
        ];
        want.sort_unstable();
        assert_eq!(found, want);
        assert_eq!(b.lookup("jobs.", MatchPolicy::Prefix), Some(plain));
        // Gone with its last member, like any subscription.
        assert_eq!(
            b.unsubscribe(2, g.id),
            Some(Unsubscribed { deleted: false })
        );
        assert_eq!(
            b.remove_session(3),
            vec![(g.id, Unsubscribed { deleted: true })]
        );
        assert_eq!(b.matching("jobs.a").len(), 2);
        assert_eq!(
            b.subscribe_in(2, "jobs.", MatchPolicy::Prefix, Some("workers"))
                .id,
            g.id,
            "the same id again"
        );
    }

    #[test]
    fn unsubscribe_rules() {
        let mut b = Broker::new();
        let s = b.subscribe(1, "com.t", MatchPolicy::Exact).id;
        b.subscribe(2, "com.t", MatchPolicy::Exact);
        assert_eq!(b.unsubscribe(3, s), None, "not subscribed");
        assert_eq!(b.unsubscribe(1, s + 100), None, "unknown id");
        assert_eq!(b.unsubscribe(1, s), Some(Unsubscribed { deleted: false }));
        assert_eq!(b.unsubscribe(1, s), None, "twice");
        assert_eq!(b.unsubscribe(2, s), Some(Unsubscribed { deleted: true }));
        assert!(b.matching("com.t").is_empty());
        assert!(b.is_empty());
        // Ids come from what is subscribed, so every node of a cluster
        // agrees: a new subscription to the same topic gets the same id,
        // another topic or policy another one.
        assert_eq!(b.subscribe(1, "com.t", MatchPolicy::Exact).id, s);
        assert_ne!(b.subscribe(1, "com.t", MatchPolicy::Prefix).id, s);
        assert_ne!(b.subscribe(1, "com.u", MatchPolicy::Exact).id, s);
        assert_eq!(
            Broker::new().subscribe(9, "com.t", MatchPolicy::Exact).id,
            s
        );
    }

    #[test]
    fn stable_ids_are_wamp_ids_and_step_past_collisions() {
        let a = stable_id("subscription", MatchPolicy::Exact, "com.t", |_| false);
        assert!((1..=proto::MAX_ID).contains(&a));
        assert_ne!(
            a,
            stable_id("registration", MatchPolicy::Exact, "com.t", |_| false)
        );
        let b = stable_id("subscription", MatchPolicy::Exact, "com.t", |id| id == a);
        assert_eq!(b, a % proto::MAX_ID + 1);
    }

    #[test]
    fn leaving_session_is_removed_everywhere() {
        let mut b = Broker::new();
        let x = b.subscribe(1, "a", MatchPolicy::Exact).id;
        let y = b.subscribe(1, "b", MatchPolicy::Exact).id;
        b.subscribe(2, "b", MatchPolicy::Exact);
        let mut removed = b.remove_session(1);
        removed.sort_by_key(|(id, _)| *id);
        let mut expected = vec![
            (x, Unsubscribed { deleted: true }),
            (y, Unsubscribed { deleted: false }),
        ];
        expected.sort_by_key(|(id, _)| *id);
        assert_eq!(removed, expected);
        assert!(b.matching("a").is_empty());
        assert_eq!(b.matching("b")[0].subscribers.len(), 1);
        assert!(b.remove_session(1).is_empty());
    }

    #[test]
    fn retention_and_history() {
        let mut b = Broker::new();
        b.add_history("com.h", MatchPolicy::Exact, 2);
        assert!(b.wants_history("com.h") && !b.wants_history("com.x"));
        for i in 1..=3 {
            b.record(&HistoryEvent {
                timestamp: String::new(),
                publication: i,
                topic: "com.h".into(),
                payload: Payload::default(),
                audience: Audience::default(),
            });
        }
        let sub = b.subscribe(1, "com.h", MatchPolicy::Exact).id;
        let pubs: Vec<Id> = b
            .history(sub, 10)
            .unwrap()
            .iter()
            .map(|e| e.publication)
            .collect();
        assert_eq!(
            pubs,
            [2, 3],
            "bounded by the configured limit, oldest first"
        );
        assert_eq!(b.history(sub, 1).unwrap()[0].publication, 3);
        let other = b.subscribe(1, "com.x", MatchPolicy::Exact).id;
        assert!(b.history(other, 10).is_none());

        let r = |p| Retained {
            publication: p,
            details: Dict::new(),
            payload: Payload::args(vec![proto::Value::from(p)]),
            publisher: 9,
            audience: Audience::default(),
        };
        // An empty retained publication clears what its topic kept.
        assert!(b.retain("com.r.gone", r(7)));
        let empty = Retained {
            payload: Payload {
                passthru: Some(Vec::new()),
                ..Payload::default()
            },
            ..r(8)
        };
        assert!(b.retain("com.r.gone", empty));
        let gone = b.subscribe(3, "com.r.gone", MatchPolicy::Exact).id;
        assert!(b.retained_for(gone).is_empty(), "cleared");
        assert!(b.retain("com.r.a", r(1)));
        assert!(b.retain("com.r.a", r(2)));
        assert!(b.retain("com.r.b", r(3)));
        let exact = b.subscribe(2, "com.r.a", MatchPolicy::Exact).id;
        assert_eq!(b.retained_for(exact).len(), 1);
        assert_eq!(
            b.retained_for(exact)[0].1.publication,
            2,
            "the last one wins"
        );
        let prefix = b.subscribe(2, "com.r.", MatchPolicy::Prefix).id;
        let topics: Vec<&str> = b.retained_for(prefix).iter().map(|(t, _)| *t).collect();
        assert_eq!(topics, ["com.r.a", "com.r.b"]);
    }

    #[test]
    fn patterns_match_alongside_exact() {
        let mut b = Broker::new();
        b.subscribe(1, "com.t.x", MatchPolicy::Exact);
        b.subscribe(2, "com.t", MatchPolicy::Prefix);
        b.subscribe(3, "com..x", MatchPolicy::Wildcard);
        b.subscribe(4, "org", MatchPolicy::Prefix);
        let mut got: Vec<Id> = b
            .matching("com.t.x")
            .iter()
            .flat_map(|s| s.subscribers.iter().copied())
            .collect();
        got.sort_unstable();
        assert_eq!(got, [1, 2, 3]);
    }
}

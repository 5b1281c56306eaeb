//! The realm core driven directly: inputs in, effects out, with fake time
//! (timers fire when the test says so) and a seeded random generator. No
//! sockets, no tasks.

use std::time::{Duration, SystemTime};

use proto::errors::uri as wamp_uri;
use proto::message::{
    Call, Cancel, Publish, Register, Subscribe, Unregister, WampError, Yield, code,
};
use proto::{Dict, Id, Message, Payload, Serializer, Value, dict};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::*;
use crate::authz::dynamic::{AUTHORIZER_TIMEOUT_MS, MAX_PARKED};
use trellis_config::router::RealmConfig;

/// Everything allowed for `user`; `dyn` decides through `com.authorize`.
const ROLES: &str = r#"{"name": "realm1", "roles": [
    {"name": "user", "permissions": [
        {"uri": "", "match": "prefix",
         "allow": {"call": true, "register": true, "publish": true, "subscribe": true}}
    ]},
    {"name": "guest", "permissions": [
        {"uri": "com.open.", "match": "prefix", "allow": {"subscribe": true}}
    ]},
    {"name": "dyn", "authorizer": "com.authorize"}
]}"#;

struct Harness {
    core: Core,
    now: SystemTime,
}

/// The messages among `fx` sent to `to`.
fn to(fx: &[Effect], to: Id) -> Vec<Message> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Send { to: t, msg } if *t == to => Some(msg.msg.clone()),
            _ => None,
        })
        .collect()
}

fn error_uri(m: &Message) -> &str {
    match m {
        Message::Error(e) => &e.error,
        other => panic!("expected ERROR, got {other:?}"),
    }
}

fn invocation_of(fx: &[Effect], callee: Id) -> proto::message::Invocation {
    match to(fx, callee).as_slice() {
        [Message::Invocation(i)] => i.clone(),
        other => panic!("expected one INVOCATION for {callee}, got {other:?}"),
    }
}

fn started_timer(fx: &[Effect]) -> (Timer, Duration) {
    fx.iter()
        .find_map(|e| match e {
            Effect::StartTimer { timer, after_ms } => {
                Some((*timer, Duration::from_millis(*after_ms)))
            }
            _ => None,
        })
        .expect("a timer was started")
}

impl Harness {
    fn new() -> Harness {
        Harness::seeded(1)
    }

    fn seeded(seed: u64) -> Harness {
        let cfg: RealmConfig = serde_json::from_str(ROLES).unwrap();
        Harness {
            core: Core::new(
                &cfg,
                Some(Duration::from_secs(60)),
                SmallRng::seed_from_u64(seed),
            ),
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        }
    }

    fn join_with(&mut self, id: Id, role: &str, features: ClientFeatures) {
        let info = SessionInfo {
            authid: format!("id{id}").into(),
            authrole: role.into(),
            authmethod: "anonymous".into(),
            authprovider: "static".into(),
            serializer: Serializer::Json,
            features,
            transport: TransportInfo::new("rawsocket", "wamp.2.json", "test".into()),
            authextra: Dict::new(),
            max_calls: 4,
        };
        assert!(self.core.join(id, info));
        self.input(Input::Joined { session: id });
    }

    fn join(&mut self, id: Id, role: &str) {
        self.join_with(id, role, ClientFeatures::default());
    }

    /// A callee that announces call canceling and progressive invocations.
    fn join_able(&mut self, id: Id) {
        self.join_with(
            id,
            "user",
            ClientFeatures {
                callee_call_canceling: true,
                callee_progressive_call_invocations: true,
                ..ClientFeatures::default()
            },
        );
    }

    fn input(&mut self, input: Input) -> Vec<Effect> {
        self.now += Duration::from_millis(1);
        self.core.handle(input, self.now);
        self.core.effects().collect()
    }

    fn msg(&mut self, session: Id, msg: Message) -> Vec<Effect> {
        self.input(Input::Message {
            session,
            msg: Box::new(msg),
        })
    }

    fn register(&mut self, session: Id, request: Id, procedure: &str, options: Dict) -> Id {
        let fx = self.msg(
            session,
            Message::Register(Register {
                request,
                options,
                procedure: procedure.into(),
            }),
        );
        match to(&fx, session).as_slice() {
            [Message::Registered(r)] => r.registration,
            other => panic!("REGISTER {procedure} failed: {other:?}"),
        }
    }

    fn call(&mut self, session: Id, request: Id, procedure: &str, options: Dict) -> Vec<Effect> {
        self.msg(
            session,
            Message::Call(Call {
                request,
                options,
                procedure: procedure.into(),
                payload: Payload::args(vec![Value::from(request)]),
            }),
        )
    }

    fn cancel(&mut self, session: Id, request: Id, mode: &str) -> Vec<Effect> {
        self.msg(
            session,
            Message::Cancel(Cancel {
                request,
                options: dict! { "mode" => mode },
            }),
        )
    }

    fn yield_(&mut self, callee: Id, invocation: Id, options: Dict) -> Vec<Effect> {
        self.msg(
            callee,
            Message::Yield(Yield {
                request: invocation,
                options,
                payload: Payload::args(vec![Value::from("done")]),
            }),
        )
    }

    fn invocation_error(&mut self, callee: Id, invocation: Id, error: &str) -> Vec<Effect> {
        self.msg(
            callee,
            Message::Error(WampError {
                request_type: code::INVOCATION,
                request: invocation,
                details: Dict::new(),
                error: error.into(),
                payload: Payload::default(),
            }),
        )
    }

    fn subscribe(&mut self, session: Id, topic: &str, options: Dict) -> Id {
        let fx = self.msg(
            session,
            Message::Subscribe(Subscribe {
                request: 1,
                options,
                topic: topic.into(),
            }),
        );
        match to(&fx, session).first() {
            Some(Message::Subscribed(s)) => s.subscription,
            other => panic!("SUBSCRIBE {topic} failed: {other:?}"),
        }
    }

    fn publish(&mut self, session: Id, topic: &str, options: Dict) -> Vec<Effect> {
        self.msg(
            session,
            Message::Publish(Publish {
                request: 9,
                options,
                topic: topic.into(),
                payload: Payload::args(vec![Value::from(1u64)]),
            }),
        )
    }
}

// ----- cancel -----

/// A caller (1), a callee (2) that listens for INTERRUPT, a call in flight.
fn call_in_flight(listens: bool) -> (Harness, Id) {
    let mut h = Harness::new();
    h.join(1, "user");
    if listens {
        h.join_able(2);
    } else {
        h.join(2, "user");
    }
    h.register(2, 1, "com.slow", Dict::new());
    let fx = h.call(1, 7, "com.slow", Dict::new());
    let inv = invocation_of(&fx, 2).request;
    (h, inv)
}

#[test]
fn cancel_kill_interrupts_and_waits_for_the_callee() {
    let (mut h, inv) = call_in_flight(true);
    let fx = h.cancel(1, 7, "kill");
    assert!(to(&fx, 1).is_empty(), "the caller waits for the callee");
    match to(&fx, 2).as_slice() {
        [Message::Interrupt(i)] => {
            assert_eq!(i.request, inv);
            assert_eq!(i.options.get("mode"), Some(&Value::from("kill")));
        }
        other => panic!("expected INTERRUPT, got {other:?}"),
    }
    assert!(
        h.cancel(1, 7, "kill").is_empty(),
        "a second CANCEL is ignored"
    );
    // autobahn answers an interrupted invocation with its own error URI:
    // the caller learns the call was canceled.
    let fx = h.invocation_error(2, inv, "wamp.error.runtime_error");
    assert_eq!(error_uri(&to(&fx, 1)[0]), wamp_uri::CANCELED);
    assert!(
        h.yield_(2, inv, Dict::new()).is_empty(),
        "late YIELD dropped"
    );
}

#[test]
fn cancel_killnowait_answers_at_once_and_interrupts() {
    let (mut h, inv) = call_in_flight(true);
    let fx = h.cancel(1, 7, "killnowait");
    assert_eq!(error_uri(&to(&fx, 1)[0]), wamp_uri::CANCELED);
    match to(&fx, 2).as_slice() {
        [Message::Interrupt(i)] => {
            assert_eq!(i.options.get("mode"), Some(&Value::from("killnowait")))
        }
        other => panic!("expected INTERRUPT, got {other:?}"),
    }
    assert!(
        h.yield_(2, inv, Dict::new()).is_empty(),
        "late YIELD dropped"
    );
}

#[test]
fn cancel_skip_answers_at_once_and_leaves_the_callee_alone() {
    let (mut h, inv) = call_in_flight(true);
    let fx = h.cancel(1, 7, "skip");
    assert_eq!(error_uri(&to(&fx, 1)[0]), wamp_uri::CANCELED);
    assert!(to(&fx, 2).is_empty(), "skip sends no INTERRUPT");
    assert!(h.yield_(2, inv, Dict::new()).is_empty());
}

#[test]
fn a_callee_without_call_canceling_gets_skip_semantics() {
    for mode in ["kill", "killnowait", "skip"] {
        let (mut h, _) = call_in_flight(false);
        let fx = h.cancel(1, 7, mode);
        assert_eq!(error_uri(&to(&fx, 1)[0]), wamp_uri::CANCELED, "{mode}");
        assert!(to(&fx, 2).is_empty(), "{mode}: no INTERRUPT");
    }
}

#[test]
fn cancel_with_a_bad_mode_or_after_the_result() {
    let (mut h, inv) = call_in_flight(true);
    let fx = h.cancel(1, 7, "later");
    let m = &to(&fx, 1)[0];
    assert_eq!(error_uri(m), wamp_uri::INVALID_ARGUMENT);
    h.yield_(2, inv, Dict::new());
    assert!(h.cancel(1, 7, "kill").is_empty(), "nothing left to cancel");
}

// ----- timeouts -----

#[test]
fn a_call_timeout_fires_on_fake_time() {
    let (mut h, _) = {
        let mut h = Harness::new();
        h.join(1, "user");
        h.join_able(2);
        h.register(2, 1, "com.slow", Dict::new());
        (h, ())
    };
    let fx = h.call(1, 7, "com.slow", dict! { "timeout" => 250u64 });
    let (timer, after) = started_timer(&fx);
    assert_eq!(after, Duration::from_millis(250));
    let inv = invocation_of(&fx, 2);
    assert_eq!(inv.details.get("timeout"), Some(&Value::from(250u64)));
    let fx = h.input(Input::Timer(timer));
    assert_eq!(error_uri(&to(&fx, 1)[0]), wamp_uri::TIMEOUT);
    assert!(
        matches!(to(&fx, 2).as_slice(), [Message::Interrupt(_)]),
        "the callee is told to stop"
    );
    assert!(h.input(Input::Timer(timer)).is_empty(), "fires once");
}

#[test]
fn an_answered_call_cancels_its_timer() {
    let mut h = Harness::new();
    h.join(1, "user");
    h.join(2, "user");
    h.register(2, 1, "com.quick", Dict::new());
    let fx = h.call(1, 7, "com.quick", dict! { "timeout" => 1000u64 });
    let (timer, _) = started_timer(&fx);
    let inv = invocation_of(&fx, 2).request;
    let fx = h.yield_(2, inv, Dict::new());
    assert!(matches!(to(&fx, 1).as_slice(), [Message::Result(_)]));
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::CancelTimer { timer: t } if *t == timer))
    );
    // A timer that fired before the cancel reached it finds nothing.
    assert!(h.input(Input::Timer(timer)).is_empty());
}

#[test]
fn calls_without_timeout_start_no_timer() {
    let (mut h, inv) = call_in_flight(false);
    let fx = h.yield_(2, inv, Dict::new());
    assert!(
        !fx.iter()
            .any(|e| matches!(e, Effect::StartTimer { .. } | Effect::CancelTimer { .. }))
    );
}

// ----- progressive -----

#[test]
fn progressive_results_keep_the_call_open() {
    let (mut h, inv) = call_in_flight(false);
    for _ in 0..3 {
        let fx = h.yield_(2, inv, dict! { "progress" => true });
        match to(&fx, 1).as_slice() {
            [Message::Result(r)] => {
                assert_eq!(r.request, 7);
                assert_eq!(r.details.get("progress"), Some(&Value::Bool(true)));
            }
            other => panic!("expected a progressive RESULT, got {other:?}"),
        }
    }
    let fx = h.yield_(2, inv, Dict::new());
    match to(&fx, 1).as_slice() {
        [Message::Result(r)] => assert!(!r.details.contains_key("progress")),
        other => panic!("expected the final RESULT, got {other:?}"),
    }
    assert!(h.yield_(2, inv, Dict::new()).is_empty(), "the call is over");
}

#[test]
fn progressive_invocations_reach_the_same_invocation() {
    let mut h = Harness::new();
    h.join(1, "user");
    h.join_able(2);
    h.register(2, 1, "com.upload", Dict::new());
    let fx = h.call(1, 7, "com.upload", dict! { "progress" => true });
    let first = invocation_of(&fx, 2);
    assert_eq!(first.details.get("progress"), Some(&Value::Bool(true)));
    let fx = h.call(1, 7, "com.upload", dict! { "progress" => true });
    let second = invocation_of(&fx, 2);
    assert_eq!(second.request, first.request);
    assert_eq!(second.details.get("progress"), Some(&Value::Bool(true)));
    let fx = h.call(1, 7, "com.upload", Dict::new());
    let last = invocation_of(&fx, 2);
    assert_eq!(last.request, first.request);
    assert!(!last.details.contains_key("progress"));
    // The caller has stopped sending: one more CALL with the id is a
    // protocol violation.
    let fx = h.call(1, 7, "com.upload", Dict::new());
    assert!(fx.iter().any(|e| matches!(e, Effect::Kill { session: 1, close } if close.reason == wamp_uri::PROTOCOL_VIOLATION)));
    assert!(fx.iter().any(|e| matches!(e, Effect::Left { session: 1 })));
}

#[test]
fn progressive_invocations_need_a_callee_that_takes_them() {
    let (mut h, _) = call_in_flight(false);
    let fx = h.call(1, 8, "com.slow", dict! { "progress" => true });
    assert_eq!(error_uri(&to(&fx, 1)[0]), wamp_uri::FEATURE_NOT_SUPPORTED);
}

#[test]
fn calls_in_flight_are_limited_per_session() {
    let mut h = Harness::new();
    h.join(1, "user");
    h.join(2, "user");
    h.register(2, 1, "com.slow", Dict::new());
    for r in 1..=4 {
        invocation_of(&h.call(1, r, "com.slow", Dict::new()), 2);
    }
    let fx = h.call(1, 5, "com.slow", Dict::new());
    assert_eq!(error_uri(&to(&fx, 1)[0]), TOO_MANY_CALLS);
}

// ----- shared registrations and matching -----

fn callees_of(h: &mut Harness, n: usize) -> Vec<Id> {
    (0..n as u64)
        .map(|r| {
            let fx = h.call(1, 100 + r, "com.shared", Dict::new());
            let callee = fx
                .iter()
                .find_map(|e| match e {
                    Effect::Send { to, msg } if matches!(msg.msg, Message::Invocation(_)) => {
                        Some(*to)
                    }
                    _ => None,
                })
                .expect("an INVOCATION");
            let inv = invocation_of(&fx, callee).request;
            h.yield_(callee, inv, Dict::new());
            callee
        })
        .collect()
}

fn shared(policy: &str, seed: u64) -> Harness {
    let mut h = Harness::seeded(seed);
    h.join(1, "user");
    for callee in [2, 3, 4] {
        h.join(callee, "user");
        h.register(callee, 1, "com.shared", dict! { "invoke" => policy });
    }
    h
}

#[test]
fn shared_registration_policies() {
    assert_eq!(
        callees_of(&mut shared("roundrobin", 1), 6),
        [2, 3, 4, 2, 3, 4]
    );
    assert_eq!(callees_of(&mut shared("first", 1), 3), [2, 2, 2]);
    assert_eq!(callees_of(&mut shared("last", 1), 3), [4, 4, 4]);
    let a = callees_of(&mut shared("random", 42), 20);
    assert_eq!(
        a,
        callees_of(&mut shared("random", 42), 20),
        "same seed, same picks"
    );
    assert!(a.iter().all(|c| [2, 3, 4].contains(c)));
    assert!(a.iter().any(|c| *c != a[0]), "random spreads: {a:?}");
}

#[test]
fn single_and_mismatched_policies_are_refused() {
    let mut h = Harness::new();
    h.join(2, "user");
    h.join(3, "user");
    h.register(2, 1, "com.one", Dict::new());
    let fx = h.msg(
        3,
        Message::Register(Register {
            request: 2,
            options: Dict::new(),
            procedure: "com.one".into(),
        }),
    );
    assert_eq!(
        error_uri(&to(&fx, 3)[0]),
        wamp_uri::PROCEDURE_ALREADY_EXISTS
    );
    h.register(2, 3, "com.two", dict! { "invoke" => "roundrobin" });
    let fx = h.msg(
        3,
        Message::Register(Register {
            request: 4,
            options: dict! { "invoke" => "first" },
            procedure: "com.two".into(),
        }),
    );
    let m = &to(&fx, 3)[0];
    assert_eq!(error_uri(m), wamp_uri::PROCEDURE_ALREADY_EXISTS);
    if let Message::Error(e) = m {
        assert!(
            e.payload.args[0]
                .as_str()
                .unwrap()
                .contains("\"roundrobin\", not \"first\"")
        );
    }
}

#[test]
fn the_most_specific_registration_gets_the_call() {
    let mut h = Harness::new();
    h.join(1, "user");
    for (callee, uri, policy) in [
        (2, "com..pop", "wildcard"),
        (3, "com.", "prefix"),
        (4, "com.balloon.", "prefix"),
        (5, "com.balloon.pop", "exact"),
    ] {
        h.join(callee, "user");
        h.register(callee, 1, uri, dict! { "match" => policy });
    }
    let mut order = Vec::new();
    for (request, gone) in [(1, 5), (2, 4), (3, 3), (4, 2)] {
        let fx = h.call(1, request, "com.balloon.pop", Dict::new());
        let callee = fx
            .iter()
            .find_map(|e| match e {
                Effect::Send { to, msg } if matches!(msg.msg, Message::Invocation(_)) => Some(*to),
                _ => None,
            })
            .unwrap();
        let inv = invocation_of(&fx, callee);
        // A pattern registration's callee learns the procedure called.
        assert_eq!(
            inv.details.contains_key("procedure"),
            callee != 5,
            "{callee}"
        );
        order.push(callee);
        h.input(Input::Leave { session: gone });
    }
    assert_eq!(
        order,
        [5, 4, 3, 2],
        "exact, longest prefix, prefix, wildcard"
    );
    let fx = h.call(1, 9, "com.balloon.pop", Dict::new());
    assert_eq!(error_uri(&to(&fx, 1)[0]), wamp_uri::NO_SUCH_PROCEDURE);
}

#[test]
fn a_leaving_callee_fails_its_calls_and_frees_the_procedure() {
    let (mut h, _) = call_in_flight(false);
    let fx = h.input(Input::Leave { session: 2 });
    assert_eq!(error_uri(&to(&fx, 1)[0]), wamp_uri::CANCELED);
    assert!(fx.iter().any(|e| matches!(e, Effect::Left { session: 2 })));
    h.join(3, "user");
    h.register(3, 1, "com.slow", Dict::new());
}

// ----- pub/sub -----

#[test]
fn audience_lists_choose_the_receivers() {
    let mut h = Harness::new();
    for s in 1..=4 {
        h.join(s, "user");
        h.subscribe(s, "com.news", Dict::new());
    }
    let receivers = |fx: &[Effect]| -> Vec<Id> {
        let mut r: Vec<Id> = (1..=4).filter(|s| !to(fx, *s).is_empty()).collect();
        r.sort_unstable();
        r
    };
    let fx = h.publish(1, "com.news", Dict::new());
    assert_eq!(receivers(&fx), [2, 3, 4], "exclude_me by default");
    let fx = h.publish(1, "com.news", dict! { "exclude_me" => false });
    assert_eq!(receivers(&fx), [1, 2, 3, 4]);
    let fx = h.publish(
        1,
        "com.news",
        dict! { "eligible" => vec![Value::from(2u64), Value::from(3u64)] },
    );
    assert_eq!(receivers(&fx), [2, 3]);
    let fx = h.publish(
        1,
        "com.news",
        dict! { "exclude_authid" => vec![Value::from("id3")] },
    );
    assert_eq!(receivers(&fx), [2, 4]);
    let fx = h.publish(
        1,
        "com.news",
        dict! { "eligible_authrole" => vec![Value::from("admin")] },
    );
    assert!(receivers(&fx).is_empty());
    // One EVENT shared by all receivers of a subscription.
    let fx = h.publish(1, "com.news", Dict::new());
    let shared: Vec<_> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Send { msg, .. } => Some(std::sync::Arc::as_ptr(msg)),
            _ => None,
        })
        .collect();
    assert_eq!(shared.len(), 3);
    assert!(shared.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn a_bad_option_is_answered_only_when_acknowledged() {
    let mut h = Harness::new();
    h.join(1, "user");
    assert!(
        h.publish(1, "com.x", dict! { "retain" => "yes" })
            .is_empty()
    );
    let fx = h.publish(
        1,
        "com.x",
        dict! { "retain" => "yes", "acknowledge" => true },
    );
    assert_eq!(error_uri(&to(&fx, 1)[0]), wamp_uri::INVALID_ARGUMENT);
}

#[test]
fn retained_events_keep_their_audience() {
    let mut h = Harness::new();
    h.join(1, "user");
    h.publish(
        1,
        "com.state",
        dict! { "retain" => true, "eligible_authid" => vec![Value::from("id2")] },
    );
    for (s, gets) in [(2, true), (3, false)] {
        h.join(s, "user");
        let fx = h.msg(
            s,
            Message::Subscribe(Subscribe {
                request: 1,
                options: dict! { "get_retained" => true },
                topic: "com.state".into(),
            }),
        );
        let events = to(&fx, s)
            .iter()
            .filter(|m| matches!(m, Message::Event(_)))
            .count();
        assert_eq!(events, usize::from(gets), "session {s}");
    }
}

#[test]
fn a_shared_subscription_delivers_each_event_to_one_member() {
    let mut h = Harness::new();
    for s in 1..=4 {
        h.join(s, "user");
    }
    let plain = h.subscribe(2, "com.jobs", Dict::new());
    let shared = h.subscribe(3, "com.jobs", dict! { "_share" => "g" });
    assert_eq!(
        h.subscribe(4, "com.jobs", dict! { "_share" => "g" }),
        shared
    );
    assert_ne!(plain, shared);
    let mut got = [0usize; 5];
    for _ in 0..64 {
        let fx = h.publish(1, "com.jobs", Dict::new());
        for s in 2..=4 {
            got[s as usize] += to(&fx, s)
                .iter()
                .filter(|m| matches!(m, Message::Event(_)))
                .count();
        }
    }
    assert_eq!(got[2], 64, "the unshared subscriber gets every event");
    assert_eq!(got[3] + got[4], 64, "each event goes to one group member");
    assert!(got[3] > 0 && got[4] > 0, "both members get some: {got:?}");
    let fx = h.msg(
        2,
        Message::Subscribe(Subscribe {
            request: 2,
            options: dict! { "_share" => 1u64 },
            topic: "com.jobs".into(),
        }),
    );
    assert_eq!(error_uri(&to(&fx, 2)[0]), wamp_uri::INVALID_ARGUMENT);
}

#[test]
fn a_pattern_subscription_never_gets_a_forbidden_topic() {
    let mut h = Harness::new();
    h.join(1, "user");
    h.join(2, "guest");
    h.subscribe(2, "com.open.", dict! { "match" => "prefix" });
    let fx = h.publish(1, "com.open.news", Dict::new());
    match to(&fx, 2).as_slice() {
        [Message::Event(e)] => {
            assert_eq!(e.details.get("topic"), Some(&Value::from("com.open.news")))
        }
        other => panic!("expected an EVENT with its topic, got {other:?}"),
    }
    // The guest may not subscribe to a pattern wider than its rule.
    let fx = h.msg(
        2,
        Message::Subscribe(Subscribe {
            request: 2,
            options: dict! { "match" => "prefix" },
            topic: "com.".into(),
        }),
    );
    assert_eq!(error_uri(&to(&fx, 2)[0]), wamp_uri::NOT_AUTHORIZED);
}

#[test]
fn testaments_are_published_when_the_session_goes() {
    let mut h = Harness::new();
    h.join(1, "user");
    h.join(2, "user");
    h.subscribe(2, "com.gone", Dict::new());
    let fx = h.msg(
        1,
        Message::Call(Call {
            request: 1,
            options: Dict::new(),
            procedure: "wamp.session.add_testament".into(),
            payload: Payload::args(vec![
                Value::from("com.gone"),
                Value::List(vec![Value::from("bye")]),
                Value::Dict(Dict::new()),
            ]),
        }),
    );
    assert!(matches!(to(&fx, 1).as_slice(), [Message::Result(_)]));
    let fx = h.input(Input::Leave { session: 1 });
    match to(&fx, 2).as_slice() {
        [Message::Event(e)] => assert_eq!(e.payload.args, vec![Value::from("bye")]),
        other => panic!("expected the testament, got {other:?}"),
    }
    assert!(
        h.input(Input::Leave { session: 1 }).is_empty(),
        "a session leaves once"
    );
}

#[test]
fn history_is_stamped_with_the_time_given() {
    let cfg: RealmConfig = serde_json::from_str(
        r#"{"name": "realm1", "roles": [{"name": "user", "permissions": [
            {"uri": "", "match": "prefix", "allow": {"call": true, "publish": true, "subscribe": true}}]}],
            "store": {"type": "memory", "event-history": [{"uri": "com.log", "limit": 5}]}}"#,
    )
    .unwrap();
    let mut h = Harness::new();
    h.core = Core::new(&cfg, None, SmallRng::seed_from_u64(1));
    h.now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
    h.join(1, "user");
    let sub = h.subscribe(1, "com.log", Dict::new());
    h.publish(1, "com.log", Dict::new());
    let fx = h.msg(
        1,
        Message::Call(Call {
            request: 3,
            options: Dict::new(),
            procedure: "wamp.subscription.get_events".into(),
            payload: Payload::args(vec![Value::from(sub)]),
        }),
    );
    match to(&fx, 1).as_slice() {
        [Message::Result(r)] => {
            let Some(Value::List(events)) = r.payload.args.first() else {
                panic!("{r:?}")
            };
            let Some(Value::Dict(e)) = events.first() else {
                panic!("{events:?}")
            };
            assert!(
                e.get("timestamp")
                    .and_then(Value::as_str)
                    .unwrap()
                    .starts_with("2023-11-14T22:13:20.0"),
                "{e:?}"
            );
        }
        other => panic!("{other:?}"),
    }
}

// ----- dynamic authorizers -----

/// `user` session 9 serves `com.authorize`; `dyn` session 1 acts.
fn with_authorizer() -> Harness {
    let mut h = Harness::new();
    h.join(9, "user");
    h.register(9, 1, "com.authorize", Dict::new());
    h.join(1, "dyn");
    h.join(2, "user");
    h.register(2, 1, "com.work", Dict::new());
    h
}

/// The authorizer's INVOCATION among `fx`: (invocation id, uri, action).
fn question(fx: &[Effect]) -> (Id, String, String) {
    let inv = invocation_of(fx, 9);
    let uri = inv.payload.args[1].as_str().unwrap().to_owned();
    let action = inv.payload.args[2].as_str().unwrap().to_owned();
    (inv.request, uri, action)
}

fn answer(h: &mut Harness, inv: Id, value: Value) -> Vec<Effect> {
    h.msg(
        9,
        Message::Yield(Yield {
            request: inv,
            options: Dict::new(),
            payload: Payload::args(vec![value]),
        }),
    )
}

#[test]
fn messages_wait_in_order_for_the_authorizer() {
    let mut h = with_authorizer();
    let fx = h.call(1, 1, "com.work", Dict::new());
    let (q, uri, action) = question(&fx);
    assert_eq!((uri.as_str(), action.as_str()), ("com.work", "call"));
    assert!(to(&fx, 2).is_empty(), "nothing reaches the callee yet");
    // A second call waits behind the first, without a second question.
    let fx = h.call(1, 2, "com.work", Dict::new());
    assert!(fx.is_empty(), "parked: {fx:?}");
    // `true` is used once: the parked call asks again.
    let fx = answer(&mut h, q, Value::Bool(true));
    assert_eq!(invocation_of(&fx, 2).payload.args, vec![Value::from(1u64)]);
    let (q2, ..) = question(&fx);
    let fx = answer(
        &mut h,
        q2,
        Value::Dict(dict! { "allow" => true, "cache" => true }),
    );
    assert_eq!(invocation_of(&fx, 2).payload.args, vec![Value::from(2u64)]);
    // Cached: the next call goes straight through.
    let fx = h.call(1, 3, "com.work", Dict::new());
    assert_eq!(invocation_of(&fx, 2).payload.args, vec![Value::from(3u64)]);
    assert!(to(&fx, 9).is_empty());
    // Two questions answered: after 2 ms and 1 ms of fake time.
    let d = h.core.stats().authorizer_duration;
    assert_eq!(d.count(), 2);
    assert_eq!((d.buckets[1], d.buckets[2]), (1, 1), "{d:?}");
    assert!((d.sum - 0.003).abs() < 1e-9, "{d:?}");
}

#[test]
fn an_authorizer_denial_timeout_or_bad_answer_is_an_error() {
    let mut h = with_authorizer();
    let fx = h.call(1, 1, "com.work", Dict::new());
    let (q, ..) = question(&fx);
    let fx = answer(&mut h, q, Value::Bool(false));
    assert_eq!(error_uri(&to(&fx, 1)[0]), wamp_uri::NOT_AUTHORIZED);

    let fx = h.call(1, 2, "com.work", Dict::new());
    let (q, ..) = question(&fx);
    let fx = answer(&mut h, q, Value::from("yes"));
    let m = &to(&fx, 1)[0];
    assert_eq!(error_uri(m), wamp_uri::AUTHORIZATION_FAILED);

    let fx = h.call(1, 3, "com.work", Dict::new());
    let (timer, after) = started_timer(&fx);
    assert_eq!(after, Duration::from_millis(AUTHORIZER_TIMEOUT_MS));
    let fx = h.input(Input::Timer(timer));
    let m = &to(&fx, 1)[0];
    assert_eq!(error_uri(m), wamp_uri::AUTHORIZATION_FAILED);
    if let Message::Error(e) = m {
        assert!(
            e.payload.args[0]
                .as_str()
                .unwrap()
                .contains("did not answer within")
        );
    }
}

/// crossbar-examples' authorizer is `authorize(self, session, uri,
/// action)`: the TypeError its Python raises at the fourth argument makes
/// the realm ask again with three, and the answer counts.
#[test]
fn a_legacy_three_argument_authorizer_is_asked_again_without_options() {
    let mut h = with_authorizer();
    let fx = h.call(1, 1, "com.work", Dict::new());
    let inv = invocation_of(&fx, 9);
    assert_eq!(inv.payload.args.len(), 4, "details, uri, action, options");
    let fx = h.msg(
        9,
        Message::Error(WampError {
            request_type: code::INVOCATION,
            request: inv.request,
            details: Dict::new(),
            error: "wamp.error.runtime_error".into(),
            payload: Payload::args(vec![Value::from(
                "Authorizer.authorize() takes 4 positional arguments but 5 were given",
            )]),
        }),
    );
    assert!(to(&fx, 1).is_empty(), "no error for the caller yet: {fx:?}");
    let again = invocation_of(&fx, 9);
    assert_eq!(again.payload.args.len(), 3, "details, uri, action");
    assert_eq!(again.payload.args[1], Value::from("com.work"));
    let fx = answer(&mut h, again.request, Value::Bool(true));
    assert_eq!(invocation_of(&fx, 2).payload.args, vec![Value::from(1u64)]);

    // The legacy call failing as well is an error, not a loop.
    let fx = h.call(1, 2, "com.work", Dict::new());
    let inv = invocation_of(&fx, 9);
    let type_error = |request| {
        Message::Error(WampError {
            request_type: code::INVOCATION,
            request,
            details: Dict::new(),
            error: "wamp.error.runtime_error".into(),
            payload: Payload::args(vec![Value::from(
                "authorize() takes 3 positional arguments but 4 were given",
            )]),
        })
    };
    let fx = h.msg(9, type_error(inv.request));
    let again = invocation_of(&fx, 9);
    let fx = h.msg(9, type_error(again.request));
    assert_eq!(error_uri(&to(&fx, 1)[0]), wamp_uri::AUTHORIZATION_FAILED);
}

#[test]
fn too_many_parked_messages_close_the_session() {
    let mut h = with_authorizer();
    // The call asking is the first of the parked messages.
    h.call(1, 1, "com.work", Dict::new());
    for r in 1..MAX_PARKED as u64 {
        assert!(h.publish(1, "com.t", Dict::new()).is_empty(), "{r}");
    }
    let fx = h.publish(1, "com.t", Dict::new());
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Kill { session: 1, .. }))
    );
    assert!(fx.iter().any(|e| matches!(e, Effect::Left { session: 1 })));
    // The authorizer's late answer finds nobody and changes nothing.
    let _ = h.input(Input::Leave { session: 1 });
}

#[test]
fn a_reconfigure_forgets_cached_answers() {
    let mut h = with_authorizer();
    let fx = h.call(1, 1, "com.work", Dict::new());
    let (q, ..) = question(&fx);
    answer(
        &mut h,
        q,
        Value::Dict(dict! { "allow" => true, "cache" => true }),
    );
    let cfg: RealmConfig = serde_json::from_str(ROLES).unwrap();
    let fx = h.input(Input::Reconfigure { cfg: Box::new(cfg) });
    assert!(fx.iter().any(|e| matches!(e, Effect::Authz(_))));
    let fx = h.call(1, 2, "com.work", Dict::new());
    question(&fx);
}

// ----- sessions -----

#[test]
fn a_slow_peer_is_killed_once_and_leaves() {
    let mut h = Harness::new();
    h.join(1, "user");
    h.join(2, "user");
    h.register(1, 1, "com.x", Dict::new());
    let fx = h.input(Input::SlowPeer {
        session: 1,
        queue: 64,
    });
    assert!(fx.iter().any(|e| matches!(e, Effect::Kill { session: 1, close } if close.reason == wamp_uri::CLOSE_KILLED && close.message.contains("64 messages"))));
    assert!(fx.iter().any(|e| matches!(e, Effect::Left { session: 1 })));
    assert!(
        h.input(Input::SlowPeer {
            session: 1,
            queue: 64
        })
        .is_empty()
    );
    assert_eq!(h.core.session_count(), 1);
    // Its registration went with it.
    h.register(2, 2, "com.x", Dict::new());
}

#[test]
fn a_taken_session_id_is_refused_and_close_kills_everyone() {
    let mut h = Harness::new();
    h.join(1, "user");
    let info = h.core.sessions[&1].info.clone();
    assert!(!h.core.join(1, info.clone()), "id taken");
    assert!(!h.core.join(INTERNAL, info), "the router's own id");
    h.join(2, "user");
    let fx = h.input(Input::Close);
    let killed: Vec<Id> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Kill { session, .. } => Some(*session),
            _ => None,
        })
        .collect();
    assert_eq!(killed, [1, 2]);
}

#[test]
fn shutdown_closes_every_session_and_those_that_join_later() {
    let shut = |fx: &[Effect]| -> Vec<Id> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Kill { session, close }
                    if close.reason == wamp_uri::SYSTEM_SHUTDOWN
                        && close.message == super::core::SHUTDOWN_MESSAGE =>
                {
                    Some(*session)
                }
                _ => None,
            })
            .collect()
    };
    let mut h = Harness::new();
    h.join(2, "user");
    h.join(1, "user");
    let info = h.core.sessions[&1].info.clone();
    assert_eq!(shut(&h.input(Input::Shutdown)), [1, 2]);
    // A session whose join the realm took after the shutdown.
    assert!(h.core.join(3, info));
    assert_eq!(shut(&h.input(Input::Joined { session: 3 })), [3]);
}

#[test]
fn internal_calls_are_answered_by_ticket() {
    let mut h = Harness::new();
    h.join(2, "user");
    h.register(2, 1, "com.auth", Dict::new());
    let fx = h.input(Input::InternalCall {
        ticket: 5,
        procedure: "com.auth".into(),
        payload: Box::default(),
        timeout_ms: 100,
    });
    let inv = invocation_of(&fx, 2).request;
    let fx = h.yield_(2, inv, Dict::new());
    match fx.as_slice() {
        [
            Effect::CancelTimer { .. },
            Effect::Reply { ticket: 5, result },
        ] => assert_eq!(
            result.as_ref().as_ref().unwrap().args,
            vec![Value::from("done")]
        ),
        other => panic!("{other:?}"),
    }
    let fx = h.input(Input::InternalCall {
        ticket: 6,
        procedure: "com.nobody".into(),
        payload: Box::default(),
        timeout_ms: 100,
    });
    assert!(matches!(
        fx.as_slice(),
        [Effect::Reply { ticket: 6, result }]
            if **result == Err(InternalCallError::NoSuchProcedure)
    ));
}

#[test]
fn token_issue_asks_for_a_mint() {
    let mut h = Harness::new();
    h.join(1, "user");
    let fx = h.msg(
        1,
        Message::Call(Call {
            request: 4,
            options: Dict::new(),
            procedure: "trellis.token.issue".into(),
            payload: Payload::args(vec![Value::from("alice"), Value::Null, Value::from(600u64)]),
        }),
    );
    match fx.as_slice() {
        [Effect::Mint(m)] => assert_eq!(
            **m,
            Mint {
                to: 1,
                request: 4,
                authid: "alice".into(),
                role: None,
                lifetime: Duration::from_secs(60),
            },
            "the lifetime is capped at the store's max_age"
        ),
        other => panic!("{other:?}"),
    }
    let _ = h.call(1, 5, "com.unused", Dict::new());
    let fx = h.msg(
        1,
        Message::Unregister(Unregister {
            request: 6,
            registration: 77,
        }),
    );
    assert_eq!(error_uri(&to(&fx, 1)[0]), wamp_uri::NO_SUCH_REGISTRATION);
}

#[test]
fn effects_stay_small() {
    // A publication to N subscribers is N effects.
    assert!(std::mem::size_of::<Effect>() <= 40);
}

#[test]
fn a_sessions_entry_stays_small() {
    // Every session keeps its entry (boxed) for its whole life: 328 bytes
    // (the allocator's 384-byte class) while the dynamic authorizer's
    // state and the rarer transport details were inline, 232 after (the
    // 256-byte class), 224 (a class down) once the peer's description
    // was a `Box<str>`, 192 (a class down again) once the four names were.
    let e = std::mem::size_of::<crate::realm::core::SessionEntry>();
    assert!(e <= 192, "SessionEntry grew to {e} bytes");
}

#[test]
fn the_realms_commands_stay_small() {
    // Every message of every session goes through the realm's queue and
    // its core by value: a command and an input were 176 bytes while they
    // held a message (and a payload) inline, and were copied whole about
    // ten times per message on its way. The message is boxed now.
    let c = std::mem::size_of::<crate::realm::RealmCommand>();
    let i = std::mem::size_of::<Input>();
    println!("RealmCommand {c} bytes, Input {i} bytes");
    assert!(c <= 64, "RealmCommand grew to {c} bytes");
    assert!(i <= 64, "Input grew to {i} bytes");
}

// ----- figures -----

#[test]
fn the_realms_figures_count_what_happened() {
    let (mut h, inv) = call_in_flight(true);
    h.yield_(2, inv, Dict::new());
    h.call(1, 8, "com.nobody", Dict::new());
    h.join(3, "guest");
    h.subscribe(3, "com.open.news", Dict::new());
    h.subscribe(1, "com.open.news", Dict::new());
    let fx = h.publish(1, "com.open.news", Dict::new());
    assert_eq!(fx.len(), 1, "the guest gets the event, the publisher not");
    // The guest may not call: a denial.
    h.call(3, 9, "com.slow", Dict::new());
    h.input(Input::SlowPeer {
        session: 3,
        queue: 10,
    });
    let s = h.core.stats();
    assert_eq!((s.sessions, s.registrations, s.subscriptions), (2, 1, 1));
    assert_eq!((s.sessions_joined, s.sessions_left), (3, 1));
    assert_eq!(s.slow_peers_closed, 1);
    assert_eq!(s.received["CALL"], 3);
    assert_eq!(s.received["PUBLISH"], 1);
    assert_eq!(s.sent["EVENT"], 1);
    assert_eq!(s.sent["RESULT"], 1);
    assert_eq!(s.calls["ok"], 1);
    assert_eq!(s.calls["no_callee"], 1);
    assert_eq!(s.calls["error"], 1, "the denied call");
    assert_eq!(s.authorizations["call/allowed"], 2);
    assert_eq!(s.authorizations["call/denied"], 1);
    assert_eq!(s.authorizations["subscribe/allowed"], 2);
    assert!(
        !s.received.contains_key("UNSUBSCRIBE"),
        "only what happened"
    );
}

/// Two members of one cluster, `a` and `b`, as the backplane would link
/// them (member-to-member messages and directory entries handed over by
/// the test).
fn member(name: &str, seed: u64) -> Harness {
    let mut h = Harness::seeded(seed);
    h.core.set_member(Some(name.into()));
    h
}

/// The member-to-member messages among `fx`, for `member`, each in a
/// frame of its own.
fn for_member(fx: &[Effect], member: &str) -> Vec<bytes::Bytes> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::ToMember(b) if &*b.0 == member => {
                let mut f = super::cluster::Frame::default();
                f.push(&b.1);
                Some(f.take())
            }
            _ => None,
        })
        .collect()
}

/// Tell `h` of a registration of member `from`'s session.
fn remote_callee(
    h: &mut Harness,
    from: &str,
    session: Id,
    procedure: &str,
    invoke: &str,
    revision: u64,
) {
    let o = proto::options::RegisterOptions::parse(&dict! { "invoke" => invoke }).unwrap();
    h.input(Input::RemoteRegistry(Box::new(
        super::cluster::RegistryEntry {
            put: true,
            member: from.into(),
            session,
            // Any id of the other member's; one per entry.
            registration: revision,
            procedure: procedure.into(),
            policy: o.policy,
            invoke: o.invoke,
            revision,
        },
    )));
}

/// Tell `h` that the directory holds its own entry for `session`'s
/// `registration`, at `revision`.
fn ranked(h: &mut Harness, session: Id, registration: Id, revision: u64) -> Vec<Effect> {
    let me = h.core.member.clone().unwrap();
    h.input(Input::RemoteRegistry(Box::new(
        super::cluster::RegistryEntry {
            put: true,
            member: me,
            session,
            registration,
            procedure: String::new(),
            policy: proto::uri::MatchPolicy::Exact,
            invoke: proto::options::InvokePolicy::Single,
            revision,
        },
    )))
}

#[test]
fn first_and_last_follow_the_directorys_order_across_members() {
    for (invoke, expected_remote) in [("first", true), ("last", false)] {
        let mut a = member("a", 1);
        a.join(10, "user");
        a.join(11, "user");
        // a's callee registers here first, but b's reached the directory
        // first (revision 5, a's 6): the directory's order counts.
        let reg = a.register(10, 1, "com.p", dict! { "invoke" => invoke });
        remote_callee(&mut a, "b", 20, "com.p", invoke, 5);
        ranked(&mut a, 10, reg, 6);
        let fx = a.call(11, 1, "com.p", Dict::new());
        assert_eq!(
            !for_member(&fx, "b").is_empty(),
            expected_remote,
            "{invoke}"
        );
        assert_eq!(to(&fx, 10).len(), usize::from(!expected_remote), "{invoke}");
    }
}

#[test]
fn a_call_to_a_callee_gone_from_another_member_is_routed_again() {
    let mut a = member("a", 1);
    let mut b = member("b", 1);
    a.join(10, "user");
    a.join(11, "user");
    b.join(20, "user");
    let rr = dict! { "invoke" => "roundrobin" };
    b.register(20, 1, "com.q", rr.clone());
    remote_callee(&mut a, "b", 20, "com.q", "roundrobin", 1);
    let reg = a.register(10, 1, "com.q", rr);
    ranked(&mut a, 10, reg, 2);
    // b's callee leaves; a has not heard yet.
    b.input(Input::Leave { session: 20 });
    let fx = a.call(11, 1, "com.q", Dict::new());
    let out = for_member(&fx, "b");
    assert_eq!(out.len(), 1, "round robin starts with b's callee");
    let fx = b.input(Input::RemoteRpc(out[0].clone()));
    let back = for_member(&fx, "a");
    assert_eq!(back.len(), 1, "b answers that its callee is gone");
    let fx = a.input(Input::RemoteRpc(back[0].clone()));
    assert!(to(&fx, 11).is_empty(), "the caller does not see b's answer");
    let inv = invocation_of(&fx, 10);
    let fx = a.yield_(10, inv.request, Dict::new());
    assert!(matches!(to(&fx, 11).as_slice(), [Message::Result(r)] if r.request == 1));

    // With no other callee: no_available_callee, once.
    let mut a = member("a", 1);
    let mut b = member("b", 1);
    a.join(11, "user");
    b.join(20, "user");
    b.register(20, 1, "com.s", dict! { "invoke" => "first" });
    remote_callee(&mut a, "b", 20, "com.s", "first", 1);
    b.input(Input::Leave { session: 20 });
    let fx = a.call(11, 1, "com.s", Dict::new());
    let fx = b.input(Input::RemoteRpc(for_member(&fx, "b")[0].clone()));
    let fx = a.input(Input::RemoteRpc(for_member(&fx, "a")[0].clone()));
    match to(&fx, 11).as_slice() {
        [m] => assert_eq!(error_uri(m), wamp_uri::NO_AVAILABLE_CALLEE),
        other => panic!("{other:?}"),
    }
    assert!(for_member(&fx, "b").is_empty());
}

/// Calls and answers batched into one frame per member run in order,
/// with the caller's identity disclosed only when asked for.
#[test]
fn a_frame_of_several_calls_runs_each_and_answers_in_one_frame() {
    let mut a = member("a", 1);
    let mut b = member("b", 1);
    a.join(11, "user");
    b.join(20, "user");
    b.register(20, 1, "com.p", dict! { "invoke" => "roundrobin" });
    remote_callee(&mut a, "b", 20, "com.p", "roundrobin", 1);
    let mut frame = super::cluster::Frame::default();
    for request in 1..=3 {
        let options = dict! { "disclose_me" => request != 2 };
        for e in a.call(11, request, "com.p", options) {
            if let Effect::ToMember(m) = e {
                assert_eq!(&*m.0, "b");
                frame.push(&m.1);
            }
        }
    }
    let fx = b.input(Input::RemoteRpc(frame.take()));
    let invocations: Vec<_> = to(&fx, 20)
        .into_iter()
        .map(|m| match m {
            Message::Invocation(i) => i,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(invocations.len(), 3, "every record of the frame ran");
    for (i, disclosed) in invocations.iter().zip([true, false, true]) {
        assert_eq!(i.details.contains_key("caller"), disclosed, "{i:?}");
        if disclosed {
            assert_eq!(i.details.get("caller"), Some(&Value::from(11u64)));
            assert_eq!(i.details.get("caller_authrole"), Some(&Value::from("user")));
        }
    }
    let mut answers = super::cluster::Frame::default();
    for i in invocations.iter().rev() {
        for e in b.yield_(20, i.request, Dict::new()) {
            if let Effect::ToMember(m) = e {
                assert_eq!(&*m.0, "a");
                answers.push(&m.1);
            }
        }
    }
    let fx = a.input(Input::RemoteRpc(answers.take()));
    let results: Vec<Id> = to(&fx, 11)
        .into_iter()
        .map(|m| match m {
            Message::Result(r) => r.request,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(results, vec![3, 2, 1], "answers in the frame's order");
    // A frame from a node of another release is dropped whole.
    let fx = a.input(Input::RemoteRpc(bytes::Bytes::from_static(&[
        1, 0, 0, 0, 0,
    ])));
    assert!(to(&fx, 11).is_empty());
}

/// The router's own calls (authenticators, authorizers) go to a callee
/// on this node; with callees only on other nodes they fail at once,
/// saying so, instead of waiting for an answer that cannot come back.
#[test]
fn the_routers_own_calls_take_a_callee_on_this_node() {
    let mut a = member("a", 1);
    a.join(10, "user");
    let rr = dict! { "invoke" => "roundrobin" };
    remote_callee(&mut a, "b", 20, "com.auth", "roundrobin", 1);
    let internal = |a: &mut Harness, ticket: u64| {
        a.input(Input::InternalCall {
            ticket,
            procedure: "com.auth".into(),
            payload: Box::default(),
            timeout_ms: 100,
        })
    };
    let fx = internal(&mut a, 1);
    match fx.as_slice() {
        [Effect::Reply { ticket: 1, result }] => match result.as_ref() {
            Err(InternalCallError::Error { uri, message }) => {
                assert_eq!(uri, wamp_uri::NO_AVAILABLE_CALLEE);
                assert!(message.contains("on another node"), "{message}");
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    a.register(10, 1, "com.auth", rr);
    for ticket in 2..=5 {
        let fx = internal(&mut a, ticket);
        assert!(for_member(&fx, "b").is_empty(), "call {ticket} stayed here");
        let inv = invocation_of(&fx, 10);
        a.yield_(10, inv.request, Dict::new());
    }
}

#[test]
fn calls_pass_over_a_silent_members_callees() {
    let mut a = member("a", 1);
    a.join(10, "user");
    a.join(11, "user");
    let rr = dict! { "invoke" => "roundrobin" };
    remote_callee(&mut a, "b", 20, "com.q", "roundrobin", 1);
    a.register(10, 1, "com.q", rr);
    remote_callee(&mut a, "b", 20, "com.only-b", "single", 2);
    a.input(Input::Reachable {
        member: "b".into(),
        yes: false,
    });
    for request in 1..=4 {
        let fx = a.call(11, request, "com.q", Dict::new());
        assert!(
            for_member(&fx, "b").is_empty(),
            "call {request} passed over b"
        );
        let inv = invocation_of(&fx, 10);
        a.yield_(10, inv.request, Dict::new());
    }
    let fx = a.call(11, 9, "com.only-b", Dict::new());
    match to(&fx, 11).as_slice() {
        [m] => assert_eq!(error_uri(m), wamp_uri::NO_AVAILABLE_CALLEE),
        other => panic!("{other:?}"),
    }
    a.input(Input::Reachable {
        member: "b".into(),
        yes: true,
    });
    let fx = a.call(11, 10, "com.only-b", Dict::new());
    assert_eq!(
        for_member(&fx, "b").len(),
        1,
        "b answers again: its callee gets calls"
    );
}

#[test]
fn an_own_directory_entry_of_an_ended_registration_is_taken_out() {
    let mut a = member("a", 1);
    a.join(10, "user");
    let reg = a.register(10, 1, "com.p", dict! { "invoke" => "roundrobin" });
    let own = |fx: &[Effect]| {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Registry(op) => Some((op.put, op.session, op.registration)),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    // The live registration's own entry: only its place is noted.
    let fx = ranked(&mut a, 10, reg, 8);
    assert!(own(&fx).is_empty(), "{fx:?}");
    // An entry of a session that is gone (its delete never reached the
    // directory): taken out.
    let fx = ranked(&mut a, 99, reg, 9);
    assert_eq!(own(&fx), [(false, 99, reg)]);
}

/// Payload passthru (`ppt_scheme`) from a session that did not announce
/// `payload_passthru_mode` is a protocol violation; to a callee or caller
/// that did not announce it, `feature_not_supported`.
#[test]
fn passthru_needs_the_announced_feature() {
    let ppt = ClientFeatures {
        caller_ppt: true,
        callee_ppt: true,
        publisher_ppt: true,
        ..ClientFeatures::default()
    };
    let mut h = Harness::new();
    h.join(1, "user");
    let fx = h.msg(
        1,
        Message::Publish(Publish {
            request: 1,
            options: dict! { "ppt_scheme" => "x", "acknowledge" => true },
            topic: "com.t".into(),
            payload: Payload::default(),
        }),
    );
    assert!(fx.iter().any(|e| matches!(e, Effect::Kill { session: 1, close }
        if close.reason == wamp_uri::PROTOCOL_VIOLATION && close.message.contains("payload_passthru_mode for its publisher role"))), "{fx:?}");
    // A caller that announced it, a callee that did not.
    h.join_with(2, "user", ppt);
    h.join(3, "user");
    h.register(3, 1, "com.plain", Dict::new());
    let fx = h.call(2, 7, "com.plain", dict! { "ppt_scheme" => "x" });
    assert_eq!(error_uri(&to(&fx, 2)[0]), wamp_uri::FEATURE_NOT_SUPPORTED);
    assert!(to(&fx, 3).is_empty(), "the callee gets nothing: {fx:?}");
    // Undeclared ppt from the caller: violation, whatever the callee.
    h.join(4, "user");
    let fx = h.call(4, 1, "com.plain", dict! { "ppt_scheme" => "x" });
    assert!(
        fx.iter()
            .any(|e| matches!(e, Effect::Kill { session: 4, .. })),
        "{fx:?}"
    );
    // A ppt callee's result to a caller that did not announce it.
    h.join_with(5, "user", ppt);
    h.register(5, 1, "com.ppt", Dict::new());
    h.join(6, "user");
    let fx = h.call(6, 9, "com.ppt", Dict::new());
    let inv = invocation_of(&fx, 5);
    let fx = h.yield_(5, inv.request, dict! { "ppt_scheme" => "x" });
    assert_eq!(error_uri(&to(&fx, 6)[0]), wamp_uri::FEATURE_NOT_SUPPORTED);
    assert_eq!(error_uri(&to(&fx, 5)[0]), wamp_uri::FEATURE_NOT_SUPPORTED);
    // Both sides announced it: it passes, options and all.
    let fx = h.call(2, 10, "com.ppt", dict! { "ppt_scheme" => "x" });
    let inv = invocation_of(&fx, 5);
    assert_eq!(inv.details.get("ppt_scheme"), Some(&Value::from("x")));
    let fx = h.yield_(5, inv.request, dict! { "ppt_scheme" => "x" });
    assert!(
        matches!(to(&fx, 2).as_slice(), [Message::Result(r)] if r.details.contains_key("ppt_scheme")),
        "{fx:?}"
    );
}

/// Crossbar.io's `concurrency`: a callee at its limit is passed over, and
/// with every callee at its limit the caller gets
/// `crossbar.error.max_concurrency_reached`; a finished call frees a slot.
#[test]
fn concurrency_limits_invocations_per_callee() {
    let mut h = Harness::new();
    h.join(1, "user");
    h.join(2, "user");
    h.join(3, "user");
    h.register(
        1,
        1,
        "com.slow",
        dict! { "concurrency" => 1i64, "invoke" => "roundrobin" },
    );
    h.register(
        2,
        1,
        "com.slow",
        dict! { "concurrency" => 1i64, "invoke" => "roundrobin" },
    );
    let fx = h.call(3, 10, "com.slow", Dict::new());
    let first = invocation_of(&fx, 1);
    // Round robin would pick 2 next anyway; then 1 again, which is busy:
    // the call goes to the free callee, if there is one.
    let fx = h.call(3, 11, "com.slow", Dict::new());
    let second = invocation_of(&fx, 2);
    let fx = h.call(3, 12, "com.slow", Dict::new());
    assert_eq!(
        error_uri(&to(&fx, 3)[0]),
        wamp_uri::MAX_CONCURRENCY_REACHED,
        "{fx:?}"
    );
    h.yield_(1, first.request, Dict::new());
    let fx = h.call(3, 13, "com.slow", Dict::new());
    invocation_of(&fx, 1);
    h.yield_(2, second.request, Dict::new());
    let fx = h.call(3, 14, "com.slow", Dict::new());
    invocation_of(&fx, 2);
    // A bad value is named.
    let fx = h.msg(
        1,
        Message::Register(Register {
            request: 5,
            options: dict! { "concurrency" => 0i64 },
            procedure: "com.other".into(),
        }),
    );
    assert_eq!(
        error_uri(&to(&fx, 1)[0]),
        wamp_uri::INVALID_ARGUMENT,
        "{fx:?}"
    );
}

/// A realm with `store` (JSON) and the test roles.
fn with_store(store: serde_json::Value) -> Harness {
    let mut cfg: serde_json::Value = serde_json::from_str(ROLES).unwrap();
    cfg["store"] = store;
    let cfg: RealmConfig = serde_json::from_value(cfg).unwrap();
    Harness {
        core: Core::new(&cfg, None, SmallRng::seed_from_u64(1)),
        now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    }
}

fn register_msg(request: Id, procedure: &str, options: Dict) -> Message {
    Message::Register(Register {
        request,
        options,
        procedure: procedure.into(),
    })
}

/// Crossbar.io's `store.call-queue`: a call nobody can take waits, in
/// order, until a callee registers; other procedures fail at once; the
/// queue is bounded.
#[test]
fn queued_calls_wait_for_a_callee_in_order_and_are_bounded() {
    let mut h = with_store(serde_json::json!({"type": "memory", "call-queue": [
        {"uri": "com.queued.", "match": "prefix", "limit": 2}]}));
    h.join(1, "user");
    h.join(3, "user");
    assert!(to(&h.call(3, 10, "com.queued.add", Dict::new()), 3).is_empty());
    assert!(to(&h.call(3, 11, "com.queued.add", Dict::new()), 3).is_empty());
    let fx = h.call(3, 12, "com.queued.add", Dict::new());
    let err = &to(&fx, 3)[0];
    assert_eq!(error_uri(err), wamp_uri::NO_SUCH_PROCEDURE);
    assert!(
        format!("{err:?}").contains("call queue is full (2 calls wait"),
        "{err:?}"
    );
    let fx = h.call(3, 13, "com.other", Dict::new());
    assert_eq!(error_uri(&to(&fx, 3)[0]), wamp_uri::NO_SUCH_PROCEDURE);
    // A callee registers: both waiting calls go out, oldest first.
    let fx = h.msg(1, register_msg(1, "com.queued.add", Dict::new()));
    let invocations: Vec<_> = to(&fx, 1)
        .into_iter()
        .filter_map(|m| match m {
            Message::Invocation(i) => Some(i),
            _ => None,
        })
        .collect();
    assert_eq!(invocations.len(), 2, "{fx:?}");
    assert_eq!(invocations[0].payload.args, vec![Value::from(10u64)]);
    assert_eq!(invocations[1].payload.args, vec![Value::from(11u64)]);
    let fx = h.yield_(1, invocations[0].request, Dict::new());
    assert!(
        matches!(to(&fx, 3).as_slice(), [Message::Result(r)] if r.request == 10),
        "{fx:?}"
    );
}

/// A queued call ends when its timeout fires, when its caller cancels it,
/// or when its caller leaves; none of them reaches a callee later.
#[test]
fn queued_calls_time_out_are_canceled_and_go_with_their_caller() {
    let mut h = with_store(serde_json::json!({"type": "memory", "call-queue": [
        {"uri": "com.queued.add"}]}));
    h.join(1, "user");
    h.join(3, "user");
    h.join(4, "user");
    let fx = h.call(3, 10, "com.queued.add", dict! { "timeout" => 500i64 });
    let (timer, after) = started_timer(&fx);
    assert_eq!(after, Duration::from_millis(500));
    let fx = h.input(Input::Timer(timer));
    let err = &to(&fx, 3)[0];
    assert_eq!(error_uri(err), wamp_uri::TIMEOUT);
    assert!(
        format!("{err:?}").contains("waited 500 ms in the call queue"),
        "{err:?}"
    );
    h.call(3, 11, "com.queued.add", Dict::new());
    let fx = h.cancel(3, 11, "skip");
    assert_eq!(error_uri(&to(&fx, 3)[0]), wamp_uri::CANCELED);
    // A request id in the queue cannot be used again.
    h.join(5, "user");
    h.call(5, 30, "com.queued.add", Dict::new());
    let fx = h.call(5, 30, "com.queued.add", Dict::new());
    assert!(
        fx.iter().any(|e| matches!(e, Effect::Kill { session: 5, close } if close.reason == wamp_uri::PROTOCOL_VIOLATION)),
        "{fx:?}"
    );
    h.call(4, 20, "com.queued.add", Dict::new());
    h.call(3, 12, "com.queued.add", Dict::new());
    h.input(Input::Leave { session: 3 });
    let fx = h.msg(1, register_msg(1, "com.queued.add", Dict::new()));
    let calls: Vec<_> = to(&fx, 1)
        .into_iter()
        .filter(|m| matches!(m, Message::Invocation(_)))
        .collect();
    // Only session 4's call was left.
    assert_eq!(calls.len(), 1, "{fx:?}");
    let fx = h.call(4, 21, "com.queued.add", Dict::new());
    invocation_of(&fx, 1);
}

/// With every callee at its `concurrency`, calls wait in the queue (as
/// Crossbar.io's queue is meant for) and go out as running ones end.
#[test]
fn queued_calls_wait_for_a_free_callee_under_concurrency() {
    let mut h = with_store(
        serde_json::json!({"type": "memory", "limit": 10, "call-queue": [
        {"uri": "com.slow"}]}),
    );
    h.join(1, "user");
    h.join(3, "user");
    h.register(1, 1, "com.slow", dict! { "concurrency" => 1i64 });
    let first = invocation_of(&h.call(3, 10, "com.slow", Dict::new()), 1);
    let fx = h.call(3, 11, "com.slow", Dict::new());
    assert!(to(&fx, 3).is_empty() && to(&fx, 1).is_empty(), "{fx:?}");
    // The running call ends: the waiting one goes out at once.
    let fx = h.yield_(1, first.request, Dict::new());
    assert!(matches!(to(&fx, 3).as_slice(), [Message::Result(r)] if r.request == 10));
    let second = invocation_of(&fx, 1);
    assert_eq!(second.payload.args, vec![Value::from(11u64)]);
}

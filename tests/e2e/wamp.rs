//! autobahn-python against the router: every scenario with JSON,
//! MessagePack and CBOR.

use crate::support::{Node, expect_python_ok, free_port, router_config};

fn run(scenario: &str, tweak: impl FnOnce(&mut serde_json::Value)) {
    let port = free_port();
    let mut cfg = router_config(port);
    tweak(&mut cfg);
    let node = Node::start(&cfg, port);
    let out = expect_python_ok(
        &node,
        "scenarios.py",
        &[scenario, "json", "msgpack", "cbor"],
    );
    for ser in ["json", "msgpack", "cbor"] {
        assert!(
            out.contains(&format!("ok {scenario} {ser}")),
            "{scenario} did not pass with {ser}:\n{out}"
        );
    }
}

fn scenario(name: &str) {
    run(name, |_| {});
}

#[test]
fn join_and_leave() {
    scenario("join_leave");
}

/// Where the specification and Crossbar.io differ on the wire, Crossbar.io
/// by default: the GOODBYE reply and `wamp.session.on_leave`.
#[test]
fn goodbye_and_on_leave_as_crossbar_by_default() {
    scenario("crossbar_goodbye_and_on_leave");
}

/// Crossbar.io's realm `stats`: `wamp.session.on_stats` on join, after 10
/// rated messages and on leave.
#[test]
fn realm_stats_publish_session_statistics() {
    run("session_stats", |cfg| {
        cfg["workers"][0]["realms"][0]["stats"] = serde_json::json!({
            "rated_message_size": 256, "trigger_after_rated_messages": 10,
            "trigger_after_duration": 0, "trigger_on_join": true, "trigger_on_leave": true});
    });
}

/// Crossbar.io's realm `stats` by time: every `trigger_after_duration`
/// seconds, without traffic.
#[test]
fn realm_stats_by_time() {
    run("session_stats_by_time", |cfg| {
        cfg["workers"][0]["realms"][0]["stats"] = serde_json::json!({
            "trigger_after_duration": 1, "trigger_on_join": false});
    });
}

/// The router's `options.compat: "spec"` gives the specification's.
#[test]
fn goodbye_and_on_leave_as_the_specification_says_with_compat_spec() {
    run("spec_goodbye_and_on_leave", |cfg| {
        cfg["workers"][0]["options"] = serde_json::json!({"compat": "spec"});
    });
}

#[test]
fn unknown_realm_is_refused() {
    scenario("unknown_realm");
}

#[test]
fn call_with_args_and_kwargs() {
    scenario("rpc_args_kwargs");
}

/// Arguments forwarded as they came (the router splices them for a peer
/// of the same serializer) and converted for peers of the others.
#[test]
fn arguments_cross_every_pair_of_serializers() {
    scenario("args_across_serializers");
}

#[test]
fn application_error_reaches_caller() {
    scenario("rpc_application_error");
}

#[test]
fn rpc_error_uris() {
    scenario("rpc_errors");
}

#[test]
fn callee_leaving_fails_pending_calls() {
    scenario("callee_leaves_mid_call");
}

#[test]
fn many_concurrent_calls_on_one_session() {
    scenario("concurrent_calls");
}

#[test]
fn publish_subscribe_acknowledge_exclude_me_unsubscribe() {
    scenario("pubsub_basic");
}

#[test]
fn reserved_uris_are_refused() {
    scenario("publish_errors");
}

#[test]
fn subscriber_black_and_white_listing() {
    scenario("blackwhite_listing");
}

#[test]
fn pattern_based_subscriptions() {
    scenario("pattern_subscriptions");
}

#[test]
fn progressive_call_results() {
    scenario("progressive_results");
}

#[test]
fn pattern_based_and_shared_registrations() {
    scenario("pattern_and_shared_registrations");
}

#[test]
fn caller_and_publisher_identification_by_role() {
    run("identification", |cfg| {
        cfg["workers"][0]["realms"][0]["roles"][0]["permissions"][0]["disclose"] =
            serde_json::json!({"caller": true, "publisher": true});
    });
}

/// A session that leaves and rejoins at once registers the same procedure
/// again, every time, over every transport: the GOODBYE reply comes only
/// after the realm dropped the old session's registrations. Before, about
/// one run in four of swampyer over MessagePack got
/// `procedure_already_exists`.
#[test]
fn leave_and_rejoin_at_once_finds_the_procedure_free() {
    let (ws, rs, web) = (free_port(), free_port(), free_port());
    let mut cfg = router_config(ws);
    crate::support::push_transport(
        &mut cfg,
        serde_json::json!({"type": "rawsocket", "serializers": ["json", "msgpack"],
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": rs}}),
    );
    crate::support::push_transport(
        &mut cfg,
        serde_json::json!({"type": "web",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": web},
            "paths": {"lp": {"type": "longpoll"}}}),
    );
    let node = Node::start(&cfg, ws);
    node.wait_ready();
    let out = crate::support::expect_python_args_ok(
        &node,
        "rejoin_loop.py",
        &[
            &node.url(),
            &rs.to_string(),
            &format!("http://127.0.0.1:{web}/lp"),
            "200",
        ],
    );
    for want in [
        "ok autobahn ws json: 200",
        "ok autobahn ws msgpack: 200",
        "ok autobahn ws cbor: 200",
        "ok autobahn rs json: 200",
        "ok autobahn rs msgpack: 200",
        "ok swampyer ws msgpack: 200",
        "ok swampyer tcpip msgpack: 200",
        "ok longpoll json: 200",
        "ok lingering ws json: 200",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
}

/// Outgoing messages respect the receiving session's `max_message_size`, as
/// Crossbar.io: a result too large for its caller, or an invocation too
/// large for its callee, is `wamp.error.invalid_argument` for the caller;
/// an event too large for a subscriber is skipped for it and counted.
/// Before, the result was delivered over a transport that refuses such
/// messages the other way.
#[test]
fn messages_too_large_for_their_receiver_become_errors() {
    let (open, limited, admin) = (free_port(), free_port(), free_port());
    let mut cfg = router_config(open);
    crate::support::push_transport(
        &mut cfg,
        serde_json::json!({"type": "websocket", "id": "limited",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": limited},
            "options": {"max_message_size": 16384}}),
    );
    cfg["controller"] = serde_json::json!({"admin": {"endpoint": {"type": "tcp", "port": admin}}});
    let node = Node::start(&cfg, open);
    node.wait_ready();
    let out = crate::support::expect_python_args_ok(
        &node,
        "too_large.py",
        &[
            &format!("ws://127.0.0.1:{limited}/ws"),
            &format!("ws://127.0.0.1:{open}/ws"),
        ],
    );
    for want in [
        "ok a result too large for the caller is an error for it",
        "ok an invocation too large for the callee is an error for the caller",
        "ok an event too large for a subscriber is skipped for it alone",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    let (code, text) = crate::admin::get(admin, "/metrics", &[]);
    assert_eq!(code, 200);
    assert_eq!(
        crate::admin::metric(
            &text,
            "trellis_messages_too_large_total{worker=\"router1\",transport=\"limited\"}"
        ),
        3.0,
        "{text}"
    );
}

/// Crossbar.io's realm `store.call-queue`: calls wait for a callee that
/// registers later, or for a free one under `concurrency`; the caller's
/// timeout ends a wait.
#[test]
fn call_queue_waits_for_a_callee() {
    run("call_queue", |cfg| {
        cfg["workers"][0]["realms"][0]["store"] = serde_json::json!({
            "type": "memory", "limit": 100,
            "call-queue": [{"uri": "com.queued.", "match": "prefix", "limit": 50}]});
    });
}

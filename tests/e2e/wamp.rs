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

#[test]
fn unknown_realm_is_refused() {
    scenario("unknown_realm");
}

#[test]
fn call_with_args_and_kwargs() {
    scenario("rpc_args_kwargs");
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

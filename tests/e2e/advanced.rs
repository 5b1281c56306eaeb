//! The Advanced Profile with autobahn-python (JSON and MessagePack), plus a
//! raw peer where autobahn cannot send what a feature needs.

use serde_json::json;

use crate::support::{Node, expect_python_ok, free_port, router_config};

fn run(scenario: &str, tweak: impl FnOnce(&mut serde_json::Value)) -> (Node, String) {
    let port = free_port();
    let mut cfg = router_config(port);
    tweak(&mut cfg);
    let node = Node::start(&cfg, port);
    let out = expect_python_ok(&node, "advanced.py", &[scenario, "json", "msgpack"]);
    for ser in ["json", "msgpack"] {
        assert!(
            out.contains(&format!("ok {scenario} {ser}")),
            "{scenario} did not pass with {ser}:\n{out}"
        );
    }
    (node, out)
}

fn scenario(name: &str) {
    run(name, |_| {});
}

/// Crossbar.io's `RegisterOptions(concurrency=N)` from autobahn-python.
#[test]
fn register_concurrency_limits_invocations_as_crossbar_does() {
    scenario("concurrency_limit");
}

/// A YIELD that comes after its call timed out is dropped, and the router
/// says so at debug with the invocation's request id.
#[test]
fn a_late_yield_is_logged_with_its_request_id() {
    let (node, out) = run("late_yield", |_| {});
    let log = node.log();
    for id in out
        .lines()
        .filter_map(|l| l.strip_prefix("late invocation "))
    {
        assert!(
            log.lines().any(|l| l.contains("DEBUG")
                && l.contains("late YIELD dropped")
                && l.contains(&format!("request={id}"))),
            "no debug line for the late YIELD of invocation {id}:\n{log}"
        );
    }
    assert_eq!(out.matches("late invocation ").count(), 2, "{out}");
}

fn permissions(cfg: &mut serde_json::Value) -> &mut Vec<serde_json::Value> {
    cfg["workers"][0]["realms"][0]["roles"][0]["permissions"]
        .as_array_mut()
        .expect("permissions list")
}

#[test]
fn cancel_in_kill_mode_from_autobahn() {
    scenario("cancel_kill_from_autobahn");
}

#[test]
fn cancel_modes_skip_kill_killnowait() {
    scenario("cancel_modes");
}

#[test]
fn call_timeout_is_enforced_by_the_router() {
    scenario("call_timeout");
}

#[test]
fn progressive_call_invocations() {
    scenario("progressive_call_invocations");
}

#[test]
fn disclose_me_is_honoured_unless_the_permission_refuses_it() {
    run("disclose_me_is_honoured_unless_refused", |cfg| {
        permissions(cfg).push(json!({"uri": "com.example.private.", "match": "prefix",
            "allow": {"call": true, "register": true, "publish": true, "subscribe": true},
            "disclose": {"on_request": false}}));
    });
}

#[test]
fn event_retention() {
    scenario("event_retention");
}

#[test]
fn event_history_from_the_realm_store() {
    run("event_history", |cfg| {
        cfg["workers"][0]["realms"][0]["store"] = json!({
            "type": "memory",
            "event-history": [{"uri": "com.example.history", "limit": 5}]
        });
    });
}

#[test]
fn testaments_are_published_when_a_session_is_lost() {
    scenario("testaments");
}

#[test]
fn meta_api_sessions_and_kill() {
    scenario("meta_sessions");
}

#[test]
fn meta_api_registrations_and_subscriptions() {
    scenario("meta_registrations_and_subscriptions");
}

#[test]
fn meta_api_is_checked_by_authorization() {
    run("meta_api_is_authorized", |cfg| {
        permissions(cfg).push(json!({"uri": "wamp.session.list", "allow": {"call": false}}));
    });
}

#[test]
fn payload_passthru_arrives_bit_for_bit() {
    scenario("payload_passthru");
}

#[test]
fn invoke_policies_first_last_random() {
    scenario("invoke_policies");
}

#[test]
fn pattern_subscription_never_leaks_a_forbidden_topic() {
    run("pattern_subscription_respects_authorization", |cfg| {
        permissions(cfg).push(
            json!({"uri": "com.example.secret.", "match": "prefix", "allow": {"publish": true}}),
        );
    });
}

//! Raw-WebSocket bad input; a bystander autobahn session must not notice.

use serde_json::json;

use crate::support::{Node, expect_python_ok, free_port, router_config};

#[test]
fn bad_input_gets_clear_errors_and_costs_only_the_offender() {
    let port = free_port();
    let mut cfg = router_config(port);
    cfg["workers"][0]["transports"][0]["options"] = json!({
        "max_message_size": 65536,
        "max_frame_size": 65536,
        "hello_timeout": 500,
        "max_queue_messages": 64
    });
    let node = Node::start(&cfg, port);
    let out = expect_python_ok(&node, "bad_input.py", &["all"]);
    assert!(out.contains("ok bystander unaffected"), "{out}");
    let log = node.log();
    assert!(
        log.contains("closing slow session"),
        "the slow-peer policy is not logged:\n{log}"
    );
    assert!(
        log.contains("protocol_violation"),
        "protocol violations are not logged:\n{log}"
    );
    assert!(!log.contains("panicked"), "the router panicked:\n{log}");
}

/// A callee that stops reading: it is closed, and its caller's 600 calls
/// end in errors rather than silence; a bystander notices nothing.
#[test]
fn a_blocked_callee_fails_its_calls() {
    let port = free_port();
    let mut cfg = router_config(port);
    cfg["workers"][0]["transports"][0]["options"] = json!({"write_timeout": 2000});
    let node = Node::start(&cfg, port);
    let out = expect_python_ok(&node, "bad_input.py", &["blocked_callee_fails_its_calls"]);
    assert!(out.contains("ok blocked_callee_fails_its_calls"), "{out}");
    assert!(out.contains("ok bystander unaffected"), "{out}");
    assert!(
        node.log().contains("closing slow session"),
        "{}",
        node.log()
    );
}

#[test]
fn upgrade_requests_are_bounded_in_size_and_time() {
    let port = free_port();
    let mut cfg = router_config(port);
    cfg["workers"][0]["transports"][0]["options"] = json!({"open_handshake_timeout": 1000});
    let node = Node::start(&cfg, port);
    let out =
        crate::support::expect_python_args_ok(&node, "header_limits.py", &[&port.to_string()]);
    assert!(out.contains("ok autobahn joins as before"), "{out}");
}

/// max_connections, authenticate_timeout and an optional subprotocol on a
/// second transport; a bystander on the first notices nothing.
#[test]
fn connection_limit_and_authenticate_deadline() {
    let port = free_port();
    let limited = free_port();
    let mut cfg = router_config(port);
    crate::support::push_transport(
        &mut cfg,
        json!({
            "type": "websocket",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": limited},
            "auth": {
                "anonymous": {"role": "anonymous"},
                "ticket": {"type": "static", "principals": {"joe": {"ticket": "joe-ticket", "role": "anonymous"}}}
            },
            "options": {
                "max_connections": 3,
                "authenticate_timeout": 500,
                "require_websocket_subprotocol": false
            }
        }),
    );
    let node = Node::start(&cfg, port);
    let limited_url = format!("ws://127.0.0.1:{limited}/ws");
    let out =
        crate::support::expect_python_args_ok(&node, "limits.py", &[&node.url(), &limited_url]);
    assert!(out.contains("ok bystander unaffected"), "{out}");
    let log = node.log();
    let refusals = log
        .matches("the transport's max_connections limit is reached")
        .count();
    // 20+ refusals in well under a few seconds: logged at most once a second.
    assert!(
        (1..=5).contains(&refusals),
        "{refusals} refusal lines for a burst of refused connections:\n{log}"
    );
}

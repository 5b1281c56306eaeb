//! WAMP over RawSocket (TCP): autobahn-python's RawSocket client runs the
//! same scenarios as over WebSocket; plain sockets check the handshake
//! errors and framing limits.

use serde_json::json;

use crate::support::{Node, expect_python_args_ok, free_port, router_config};

fn node() -> (Node, u16) {
    let (ws, rs) = (free_port(), free_port());
    let mut cfg = router_config(ws);
    cfg["workers"][0]["transports"]
        .as_array_mut()
        .expect("transports")
        .push(json!({
            "type": "rawsocket",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": rs},
            "serializers": ["json", "msgpack"],
            "options": {"max_message_size": 65536}
        }));
    (Node::start(&cfg, ws), rs)
}

#[test]
fn autobahn_over_rawsocket_json_and_msgpack() {
    let (node, rs) = node();
    let url = format!("rs://127.0.0.1:{rs}");
    for scenario in ["rpc_args_kwargs", "pubsub_basic", "callee_leaves_mid_call"] {
        let out =
            expect_python_args_ok(&node, "scenarios.py", &[&url, scenario, "json", "msgpack"]);
        for ser in ["json", "msgpack"] {
            assert!(
                out.contains(&format!("ok {scenario} {ser}")),
                "{scenario} {ser}:\n{out}"
            );
        }
    }
}

#[test]
fn rawsocket_handshake_errors_and_limits() {
    let (node, rs) = node();
    let out = expect_python_args_ok(
        &node,
        "rawsocket_checks.py",
        &["127.0.0.1", &rs.to_string()],
    );
    for check in [
        "handshake",
        "unsupported serializer",
        "reserved bits",
        "not rawsocket",
        "frame too long",
        "ping pong",
    ] {
        assert!(out.contains(&format!("ok {check}")), "{check}:\n{out}");
    }
}

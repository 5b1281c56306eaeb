//! WAMP over RawSocket (TCP): autobahn-python's RawSocket client runs the
//! same scenarios as over WebSocket; plain sockets check the handshake
//! errors and framing limits.

use serde_json::json;

use crate::support::{Node, expect_python_args_ok, free_port, push_transport, router_config};

fn node() -> (Node, u16) {
    let (ws, rs) = (free_port(), free_port());
    let mut cfg = router_config(ws);
    push_transport(
        &mut cfg,
        json!({
            "type": "rawsocket",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": rs},
            "serializers": ["json", "msgpack"],
            "options": {"max_message_size": 65536}
        }),
    );
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

/// RawSocket on a Unix socket: autobahn-python with JSON and MessagePack,
/// known by its uid (SO_PEERCRED) without any authmethod, restricted to
/// its realm; the socket file has the configured mode.
#[test]
fn autobahn_over_a_unix_socket_with_peer_credentials() {
    let ws = free_port();
    let mut cfg = router_config(ws);
    let uid = nix::unistd::getuid().as_raw().to_string();
    let workers = &mut cfg["workers"][0];
    workers["realms"]
        .as_array_mut()
        .expect("realms")
        .extend([json!({"name": "realm2", "roles": [{"name": "anonymous"}]})]);
    workers["realms"][0]["roles"]
        .as_array_mut()
        .expect("roles")
        .push(json!({"name": "backend", "permissions": [
            {"uri": "", "match": "prefix", "allow": {"call": true, "register": true, "publish": true, "subscribe": true}}
        ]}));
    workers["transports"]
        .as_array_mut()
        .expect("transports")
        .push(json!({
            "type": "rawsocket",
            "endpoint": {"type": "unix", "path": "sockets/router1.sock", "mode": "0660"},
            "serializers": ["json", "msgpack"],
            "auth": {"peercred": {"principals": {uid: {"role": "backend", "authid": "svc", "realm": "realm1"}}}}
        }));
    let node = Node::start(&cfg, ws);
    node.wait_ready();
    let path = node.node_dir().join("sockets/router1.sock");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path)
        .expect("socket file")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);
    let out = expect_python_args_ok(
        &node,
        "unix_peer.py",
        &[&path.display().to_string(), &node.url()],
    );
    assert!(
        out.contains("unix json ok") && out.contains("unix msgpack ok"),
        "{out}"
    );
    assert!(out.contains("may only join realm \\\"realm1\\\""), "{out}");
}

#[test]
fn keepalive_closes_silent_peers_and_keeps_live_ones() {
    let (ws, rs) = (free_port(), free_port());
    let mut cfg = router_config(ws);
    let fast = json!({"auto_ping_interval": 500, "auto_ping_timeout": 500});
    cfg["workers"][0]["transports"][0]["options"] = fast.clone();
    push_transport(
        &mut cfg,
        json!({
            "type": "rawsocket",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": rs},
            "options": fast
        }),
    );
    let node = Node::start(&cfg, ws);
    let out = expect_python_args_ok(&node, "keepalive_check.py", &[&node.url(), &rs.to_string()]);
    assert!(out.contains("answering session kept"), "{out}");
    assert!(
        node.log().contains("no answer to a keepalive ping"),
        "{}",
        node.log()
    );
}

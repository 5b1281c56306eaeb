//! Hostile clients, with autobahn-python and raw peers: pattern
//! registrations and subscriptions authorized as patterns, identities a
//! client cannot choose, retained events that keep their audience,
//! Crossbar.io's rule precedence, the meta API's kill as specified.

use serde_json::{Value, json};

use crate::support::{Node, expect_python_args_ok, free_port, push_transport, router_config};

/// The role every scenario of `tests/py/security.py` runs as (its docstring
/// lists the rules).
fn hostile_node() -> (Node, Value) {
    hostile_node_with(&[])
}

fn hostile_node_with(env: &[(&str, &str)]) -> (Node, Value) {
    let (main, named, ticket) = (free_port(), free_port(), free_port());
    let mut cfg = router_config(main);
    cfg["workers"][0]["realms"][0]["roles"][0]["permissions"] = json!([
        {"uri": "com.private.allowed", "allow": {"register": true, "call": true}},
        {"uri": "com.open.", "match": "prefix",
         "allow": {"call": true, "register": true, "publish": true, "subscribe": true}},
        {"uri": "com.", "match": "prefix", "allow": {"call": true, "subscribe": true, "publish": true}},
        {"uri": "com..private", "match": "wildcard", "allow": {}},
        {"uri": "com.secret.", "match": "prefix", "allow": {"publish": true}},
        {"uri": "wamp.", "match": "prefix", "allow": {"call": true}}
    ]);
    push_transport(
        &mut cfg,
        json!({
            "type": "websocket",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": named},
            "auth": {"anonymous": {"type": "static", "role": "anonymous", "authid": "guest"}}
        }),
    );
    push_transport(
        &mut cfg,
        json!({
            "type": "websocket",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": ticket},
            "auth": {"ticket": {"type": "static", "principals": {
                "joe": {"ticket": "TICKET-7f3a9c-SECRET", "role": "anonymous"}}}}
        }),
    );
    let node = Node::start_with(&cfg, main, env, &[]);
    let urls = json!({
        "main": format!("ws://127.0.0.1:{main}/ws"),
        "named": format!("ws://127.0.0.1:{named}/ws"),
        "ticket": format!("ws://127.0.0.1:{ticket}/ws"),
    });
    (node, urls)
}

fn scenario(name: &str) {
    let (node, urls) = hostile_node();
    run(&node, &urls, name);
}

fn run(node: &Node, urls: &Value, name: &str) {
    let urls = urls.to_string();
    let out = expect_python_args_ok(node, "security.py", &[&urls, name, "json", "msgpack"]);
    for ser in ["json", "msgpack"] {
        assert!(
            out.contains(&format!("ok {name} {ser}")),
            "{name} did not pass with {ser}:\n{out}"
        );
    }
}

#[test]
fn pattern_registration_needs_a_covering_rule() {
    scenario("pattern_registration_needs_a_covering_rule");
}

#[test]
fn pattern_subscription_needs_a_covering_rule() {
    scenario("pattern_subscription_needs_a_covering_rule");
}

#[test]
fn anonymous_authid_is_never_the_clients() {
    scenario("anonymous_authid_is_never_the_clients");
}

#[test]
fn retained_events_keep_their_audience() {
    scenario("retained_events_keep_their_audience");
}

#[test]
fn wildcard_rule_decides_over_prefix() {
    scenario("wildcard_rule_decides_over_prefix");
}

#[test]
fn meta_kill_follows_the_specification() {
    scenario("meta_kill_follows_the_specification");
}

#[test]
fn secrets_stay_out_of_logs_at_trace_level() {
    let (node, urls) = hostile_node_with(&[("TRELLIS_LOG", "trace")]);
    run(&node, &urls, "secrets_stay_out_of_logs");
    let mut logs = node.log();
    for entry in std::fs::read_dir(node.node_dir().join("logs")).expect("the node's logs") {
        let path = entry.expect("a log file").path();
        logs.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
    }
    // The trace lines are there, with types, ids and sizes...
    assert!(
        logs.contains("received") && logs.contains("kind=\"CALL\"") && logs.contains("size="),
        "no trace line for a received CALL:\n{logs}"
    );
    // ...and nothing of what the client sent or got back.
    for secret in [
        "TICKET-7f3a9c-SECRET",
        "ARG-91bc-SECRET",
        "KWARG-44aa-SECRET",
        "RESULT-5d1e-SECRET",
        "EVENT-0e2f-SECRET",
    ] {
        assert!(!logs.contains(secret), "{secret} is in the log:\n{logs}");
    }
}

/// Limits that hold exactly: frames refused at their header, a binary
/// frame on JSON, URI length, a RawSocket client's own limit and the
/// connection limit's error octets; a bystander notices nothing.
#[test]
fn limits_hold_exactly() {
    let (ws, rs) = (free_port(), free_port());
    let mut cfg = router_config(ws);
    cfg["workers"][0]["transports"][0]["options"] =
        json!({"max_message_size": 65536, "max_frame_size": 1048576});
    push_transport(
        &mut cfg,
        json!({
            "type": "rawsocket",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": rs},
            "serializers": ["json"],
            "options": {"max_connections": 2}
        }),
    );
    let node = Node::start(&cfg, ws);
    let out = expect_python_args_ok(
        &node,
        "frame_limits.py",
        &[&ws.to_string(), &rs.to_string()],
    );
    assert!(out.contains("ok bystander unaffected"), "{out}");
}

/// A secret written as `${VAR}` is the variable's value, as in Crossbar.io;
/// the literal text is no ticket. An unset variable is a config error.
#[test]
fn secrets_may_come_from_the_environment() {
    let (main, envticket) = (free_port(), free_port());
    let mut cfg = router_config(main);
    push_transport(
        &mut cfg,
        json!({
            "type": "websocket",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": envticket},
            "auth": {"ticket": {"type": "static", "principals": {
                "joe": {"ticket": "${TRELLIS_TEST_TICKET}", "role": "anonymous"}}}}
        }),
    );
    let node = Node::start_with(
        &cfg,
        main,
        &[("TRELLIS_TEST_TICKET", "s3cr3t-from-env")],
        &[],
    );
    let urls = json!({
        "main": format!("ws://127.0.0.1:{main}/ws"),
        "envticket": format!("ws://127.0.0.1:{envticket}/ws"),
    });
    run(&node, &urls, "secrets_from_the_environment");
    assert!(!node.log().contains("s3cr3t-from-env"), "{}", node.log());
    drop(node);
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("node.json");
    std::fs::write(&p, serde_json::to_vec(&cfg).expect("json")).expect("write");
    let out = crate::support::trellis()
        .args(["check", "--config"])
        .arg(&p)
        .env_remove("TRELLIS_TEST_TICKET")
        .output()
        .expect("trellis check");
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("workers[0].transports[1].auth.ticket.principals.joe.ticket: names the environment variable TRELLIS_TEST_TICKET, which is not set"),
        "{err}"
    );
}

/// An empty secret is no secret: a `${VAR}` whose variable is set but
/// empty (systemd's `VAR=`, docker-compose's unset variable) and a literal
/// `""` or whitespace are config errors in `check` and `start`, naming the
/// key and the variable. Before, the node started and an empty ticket
/// logged in as the principal.
#[test]
fn empty_secrets_are_config_errors_in_check_and_start() {
    let (main, tickets) = (free_port(), free_port());
    let mut cfg = router_config(main);
    push_transport(
        &mut cfg,
        json!({
            "type": "websocket",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": tickets},
            "auth": {
                "ticket": {"type": "static", "principals": {
                    "joe": {"ticket": "${TRELLIS_TEST_EMPTY}", "role": "anonymous"},
                    "ann": {"ticket": "", "role": "anonymous"}}},
                "wampcra": {"type": "static", "users": {
                    "bob": {"secret": " ", "role": "anonymous"}}}}
        }),
    );
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("node.json");
    std::fs::write(&p, serde_json::to_vec(&cfg).expect("json")).expect("write");
    let expect = |out: std::process::Output, what: &str| {
        assert_eq!(out.status.code(), Some(78), "{what}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        for needle in [
            "workers[0].transports[1].auth.ticket.principals.joe.ticket: names the environment variable TRELLIS_TEST_EMPTY, which is set but empty",
            "workers[0].transports[1].auth.ticket.principals.ann.ticket: must not be empty",
            "workers[0].transports[1].auth.wampcra.principals.bob.secret: must not be empty",
        ] {
            assert!(err.contains(needle), "{what}: no {needle:?} in\n{err}");
        }
    };
    let check = crate::support::trellis()
        .args(["check", "--config"])
        .arg(&p)
        .env("TRELLIS_TEST_EMPTY", "")
        .output()
        .expect("trellis check");
    expect(check, "check");
    let start = crate::support::trellis()
        .args(["start", "--config"])
        .arg(&p)
        .env("TRELLIS_TEST_EMPTY", "")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("trellis start");
    expect(start, "start");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", tickets)).is_err(),
        "the node must not serve with an empty secret"
    );
}

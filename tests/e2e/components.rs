//! Container components: the built-in balloon backend in a container
//! worker, joined over the router's Unix socket with peer credentials,
//! called by autobahn-python; its crash and the router's.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::support::{Node, free_port, router_config, run_python};

fn balloon_node(port: u16) -> Value {
    let mut cfg = router_config(port);
    let uid = nix::unistd::getuid().as_raw().to_string();
    let router = &mut cfg["workers"][0];
    router["realms"][0]["roles"]
        .as_array_mut()
        .expect("roles")
        .push(json!({"name": "backend", "permissions": [
            {"uri": "com.balloon.", "match": "prefix", "allow": {"register": true}}
        ]}));
    router["transports"]
        .as_array_mut()
        .expect("transports")
        .push(json!({
            "type": "rawsocket",
            "endpoint": {"type": "unix", "path": "router1.sock"},
            "auth": {"peercred": {"principals": {uid: {"role": "backend", "authid": "karina"}}}}
        }));
    cfg["workers"].as_array_mut().expect("workers").push(json!({
        "type": "container",
        "id": "container1",
        "options": {"restart": {"backoff_initial": 0.05}},
        "components": [{
            "type": "class",
            "classname": "trellis.balloon.Backend",
            "realm": "realm1",
            "transport": {"type": "rawsocket", "endpoint": {"type": "unix", "path": "router1.sock"}, "serializer": "msgpack"}
        }]
    }));
    cfg
}

fn status(node: &Node) -> Value {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["status", "--json", "--node-dir"])
        .arg(node.node_dir())
        .output()
        .expect("status");
    serde_json::from_slice(&out.stdout).expect("json")
}

fn pid(s: &Value, id: &str) -> i32 {
    s["workers"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["id"] == id))
        .and_then(|w| w["pid"].as_i64())
        .unwrap_or_else(|| panic!("no pid for {id}: {s}")) as i32
}

fn pop(node: &Node) -> Value {
    let out = run_python(
        "node_peer.py",
        &["call", &node.url(), "com.balloon.pop", "20", "[2, 3]"],
        Duration::from_secs(40),
    );
    assert!(
        out.status.success(),
        "{}\n{}\n--- node log\n{}",
        out.stdout,
        out.stderr,
        node.log()
    );
    serde_json::from_str(out.stdout.trim()).expect("json")
}

#[test]
fn balloon_backend_survives_its_crash_and_the_routers() {
    let port = free_port();
    let node = Node::start(&balloon_node(port), port);
    assert_eq!(pop(&node), json!(5));
    let log =
        std::fs::read_to_string(node.node_dir().join("logs/container1.log")).unwrap_or_default();
    assert!(log.contains("component joined"), "{log}");

    // kill -9 of the container while a caller pops in a loop: only calls in
    // the restart window fail, each with a clear error; the router stays.
    let s = status(&node);
    let router = pid(&s, "router1");
    let container = pid(&s, "container1");
    let stop = node.dir.path().join("stop-loop");
    let (url, stopfile) = (node.url(), stop.display().to_string());
    let caller = std::thread::spawn(move || {
        run_python(
            "node_peer.py",
            &["loop", &url, "com.balloon.pop", "[2, 3]", &stopfile],
            Duration::from_secs(60),
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    kill(Pid::from_raw(container), Signal::SIGKILL).expect("kill container");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status(&node);
        let back = s["workers"].as_array().is_some_and(|w| {
            w.iter()
                .any(|w| w["id"] == "container1" && w["state"] == "running" && w["restarts"] == 1)
        });
        if back {
            break;
        }
        assert!(Instant::now() < deadline, "container never came back: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1000));
    std::fs::write(&stop, b"").expect("stop file");
    let out = caller.join().expect("caller");
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let summary: Value = serde_json::from_str(out.stdout.trim()).expect("json");
    assert_eq!(summary["last_ok"], true, "calls succeed again: {summary}");
    assert_eq!(summary["attached"], true, "{summary}");
    let errors = summary["errors"].as_object().expect("errors");
    assert!(
        errors
            .keys()
            .all(|k| k == "wamp.error.no_such_procedure" || k == "wamp.error.canceled"),
        "only clear errors: {summary}"
    );
    assert!(summary["ok"].as_u64() > Some(10), "{summary}");
    assert_eq!(
        pid(&status(&node), "router1"),
        router,
        "the router was never restarted"
    );

    // kill -9 of the router: the component reconnects and registers again
    // by itself; its container is not restarted.
    kill(Pid::from_raw(router), Signal::SIGKILL).expect("kill router");
    assert_eq!(pop(&node), json!(5));
    let s = status(&node);
    let c = s["workers"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["id"] == "container1"))
        .expect("container");
    assert_eq!(c["restarts"], 1, "only the earlier kill: {s}");
    let log =
        std::fs::read_to_string(node.node_dir().join("logs/container1.log")).unwrap_or_default();
    assert!(
        log.contains("component session ended; reconnecting"),
        "{log}"
    );
}

/// The balloon flow: a router component (the user database) answers the
/// WebSocket transport's dynamic WAMP-CRA, rewrites the authid and adds
/// `extra`; the container component serves com.balloon.pop.
#[test]
fn router_component_authenticates_and_container_component_serves() {
    let port = free_port();
    let mut cfg = balloon_node(port);
    let router = &mut cfg["workers"][0];
    router["realms"][0]["roles"]
        .as_array_mut()
        .expect("roles")
        .extend([
            json!({"name": "authenticator", "permissions": [
                {"uri": "com.balloon.authenticate", "allow": {"register": true}}]}),
            json!({"name": "balloonpopper", "permissions": [
                {"uri": "com.balloon.pop", "allow": {"call": true}}]}),
        ]);
    router["transports"][0]["auth"] = json!({
        "wampcra": {"type": "dynamic", "authenticator": "com.balloon.authenticate"},
        "ticket": {"type": "dynamic", "authenticator": "com.balloon.authenticate"}
    });
    router["components"] = json!([{
        "type": "class",
        "classname": "trellis.auth.UserDatabase",
        "realm": "realm1",
        "role": "authenticator",
        "extra": {
            "procedure": "com.balloon.authenticate",
            "users": {
                "ingemar": {"secret": "secret123", "salt": "salt123", "iterations": 100, "keylen": 16,
                            "role": "balloonpopper", "authid": "ID09125", "extra": {"greeting": "hej"}}
            },
            "users_file": "users.json"
        }
    }]);
    // The users file lives in the node directory, where relative paths start.
    let node = Node::start_with_files(
        &cfg,
        port,
        &[(
            "users.json",
            r#"{"peter": {"secret": "peter-secret", "role": "balloonpopper"}}"#,
        )],
    );
    let out = crate::support::expect_python_args_ok(&node, "balloon_login.py", &[&node.url()]);
    for want in [
        "ingemar popped 5",
        "balloonpopper may not call the authenticator",
        "peter logged in with a ticket",
        "wrong password and unknown user refused",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
}

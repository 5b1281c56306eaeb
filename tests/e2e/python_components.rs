//! Python components by classname in container workers, as Crossbar.io
//! runs them: asyncio and Twisted classes, over WebSocket and RawSocket,
//! with `options.pythonpath` and `options.python`; a crash restarts only
//! its own container.

use serde_json::json;

use crate::node::{wait_status, worker};
use crate::support::{
    Node, check_json, expect_python_args_ok, expect_python_ok, free_port, python, repo_root,
};

/// A worker's `options` for the test components: their directory on the
/// Python path, the test venv's interpreter.
fn python_options() -> serde_json::Value {
    json!({"pythonpath": [repo_root().join("tests/py/components").display().to_string()],
           "python": python().display().to_string()})
}

fn config(ws: u16, rs: u16) -> serde_json::Value {
    let components_dir = repo_root()
        .join("tests/py/components")
        .display()
        .to_string();
    let python = python().display().to_string();
    let container = |id: &str, components: serde_json::Value| {
        json!({"type": "container", "id": id,
               "options": {"pythonpath": [components_dir], "python": python,
                           "restart": {"backoff_initial": 0.05}},
               "components": components})
    };
    let websocket = json!({"type": "websocket", "endpoint": {"type": "tcp", "host": "127.0.0.1", "port": ws},
                           "url": format!("ws://127.0.0.1:{ws}/ws"), "serializers": ["json"]});
    let rawsocket = json!({"type": "rawsocket", "endpoint": {"type": "tcp", "host": "127.0.0.1", "port": rs},
                           "serializer": "msgpack"});
    json!({"version": 2, "workers": [
        {"type": "router", "id": "router1",
         "realms": [{"name": "realm1", "roles": [{"name": "anonymous", "permissions": [
             {"uri": "", "match": "prefix",
              "allow": {"call": true, "register": true, "publish": true, "subscribe": true}}]}]}],
         "transports": [
             {"type": "websocket", "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": ws}},
             {"type": "rawsocket", "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": rs}},
             {"type": "rawsocket", "endpoint": {"type": "unix", "path": "router1.sock"}}]},
        container("adder", json!([{"type": "class", "classname": "app.Adder", "realm": "realm1",
                                   "extra": {"offset": 10}, "transport": websocket}])),
        container("greeter", json!([{"type": "class", "classname": "twisted_app.Greeter", "realm": "realm1",
                                     "transport": rawsocket}])),
        // No transport: the router's Unix socket.
        container("crasher", json!([{"type": "class", "classname": "app.Crasher", "realm": "realm1"}]))
    ]})
}

#[test]
fn python_components_run_answer_and_crash_alone() {
    let (ws, rs) = (free_port(), free_port());
    let cfg = config(ws, rs);
    let out = check_json(&cfg);
    assert!(out.status.success(), "{out:?}");

    let node = Node::start(&cfg, ws);
    wait_status(&node, "every container running", |s| {
        ["adder", "greeter", "crasher"]
            .iter()
            .all(|id| worker(s, id)["state"] == "running")
    });
    let url = node.url();
    let out = expect_python_args_ok(&node, "scenarios.py", &[&url, "python_components", "json"]);
    assert!(out.contains("ok python_components json"), "{out}");
    let s = wait_status(&node, "the crasher restarted once", |s| {
        worker(s, "crasher")["restarts"] == 1 && worker(s, "crasher")["state"] == "running"
    });
    assert_eq!(
        worker(&s, "adder")["restarts"],
        0,
        "the others never noticed"
    );
    assert_eq!(worker(&s, "greeter")["restarts"], 0);
    let log = node.worker_log("crasher");
    assert!(
        log.contains("Crasher: exiting the interpreter on purpose"),
        "{log}"
    );
    assert!(
        log.contains("the Python components' interpreter ended"),
        "{log}"
    );
    let adder = node.worker_log("adder");
    assert!(
        adder.contains("Adder joined realm1"),
        "stdout goes to the worker's log: {adder}"
    );
}

/// kill -9 of a component's interpreter, then of its container worker:
/// the other containers' components answer throughout and are never
/// restarted; the killed container comes back with a fresh interpreter
/// (the old one does not linger with its registrations).
#[test]
fn kill_9_of_an_interpreter_or_a_container_spares_the_others() {
    let (ws, rs) = (free_port(), free_port());
    let node = Node::start(&config(ws, rs), ws);
    wait_status(&node, "every container running", |s| {
        ["adder", "greeter", "crasher"]
            .iter()
            .all(|id| worker(s, id)["state"] == "running")
    });
    let out = expect_python_args_ok(
        &node,
        "scenarios.py",
        &[&node.url(), "kill9_spares_the_others", "json"],
    );
    assert!(out.contains("ok kill9_spares_the_others json"), "{out}");
    let s = wait_status(&node, "the crasher restarted twice", |s| {
        worker(s, "crasher")["restarts"] == 2 && worker(s, "crasher")["state"] == "running"
    });
    for id in ["adder", "greeter"] {
        assert_eq!(worker(&s, id)["restarts"], 0, "{id}: {s}");
    }
}

#[test]
fn a_python_component_that_cannot_load_is_named() {
    let (ws, rs) = (free_port(), free_port());
    let mut cfg = config(ws, rs);
    // Importable (so check passes) but not an ApplicationSession.
    cfg["workers"][1]["components"][0]["classname"] = json!("app.NotASession");
    cfg["workers"][1]["options"]["restart"] = json!({"policy": "never"});
    let node = Node::start(&cfg, ws);
    let s = wait_status(&node, "the adder container stopped", |s| {
        worker(s, "adder")["state"] == "stopped" && worker(s, "adder")["last_exit"].is_string()
    });
    assert!(
        worker(&s, "adder")["last_exit"]
            .as_str()
            .is_some_and(|e| e.contains("status 1")),
        "{s}"
    );
    let log = node.worker_log("adder");
    assert!(
        log.contains("app.NotASession: not an autobahn ApplicationSession"),
        "{log}"
    );
    assert_eq!(worker(&s, "greeter")["state"], "running", "{s}");
}

#[test]
fn check_names_what_python_components_lack() {
    let (ws, rs) = (free_port(), free_port());
    let mut cfg = config(ws, rs);
    // A missing module, a missing class, a missing interpreter, and a
    // Python without autobahn.
    cfg["workers"][1]["components"][0]["classname"] = json!("no_such_module.App");
    cfg["workers"][3]["components"][0]["classname"] = json!("app.Missing");
    // Crossbar.io's own class under its pre-2017 name.
    cfg["workers"][1]["components"]
        .as_array_mut()
        .expect("components")
        .push(
            json!({"type": "class", "classname": "crossbar.adapter.rest.RESTCallee",
                     "realm": "realm1", "extra": {"procedure": "com.myapp.rest"}}),
        );
    cfg["workers"][2]["options"]["python"] = json!("/nonexistent/bin/python");
    cfg["workers"].as_array_mut().expect("workers").push(json!({
        "type": "container", "id": "bare",
        "options": {"python": "/usr/bin/python3"},
        "components": [{"type": "class", "classname": "app.Adder", "realm": "realm1",
                        "transport": {"type": "rawsocket", "endpoint": {"type": "tcp", "port": rs}}}]
    }));
    let out = check_json(&cfg);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "workers[1].components[0].classname: \"no_such_module.App\": cannot import 'no_such_module'",
        "workers[2].options.python: the Python interpreter \"/nonexistent/bin/python\" cannot be run",
        "workers[3].components[0].classname: \"app.Missing\": module 'app' has no 'Missing'",
        "workers[1].components[1].classname: \"crossbar.adapter.rest.RESTCallee\": cannot import 'crossbar.adapter",
        "it is one of Crossbar.io's own classes, which run as they are with Crossbar.io installed: `",
        " -m pip install crossbar` (its REST bridge lives in crossbar.bridge.rest since 2017)",
        "workers[4].options.python: autobahn is not importable in \"/usr/bin/python3\"",
        "install it with `/usr/bin/python3 -m pip install 'autobahn[asyncio]'`",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn crossbar_restart_and_shutdown_modes() {
    let (ws, rs) = (free_port(), free_port());
    let mut cfg = config(ws, rs);
    // adder: leaves by itself, stops cleanly and stays stopped.
    cfg["workers"][1]["components"][0]["classname"] = json!("app.Leaver");
    cfg["workers"][1]["options"]["restart"] = json!("restart-on-failed");
    cfg["workers"][1]["options"]["shutdown"] = json!("shutdown-on-any-component-stopped");
    // crasher: onJoin raises, fails and is not restarted.
    cfg["workers"][3]["components"][0]["classname"] = json!("app.BadJoin");
    cfg["workers"][3]["options"]["restart"] = json!("restart-never");
    cfg["workers"][3]["options"]["shutdown"] = json!("shutdown-on-any-component-failed");
    let node = Node::start(&cfg, ws);
    // Slots are "stopped" before they first start, too: wait for an exit.
    let s = wait_status(&node, "both ended", |s| {
        ["adder", "crasher"]
            .iter()
            .all(|id| worker(s, id)["state"] == "stopped" && worker(s, id)["last_exit"].is_string())
    });
    assert_eq!(
        worker(&s, "adder")["last_exit"],
        "exited with status 0",
        "{s}"
    );
    assert_eq!(worker(&s, "adder")["restarts"], 0, "{s}");
    assert_eq!(
        worker(&s, "crasher")["last_exit"],
        "exited with status 1",
        "{s}"
    );
    assert_eq!(worker(&s, "greeter")["state"], "running", "{s}");
    let log = node.worker_log("crasher");
    assert!(log.contains("app.BadJoin.onJoin raised"), "{log}");
    assert!(
        log.contains("RuntimeError: BadJoin cannot start: the database is gone"),
        "{log}"
    );
    assert!(log.contains("component app.BadJoin failed"), "{log}");
    let log = node.worker_log("adder");
    assert!(log.contains("component app.Leaver stopped"), "{log}");

    // check refuses what Crossbar.io refuses.
    let mut bad = config(ws, rs);
    bad["workers"][1]["options"]["restart"] = json!("restart-always");
    bad["workers"][1]["options"]["shutdown"] = json!("shutdown-on-last-component-stopped");
    bad["workers"][3]["options"]["restart"] = json!("restart-sometimes");
    bad["workers"][2]["options"]["shutdown"] = json!("shutdown-later");
    // The crasher has no transport, and now no Unix socket to fall back on.
    bad["workers"][0]["transports"]
        .as_array_mut()
        .expect("transports")
        .pop();
    let out = check_json(&bad);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "workers[1].options.shutdown: \"shutdown-on-last-component-stopped\" does not go with restart policy",
        "workers[3].options.restart: unknown restart mode \"restart-sometimes\"",
        "workers[2].options.shutdown: unknown shutdown mode \"shutdown-later\"",
        "workers[3].components[0].transport: missing, and no router with realm \"realm1\" listens on a Unix socket",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

/// A router whose Python router component `authenticator.AuthenticatorSession`
/// (its `extra` given) authenticates ticket logins on a WebSocket on `port`.
fn python_authenticator_router(port: u16, extra: serde_json::Value) -> serde_json::Value {
    json!({"version": 2, "workers": [{
        "type": "router", "id": "router1",
        "options": python_options(),
        "realms": [{"name": "realm1", "roles": [
            {"name": "authenticator", "permissions": [
                {"uri": "com.example.authenticate", "allow": {"register": true}}]},
            {"name": "user", "permissions": [
                {"uri": "com.example.", "match": "prefix", "allow": {"call": true}}]}]}],
        // No transport: it joins in the node. No role would be anonymous.
        "components": [{"type": "class", "classname": "authenticator.AuthenticatorSession",
                        "realm": "realm1", "role": "authenticator", "extra": extra}],
        "transports": [{"type": "websocket",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port},
            "auth": {"ticket": {"type": "dynamic", "authenticator": "com.example.authenticate"}}}]
    }]})
}

/// joe logs in with his ticket through `authenticator.AuthenticatorSession`
/// (autobahn-python), and a wrong ticket is refused.
fn ticket_login_via_python_authenticator(node: &Node) {
    let out = expect_python_ok(
        node,
        "scenarios.py",
        &["ticket_via_python_authenticator", "json"],
    );
    assert!(
        out.contains("ok ticket_via_python_authenticator json"),
        "{out}"
    );
}

#[test]
fn a_python_router_component_authenticates_ticket_logins() {
    let port = free_port();
    let cfg = python_authenticator_router(port, json!({"name": "py-auth"}));
    let out = check_json(&cfg);
    assert!(out.status.success(), "{out:?}");
    // The router reports ready only once its Python component has joined,
    // so the very first login finds the authenticator.
    let node = Node::start(&cfg, port);
    wait_status(&node, "the router running", |s| {
        worker(s, "router1")["state"] == "running"
    });
    ticket_login_via_python_authenticator(&node);
    let log = node.worker_log("router1");
    assert!(
        log.contains("AuthenticatorSession joined realm1 as authenticator"),
        "{log}"
    );
    let status = crate::node::status(&node.node_dir());
    assert!(
        !status.to_string().contains(".trellis-router1-component"),
        "the private socket is nobody's business: {status}"
    );
}

/// The balloon example as the seed writes it: a Python authenticator as a
/// router component, a Python backend in a container over WebSocket with
/// WAMP-CRA, driven by autobahn-js and by its page in headless Chromium.
#[test]
fn the_python_balloon_example_runs_as_the_seed_writes_it() {
    let example = repo_root().join("examples/balloon-python");
    let venv = python()
        .parent()
        .and_then(|bin| bin.parent())
        .expect("the venv")
        .display()
        .to_string();
    // As shipped: check finds .crossbar/config.json with --cbdir.
    let out = crate::support::trellis()
        .args(["check", "--cbdir"])
        .arg(example.join(".crossbar"))
        .env("VIRTUAL_ENV", &venv)
        .output()
        .expect("run check");
    assert!(out.status.success(), "{out:?}");

    let text = std::fs::read_to_string(example.join(".crossbar/config.json")).expect("config");
    let mut cfg: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let port = free_port();
    let dir = example.display().to_string();
    let router = &mut cfg["workers"][0];
    router["options"]["pythonpath"] = json!([dir]);
    router["transports"][0]["endpoint"]["port"] = json!(port);
    router["transports"][0]["paths"]["/"]["directory"] =
        json!(repo_root().join("web").display().to_string());
    let container = &mut cfg["workers"][1];
    container["options"]["pythonpath"] = json!([dir]);
    let transport = &mut container["components"][0]["transport"];
    transport["endpoint"]["port"] = json!(port);
    transport["url"] = json!(format!("ws://127.0.0.1:{port}/ws"));
    let node = Node::start_with(&cfg, port, &[("VIRTUAL_ENV", venv.as_str())], &[]);
    wait_status(&node, "the container running", |s| {
        worker(s, "worker-002")["state"] == "running"
    });
    let url = node.url();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let out = loop {
        // The container's App registers pop shortly after the node is up.
        let (ok, out) = crate::support::node_js("balloon.mjs", &[&url, "123456"]);
        if ok || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    for want in [
        "joined as ID09125 (balloonpopper)",
        "com.balloon.pop(2, 3) = 5",
        "authenticator refused: wamp.error.not_authorized",
        "wrong password: ",
    ] {
        assert!(
            out.contains(want),
            "{want:?} missing:\n{out}\n--- node log\n{}",
            node.log()
        );
    }
    // And the page, in headless Chromium, as the seed has it opened.
    let page = format!("http://127.0.0.1:{port}/");
    let (ok, out) = crate::support::node_js("page.mjs", &[&page, "123456"]);
    assert!(ok, "{out}\n--- node log\n{}", node.log());
    assert!(out.contains("result: 42"), "{out}");
    assert!(
        out.contains("refused: closed: wamp.error.authentication_failed"),
        "{out}"
    );
    let router_log = node.worker_log("worker-001");
    assert!(
        router_log.contains("[authenticator] WAMP-CRA dynamic authenticator registered"),
        "{router_log}"
    );
    assert!(router_log.contains("authid='ingemar'"), "{router_log}");
    let container_log = node.worker_log("worker-002");
    assert!(
        container_log.contains("[balloon] pop() registered"),
        "{container_log}"
    );
    assert!(
        container_log.contains("[balloon] pop() called with 2 and 3"),
        "{container_log}"
    );
}

#[test]
fn function_components_call_their_callbacks() {
    let (ws, rs) = (free_port(), free_port());
    let mut cfg = config(ws, rs);
    cfg["workers"][1]["components"] = json!([{
        "type": "function", "realm": "realm1",
        "callbacks": {"join": "functions.on_join", "leave": "functions.on_leave"},
        "transport": {"type": "websocket", "endpoint": {"type": "tcp", "host": "127.0.0.1", "port": ws},
                      "url": format!("ws://127.0.0.1:{ws}/ws")}
    }]);
    let node = Node::start(&cfg, ws);
    wait_status(&node, "the function container running", |s| {
        worker(s, "adder")["state"] == "running"
    });
    let out = expect_python_ok(&node, "scenarios.py", &["function_component", "json"]);
    assert!(out.contains("ok function_component json"), "{out}");
    let log = node.worker_log("adder");
    assert!(log.contains("on_join called for realm1"), "{log}");

    // check names a missing function and a malformed component.
    let mut bad = config(ws, rs);
    bad["workers"][1]["components"] = json!([
        {"type": "function", "realm": "realm1", "callbacks": {"join": "functions.nope"},
         "transport": {"type": "rawsocket", "endpoint": {"type": "tcp", "port": rs}}}
    ]);
    bad["workers"][3]["components"] = json!([
        {"type": "function", "realm": "realm1", "callbacks": {"joined": "nodot"},
         "transport": {"type": "rawsocket", "endpoint": {"type": "tcp", "port": rs}}}
    ]);
    let out = check_json(&bad);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "workers[3].components[0].callbacks.joined: unknown callback: expected join, leave, connect or disconnect",
        "workers[3].components[0].callbacks.joined: \"nodot\": a function is named as module.function",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    // Structure first: the import check runs once the config is sound.
    let mut bad = config(ws, rs);
    bad["workers"][1]["components"] = json!([
        {"type": "function", "realm": "realm1", "callbacks": {"join": "functions.nope"},
         "transport": {"type": "rawsocket", "endpoint": {"type": "tcp", "port": rs}}}
    ]);
    let out = check_json(&bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("workers[1].components[0].callbacks.join: \"functions.nope\": module 'functions' has no 'nope'"),
        "{err}"
    );
}

/// A router with Python options whose role `frontend` may do anything,
/// with one `transport`.
fn frontend_router(transport: serde_json::Value) -> serde_json::Value {
    json!({"version": 2, "workers": [{
        "type": "router", "id": "router1",
        "options": python_options(),
        "realms": [{"name": "realm1", "roles": [
            {"name": "frontend", "permissions": [
                {"uri": "", "match": "prefix",
                 "allow": {"call": true, "register": true, "publish": true, "subscribe": true}}]}]}],
        "transports": [transport]
    }]})
}

/// Crossbar.io's function authenticators (`"type": "function"`,
/// `"create"`), on a web transport's WebSocket path, run by the router's
/// Python interpreter.
#[test]
fn function_authenticators_log_users_in() {
    let port = free_port();
    let cfg = frontend_router(json!({"type": "web",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port},
            "paths": {"ws": {"type": "websocket", "auth": {
                "wampcra": {"type": "function", "create": "function_auth.create_cra_authenticator",
                            "expose_controller": true,
                            "config": {"dbname": "foo", "users": {"client1": "secret123"}}},
                "ticket": {"type": "function", "create": "function_auth.create_ticket_authenticator",
                           "config": {"tickets": {"joe": "tk"}}}}}}}));
    let out = check_json(&cfg);
    assert!(out.status.success(), "{out:?}");
    let node = Node::start(&cfg, port);
    wait_status(&node, "the router running", |s| {
        worker(s, "router1")["state"] == "running"
    });
    let out = expect_python_ok(
        &node,
        "scenarios.py",
        &["function_authenticators", "json", "msgpack"],
    );
    assert!(out.contains("ok function_authenticators msgpack"), "{out}");
    let log = node.worker_log("router1");
    assert!(
        log.contains("function authenticator function_auth.create_cra_authenticator ready for transports[0].paths.ws.auth.wampcra"),
        "{log}"
    );
    assert!(
        log.contains("WAMP-CRA function authenticator asked for 'client1' in 'realm1'"),
        "{log}"
    );
    let status = crate::node::status(&node.node_dir()).to_string();
    assert!(
        !status.contains("trellis.internal") && !status.contains("authenticators.sock"),
        "the router's own realm and socket stay out of status: {status}"
    );

    // check imports each `create`, and names the key of the one it cannot.
    let mut bad = cfg.clone();
    bad["workers"][0]["transports"][0]["paths"]["ws"]["auth"]["ticket"]["create"] =
        json!("function_auth.missing");
    let out = check_json(&bad);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("workers[0].transports[0].paths.ws.auth.ticket.create: \"function_auth.missing\": module 'function_auth' has no 'missing'"),
        "{err}"
    );
    // The router's own realm names are not for configs.
    let mut bad = cfg.clone();
    bad["workers"][0]["realms"][0]["name"] = json!("trellis.internal.mine");
    let out = check_json(&bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("workers[0].realms[0].name: realm names starting with \"trellis.internal.\" are the router's own"),
        "{err}"
    );
}

/// A node directory long enough that an absolute path to a router
/// component's private socket would pass the 107 bytes Unix sockets allow:
/// the component joins all the same (its socket path is relative to the
/// node directory). Longer still, where even the control socket cannot
/// fit, the node refuses to start with a message naming the path and the
/// limit. Before, the router silently never became ready.
#[test]
fn long_node_directories_keep_private_sockets_working() {
    let port = free_port();
    let cfg = python_authenticator_router(port, json!({"name": "py-auth"}));
    let dir = tempfile::tempdir().expect("tmp");
    let config = dir.path().join("config.json");
    std::fs::write(&config, serde_json::to_vec(&cfg).expect("json")).expect("write");
    let base = dir.path().canonicalize().expect("canonical");
    let base_len = base.as_os_str().len();
    // The socket `.trellis-router1-component0.sock` (32 bytes) no longer
    // fits beside this node directory; the control socket still does.
    let long = base.join("n".repeat(90 - base_len));
    let out = crate::support::trellis_in("start", &config, &long)
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    let _node = crate::support::KillOnDrop(out);
    crate::support::wait_port(port, "the router");
    let status = (0..200)
        .find_map(|_| {
            let s = crate::support::trellis()
                .args(["status", "--json", "--node-dir"])
                .arg(&long)
                .output()
                .expect("trellis status");
            let v: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap_or_default();
            if v["workers"][0]["state"] == "running" {
                return Some(v);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            None
        })
        .expect("the router became ready");
    assert_eq!(status["workers"][0]["id"], "router1");
    let out = crate::support::run_python(
        "scenarios.py",
        &[
            &format!("ws://127.0.0.1:{port}/ws"),
            "ticket_via_python_authenticator",
            "json",
        ],
        std::time::Duration::from_secs(60),
    );
    assert!(
        out.stdout
            .contains("ok ticket_via_python_authenticator json"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    // Too long even for the control socket: refused, saying why.
    let longer = base.join("m".repeat(110 - base_len));
    let out = crate::support::trellis_in("start", &config, &longer)
        .output()
        .expect("start");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("too long for a Unix socket path (at most 107)")
            && err.contains("control.sock"),
        "{err}"
    );
}

/// Router components before transports, as Crossbar.io starts them: a
/// client that connects while the Python authenticator is still joining
/// (its onJoin takes 2 s) waits, and is then authenticated, instead of
/// being refused with "authenticator ... is not registered".
#[test]
fn no_client_is_admitted_before_the_router_components_have_joined() {
    let port = free_port();
    let cfg = python_authenticator_router(port, json!({"name": "py-auth", "delay": 2}));
    // Node::start returns as soon as the port is bound: the kernel takes
    // the connection into the backlog while the component is joining.
    let node = Node::start(&cfg, port);
    ticket_login_via_python_authenticator(&node);
    let log = node.log();
    assert!(!log.contains("is not registered"), "{log}");
}

/// A function authenticator module that makes its txaio logger at import
/// (`log = txaio.make_logger()` at the top, as Crossbar.io users write
/// them) is checked and run: Twisted is chosen first, as in Crossbar.io's
/// workers. Before, `check` refused it with "To use txaio, you must first
/// select a framework".
#[test]
fn an_authenticator_that_logs_at_import_is_taken() {
    let port = free_port();
    let cfg = frontend_router(json!({"type": "websocket",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port},
            "auth": {"ticket": {"type": "function", "create": "logged_auth.create_authenticator",
                                "config": {"tickets": {"joe": "secret"}}}}}));
    let out = check_json(&cfg);
    assert!(out.status.success(), "{out:?}");
    let node = Node::start(&cfg, port);
    let out = expect_python_ok(&node, "scenarios.py", &["ticket_login_frontend", "json"]);
    assert!(out.contains("ok ticket_login_frontend json"), "{out}");
}

/// Crossbar.io's default for component failures (`shutdown-manual`): a
/// component whose onJoin raises is logged and stays down, the container
/// and its other components run on, and nothing is restarted.
#[test]
fn a_failed_component_stays_down_and_its_container_runs_on() {
    let (ws, rs, admin) = (free_port(), free_port(), free_port());
    let mut cfg = config(ws, rs);
    cfg["controller"] = json!({"admin": {"endpoint": {"type": "tcp", "port": admin}}});
    // The adder's container gets a second component that fails.
    cfg["workers"][1]["components"]
        .as_array_mut()
        .expect("components")
        .push(json!({"type": "class", "classname": "app.BadJoin", "realm": "realm1",
                     "transport": {"type": "websocket", "endpoint": {"type": "tcp", "host": "127.0.0.1", "port": ws},
                                   "url": format!("ws://127.0.0.1:{ws}/ws"), "serializers": ["json"]}}));
    let node = Node::start(&cfg, ws);
    wait_status(&node, "the adder's container running", |s| {
        worker(s, "adder")["state"] == "running"
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !node
        .worker_log("adder")
        .contains("component app.BadJoin failed")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{}",
            node.worker_log("adder")
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = expect_python_args_ok(
        &node,
        "scenarios.py",
        &[&node.url(), "python_components", "json"],
    );
    assert!(out.contains("ok python_components json"), "{out}");
    let s = crate::node::status(&node.node_dir());
    assert_eq!(worker(&s, "adder")["state"], "running", "{s}");
    assert_eq!(worker(&s, "adder")["restarts"], 0, "{s}");
    let log = node.worker_log("adder");
    assert!(
        log.contains("RuntimeError: BadJoin cannot start: the database is gone"),
        "{log}"
    );
    // The failed component shows in `trellis status`, /status and metrics.
    let adder = worker(&s, "adder");
    let states: Vec<(String, String)> = adder["components"]
        .as_array()
        .unwrap_or_else(|| panic!("no components in {s}"))
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or("").to_owned(),
                c["state"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert!(
        states.contains(&("app.Adder".into(), "running".into())),
        "{states:?}"
    );
    assert!(
        states.contains(&("app.BadJoin".into(), "failed".into())),
        "{states:?}"
    );
    let table = crate::support::trellis()
        .args(["status", "--node-dir"])
        .arg(node.node_dir())
        .output()
        .expect("status");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("components of adder:") && table.contains("app.BadJoin FAILED"),
        "{table}"
    );
    let (code, text) = crate::admin::get(admin, "/metrics", &[]);
    assert_eq!(code, 200);
    assert_eq!(
        crate::admin::metric(
            &text,
            "trellis_component_up{worker=\"adder\",component=\"app.BadJoin\"}"
        ),
        0.0
    );
    assert_eq!(
        crate::admin::metric(
            &text,
            "trellis_component_up{worker=\"adder\",component=\"app.Adder\"}"
        ),
        1.0
    );
    let (_, doc) = crate::admin::get(admin, "/status", &[]);
    assert!(
        doc.contains("\"app.BadJoin\"") && doc.contains("\"failed\""),
        "{doc}"
    );
}

/// Router components as Crossbar.io handles their failures: one whose
/// onJoin raises is logged and down while the router serves on; one whose
/// constructor raises fails the router's start at once, naming it (before,
/// nothing was logged and the node gave up after startup_timeout).
#[test]
fn router_component_failures_as_crossbar_handles_them() {
    let port = free_port();
    let mut cfg = python_authenticator_router(port, json!({"name": "py-auth"}));
    cfg["workers"][0]["components"]
        .as_array_mut()
        .expect("components")
        .push(
            json!({"type": "class", "classname": "app.BadJoin", "realm": "realm1", "role": "user"}),
        );
    let node = Node::start(&cfg, port);
    ticket_login_via_python_authenticator(&node);
    let log = node.worker_log("router1");
    assert!(
        log.contains("app.BadJoin.onJoin raised") && log.contains("the database is gone"),
        "{log}"
    );
    let s = crate::node::status(&node.node_dir());
    assert_eq!(worker(&s, "router1")["state"], "running", "{s}");
    assert_eq!(worker(&s, "router1")["restarts"], 0, "{s}");
    let components = worker(&s, "router1")["components"].to_string();
    assert!(
        components.contains(r#"{"name":"app.BadJoin","state":"failed"}"#)
            && components
                .contains(r#"{"name":"authenticator.AuthenticatorSession","state":"running"}"#),
        "{s}"
    );
    drop(node);

    cfg["workers"][0]["components"][1]["classname"] = json!("app.BadInit");
    cfg["workers"][0]["options"]["restart"] = json!({"max_restarts": 0});
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("config.json");
    std::fs::write(&path, serde_json::to_vec(&cfg).expect("json")).expect("write");
    let started = std::time::Instant::now();
    let out = crate::support::trellis_in("start", &path, dir.path().join("node"))
        .output()
        .expect("start");
    let took = started.elapsed();
    assert!(!out.status.success());
    assert!(took < std::time::Duration::from_secs(15), "took {took:?}");
    let log = std::fs::read_to_string(dir.path().join("node/logs/router1.log")).unwrap_or_default()
        + &String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("components[1] (app.BadInit): BadInit.__init__ raised")
            && log.contains("ZeroDivisionError"),
        "{log}"
    );
}

/// A Python container component whose router is killed (kill -9) and
/// restarted joins the new router: the lost connection restarts its
/// container (Trellis restarts routers, where Crossbar.io would stop the
/// node), while an application failure (onJoin raising) stays down.
#[test]
fn python_components_rejoin_a_router_that_came_back() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let (ws, rs) = (free_port(), free_port());
    let mut cfg = config(ws, rs);
    cfg["workers"][0]["options"] = json!({"restart": {"backoff_initial": 0.05}});
    let node = Node::start(&cfg, ws);
    wait_status(&node, "the adder running", |s| {
        worker(s, "adder")["state"] == "running"
    });
    let out = expect_python_args_ok(
        &node,
        "scenarios.py",
        &[&node.url(), "python_components", "json"],
    );
    assert!(out.contains("ok python_components json"), "{out}");
    let s = crate::node::status(&node.node_dir());
    let router = crate::node::pid_of(&s, "router1");
    kill(Pid::from_raw(router), Signal::SIGKILL).expect("kill router");
    wait_status(&node, "the adder's container restarted", |s| {
        worker(s, "adder")["restarts"].as_u64() >= Some(1)
            && worker(s, "adder")["state"] == "running"
    });
    let out = expect_python_args_ok(
        &node,
        "scenarios.py",
        &[&node.url(), "python_components", "json"],
    );
    assert!(out.contains("ok python_components json"), "{out}");
    let log = node.worker_log("adder");
    assert!(
        log.contains("lost its router: the container restarts to join it again"),
        "{log}"
    );
}

/// Crossbar.io's dynamic anonymous login: a Python router component
/// decides the role, authid and authextra of sessions without credentials,
/// or refuses them; `check` names a dynamic one without its authenticator.
#[test]
fn a_dynamic_anonymous_authenticator_decides_who_anonymous_sessions_are() {
    let port = free_port();
    let cfg = json!({"version": 2, "workers": [{
        "type": "router", "id": "router1",
        "options": python_options(),
        "realms": [{"name": "realm1", "roles": [
            {"name": "authenticator", "permissions": [
                {"uri": "com.example.authenticate_anonymous", "allow": {"register": true}}]},
            {"name": "public", "permissions": [
                {"uri": "", "match": "prefix", "allow": {"call": true, "subscribe": true}}]}]}],
        "components": [{"type": "class", "classname": "anonymous_auth.AnonymousAuthenticator",
                        "realm": "realm1", "role": "authenticator"}],
        "transports": [{"type": "web",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port},
            "paths": {"ws": {"type": "websocket", "auth": {"anonymous": {
                "type": "dynamic", "authenticator": "com.example.authenticate_anonymous"}}}}}]
    }]});
    let out = check_json(&cfg);
    assert!(out.status.success(), "{out:?}");
    let node = Node::start(&cfg, port);
    let url = format!("ws://127.0.0.1:{port}/ws");
    let out = expect_python_args_ok(
        &node,
        "scenarios.py",
        &[&url, "anonymous_dynamic", "json", "msgpack"],
    );
    assert!(out.contains("ok anonymous_dynamic msgpack"), "{out}");

    let mut bad = cfg.clone();
    bad["workers"][0]["transports"][0]["paths"]["ws"]["auth"]["anonymous"] =
        json!({"type": "dynamic", "authid": "x"});
    let out = check_json(&bad);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "transports[0].paths.ws.auth.anonymous.authenticator: a dynamic method needs the URI of its authenticator procedure",
        "transports[0].paths.ws.auth.anonymous.authid: a dynamic anonymous login takes its authid from the authenticator",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

/// crossbar-examples' encryption/tls: Python components connect to their
/// router over TLS (`transport.endpoint.tls`: the router's CA, the
/// component's own certificate, which the router requires), asyncio over
/// wss:// and Twisted over TLS RawSocket; a missing file is named by
/// `check`.
#[test]
fn python_components_connect_over_tls_with_their_certificates() {
    let pki = crate::auth_methods::Pki::new();
    let (ws, wss, rss) = (free_port(), free_port(), free_port());
    let (server_crt, server_key) = pki.issue("localhost", true, false, false);
    let (client_crt, client_key) = pki.issue("component", false, false, false);
    let ca = pki.ca_a.pem();
    let python = python().display().to_string();
    let dir = repo_root()
        .join("tests/py/components")
        .display()
        .to_string();
    let tls = json!({"hostname": "localhost", "certificate": "client.crt", "key": "client.key",
                     "ca_certificates": ["ca.pem"]});
    let server_tls =
        json!({"certificate": "server.crt", "key": "server.key", "ca_certificates": ["ca.pem"]});
    let container = |id: &str, classname: &str, transport: serde_json::Value| {
        json!({"type": "container", "id": id, "options": {"pythonpath": [dir], "python": python},
               "components": [{"type": "class", "classname": classname, "realm": "realm1",
                               "transport": transport}]})
    };
    let cfg = json!({"version": 2, "workers": [
        {"type": "router", "id": "router1",
         "realms": [{"name": "realm1", "roles": [{"name": "anonymous", "permissions": [
             {"uri": "", "match": "prefix",
              "allow": {"call": true, "register": true, "publish": true, "subscribe": true}}]}]}],
         "transports": [
             {"type": "websocket", "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": ws}},
             {"type": "websocket", "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": wss,
                                                 "tls": server_tls}},
             {"type": "rawsocket", "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": rss,
                                                 "tls": server_tls}}]},
        container("adder", "app.Adder", json!({"type": "websocket",
            "endpoint": {"type": "tcp", "host": "127.0.0.1", "port": wss, "tls": tls},
            "url": format!("wss://localhost:{wss}/ws")})),
        container("greeter", "twisted_app.Greeter", json!({"type": "rawsocket",
            "endpoint": {"type": "tcp", "host": "127.0.0.1", "port": rss, "tls": tls},
            "serializer": "msgpack"}))
    ]});
    let files = [
        ("server.crt", server_crt.as_str()),
        ("server.key", server_key.as_str()),
        ("client.crt", client_crt.as_str()),
        ("client.key", client_key.as_str()),
        ("ca.pem", ca.as_str()),
    ];
    let node = Node::start_with_files(&cfg, ws, &files);
    wait_status(&node, "both containers running", |s| {
        ["adder", "greeter"]
            .iter()
            .all(|id| worker(s, id)["state"] == "running")
    });
    let url = node.url();
    for (procedure, args, want) in [
        ("com.example.add2", "[1, 2]", json!(3)),
        ("com.example.greet", "[\"tls\"]", json!("hello tls")),
    ] {
        let out = crate::support::run_python(
            "node_peer.py",
            &["call", &url, procedure, "30", args],
            std::time::Duration::from_secs(40),
        );
        assert!(
            out.status.success(),
            "{procedure}: {}{}\n--- adder\n{}\n--- greeter\n{}",
            out.stdout,
            out.stderr,
            node.worker_log("adder"),
            node.worker_log("greeter")
        );
        let got: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
        assert_eq!(got, want, "{procedure}");
    }

    // check names a file that is not there, and a certificate without its key.
    let mut missing = cfg.clone();
    missing["workers"][1]["components"][0]["transport"]["endpoint"]["tls"]["ca_certificates"] =
        json!(["nope.pem"]);
    let path = node.node_dir().join("missing.json");
    std::fs::write(&path, missing.to_string()).expect("write");
    let out = crate::support::trellis_in("check", &path, node.node_dir())
        .output()
        .expect("check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("workers[1].components[0].transport.endpoint.tls.ca_certificates[0]:")
            && err.contains("nope.pem is not a file"),
        "{err}"
    );
    let mut bad = cfg.clone();
    bad["workers"][2]["components"][0]["transport"]["endpoint"]["tls"]
        .as_object_mut()
        .expect("tls")
        .remove("key");
    bad["workers"][1]["components"][0]["transport"]["url"] =
        json!(format!("ws://localhost:{wss}/ws"));
    let out = check_json(&bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(
            "workers[2].components[0].transport.endpoint.tls: give \"certificate\" and \"key\" together"
        ) && err.contains("workers[1].components[0].transport.url: \"ws://localhost:")
            && err.contains("the endpoint has tls: write it wss://"),
        "{err}"
    );
}

/// crossbar-examples' authorization/dynamic/embedded: a router component
/// registers a procedure under a role whose authorizer (another router
/// component) takes the legacy three arguments, `(session, uri, action)`.
/// Crossbar.io 26 fails it (its fallback looks for Python 2's TypeError);
/// Trellis asks again without the options, and its answer counts.
#[test]
fn a_legacy_three_argument_authorizer_decides() {
    let port = free_port();
    let cfg = json!({"version": 2, "workers": [{
        "type": "router", "id": "router1",
        "options": python_options(),
        "realms": [{"name": "realm1", "roles": [
            {"name": "authorizer", "permissions": [
                {"uri": "com.example.legacy_auth", "match": "exact", "allow": {"register": true}}]},
            {"name": "app", "authorizer": "com.example.legacy_auth"},
            {"name": "anonymous", "permissions": [
                {"uri": "com.example.", "match": "prefix", "allow": {"call": true}}]}]}],
        "components": [
            {"type": "class", "classname": "legacy_authz.LegacyAuthorizer", "realm": "realm1",
             "role": "authorizer"},
            {"type": "class", "classname": "legacy_authz.Guarded", "realm": "realm1", "role": "app"}],
        "transports": [{"type": "websocket",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port}}]
    }]});
    let node = Node::start(&cfg, port);
    node.wait_ready();
    let out = crate::support::run_python(
        "node_peer.py",
        &["call", &node.url(), "com.example.guarded", "20"],
        std::time::Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}{}\n--- router\n{}",
        out.stdout,
        out.stderr,
        node.worker_log("router1")
    );
    assert_eq!(out.stdout.trim(), "\"guarded ok\"");
    node.wait_log("the authorizer takes Crossbar.io's legacy three arguments");
}

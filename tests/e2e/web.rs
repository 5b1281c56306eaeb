//! The web transport: static files (content types, index, redirects, no
//! way out of the directory, bare 404s), request-head limits and deadline,
//! and WAMP over its WebSocket path with autobahn-python.

use serde_json::json;

use crate::support::{
    Node, expect_python_args_ok, free_port, push_transport, router_config, trellis_check,
};

#[test]
fn static_files_websocket_path_and_traversal_suite() {
    let files = tempfile::tempdir().expect("tmp");
    let www = files.path().join("www");
    std::fs::create_dir_all(www.join("js")).expect("mkdir");
    std::fs::create_dir_all(files.path().join("docs")).expect("mkdir");
    std::fs::write(www.join("index.html"), "<h1>balloon</h1>\n").expect("write");
    std::fs::write(www.join("js/app.js"), "console.log(1);\n").expect("write");
    std::fs::write(files.path().join("docs/readme.txt"), "docs\n").expect("write");
    std::fs::write(files.path().join("secret.txt"), "secret\n").expect("write");
    std::os::unix::fs::symlink(files.path().join("secret.txt"), www.join("escape"))
        .expect("symlink");

    let ws = free_port();
    let web = free_port();
    let mut cfg = router_config(ws);
    push_transport(
        &mut cfg,
        json!({
            "type": "web",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": web},
            "options": {"open_handshake_timeout": 1000},
            "paths": {
                "/": {"type": "static", "directory": www.display().to_string()},
                "docs": {"type": "static", "directory": files.path().join("docs").display().to_string()},
                "ws": {"type": "websocket", "serializers": ["json", "msgpack"]}
            }
        }),
    );
    let node = Node::start(&cfg, ws);
    let out = expect_python_args_ok(&node, "web_checks.py", &[&web.to_string()]);
    assert!(out.contains("ok WAMP over the ws path (msgpack)"), "{out}");
    assert!(!out.contains("FAILED"), "{out}");
}

#[test]
fn web_config_errors_name_their_paths() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("node.json");
    let mut cfg = router_config(free_port());
    push_transport(
        &mut cfg,
        json!({
            "type": "web",
            "endpoint": {"type": "tcp", "port": free_port()},
            "auth": {"anonymous": {"role": "anonymous"}},
            "paths": {
                "/": {"type": "static"},
                "a/b": {"type": "websocket", "serializers": ["yaml"], "auth": {"anonymous": {"role": "ghost"}}}
            }
        }),
    );
    std::fs::write(&p, serde_json::to_vec(&cfg).expect("json")).expect("write");
    let out = trellis_check(&p);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "workers[0].transports[1].auth: a web transport's auth belong to its websocket paths",
        "workers[0].transports[1].paths./.directory: missing",
        "workers[0].transports[1].paths.a/b: a path is \"/\" or one URL segment",
        "workers[0].transports[1].paths.a/b.serializers[0]: unknown serializer \"yaml\"",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

/// `websocket.testee`: the plain echo endpoint the Autobahn|TestSuite runs
/// against (`../shared/tools/run-autobahn.sh ws://127.0.0.1:PORT trellis`).
#[test]
fn websocket_testee_echoes() {
    let ws = free_port();
    let testee = free_port();
    let mut cfg = router_config(ws);
    push_transport(
        &mut cfg,
        json!({"type": "websocket.testee",
                     "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": testee}}),
    );
    let node = Node::start(&cfg, ws);
    let out = expect_python_args_ok(
        &node,
        "testee_echo.py",
        &[&format!("ws://127.0.0.1:{testee}")],
    );
    assert!(out.contains("echo ok"), "{out}");
}

#[test]
fn allowed_origins_refuse_other_browsers() {
    let port = free_port();
    let mut cfg = router_config(port);
    cfg["workers"][0]["transports"][0]["options"] =
        json!({"allowed_origins": ["https://*.example.com"]});
    let node = Node::start(&cfg, port);
    let out = expect_python_args_ok(&node, "origin_check.py", &[&node.url()]);
    for want in [
        "evil origin refused",
        "listed origin accepted",
        "no origin accepted",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
}

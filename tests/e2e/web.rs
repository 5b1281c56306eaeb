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
    assert!(
        out.contains("ok pipelined requests answered in order"),
        "{out}"
    );
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
                "a/b": {"type": "websocket", "serializers": ["yaml"], "auth": {"anonymous": {"role": "ghost"}}},
                "lp": {"type": "longpoll", "options": {"queue_limit_messages": 0, "request_timout": 5}},
                "lp2": {"type": "longpoll", "serializers": ["cbor2"], "value": 1}
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
        "workers[0].transports[1].paths.lp.options.request_timout: unknown field `request_timout`",
        "workers[0].transports[1].paths.lp2.serializers[0]: unknown serializer \"cbor2\"",
        "workers[0].transports[1].paths.lp2.value: longpoll paths take no value",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

/// `websocket.testee`: the plain echo endpoint the Autobahn|TestSuite runs
/// against (`../shared/tools/run-autobahn.sh ws://127.0.0.1:PORT trellis`).
#[test]
fn websocket_testee_echoes() {
    let ws = free_port();
    let (testee, deflate) = (free_port(), free_port());
    let mut cfg = router_config(ws);
    push_transport(
        &mut cfg,
        json!({"type": "websocket.testee",
                     "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": testee}}),
    );
    // With compression, the testee negotiates permessage-deflate (so that
    // Autobahn's categories 12 and 13 run) and echoes compressed.
    push_transport(
        &mut cfg,
        json!({"type": "websocket.testee",
               "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": deflate},
               "options": {"compression": {"deflate": {}}}}),
    );
    let node = Node::start(&cfg, ws);
    node.wait_ready();
    let out = expect_python_args_ok(
        &node,
        "testee_echo.py",
        &[
            &format!("ws://127.0.0.1:{testee}"),
            &format!("ws://127.0.0.1:{deflate}"),
        ],
    );
    assert!(out.contains("echo ok"), "{out}");
    assert!(out.contains("plain: no extension"), "{out}");
    assert!(out.contains("deflate: compressed echo ok"), "{out}");
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

#[test]
fn websocket_compression_and_options() {
    let a = free_port();
    let b = free_port();
    let c = free_port();
    let mut cfg = router_config(a);
    let origins = json!(["https://*.example.com"]);
    cfg["workers"][0]["transports"][0]["options"] = json!({
        "compression": {"deflate": {"request_max_window_bits": 15, "memory_level": 4}},
        "auto_fragment_size": 1000,
        "auto_ping_size": 20,
        "auto_ping_interval": 700,
        "close_handshake_timeout": 200,
        "allowed_origins": origins,
    });
    for (port, options) in [
        (
            b,
            json!({"fail_by_drop": true, "allow_null_origin": false,
                   "enable_webstatus": false, "allowed_origins": origins}),
        ),
        (c, json!({"close_handshake_timeout": 8000})),
    ] {
        push_transport(
            &mut cfg,
            json!({
                "type": "websocket",
                "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port},
                "options": options
            }),
        );
    }
    let node = Node::start(&cfg, a);
    node.wait_ready();
    let s = crate::node::wait_status(&node, "the router running", |s| {
        crate::node::worker(s, "router1")["pid"].is_i64()
    });
    let pid = crate::node::pid_of(&s, "router1");
    let out = expect_python_args_ok(
        &node,
        "ws_options_check.py",
        &[
            &a.to_string(),
            &b.to_string(),
            &c.to_string(),
            &pid.to_string(),
        ],
    );
    for want in [
        "ok a 166 KB event comes back whole",
        "ok the bomb gets close 1009",
        "ok the router's memory stays flat",
        "ok fail_by_drop",
        "ok close_handshake_timeout 8000",
        "ok Origin: null refused",
        "ok a plain GET: 426",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    assert!(!out.contains("FAILED"), "{out}");
    let (ok, out) = crate::support::node_js("deflate.mjs", &[&format!("ws://127.0.0.1:{a}/")]);
    assert!(ok, "autobahn-js over permessage-deflate:\n{out}");
    assert!(out.contains("the event came back whole"), "{out}");
}

/// WAMP-over-Longpoll: autobahn-js (its long-poll transport) against an
/// autobahn-js WebSocket peer, then bad requests and limits with Python's
/// HTTP client.
#[test]
fn longpoll_with_autobahn_js() {
    let port = free_port();
    let mut cfg = router_config(free_port());
    cfg["workers"][0]["transports"] = json!([{
        "type": "web",
        "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port},
        "paths": {
            "ws": {"type": "websocket"},
            "lp": {"type": "longpoll", "options": {"request_timeout": 2, "session_timeout": 2}}
        }
    }]);
    let node = Node::start(&cfg, port);
    let (ok, out) = crate::support::node_js(
        "longpoll.mjs",
        &[
            &format!("http://127.0.0.1:{port}/lp"),
            &format!("ws://127.0.0.1:{port}/ws"),
        ],
    );
    assert!(
        ok,
        "autobahn-js over long-poll:\n{out}\n--- node log\n{}",
        node.log()
    );
    for want in [
        "joined over longpoll",
        "20 events reached the long-poll subscriber in order",
        "the long-poll caller got a 50000-character result",
        "closed: the long-poll session left",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    let out = expect_python_args_ok(
        &node,
        "longpoll_check.py",
        &[&port.to_string(), &format!("ws://127.0.0.1:{port}/ws")],
    );
    for want in [
        "ok no common protocol: 400 naming ours",
        "ok a batched receive carries WELCOME",
        "ok the client that stopped polling was closed",
        "ok the next poll brings the ABORT saying why",
        "ok then the transport is gone",
        "ok a transport nobody polled for session_timeout",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
}

/// curl GET: (status, headers, body).
fn curl(port: u16, path: &str) -> (u16, String, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-m",
            "5",
            "-D",
            "-",
            &format!("http://127.0.0.1:{port}{path}"),
        ])
        .output()
        .expect("run curl (scripts/test installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_ascii_lowercase(), body.to_owned())
}

/// Crossbar.io's `json`, `redirect`, `nodeinfo`, `path` and `archive` web services and the static
/// path options (`cache_timeout`, `mime_types`,
/// `enable_directory_listing`), as curl sees them.
#[test]
fn json_redirect_and_static_options() {
    let files = tempfile::tempdir().expect("tmp");
    let www = files.path().join("www");
    std::fs::create_dir_all(www.join("plain")).expect("mkdir");
    std::fs::create_dir_all(files.path().join("list/sub")).expect("mkdir");
    std::fs::write(www.join("index.html"), "<h1>home</h1>\n").expect("write");
    std::fs::write(www.join("app.wasm"), "\0asm").expect("write");
    std::fs::write(files.path().join("list/<b>.txt"), "x").expect("write");
    // A zip for the archive service, made by Python's zipfile.
    let zip = files.path().join("site.zip");
    let made = std::process::Command::new(crate::support::python())
        .args([
            "-c",
            "import sys, zipfile; z = zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED); \
             z.writestr('site/index.html', '<h1>zipped</h1>'); z.writestr('site/js/app.js', 'x()'); z.close()",
        ])
        .arg(&zip)
        .status()
        .expect("python");
    assert!(made.success());
    let (ws, web) = (free_port(), free_port());
    let mut cfg = router_config(ws);
    push_transport(
        &mut cfg,
        json!({
            "type": "web",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": web},
            "paths": {
                "zip": {"type": "archive", "archive": zip.display().to_string(), "object_prefix": "site/",
                        "origin": "https://example.com/site.zip", "cache": true},
                "zipspa": {"type": "archive", "archive": zip.display().to_string(), "object_prefix": "site",
                           "options": {"default_file": "index.html"}},
                "/": {"type": "static", "directory": www.display().to_string(),
                      "options": {"cache_timeout": 3600, "mime_types": {".wasm": "application/wasm"}}},
                "list": {"type": "static", "directory": files.path().join("list").display().to_string(),
                         "options": {"enable_directory_listing": true}},
                // A single-page application: its index.html for any path
                // that names nothing (Crossbar.io's default_file).
                "spa": {"type": "static", "id": "spa", "directory": www.display().to_string(),
                        "options": {"default_file": "index.html"}},
                "escape": {"type": "static", "directory": www.join("plain").display().to_string(),
                           "options": {"default_file": "../index.html"}},
                "info": {"type": "json", "value": {"service": "balloon", "version": [1, 2]}},
                // Crossbar.io's json options.
                "pretty": {"type": "json", "value": {"a": [1]},
                           "options": {"prettify": true, "allow_cross_origin": true, "discourage_caching": true}},
                "old": {"type": "redirect", "url": "https://example.com/new/"},
                "node": {"type": "nodeinfo"},
                "api": {"type": "path", "paths": {
                    "/": {"type": "json", "value": {"api": 1}},
                    "info": {"type": "json", "value": {"nested": true}},
                    "docs": {"type": "static", "directory": files.path().join("list").display().to_string()},
                    "ws": {"type": "websocket"}
                }}
            }
        }),
    );
    let node = Node::start(&cfg, ws);
    node.wait_ready();
    for route in ["/spa/settings/profile", "/spa/nope.js", "/spa/plain/"] {
        let (code, _, body) = curl(web, route);
        assert_eq!((code, body.as_str()), (200, "<h1>home</h1>\n"), "{route}");
    }
    let (code, head, _) = curl(web, "/spa/app.wasm");
    assert_eq!(
        code, 200,
        "a file that is there is served as itself: {head}"
    );
    assert_eq!(
        curl(web, "/escape/nope").0,
        404,
        "default_file stays inside its directory"
    );
    // An archive: objects from the zip, the default object for a
    // directory, nothing outside its prefix.
    let (code, head, body) = curl(web, "/zip/");
    assert_eq!((code, body.as_str()), (200, "<h1>zipped</h1>"), "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    let (code, _, body) = curl(web, "/zip/js/app.js");
    assert_eq!((code, body.as_str()), (200, "x()"));
    assert_eq!(curl(web, "/zip/../zip/nope").0, 404);
    // Crossbar.io's options.default_file: the archive's SPA index for any
    // path that names nothing in it.
    let (code, _, body) = curl(web, "/zipspa/settings/profile");
    assert_eq!((code, body.as_str()), (200, "<h1>zipped</h1>"));
    let (code, _, body) = curl(web, "/zipspa/js/app.js");
    assert_eq!((code, body.as_str()), (200, "x()"));
    // A `path` service: its paths under its own segment.
    let (code, _, body) = curl(web, "/api");
    assert_eq!((code, body.as_str()), (200, r#"{"api":1}"#));
    let (code, _, body) = curl(web, "/api/info");
    assert_eq!((code, body.as_str()), (200, r#"{"nested":true}"#));
    let (code, _, body) = curl(web, "/api/docs/%3Cb%3E.txt");
    assert_eq!((code, body.as_str()), (200, "x"));
    assert_eq!(curl(web, "/api/docs/../../www/index.html").0, 404);
    let out = expect_python_args_ok(
        &node,
        "scenarios.py",
        &[
            &format!("ws://127.0.0.1:{web}/api/ws"),
            "join_leave",
            "json",
        ],
    );
    assert!(out.contains("ok join_leave json"), "{out}");
    // nodeinfo: the node's workers and realms, as a page.
    let (code, head, body) = curl(web, "/node");
    assert_eq!(code, 200, "{head}{body}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(
        body.contains("<h1>Trellis")
            && body.contains("<td>router1</td>")
            && body.contains("<td>realm1</td>"),
        "{body}"
    );
    let (code, head, body) = curl(web, "/info");
    assert_eq!(code, 200, "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
    assert_eq!(v, json!({"service": "balloon", "version": [1, 2]}));
    assert!(
        head.contains("cache-control: no-cache") && !head.contains("access-control"),
        "{head}"
    );
    let (code, head, body) = curl(web, "/pretty");
    assert_eq!(
        (code, body.as_str()),
        (200, "{\n  \"a\": [\n    1\n  ]\n}"),
        "{head}"
    );
    assert!(
        head.contains("access-control-allow-origin: *")
            && head.contains("cache-control: no-store, no-cache, must-revalidate, max-age=0"),
        "{head}"
    );
    let (code, head, _) = curl(web, "/old");
    assert_eq!(code, 302, "{head}");
    assert!(
        head.contains("location: https://example.com/new/"),
        "{head}"
    );
    let (code, head, body) = curl(web, "/");
    assert_eq!((code, body.as_str()), (200, "<h1>home</h1>\n"));
    assert!(head.contains("cache-control: max-age=3600"), "{head}");
    let (_, head, _) = curl(web, "/app.wasm");
    assert!(head.contains("content-type: application/wasm"), "{head}");
    // Listing where allowed (names escaped), 404 where not.
    let (code, _, body) = curl(web, "/list/");
    assert_eq!(code, 200);
    assert!(
        body.contains("&lt;b&gt;.txt") && body.contains("sub/"),
        "{body}"
    );
    assert!(!body.contains("<b>"), "{body}");
    let (code, head, _) = curl(web, "/list/sub/");
    assert_eq!(code, 200, "{head}");
    assert!(head.contains("cache-control: no-cache"), "{head}");
    assert_eq!(curl(web, "/plain/").0, 404, "no listing on /");
    assert_eq!(curl(web, "/list/../www/index.html").0, 404);

    // check names what each service lacks or does not take.
    let mut bad = router_config(free_port());
    push_transport(
        &mut bad,
        json!({
            "type": "web",
            "endpoint": {"type": "tcp", "port": free_port()},
            "paths": {
                "/": {"type": "static", "directory": ".", "options": {"listing": true}},
                "info": {"type": "json", "directory": "x"},
                "old": {"type": "redirect"},
                "zip": {"type": "archive", "archive": "missing.zip", "origin": "ftp://example.com/a.zip", "download": true},
                "zip2": {"type": "archive", "archive": "missing.zip", "download": true},
                "ws": {"type": "websocket", "options": {"max_message_size": "big"}}
            }
        }),
    );
    let out = crate::support::check_json(&bad);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "workers[0].transports[1].paths./.options.listing: unknown field `listing`",
        "workers[0].transports[1].paths.info.directory: json paths take no directory",
        "workers[0].transports[1].paths.info.value: missing: the JSON value to serve",
        "workers[0].transports[1].paths.old.url: missing: where to redirect",
        "workers[0].transports[1].paths.zip.origin: \"ftp://example.com/a.zip\" is not an http:// or https:// URL",
        "workers[0].transports[1].paths.zip2.download: \"download\": true needs an \"origin\"",
        "workers[0].transports[1].paths.ws.options.max_message_size: invalid type",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    // A missing archive file (crossbar-examples build theirs with make):
    // check warns, and start serves it as empty, as Crossbar.io does.
    let (ws2, web2) = (free_port(), free_port());
    let mut missing = router_config(ws2);
    push_transport(
        &mut missing,
        json!({
            "type": "web",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": web2},
            "paths": {"zip": {"type": "archive", "archive": "gone.zip", "origin": "https://example.com/a.zip"},
                      "info": {"type": "json", "value": 1}}
        }),
    );
    let out = crate::support::check_json(&missing);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("warning: workers[0].transports[1].paths.zip.archive:")
            && err.contains("gone.zip is not a file")
            && err.contains("served as empty")
            && err.contains(
                "add \"download\": true to have `trellis start` fetch it from its origin \"https://example.com/a.zip\""
            ),
        "{err}"
    );
    let node = Node::start(&missing, ws2);
    node.wait_ready();
    assert_eq!(curl(web2, "/zip/").0, 404);
    assert_eq!(curl(web2, "/zip/index.html").0, 404);
    assert_eq!(
        curl(web2, "/info").0,
        200,
        "the rest of the transport serves"
    );
    node.wait_log("the archive file is not there");
}

/// The HTTP bridge (`caller`, `publisher`, `webhook`): Python's HTTP client calls and
/// publishes, signed as Crossbar.io's clients sign, with the status codes
/// and JSON of Crossbar.io's bridge; the bridge's role limits it.
#[test]
fn http_bridge_calls_and_publishes() {
    let (ws, web) = (free_port(), free_port());
    let mut cfg = router_config(ws);
    cfg["workers"][0]["realms"][0]["roles"]
        .as_array_mut()
        .expect("roles")
        .push(json!({"name": "bridge", "permissions": [
            {"uri": "com.example.", "match": "prefix", "allow": {"call": true, "publish": true}}]}));
    let bridge = |kind: &str, options: serde_json::Value| json!({"type": kind, "realm": "realm1", "role": "bridge", "options": options});
    push_transport(
        &mut cfg,
        json!({
            "type": "web",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": web},
            "paths": {
                "call": bridge("caller", json!({})),
                "pub": bridge("publisher", json!({})),
                "small": bridge("publisher", json!({"post_body_limit": 100})),
                "signed": bridge("publisher", json!({"key": "foo", "secret": "bar"})),
                "once": bridge("publisher", json!({"key": "foo", "secret": "bar", "replay_protection": true})),
                "hook": bridge("webhook", json!({"topic": "com.example.hook"})),
                "lan": bridge("publisher", json!({"require_ip": ["10.0.0.0/8"]})),
                "lo": bridge("publisher", json!({"require_ip": ["127.0.0.1/32", "::1"]})),
                "gh": bridge("webhook", json!({"topic": "com.example.hook", "github_secret": "gh"}))
            }
        }),
    );
    let node = Node::start(&cfg, ws);
    let out = expect_python_args_ok(&node, "bridge_check.py", &[&node.url(), &web.to_string()]);
    for want in [
        "ok bridge",
        "ok replay protection",
        "ok 20 bridge calls on one kept-alive connection",
        "ok bridge sessions joined again after a kill",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }

    // curl: a chunked body, and `Expect: 100-continue` (curl sends it on
    // every PUT and on large POSTs, then waits for the 100; with a 30 s
    // wait here, a server that never answers it would hold the request).
    let curl = |path: &str, extra: &[&str], body: &str| {
        let t0 = std::time::Instant::now();
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "-m",
                "40",
                "--expect100-timeout",
                "30",
                "-w",
                "\n%{http_code}",
            ])
            .args(["-H", "Content-Type: application/json"])
            .args(extra)
            .args(["--data-binary", body])
            .arg(format!("http://127.0.0.1:{web}/{path}"))
            .output()
            .expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text, t0.elapsed())
    };
    let event = r#"{"topic": "com.example.topic", "args": ["curl"]}"#;
    let (got, _) = curl("pub", &["-H", "Transfer-Encoding: chunked"], event);
    assert!(
        got.ends_with("\n200") && got.contains("\"id\""),
        "chunked body: {got}"
    );
    let (got, took) = curl("pub", &["-X", "PUT", "-H", "Expect: 100-continue"], event);
    assert!(
        got.ends_with("\n200") && got.contains("\"id\""),
        "Expect: 100-continue: {got}"
    );
    assert!(
        took < std::time::Duration::from_secs(10),
        "the 100 came at once: {took:?}"
    );
    // A chunked body over the limit is refused by its size, not by its
    // encoding.
    let big = format!(
        r#"{{"topic": "com.example.topic", "args": ["{}"]}}"#,
        "x".repeat(500)
    );
    let (got, _) = curl("small", &["-H", "Transfer-Encoding: chunked"], &big);
    assert!(
        got.ends_with("\n413") && got.contains("post_body_limit"),
        "{got}"
    );

    let mut bad = router_config(free_port());
    push_transport(
        &mut bad,
        json!({
            "type": "web",
            "endpoint": {"type": "tcp", "port": free_port()},
            "paths": {
                "a": {"type": "caller", "realm": "nowhere", "role": "x"},
                "b": {"type": "publisher", "realm": "realm1", "options": {"key": "k"}},
                "c": {"type": "webhook", "realm": "realm1", "role": "anonymous"},
                "d": {"type": "caller", "realm": "realm1", "role": "anonymous", "options": {"require_ip": ["nowhere"]}},
                "e": {"type": "caller", "realm": "realm1", "role": "anonymous", "options": {"replay_protection": true}}
            }
        }),
    );
    let out = crate::support::check_json(&bad);
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "paths.a.realm: realm \"nowhere\" is not defined in this router",
        "paths.b.role: missing: the role the bridge joins with",
        "paths.b.options.secret: give both key and secret",
        "paths.c.options.topic: missing: the topic a webhook publishes to",
        "paths.d.options.require_ip:",
        "paths.e.options.replay_protection: needs signed requests (key and secret)",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

/// Crossbar.io's `universal` transport: RawSocket, WebSocket and web on
/// one port, told apart by the first bytes; autobahn-python joins over
/// both, curl gets the page, and check names a part's problems under it.
#[test]
fn universal_serves_rawsocket_websocket_and_web_on_one_port() {
    let www = tempfile::tempdir().expect("tmp");
    std::fs::write(www.path().join("index.html"), "<h1>one port</h1>\n").expect("write");
    let (ws, port) = (free_port(), free_port());
    let mut cfg = router_config(ws);
    push_transport(
        &mut cfg,
        json!({
            "type": "universal",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port},
            "rawsocket": {"serializers": ["json", "msgpack"]},
            "websocket": {"ws": {"type": "websocket", "serializers": ["json"]}},
            "web": {"paths": {"/": {"type": "static", "directory": www.path().display().to_string()}}}
        }),
    );
    let node = Node::start(&cfg, ws);
    node.wait_ready();
    // Each protocol's bytes reach its handler as sent (the sniffed byte
    // replayed, frames guarded only where they are WebSocket frames).
    for url in [
        format!("rs://127.0.0.1:{port}"),
        format!("ws://127.0.0.1:{port}/ws"),
    ] {
        for scenario in ["join_leave", "rpc_args_kwargs", "pubsub_basic"] {
            let out = expect_python_args_ok(&node, "scenarios.py", &[&url, scenario, "json"]);
            assert!(out.contains(&format!("ok {scenario} json")), "{url}: {out}");
        }
    }
    let out = expect_python_args_ok(
        &node,
        "scenarios.py",
        &[
            &format!("rs://127.0.0.1:{port}"),
            "rpc_args_kwargs",
            "msgpack",
        ],
    );
    assert!(out.contains("ok rpc_args_kwargs msgpack"), "{out}");
    let (code, _, body) = curl(port, "/");
    assert_eq!((code, body.as_str()), (200, "<h1>one port</h1>\n"));

    let mut bad = router_config(free_port());
    push_transport(
        &mut bad,
        json!({
            "type": "universal",
            "endpoint": {"type": "tcp", "port": free_port()},
            "rawsocket": {"serializers": ["yaml"]},
            "websocket": {"ws": {"type": "static", "directory": "."}},
            "web": {"paths": {"ws": {"type": "static", "directory": "."}}}
        }),
    );
    let out = crate::support::check_json(&bad);
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "workers[0].transports[1].rawsocket.serializers[0]: unknown serializer \"yaml\"",
        "workers[0].transports[1].websocket.ws.type: a universal transport's websocket part holds websocket paths only",
        "workers[0].transports[1].websocket.ws: \"ws\" is also a web path",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

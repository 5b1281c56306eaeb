//! Crossbar.io-shaped configs that Trellis used to refuse: `trellis check`
//! accepts them (with warnings where Crossbar.io's behaviour deserves a
//! look) and `trellis start` serves them to autobahn-python.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::node::{pid_of, wait_status, worker};
use crate::support::{Node, check_json, expect_python_ok, free_port};

fn crossbar_config(port: u16, web_port: u16) -> serde_json::Value {
    json!({
        "version": 2,
        "controller": {},
        "workers": [
            {
                "type": "router",
                "id": "router1",
                "options": {
                    "title": "trellis-rtr1",
                    "cpu_affinity": [0],
                    "env": {"inherit": ["PATH"], "vars": {"FROM_CONFIG": "yes"}},
                    "expose_controller": true,
                    "reactor": {"default": "epoll"}
                },
                "realms": [
                    {"name": "realm1", "roles": [{"name": "anonymous", "permissions": [
                        // Crossbar.io's version-1 form: flags at the top, a
                        // starred URI meaning a prefix.
                        {"uri": "com.example.*", "call": true, "register": true,
                         "publish": true, "subscribe": true},
                        // The seed's balloon config has one of these.
                        {"uri": "", "match": "exact", "allow": {"call": true}}
                    ]}]},
                    {"name": "realm2", "roles": [{"name": "user", "allow-by-default": true}]}
                ],
                // No role: anonymous, as in Crossbar.io.
                "components": [{
                    "type": "class", "classname": "trellis.auth.UserDatabase", "realm": "realm1",
                    "extra": {"procedure": "com.example.authenticate",
                              "users": {"joe": {"secret": "pw", "role": "user"}}}
                }],
                "transports": [{
                    "type": "websocket", "debug": true,
                    "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port}
                }]
            },
            {
                // Web only: no realms.
                "type": "router",
                "id": "web1",
                // Trellis's own: the runtime's threads.
                "options": {"threads": 3},
                "transports": [{
                    "type": "web",
                    "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": web_port},
                    "paths": {"/": {"type": "static", "directory": "."},
                              "ws": {"type": "websocket", "debug": true}}
                }]
            }
        ]
    })
}

fn http_get(port: u16, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => break s,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "the web router did not listen: {e}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn crossbar_shaped_configs_are_checked_and_served() {
    let (port, web_port) = (free_port(), free_port());
    let cfg = crossbar_config(port, web_port);
    let out = check_json(&cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    for expected in [
        "warning: workers[0].transports[0].auth: anonymous sessions get role \"anonymous\", which realm \"realm2\" does not define",
        "warning: workers[0].realms[0].roles[0].permissions[1].uri: an empty URI with match \"exact\" matches no URI",
        "warning: workers[0].options.expose_controller: accepted and ignored",
        "warning: workers[0].options.reactor: accepted and ignored",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }

    let node = Node::start_with_files(
        &cfg,
        port,
        &[("hello.txt", "hello from a web-only router\n")],
    );
    // Version-1 permissions allow com.example.* to anonymous sessions.
    for scenario in [
        "rpc_args_kwargs",
        "pubsub_basic",
        "anonymous_refused_by_realm2",
    ] {
        let out = expect_python_ok(&node, "scenarios.py", &[scenario, "json"]);
        assert!(out.contains(&format!("ok {scenario} json")), "{out}");
    }
    let page = http_get(web_port, "/hello.txt");
    assert!(
        page.starts_with("HTTP/1.1 200") || page.starts_with("HTTP/1.0 200"),
        "{page}"
    );
    assert!(page.contains("hello from a web-only router"), "{page}");

    // Worker options: the process name, the CPU pin and the environment.
    let s = wait_status(&node, "both routers running", |s| {
        worker(s, "router1")["state"] == "running" && worker(s, "web1")["state"] == "running"
    });
    let pid = pid_of(&s, "router1");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("comm");
    assert_eq!(comm.trim(), "trellis-rtr1");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Cpus_allowed_list:") && l.trim_end().ends_with("\t0")),
        "{status}"
    );
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
    assert!(vars.contains(&&b"FROM_CONFIG=yes"[..]), "env.vars is set");
    assert!(
        !vars.iter().any(|v| v.starts_with(b"HOME=")),
        "env.inherit lists PATH only"
    );
    let web = pid_of(&s, "web1");
    let comm = std::fs::read_to_string(format!("/proc/{web}/comm")).expect("comm");
    assert_eq!(comm.trim(), "trellis", "no title: the executable's name");
    // `threads`: the worker's runtime runs three, whatever the CPUs.
    node.wait_worker_log("web1", "ready line with threads=3", |log| {
        log.contains("router worker ready") && log.contains("threads=3")
    });
}

#[test]
fn worker_options_crossbar_does_not_give_guests_are_refused() {
    let cfg = json!({"version": 2, "workers": [
        {"type": "guest", "executable": "sleep", "arguments": ["1"],
         "options": {"title": "x", "cpu_affinity": []}},
        {"type": "container", "options": {"title": "much-too-long-a-name", "cpu_affinity": []}}
    ]});
    let out = check_json(&cfg);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "workers[0].options.title: only router and container workers take \"title\"",
        "workers[0].options.cpu_affinity: only router and container workers take \"cpu_affinity\"",
        "workers[1].options.title: \"much-too-long-a-name\": a process name is 1 to 15 bytes",
        "workers[1].options.cpu_affinity: list at least one CPU",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn routers_share_a_port_and_the_kernel_spreads_sessions() {
    let port = free_port();
    let router = |id: &str| {
        json!({
            "type": "router", "id": id,
            "realms": [{"name": "realm1", "roles": [{"name": "anonymous", "permissions": [
                {"uri": "", "match": "prefix",
                 "allow": {"call": true, "register": true, "publish": true, "subscribe": true}}]}]}],
            "transports": [{"type": "websocket",
                "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port, "shared": true}}]
        })
    };
    let cfg = json!({"version": 2, "workers": [router("router1"), router("router2")]});
    let out = check_json(&cfg);
    assert!(out.status.success(), "{out:?}");
    // Without "shared" on both, the second is a clash.
    let mut clash = cfg.clone();
    clash["workers"][1]["transports"][0]["endpoint"]["shared"] = json!(false);
    let out = check_json(&clash);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("is already used by workers[0].transports[0].endpoint.port"),
        "{out:?}"
    );

    let node = Node::start(&cfg, port);
    wait_status(&node, "both routers running", |s| {
        worker(s, "router1")["state"] == "running" && worker(s, "router2")["state"] == "running"
    });
    let out = expect_python_ok(
        &node,
        "scenarios.py",
        &["shared_port_spreads_sessions", "json"],
    );
    assert!(
        out.contains("ok shared_port_spreads_sessions json"),
        "{out}"
    );
}

#[test]
fn check_reports_every_problem_in_one_run_without_knock_on_lines() {
    let cfg = json!({
        "version": 2,
        "workers": [
            {
                "type": "router",
                "realms": [{"name": "realm1", "rolez": [], "roles": [{"name": "anonymous", "permissions": [
                    {"uri": "com.*", "call": true, "allow": {"call": true}}]}]}],
                "transports": [
                    {"type": "websocket", "endpoint": {"type": "tcp", "port": "8080", "tls": {"key": "k.pem"}}},
                    {"type": "universal", "endpoint": {"type": "tcp", "port": 8081}},
                    {"type": "web", "endpoint": {"type": "tcp", "port": 8082},
                     "paths": {"/": {"type": "static", "directory": "web"}, "rp": {"type": "reverseproxy"}, "app": {"type": "wsgi"}}},
                    {"type": "rawsocket", "endpoint": {"type": "twisted", "server_string": "tcp:8083"}}
                ]
            },
            {"type": "container", "options": {"title": "", "cpu_affinity": "0"}},
            {"type": "guest", "arguments": [1]}
        ]
    });
    let out = check_json(&cfg);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "workers[0].realms[0].rolez: unknown field `rolez`",
        "workers[0].realms[0].roles[0].permissions[0]: permission \"com.*\" gives both \"allow\" and the version-1 flags",
        "workers[0].transports[0].endpoint.port: invalid type: string \"8080\"",
        "workers[0].transports[0].endpoint.tls: missing field `certificate`",
        "workers[0].transports[2].paths.rp.type: the \"reverseproxy\" web service is not supported by Trellis yet",
        "workers[0].transports[2].paths.app.type: the \"wsgi\" web service is not supported by Trellis: it runs Python code inside the router's web server",
        "workers[0].transports[3].endpoint.type: \"twisted\" endpoints are not supported by Trellis yet",
        "workers[0].transports[3].endpoint.server_string: Crossbar.io's twisted endpoints (\"server_string\") are not supported",
        "workers[1].options.cpu_affinity: invalid type: string \"0\"",
        "workers[2].arguments[0]: invalid type: integer `1`",
        "workers[2]: missing field `executable`",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    // The universal transport (valid in structure) gets its semantic
    // check once the worker's structure is right.
    assert!(err.contains("11 problems"), "every problem, once:\n{err}");
    for knock_on in [
        "the node has no router",
        "missing field `type`",
        "missing field `endpoint`",
    ] {
        assert!(!err.contains(knock_on), "knock-on {knock_on:?} in:\n{err}");
    }
}

/// A static directory that is not there is a `check` warning, and `start`
/// serves 404 there with a warning in the log, as Crossbar.io does (real
/// projects name shared web folders their checkout does not have).
#[test]
fn a_missing_static_directory_is_a_warning_and_serves_404() {
    let dir = tempfile::tempdir().expect("tmp");
    let node_dir = dir.path().join("node");
    std::fs::create_dir_all(node_dir.join("site")).expect("mkdir");
    std::fs::write(node_dir.join("site/index.html"), "<h1>here</h1>").expect("write");
    let port = free_port();
    let cfg = json!({"version": 2, "workers": [{"type": "router", "transports": [{
        "type": "web", "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port},
        "paths": {"/": {"type": "static", "directory": "site"},
                  "docs": {"type": "static", "directory": "no-such-dir"}}}]}]});
    let path = dir.path().join("config.json");
    std::fs::write(&path, serde_json::to_vec(&cfg).expect("json")).expect("write");
    let out = crate::support::trellis_in("check", &path, &node_dir)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: workers[0].transports[0].paths.docs.directory:")
            && err.contains("no-such-dir is not a directory")
            && err.contains("404"),
        "{err}"
    );
    assert!(
        !err.contains("paths./.directory"),
        "the existing one is fine: {err}"
    );
    let mut child = crate::support::trellis_in("start", &path, &node_dir)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start");
    crate::support::wait_port(port, "the web transport");
    let get = |p: &str| {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .arg(format!("http://127.0.0.1:{port}{p}"))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(get("/"), "200");
    assert_eq!(get("/docs/index.html"), "404");
    assert_eq!(get("/docs/"), "404");
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("WARN") && log.contains("no-such-dir"),
        "start warns about the missing directory:\n{log}"
    );
}

/// Crossbar.io's `controller.options.shutdown`: with
/// `shutdown_on_worker_exit_with_error`, a guest that fails stops the whole
/// node (non-zero) instead of being restarted.
#[test]
fn a_failing_worker_stops_the_node_with_shutdown_on_worker_exit_with_error() {
    let port = free_port();
    let mut cfg = crate::support::router_config(port);
    cfg["controller"] = json!({"options": {"shutdown": [
        "shutdown_on_shutdown_requested", "shutdown_on_worker_exit_with_error"]}});
    cfg["workers"].as_array_mut().expect("workers").push(
        json!({"type": "guest", "id": "job", "executable": "/bin/sh",
                     "arguments": ["-c", "sleep 1; exit 3"]}),
    );
    assert!(check_json(&cfg).status.success());
    let mut node = Node::start(&cfg, port);
    let status = node.wait(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{}", node.log());
    let log = node.log();
    assert!(
        log.contains("worker \"job\" exited with status 3")
            && log.contains("controller.options.shutdown: shutdown_on_worker_exit_with_error"),
        "{log}"
    );
}

/// Crossbar.io's guest `options.watch`: a change under a watched directory
/// restarts the guest, once per burst of changes.
#[test]
fn a_watched_guest_restarts_when_its_files_change() {
    let port = free_port();
    let mut cfg = crate::support::router_config(port);
    cfg["workers"].as_array_mut().expect("workers").push(
        json!({"type": "guest", "id": "app", "executable": "/bin/sh",
                     "arguments": ["-c", "echo start >> starts.log; exec sleep 1000"],
                     "options": {"watch": {"directories": ["src"], "action": "restart"}}}),
    );
    let dir = tempfile::tempdir().expect("tmp");
    let node_dir = dir.path().join("node");
    std::fs::create_dir_all(node_dir.join("src")).expect("mkdir src");
    let path = dir.path().join("config.json");
    std::fs::write(&path, serde_json::to_vec(&cfg).expect("json")).expect("write");
    let check = crate::support::trellis_in("check", &path, &node_dir)
        .output()
        .expect("check");
    assert!(check.status.success(), "{check:?}");
    let log = dir.path().join("node.log");
    let child = crate::support::trellis_in("start", &path, &node_dir)
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start");
    let _node = crate::support::KillOnDrop(child);
    let starts = || {
        std::fs::read_to_string(node_dir.join("starts.log"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while starts() < n {
            assert!(
                Instant::now() < deadline,
                "{} starts, wanted {n}:\n{}",
                starts(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait_for(1);
    std::thread::sleep(Duration::from_millis(500));
    // A burst of changes: one restart.
    for i in 0..5 {
        std::fs::write(node_dir.join(format!("src/f{i}.js")), "x").expect("change");
    }
    wait_for(2);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(starts(), 2, "one restart for the burst");
    // A file outside the watched directory changes nothing.
    std::fs::write(node_dir.join("other.txt"), "x").expect("write");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(starts(), 2);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("a watched file changed: restarting the guest (options.watch)"),
        "{text}"
    );
}

/// An archive's `hashes` (Crossbar.io's SHA-256 fingerprints): the file is
/// checked before anything starts, and a mismatch names both fingerprints.
#[test]
fn an_archive_is_checked_against_its_hashes() {
    use sha2::Digest;
    let dir = tempfile::tempdir().expect("tmp");
    let node_dir = dir.path().join("node");
    std::fs::create_dir_all(&node_dir).expect("mkdir");
    let bytes = b"not really a zip, but a file with a fingerprint";
    std::fs::write(node_dir.join("site.zip"), bytes).expect("zip");
    let good = hex::encode(sha2::Sha256::digest(bytes));
    let other = "ab".repeat(32);
    let check = |hashes: serde_json::Value| {
        let cfg = json!({"version": 2, "workers": [{"type": "router", "transports": [{
            "type": "web", "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": free_port()},
            "paths": {"/": {"type": "archive", "archive": "site.zip", "hashes": hashes}}}]}]});
        let path = dir.path().join("config.json");
        std::fs::write(&path, serde_json::to_vec(&cfg).expect("json")).expect("write");
        crate::support::trellis_in("check", &path, &node_dir)
            .output()
            .expect("check")
    };
    let ok = check(json!([other, good.to_uppercase()]));
    assert!(ok.status.success(), "{ok:?}");
    let bad = check(json!([other]));
    assert_eq!(bad.status.code(), Some(78));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("paths./.hashes:")
            && err.contains(&format!("fingerprint {good}"))
            && err.contains(&other),
        "{err}"
    );
    let malformed = check(json!(["nope"]));
    let err = String::from_utf8_lossy(&malformed.stderr);
    assert!(
        err.contains("paths./.hashes[0]: \"nope\" is not a SHA-256 fingerprint"),
        "{err}"
    );
}

/// Crossbar.io's flashpolicy transport is accepted with a warning and not
/// opened; router-to-router links are refused with a pointer to `cluster`.
#[test]
fn flash_policy_is_accepted_and_not_opened_and_rlinks_point_to_cluster() {
    let (ws, flash) = (free_port(), free_port());
    let mut cfg = crate::support::router_config(ws);
    cfg["workers"][0]["transports"]
        .as_array_mut()
        .expect("transports")
        .insert(
            0,
            json!({"type": "flashpolicy", "allowed_domain": "*", "allowed_ports": [ws],
                   "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": flash}}),
        );
    let out = check_json(&cfg);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "workers[0].transports[0]: accepted and not opened: Crossbar.io's flashpolicy transport"
        ),
        "{err}"
    );
    let node = Node::start(&cfg, ws);
    let out = expect_python_ok(&node, "scenarios.py", &["join_leave", "json"]);
    assert!(out.contains("ok join_leave json"), "{out}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", flash)).is_err(),
        "the flash policy port is open"
    );
    drop(node);

    // A realm's `trace` and a store's `buffer-flush`: accepted, with what
    // Trellis does instead.
    let mut traced = crate::support::router_config(ws);
    traced["workers"][0]["realms"][0]["trace"] = json!({"enabled": true});
    traced["workers"][0]["realms"][0]["store"] =
        json!({"type": "memory", "buffer-flush": 200, "maxsize": 1048576});
    let out = check_json(&traced);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "workers[0].realms[0].trace: accepted and not used: Trellis has no tracing API; run the node with --loglevel trace",
        "workers[0].realms[0].store.buffer-flush: accepted and not used",
        "workers[0].realms[0].store.maxsize: accepted and not used",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }

    let mut linked = crate::support::router_config(ws);
    linked["workers"][0]["rlinks"] = json!([{"id": "to-other", "realm": "realm1"}]);
    let out = check_json(&linked);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("workers[0].rlinks: Crossbar.io's router-to-router links (\"rlinks\") are not supported by Trellis: to share realms between nodes, give the node a \"cluster\" block"),
        "{err}"
    );
}

/// Crossbar.io's proxy workers (its proxy example's shape: two identical
/// proxies on one shared universal port with `routes` and `connections`,
/// the router's proxy-only Unix transport) are served by the router.
#[test]
fn proxy_workers_are_served_by_the_router_of_their_realm() {
    let port = free_port();
    let principals = json!({"user1": {"ticket": "secret1", "role": "user"}});
    let auth = json!({"anonymous": {"type": "static", "role": "anonymous"},
                      "ticket": {"type": "static", "principals": principals}});
    let proxy = json!({
        "type": "proxy",
        "connections": {"conn1": {
            "transport": {"type": "rawsocket", "endpoint": {"type": "unix", "path": "router.sock"},
                          "url": "ws://localhost", "serializer": "cbor"},
            "auth": {"anonymous-proxy": {"type": "static"}}}},
        "routes": {"realm1": {"anonymous": "conn1", "user": "conn1"}},
        "transports": [{
            "type": "universal",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port, "shared": true, "backlog": 1024},
            "rawsocket": {"auth": auth, "serializers": ["cbor", "msgpack", "json"]},
            "websocket": {"ws": {"type": "websocket", "auth": auth,
                                 "serializers": ["cbor", "msgpack", "json"]}}
        }]
    });
    let cfg = json!({"version": 2, "controller": {"id": "node1"}, "workers": [
        {"type": "router",
         "realms": [{"name": "realm1", "roles": [
            {"name": "anonymous", "permissions": [{"uri": "public.", "match": "prefix", "allow": {"call": true}}]},
            {"name": "user", "permissions": [{"uri": "demo.", "match": "prefix", "allow": {"call": true}}]}]}],
         "transports": [{"type": "rawsocket", "endpoint": {"type": "unix", "path": "router.sock"},
                         "serializers": ["cbor"], "auth": {"anonymous-proxy": {"type": "static"}}}]},
        proxy.clone(),
        proxy
    ]});
    let out = check_json(&cfg);
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "workers[1]: Crossbar.io's proxy worker: router workers[0] serves its transports (as its transports[1])",
        "workers[2]: Crossbar.io's proxy worker: router workers[0] serves its transports (as its transports[1])",
        "workers[0].transports[0].auth: this transport only took proxy workers (anonymous-proxy)",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    let node = Node::start(&cfg, port);
    let out = expect_python_ok(&node, "scenarios.py", &["proxied_logins", "json", "cbor"]);
    assert!(out.contains("ok proxied_logins cbor"), "{out}");
    // The proxy-only socket is not opened.
    assert!(!node.node_dir().join("router.sock").exists());
}

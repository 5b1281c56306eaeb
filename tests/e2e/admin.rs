//! The admin listener (`controller.admin`), probed with curl as a load
//! balancer, Prometheus or a person would: `/livez`, `/readyz`, `/status`,
//! `/metrics`, the bearer token, readiness of a stopped router, and the
//! drain on SIGTERM.

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::json;

use crate::support::{Node, expect_python_ok, free_port, router_config};

/// `curl` GET: (status code, body).
pub(crate) fn get(port: u16, path: &str, headers: &[&str]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-m", "5", "-w", "\n%{http_code}"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .expect("run curl (scripts/test installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Poll `path` until its status is `code` (10 s at most).
pub(crate) fn wait_code(port: u16, path: &str, code: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (c, body) = get(port, path, &[]);
        if c == code {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} stayed {c} ({body}), wanted {code}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

#[test]
fn probes_status_and_metrics() {
    let (ws, admin) = (free_port(), free_port());
    let mut cfg = router_config(ws);
    cfg["controller"] = json!({
        "admin": {"endpoint": {"type": "tcp", "port": admin}, "token": "${TRELLIS_TEST_ADMIN_TOKEN}"},
        "options": {"worker_ping_interval": 0.3, "worker_ping_timeout": 30, "drain_grace": 1.5}
    });
    cfg["workers"][0]["id"] = json!("router1");
    cfg["workers"][0]["transports"][0]["id"] = json!("public");
    let node = Node::start_with(&cfg, ws, &[("TRELLIS_TEST_ADMIN_TOKEN", "s3cret")], &[]);
    assert_eq!(get(admin, "/livez", &[]).0, 204);
    wait_code(admin, "/readyz", 204);

    // Traffic, then its figures.
    let out = expect_python_ok(&node, "scenarios.py", &["rpc_args_kwargs", "json"]);
    assert!(out.contains("ok rpc_args_kwargs json"), "{out}");
    let (code, body) = get(admin, "/metrics", &[]);
    assert_eq!(code, 401, "the token guards /metrics: {body}");
    assert!(body.contains("Authorization: Bearer"), "{body}");
    assert_eq!(
        get(admin, "/metrics", &["Authorization: Bearer wrong"]).0,
        401
    );
    let (code, text) = get(admin, "/metrics", &["Authorization: Bearer s3cret"]);
    assert_eq!(code, 200, "{text}");
    let w = "worker=\"router1\"";
    assert_eq!(
        metric(&text, &format!("trellis_worker_up{{{w},kind=\"router\"}}")),
        1.0
    );
    assert!(
        metric(
            &text,
            &format!("trellis_sessions_joined_total{{{w},realm=\"realm1\"}}")
        ) >= 2.0
    );
    assert!(
        metric(
            &text,
            &format!("trellis_messages_received_total{{{w},realm=\"realm1\",type=\"CALL\"}}")
        ) >= 1.0
    );
    assert!(
        metric(
            &text,
            &format!("trellis_calls_total{{{w},realm=\"realm1\",result=\"ok\"}}")
        ) >= 1.0
    );
    assert!(
        metric(
            &text,
            &format!(
                "trellis_authentications_total{{{w},transport=\"public\",result=\"success\"}}"
            )
        ) >= 2.0
    );
    assert!(
        metric(
            &text,
            &format!("trellis_connections_accepted_total{{{w},transport=\"public\"}}")
        ) >= 2.0
    );
    // No unbounded label: no procedure, topic, session or authid.
    assert!(!text.contains("com.example"), "{text}");

    let (code, body) = get(admin, "/status", &["Authorization: Bearer s3cret"]);
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(status["workers"][0]["id"], "router1");
    assert_eq!(status["workers"][0]["transports"][0]["name"], "public");
    assert!(status["workers"][0]["realms"]["realm1"]["sessions_joined"].as_u64() >= Some(2));
    let (_, html) = get(
        admin,
        "/status",
        &["Authorization: Bearer s3cret", "Accept: text/html"],
    );
    assert!(
        html.contains("<table>") && html.contains("router1"),
        "{html}"
    );

    // A router that stops answering: not ready, still alive.
    let router_pid = status["workers"][0]["pid"].as_i64().expect("pid") as i32;
    let pid = nix::unistd::Pid::from_raw(router_pid);
    nix::sys::signal::kill(pid, Signal::SIGSTOP).expect("stop the router");
    let body = wait_code(admin, "/readyz", 503);
    assert!(body.contains("worker:router1"), "{body}");
    assert_eq!(get(admin, "/livez", &[]).0, 204);
    nix::sys::signal::kill(pid, Signal::SIGCONT).expect("continue the router");
    wait_code(admin, "/readyz", 204);

    // SIGTERM: not ready at once, still serving during the grace.
    node.signal(Signal::SIGTERM);
    let body = wait_code(admin, "/readyz", 503);
    assert!(body.contains("draining"), "{body}");
    assert_eq!(get(admin, "/livez", &[]).0, 204, "alive while draining");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", ws)).is_ok(),
        "the listeners stay open while draining"
    );
    let mut node = node;
    let status = node.wait(Duration::from_secs(15));
    assert!(status.success(), "{status:?}\n{}", node.log());
    assert!(
        node.log().contains("draining: /readyz says 503"),
        "{}",
        node.log()
    );
}

#[test]
fn admin_config_errors_name_their_keys() {
    let mut cfg = router_config(free_port());
    cfg["controller"] = json!({
        "admin": {"endpoint": {"type": "unix", "interface": "localhost"}, "token": "${TRELLIS_NO_SUCH_VAR_X}"},
        "options": {"drain_grace": -1}
    });
    let out = crate::support::check_json(&cfg);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "controller.admin.endpoint.type: the admin listener listens on \"tcp\" only",
        "controller.admin.endpoint.interface: \"localhost\" is not an IP address",
        "controller.admin.token: the environment variable TRELLIS_NO_SUCH_VAR_X is not set",
        "controller.options.drain_grace: must be a number of seconds in [0, 600], found -1",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

/// `trellis status` names each transport's address; `trellis top` (and
/// `status --watch`) refreshes the table with each realm's message rates.
#[test]
fn status_shows_transports_and_top_shows_rates() {
    let ws = free_port();
    let node = Node::start(&router_config(ws), ws);
    node.wait_ready();
    let out = crate::support::trellis()
        .args(["status", "--node-dir"])
        .arg(node.node_dir())
        .output()
        .expect("run trellis status");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!("websocket 127.0.0.1:{ws}")),
        "{table}"
    );
    let mut top = crate::support::trellis()
        .args(["top", "--node-dir"])
        .arg(node.node_dir())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run trellis top");
    let out = expect_python_ok(&node, "scenarios.py", &["concurrent_calls", "json"]);
    assert!(out.contains("ok concurrent_calls json"), "{out}");
    std::thread::sleep(Duration::from_millis(2500));
    let _ = top.kill();
    let out = top.wait_with_output().expect("top's output");
    let screens = String::from_utf8_lossy(&out.stdout);
    assert!(screens.matches("\x1b[2J").count() >= 2, "{screens}");
    assert!(
        screens.contains("IN/S") && screens.contains("realm1"),
        "{screens}"
    );
}

/// A scripted load moves the counters by exactly what it did; Prometheus's
/// OpenMetrics parser reads the exposition; 10 000 sessions and 1 000
/// distinct topics add no series.
#[test]
fn metrics_move_exactly_and_stay_bounded() {
    let (ws, admin) = (free_port(), free_port());
    let mut cfg = router_config(ws);
    cfg["controller"] =
        json!({"admin": {"endpoint": {"type": "tcp", "port": admin}, "token": "t0k"}});
    cfg["workers"][0]["id"] = json!("router1");
    let node = Node::start(&cfg, ws);
    node.wait_ready();
    let out = crate::support::expect_python_args_ok(
        &node,
        "metrics_check.py",
        &[&format!("http://127.0.0.1:{admin}"), &node.url(), "t0k"],
    );
    assert!(out.contains("counters moved as expected"), "{out}");
    assert!(out.contains("ok metrics:"), "{out}");
}

/// `/readyz` says 503 until every router is ready (here: its Python
/// component takes two seconds in onJoin), while `/livez` says 204.
#[test]
fn readyz_waits_for_every_router() {
    let (ws, admin) = (free_port(), free_port());
    let components = crate::support::repo_root().join("tests/py/components");
    let mut cfg = router_config(ws);
    cfg["controller"] = json!({"admin": {"endpoint": {"type": "tcp", "port": admin}}});
    cfg["workers"][0]["id"] = json!("router1");
    cfg["workers"][0]["options"] = json!({
        "pythonpath": [components.display().to_string()],
        "python": crate::support::python().display().to_string()
    });
    cfg["workers"][0]["components"] =
        json!([{"type": "class", "classname": "app.SlowJoin", "realm": "realm1"}]);
    let trellis = std::process::Command::new(env!("CARGO_BIN_EXE_trellis"));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("node.json");
    std::fs::write(&path, cfg.to_string()).expect("write");
    let mut child = {
        let mut t = trellis;
        t.args(["start", "--config"])
            .arg(&path)
            .arg("--node-dir")
            .arg(dir.path().join("node"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start")
    };
    // The admin listener comes up before the workers.
    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        let (code, body) = get(admin, "/readyz", &[]);
        if code != 0 {
            break (code, body);
        }
        assert!(Instant::now() < deadline, "no admin listener");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(first.0, 503, "{first:?}");
    assert!(first.1.contains("worker:router1"), "{first:?}");
    assert_eq!(get(admin, "/livez", &[]).0, 204);
    wait_code(admin, "/readyz", 204);
    let _ = child.kill();
    let _ = child.wait();
}

/// The status page in headless Chromium shows the realm's sessions: the
/// container's built-in component is one.
#[test]
fn the_status_page_in_chromium() {
    let (ws, admin) = (free_port(), free_port());
    let mut cfg = router_config(ws);
    cfg["controller"] = json!({"admin": {"endpoint": {"type": "tcp", "port": admin}}});
    cfg["workers"][0]["transports"]
        .as_array_mut()
        .expect("transports")
        .push(json!({"type": "rawsocket", "endpoint": {"type": "unix", "path": "router1.sock"}}));
    cfg["workers"]
        .as_array_mut()
        .expect("workers")
        .push(json!({"type": "container", "id": "backend", "components": [
            {"type": "class", "classname": "trellis.balloon.Backend", "realm": "realm1"}]}));
    let node = Node::start(&cfg, ws);
    node.wait_ready();
    let page = format!("http://127.0.0.1:{admin}/status");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (ok, out) = crate::support::node_js("status_page.mjs", &[&page, "realm1"]);
        assert!(ok, "{out}\n--- node log\n{}", node.log());
        if out.contains("realm realm1: sessions 1") {
            break;
        }
        assert!(Instant::now() < deadline, "{out}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Hostile clients on the admin port: a half-sent request head is closed
/// after `request_head_timeout`; connections over `max_connections` are
/// refused and counted; and with the node at 256 file descriptors, a flood
/// of 300 such connections neither stops `trellis status` nor keeps the
/// controller from restarting a router killed with SIGKILL. Before, the
/// flood used up the descriptors, and the node exited on the restart.
#[test]
fn the_admin_listener_survives_a_flood_at_256_descriptors() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    let (ws, admin) = (free_port(), free_port());
    let mut cfg = router_config(ws);
    cfg["controller"] = json!({
        "admin": {"endpoint": {"type": "tcp", "port": admin}, "request_head_timeout": 2},
        "options": {"worker_ping_interval": 0.3}
    });
    cfg["workers"][0]["id"] = json!("router1");
    cfg["workers"][0]["options"] = json!({"restart": {"backoff_initial": 0.05}});
    let node = Node::start_with_fd_limit(&cfg, ws, 256);
    node.wait_ready();
    wait_code(admin, "/readyz", 204);

    // A half head is cut off after the deadline, not kept.
    let mut slow = TcpStream::connect(("127.0.0.1", admin)).expect("connect");
    slow.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
        .expect("half head");
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let t = Instant::now();
    let mut buf = [0u8; 256];
    let n = slow.read(&mut buf).unwrap_or(0);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(8),
        "a half head was closed after {waited:?} (got {:?}), wanted about 2 s",
        String::from_utf8_lossy(&buf[..n])
    );

    // The flood: 300 connections, each sending half a head.
    let mut flood = Vec::new();
    let mut refused = 0;
    for _ in 0..300 {
        match TcpStream::connect(("127.0.0.1", admin)) {
            Ok(mut s) => {
                let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n");
                flood.push(s);
            }
            Err(_) => refused += 1,
        }
    }
    // The controller still answers its control socket, and heals a
    // router killed meanwhile.
    let s = crate::node::status(&node.node_dir());
    let router = crate::node::worker(&s, "router1")["pid"]
        .as_i64()
        .expect("router pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(router).expect("pid")),
        Signal::SIGKILL,
    )
    .expect("kill the router");
    crate::node::wait_status(&node, "the router restarted after the flood", |s| {
        let w = crate::node::worker(s, "router1");
        w["state"] == "running" && w["restarts"] == 1 && w["pid"] != json!(router)
    });
    while TcpStream::connect(("127.0.0.1", ws)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Over the cap, a client is told why.
    let mut extra = TcpStream::connect(("127.0.0.1", admin)).expect("connect over the cap");
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut answer = String::new();
    let _ = extra.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 503") && answer.contains("max_connections"),
        "over the cap: {answer:?} ({refused} connects refused by the kernel)"
    );
    drop(flood);
    // Once the flood is gone, the probes answer again, and the refusals
    // are counted.
    wait_code(admin, "/livez", 204);
    let text = wait_code(admin, "/metrics", 200);
    assert!(
        metric(&text, "trellis_admin_connections_refused_total") >= 200.0,
        "{text}"
    );
    assert!(
        node.log().contains("admin connection refused"),
        "{}",
        node.log()
    );
    assert!(
        !node.log().contains("Too many open files"),
        "{}",
        node.log()
    );
}

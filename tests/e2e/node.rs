//! The controller: router, container and guest workers as supervised
//! processes; crashes, restarts, logs, status, stop, reload, systemd.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::support::{
    Node, PyOutput, free_port, python, repo_root, router_config, run_python, trellis,
};

/// The guest worker: tests/py/guest_component.py under the test venv.
fn guest_worker(id: &str) -> Value {
    json!({
        "type": "guest",
        "id": id,
        "executable": python().display().to_string(),
        "arguments": [repo_root().join("tests/py/guest_component.py").display().to_string()],
        "options": {"restart": {"backoff_initial": 0.05, "backoff_max": 0.5}}
    })
}

/// router1 (WebSocket on `port`), container1 and guest1.
fn full_node(port: u16) -> Value {
    let mut cfg = router_config(port);
    let workers = cfg["workers"].as_array_mut().expect("workers");
    workers[0]["options"] = json!({"restart": {"backoff_initial": 0.05}});
    workers.push(json!({"type": "container", "id": "container1",
        "options": {"restart": {"backoff_initial": 0.05}}}));
    workers.push(guest_worker("guest1"));
    cfg
}

/// `trellis status --json` of the node.
pub(crate) fn status(node_dir: &Path) -> Value {
    let out = trellis()
        .args(["status", "--json", "--node-dir"])
        .arg(node_dir)
        .output()
        .expect("run trellis status");
    assert!(out.status.success(), "trellis status failed: {out:?}");
    serde_json::from_slice(&out.stdout).expect("status --json is JSON")
}

pub(crate) fn worker<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["workers"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["id"] == id))
        .unwrap_or_else(|| panic!("no worker {id} in {status}"))
}

/// Poll the node's status until `pred` holds for it.
pub(crate) fn wait_status(node: &Node, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = status(&node.node_dir());
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status: {s}\n--- node log\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An autobahn-python session that registers and calls its own procedure
/// every 20 ms until told to stop; it must see no failure at all.
struct Bystander {
    stop: std::path::PathBuf,
    thread: std::thread::JoinHandle<PyOutput>,
}

impl Bystander {
    fn start(node: &Node) -> Bystander {
        let stop = node.dir.path().join("stop-bystander");
        let (url, stopfile) = (node.url(), stop.display().to_string());
        let thread = std::thread::spawn(move || {
            run_python(
                "node_peer.py",
                &["bystander", &url, &stopfile],
                Duration::from_secs(90),
            )
        });
        Bystander { stop, thread }
    }

    fn finish(self, node: &Node) {
        std::fs::write(&self.stop, b"").expect("stop file");
        let out = self.thread.join().expect("bystander thread");
        assert!(
            out.status.success() && out.stdout.contains("failures=0"),
            "the bystander was disturbed:\n{}\n{}\n--- node log\n{}",
            out.stdout,
            out.stderr,
            node.log()
        );
    }
}

fn running_with_restarts(s: &Value, id: &str, restarts: u64) -> bool {
    let w = worker(s, id);
    w["state"] == "running" && w["restarts"] == restarts
}

pub(crate) fn pid_of(s: &Value, id: &str) -> i32 {
    worker(s, id)["pid"].as_i64().expect("pid") as i32
}

/// A process exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn wait_gone(pids: &[i32], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| alive(p)) {
        let left: Vec<i32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        assert!(Instant::now() < deadline, "{what}: still alive: {left:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Call a procedure through autobahn-python until it answers.
fn call_until(node: &Node, procedure: &str) -> Value {
    let out = run_python(
        "node_peer.py",
        &["call", &node.url(), procedure, "20"],
        Duration::from_secs(40),
    );
    assert!(
        out.status.success(),
        "{procedure}: {}\n{}\n--- node log\n{}",
        out.stdout,
        out.stderr,
        node.log()
    );
    serde_json::from_str(out.stdout.trim()).expect("JSON result")
}

fn trellis_logs(node: &Node, args: &[&str]) -> std::process::Output {
    trellis()
        .arg("logs")
        .args(args)
        .arg("--node-dir")
        .arg(node.node_dir())
        .output()
        .expect("run trellis logs")
}

#[test]
fn a_node_heals_worker_crashes_and_stops_without_leftovers() {
    let port = free_port();
    let mut node = Node::start(&full_node(port), port);
    let first = call_until(&node, "com.guest.ping");
    let s = wait_status(&node, "every worker running", |s| {
        ["router1", "container1", "guest1"]
            .iter()
            .all(|id| running_with_restarts(s, id, 0))
    });
    let r = worker(&s, "router1");
    assert_eq!(r["type"], "router");
    assert!(r["memory_bytes"].as_u64().is_some_and(|m| m > 0), "{s}");
    assert!(r["sessions"]["realm1"].as_u64().is_some(), "{s}");
    assert_eq!(worker(&s, "container1")["type"], "container");
    assert_eq!(first["worker"], "guest1", "the guest sees its id: {first}");
    // The status shows the guest's shim, whose child the guest is.
    assert_eq!(
        first["ppid"].as_i64(),
        Some(i64::from(pid_of(&s, "guest1")))
    );

    // A bystander session on the router calls its own procedure throughout
    // the guest's and the container's crashes.
    let bystander = Bystander::start(&node);
    wait_status(&node, "the bystander and the guest joined", |s| {
        worker(s, "router1")["sessions"]["realm1"].as_u64() >= Some(2)
    });

    let guest_pid = pid_of(&s, "guest1");
    kill(Pid::from_raw(guest_pid), Signal::SIGKILL).expect("kill guest");
    let s = wait_status(&node, "the guest restarted", |s| {
        running_with_restarts(s, "guest1", 1)
    });
    assert_eq!(worker(&s, "guest1")["last_exit"], "killed by SIGKILL");
    let again = call_until(&node, "com.guest.ping");
    assert_ne!(again["pid"], first["pid"], "a new guest process answers");

    let container_pid = pid_of(&s, "container1");
    kill(Pid::from_raw(container_pid), Signal::SIGKILL).expect("kill container");
    wait_status(&node, "the container restarted", |s| {
        running_with_restarts(s, "container1", 1)
    });
    bystander.finish(&node);

    // The router dies: it comes back, and the guest component reconnects
    // and registers again by itself.
    let s = status(&node.node_dir());
    let router_pid = pid_of(&s, "router1");
    let guest_pid = pid_of(&s, "guest1");
    let killed = Instant::now();
    kill(Pid::from_raw(router_pid), Signal::SIGKILL).expect("kill router");
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            killed.elapsed() < Duration::from_secs(20),
            "router never came back"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    eprintln!(
        "router back on its port {} ms after kill -9",
        killed.elapsed().as_millis()
    );
    let back = call_until(&node, "com.guest.ping");
    assert_eq!(
        back["ppid"].as_i64(),
        Some(i64::from(guest_pid)),
        "the same guest"
    );
    assert!(
        back["joins"].as_i64() >= Some(2),
        "the guest re-joined: {back}"
    );
    let s = wait_status(&node, "the router restarted", |s| {
        running_with_restarts(s, "router1", 1)
    });

    // Logs: per worker, both streams, with `-n`.
    let out = trellis_logs(&node, &["guest1", "-n", "50"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("guest component joined (join 2)"), "{text}");
    assert!(text.contains("a line on stderr"), "{text}");
    let out = trellis_logs(&node, &["router1", "-n", "1"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    let out = trellis_logs(&node, &["nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no log for worker \"nosuch\""), "{err}");
    assert!(err.contains("router1"), "lists the known logs: {err}");
    // And the controller's stderr has the same lines, prefixed.
    assert!(
        node.log()
            .contains("[guest1] guest component joined (join 1)"),
        "{}",
        node.log()
    );

    // SIGTERM: every process of the node is gone, and the socket too.
    let mut pids: Vec<i32> = ["router1", "container1", "guest1"]
        .iter()
        .map(|id| pid_of(&s, id))
        .collect();
    pids.push(node.pid() as i32);
    node.signal(Signal::SIGTERM);
    let st = node.wait(Duration::from_secs(20));
    assert!(st.success(), "exit {st}\n{}", node.log());
    wait_gone(&pids, "after SIGTERM");
    assert!(!node.node_dir().join("control.sock").exists());
}

#[test]
fn killing_the_controller_leaves_no_orphans() {
    let port = free_port();
    let node_cfg = full_node(port);
    let mut node = Node::start(&node_cfg, port);
    let s = wait_status(&node, "every worker running", |s| {
        ["router1", "container1", "guest1"]
            .iter()
            .all(|id| running_with_restarts(s, id, 0))
    });
    let pids: Vec<i32> = ["router1", "container1", "guest1"]
        .iter()
        .map(|id| pid_of(&s, id))
        .collect();
    node.signal(Signal::SIGKILL);
    node.wait(Duration::from_secs(5));
    wait_gone(&pids, "after kill -9 of the controller");
}

#[test]
fn restart_policies_backoff_and_giving_up() {
    let port = free_port();
    let mut cfg = router_config(port);
    let workers = cfg["workers"].as_array_mut().expect("workers");
    workers.push(json!({"type": "guest", "id": "crashy", "executable": "sh",
        "arguments": ["-c", "echo boom >&2; sleep 0.1; exit 3"],
        "options": {"restart": {"max_restarts": 2, "window": 60, "backoff_initial": 0.05, "backoff_max": 0.1}}}));
    workers.push(json!({"type": "guest", "id": "oneshot", "executable": "sh",
        "arguments": ["-c", "echo done"],
        "options": {"restart": {"policy": "on-failure"}}}));
    let node = Node::start(&cfg, port);
    let s = wait_status(&node, "crashy given up, oneshot done", |s| {
        worker(s, "crashy")["state"] == "failed" && worker(s, "oneshot")["state"] == "stopped"
    });
    assert_eq!(worker(&s, "crashy")["restarts"], 2);
    assert_eq!(worker(&s, "crashy")["last_exit"], "exited with status 3");
    assert_eq!(worker(&s, "oneshot")["restarts"], 0);
    assert_eq!(worker(&s, "router1")["state"], "running");
    let log = node.log();
    assert!(log.contains("2 restarts within 60 s"), "{log}");
    assert!(log.contains("restarting in 50 ms"), "{log}");
    assert!(log.contains("restarting in 100 ms"), "{log}");
    let out = trellis_logs(&node, &["crashy"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("boom").count(), 3, "{text}");
    // The table view names the state and the last exit.
    let out = trellis()
        .args(["status", "--node-dir"])
        .arg(node.node_dir())
        .output()
        .expect("status");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("crashy")
            && l.contains("failed")
            && l.contains("exited with status 3")),
        "{table}"
    );
}

#[test]
fn config_errors_start_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("node.json");
    let port = free_port();
    let mut cfg = router_config(port);
    let workers = cfg["workers"].as_array_mut().expect("workers");
    workers.push(json!({"type": "container", "id": "c1", "components": [{"type": "class", "classname": "Y", "realm": "nope",
        "transport": {"type": "rawsocket", "endpoint": {"type": "unix", "path": "missing.sock"}, "serializer": "xml"}}]}));
    workers.push(json!({"type": "guest", "id": "router1", "executable": "true", "options": {"restart": {"polcy": "always"}}}));
    workers.push(json!({"type": "guest", "id": "g2"}));
    std::fs::write(&p, serde_json::to_vec(&cfg).expect("json")).expect("write");
    let node_dir = dir.path().join("node");
    let out = trellis()
        .args(["start", "--config"])
        .arg(&p)
        .arg("--node-dir")
        .arg(&node_dir)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "workers[1].components[0].classname: \"Y\": a Python component is named as module.Class",
        "workers[1].components[0].transport.serializer: unknown serializer \"xml\"",
        "workers[1].components[0].realm: no router of this node has realm \"nope\"",
        "workers[1].components[0].transport.endpoint.path: no router of this node has a rawsocket transport on the unix socket \"missing.sock\"",
        "workers[2].options.restart.polcy: unknown field `polcy`",
        "workers[3]: missing field `executable`",
        "nothing was started",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(!node_dir.join("control.sock").exists());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    // status and stop say plainly that nothing runs there.
    let out = trellis()
        .args(["status", "--node-dir"])
        .arg(&node_dir)
        .output()
        .expect("status");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no node is running in"),
        "{out:?}"
    );
}

#[test]
fn a_second_node_in_the_same_directory_is_refused() {
    let port = free_port();
    let node = Node::start(&router_config(port), port);
    let other = free_port();
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("node.json");
    std::fs::write(&p, serde_json::to_vec(&router_config(other)).expect("json")).expect("write");
    let out = trellis()
        .args(["start", "--config"])
        .arg(&p)
        .arg("--node-dir")
        .arg(node.node_dir())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another process is listening"), "{err}");
    // The first node is untouched.
    assert_eq!(
        worker(&status(&node.node_dir()), "router1")["state"],
        "running"
    );
}

#[test]
fn sighup_reloads_and_trellis_stop_stops() {
    let port = free_port();
    let mut node = Node::start(&router_config(port), port);
    let cfg_path = node.dir.path().join("node.json");
    let before = pid_of(&status(&node.node_dir()), "router1");

    // Add a guest: it starts; the unchanged router is not touched.
    let mut cfg = router_config(port);
    cfg["workers"]
        .as_array_mut()
        .expect("workers")
        .push(json!({"type": "guest", "id": "added", "executable": "sleep", "arguments": ["300"]}));
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).expect("json")).expect("write");
    node.signal(Signal::SIGHUP);
    let s = wait_status(&node, "the added guest", |s| {
        s["workers"].as_array().is_some_and(|w| w.len() == 2)
            && worker(s, "added")["state"] == "running"
    });
    assert_eq!(pid_of(&s, "router1"), before, "the router kept running");

    // An invalid config changes nothing.
    std::fs::write(
        &cfg_path,
        br#"{"version": 2, "workers": [{"type": "router", "realms": 5}]}"#,
    )
    .expect("write");
    node.signal(Signal::SIGHUP);
    node.wait_log("the new config is invalid; the node keeps running on the old one");
    assert!(
        node.log().contains("workers[0].realms: invalid type"),
        "{}",
        node.log()
    );
    let s = status(&node.node_dir());
    assert_eq!(pid_of(&s, "router1"), before);
    assert_eq!(worker(&s, "added")["state"], "running");

    // Remove the guest again: it is stopped, the router stays.
    std::fs::write(
        &cfg_path,
        serde_json::to_vec(&router_config(port)).expect("json"),
    )
    .expect("write");
    let guest = pid_of(&s, "added");
    node.signal(Signal::SIGHUP);
    wait_status(&node, "the guest removed", |s| {
        s["workers"].as_array().is_some_and(|w| w.len() == 1)
    });
    wait_gone(&[guest], "the removed guest");

    let out = trellis()
        .args(["stop", "--node-dir"])
        .arg(node.node_dir())
        .output()
        .expect("stop");
    assert!(out.status.success(), "{out:?}");
    let st = node.wait(Duration::from_secs(10));
    assert!(st.success(), "{st}");
    wait_gone(&[before], "the router after trellis stop");
}

#[test]
fn systemd_hears_ready_and_stopping() {
    let dir = tempfile::tempdir().expect("tmp");
    let (sock, notify) = notify_socket(dir.path());
    let port = free_port();
    let mut cfg = router_config(port);
    cfg["workers"]
        .as_array_mut()
        .expect("workers")
        .push(json!({"type": "container", "id": "c1", "options": {"threads": 3}}));
    let mut node = Node::start_with(
        &cfg,
        port,
        &[
            ("NOTIFY_SOCKET", notify.as_str()),
            ("WATCHDOG_USEC", "400000"),
        ],
        &["--log-format", "json"],
    );
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notification");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.contains("READY=1"), "{msg}");
    // Watchdog pings at half the interval.
    let n = sock.recv(&mut buf).expect("a watchdog ping");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "WATCHDOG=1");
    // Ready means every worker is up.
    let s = status(&node.node_dir());
    assert!(
        s["workers"]
            .as_array()
            .expect("workers")
            .iter()
            .all(|w| w["state"] == "running"),
        "{s}"
    );
    // `options.threads` reaches a container's runtime too.
    node.wait_worker_log("c1", "ready line with threads 3", |log| {
        log.contains("container worker ready")
            && (log.contains("\"threads\":3") || log.contains("threads=3"))
    });
    node.signal(Signal::SIGTERM);
    loop {
        let n = sock.recv(&mut buf).expect("a notification");
        let msg = String::from_utf8_lossy(&buf[..n]);
        if msg.contains("STOPPING=1") {
            break;
        }
        assert_eq!(msg.trim(), "WATCHDOG=1");
    }
    assert!(node.wait(Duration::from_secs(10)).success());
    // --log-format json: every stderr line is a JSON object; workers' lines
    // carry their id.
    let log = node.log();
    let mut from_router = 0;
    for line in log.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v["worker"] == "router1" {
            from_router += 1;
        }
    }
    assert!(from_router > 0, "{log}");
}

fn expect_error(node: &Node, procedure: &str) -> String {
    let out = run_python(
        "node_peer.py",
        &["error", &node.url(), procedure],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    out.stdout.trim().to_owned()
}

#[test]
fn sighup_changes_permissions_and_realms_in_place_without_dropping_sessions() {
    let port = free_port();
    let node = Node::start(&router_config(port), port);
    let cfg_path = node.dir.path().join("node.json");
    let router = pid_of(&status(&node.node_dir()), "router1");
    let bystander = Bystander::start(&node);
    wait_status(&node, "the bystander joined", |s| {
        worker(s, "router1")["sessions"]["realm1"].as_u64() >= Some(1)
    });
    assert_eq!(
        expect_error(&node, "com.secret.x"),
        "wamp.error.no_such_procedure"
    );

    // Only com.bystander. stays allowed; a second realm appears.
    let mut cfg = router_config(port);
    let realm = &mut cfg["workers"][0]["realms"][0];
    realm["roles"][0]["permissions"][0]["uri"] = json!("com.bystander.");
    let realm2 = json!({"name": "realm2", "roles": [{"name": "anonymous", "permissions": []}]});
    cfg["workers"][0]["realms"]
        .as_array_mut()
        .expect("realms")
        .push(realm2);
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg).expect("json")).expect("write");
    node.signal(Signal::SIGHUP);
    node.wait_log("realms changed in place; sessions kept");
    assert!(
        node.log().contains("realm \"realm2\" added"),
        "{}",
        node.log()
    );
    assert_eq!(
        expect_error(&node, "com.secret.x"),
        "wamp.error.not_authorized"
    );
    let s = status(&node.node_dir());
    assert_eq!(
        pid_of(&s, "router1"),
        router,
        "the router was not restarted"
    );
    assert_eq!(worker(&s, "router1")["sessions"]["realm2"], 0, "{s}");

    bystander.finish(&node);

    // A transport change cannot happen in place: that router restarts alone.
    let other = free_port();
    let mut cfg2 = cfg.clone();
    cfg2["workers"][0]["transports"][0]["endpoint"]["port"] = json!(other);
    std::fs::write(&cfg_path, serde_json::to_vec(&cfg2).expect("json")).expect("write");
    node.signal(Signal::SIGHUP);
    let s = wait_status(&node, "the router restarted on the new port", |s| {
        worker(s, "router1")["state"] == "running" && pid_of(s, "router1") != router
    });
    assert_eq!(
        worker(&s, "router1")["restarts"],
        0,
        "a reload is not a crash"
    );
    assert!(
        node.log().contains("its config changed: restarting it"),
        "{}",
        node.log()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", other)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing on the new port\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The management procedures on the control link, called the way
/// `trellis status` does (our own client on the node's control socket).
#[test]
fn management_procedures_log_level_follow_and_worker_shutdown() {
    let port = free_port();
    let mut cfg = router_config(port);
    cfg["workers"][0]["options"] = json!({"loglevel": "warn"});
    let node = Node::start(&cfg, port);
    let node_dir = node.node_dir();
    let log_path = node_dir.join("logs/router1.log");
    // `trellis logs -f` follows the file while things happen.
    let mut follow = Follower(Some(
        trellis()
            .args(["logs", "router1", "-f", "-n", "0", "--node-dir"])
            .arg(&node_dir)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("trellis logs -f"),
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let link = trellis::control::connect(&node_dir, "test")
            .await
            .expect("control link");
        // options.loglevel = warn: a connection leaves no info line.
        call_until(&node, "wamp.session.count");
        let before = std::fs::read_to_string(&log_path).unwrap_or_default();
        assert!(!before.contains("connection closed"), "{before}");
        let e = link
            .call(
                "worker.router1.set_loglevel",
                proto::Payload::args(vec!["loud".into()]),
            )
            .await
            .expect_err("a bad level is refused");
        assert_eq!(e.uri, "wamp.error.invalid_argument");
        assert!(e.to_string().contains("invalid log level"), "{e}");
        link.call(
            "worker.router1.set_loglevel",
            proto::Payload::args(vec!["info".into()]),
        )
        .await
        .expect("set_loglevel");
        call_until(&node, "wamp.session.count");
        let after = std::fs::read_to_string(&log_path).unwrap_or_default();
        assert!(after.contains("log level changed"), "{after}");
        assert!(after.contains("session joined"), "{after}");

        let st = link
            .call("worker.router1.status", proto::Payload::default())
            .await
            .expect("status");
        assert_eq!(
            st.kwargs.get("type").and_then(proto::Value::as_str),
            Some("router")
        );
        // A worker asked to shut down exits 0; policy `always` brings it back.
        link.call("worker.router1.shutdown", proto::Payload::default())
            .await
            .expect("shutdown");
        link.leave().await;
    });
    let s = wait_status(&node, "the router back after its shutdown", |s| {
        running_with_restarts(s, "router1", 1)
    });
    assert_eq!(worker(&s, "router1")["last_exit"], "exited with status 0");
    std::thread::sleep(Duration::from_millis(500));
    let mut child = follow.0.take().expect("follower");
    let _ = child.kill();
    let out = child.wait_with_output().expect("follow output");
    let followed = String::from_utf8_lossy(&out.stdout);
    assert!(followed.contains("log level changed"), "{followed}");
    assert!(
        followed.contains("shutdown requested over the control link")
            && followed.contains("router worker stopped"),
        "{followed}"
    );
}

/// `trellis logs -f`, killed even when the test fails.
struct Follower(Option<std::process::Child>);

impl Drop for Follower {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A datagram socket standing in for systemd's `NOTIFY_SOCKET`, and its path.
fn notify_socket(dir: &Path) -> (std::os::unix::net::UnixDatagram, String) {
    let path = dir.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    (sock, path.display().to_string())
}

/// Read a pid a guest wrote into the node directory.
fn wait_pid_file(node: &Node, name: &str) -> i32 {
    let path = node.node_dir().join(name);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(pid) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return pid;
        }
        assert!(Instant::now() < deadline, "no {name} written by the guest");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn killing_the_controller_leaves_no_grandchild_of_a_guest() {
    let port = free_port();
    let mut cfg = router_config(port);
    // A guest with children of its own: one in its process group, one
    // that left it (setsid), as daemons do.
    cfg["workers"].as_array_mut().expect("workers").push(json!({
        "type": "guest", "id": "family", "executable": "sh",
        "arguments": ["-c", "sleep 300 & echo $! > kid.pid; setsid sleep 301 & echo $! > daemon.pid; wait"]
    }));
    let mut node = Node::start(&cfg, port);
    let kid = wait_pid_file(&node, "kid.pid");
    let daemon = wait_pid_file(&node, "daemon.pid");
    let s = wait_status(&node, "the guest running", |s| {
        running_with_restarts(s, "family", 0)
    });
    let shim = pid_of(&s, "family");
    assert!(alive(kid) && alive(daemon));
    node.signal(Signal::SIGKILL);
    node.wait(Duration::from_secs(5));
    wait_gone(
        &[shim, kid, daemon],
        "a guest's children after kill -9 of the controller",
    );
}

#[test]
fn an_unresponsive_worker_is_shown_then_killed_and_restarted() {
    let port = free_port();
    let mut cfg = router_config(port);
    cfg["controller"] = json!({"options": {"worker_ping_interval": 0.2, "worker_ping_timeout": 2}});
    let workers = cfg["workers"].as_array_mut().expect("workers");
    workers.push(json!({"type": "container", "id": "container1",
        "options": {"restart": {"backoff_initial": 0.05}}}));
    let node = Node::start(&cfg, port);
    let s = wait_status(&node, "the container running", |s| {
        running_with_restarts(s, "container1", 0)
    });
    let pid = pid_of(&s, "container1");
    // A stopped process answers nothing, like a deadlocked one.
    kill(Pid::from_raw(pid), Signal::SIGSTOP).expect("SIGSTOP");
    wait_status(&node, "the container shown as unresponsive", |s| {
        worker(s, "container1")["state"] == "unresponsive"
    });
    let s = wait_status(&node, "the container killed and restarted", |s| {
        running_with_restarts(s, "container1", 1)
    });
    assert_ne!(pid_of(&s, "container1"), pid);
    let last = worker(&s, "container1")["last_exit"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        last.contains("killed by SIGKILL by the controller: no answer to pings for 2 s"),
        "{last}"
    );
    assert!(!alive(pid), "the stopped process is gone");
    // The router served throughout and still does.
    assert_eq!(worker(&s, "router1")["restarts"], 0);
    assert_eq!(worker(&s, "router1")["state"], "running");
}

/// A router that crashes more often than its restart limit allows.
fn router_giving_up(policy: &str) -> (Value, u16) {
    let port = free_port();
    let mut cfg = router_config(port);
    cfg["controller"] = json!({"options": {"on_router_failure": policy}});
    let workers = cfg["workers"].as_array_mut().expect("workers");
    workers[0]["options"] =
        json!({"restart": {"max_restarts": 1, "window": 60, "backoff_initial": 0.05}});
    workers.push(json!({"type": "container", "id": "container1"}));
    (cfg, port)
}

fn kill_router_twice(node: &Node) {
    let s = wait_status(node, "the router running", |s| {
        running_with_restarts(s, "router1", 0)
    });
    kill(Pid::from_raw(pid_of(&s, "router1")), Signal::SIGKILL).expect("kill router");
    let s = wait_status(node, "the router restarted", |s| {
        running_with_restarts(s, "router1", 1)
    });
    kill(Pid::from_raw(pid_of(&s, "router1")), Signal::SIGKILL).expect("kill router");
}

#[test]
fn a_router_that_gives_up_stops_the_node_with_a_failure_status() {
    let (cfg, port) = router_giving_up("stop");
    let mut node = Node::start(&cfg, port);
    kill_router_twice(&node);
    let st = node.wait(Duration::from_secs(20));
    assert!(!st.success(), "the node exited 0 with its router failed");
    let log = node.log();
    assert!(
        log.contains("router worker \"router1\" failed for good")
            && log.contains("on_router_failure: stop"),
        "{log}"
    );
}

#[test]
fn a_router_that_gives_up_starves_the_watchdog_when_kept() {
    let dir = tempfile::tempdir().expect("tmp");
    let (sock, notify) = notify_socket(dir.path());
    let (cfg, port) = router_giving_up("keep");
    let mut node = Node::start_with(
        &cfg,
        port,
        &[
            ("NOTIFY_SOCKET", notify.as_str()),
            ("WATCHDOG_USEC", "400000"),
        ],
        &[],
    );
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("READY");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    kill_router_twice(&node);
    let s = wait_status(&node, "the router failed", |s| {
        worker(s, "router1")["state"] == "failed"
    });
    assert_eq!(
        worker(&s, "container1")["state"],
        "running",
        "the rest keeps running"
    );
    // Whatever was in flight arrives at once; then no more watchdog pings
    // (they came every 200 ms).
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    while sock.recv(&mut buf).is_ok() {}
    sock.set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("timeout");
    match sock.recv(&mut buf) {
        Err(_) => {}
        Ok(n) => {
            let msg = String::from_utf8_lossy(&buf[..n]);
            assert!(
                !msg.contains("WATCHDOG=1"),
                "the watchdog is still fed: {msg}"
            );
        }
    }
    node.signal(Signal::SIGTERM);
    let st = node.wait(Duration::from_secs(20));
    assert!(
        !st.success(),
        "a node whose router failed exited 0 on SIGTERM"
    );
}

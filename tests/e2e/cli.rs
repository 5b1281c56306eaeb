//! The command line: check, start with a bad config, graceful stop.

use std::time::Duration;

use serde_json::json;

use crate::support::{Node, free_port, router_config, trellis, trellis_check};

#[test]
fn check_accepts_the_default_and_the_example() {
    let out = trellis()
        .arg("check")
        .env_remove("TRELLIS_CONFIG")
        .current_dir("/")
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("node.json");
    std::fs::write(
        &p,
        serde_json::to_vec(&router_config(free_port())).expect("json"),
    )
    .expect("write");
    let out = trellis_check(&p);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));
}

#[test]
fn check_warns_where_rule_order_decides() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("node.json");
    let mut cfg = router_config(free_port());
    cfg["workers"][0]["realms"][0]["roles"][0]["permissions"] = json!([
        {"uri": "com.", "match": "prefix", "allow": {"call": true}},
        {"uri": "com..private", "match": "wildcard", "allow": {}},
        {"uri": "com.app.ping", "allow": {}}
    ]);
    std::fs::write(&p, serde_json::to_vec(&cfg).expect("json")).expect("write");
    let out = trellis_check(&p);
    assert!(out.status.success(), "a warning is not an error: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: workers[0].realms[0].roles[0].permissions[0] and permissions[1]: the rules wildcard \"com..private\" and prefix \"com.\" overlap"),
        "{err}"
    );
    assert_eq!(err.matches("warning:").count(), 1, "{err}");
}

#[test]
fn check_reports_every_error_with_key_paths_and_exits_78() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("node.json");
    let cfg = json!({
        "version": 2,
        "workers": [{
            "type": "router",
            "realms": [{"name": "realm1", "roles": [{"name": "anonymous"}]}],
            "transports": [
                {"type": "websocket", "endpoint": {"type": "tcp", "port": 8080}, "serializers": ["json", "yaml"]},
                {"type": "websocket", "endpoint": {"type": "tcp", "port": 8080}, "auth": {"anonymous": {"role": "anonymous", "realm": "nowhere"}}}
            ]
        }]
    });
    std::fs::write(&p, serde_json::to_vec(&cfg).expect("json")).expect("write");
    let out = trellis_check(&p);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&p.display().to_string()), "{err}");
    assert!(err.contains("3 problems"), "{err}");
    assert!(
        err.contains("workers[0].transports[0].serializers[1]: unknown serializer \"yaml\""),
        "{err}"
    );
    assert!(
        err.contains(
            "workers[0].transports[1].auth.anonymous.realm: realm \"nowhere\" is not defined"
        ),
        "{err}"
    );
    assert!(
        err.contains("workers[0].transports[1].endpoint.port: port 8080 is already used"),
        "{err}"
    );

    std::fs::write(&p, r#"{"version": 2, "workers": [{"type": "router", "realms": [], "transports": [{"type": "websocket", "endpoint": {"type": "tcp", "port": "80"}}]}]}"#).expect("write");
    let out = trellis_check(&p);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "workers[0].transports[0].endpoint.port: invalid type: string \"80\", expected u16"
        ),
        "{err}"
    );
}

#[test]
fn start_with_invalid_config_starts_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("node.json");
    let port = free_port();
    let mut cfg = router_config(port);
    cfg["workers"][0]["realms"][0]["roles"][0]["permissions"][0]["match"] = json!("fuzzy");
    std::fs::write(&p, serde_json::to_vec(&cfg).expect("json")).expect("write");
    let out = trellis()
        .args(["start", "--config"])
        .arg(&p)
        .arg("--node-dir")
        .arg(dir.path().join("node"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown match policy \"fuzzy\""), "{err}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something listens on {port}"
    );
}

#[test]
fn start_reports_a_port_in_use() {
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = blocker.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("node.json");
    std::fs::write(&p, serde_json::to_vec(&router_config(port)).expect("json")).expect("write");
    let out = trellis()
        .args(["start", "--config"])
        .arg(&p)
        .arg("--node-dir")
        .arg(dir.path().join("node"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot listen on 127.0.0.1:{port} for transports[0]"
        )),
        "{err}"
    );
}

#[test]
fn sigterm_says_goodbye_to_sessions_and_exits_0() {
    let port = free_port();
    let mut node = Node::start(&router_config(port), port);
    let url = node.url();
    let py = std::thread::spawn(move || {
        crate::support::run_python("shutdown_peer.py", &[&url], Duration::from_secs(30))
    });
    // Wait until the peer has joined.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // The router worker's line (the controller's control-link sessions log
    // "session joined" too).
    while !node
        .log()
        .lines()
        .any(|l| l.starts_with("[router1]") && l.contains("session joined"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "peer never joined:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    node.signal(nix::sys::signal::Signal::SIGTERM);
    let status = node.wait(Duration::from_secs(10));
    assert!(
        status.success(),
        "trellis exited with {status}:\n{}",
        node.log()
    );
    let out = py.join().expect("python thread");
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("left wamp.close.system_shutdown"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
}

/// A router config in YAML, as Crossbar.io's config.yaml has it.
fn yaml_config(port: u16) -> String {
    format!(
        r#"# Crossbar.io's YAML layout
version: 2
workers:
  - type: router
    realms:
      - name: realm1
        roles:
          - name: anonymous
            permissions:
              - uri: ""
                match: prefix
                allow: {{call: true, register: true, publish: true, subscribe: true}}
    transports:
      - type: websocket
        endpoint: {{type: tcp, interface: 127.0.0.1, port: {port}}}
"#
    )
}

#[test]
fn crossbar_layout_yaml_and_cbdir() {
    // `trellis check` in a directory with .crossbar/config.json checks that
    // file, not the embedded default.
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join(".crossbar")).expect("mkdir");
    std::fs::write(
        dir.path().join(".crossbar/config.json"),
        r#"{"version": 2, "workers": [{"type": "router", "realms": [], "transports": [{"type": "websocket", "endpoint": {"type": "tcp", "port": 99999}}]}]}"#,
    )
    .expect("write");
    let out = trellis()
        .arg("check")
        .env_remove("TRELLIS_CONFIG")
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(".crossbar/config.json"), "{err}");
    // YAML, checked and started from a Crossbar.io node directory.
    let port = free_port();
    let cbdir = dir.path().join("node");
    std::fs::create_dir_all(&cbdir).expect("mkdir");
    std::fs::write(cbdir.join("config.yaml"), yaml_config(port)).expect("write");
    let out = trellis()
        .args(["check", "--cbdir"])
        .arg(&cbdir)
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("config.yaml: OK"),
        "{out:?}"
    );
    let mut child = trellis()
        .args(["start", "--cbdir"])
        .arg(&cbdir)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start");
    crate::support::wait_port(port, "the YAML node");
    assert!(
        cbdir.join("control.sock").exists(),
        "--cbdir is the node directory"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// `trellis init` writes a node that checks and runs: its page is served
/// and a WAMP client joins at /ws; `trellis convert` turns its commented
/// JSON into YAML that checks too; `keygen` prints a pair; nothing is
/// overwritten.
#[test]
fn init_convert_and_keygen() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = trellis()
        .arg("init")
        .arg(dir.path())
        .output()
        .expect("run init");
    assert!(out.status.success(), "{out:?}");
    let out = trellis()
        .arg("check")
        .current_dir(dir.path())
        .output()
        .expect("run check");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(".trellis/node.json: OK"));
    let again = trellis()
        .arg("init")
        .arg(dir.path())
        .output()
        .expect("init");
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));

    // Convert to YAML, on another port, and run that.
    let port = free_port();
    let json = dir.path().join(".trellis/node.json");
    let text = std::fs::read_to_string(&json).expect("node.json");
    std::fs::write(&json, text.replace("8080", &port.to_string())).expect("write");
    let yaml = dir.path().join(".trellis/node.yaml");
    let out = trellis()
        .arg("convert")
        .args([&json, &yaml])
        .output()
        .expect("convert");
    assert!(out.status.success(), "{out:?}");
    let out = trellis()
        .args(["check", "--config"])
        .arg(&yaml)
        .current_dir(dir.path())
        .output()
        .expect("check the YAML");
    assert!(out.status.success(), "{out:?}");
    let mut node = std::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["start", "--config"])
        .arg(&yaml)
        .current_dir(dir.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start");
    crate::support::wait_port(port, "the init node");
    let page = std::process::Command::new("curl")
        .args(["-s", "-m", "5", &format!("http://127.0.0.1:{port}/")])
        .output()
        .expect("curl");
    assert!(String::from_utf8_lossy(&page.stdout).contains("Trellis is running"));
    let py = crate::support::run_python(
        "scenarios.py",
        &[&format!("ws://127.0.0.1:{port}/ws"), "join_leave", "json"],
        Duration::from_secs(30),
    );
    assert!(
        py.stdout.contains("ok join_leave json"),
        "{}{}",
        py.stdout,
        py.stderr
    );
    let _ = node.kill();
    let _ = node.wait();

    let out = trellis().arg("keygen").output().expect("keygen");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("public key (hex):") && text.contains("authorized_keys"),
        "{text}"
    );
}

//! TLS on TCP endpoints: autobahn-python over wss:// and TLS RawSocket
//! verifying the router's certificate; the certificate read again on
//! SIGHUP without a restart; a plain client refused without harm; check
//! naming what is wrong.

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;

use crate::support::{Node, check_json, expect_python_args_ok, free_port, router_config};

/// A self-signed certificate for "localhost": (certificate PEM, key PEM).
fn cert() -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("rcgen");
    (c.cert.pem(), c.signing_key.serialize_pem())
}

fn tls_config(ws: u16, rs: u16) -> serde_json::Value {
    let mut cfg = router_config(ws);
    let tls = json!({"key": "server.key", "certificate": "server.crt"});
    cfg["workers"][0]["transports"][0]["endpoint"]["tls"] = tls.clone();
    cfg["workers"][0]["transports"]
        .as_array_mut()
        .expect("transports")
        .push(json!({"type": "rawsocket",
                     "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": rs, "tls": tls}}));
    cfg
}

#[test]
fn wss_and_tls_rawsocket_with_a_certificate_reloaded_on_sighup() {
    let (ws, rs) = (free_port(), free_port());
    let (a_cert, a_key) = cert();
    let (b_cert, b_key) = cert();
    let node = Node::start_with_files(
        &tls_config(ws, rs),
        ws,
        &[("server.crt", &a_cert), ("server.key", &a_key)],
    );
    node.wait_ready();
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_a = dir.path().join("a.pem");
    let ca_b = dir.path().join("b.pem");
    std::fs::write(&ca_a, &a_cert).expect("write");
    std::fs::write(&ca_b, &b_cert).expect("write");
    let url = format!("wss://127.0.0.1:{ws}/ws");
    let run = |ca: &std::path::Path, expect: &str| {
        expect_python_args_ok(
            &node,
            "tls_check.py",
            &[&url, &rs.to_string(), &ca.display().to_string(), expect],
        )
    };
    let out = run(&ca_a, "ok");
    assert!(
        out.contains("wss ok") && out.contains("rawsocket tls ok"),
        "{out}"
    );
    let out = run(&ca_b, "refused");
    assert!(out.contains("wss refused"), "{out}");

    // A client speaking plain WebSocket to the TLS port is refused; the
    // router serves on.
    let plain = crate::support::run_python(
        "scenarios.py",
        &[&format!("ws://127.0.0.1:{ws}/ws"), "join_leave", "json"],
        Duration::from_secs(30),
    );
    assert!(!plain.status.success(), "plain text reached a TLS port");

    // New certificate files, SIGHUP: new handshakes get them.
    std::fs::write(node.node_dir().join("server.crt"), &b_cert).expect("write");
    std::fs::write(node.node_dir().join("server.key"), &b_key).expect("write");
    node.signal(Signal::SIGHUP);
    node.wait_log("TLS certificate and key read again");
    let out = run(&ca_b, "ok");
    assert!(
        out.contains("wss ok") && out.contains("rawsocket tls ok"),
        "{out}"
    );
    let out = run(&ca_a, "refused");
    assert!(out.contains("rawsocket tls refused"), "{out}");

    // A broken file on SIGHUP: the old certificate stays, and the log says why.
    std::fs::write(node.node_dir().join("server.key"), "not a key").expect("write");
    node.signal(Signal::SIGHUP);
    node.wait_log("the old certificate stays in use");
    let out = run(&ca_b, "ok");
    assert!(out.contains("wss ok"), "{out}");
}

#[test]
fn check_names_tls_problems() {
    let (ws, rs) = (free_port(), free_port());
    // Structure: TLS on a unix socket, client certificates with no CA.
    let mut cfg = tls_config(ws, rs);
    cfg["workers"][0]["transports"]
        .as_array_mut()
        .expect("transports")
        .push(
            json!({"type": "rawsocket", "endpoint": {"type": "unix", "path": "r.sock",
                     "tls": {"key": "k", "certificate": "c"}}}),
        );
    cfg["workers"][0]["transports"][1]["endpoint"]["tls"]["ca_certificates"] = json!([]);
    let out = check_json(&cfg);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "workers[0].transports[2].endpoint.tls: TLS is for tcp endpoints",
        "workers[0].transports[1].endpoint.tls.ca_certificates: list at least one CA certificate file",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    // Files: check reads them (from the node directory).
    let mut cfg = tls_config(ws, rs);
    cfg["workers"][0]["transports"][0]["endpoint"]["tls"]["dhparam"] = json!("dh.pem");
    let out = check_json(&cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("workers[0].transports[0].endpoint.tls.certificate:")
            && err.contains("server.crt"),
        "{err}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let (c, k) = cert();
    std::fs::write(dir.path().join("server.crt"), c).expect("write");
    std::fs::write(dir.path().join("server.key"), k).expect("write");
    let path = dir.path().join("node.json");
    std::fs::write(&path, cfg.to_string()).expect("write");
    let out = crate::support::trellis()
        .args(["check", "--config"])
        .arg(&path)
        .arg("--node-dir")
        .arg(dir.path())
        .output()
        .expect("check");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("workers[0].transports[0].endpoint.tls.dhparam: accepted and not used"),
        "{out:?}"
    );
}

//! The balloon example (`node.json`, `users.json`, `web/` at the repository
//! root) with the clients users bring: autobahn-js logs in and pops, and
//! headless Chromium drives the page.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::support::{Node, free_port, node_js, repo_root};

/// The example config with a free port and absolute paths (the test's node
/// directory is a temp dir).
fn example(port: u16) -> Value {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join("node.json")).expect("node.json");
    let mut cfg: Value = serde_json::from_str(&text).expect("node.json is JSON");
    let router = &mut cfg["workers"][0];
    let web = &mut router["transports"][0];
    web["endpoint"]["port"] = json!(port);
    web["paths"]["/"]["directory"] = json!(root.join("web").display().to_string());
    router["components"][0]["extra"]["users_file"] =
        json!(root.join("users.json").display().to_string());
    cfg
}

#[test]
fn the_example_config_is_valid() {
    // From the repository root, as the README runs it: its static
    // directory `../web` is taken from the node directory `.trellis`.
    let out = crate::support::trellis()
        .args(["check", "--config", "node.json"])
        .current_dir(repo_root())
        .output()
        .expect("run trellis check");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn autobahn_js_logs_in_and_pops() {
    let port = free_port();
    let node = Node::start(&example(port), port);
    let (ok, out) = node_js("balloon.mjs", &[&format!("ws://127.0.0.1:{port}/ws")]);
    assert!(ok, "{out}\n--- node log\n{}", node.log());
    for want in [
        "joined as ID09125 (balloonpopper)",
        "com.balloon.pop(2, 3) = 5",
        "authenticator refused: wamp.error.not_authorized",
        "wrong password: ",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
}

#[test]
fn chromium_opens_the_page_logs_in_and_pops() {
    let chromium = std::env::var("CHROMIUM")
        .map_or_else(|_| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    assert!(
        chromium.exists(),
        "{} not found: scripts/test installs Debian's chromium (or set CHROMIUM)",
        chromium.display()
    );
    let port = free_port();
    let node = Node::start(&example(port), port);
    let (ok, out) = node_js("page.mjs", &[&format!("http://127.0.0.1:{port}/")]);
    assert!(ok, "{out}\n--- node log\n{}", node.log());
    assert!(out.contains("result: 42"), "{out}");
    assert!(
        out.contains("refused: closed: wamp.error.authentication_failed"),
        "{out}"
    );
}

//! The balloon example (`node.json`, `users.json`, `web/` at the repository
//! root) with the clients users bring: autobahn-js logs in and pops, and
//! headless Chromium drives the page.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Node, free_port, repo_root, wait_or_kill};

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

fn node_js(script: &str, arg: &str) -> (bool, String) {
    let js = repo_root().join("tests/js");
    assert!(
        js.join("node_modules/autobahn").exists(),
        "tests/js/node_modules is missing: run scripts/test (it runs npm ci there)"
    );
    let out_path =
        std::env::temp_dir().join(format!("trellis-{script}-{}.log", std::process::id()));
    let out = std::fs::File::create(&out_path).expect("log");
    let mut child = Command::new("node")
        .arg(js.join(script))
        .arg(arg)
        .current_dir(&js)
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .spawn()
        .expect("node (Node.js) on PATH");
    let status = wait_or_kill(&mut child, Duration::from_secs(90), script);
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    (status.success(), text)
}

#[test]
fn the_example_config_is_valid() {
    let out = crate::support::trellis_check(&repo_root().join("node.json"));
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn autobahn_js_logs_in_and_pops() {
    let port = free_port();
    let node = Node::start(&example(port), port);
    let (ok, out) = node_js("balloon.mjs", &format!("ws://127.0.0.1:{port}/ws"));
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
    let (ok, out) = node_js("page.mjs", &format!("http://127.0.0.1:{port}/"));
    assert!(ok, "{out}\n--- node log\n{}", node.log());
    assert!(out.contains("result: 42"), "{out}");
    assert!(
        out.contains("refused: closed: wamp.error.authentication_failed"),
        "{out}"
    );
}

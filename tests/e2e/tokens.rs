//! One-time login tokens against both stores: the embedded one and a real
//! redis-server this test starts (and stops mid-run) on a free port.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Node, expect_python_args_ok, free_port};

/// A redis-server of our own, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start(port: u16) -> Redis {
        let dir = tempfile::tempdir().expect("tmp");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server ({e}): scripts/test installs it (Debian package redis-server)"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis {
            child,
            port,
            _dir: dir,
        }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn node(store: Value) -> (Node, String) {
    let (a, b) = (free_port(), free_port());
    let all = json!({"call": true, "register": true, "publish": true, "subscribe": true});
    let cfg = json!({
        "version": 2,
        "workers": [{
            "type": "router",
            "realms": [{"name": "realm1", "roles": [
                {"name": "backend", "permissions": [{"uri": "", "match": "prefix", "allow": all}]},
                {"name": "user", "permissions": [{"uri": "com.example.", "match": "prefix", "allow": {"call": true, "subscribe": true}}]}
            ]}],
            "transports": [
                {"type": "websocket", "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": a},
                 "auth": {"ticket": {"type": "static", "principals": {
                     "backend": {"ticket": "backend-ticket-T1", "role": "backend"},
                     "joe": {"ticket": "joe-ticket-T1", "role": "user"}}}}},
                {"type": "websocket", "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": b},
                 "auth": {"token": {"store": store, "role": "user", "max-age": 20}}}
            ]
        }]
    });
    let node = Node::start(&cfg, a);
    let urls = json!({"backend": format!("ws://127.0.0.1:{a}/ws"), "token": format!("ws://127.0.0.1:{b}/ws")}).to_string();
    (node, urls)
}

/// Run one phase; return the tokens it minted.
fn phase(node: &Node, urls: &str, redis: &str, name: &str) -> Vec<String> {
    let out = expect_python_args_ok(node, "token_scenarios.py", &[urls, redis, name]);
    assert!(out.contains(&format!("ok {name}")), "{out}");
    out.lines()
        .filter_map(|l| l.strip_prefix("TOKEN "))
        .map(str::to_owned)
        .collect()
}

fn assert_no_token_logged(node: &Node, tokens: &[String]) {
    let log = node.log();
    for t in tokens {
        assert!(
            !log.contains(t.as_str()),
            "the log contains token {t}:\n{log}"
        );
    }
}

#[test]
fn tokens_with_the_embedded_store() {
    let (node, urls) = node(json!({"type": "embedded"}));
    let tokens = phase(&node, &urls, "", "up");
    assert_eq!(tokens.len(), 4, "{tokens:?}");
    assert_no_token_logged(&node, &tokens);
}

#[test]
fn tokens_with_redis_including_an_outage() {
    let port = free_port();
    let mut redis = Redis::start(port);
    let store = json!({"type": "redis", "url": format!("redis://127.0.0.1:{port}"), "prefix": "trellis:token:"});
    let (node, urls) = node(store);
    let p = port.to_string();
    let mut tokens = phase(&node, &urls, &p, "up");
    redis.stop();
    tokens.extend(phase(&node, &urls, &p, "down"));
    let log = node.log();
    assert!(
        log.contains("token store is unavailable"),
        "the outage is not logged:\n{log}"
    );
    let redis = Redis::start(redis.port);
    tokens.extend(phase(&node, &urls, &p, "recovered"));
    assert_no_token_logged(&node, &tokens);
    drop(redis);
}

//! The authentication methods beyond ticket, WAMP-CRA and cryptosign, with
//! autobahn-python: WAMP-SCRAM (static and dynamic, credentials made by
//! `trellis scram-credential`).

use std::io::Write;
use std::process::Stdio;

use serde_json::{Value, json};

use crate::support::{Node, expect_python_args_ok, free_port, python, repo_root, trellis};

/// `trellis scram-credential AUTHID ARGS` with `password` on standard
/// input: the principal it prints.
fn scram_credential(authid: &str, password: &str, args: &[&str]) -> Value {
    let mut child = trellis()
        .args(["scram-credential", authid])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run trellis scram-credential");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(password.as_bytes())
        .expect("write the password");
    let out = child.wait_with_output().expect("scram-credential output");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains(password), "the password is printed: {text}");
    let v: Value = serde_json::from_str(&text).expect("JSON");
    v[authid].clone()
}

#[test]
fn scram_logins_static_and_dynamic() {
    let (joe_pw, pat_pw) = ("joe-Sc4am-pw", "pat-Sc4am-pw");
    // Crossbar.io's defaults, as autobahn's derive_scram_credential has them.
    let defaults = scram_credential("joe", joe_pw, &[]);
    assert_eq!(
        (
            &defaults["kdf"],
            &defaults["iterations"],
            &defaults["memory"],
            &defaults["role"]
        ),
        (
            &json!("argon2id-13"),
            &json!(4096),
            &json!(512),
            &json!("user")
        ),
        "{defaults}"
    );
    // Cheaper ones for the many logins below.
    let joe = scram_credential("joe", joe_pw, &["--iterations", "8", "--memory", "256"]);
    let pat = scram_credential("pat", pat_pw, &["--kdf", "pbkdf2", "--iterations", "1000"]);
    assert_eq!(pat["kdf"], "pbkdf2", "{pat}");
    assert!(pat.get("memory").is_none(), "{pat}");

    let (port, dynamic) = (free_port(), free_port());
    let ws = |port: u16, auth: Value| {
        json!({"type": "websocket", "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port},
               "auth": auth, "options": {"max_auth_failures": 1000}})
    };
    let cfg = json!({"version": 2, "workers": [{
        "type": "router", "id": "router1",
        "options": {"pythonpath": [repo_root().join("tests/py/components").display().to_string()],
                    "python": python().display().to_string()},
        "realms": [{"name": "realm1", "roles": [
            {"name": "user", "permissions": [{"uri": "com.example.", "match": "prefix", "allow": {"call": true}}]},
            {"name": "authenticator", "permissions": [
                {"uri": "com.example.scram_authenticate", "allow": {"register": true}}]}]}],
        "components": [{"type": "class", "classname": "scram_auth.ScramAuthenticator",
                        "realm": "realm1", "role": "authenticator",
                        "extra": {"principals": {"joe": joe.clone()}}}],
        "transports": [
            ws(port, json!({"scram": {"type": "static", "principals": {"joe": joe, "pat": pat}}})),
            ws(dynamic, json!({"scram": {"type": "dynamic", "authenticator": "com.example.scram_authenticate"}}))
        ]
    }]});
    let node = Node::start(&cfg, port);
    let urls = json!({
        "scram": format!("ws://127.0.0.1:{port}/ws"),
        "scram_dynamic": format!("ws://127.0.0.1:{dynamic}/ws"),
        "joe": joe_pw, "pat": pat_pw,
    })
    .to_string();
    let out = expect_python_args_ok(
        &node,
        "auth_methods.py",
        &[&urls, "scram", "json", "msgpack", "cbor"],
    );
    assert!(out.contains("ok scram cbor"), "{out}");
    let log = node.log();
    assert!(!log.contains(joe_pw) && !log.contains(pat_pw), "{log}");
}

#[test]
fn scram_principals_are_checked() {
    let cfg = json!({"version": 2, "workers": [{
        "type": "router",
        "realms": [{"name": "realm1", "roles": [{"name": "user"}]}],
        "transports": [{"type": "websocket", "endpoint": {"type": "tcp", "port": free_port()},
            "auth": {"scram": {"type": "static", "principals": {
                "a": {"kdf": "argon2id-13", "iterations": 4096, "salt": "00", "stored-key": "zz",
                      "server-key": "00", "role": "user"},
                "b": {"kdf": "scrypt", "iterations": 0, "salt": "0011223344556677",
                      "stored-key": "11".repeat(32), "server-key": "22".repeat(32), "role": "ghost"}}}}}]
    }]});
    let out = crate::support::check_json(&cfg);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "auth.scram.principals.a.kdf: argon2id-13 needs \"memory\"",
        "auth.scram.principals.a.salt: expected at least 8 bytes in hex",
        "auth.scram.principals.a.stored-key: expected 32 bytes in hex (64 characters)",
        "auth.scram.principals.a.server-key: expected 32 bytes in hex",
        "auth.scram.principals.b.kdf: iterations must be between 1",
        "auth.scram.principals.b.role",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

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

/// A router (`router1`, realm `realm1` with roles `user` and
/// `authenticator`) whose Python router component `classname` registers
/// `procedure`, with `extra`, serving `transports`.
fn router_with_authenticator(
    classname: &str,
    procedure: &str,
    extra: Value,
    transports: Vec<Value>,
) -> Value {
    json!({"version": 2, "workers": [{
        "type": "router", "id": "router1",
        "options": {"pythonpath": [repo_root().join("tests/py/components").display().to_string()],
                    "python": python().display().to_string()},
        "realms": [{"name": "realm1", "roles": [
            {"name": "user", "permissions": [{"uri": "com.example.", "match": "prefix", "allow": {"call": true}}]},
            {"name": "authenticator", "permissions": [
                {"uri": procedure, "allow": {"register": true}}]}]}],
        "components": [{"type": "class", "classname": classname,
                        "realm": "realm1", "role": "authenticator", "extra": extra}],
        "transports": transports
    }]})
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
    let cfg = router_with_authenticator(
        "scram_auth.ScramAuthenticator",
        "com.example.scram_authenticate",
        json!({"principals": {"joe": joe.clone()}}),
        vec![
            ws(
                port,
                json!({"scram": {"type": "static", "principals": {"joe": joe, "pat": pat}}}),
            ),
            ws(
                dynamic,
                json!({"scram": {"type": "dynamic", "authenticator": "com.example.scram_authenticate"}}),
            ),
        ],
    );
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

/// A test PKI: CA A (the router's and its clients'), CA B (another's).
pub(crate) struct Pki {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) ca_a: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    pub(crate) ca_b: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let ca = |name: &str| {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name.push(rcgen::DnType::CommonName, name);
            p.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::DigitalSignature,
            ];
            rcgen::CertifiedIssuer::self_signed(p, rcgen::KeyPair::generate().expect("key"))
                .expect("CA")
        };
        Pki {
            dir: tempfile::tempdir().expect("temp dir"),
            ca_a: ca("Trellis Test CA A"),
            ca_b: ca("Trellis Test CA B"),
        }
    }

    /// A certificate for `cn` (a server's for "localhost" when `server`),
    /// signed by CA B when `other`, expired when `expired`: its PEM and
    /// its key's PEM.
    pub(crate) fn issue(
        &self,
        cn: &str,
        server: bool,
        other: bool,
        expired: bool,
    ) -> (String, String) {
        let names = if server {
            vec!["localhost".to_owned()]
        } else {
            Vec::new()
        };
        let mut p = rcgen::CertificateParams::new(names).expect("params");
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = if expired {
            rcgen::date_time_ymd(2021, 1, 1)
        } else {
            rcgen::date_time_ymd(2999, 1, 1)
        };
        let key = rcgen::KeyPair::generate().expect("key");
        let ca = if other { &self.ca_b } else { &self.ca_a };
        let cert = p.signed_by(&key, ca).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    /// A client certificate written to files: [certificate, key] paths.
    pub(crate) fn client(&self, name: &str, cn: &str, other: bool, expired: bool) -> Value {
        let (cert, key) = self.issue(cn, false, other, expired);
        let c = self.dir.path().join(format!("{name}.crt"));
        let k = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&c, &cert).expect("write");
        std::fs::write(&k, key).expect("write");
        json!([c.display().to_string(), k.display().to_string()])
    }
}

/// The SHA-1 fingerprint of a PEM certificate as Crossbar.io writes it.
pub(crate) fn sha1_fingerprint(pem_file: &str) -> String {
    let pem = std::fs::read_to_string(pem_file).expect("read");
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    use base64::Engine;
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    let d = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &der);
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn tls_client_certificates_static_dynamic_refused_and_reloaded() {
    use nix::sys::signal::Signal;
    let pki = Pki::new();
    let (server_crt, server_key) = pki.issue("localhost", true, false, false);
    let certs = json!({
        "device1": pki.client("device1", "device-1", false, false),
        "device2": pki.client("device2", "device-2", false, false),
        "banned": pki.client("banned", "banned-device", false, false),
        "expired": pki.client("expired", "device-old", false, true),
        "other_ca": pki.client("other_ca", "device-b", true, false),
    });
    let device1_sha1 = sha1_fingerprint(certs["device1"][0].as_str().expect("path"));
    let ca_file = pki.dir.path().join("ca.pem");
    std::fs::write(&ca_file, pki.ca_a.pem()).expect("write");

    let (port, dynamic) = (free_port(), free_port());
    let tls =
        json!({"key": "server.key", "certificate": "server.crt", "ca_certificates": ["ca.pem"]});
    let ws = |port: u16, auth: Value| {
        json!({"type": "websocket",
               "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port, "tls": tls},
               "auth": auth, "options": {"max_auth_failures": 1000}})
    };
    let cfg = router_with_authenticator(
        "cert_auth.CertAuthenticator",
        "com.example.cert_authenticate",
        json!({}),
        vec![
            // Crossbar.io's shape: the fingerprint with colons, upper case.
            ws(
                port,
                json!({"tls": {"type": "static", "principals": {
                "device-1": {"certificate-sha1": device1_sha1, "role": "user"}}}}),
            ),
            ws(
                dynamic,
                json!({"tls": {"type": "dynamic", "authenticator": "com.example.cert_authenticate"}}),
            ),
        ],
    );
    let ca_pem = pki.ca_a.pem();
    let node = Node::start_with_files(
        &cfg,
        port,
        &[
            ("server.crt", &server_crt),
            ("server.key", &server_key),
            ("ca.pem", &ca_pem),
        ],
    );
    let urls = json!({
        "static": format!("wss://localhost:{port}/ws"),
        "dynamic": format!("wss://localhost:{dynamic}/ws"),
        "ca": ca_file.display().to_string(),
        "certs": certs,
    })
    .to_string();
    let out = expect_python_args_ok(
        &node,
        "auth_methods.py",
        &[&urls, "tls_client_certs", "json", "msgpack"],
    );
    assert!(out.contains("ok tls_client_certs msgpack"), "{out}");
    let log = node.worker_log("router1");
    assert!(
        log.contains("TLS client certificate refused"),
        "the router says why: {log}"
    );

    // CA B instead of A, read again on SIGHUP: B's clients get in, A's not.
    std::fs::write(node.node_dir().join("ca.pem"), pki.ca_b.pem()).expect("write");
    node.signal(Signal::SIGHUP);
    node.wait_log("TLS certificate and key read again");
    let out = expect_python_args_ok(
        &node,
        "auth_methods.py",
        &[&urls, "tls_after_ca_reload", "json"],
    );
    assert!(out.contains("ok tls_after_ca_reload json"), "{out}");
}

#[test]
fn tls_authentication_needs_ca_certificates() {
    let port = free_port();
    let cfg = json!({"version": 2, "workers": [{
        "type": "router",
        "realms": [{"name": "realm1", "roles": [{"name": "user"}]}],
        "transports": [{"type": "websocket",
            "endpoint": {"type": "tcp", "port": port, "tls": {"key": "k.pem", "certificate": "c.pem"}},
            "auth": {"tls": {"type": "static", "principals": {
                "d": {"certificate-sha1": "B6:E5", "role": "user"}}}}}]
    }]});
    let out = crate::support::check_json(&cfg);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "auth.tls: TLS client-certificate authentication needs the transport's endpoint.tls with ca_certificates",
        "auth.tls.principals.d.certificate-sha1: expected the certificate's SHA-1 fingerprint",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    assert!(!err.contains("not supported"), "{err}");
}

/// Cookie logins in headless Chromium (Crossbar.io's cookie example's
/// shape): WAMP-CRA first, the cookie after a reload, logout, and a cookie
/// that survives a router restart but whose principal was removed.
#[test]
fn cookie_logins_in_chromium_logout_and_revocation() {
    use crate::node::{wait_status, worker};
    use nix::sys::signal::Signal;
    let port = free_port();
    let web = tempfile::tempdir().expect("temp dir");
    std::fs::copy(
        repo_root().join("tests/web/cookie/index.html"),
        web.path().join("index.html"),
    )
    .expect("page");
    std::fs::copy(repo_root().join("web/wamp.js"), web.path().join("wamp.js")).expect("wamp.js");
    let config = |users: Value| {
        json!({"version": 2, "workers": [{
            "type": "router", "id": "router1",
            "realms": [{"name": "realm1", "roles": [
                {"name": "frontend", "permissions": [
                    {"uri": "com.example.", "match": "prefix", "allow": {"call": true}}]}]}],
            "transports": [{"type": "web",
                "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port},
                "paths": {
                    "/": {"type": "static", "directory": web.path().display().to_string()},
                    "ws": {"type": "websocket",
                           "cookie": {"store": {"type": "file", "filename": "cookies.dat"}},
                           "auth": {"wampcra": {"type": "static", "users": users}, "cookie": {}}}}}]
        }]})
    };
    let cfg = config(json!({
        "client1": {"secret": "secret123", "role": "frontend"},
        "client2": {"secret": "other-secret", "role": "frontend"}
    }));
    let out = crate::support::check_json(&cfg);
    assert!(out.status.success(), "{out:?}");
    let node = Node::start(&cfg, port);
    let state = web.path().join("browser-state.json");
    let state = state.display().to_string();
    let url = format!("http://127.0.0.1:{port}/");
    let (ok, out) = crate::support::node_js("cookie_page.mjs", &[&url, &state, "login"]);
    assert!(ok, "{out}\n--- node log\n{}", node.log());
    assert!(
        out.contains("cookie: httpOnly=true sameSite=Lax secure=false length=24"),
        "{out}"
    );
    // The cookie is a credential: never in the log.
    let value = out
        .lines()
        .find_map(|l| l.strip_prefix("cookie value: "))
        .expect("the cookie's value");
    assert!(!node.log().contains(value), "the log has the cookie");
    // trellis status counts logins by method: WAMP-CRA twice, the cookie
    // once; the cookie-only attempts that found no login were refused.
    let status = crate::support::trellis()
        .args(["status", "--node-dir"])
        .arg(node.node_dir())
        .output()
        .expect("trellis status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("logins of router1: cookie 1, wampcra 2, refused 2"),
        "{text}"
    );
    // The file store: the node user's only, relative to the node directory.
    let file = node.node_dir().join("cookies.dat");
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&file).expect("cookies.dat in the node directory");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    // client1 is removed: the router restarts (its transports changed) and
    // reads the file store again; the browser's cookie no longer logs in.
    let revoked = config(json!({"client2": {"secret": "other-secret", "role": "frontend"}}));
    std::fs::write(
        node.dir.path().join("node.json"),
        serde_json::to_vec_pretty(&revoked).expect("json"),
    )
    .expect("write config");
    node.signal(Signal::SIGHUP);
    node.wait_log("its config changed: restarting it");
    wait_status(&node, "the router restarted", |s| {
        worker(s, "router1")["last_exit"].is_string() && worker(s, "router1")["state"] == "running"
    });
    let (ok, out) = crate::support::node_js("cookie_page.mjs", &[&url, &state, "revoked"]);
    assert!(ok, "{out}\n--- node log\n{}", node.log());
    assert!(node.log().contains("cookie store read"), "{}", node.log());
}

#[test]
fn cookie_settings_are_checked() {
    let cfg = json!({"version": 2, "workers": [{
        "type": "router",
        "realms": [{"name": "realm1", "roles": [{"name": "user"}]}],
        "transports": [
            {"type": "websocket", "endpoint": {"type": "tcp", "port": free_port()},
             "cookie": {"name": "Bad-Name", "length": 4, "max_age": 0, "same_site": "none",
                        "store": {"type": "database", "path": ".cookies", "maxsize": 1048576}},
             "auth": {"cookie": {}}},
            {"type": "websocket", "endpoint": {"type": "tcp", "port": free_port()},
             "auth": {"cookie": {}, "ticket": {"type": "static", "principals": {}}}},
            // crossbar-examples' cryptosign/trustroot: named as not supported, not a typo.
            {"type": "websocket", "endpoint": {"type": "tcp", "port": free_port()},
             "auth": {"cryptosign": {"type": "static",
                 "trustroots": {"realm1": {"certificate": "root_ca_cert_realm1.crt"}}}}}
        ]
    }]});
    let out = crate::support::check_json(&cfg);
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "transports[0].cookie.name: \"Bad-Name\": a cookie name is lower-case letters",
        "transports[0].cookie.length: must be between 12 and 64",
        "transports[0].cookie.max_age: must be more than 0 seconds",
        "transports[0].cookie.same_site: \"none\" needs a Secure cookie",
        "transports[0].cookie.store.type: Crossbar.io's LMDB cookie database is not supported by Trellis: use \"file\"",
        "transports[1].auth.cookie: cookie authentication needs cookie tracking on this WebSocket transport or path",
        "transports[2].auth.cryptosign.trustroots: Crossbar.io's cryptosign \"trustroots\" (clients vouched for by a chain of certificates to a trusted root) is not supported by Trellis yet",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

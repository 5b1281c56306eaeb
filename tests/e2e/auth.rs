//! Authentication and authorization with autobahn-python: every method,
//! static and dynamic, succeeding and failing; authorization rules; dynamic
//! authorizers; the brute-force rate limit.

use serde_json::{Value, json};

use crate::support::{Node, expect_python_args_ok, free_port};

const TICKETS: [(&str, &str, &str, Option<&str>); 4] = [
    ("joe", "joe-ticket-Q7", "user", None),
    ("backend", "backend-ticket-Q7", "backend", None),
    (
        "authenticator",
        "auth-ticket-Q7",
        "authenticator",
        Some("auth"),
    ),
    ("watcher1", "watch-ticket-Q7", "watched", None),
];

fn all() -> Value {
    json!({"call": true, "register": true, "publish": true, "subscribe": true})
}

fn static_auth() -> Value {
    let mut principals = serde_json::Map::new();
    for (authid, ticket, role, realm) in TICKETS {
        let mut p = json!({"ticket": ticket, "role": role});
        if let Some(r) = realm {
            p["realm"] = json!(r);
        }
        principals.insert(authid.into(), p);
    }
    let alice = proto::auth::cryptosign_pubkey(&[1u8; 32]);
    json!({
        "ticket": {"type": "static", "principals": principals},
        "wampcra": {"type": "static", "users": {
            "anohni": {"secret": "prq7+YkJ1/KlW1X0YczMHw==", "secret-kind": "derived-key",
                       "salt": "salt123", "iterations": 100, "keylen": 16, "role": "user"},
            "carol": {"secret": "secret1", "salt": "salt123", "iterations": 100, "keylen": 16, "role": "user"},
            "peter": {"secret": "peter-pw", "role": "user"}
        }},
        "cryptosign": {"type": "static", "principals": {"alice": {"authorized_keys": [alice], "role": "user"}}}
    })
}

struct Ports {
    r#static: u16,
    dynamic: u16,
    unregistered: u16,
    limited: u16,
    proxied: u16,
}

fn transport(port: u16, auth: Value, options: Value) -> Value {
    json!({
        "type": "websocket",
        "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port},
        "auth": auth,
        "options": options
    })
}

fn node() -> (Node, String) {
    let ports = Ports {
        r#static: free_port(),
        dynamic: free_port(),
        unregistered: free_port(),
        limited: free_port(),
        proxied: free_port(),
    };
    let dynamic = |proc_: &str| json!({"type": "dynamic", "authenticator": proc_, "authenticator-realm": "auth"});
    let cfg = json!({
        "version": 2,
        "workers": [{
            "type": "router",
            "realms": [
                {"name": "realm1", "roles": [
                    {"name": "user", "permissions": [
                        {"uri": "com.example.", "match": "prefix", "allow": {"call": true, "subscribe": true}},
                        {"uri": "com.example.pub.", "match": "prefix", "allow": {"publish": true, "subscribe": true}},
                        {"uri": "com.example.reg", "allow": {"register": true}},
                        {"uri": "org..wild", "match": "wildcard", "allow": {"register": true, "call": true}}
                    ]},
                    {"name": "backend", "permissions": [{"uri": "", "match": "prefix", "allow": all()}]},
                    {"name": "watched", "authorizer": "com.example.authorize"}
                ]},
                {"name": "auth", "roles": [
                    {"name": "authenticator", "permissions": [{"uri": "", "match": "prefix", "allow": all()}]}
                ]}
            ],
            "transports": [
                transport(ports.r#static, static_auth(), json!({"max_auth_failures": 1000})),
                transport(ports.dynamic, json!({
                    "ticket": dynamic("com.example.authenticate"),
                    "wampcra": dynamic("com.example.cra_authenticate"),
                    "cryptosign": dynamic("com.example.cs_authenticate")
                }), json!({"authenticator_timeout": 500, "max_auth_failures": 1000})),
                transport(ports.unregistered, json!({
                    "ticket": {"type": "dynamic", "authenticator": "com.example.nobody"}
                }), json!({})),
                transport(ports.limited, static_auth(), json!({"max_auth_failures": 5, "auth_failure_window": 60000})),
                transport(ports.proxied, static_auth(), json!({"max_auth_failures": 3, "trusted_proxies": ["127.0.0.1"]}))
            ]
        }]
    });
    let node = Node::start(&cfg, ports.r#static);
    let urls = json!({
        "static": format!("ws://127.0.0.1:{}/ws", ports.r#static),
        "dynamic": format!("ws://127.0.0.1:{}/ws", ports.dynamic),
        "unregistered": format!("ws://127.0.0.1:{}/ws", ports.unregistered),
        "limited": format!("ws://127.0.0.1:{}/ws", ports.limited),
        "proxied": format!("ws://127.0.0.1:{}/ws", ports.proxied),
    })
    .to_string();
    (node, urls)
}

fn run(scenario: &str, serializers: &[&str]) -> Node {
    let (node, urls) = node();
    let mut args = vec![urls.as_str(), scenario];
    args.extend_from_slice(serializers);
    let out = expect_python_args_ok(&node, "auth_scenarios.py", &args);
    for ser in serializers {
        assert!(
            out.contains(&format!("ok {scenario} {ser}")),
            "{scenario} did not pass with {ser}:\n{out}"
        );
    }
    // No secret or ticket ever reaches the log.
    let log = node.log();
    for secret in [
        "joe-ticket-Q7",
        "auth-ticket-Q7",
        "watch-ticket-Q7",
        "secret1",
        "peter-pw",
        "prq7+YkJ1",
    ] {
        assert!(
            !log.contains(secret),
            "the log contains the secret {secret:?}:\n{log}"
        );
    }
    node
}

#[test]
fn static_ticket_wampcra_cryptosign() {
    run("static_methods", &["json", "msgpack"]);
}

#[test]
fn dynamic_ticket_authenticator_in_another_realm_and_its_failures() {
    let node = run("dynamic_ticket", &["json", "cbor"]);
    let log = node.log();
    assert!(
        log.contains("WARN")
            && log.contains("com.example.authenticate")
            && log.contains("did not answer within 500 ms"),
        "authenticator failures are not logged at warn:\n{log}"
    );
}

#[test]
fn dynamic_wampcra_and_cryptosign() {
    let node = run("dynamic_wampcra_and_cryptosign", &["json", "msgpack"]);
    let log = node.log();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("com.example.cra_authenticate")
            && l.contains("empty WAMP-CRA secret")),
        "an authenticator's empty secret is not logged at warn with its name:\n{log}"
    );
}

#[test]
fn unregistered_authenticator_is_named() {
    run("unregistered_authenticator", &["json"]);
}

#[test]
fn authorization_matrix_per_action_and_match() {
    run("authorization_matrix", &["json", "msgpack"]);
}

#[test]
fn dynamic_authorizer_decides_on_application_data_and_caches() {
    run("dynamic_authorizer", &["json"]);
}

#[test]
fn brute_force_meets_the_rate_limit_while_others_get_in() {
    let node = run("brute_force_is_rate_limited", &["json"]);
    assert!(
        node.log()
            .contains("too many failed authentication attempts"),
        "{}",
        node.log()
    );
}

#[test]
fn a_login_storm_from_one_address_spares_other_users_behind_it() {
    let node = run("login_storm_spares_the_innocent", &["json"]);
    let log = node.log();
    // 20 attempts while locked out: one line for the lockout, not twenty.
    let lockouts = log.matches("locked out until the failure window").count();
    assert_eq!(lockouts, 1, "{log}");
    // 35 failures: a warning each up to the limit, then one saying so.
    assert_eq!(
        log.matches("this address's attempts are now slowed")
            .count(),
        1,
        "{log}"
    );
}

#[test]
fn a_trusted_proxy_names_the_client_for_the_login_limits() {
    run("trusted_proxy_names_the_client", &["json"]);
}

//! The `mqtt` transport: paho-mqtt and the mosquitto clients as devices,
//! autobahn-python as the WAMP side of the same realm.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{
    KillOnDrop, Node, expect_python_args_ok, free_port, push_transport, router_config, wait_or_kill,
};

/// The role `device`: it may publish and subscribe under `devices` only.
fn add_device_role(cfg: &mut Value) {
    cfg["workers"][0]["realms"][0]["roles"]
        .as_array_mut()
        .expect("roles")
        .push(json!({"name": "device", "permissions": [
            {"uri": "devices.", "match": "prefix", "allow": {"publish": true, "subscribe": true}}
        ]}));
}

/// A node with a WebSocket transport, an anonymous mqtt transport and one
/// that takes ticket logins for the role `device`.
fn node() -> (Node, u16, u16, u16) {
    let (ws, mqtt, auth, dynamic) = (free_port(), free_port(), free_port(), free_port());
    let mut cfg: Value = router_config(ws);
    add_device_role(&mut cfg);
    push_transport(
        &mut cfg,
        json!({
            "type": "mqtt",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": mqtt},
            "options": {"realm": "realm1", "role": "anonymous", "max_message_size": 65536,
                        "write_timeout": 1000, "max_queue_messages": 64,
                        "payload_mapping": {"": {"type": "passthrough"},
                                            "app": {"type": "native", "serializer": "json"},
                                            "packed": {"type": "native", "serializer": "msgpack"},
                                            "tagged": {"type": "native", "serializer": "cbor"}}}
        }),
    );
    push_transport(
        &mut cfg,
        json!({
            "type": "mqtt",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": auth},
            "options": {"realm": "realm1"},
            "auth": {"ticket": {"type": "static", "principals": {
                "device1": {"ticket": "secret-1", "role": "device"}}}}
        }),
    );
    push_transport(
        &mut cfg,
        json!({
            "type": "mqtt",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": dynamic},
            "options": {"realm": "realm1"},
            "auth": {"ticket": {"type": "dynamic", "authenticator": "com.example.mqtt_authenticate"}}
        }),
    );
    (Node::start(&cfg, ws), mqtt, auth, dynamic)
}

#[test]
fn mqtt_devices_and_wamp_clients_share_a_realm() {
    let (node, mqtt, auth, dynamic) = node();
    let url = format!("ws://127.0.0.1:{}/ws", node.port);
    let out = expect_python_args_ok(
        &node,
        "mqtt_checks.py",
        &[
            &url,
            "127.0.0.1",
            &mqtt.to_string(),
            &auth.to_string(),
            &dynamic.to_string(),
        ],
    );
    for check in [
        "mqtt publish reaches wamp as passthru bytes",
        "wamp publish reaches mqtt on a wildcard filter",
        "native mapping",
        "native msgpack and cbor mappings",
        "retained message for a later subscriber",
        "unmappable topics refused",
        "will on a lost client only",
        "client id taken over",
        "ticket logins and authorized publications",
        "mqtt 5 with reason codes, topic aliases and request/response",
        "an authenticator procedure logs mqtt devices in",
        "bad input closes only the offender",
        "a client that never reads is cut off alone",
    ] {
        assert!(out.contains(&format!("ok {check}")), "{check}:\n{out}");
    }
    let log = node.log();
    assert!(!log.contains("secret-1"), "a ticket in the log:\n{log}");
    assert!(!log.contains("dyn-secret"), "a ticket in the log:\n{log}");
    assert!(
        log.contains("\"x.y/z\": a '.' separates WAMP topic levels"),
        "{log}"
    );
}

/// mosquitto_sub takes one message on `m/#` while mosquitto_pub publishes
/// `hello` to `m/x`, both on `port`.
fn mosquitto_round_trip(port: u16) {
    mosquitto_round_trip_on(&["-h", "127.0.0.1", "-p", &port.to_string()]);
}

/// The same, connecting with `at` (`-h HOST -p PORT`, or `--unix PATH`).
fn mosquitto_round_trip_on(at: &[&str]) {
    let sub = Command::new("mosquitto_sub")
        .args(at)
        .args(["-t", "m/#", "-C", "1", "-v", "-W", "10"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub (scripts/test installs mosquitto-clients)");
    let mut sub = KillOnDrop(sub);
    // Publish until the subscriber has its subscription and exits.
    for _ in 0..50 {
        let ok = Command::new("mosquitto_pub")
            .args(at)
            .args(["-t", "m/x", "-m", "hello", "-q", "1"])
            .status()
            .expect("mosquitto_pub");
        assert!(ok.success(), "mosquitto_pub failed");
        if sub.0.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = wait_or_kill(&mut sub.0, Duration::from_secs(10), "mosquitto_sub");
    assert!(status.success(), "mosquitto_sub got nothing");
    let mut out = String::new();
    use std::io::Read;
    sub.0
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    assert_eq!(out.trim(), "m/x hello");
}

#[test]
fn mosquitto_clients_publish_and_subscribe() {
    let (_node, mqtt, _, _) = node();
    mosquitto_round_trip(mqtt);
}

/// An mqtt transport on a Unix socket (relative to the node directory).
#[test]
fn an_mqtt_transport_on_a_unix_socket() {
    let ws = free_port();
    let mut cfg: Value = router_config(ws);
    push_transport(
        &mut cfg,
        json!({"type": "mqtt", "endpoint": {"type": "unix", "path": "mqtt.sock"},
               "options": {"realm": "realm1", "role": "anonymous"}}),
    );
    let node = Node::start(&cfg, ws);
    let path = node.node_dir().join("mqtt.sock");
    mosquitto_round_trip_on(&["--unix", &path.display().to_string()]);
}

/// Crossbar.io's universal transport with an `mqtt` part: MQTT, WebSocket
/// and RawSocket clients on one port, told apart by their first bytes.
#[test]
fn a_universal_port_takes_mqtt_beside_wamp() {
    let port = free_port();
    let mut cfg: Value = router_config(port);
    cfg["workers"][0]["transports"] = json!([{
        "type": "universal",
        "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port},
        "mqtt": {"options": {"realm": "realm1", "role": "anonymous"}},
        "rawsocket": {"serializers": ["json", "msgpack"]},
        "websocket": {"ws": {"type": "websocket"}}
    }]);
    let node = Node::start(&cfg, port);
    mosquitto_round_trip(port);
    for url in [
        format!("ws://127.0.0.1:{port}/ws"),
        format!("rs://127.0.0.1:{port}"),
    ] {
        let out = expect_python_args_ok(&node, "scenarios.py", &[&url, "pubsub_basic", "json"]);
        assert!(out.contains("ok pubsub_basic json"), "{url}:\n{out}");
    }
    assert!(
        node.log().contains("RawSocket, WebSocket, HTTP and MQTT"),
        "{}",
        node.log()
    );
}

/// A node with an anonymous mqtt transport `devices` (its `options` and
/// these: realm1, role anonymous) beside WebSocket, and an admin port for
/// `/metrics`: (node, WebSocket port, MQTT port, admin port), ready.
fn devices_node(options: Value) -> (Node, u16, u16, u16) {
    let (ws, mqtt, admin) = (free_port(), free_port(), free_port());
    let mut cfg: Value = router_config(ws);
    let mut options = options;
    options["realm"] = json!("realm1");
    options["role"] = json!("anonymous");
    push_transport(
        &mut cfg,
        json!({
            "type": "mqtt", "id": "devices",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": mqtt},
            "options": options
        }),
    );
    cfg["controller"] = json!({"admin": {"endpoint": {"type": "tcp", "port": admin}}});
    let node = Node::start(&cfg, ws);
    node.wait_ready();
    (node, ws, mqtt, admin)
}

/// MQTT's persistent sessions: kept while the client is away (MQTT 3.1.1
/// without a clean session, MQTT 5 with a session expiry), QoS 1 sent
/// again after a reconnect, a bounded queue whose drops are counted,
/// message expiry, user properties carried through the realm, and shared
/// subscriptions.
#[test]
fn mqtt_sessions_outlive_their_connections() {
    let (node, ws, mqtt, admin) = devices_node(json!({"offline_queue_messages": 5}));
    let url = format!("ws://127.0.0.1:{ws}/ws");
    let out = expect_python_args_ok(
        &node,
        "mqtt_sessions.py",
        &[&url, "127.0.0.1", &mqtt.to_string()],
    );
    for check in [
        "qos 1 sent again after a reconnect",
        "a clean session discards the kept one",
        "mqtt 5 session expiry with a bounded queue and message expiry",
        "user properties and message expiry carried",
        "an expired session is gone",
        "a live session taken over by its returning client",
        "a shared subscription spreads messages over its group",
        "mqtt sessions in the meta api",
    ] {
        assert!(out.contains(&format!("ok {check}")), "{check}:\n{out}");
    }
    let (code, text) = crate::admin::get(admin, "/metrics", &[]);
    assert_eq!(code, 200);
    assert_eq!(
        crate::admin::metric(
            &text,
            "trellis_mqtt_messages_dropped_total{worker=\"router1\",transport=\"devices\"}"
        ),
        4.0,
        "{text}"
    );
    let accepted = crate::admin::metric(
        &text,
        "trellis_connections_accepted_total{worker=\"router1\",transport=\"devices\"}",
    );
    assert!(
        accepted >= 10.0,
        "MQTT connections counted: {accepted}\n{text}"
    );
    // `trellis status` lists the transport.
    crate::node::wait_status(&node, "the mqtt transport in trellis status", |s| {
        crate::node::worker(s, "router1")["transports"]
            .as_array()
            .is_some_and(|ts| ts.iter().any(|t| t["type"] == "mqtt"))
    });
    let log = node.log();
    assert!(log.contains("MQTT session resumed"), "{log}");
    assert!(log.contains("MQTT session expired"), "{log}");
}

/// MQTT over WebSocket: a web transport's path of type `mqtt`, beside a
/// WAMP WebSocket path on the same port.
#[test]
fn mqtt_over_websocket_on_a_web_path() {
    let port = free_port();
    let mut cfg: Value = router_config(port);
    cfg["workers"][0]["transports"] = json!([{
        "type": "web",
        "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port},
        "paths": {
            "ws": {"type": "websocket"},
            "mqtt": {"type": "mqtt", "options": {"realm": "realm1", "role": "anonymous",
                                                 "max_message_size": 131072,
                                                 "payload_mapping": {"room": {"type": "native"}}}}
        }
    }]);
    let node = Node::start(&cfg, port);
    let out = expect_python_args_ok(&node, "mqtt_ws.py", &["127.0.0.1", &port.to_string()]);
    for check in [
        "mqtt over websocket beside wamp",
        "the mqtt path refuses what is not mqtt over websocket",
    ] {
        assert!(out.contains(&format!("ok {check}")), "{check}:\n{out}");
    }
}

/// MQTT over TLS where the client certificate is the login: the
/// transport's `auth` takes `tls` with static principals, as a WebSocket
/// transport's does.
#[test]
fn a_client_certificate_logs_an_mqtt_device_in() {
    use crate::auth_methods::{Pki, sha1_fingerprint};
    let pki = Pki::new();
    let (server_crt, server_key) = pki.issue("localhost", true, false, false);
    let certs = json!({
        "device1": pki.client("device1", "device-1", false, false),
        "device2": pki.client("device2", "device-2", false, false),
        "other_ca": pki.client("other_ca", "device-b", true, false),
    });
    let sha1 = sha1_fingerprint(certs["device1"][0].as_str().expect("path"));
    let ca_file = pki.dir.path().join("ca.pem");
    std::fs::write(&ca_file, pki.ca_a.pem()).expect("write");
    let (ws, mqtt) = (free_port(), free_port());
    let mut cfg: Value = router_config(ws);
    add_device_role(&mut cfg);
    push_transport(
        &mut cfg,
        json!({
            "type": "mqtt",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": mqtt,
                         "tls": {"key": "server.key", "certificate": "server.crt", "ca_certificates": ["ca.pem"]}},
            "options": {"realm": "realm1"},
            "auth": {"tls": {"type": "static", "principals": {
                "device-1": {"certificate-sha1": sha1, "role": "device"}}}}
        }),
    );
    let ca_pem = pki.ca_a.pem();
    let node = Node::start_with_files(
        &cfg,
        ws,
        &[
            ("server.crt", &server_crt),
            ("server.key", &server_key),
            ("ca.pem", &ca_pem),
        ],
    );
    let out = expect_python_args_ok(
        &node,
        "mqtt_tls.py",
        &[
            "localhost",
            &mqtt.to_string(),
            &ca_file.display().to_string(),
            &certs.to_string(),
        ],
    );
    for check in [
        "a client certificate logs in",
        "other certificates are refused",
    ] {
        assert!(out.contains(&format!("ok {check}")), "{check}:\n{out}");
    }
}

/// Idle MQTT clients are parked (no task while nothing happens) and woken
/// by all that concerns them; a node with parked clients stops promptly,
/// closing them.
#[test]
fn idle_mqtt_clients_park_and_wake() {
    let (mut node, ws, mqtt, admin) =
        devices_node(json!({"payload_mapping": {"": {"type": "native", "serializer": "json"}}}));
    let url = format!("ws://127.0.0.1:{ws}/ws");
    let out = expect_python_args_ok(
        &node,
        "mqtt_parking.py",
        &[&url, "127.0.0.1", &mqtt.to_string(), &admin.to_string()],
    );
    for check in [
        "idle clients park and stay in the realm",
        "an event wakes a parked subscriber",
        "a parked client's publish is read",
        "the keep-alive ends a parked silent client",
        "a new connection takes over a parked client's id",
        "a parked client lost publishes its will",
    ] {
        assert!(out.contains(&format!("ok {check}")), "{check}:\n{out}");
    }

    // A client parked when the node stops: its connection is closed, and
    // the node does not wait for it past its usual stop.
    use std::io::{Read, Write};
    let mut device = std::net::TcpStream::connect(("127.0.0.1", mqtt)).expect("connect");
    // CONNECT, MQTT 3.1.1, clean session, keep-alive 30 s, client id "last".
    device
        .write_all(b"\x10\x10\x00\x04MQTT\x04\x02\x00\x1e\x00\x04last")
        .expect("CONNECT");
    let mut connack = [0u8; 4];
    device.read_exact(&mut connack).expect("CONNACK");
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    loop {
        let (_, text) = crate::admin::get(admin, "/metrics", &[]);
        let parked = text
            .lines()
            .find(|l| {
                l.starts_with("trellis_connections_parked{") && l.contains("transport=\"devices\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        if parked == Some(1.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the client did not park: {parked:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let stopping = std::time::Instant::now();
    node.signal(nix::sys::signal::Signal::SIGTERM);
    let status = node.wait(Duration::from_secs(20));
    assert!(status.success(), "{status:?}\n{}", node.log());
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "the stop took {:?}",
        stopping.elapsed()
    );
    device
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut rest = Vec::new();
    let closed = device.read_to_end(&mut rest);
    assert!(
        closed.is_ok(),
        "the parked client's connection stayed open: {closed:?}"
    );
    let log = node.worker_log("router1");
    assert!(!log.contains("panicked"), "{log}");
}

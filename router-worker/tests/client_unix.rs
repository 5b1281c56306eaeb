//! The proto client against a real router on a Unix-socket RawSocket
//! transport (the path container workers and control links take).

#![allow(clippy::unwrap_used)] // a test: a panic is the failure report

use std::time::Duration;

use client::{CallError, Client, ClientConfig};
use proto::{Payload, Value};
use router_worker::Router;
use tokio_util::sync::CancellationToken;
use trellis_config::router::RouterConfig;

fn config(path: &std::path::Path) -> RouterConfig {
    serde_json::from_value(serde_json::json!({
        "realms": [{"name": "realm1", "roles": [{"name": "anonymous", "permissions": [
            {"uri": "", "match": "prefix", "allow": {"call": true, "register": true, "publish": true, "subscribe": true}}
        ]}]}],
        "transports": [{"type": "rawsocket", "endpoint": {"type": "unix", "path": path.to_str().unwrap()}}]
    }))
    .unwrap()
}

#[tokio::test]
async fn client_speaks_rpc_and_pubsub_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("router.sock");
    let router = Router::bind(&config(&sock)).await.unwrap();
    assert_eq!(router.endpoints(), [format!("unix:{}", sock.display())]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is private to its owner");
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(router.serve(shutdown.clone()));

    let cfg = ClientConfig::new("realm1");
    let callee = Client::connect_unix(&sock, &cfg).await.unwrap();
    let caller = Client::connect_unix(&sock, &cfg).await.unwrap();
    assert_ne!(callee.session_id(), caller.session_id());
    assert_eq!(
        callee.welcome().get("authrole").and_then(Value::as_str),
        Some("anonymous")
    );

    callee
        .register("com.example.add", |p: Payload, _| async move {
            let a = p.args.first().and_then(Value::as_i64).unwrap_or(0);
            let b = p.args.get(1).and_then(Value::as_i64).unwrap_or(0);
            if a < 0 {
                return Err(CallError::new("com.example.negative", "no negatives"));
            }
            Ok(Payload::args(vec![Value::from(a + b)]))
        })
        .await
        .unwrap();
    let r = caller
        .call(
            "com.example.add",
            Payload::args(vec![Value::from(2i64), Value::from(3i64)]),
        )
        .await
        .unwrap();
    assert_eq!(r.args, [Value::from(5i64)]);
    let e = caller
        .call("com.example.add", Payload::args(vec![Value::from(-1i64)]))
        .await
        .unwrap_err();
    assert_eq!(e.uri, "com.example.negative");
    assert_eq!(e.to_string(), "com.example.negative: no negatives");
    let e = caller
        .call("com.example.nothing", Payload::default())
        .await
        .unwrap_err();
    assert_eq!(e.uri, "wamp.error.no_such_procedure");
    let e = callee
        .register("com.example.add", |_, _| async { Ok(Payload::default()) })
        .await
        .unwrap_err();
    assert_eq!(e.uri, "wamp.error.procedure_already_exists");

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    caller
        .subscribe("com.example.topic", move |p, _| {
            let _ = tx.send(p.args);
        })
        .await
        .unwrap();
    callee
        .publish("com.example.topic", Payload::args(vec![Value::from("hi")]))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap();
    assert_eq!(got, Some(vec![Value::from("hi")]));

    // A session that leaves loses its registrations.
    callee.leave().await;
    assert!(callee.is_closed());
    let e = caller
        .call("com.example.add", Payload::default())
        .await
        .unwrap_err();
    assert_eq!(e.uri, "wamp.error.no_such_procedure");
    let e = callee
        .call("com.example.add", Payload::default())
        .await
        .unwrap_err();
    assert_eq!(e.uri, client::LOST);

    // Shutdown: the remaining client hears GOODBYE system_shutdown, and the
    // socket file is removed.
    shutdown.cancel();
    let reason = tokio::time::timeout(Duration::from_secs(5), caller.closed())
        .await
        .unwrap();
    assert_eq!(reason, "wamp.close.system_shutdown");
    served.await.unwrap();
    assert!(!sock.exists(), "the socket file is removed on a clean stop");
}

#[tokio::test]
async fn unknown_realm_and_live_socket_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("router.sock");
    let router = Router::bind(&config(&sock)).await.unwrap();
    // A second router on the same live socket is refused, naming the cause.
    let err = Router::bind(&config(&sock))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("another process is listening"), "{err}");
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(router.serve(shutdown.clone()));
    let e = Client::connect_unix(&sock, &ClientConfig::new("nope"))
        .await
        .err()
        .unwrap();
    assert!(e.to_string().contains("wamp.error.no_such_realm"), "{e}");
    shutdown.cancel();
    served.await.unwrap();
    // A stale socket file (nobody listening) is replaced.
    let stale = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    drop(stale);
    assert!(sock.exists());
    let router = Router::bind(&config(&sock)).await.unwrap();
    drop(router);
}

#[tokio::test]
async fn realms_change_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("router.sock");
    let cfg = config(&sock);
    let router = Router::bind(&cfg).await.unwrap();
    let table = router.realms().clone();
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(router.serve(shutdown.clone()));
    let client = Client::connect_unix(&sock, &ClientConfig::new("realm1"))
        .await
        .unwrap();

    // A store change cannot happen in place; nothing changes.
    let mut with_store = cfg.realms.clone();
    with_store[0].store = serde_json::from_value(serde_json::json!({"type": "memory"})).unwrap();
    let e = table.apply(&cfg.realms, &with_store).await.unwrap_err();
    assert!(e.contains("needs a restart"), "{e}");
    assert!(!client.is_closed());

    // Permissions shrink: the session stays, its next call is refused.
    let mut strict = cfg.realms.clone();
    strict[0].roles[0].permissions[0].uri = "com.allowed.".into();
    let changes = table.apply(&cfg.realms, &strict).await.unwrap();
    assert_eq!(changes, ["realm \"realm1\" reconfigured"]);
    let e = client
        .call("com.other", Payload::default())
        .await
        .unwrap_err();
    assert_eq!(e.uri, "wamp.error.not_authorized");

    // A realm added, the old one removed: its session is closed.
    let mut renamed = strict.clone();
    renamed[0].name = "realm2".into();
    let changes = table.apply(&strict, &renamed).await.unwrap();
    assert_eq!(
        changes,
        ["realm \"realm2\" added", "realm \"realm1\" removed"]
    );
    let reason = tokio::time::timeout(Duration::from_secs(5), client.closed())
        .await
        .unwrap();
    assert_eq!(reason, "wamp.close.close_realm");
    let c2 = Client::connect_unix(&sock, &ClientConfig::new("realm2"))
        .await
        .unwrap();
    assert!(
        Client::connect_unix(&sock, &ClientConfig::new("realm1"))
            .await
            .is_err()
    );
    drop(c2);
    shutdown.cancel();
    served.await.unwrap();
}

#[tokio::test]
async fn router_components_join_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("router.sock");
    let router = Router::bind(&config(&sock)).await.unwrap();
    let realm = router.realms().get("realm1").unwrap();
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(router.serve(shutdown.clone()));
    let e = router_worker::local::attach(&realm, "x", "ghost")
        .await
        .err()
        .unwrap();
    assert!(e.contains("role \"ghost\" does not exist"), "{e}");
    let local = router_worker::local::attach(&realm, "authenticator", "anonymous")
        .await
        .unwrap();
    assert_eq!(
        local.welcome().get("authid").and_then(Value::as_str),
        Some("authenticator")
    );
    local
        .register("com.local.echo", |p: Payload, _| async move { Ok(p) })
        .await
        .unwrap();
    let remote = Client::connect_unix(&sock, &ClientConfig::new("realm1"))
        .await
        .unwrap();
    let r = remote
        .call("com.local.echo", Payload::args(vec![Value::from("hi")]))
        .await
        .unwrap();
    assert_eq!(r.args, [Value::from("hi")]);
    remote
        .register("com.remote.n", |_, _| async {
            Ok(Payload::args(vec![Value::from(7i64)]))
        })
        .await
        .unwrap();
    let r = local
        .call("com.remote.n", Payload::default())
        .await
        .unwrap();
    assert_eq!(r.args, [Value::from(7i64)]);
    local.leave().await;
    assert!(local.is_closed());
    let e = remote
        .call("com.local.echo", Payload::default())
        .await
        .unwrap_err();
    assert_eq!(e.uri, "wamp.error.no_such_procedure");
    shutdown.cancel();
    served.await.unwrap();
}

#[tokio::test]
async fn client_over_websocket_with_every_authmethod() {
    let seed = [7u8; 32];
    let pubkey = proto::auth::cryptosign_pubkey(&seed);
    let cfg: RouterConfig = serde_json::from_value(serde_json::json!({
        "realms": [{"name": "realm1", "roles": [{"name": "user", "permissions": [
            {"uri": "", "match": "prefix", "allow": {"call": true, "register": true}}]}]}],
        "transports": [{"type": "websocket", "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": 0},
            "auth": {
                "ticket": {"type": "static", "principals": {"joe": {"ticket": "joe-ticket", "role": "user"}}},
                "wampcra": {"type": "static", "users": {
                    "peter": {"secret": "peter-pw", "role": "user"},
                    "carol": {"secret": "carol-pw", "salt": "s4lt", "iterations": 100, "keylen": 16, "role": "user"}}},
                "cryptosign": {"type": "static", "principals": {"alice": {"authorized_keys": [pubkey], "role": "user"}}}
            }}]
    }))
    .unwrap();
    let router = Router::bind(&cfg).await.unwrap();
    let url = format!("ws://{}/ws", router.local_addrs()[0]);
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(router.serve(shutdown.clone()));
    let base = |authid: &str, ser| {
        let mut c = ClientConfig::new("realm1");
        c.authid = Some(authid.into());
        c.serializer = ser;
        c
    };
    let mut joe = base("joe", proto::Serializer::Json);
    joe.ticket = Some("joe-ticket".into());
    let mut peter = base("peter", proto::Serializer::MsgPack);
    peter.wampcra = Some("peter-pw".into());
    let mut carol = base("carol", proto::Serializer::Cbor);
    carol.wampcra = Some("carol-pw".into());
    let mut alice = base("alice", proto::Serializer::Json);
    alice.cryptosign = Some(seed);
    for (who, c) in [
        ("joe", joe),
        ("peter", peter),
        ("carol", carol),
        ("alice", alice),
    ] {
        let client = Client::connect_ws(&url, &c)
            .await
            .unwrap_or_else(|e| panic!("{who}: {e}"));
        assert_eq!(
            client.welcome().get("authid").and_then(Value::as_str),
            Some(who)
        );
        let e = client
            .call("com.nothing", Payload::default())
            .await
            .unwrap_err();
        assert_eq!(e.uri, "wamp.error.no_such_procedure");
        client.leave().await;
    }
    let mut wrong = base("carol", proto::Serializer::Json);
    wrong.wampcra = Some("nope".into());
    let e = Client::connect_ws(&url, &wrong).await.err().unwrap();
    assert!(
        e.to_string().contains("wamp.error.authentication_failed"),
        "{e}"
    );
    shutdown.cancel();
    served.await.unwrap();
}

#[tokio::test]
async fn calls_in_flight_are_limited_per_session() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("router.sock");
    let mut cfg = config(&sock);
    cfg.transports[0].options.max_calls_in_flight = 2;
    let router = Router::bind(&cfg).await.unwrap();
    let shutdown = CancellationToken::new();
    let served = tokio::spawn(router.serve(shutdown.clone()));
    let callee = Client::connect_unix(&sock, &ClientConfig::new("realm1"))
        .await
        .unwrap();
    callee
        .register("com.slow", |_, _| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(Payload::default())
        })
        .await
        .unwrap();
    let caller = Client::connect_unix(&sock, &ClientConfig::new("realm1"))
        .await
        .unwrap();
    let other = Client::connect_unix(&sock, &ClientConfig::new("realm1"))
        .await
        .unwrap();
    let a = tokio::spawn({
        let c = caller.clone();
        async move { c.call("com.slow", Payload::default()).await }
    });
    let b = tokio::spawn({
        let c = caller.clone();
        async move { c.call("com.slow", Payload::default()).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = caller
        .call("com.slow", Payload::default())
        .await
        .unwrap_err();
    assert_eq!(e.uri, router_worker::realm::TOO_MANY_CALLS);
    assert!(e.to_string().contains("max_calls_in_flight"), "{e}");
    // Another session is not affected by this one's limit.
    other.call("com.slow", Payload::default()).await.unwrap();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    caller.call("com.slow", Payload::default()).await.unwrap();
    shutdown.cancel();
    served.await.unwrap();
}

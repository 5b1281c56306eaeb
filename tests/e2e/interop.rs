//! Clients beyond autobahn that users run: wampy.js (JSON, MessagePack,
//! CBOR), swampyer (disclose_me on every call, no answer to RawSocket
//! pings), and raw checks of what the specification leaves to the router.
//! Every transport keeps its default options.

use std::time::Duration;

use serde_json::json;

use crate::support::{Node, free_port, node_js, push_transport, router_config, run_python};

struct Interop {
    node: Node,
    ws: String,
    ticket: String,
    rawsocket: u16,
}

fn node() -> Interop {
    let (ws, ticket, rs) = (free_port(), free_port(), free_port());
    let mut cfg = router_config(ws);
    push_transport(
        &mut cfg,
        json!({
            "type": "websocket",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": ticket},
            "auth": {
                "ticket": {"type": "static", "principals": {
                    "joe": {"ticket": "joe-ticket", "role": "anonymous", "realm": "realm1"}}},
                "wampcra": {"type": "static", "users": {"peter": {"secret": "peter-pw", "role": "anonymous"}}}
            }
        }),
    );
    push_transport(
        &mut cfg,
        json!({
            "type": "rawsocket",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": rs}
        }),
    );
    Interop {
        node: Node::start(&cfg, ws),
        ws: format!("ws://127.0.0.1:{ws}/ws"),
        ticket: format!("ws://127.0.0.1:{ticket}/ws"),
        rawsocket: rs,
    }
}

#[test]
fn wampy_js_over_json_msgpack_and_cbor() {
    let n = node();
    let (ok, out) = node_js("wampy.mjs", &[&n.ws, &n.ticket]);
    assert!(ok, "{out}\n--- node log\n{}", n.node.log());
    for ser in ["json", "msgpack", "cbor"] {
        assert!(out.contains(&format!("ok wampy {ser}")), "{out}");
    }
    // wampy's MessagePack SUBSCRIBE (an undefined option as an extension
    // value) is refused, saying what and where.
    let log = n.node.log();
    assert!(
        log.contains(
            "invalid MessagePack: SUBSCRIBE element 3 (Options): a MessagePack extension value"
        ),
        "{log}"
    );
}

/// Two minutes idle: the default RawSocket config must not ping swampyer
/// (which never answers) off the router.
#[test]
fn swampyer_disclose_me_and_an_idle_rawsocket_session() {
    let n = node();
    let rs = n.rawsocket.to_string();
    // Longer than the usual Python peer's bound: it idles for 125 s.
    let run = run_python(
        "swampyer_peer.py",
        &[&n.ws, &rs, &n.ticket, "125"],
        Duration::from_secs(240),
    );
    let out = run.stdout;
    assert!(
        run.status.success(),
        "{out}\n--- stderr\n{}\n--- node log\n{}",
        run.stderr,
        n.node.log()
    );
    assert!(
        out.contains("ok an idle swampyer RawSocket session"),
        "{out}"
    );
    assert!(out.contains("ok swampyer calls with disclose_me"), "{out}");
    assert!(out.contains("ok null options and a null realm"), "{out}");
}

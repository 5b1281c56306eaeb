//! Clustered nodes (node.json's `cluster`): several `trellis start` nodes
//! sharing realms over a real nats-server started on free ports, driven by
//! autobahn-python clients spread over the nodes.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Node, expect_python_args_ok, free_port, router_config};

/// A nats-server (Debian's) on a free port, with JetStream in a temporary
/// directory; killed when dropped.
pub struct Nats {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
    /// The monitoring port (`/jsz`, `/varz`).
    pub monitor: u16,
}

impl Nats {
    pub fn start() -> Nats {
        Nats::start_with(&[])
    }

    /// A nats-server with these extra arguments (TLS).
    pub fn start_with(extra: &[&str]) -> Nats {
        let dir = tempfile::tempdir().expect("temp dir");
        let (port, monitor) = (free_port(), free_port());
        let child = Nats::spawn(port, monitor, dir.path(), extra);
        Nats {
            child,
            dir,
            port,
            monitor,
        }
    }

    /// A nats-server without JetStream (which the cluster needs).
    pub fn start_without_jetstream() -> Nats {
        let dir = tempfile::tempdir().expect("temp dir");
        let (port, monitor) = (free_port(), free_port());
        let child = Nats::launch(port, &["-m", &monitor.to_string()]);
        Nats {
            child,
            dir,
            port,
            monitor,
        }
    }

    fn spawn(port: u16, monitor: u16, dir: &std::path::Path, extra: &[&str]) -> Child {
        let (monitor, dir) = (monitor.to_string(), dir.display().to_string());
        let mut args = vec!["-m", &monitor, "-js", "-sd", &dir];
        args.extend_from_slice(extra);
        Nats::launch(port, &args)
    }

    /// nats-server on 127.0.0.1:`port` with `args`, once it listens.
    fn launch(port: u16, args: &[&str]) -> Child {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (scripts/test installs Debian's nats-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    /// Stop the server (its clients lose their connections).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start it again on the same port, with the same JetStream directory.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Nats::spawn(self.port, self.monitor, self.dir.path(), &[]);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Messages in the registration directory's stream (`KV_trellis_c1_reg`):
    /// entries and delete markers.
    fn directory_messages(&self) -> u64 {
        let (code, text) = crate::admin::get(self.monitor, "/jsz?streams=true", &[]);
        assert_eq!(code, 200, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("jsz JSON");
        v["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
            .find(|s| s["name"] == "KV_trellis_c1_reg")
            .and_then(|s| s["state"]["messages"].as_u64())
            .unwrap_or(0)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node of cluster `c1` on `port`, its router `router1` with realm1.
pub fn node_config(port: u16, node_id: &str, nats: &Nats) -> serde_json::Value {
    let mut cfg = router_config(port);
    cfg["workers"][0]["realms"][0]["roles"][0]["permissions"][0]["disclose"] =
        json!({"caller": true, "publisher": true});
    cfg["cluster"] = json!({
        "name": "c1",
        "node_id": node_id,
        "nats": {"servers": [nats.url()]}
    });
    cfg
}

/// Wait until every node's router is connected to NATS (its log says so).
fn wait_connected(nodes: &[&Node]) {
    for n in nodes {
        n.wait_log("cluster backplane: connected to NATS");
    }
}

/// A node's router pid, and "controller,router" (the whole node, for the
/// scripts that SIGKILL or SIGSTOP it).
fn node_pids(n: &Node) -> (i32, String) {
    let s = crate::node::wait_status(n, "the router running", |s| {
        crate::node::worker(s, "router1")["pid"].is_i64()
    });
    let router = crate::node::pid_of(&s, "router1");
    (router, format!("{},{}", n.pid(), router))
}

/// Nodes a, b and c of cluster `c1`, connected, their directories read.
fn three_nodes(nats: &Nats) -> [Node; 3] {
    three_nodes_with(nats, false)
}

/// [`three_nodes`], with direct member links (`cluster.links`) if `links`:
/// each node's two links up before it returns.
fn three_nodes_with(nats: &Nats, links: bool) -> [Node; 3] {
    three_nodes_admin(nats, links, None)
}

/// [`three_nodes_with`], node a with its admin endpoint on `admin`.
fn three_nodes_admin(nats: &Nats, links: bool, admin: Option<u16>) -> [Node; 3] {
    let nodes = ["a", "b", "c"].map(|id| {
        let port = free_port();
        let mut cfg = node_config(port, id, nats);
        if links {
            cfg["cluster"]["links"] = json!({});
        }
        if let (Some(admin), "a") = (admin, id) {
            cfg["controller"] = json!({"admin": {"endpoint": {"type": "tcp", "port": admin}}});
        }
        Node::start(&cfg, port)
    });
    for n in &nodes {
        n.wait_log("cluster backplane: connected to NATS");
        n.wait_log("cluster backplane: registration directory ready");
    }
    if links {
        for n in &nodes {
            let deadline = Instant::now() + Duration::from_secs(15);
            while n.log().matches("cluster backplane: member link up").count() < 2 {
                assert!(
                    Instant::now() < deadline,
                    "a node's two member links never came up:\n{}",
                    n.log()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    nodes
}

/// The router's own calls (here a dynamic ticket authenticator) go to a
/// callee on the router's node: with the authenticator only on another
/// node, a login is refused at once, saying why; with one on its node too,
/// that one decides.
#[test]
fn the_routers_own_calls_stay_on_their_node() {
    let nats = Nats::start();
    let (pa, pb, ticket) = (free_port(), free_port(), free_port());
    let mut a = node_config(pa, "a", &nats);
    a["workers"][0]["transports"]
        .as_array_mut()
        .expect("transports")
        .push(json!({
            "type": "websocket",
            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": ticket},
            "auth": {"ticket": {"type": "dynamic", "authenticator": "com.example.auth"}}
        }));
    let a = Node::start(&a, pa);
    let b = Node::start(&node_config(pb, "b", &nats), pb);
    for n in [&a, &b] {
        n.wait_log("cluster backplane: registration directory ready");
    }
    let ticket_url = format!("ws://127.0.0.1:{ticket}/ws");
    let out = expect_python_args_ok(
        &a,
        "cluster_internal.py",
        &[&ticket_url, &a.url(), &b.url()],
    );
    for want in [
        "ok a login on A with the authenticator only on B is refused at once",
        "ok with an authenticator on A, a login on A is decided there",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
}

#[test]
fn pubsub_across_three_nodes() {
    let nats = Nats::start();
    let [a, b, c] = three_nodes(&nats);
    let out = expect_python_args_ok(&a, "cluster_pubsub.py", &[&a.url(), &b.url(), &c.url()]);
    for want in [
        "ok 2000 events from A reached B and C in order across two topics",
        "ok prefix and wildcard subscriptions on B match as on one node",
        "ok eligible and exclude by session, authid and authrole across nodes",
        "ok publisher disclosure across nodes",
        "ok B's join seen on A as wamp.session.on_join",
        "ok a local subscriber still gets its node's events once",
        "ok a subscriber on B gets the event retained on A (get_retained)",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
}

#[test]
fn calls_across_three_nodes() {
    let nats = Nats::start();
    let [a, b, c] = three_nodes(&nats);
    let out = expect_python_args_ok(&a, "cluster_rpc.py", &[&a.url(), &b.url(), &c.url()]);
    for want in CLUSTER_RPC {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    for n in [&a, &b, &c] {
        let s = crate::node::status(&n.node_dir());
        assert_eq!(s["backplane"]["router1"]["links"]["sent"], json!(0), "{s}");
    }
}

/// The whole of `cluster_rpc.py` with direct member links: the calls,
/// cancels and answers between members go on them, and strangers at the
/// link port are refused without touching anyone's calls.
#[test]
fn calls_across_three_nodes_over_member_links() {
    use std::io::{Read, Write};
    let nats = Nats::start();
    let admin = free_port();
    let [a, b, c] = three_nodes_admin(&nats, true, Some(admin));
    // The link port, from A's log (`address=127.0.0.1:PORT`).
    let log = a.log();
    let line = log
        .lines()
        .find(|l| l.contains("listening for member links"))
        .expect("A says where it listens for member links");
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("address="))
        .expect("the address in the line")
        .trim_matches('"')
        .to_owned();
    let knock = |bytes: &[u8]| -> Vec<u8> {
        let mut s = std::net::TcpStream::connect(&addr).expect("the link port");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let _ = s.write_all(bytes);
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        answer
    };
    let frame = |body: &[u8]| {
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        f
    };
    let wrong = format!("trellis-link 1\nintruder\n{}", "0".repeat(64));
    for (what, bytes) in [
        ("a hello with a wrong token", frame(wrong.as_bytes())),
        ("a hello of another version", frame(b"trellis-link 9\nx\ny")),
        (
            "a length far over the bound",
            0x7fff_ffffu32.to_be_bytes().to_vec(),
        ),
        ("HTTP", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
    ] {
        assert_eq!(knock(&bytes), b"", "{what}: closed without an answer");
    }
    a.wait_log("cluster backplane: a member link refused: a wrong token");
    let out = expect_python_args_ok(&a, "cluster_rpc.py", &[&a.url(), &b.url(), &c.url()]);
    for want in CLUSTER_RPC {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    let mut sent = 0;
    for n in [&a, &b, &c] {
        let s = crate::node::status(&n.node_dir());
        let l = &s["backplane"]["router1"]["links"];
        assert_eq!(l["open"], json!(2), "{s}");
        sent += l["sent"].as_u64().unwrap_or(0);
        assert!(l["received"].as_u64().unwrap_or(0) > 0, "{s}");
    }
    assert!(sent > 100, "the calls went on the links: {sent} frames");
    let s = crate::node::status(&a.node_dir());
    assert_eq!(
        s["backplane"]["router1"]["links"]["refused"],
        json!(4),
        "{s}"
    );
    assert_eq!(
        s["backplane"]["router1"]["dropped"]["link_queue_full"],
        json!(0),
        "{s}"
    );
    let (code, text) = crate::admin::get(admin, "/metrics", &[]);
    assert_eq!(code, 200, "{text}");
    let m = |series: &str| crate::admin::metric(&text, series);
    assert_eq!(m("trellis_cluster_links_open{worker=\"router1\"}"), 2.0);
    assert_eq!(
        m("trellis_cluster_links_refused_total{worker=\"router1\"}"),
        4.0
    );
    for direction in ["out", "in"] {
        let series = format!(
            "trellis_backplane_messages_total{{worker=\"router1\",direction=\"{direction}\",kind=\"rpc_link\"}}"
        );
        assert!(m(&series) > 0.0, "{series}:\n{text}");
    }
}

/// What `cluster_rpc.py` says when all is well.
const CLUSTER_RPC: &[&str] = &[
    "ok wamp.session.count on A counts the sessions of all three nodes",
    "ok wamp.session.list on A lists them all",
    "ok wamp.session.get on B finds a session of C",
    "ok a session no node has: wamp.error.no_such_session",
    "ok wamp.session.kill on A closes a session of C",
    "ok a caller on A reached a callee on B",
    "ok 200 concurrent calls across nodes answered right",
    "ok the caller disclosed to the remote callee",
    "ok a remote callee's error reaches the caller with its args",
    "ok 50 progressive results from C in order",
    "ok timeout 300 ms across nodes",
    "ok a remote call canceled by its caller",
    "ok cancel mode skip across nodes: ERROR canceled at once",
    "ok cancel mode killnowait across nodes: ERROR canceled at once",
    "ok cancel mode kill across nodes: ERROR canceled at once",
    "ok skip leaves the remote callee alone, kill and killnowait interrupt it",
    "ok round robin over callees on two nodes",
    "ok wamp.registration.lookup gives one id on every node",
    "ok wamp.registration.list_callees on A names the callees on B and C",
    "ok invoke first: every node calls the callee registered first (c)",
    "ok invoke first: once c left, every node calls the next in order (a)",
    "ok invoke last: every node calls the callee registered last (b)",
    "ok invoke last: once b left, every node calls the next in order (a)",
    "ok B and C got the same subscription id for one topic",
    "ok wamp.subscription.lookup on A finds a subscription of B and C",
    "ok wamp.subscription.match on A: the exact and the prefix subscription",
    "ok wamp.subscription.list_subscribers on A names the subscribers on B and C",
    "ok a subscription no node has: no_such_subscription",
    "ok unsubscribed everywhere: wamp.subscription.lookup on A gives null",
    "ok 50 single registrations from three nodes: 1 won, 49 got procedure_already_exists",
    "ok a single procedure is free again once its holder left",
    "ok a callee that left is gone from the other nodes",
];

/// `kill -9` of a node (controller and router) with calls in flight to
/// it: they fail with `wamp.error.canceled` once it is taken for dead, a
/// shared procedure keeps answering from the node that is left, and the
/// dead node's registrations are gone.
#[test]
fn a_node_killed_under_load() {
    killed_under_load(false);
}

/// The same over direct member links: the killed node's links are lost
/// at once, and its calls fail when it is taken for dead, as without.
#[test]
fn a_node_killed_under_load_with_member_links() {
    killed_under_load(true);
}

fn killed_under_load(links: bool) {
    let nats = Nats::start();
    let [a, b, c] = three_nodes_with(&nats, links);
    let (_, pids) = node_pids(&b);
    let out = expect_python_args_ok(
        &a,
        "cluster_failover.py",
        &[&a.url(), &b.url(), &c.url(), &pids],
    );
    for want in [
        "ok calls made 3.",
        "ok 20 calls in flight to the killed node failed with wamp.error.canceled",
        "ok the shared procedure goes to C only now",
        "ok the dead node's registrations are gone",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    for want in [
        "a member is silent: calls pass over its callees",
        "a member is silent for 5 s: taken as dead",
    ] {
        assert!(a.log().contains(want), "{want:?} missing:\n{}", a.log());
    }
    if links {
        assert!(
            a.log().contains("cluster backplane: member link lost"),
            "{}",
            a.log()
        );
        // A's link to C stays; the one to the dead B is gone.
        let s = crate::node::status(&a.node_dir());
        assert_eq!(s["backplane"]["router1"]["links"]["open"], json!(1), "{s}");
    }
}

/// A node stopped (SIGSTOP) for 15 s under a stream of events: only its
/// link suffers (the others lose nothing, calls pass over it), and it
/// takes part again once continued, without a restart.
#[test]
fn a_node_stopped_and_continued() {
    stopped_and_continued(false);
}

/// The same over direct member links: the links to the stopped node hold
/// what was written to it, calls pass over it meanwhile, and the links
/// carry its calls again once it is continued.
#[test]
fn a_node_stopped_and_continued_with_member_links() {
    stopped_and_continued(true);
}

fn stopped_and_continued(links: bool) {
    let nats = Nats::start();
    let [a, b, c] = three_nodes_with(&nats, links);
    let (router, pids) = node_pids(&c);
    let out = expect_python_args_ok(
        &c,
        "cluster_stopped.py",
        &[&a.url(), &b.url(), &c.url(), &pids],
    );
    for want in [
        "ok B got all ",
        "ok B's events never paused for a second while C was stopped",
        "ok calls made from 4 s after the stop on go to B",
        "ok no call hung while C was stopped",
        "ok C, continued, gets A's events and calls again",
        "ok C's session lived through the stop",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    let s = crate::node::status(&c.node_dir());
    assert_eq!(
        crate::node::pid_of(&s, "router1"),
        router,
        "C's router was not restarted: {s}"
    );
    let log = c.log();
    assert!(
        log.contains("the controller did not run for a while"),
        "{log}"
    );
    assert!(
        !log.contains("taken as dead"),
        "C, stopped itself, must not take the others for dead: {log}"
    );
    if links {
        let s = crate::node::status(&c.node_dir());
        let l = &s["backplane"]["router1"]["links"];
        assert!(l["received"].as_u64().unwrap_or(0) > 0, "{s}");
        assert!(l["sent"].as_u64().unwrap_or(0) > 0, "{s}");
    }
    eprintln!("{out}");
}

/// NATS going away: each node keeps routing its own clients, publishing
/// never blocks, `/readyz` says the backplane fails and `/metrics` counts
/// the drops; NATS coming back: cross-node delivery resumes by itself.
#[test]
fn nats_outage_and_return() {
    use crate::admin::{get, metric, wait_code};
    let mut nats = Nats::start();
    let (pa, pb, admin) = (free_port(), free_port(), free_port());
    let mut cfg_a = node_config(pa, "a", &nats);
    cfg_a["controller"] = json!({"admin": {"endpoint": {"type": "tcp", "port": admin}}});
    let a = Node::start(&cfg_a, pa);
    let b = Node::start(&node_config(pb, "b", &nats), pb);
    wait_connected(&[&a, &b]);
    wait_code(admin, "/readyz", 204);
    let out = expect_python_args_ok(&a, "cluster_outage.py", &["cross", &a.url(), &b.url()]);
    assert!(out.contains("ok an event from A reached B"), "{out}");

    // Calls across nodes while NATS goes away (the script kills it).
    let out = expect_python_args_ok(
        &a,
        "cluster_outage.py",
        &["calls-down", &a.url(), &b.url(), &nats.pid().to_string()],
    );
    for want in [
        "ok a call in flight to B failed with wamp.error.canceled",
        "ok a new call to B fails at once with wamp.error.no_available_callee",
        "ok a local call on A still works",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    nats.stop();
    let body = wait_code(admin, "/readyz", 503);
    assert!(body.contains("backplane"), "{body}");
    let out = expect_python_args_ok(&a, "cluster_outage.py", &["local", &a.url(), &b.url()]);
    for want in [
        "ok 5000 local events delivered while NATS is away",
        "ok a local call while NATS is away",
        "ok a single registration is refused while NATS is away",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    let (code, text) = get(admin, "/metrics", &[]);
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        metric(&text, "trellis_backplane_connected{worker=\"router1\"}"),
        0.0,
        "{text}"
    );
    let dropped = metric(
        &text,
        "trellis_backplane_dropped_messages_total{worker=\"router1\",reason=\"disconnected\"}",
    );
    assert!(dropped >= 5000.0, "{dropped} drops counted:\n{text}");

    let s = crate::node::status(&a.node_dir());
    assert_eq!(s["backplane"]["router1"]["connected"], json!(false), "{s}");
    assert!(
        s["backplane"]["router1"]["dropped"]["disconnected"]
            .as_u64()
            .is_some_and(|n| n >= 5000),
        "{s}"
    );

    nats.restart();
    wait_code(admin, "/readyz", 204);
    let out = expect_python_args_ok(&a, "cluster_outage.py", &["cross", &a.url(), &b.url()]);
    assert!(out.contains("ok an event from A reached B"), "{out}");
    let (_, text) = get(admin, "/metrics", &[]);
    assert_eq!(
        metric(&text, "trellis_backplane_connected{worker=\"router1\"}"),
        1.0
    );
    assert!(
        metric(
            &text,
            "trellis_backplane_reconnects_total{worker=\"router1\"}"
        ) >= 1.0,
        "{text}"
    );
    // B is heard from again, and the round trip to NATS is measured.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = crate::node::status(&a.node_dir());
        let bp = &s["backplane"]["router1"];
        if bp["members"].as_u64() == Some(1)
            && bp["rtt_ms"].as_f64().is_some_and(|r| r > 0.0)
            && bp["directory_ready"] == json!(true)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed B and a round trip: {s}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, text) = get(admin, "/metrics", &[]);
    assert_eq!(
        metric(&text, "trellis_cluster_members{worker=\"router1\"}"),
        1.0
    );
    assert!(metric(&text, "trellis_backplane_rtt_seconds{worker=\"router1\"}") > 0.0);
    assert_eq!(
        metric(&text, "trellis_meta_partial_total{worker=\"router1\"}"),
        0.0,
        "{text}"
    );
}

/// NATS frozen (SIGSTOP) without closing its connections: noticed within
/// seconds, calls across nodes fail fast meanwhile, local ones work, and
/// all resumes after SIGCONT.
#[test]
fn nats_frozen_and_thawed() {
    let nats = Nats::start();
    let (pa, pb) = (free_port(), free_port());
    let a = Node::start(&node_config(pa, "a", &nats), pa);
    let b = Node::start(&node_config(pb, "b", &nats), pb);
    for n in [&a, &b] {
        n.wait_log("cluster backplane: registration directory ready");
    }
    let out = expect_python_args_ok(
        &a,
        "cluster_outage.py",
        &["frozen", &a.url(), &b.url(), &nats.pid().to_string()],
    );
    for want in [
        "ok NATS frozen: calls to B fail with no_available_callee",
        "ok then at once, not after a wait",
        "ok NATS frozen: local calls on A work",
        "ok NATS thawed: A calls B again",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
    let out = expect_python_args_ok(
        &a,
        "cluster_outage.py",
        &["stale", &a.url(), &b.url(), &nats.pid().to_string()],
    );
    assert!(
        out.contains(
            "ok a callee that left while NATS was frozen is gone from A once NATS is back"
        ),
        "{out}"
    );
}

/// A certificate authority and what it signs, as PEM (certificate, key).
struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("key")).expect("ca");
        let sign = |names: &[&str]| {
            let key = KeyPair::generate().expect("key");
            let params =
                CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                    .expect("params");
            let cert = params.signed_by(&key, &ca).expect("signed");
            (cert.pem(), key.serialize_pem())
        };
        Pki {
            server: sign(&["127.0.0.1", "localhost"]),
            client: sign(&["trellis-node"]),
            ca: ca.pem(),
        }
    }
}

/// TLS to NATS: a nats-server that requires TLS and verifies client
/// certificates; nodes that trust its CA and show their certificate share
/// realms (events, a `single` registration claimed over JetStream); a node
/// trusting another CA does not connect; `check` names bad TLS keys.
#[test]
fn nats_over_tls_with_client_certificates() {
    let pki = Pki::new();
    let certs = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, text: &str| {
        let p = certs.path().join(name);
        std::fs::write(&p, text).expect("write");
        p.display().to_string()
    };
    let (ca, cert, key) = (
        write("ca.pem", &pki.ca),
        write("server.pem", &pki.server.0),
        write("server.key", &pki.server.1),
    );
    let nats = Nats::start_with(&[
        "--tlsverify",
        "--tlscert",
        &cert,
        "--tlskey",
        &key,
        "--tlscacert",
        &ca,
    ]);
    let files = [
        ("ca.pem", pki.ca.as_str()),
        ("client.pem", pki.client.0.as_str()),
        ("client.key", pki.client.1.as_str()),
    ];
    let tls_node = |id: &str, tls: serde_json::Value| {
        let port = free_port();
        let mut cfg = node_config(port, id, &nats);
        cfg["cluster"]["nats"] = json!({
            "servers": [format!("tls://127.0.0.1:{}", nats.port)],
            "tls": tls
        });
        Node::start_with_files(&cfg, port, &files)
    };
    let good =
        json!({"ca_certificates": ["ca.pem"], "certificate": "client.pem", "key": "client.key"});
    let a = tls_node("a", good.clone());
    let b = tls_node("b", good);
    for n in [&a, &b] {
        n.wait_log("cluster backplane: registration directory ready");
    }
    let out = expect_python_args_ok(&a, "cluster_outage.py", &["cross", &a.url(), &b.url()]);
    assert!(out.contains("ok an event from A reached B"), "{out}");
    let out = expect_python_args_ok(&a, "cluster_outage.py", &["cross-call", &a.url(), &b.url()]);
    assert!(
        out.contains("ok a call from A reached a single registration on B"),
        "{out}"
    );

    // Trusting another CA: the server's certificate is refused.
    let other = Pki::new();
    let port = free_port();
    let mut cfg = node_config(port, "c", &nats);
    cfg["cluster"]["nats"] = json!({
        "servers": [format!("tls://127.0.0.1:{}", nats.port)],
        "tls": {"ca_certificates": ["other-ca.pem"], "certificate": "client.pem", "key": "client.key"}
    });
    let mut files_c = files.to_vec();
    files_c.push(("other-ca.pem", other.ca.as_str()));
    let c = Node::start_with_files(&cfg, port, &files_c);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        !c.log().contains("cluster backplane: connected to NATS"),
        "{}",
        c.log()
    );
    let s = crate::node::status(&c.node_dir());
    assert_eq!(s["backplane"]["router1"]["connected"], json!(false), "{s}");
}

/// Sessions that register and leave leave delete markers in the
/// directory; each node purges its own after `purge_after`, so the
/// directory does not grow with every session there ever was.
#[test]
fn the_directory_does_not_keep_ended_registrations() {
    let nats = Nats::start();
    let (pa, pb) = (free_port(), free_port());
    let mut cfg_b = node_config(pb, "b", &nats);
    cfg_b["cluster"]["purge_after"] = json!(1);
    let a = Node::start(&node_config(pa, "a", &nats), pa);
    let b = Node::start(&cfg_b, pb);
    for n in [&a, &b] {
        n.wait_log("cluster backplane: registration directory read through");
    }
    let before = nats.directory_messages();
    let out = expect_python_args_ok(&a, "cluster_outage.py", &["churn", &a.url(), &b.url()]);
    assert!(
        out.contains("ok 20 callees registered and left on B"),
        "{out}"
    );
    let right_after = nats.directory_messages();
    assert!(
        right_after >= before + 15,
        "the markers are there at first: {before} then {right_after}"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = nats.directory_messages();
        if now == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the directory kept {now} messages (was {before} before 20 callees came and went)"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A NATS server without JetStream: the node serves its own clients, is
/// not ready, and says why.
#[test]
fn nats_without_jetstream_is_named() {
    use crate::admin::wait_code;
    let nats = Nats::start_without_jetstream();
    let (pa, admin) = (free_port(), free_port());
    let mut cfg = node_config(pa, "a", &nats);
    cfg["controller"] = json!({"admin": {"endpoint": {"type": "tcp", "port": admin}}});
    let a = Node::start(&cfg, pa);
    a.wait_log("cluster backplane: connected to NATS");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !a.log().contains("is JetStream enabled on the NATS server") {
        assert!(Instant::now() < deadline, "{}", a.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let body = wait_code(admin, "/readyz", 503);
    assert!(body.contains("backplane"), "{body}");
    let out = expect_python_args_ok(&a, "cluster_outage.py", &["local", &a.url(), &a.url()]);
    assert!(out.contains("ok a local call while NATS is away"), "{out}");
}

/// `trellis check` refuses `cfg` (status 78) and says each of `wants`.
fn check_refuses(cfg: &serde_json::Value, wants: &[&str]) {
    let out = crate::support::check_json(cfg);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    for want in wants {
        assert!(err.contains(want), "{want:?} missing:\n{err}");
    }
}

/// `trellis check` names what is wrong in a `cluster` block.
#[test]
fn check_names_cluster_problems() {
    let mut cfg = router_config(free_port());
    cfg["cluster"] = json!({
        "name": "c 1",
        "node_id": "",
        "nats": {"servers": ["127.0.0.1:4222"], "tls": {"key": "k.pem"}},
        "backplane_queue": 0,
        "bogus": 1
    });
    check_refuses(&cfg, &["cluster.bogus: unknown field `bogus`"]);
    cfg["cluster"]
        .as_object_mut()
        .expect("object")
        .remove("bogus");
    check_refuses(
        &cfg,
        &[
            "cluster.name: \"c 1\": use 1 to 64 letters, digits, '_' or '-'",
            "cluster.node_id: \"\": use 1 to 64",
            "cluster.nats.servers[0]: \"127.0.0.1:4222\": expected a nats://HOST:PORT or tls://HOST:PORT URL",
            "cluster.nats.tls: give both certificate and key",
            "cluster.backplane_queue: must be at least 1",
        ],
    );
    // Member links: an address the others cannot use, one port for two
    // router workers.
    let mut two = router_config(free_port());
    let mut second = two["workers"][0].clone();
    second["id"] = json!("router2");
    second["transports"][0]["endpoint"]["port"] = json!(free_port());
    two["workers"].as_array_mut().expect("workers").push(second);
    two["cluster"] = json!({
        "name": "c1", "node_id": "a", "nats": {"servers": ["nats://127.0.0.1:4222"]},
        "links": {"interface": "0.0.0.0", "port": 7000, "queue": 0}
    });
    check_refuses(
        &two,
        &[
            "cluster.links.advertise: missing: with links.interface \"0.0.0.0\" the other members need this node's address",
            "cluster.links.queue: must be at least 1",
            "cluster.links.port: 7000: each router worker listens for member links, and 2 cannot share one port: use 0",
        ],
    );
    // The files, once the rest is right: taken from the node directory.
    cfg["cluster"] = json!({
        "name": "c1",
        "node_id": "a",
        "nats": {"servers": ["tls://127.0.0.1:4222"],
                 "tls": {"ca_certificates": ["missing-ca.pem"]},
                 "credentials": "missing.creds"}
    });
    check_refuses(
        &cfg,
        &[
            "cluster.nats.tls.ca_certificates[0]: \"",
            "missing-ca.pem\": No such file",
            "cluster.nats.credentials: \"/",
            "missing.creds\" is not a file (relative paths start at the node directory",
        ],
    );
}

/// examples/cluster: its three node configs are valid.
#[test]
fn the_example_cluster_configs_check() {
    for n in ["a", "b", "c"] {
        let path = crate::support::repo_root().join(format!("examples/cluster/node-{n}.json"));
        let out = crate::support::trellis_check(&path);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A node killed and started again with the same `node_id` and port: it
/// is a new member; the dead one's claims and registrations are purged,
/// and the new one's work.
#[test]
fn a_node_restarted() {
    let nats = Nats::start();
    let [a, b, _c] = three_nodes(&nats);
    let (_, pids) = node_pids(&b);
    let out = expect_python_args_ok(
        &a,
        "cluster_restart.py",
        &["before", &a.url(), &b.url(), &pids],
    );
    assert!(out.contains("ok A calls B's procedure"), "{out}");
    let port = b.port;
    drop(b);
    let b2 = Node::start(&node_config(port, "b", &nats), port);
    b2.wait_log("cluster backplane: registration directory ready");
    let out = expect_python_args_ok(&a, "cluster_restart.py", &["after", &a.url(), &b2.url()]);
    for want in [
        "ok the restarted node takes the procedure once the dead node's claim is purged",
        "ok A's calls reach the restarted node",
    ] {
        assert!(out.contains(want), "{want:?} missing:\n{out}");
    }
}

/// MQTT devices on two nodes: their messages cross the cluster like any
/// other event, MQTT 5 user properties with them.
#[test]
fn mqtt_devices_on_two_nodes() {
    let nats = Nats::start();
    let nodes = ["a", "b"].map(|id| {
        let (port, mqtt) = (free_port(), free_port());
        let mut cfg = node_config(port, id, &nats);
        crate::support::push_transport(
            &mut cfg,
            json!({"type": "mqtt",
                   "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": mqtt},
                   "options": {"realm": "realm1", "role": "anonymous",
                               "payload_mapping": {"plant": {"type": "native"}}}}),
        );
        (Node::start(&cfg, port), mqtt)
    });
    for (n, _) in &nodes {
        n.wait_log("cluster backplane: connected to NATS");
    }
    let [(a, a_mqtt), (b, b_mqtt)] = nodes;
    let out = expect_python_args_ok(
        &a,
        "mqtt_cluster.py",
        &[
            "127.0.0.1",
            &a_mqtt.to_string(),
            &b_mqtt.to_string(),
            &b.url(),
        ],
    );
    assert!(
        out.contains(
            "ok an mqtt publication on node a reaches mqtt and wamp subscribers on node b"
        ),
        "{out}"
    );
}

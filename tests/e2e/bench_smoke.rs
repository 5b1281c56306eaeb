//! A short run of the load generator, so it cannot rot. Timings are not
//! asserted (that is scripts/bench's job); sanity is: it runs, reports JSON,
//! and the figures are positive.

use std::process::Command;

use crate::support::{Node, free_port, router_config};

fn bench(node: &Node, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_trellis-bench"))
        .args([
            "--url",
            &node.url(),
            "--warmup",
            "0.2",
            "--duration",
            "0.8",
            "--label",
            "smoke",
        ])
        .args(args)
        .output()
        .expect("run trellis-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "trellis-bench {args:?} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("")).expect("one JSON line")
}

#[test]
fn load_generator_reports_sane_figures() {
    let port = free_port();
    let node = Node::start(&router_config(port), port);
    let rpc = bench(
        &node,
        &[
            "--serializer",
            "msgpack",
            "rpc",
            "--callers",
            "2",
            "--inflight",
            "4",
        ],
    );
    assert!(rpc["calls_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{rpc}");
    assert!(rpc["p50_ms"].as_f64().unwrap_or(-1.0) > 0.0, "{rpc}");
    // Open loop: calls go out on a schedule, never faster than the rate.
    let paced = bench(
        &node,
        &[
            "rpc",
            "--callers",
            "2",
            "--inflight",
            "100",
            "--rate",
            "200",
        ],
    );
    // At most what can have been sent by the window's end (warm-up and
    // window: 1 s at 200 calls/s, plus each caller's first call), even if
    // the router held every call of the warm-up: 202 calls over 0.8 s
    // (the figure is rounded).
    let done = paced["calls_per_s"].as_f64().unwrap_or(0.0);
    assert!(done > 0.0 && done <= (202.0_f64 / 0.8).ceil(), "{paced}");
    assert_eq!(paced["rate"], 200.0, "{paced}");
    // JSON events are decoded whole; MessagePack ones are read in place.
    let ps = bench(&node, &["pubsub", "--subscribers", "5"]);
    assert!(ps["events_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{ps}");
    let ps = bench(
        &node,
        &[
            "--serializer",
            "msgpack",
            "pubsub",
            "--subscribers",
            "3",
            "--payload",
            "4096",
        ],
    );
    assert!(ps["events_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{ps}");
    assert!(ps["p99_ms"].as_f64().unwrap_or(-1.0) > 0.0, "{ps}");
    let storm = bench(&node, &["storm", "--concurrency", "2"]);
    assert!(
        storm["sessions_per_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{storm}"
    );
}

/// A small version of the 10 000-cycle run: connections come and go and
/// leave no file descriptor behind.
#[test]
fn connect_goodbye_cycles_leave_no_descriptors_behind() {
    let port = free_port();
    let node = Node::start(&router_config(port), port);
    let pid = node.pid().to_string();
    let warm = bench(&node, &["cycles", "--count", "50", "--pid", &pid]);
    assert_eq!(warm["count"], 50, "{warm}");
    let r = bench(&node, &["cycles", "--count", "1000", "--pid", &pid]);
    let (before, after) = (r["fds_before"].as_u64(), r["fds_after"].as_u64());
    assert!(
        before.is_some() && after <= before,
        "file descriptors grew: {r}"
    );
}

//! A short run of the load generator, so it cannot rot. Timings are not
//! asserted (that is scripts/bench's job); sanity is: it runs, reports JSON,
//! and the figures are positive. The router runs inside this test process
//! (router-worker), so the load generator needs no `trellis` binary.

use std::process::Command;

use router_worker::Router;
use tokio_util::sync::CancellationToken;
use trellis_config::router::RouterConfig;

/// A router on a free loopback port, served from a runtime of its own.
struct InProcess {
    url: String,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcess {
    fn start() -> InProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let cfg: RouterConfig = serde_json::from_value(serde_json::json!({
            "realms": [{"name": "realm1", "roles": [{"name": "anonymous", "permissions": [
                {"uri": "", "match": "prefix",
                 "allow": {"call": true, "register": true, "publish": true, "subscribe": true}}]}]}],
            "transports": [{"type": "websocket",
                            "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": port}}]
        }))
        .expect("router config");
        let stop = CancellationToken::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let token = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async move {
                let router = Router::bind(&cfg).await.expect("bind");
                let _ = ready_tx.send(());
                router.serve(token).await;
            });
        });
        ready_rx.recv().expect("router started");
        InProcess {
            url: format!("ws://127.0.0.1:{port}/ws"),
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn bench(router: &InProcess, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_trellis-bench"))
        .args([
            "--url",
            &router.url,
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

/// One test, run in order: the cycles scenario counts this process's file
/// descriptors, which a concurrent scenario would disturb.
#[test]
fn load_generator_reports_sane_figures() {
    let router = InProcess::start();
    // Connections come and go and leave no file descriptor behind.
    let pid = std::process::id().to_string();
    let warm = bench(&router, &["cycles", "--count", "50", "--pid", &pid]);
    assert_eq!(warm["count"], 50, "{warm}");
    let r = bench(&router, &["cycles", "--count", "1000", "--pid", &pid]);
    let (before, after) = (r["fds_before"].as_u64(), r["fds_after"].as_u64());
    assert!(
        before.is_some() && after <= before,
        "file descriptors grew: {r}"
    );

    let rpc = bench(
        &router,
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
        &router,
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
    let ps = bench(&router, &["pubsub", "--subscribers", "5"]);
    assert!(ps["events_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{ps}");
    let ps = bench(
        &router,
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
    let storm = bench(&router, &["storm", "--concurrency", "2"]);
    assert!(
        storm["sessions_per_s"].as_f64().unwrap_or(0.0) > 0.0,
        "{storm}"
    );
}

//! `trellis-bench`: a load generator for any WAMP router reachable over
//! WebSocket (Trellis, Crossbar.io, ...).
//!
//! Scenarios (each prints one JSON line, and `--table` adds a readable line):
//! - `rpc`: N callers keep K calls each in flight against one callee;
//!   calls/s and the latency the callers saw (p50/p99/p99.9) for calls sent
//!   during the measured window. With `--rate`, the callers send calls on a
//!   schedule instead (open loop), for latency at a given load.
//! - `pubsub`: one publisher, S subscribers, payload P bytes; events
//!   delivered/s and publish-to-receive latency. The publisher keeps a
//!   bounded window ahead of the slowest subscriber, so no router has to
//!   drop anyone and the figure is sustained throughput.
//! - `storm`: C concurrent clients connect, join, say GOODBYE and close in a
//!   loop; sessions joined/s.
//! - `idle`: hold N joined sessions; the router's RSS (its whole process
//!   tree, from /proc) before and after, per session; then how long a new
//!   client takes to join and make a call.
//! - `startup`: run a command that starts a router, measure the time until
//!   the first WELCOME.
//! - `unfinished-frames`: N connections each open a WebSocket and send one
//!   frame header declaring D bytes and a little of its payload, then wait;
//!   the router's RSS before and after, and how many it closed (a router
//!   that honours its message limit refuses such frames at the header).
//!
//! - `mqtt-fanout`, `mqtt-connect`, `mqtt-to-wamp`, `mqtt-idle`: MQTT
//!   brokers (Trellis's `mqtt` transport, mosquitto), see `mqtt.rs`.
//!
//! Every loop is bounded in count and time. Warm-up is excluded from the
//! measurement.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use futures::{FutureExt, SinkExt, StreamExt};
use proto::message::{Call, Goodbye, Hello, Publish, Register, Subscribe, Yield};
use proto::{Dict, Message, Payload, Serializer, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message as Ws};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod bridge;
mod mqtt;
mod process;
mod wire;

use bridge::*;
use process::*;
use wire::*;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[derive(Parser)]
#[command(
    name = "trellis-bench",
    version,
    about = "Load generator for WAMP routers"
)]
struct Cli {
    /// Router URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws", global = true)]
    url: String,
    /// Realm to join.
    #[arg(long, default_value = "realm1", global = true)]
    realm: String,
    /// Serializer.
    #[arg(long, value_enum, default_value = "json", global = true)]
    serializer: Ser,
    /// Warm-up seconds (not measured).
    #[arg(long, default_value_t = 1.0, global = true)]
    warmup: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 5.0, global = true)]
    duration: f64,
    /// A label for the JSON line (e.g. the router's name).
    #[arg(long, default_value = "", global = true)]
    label: String,
    /// Also print a human-readable line.
    #[arg(long, global = true)]
    table: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Clone, Copy, ValueEnum)]
enum Ser {
    Json,
    Msgpack,
    Cbor,
}

impl Ser {
    fn serializer(self) -> Serializer {
        match self {
            Ser::Json => Serializer::Json,
            Ser::Msgpack => Serializer::MsgPack,
            Ser::Cbor => Serializer::Cbor,
        }
    }
}

#[derive(Subcommand)]
enum Scenario {
    /// N callers × K calls in flight against one callee; with `--rate`,
    /// the callers send that many calls a second between them instead
    /// (open loop: a call goes out when it is due, whether or not earlier
    /// ones have returned; K bounds the calls in flight per caller).
    Rpc {
        #[arg(long, default_value_t = 4)]
        callers: usize,
        #[arg(long, default_value_t = 16)]
        inflight: usize,
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Calls per second, over all callers.
        #[arg(long)]
        rate: Option<f64>,
        /// Call this procedure, registered by someone else (a component of
        /// the node), instead of the benchmark's own `bench.echo` callee.
        /// Waits up to 60 s for it to be registered.
        #[arg(long)]
        procedure: Option<String>,
        /// The node's PID: report its process tree's RSS after the run.
        #[arg(long)]
        pid: Option<u32>,
        /// The benchmark's callee joins here instead of `--url` (another
        /// node of a cluster: calls cross nodes).
        #[arg(long)]
        callee_url: Option<String>,
    },
    /// One publisher, S subscribers.
    Pubsub {
        #[arg(long, default_value_t = 10)]
        subscribers: usize,
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Publications the publisher may be ahead of the slowest subscriber.
        #[arg(long, default_value_t = 256)]
        window: u64,
        /// The publisher joins here instead of `--url` (another node of a
        /// cluster: events cross nodes).
        #[arg(long)]
        publisher_url: Option<String>,
    },
    /// Connect, join, leave, in a loop.
    Storm {
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// N connect/HELLO/GOODBYE cycles; the router's RSS and open file
    /// descriptors (its whole process tree) before and after.
    Cycles {
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// The router's PID (its children are counted too).
        #[arg(long)]
        pid: u32,
    },
    /// Hold N idle sessions and measure the router's memory per session.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        sessions: usize,
        /// The router's PID (its children are counted too).
        #[arg(long)]
        pid: u32,
        /// Sessions joining at once while filling up.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// N idle MQTT 3.1.1 clients (CONNECT, CONNACK, then silence) on an
    /// mqtt transport (`--url mqtt://HOST:PORT`): the router's RSS before
    /// and after, per client.
    MqttIdle {
        #[arg(long, default_value_t = 10_000)]
        clients: usize,
        /// The router's PID (its children are counted too).
        #[arg(long)]
        pid: u32,
        /// Clients connecting at once while filling up.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// MQTT (`--url mqtt://HOST:PORT`): one publisher, S subscribers of
    /// one topic, QoS 0.
    MqttFanout {
        #[arg(long, default_value_t = 10)]
        subscribers: usize,
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Messages the publisher may be ahead of the slowest subscriber.
        #[arg(long, default_value_t = 256)]
        window: u64,
    },
    /// MQTT (`--url mqtt://HOST:PORT`): connect, CONNACK, DISCONNECT, in a
    /// loop; connections/s.
    MqttConnect {
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// An MQTT publisher (at `--mqtt-url`) and S WAMP subscribers (at
    /// `--url`) of `bench.topic`; the node maps `bench` natively.
    MqttToWamp {
        #[arg(long)]
        mqtt_url: String,
        #[arg(long, default_value_t = 10)]
        subscribers: usize,
        #[arg(long, default_value_t = 64)]
        payload: usize,
        #[arg(long, default_value_t = 256)]
        window: u64,
    },
    /// N connections each holding an unfinished frame that declares
    /// `declared` bytes; the router's RSS before and after.
    UnfinishedFrames {
        #[arg(long, default_value_t = 300)]
        connections: usize,
        /// The frame's declared payload length.
        #[arg(long, default_value_t = 990_000)]
        declared: u64,
        /// Payload bytes actually sent.
        #[arg(long, default_value_t = 1000)]
        sent: usize,
        /// The router's PID (its children are counted too).
        #[arg(long)]
        pid: u32,
    },
    /// The HTTP bridge: N clients POST a publication (or, with `--call`,
    /// a call) each in turn to `--url`, an http:// URL of a `publisher`
    /// (or `caller`) path, one request per connection (`Connection:
    /// close`) or, with `--keep-alive`, all on one connection per client;
    /// requests answered 200 per second.
    Bridge {
        #[arg(long, default_value_t = 50)]
        concurrency: usize,
        /// Keep each client's connection open (HTTP/1.1 keep-alive).
        #[arg(long)]
        keep_alive: bool,
        /// POST calls of `bench.echo` to a `caller` path; the benchmark
        /// registers the procedure itself, as a WAMP callee at this
        /// ws:// URL.
        #[arg(long)]
        call: Option<String>,
    },
    /// Time from starting a router to its first WELCOME.
    Startup {
        /// The command that starts the router (run with sh -c).
        #[arg(long)]
        cmd: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
    },
    /// Not a load: serve the ceiling, a bare WAMP router on Trellis's own
    /// WebSocket stack with nothing else (no authentication, authorization,
    /// option parsing or meta API), on 127.0.0.1:PORT until killed, for
    /// the other scenarios to run against.
    Ceiling {
        #[arg(long)]
        port: u16,
    },
    /// A Trellis node: `trellis start` to systemd READY=1 (every worker
    /// up), then `kill -9` of its router worker to the next WELCOME.
    Node {
        /// The command that starts the node (run with sh -c).
        #[arg(long)]
        cmd: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
    },
}

/// Latency samples in microseconds, capped so memory stays bounded.
#[derive(Default)]
struct Samples(Vec<u32>);

const MAX_SAMPLES: usize = 4_000_000;

impl Samples {
    fn add(&mut self, d: Duration) {
        if self.0.len() < MAX_SAMPLES {
            self.0.push(d.as_micros().min(u32::MAX as u128) as u32);
        }
    }
    fn merge(&mut self, other: Samples) {
        let room = MAX_SAMPLES.saturating_sub(self.0.len());
        self.0.extend(other.0.into_iter().take(room));
    }
    fn pct(&mut self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0.sort_unstable();
        let i = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.0[i]) / 1000.0
    }
}

/// The measured window: warm-up start, measurement start, end.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    pub(crate) fn new(warmup: f64, duration: f64) -> Window {
        let start = Instant::now() + Duration::from_secs_f64(warmup);
        Window {
            start,
            end: start + Duration::from_secs_f64(duration),
        }
    }
    fn measuring(&self, t: Instant) -> bool {
        t >= self.start && t < self.end
    }
    fn secs(&self) -> f64 {
        (self.end - self.start).as_secs_f64()
    }
}

fn report(cli: &Cli, scenario: &str, fields: serde_json::Value, human: String) {
    let mut obj = serde_json::json!({
        "scenario": scenario,
        "router": cli.label,
        "serializer": cli.serializer.serializer().name(),
    });
    if let (Some(o), Some(f)) = (obj.as_object_mut(), fields.as_object()) {
        for (k, v) in f {
            o.insert(k.clone(), v.clone());
        }
    }
    println!("{obj}");
    if cli.table {
        eprintln!("{:<10} {:<10} {human}", cli.label, scenario);
    }
}

/// Whose procedure the `rpc` scenario calls, and whose memory it reports.
struct RpcTarget {
    /// Someone else's procedure; the benchmark's own callee when `None`.
    procedure: Option<String>,
    /// The node's PID, for its process tree's RSS.
    pid: Option<u32>,
    /// Where the benchmark's own callee joins, when not at `--url`.
    callee_url: Option<String>,
}

/// Call `procedure` until it answers (it is registered), for `within`.
async fn wait_registered(c: &mut Conn, procedure: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let request = c.request();
        c.feed(&Message::Call(Call {
            request,
            options: Dict::new(),
            procedure: procedure.into(),
            payload: Payload::args(vec![Value::Bytes(b"x".to_vec())]),
        }))
        .await?;
        c.ws.flush().await?;
        match tokio::time::timeout(Duration::from_secs(10), c.recv()).await {
            Ok(Ok(Message::Result(_))) => return Ok(()),
            Ok(Ok(Message::Error(e))) if e.error == "wamp.error.no_such_procedure" => {}
            Ok(Ok(other)) => bail!("calling {procedure}: unexpected {other:?}"),
            Ok(Err(e)) => return Err(e),
            Err(_) => bail!("calling {procedure}: no answer within 10 s"),
        }
        if Instant::now() > deadline {
            bail!("{procedure} was not registered within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Answer every invocation with its own arguments until `stop`.
async fn echo_callee(mut callee: Conn, stop: Arc<AtomicBool>) -> Result<()> {
    while !stop.load(Ordering::Relaxed) {
        let first = match tokio::time::timeout(Duration::from_millis(200), callee.recv()).await {
            Err(_) => continue,
            Ok(m) => m?,
        };
        let mut next = Some(first);
        // Answer everything already received, then flush once.
        while let Some(m) = next {
            if let Message::Invocation(inv) = m {
                callee
                    .feed(&Message::Yield(Yield {
                        request: inv.request,
                        options: Dict::new(),
                        payload: inv.payload,
                    }))
                    .await?;
            }
            next = callee.try_recv()?;
        }
        callee.ws.flush().await?;
    }
    Ok(())
}

async fn rpc(
    cli: &Cli,
    callers: usize,
    inflight: usize,
    payload: usize,
    rate: Option<f64>,
    target: RpcTarget,
) -> Result<()> {
    let ser = cli.serializer.serializer();
    // Open loop: each caller's time between calls.
    let every = match rate {
        Some(r) if r.is_finite() && r > 0.0 => Some(Duration::from_secs_f64(callers as f64 / r)),
        Some(r) => bail!("--rate must be a positive number of calls per second, not {r}"),
        None => None,
    };
    let procedure = target.procedure.clone().unwrap_or("bench.echo".into());
    let stop = Arc::new(AtomicBool::new(false));
    let stop_callee = stop.clone();
    let mut callee = Conn::join(
        target.callee_url.as_deref().unwrap_or(&cli.url),
        &cli.realm,
        ser,
    )
    .await?;
    if target.procedure.is_some() {
        wait_registered(&mut callee, &procedure, Duration::from_secs(60)).await?;
    } else {
        callee.register("bench.echo").await?;
    }

    let own_callee = target.procedure.is_none();
    let target_cross = target.callee_url.is_some();
    let callee_task = tokio::spawn(async move {
        if !own_callee {
            return Ok(());
        }
        echo_callee(callee, stop_callee).await
    });
    if target.callee_url.is_some() {
        // The registration reaches the callers' node through the cluster's
        // directory: wait until a call from there gets through.
        let mut probe = Conn::join(&cli.url, &cli.realm, ser).await?;
        wait_registered(&mut probe, &procedure, Duration::from_secs(30)).await?;
    }
    let window = Window::new(cli.warmup, cli.duration);
    let blob = Value::Bytes(vec![b'x'; payload]);
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let mut c = Conn::join(&cli.url, &cli.realm, ser).await?;
        let blob = blob.clone();
        let procedure = procedure.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent: HashMap<u64, Instant> = HashMap::with_capacity(inflight * 2);
            let mut samples = Samples::default();
            let mut done = 0u64;
            let call = |c: &mut Conn| {
                let request = c.request();
                (
                    request,
                    Message::Call(Call {
                        request,
                        options: Dict::new(),
                        procedure: procedure.as_str().into(),
                        payload: Payload::args(vec![blob.clone()]),
                    }),
                )
            };
            let mut due = Instant::now();
            if every.is_none() {
                for _ in 0..inflight {
                    let (r, m) = call(&mut c);
                    sent.insert(r, Instant::now());
                    c.feed(&m).await?;
                }
                c.ws.flush().await?;
            }
            while Instant::now() < window.end {
                let m = if let Some(every) = every {
                    // Send what is due, or take what has arrived.
                    let arrived = tokio::select! {
                        _ = tokio::time::sleep_until(due.into()) => None,
                        m = c.recv() => Some(m?),
                    };
                    let Some(m) = arrived else {
                        let now = Instant::now();
                        while due <= now {
                            if sent.len() >= inflight {
                                bail!(
                                    "the router fell behind: {inflight} calls of one caller in flight at {} calls/s",
                                    rate.unwrap_or(0.0)
                                );
                            }
                            let (r, m) = call(&mut c);
                            sent.insert(r, Instant::now());
                            c.feed(&m).await?;
                            due += every;
                        }
                        c.ws.flush().await?;
                        continue;
                    };
                    m
                } else {
                    match tokio::time::timeout(Duration::from_secs(10), c.recv()).await {
                        Err(_) => bail!("no RESULT within 10 s"),
                        Ok(m) => m?,
                    }
                };
                let mut next = Some(m);
                while let Some(m) = next {
                    if let Message::Error(e) = &m {
                        bail!("call failed: {}", e.error);
                    }
                    if let Message::Result(r) = m
                        && let Some(t0) = sent.remove(&r.request)
                    {
                        let now = Instant::now();
                        if window.measuring(t0) {
                            samples.add(now - t0);
                        }
                        if window.measuring(now) {
                            done += 1;
                        }
                        if every.is_none() && now < window.end {
                            let (r, m) = call(&mut c);
                            sent.insert(r, Instant::now());
                            c.feed(&m).await?;
                        }
                    }
                    next = c.try_recv()?;
                }
                c.ws.flush().await?;
            }
            Ok::<_, anyhow::Error>((done, samples))
        }));
    }
    let mut total = 0u64;
    let mut samples = Samples::default();
    for t in tasks {
        let (d, s) = t.await??;
        total += d;
        samples.merge(s);
    }
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(2), callee_task).await;
    let done_per_s = total as f64 / window.secs();
    let (p50, p99, p999) = (samples.pct(0.5), samples.pct(0.99), samples.pct(0.999));
    let mut fields = serde_json::json!({"callers": callers, "inflight": inflight, "payload": payload,
        "calls_per_s": done_per_s.round(), "p50_ms": p50, "p99_ms": p99, "p999_ms": p999});
    let load = match rate {
        Some(r) => {
            fields["rate"] = serde_json::json!(r.round());
            format!("{callers} callers at {r:.0} calls/s")
        }
        None => format!("{callers}x{inflight} calls"),
    };
    let mut memory = String::new();
    if let Some(p) = &target.procedure {
        fields["procedure"] = serde_json::json!(p);
    }
    if let Some(pid) = target.pid {
        let kib = tree_rss_kib(pid)?;
        fields["rss_kib"] = serde_json::json!(kib);
        memory = format!("  node RSS {:.1} MiB", kib as f64 / 1024.0);
    }
    report(
        cli,
        if target_cross {
            "rpc-cross-node"
        } else {
            "rpc"
        },
        fields,
        format!(
            "{load}, {payload} B: {done_per_s:>10.0} calls/s  p50 {p50:.3} ms  p99 {p99:.3} ms  p99.9 {p999:.3} ms{memory}"
        ),
    );
    Ok(())
}

/// Where a fan-out's subscriber reads its messages from: each one's
/// (sequence number, send time in ns since the run's start), or `None` for
/// something else to skip.
trait FanoutSource: Send + 'static {
    fn next_sample(&mut self) -> impl Future<Output = Result<Option<(u64, u64)>>> + Send;
}

impl FanoutSource for EventReader {
    async fn next_sample(&mut self) -> Result<Option<(u64, u64)>> {
        Ok(match self.next().await? {
            Incoming::Event { seq, sent_ns } => Some((seq, sent_ns)),
            Incoming::Other => None,
        })
    }
}

/// Subscriber `i` of a fan-out, until the end marker (`u64::MAX`):
/// messages received within the window, the latency of those sent within
/// it, and its progress for the publisher's window.
fn receive_fanout<S: FanoutSource>(
    i: usize,
    mut source: S,
    progress: Arc<Vec<AtomicU64>>,
    window: Window,
    t0: Instant,
) -> tokio::task::JoinHandle<Result<(u64, Samples)>> {
    // Slow routers fall seconds behind with many subscribers. One deadline
    // for the run, not a timer (two clock reads) per message.
    let deadline = tokio::time::Instant::from_std(window.end + Duration::from_secs(60));
    tokio::spawn(async move {
        let mut samples = Samples::default();
        let mut got = 0u64;
        loop {
            let m = match tokio::time::timeout_at(deadline, source.next_sample()).await {
                Err(_) => bail!(
                    "subscriber {i}: the publisher's last message did not arrive within 60 s of the window's end"
                ),
                Ok(m) => m?,
            };
            let Some((seq, sent_ns)) = m else {
                continue;
            };
            if seq == u64::MAX {
                break;
            }
            let now = Instant::now();
            let sent = t0 + Duration::from_nanos(sent_ns);
            if window.measuring(sent) {
                samples.add(now.saturating_duration_since(sent));
            }
            if window.measuring(now) {
                got += 1;
            }
            progress[i].store(seq, Ordering::Release);
        }
        Ok((got, samples))
    })
}

/// The fan-out's results: delivered per second and latency percentiles.
pub(crate) async fn collect(
    tasks: Vec<tokio::task::JoinHandle<Result<(u64, Samples)>>>,
    window: &Window,
) -> Result<(f64, f64, f64, f64)> {
    let mut delivered = 0u64;
    let mut samples = Samples::default();
    for t in tasks {
        let (g, s) = t.await??;
        delivered += g;
        samples.merge(s);
    }
    Ok((
        delivered as f64 / window.secs(),
        samples.pct(0.5),
        samples.pct(0.99),
        samples.pct(0.999),
    ))
}

/// `subscribers` WAMP sessions of `--url` on `bench.topic`, counting a
/// fan-out: their progress, and their tasks.
type Subscribers = (
    Arc<Vec<AtomicU64>>,
    Vec<tokio::task::JoinHandle<Result<(u64, Samples)>>>,
);

async fn wamp_subscribers(
    cli: &Cli,
    subscribers: usize,
    window: Window,
    t0: Instant,
) -> Result<Subscribers> {
    let progress: Arc<Vec<AtomicU64>> =
        Arc::new((0..subscribers).map(|_| AtomicU64::new(0)).collect());
    let mut tasks = Vec::new();
    for i in 0..subscribers {
        let mut c = Conn::join(&cli.url, &cli.realm, cli.serializer.serializer()).await?;
        c.subscribe("bench.topic").await?;
        tasks.push(receive_fanout(
            i,
            EventReader::new(c)?,
            progress.clone(),
            window,
            t0,
        ));
    }
    Ok((progress, tasks))
}

async fn pubsub(
    cli: &Cli,
    subscribers: usize,
    payload: usize,
    window_size: u64,
    publisher_url: Option<String>,
) -> Result<()> {
    let ser = cli.serializer.serializer();
    let t0 = Instant::now();
    let window = Window::new(cli.warmup, cli.duration);
    let (progress, tasks) = wamp_subscribers(cli, subscribers, window, t0).await?;
    let cross = publisher_url.is_some();
    let mut publisher = Conn::join(
        publisher_url.as_deref().unwrap_or(&cli.url),
        &cli.realm,
        ser,
    )
    .await?;
    let blob = Value::Bytes(vec![b'x'; payload]);
    let mut seq = 0u64;
    while Instant::now() < window.end {
        // Publish as far ahead of the slowest subscriber as the window
        // allows, in one write; then wait for it to catch up.
        let room = window_room(&progress, window_size, seq);
        if room == 0 {
            tokio::time::sleep(Duration::from_micros(50)).await;
            continue;
        }
        for _ in 0..room.min(256) {
            seq += 1;
            let request = publisher.request();
            let sent_ns = t0.elapsed().as_nanos() as u64;
            publisher
                .feed(&Message::Publish(Publish {
                    request,
                    options: Dict::new(),
                    topic: "bench.topic".into(),
                    payload: Payload::args(vec![
                        Value::from(seq),
                        Value::from(sent_ns),
                        blob.clone(),
                    ]),
                }))
                .await?;
        }
        publisher.ws.flush().await?;
    }
    let request = publisher.request();
    publisher
        .send(&Message::Publish(Publish {
            request,
            options: Dict::new(),
            topic: "bench.topic".into(),
            payload: Payload::args(vec![Value::from(u64::MAX)]),
        }))
        .await?;
    let (rate, p50, p99, p999) = collect(tasks, &window).await?;
    report(
        cli,
        if cross { "pubsub-cross-node" } else { "pubsub" },
        serde_json::json!({"subscribers": subscribers, "payload": payload,
            "events_per_s": rate.round(), "p50_ms": p50, "p99_ms": p99, "p999_ms": p999}),
        format!(
            "{subscribers} subs, {payload} B{}: {:>10.0} events/s  p50 {p50:.3} ms  p99 {p99:.3} ms  p99.9 {p999:.3} ms",
            if cross {
                ", publisher on another node"
            } else {
                ""
            },
            rate
        ),
    );
    Ok(())
}

/// How many more events a publisher at `seq` may send: it stays at most
/// `window_size` ahead of the slowest subscriber's progress.
pub(crate) fn window_room(progress: &[AtomicU64], window_size: u64, seq: u64) -> u64 {
    let slowest = progress
        .iter()
        .map(|p| p.load(Ordering::Acquire))
        .min()
        .unwrap_or(0);
    (slowest + window_size).saturating_sub(seq)
}

/// Wait for counting tasks and add their counts.
pub(crate) async fn sum_counts(tasks: Vec<tokio::task::JoinHandle<Result<u64>>>) -> Result<u64> {
    let mut total = 0u64;
    for t in tasks {
        total += t.await??;
    }
    Ok(total)
}

/// The allocator Trellis runs on (see `controller/src/main.rs`): the
/// ceiling (`ceiling`) is then the same stack as the router it measures.
#[global_allocator]
static ALLOCATOR: trellis_alloc::Allocator = trellis_alloc::Allocator;

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::Rpc {
            callers,
            inflight,
            payload,
            rate,
            ref procedure,
            pid,
            ref callee_url,
        } => {
            let target = RpcTarget {
                procedure: procedure.clone(),
                pid,
                callee_url: callee_url.clone(),
            };
            rpc(&cli, callers, inflight, payload, rate, target).await
        }
        Scenario::Pubsub {
            subscribers,
            payload,
            window,
            ref publisher_url,
        } => pubsub(&cli, subscribers, payload, window, publisher_url.clone()).await,
        Scenario::Storm { concurrency } => storm(&cli, concurrency).await,
        Scenario::Bridge {
            concurrency,
            keep_alive,
            ref call,
        } => bridge(&cli, concurrency, keep_alive, call.clone()).await,
        Scenario::Cycles {
            count,
            concurrency,
            pid,
        } => cycles(&cli, count, concurrency, pid).await,
        Scenario::Idle {
            sessions,
            pid,
            concurrency,
        } => idle(&cli, sessions, pid, concurrency).await,
        Scenario::MqttIdle {
            clients,
            pid,
            concurrency,
        } => mqtt_idle(&cli, clients, pid, concurrency).await,
        Scenario::MqttFanout {
            subscribers,
            payload,
            window,
        } => mqtt::mqtt_fanout(&cli, subscribers, payload, window).await,
        Scenario::MqttConnect { concurrency } => mqtt::mqtt_connect(&cli, concurrency).await,
        Scenario::MqttToWamp {
            ref mqtt_url,
            subscribers,
            payload,
            window,
        } => mqtt::mqtt_to_wamp(&cli, mqtt_url, subscribers, payload, window).await,
        Scenario::UnfinishedFrames {
            connections,
            declared,
            sent,
            pid,
        } => unfinished_frames(&cli, connections, declared, sent, pid).await,
        Scenario::Startup { ref cmd, timeout } => startup(&cli, cmd, timeout).await,
        Scenario::Node { ref cmd, timeout } => node(&cli, cmd, timeout).await,
        Scenario::Ceiling { port } => {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .with_context(|| format!("binding 127.0.0.1:{port}"))?;
            router_worker::transport::ceiling::serve(listener).await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use proto::message::Event;

    /// An unmasked, final server frame.
    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 0xffff => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn frames_of_every_length_class_split_whole_and_only_when_complete() {
        for len in [0, 1, 125, 126, 4096, 65_535, 65_536, 200_000] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let wire = [frame(2, &payload), frame(1, b"next")].concat();
            let mut buf = BytesMut::new();
            // Fed a byte at a time, nothing comes out before the frame ends.
            let first = frame(2, &payload).len();
            let mut out = None;
            for (i, b) in wire[..first].iter().enumerate() {
                buf.extend_from_slice(&[*b]);
                out = split_frame(&mut buf).unwrap();
                assert_eq!(out.is_some(), i + 1 == first, "len {len}, byte {i}");
            }
            let (opcode, got) = out.unwrap();
            assert_eq!((opcode, &got[..]), (2, &payload[..]), "len {len}");
            assert!(buf.is_empty());
            buf.extend_from_slice(&wire[first..]);
            let (opcode, got) = split_frame(&mut buf).unwrap().unwrap();
            assert_eq!((opcode, &got[..]), (1, &b"next"[..]));
            assert_eq!(split_frame(&mut buf).unwrap(), None);
        }
    }

    #[test]
    fn frames_the_reader_does_not_take_are_errors() {
        let masked = vec![0x82, 0x80 | 4, 1, 2, 3, 4, 0, 0, 0, 0];
        let not_final = {
            let mut f = frame(2, b"part");
            f[0] &= 0x7f;
            f
        };
        let continuation = frame(0, b"rest");
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&(u64::MAX).to_be_bytes());
        for (what, wire, expect) in [
            ("masked", masked, "masked"),
            ("not final", not_final, "fragmented"),
            ("continuation", continuation, "fragmented"),
            ("2^64-1 bytes", huge, "at most"),
        ] {
            let mut buf = BytesMut::from(&wire[..]);
            let e = split_frame(&mut buf).unwrap_err().to_string();
            assert!(e.contains(expect), "{what}: {e}");
        }
    }

    #[test]
    fn msgpack_event_head_reads_what_the_router_encodes() {
        let event = |args: Vec<Value>| {
            let msg = Message::Event(Event {
                subscription: 7,
                publication: 1 << 40,
                details: Dict::new(),
                payload: Payload::args(args),
            });
            Serializer::MsgPack.encode_to_vec(&msg).unwrap()
        };
        let full = event(vec![
            Value::from(42u64),
            Value::from(u64::MAX - 1),
            Value::Bytes(vec![b'x'; 4096]),
        ]);
        assert_eq!(msgpack_event_head(&full), Some((42, u64::MAX - 1)));
        // One argument (the publisher's last EVENT) or none: full decoding.
        assert_eq!(
            msgpack_event_head(&event(vec![Value::from(u64::MAX)])),
            None
        );
        assert_eq!(msgpack_event_head(&event(vec![])), None);
        // Not an EVENT, or cut short.
        let goodbye = Serializer::MsgPack
            .encode_to_vec(&Message::Goodbye(Goodbye {
                details: Dict::new(),
                reason: "wamp.close.normal".into(),
            }))
            .unwrap();
        assert_eq!(msgpack_event_head(&goodbye), None);
        assert_eq!(msgpack_event_head(&full[..6]), None);
    }
}

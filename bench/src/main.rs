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

fn encode(ser: Serializer, msg: &Message) -> Result<Ws> {
    let bytes = ser.encode_to_vec(msg).map_err(|e| anyhow!("{e}"))?;
    Ok(if ser.is_binary() {
        Ws::Binary(bytes.into())
    } else {
        Ws::Text(tungstenite::Utf8Bytes::try_from(bytes).map_err(|e| anyhow!("{e}"))?)
    })
}

fn decode(ser: Serializer, ws: Ws) -> Result<Option<Message>> {
    match ws {
        Ws::Text(t) => Ok(Some(ser.decode(t.as_bytes())?)),
        Ws::Binary(b) => Ok(Some(ser.decode(&b)?)),
        Ws::Close(c) => bail!("connection closed by the router: {c:?}"),
        _ => Ok(None),
    }
}

/// The load generator's WebSocket read buffer (see `Conn::join`).
const BENCH_READ_BUFFER: usize = 16 * 1024;

/// `seq` and `sent_ns` of a MessagePack `[36, sub, pub, {}, [seq, sent_ns,
/// ...], ...]`, read without decoding the rest; `None` for anything else
/// (which then goes through the full decoder).
fn msgpack_event_head(mut b: &[u8]) -> Option<(u64, u64)> {
    use rmp::decode::{read_array_len, read_int, read_map_len};
    if read_array_len(&mut b).ok()? < 5 || read_int::<u64, _>(&mut b).ok()? != 36 {
        return None;
    }
    let _subscription: u64 = read_int(&mut b).ok()?;
    let _publication: u64 = read_int(&mut b).ok()?;
    if read_map_len(&mut b).ok()? != 0 || read_array_len(&mut b).ok()? < 2 {
        return None;
    }
    Some((read_int(&mut b).ok()?, read_int(&mut b).ok()?))
}

/// A subscriber's reader of the router's frames once it has subscribed.
///
/// tungstenite zeroes its read buffer before every read and moves every
/// message through its stream machinery; at millions of events a second
/// that cost the load generator as much CPU as its kernel reads, CPU taken
/// from the router under test on the same cores. So after SUBSCRIBED a
/// subscriber reads the socket itself: a server's frames are unmasked, and
/// the router sends nothing but whole EVENT frames until the publisher's
/// last one. Anything this reader does not take (a fragmented message, a
/// masked frame, a close) ends the run with an error rather than being
/// miscounted.
struct EventReader {
    ws: Socket,
    ser: Serializer,
    buf: bytes::BytesMut,
}

/// Bytes read per system call by an [`EventReader`].
const EVENT_READ: usize = 64 * 1024;
/// Largest frame an [`EventReader`] accepts.
const EVENT_MAX_FRAME: usize = 16 << 20;

/// What a subscriber receives.
enum Incoming {
    Event {
        seq: u64,
        sent_ns: u64,
    },
    /// Anything else (a subscriber ignores it).
    Other,
}

/// The next whole frame at the start of `buf` as (opcode, payload), split
/// off; `None` until all of it has arrived.
fn split_frame(buf: &mut bytes::BytesMut) -> Result<Option<(u8, bytes::BytesMut)>> {
    let [b0, b1, ..] = buf[..] else {
        return Ok(None);
    };
    let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
    if b1 & 0x80 != 0 {
        bail!("the router sent a masked frame (servers must not mask)");
    }
    let (head, len) = match b1 & 0x7f {
        126 => match buf.get(2..4) {
            Some(l) => (4, usize::from(u16::from_be_bytes([l[0], l[1]]))),
            None => return Ok(None),
        },
        127 => match buf.get(2..10) {
            Some(l) => {
                let mut n = [0u8; 8];
                n.copy_from_slice(l);
                (
                    10,
                    usize::try_from(u64::from_be_bytes(n)).unwrap_or(usize::MAX),
                )
            }
            None => return Ok(None),
        },
        n => (2, usize::from(n)),
    };
    if len > EVENT_MAX_FRAME {
        bail!(
            "the router sent a frame of {len} bytes (the load generator takes at most {EVENT_MAX_FRAME})"
        );
    }
    if !fin || opcode == 0 {
        bail!(
            "the router fragmented a message; the load generator's event reader takes whole frames only"
        );
    }
    if buf.len() < head + len {
        return Ok(None);
    }
    let mut frame = buf.split_to(head + len);
    Ok(Some((opcode, frame.split_off(head))))
}

impl EventReader {
    /// Takes over `c`'s socket; `c` must have nothing buffered.
    fn new(mut c: Conn) -> Result<EventReader> {
        if let Some(m) = c.try_recv()? {
            bail!("unexpected message from the router after SUBSCRIBED: {m:?}");
        }
        Ok(EventReader {
            ws: c.ws,
            ser: c.ser,
            buf: bytes::BytesMut::new(),
        })
    }

    /// The next EVENT's sequence number and send time (its first two
    /// arguments), or any other message. For MessagePack the head is read
    /// in place, without decoding (and copying) the payload.
    async fn next(&mut self) -> Result<Incoming> {
        loop {
            while let Some((opcode, payload)) = split_frame(&mut self.buf)? {
                match opcode {
                    1 | 2 => return self.incoming(&payload),
                    8 => bail!("connection closed by the router"),
                    // Pings are not answered: a run is far shorter than any
                    // router's ping timeout.
                    _ => {}
                }
            }
            self.buf.reserve(EVENT_READ);
            let n = tokio::io::AsyncReadExt::read_buf(self.ws.get_mut(), &mut self.buf).await?;
            if n == 0 {
                bail!("connection closed");
            }
        }
    }

    fn incoming(&self, payload: &[u8]) -> Result<Incoming> {
        if self.ser == Serializer::MsgPack
            && let Some((seq, sent_ns)) = msgpack_event_head(payload)
        {
            return Ok(Incoming::Event { seq, sent_ns });
        }
        Ok(match self.ser.decode(payload)? {
            Message::Event(e) => {
                let arg = |i: usize| e.payload.args.get(i).and_then(Value::as_u64).unwrap_or(0);
                Incoming::Event {
                    seq: arg(0),
                    sent_ns: arg(1),
                }
            }
            _ => Incoming::Other,
        })
    }
}

/// One joined session over a raw WebSocket.
struct Conn {
    ws: Socket,
    ser: Serializer,
    next_request: u64,
}

impl Conn {
    async fn join(url: &str, realm: &str, ser: Serializer) -> Result<Conn> {
        let mut req = url.into_client_request()?;
        let proto = match ser {
            Serializer::Json => "wamp.2.json",
            Serializer::MsgPack => "wamp.2.msgpack",
            Serializer::Cbor => "wamp.2.cbor",
        };
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static(proto));
        // tungstenite zeroes its whole read buffer before every read (128 KiB
        // by default), which cost this generator more than the rest of its
        // work together; a 16 KiB buffer holds several events per read.
        let config =
            tungstenite::protocol::WebSocketConfig::default().read_buffer_size(BENCH_READ_BUFFER);
        // TCP_NODELAY, as WAMP clients set it (autobahn, browsers): with
        // Nagle's algorithm a small message waits for the ACK of the one
        // before, which put up to 2.5 ms into a call's round trip.
        let (ws, _) = tokio::time::timeout(
            Duration::from_secs(30),
            tokio_tungstenite::connect_async_with_config(req, Some(config), true),
        )
        .await
        .context("WebSocket connect timed out")??;
        let mut c = Conn {
            ws,
            ser,
            next_request: 1,
        };
        let roles = proto::dict! {
            "caller" => Dict::new(), "callee" => Dict::new(),
            "publisher" => Dict::new(), "subscriber" => Dict::new(),
        };
        c.send(&Message::Hello(Hello {
            realm: realm.to_owned(),
            details: proto::dict! { "roles" => roles },
        }))
        .await?;
        match c.recv().await? {
            Message::Welcome(_) => Ok(c),
            other => bail!("expected WELCOME, got {other:?}"),
        }
    }

    fn request(&mut self) -> u64 {
        let r = self.next_request;
        self.next_request += 1;
        r
    }

    async fn send(&mut self, msg: &Message) -> Result<()> {
        self.ws.send(encode(self.ser, msg)?).await?;
        Ok(())
    }

    async fn feed(&mut self, msg: &Message) -> Result<()> {
        self.ws.feed(encode(self.ser, msg)?).await?;
        Ok(())
    }

    /// The next WebSocket message, within 90 s.
    async fn next_frame(&mut self) -> Result<Ws> {
        Ok(
            tokio::time::timeout(Duration::from_secs(90), self.ws.next())
                .await
                .context("no message from the router within 90 s")?
                .ok_or_else(|| anyhow!("connection closed"))??,
        )
    }

    async fn recv(&mut self) -> Result<Message> {
        loop {
            let ws = self.next_frame().await?;
            if let Some(m) = decode(self.ser, ws)? {
                return Ok(m);
            }
        }
    }

    /// A message if one is ready without waiting.
    fn try_recv(&mut self) -> Result<Option<Message>> {
        loop {
            match self.ws.next().now_or_never() {
                None => return Ok(None),
                Some(None) => bail!("connection closed"),
                Some(Some(ws)) => {
                    if let Some(m) = decode(self.ser, ws?)? {
                        return Ok(Some(m));
                    }
                }
            }
        }
    }

    async fn register(&mut self, procedure: &str) -> Result<()> {
        let request = self.request();
        self.send(&Message::Register(Register {
            request,
            options: Dict::new(),
            procedure: procedure.to_owned(),
        }))
        .await?;
        match self.recv().await? {
            Message::Registered(_) => Ok(()),
            other => bail!("REGISTER failed: {other:?}"),
        }
    }

    async fn subscribe(&mut self, topic: &str) -> Result<()> {
        let request = self.request();
        self.send(&Message::Subscribe(Subscribe {
            request,
            options: Dict::new(),
            topic: topic.to_owned(),
        }))
        .await?;
        match self.recv().await? {
            Message::Subscribed(_) => Ok(()),
            other => bail!("SUBSCRIBE failed: {other:?}"),
        }
    }

    async fn leave(mut self) -> Result<()> {
        self.send(&Message::Goodbye(Goodbye {
            details: Dict::new(),
            reason: "wamp.close.normal".into(),
        }))
        .await?;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.recv()).await;
        let _ = self.ws.close(None).await;
        Ok(())
    }
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
    fn new(warmup: f64, duration: f64) -> Window {
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
    let progress: Arc<Vec<AtomicU64>> =
        Arc::new((0..subscribers).map(|_| AtomicU64::new(0)).collect());
    let mut tasks = Vec::new();
    for i in 0..subscribers {
        let mut c = Conn::join(&cli.url, &cli.realm, ser).await?;
        c.subscribe("bench.topic").await?;
        let mut events = EventReader::new(c)?;
        let progress = progress.clone();
        // Slow routers fall seconds behind with many subscribers. One
        // deadline for the run, not a timer (two clock reads) per event.
        let deadline = tokio::time::Instant::from_std(window.end + Duration::from_secs(60));
        tasks.push(tokio::spawn(async move {
            let mut samples = Samples::default();
            let mut got = 0u64;
            loop {
                let m = match tokio::time::timeout_at(deadline, events.next()).await {
                    Err(_) => bail!("subscriber {i}: the publisher's last EVENT did not arrive within 60 s of the window's end"),
                    Ok(m) => m?,
                };
                if let Incoming::Event { seq, sent_ns } = m {
                    let now = Instant::now();
                    if seq == u64::MAX {
                        break;
                    }
                    let sent = t0 + Duration::from_nanos(sent_ns);
                    if window.measuring(sent) {
                        samples.add(now.saturating_duration_since(sent));
                    }
                    if window.measuring(now) {
                        got += 1;
                    }
                    progress[i].store(seq, Ordering::Release);
                }
            }
            Ok::<_, anyhow::Error>((got, samples))
        }));
    }
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
        let slowest = progress
            .iter()
            .map(|p| p.load(Ordering::Acquire))
            .min()
            .unwrap_or(0);
        let room = (slowest + window_size).saturating_sub(seq);
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
    let mut delivered = 0u64;
    let mut samples = Samples::default();
    for t in tasks {
        let (g, s) = t.await??;
        delivered += g;
        samples.merge(s);
    }
    let rate = delivered as f64 / window.secs();
    let (p50, p99, p999) = (samples.pct(0.5), samples.pct(0.99), samples.pct(0.999));
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

/// POST one publication over a fresh connection; its HTTP status.
async fn post_once(addr: &str, path: &str, body: &str) -> Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut resp = Vec::with_capacity(512);
    s.read_to_end(&mut resp).await?;
    let line = resp.split(|b| *b == b'\n').next().unwrap_or_default();
    let code = String::from_utf8_lossy(line)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok(code)
}

/// An HTTP/1.1 client that keeps its connection open between requests
/// (and opens a new one when the server closed it).
#[derive(Default)]
struct KeepAlive {
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl KeepAlive {
    async fn post(&mut self, addr: &str, path: &str, body: &str) -> Result<u16> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if self.stream.is_none() {
            let s = TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
            self.buf.clear();
        }
        let s = self.stream.as_mut().context("connected")?;
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        // The head, then Content-Length bytes of body.
        let mut chunk = [0u8; 4096];
        let (head_end, len) = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..i]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                break (i + 4, len);
            }
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                self.stream = None;
                bail!("the server closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        while self.buf.len() < head_end + len {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                self.stream = None;
                bail!("the server closed the connection mid-response");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if head.contains("connection: close") {
            self.stream = None;
        }
        self.buf.drain(..head_end + len);
        Ok(code)
    }
}

async fn bridge(
    cli: &Cli,
    concurrency: usize,
    keep_alive: bool,
    call: Option<String>,
) -> Result<()> {
    let rest = cli
        .url
        .strip_prefix("http://")
        .context("--url must be http://HOST:PORT/PATH for the bridge scenario")?;
    let (addr, path) = match rest.find('/') {
        Some(i) => (rest[..i].to_owned(), rest[i..].to_owned()),
        None => (rest.to_owned(), "/".to_owned()),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut callee_task = None;
    let body = match &call {
        Some(ws_url) => {
            let mut callee = Conn::join(ws_url, &cli.realm, cli.serializer.serializer()).await?;
            callee.register("bench.echo").await?;
            callee_task = Some(tokio::spawn(echo_callee(callee, stop.clone())));
            r#"{"procedure": "bench.echo", "args": [1, "x"]}"#
        }
        None => r#"{"topic": "bench.bridge", "args": [1, "x"]}"#,
    };
    if post_once(&addr, &path, body).await? != 200 {
        bail!("the bridge at {} does not answer 200", cli.url);
    }
    let window = Window::new(cli.warmup, cli.duration);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (addr, path) = (addr.clone(), path.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut other) = (0u64, 0u64);
            let mut samples = Samples::default();
            let mut conn = KeepAlive::default();
            while Instant::now() < window.end {
                let t0 = Instant::now();
                let code = if keep_alive {
                    conn.post(&addr, &path, body).await.unwrap_or(0)
                } else {
                    post_once(&addr, &path, body).await.unwrap_or(0)
                };
                if window.measuring(t0) {
                    if code == 200 {
                        ok += 1;
                        samples.add(t0.elapsed());
                    } else {
                        other += 1;
                    }
                }
            }
            (ok, other, samples)
        }));
    }
    let (mut ok, mut other, mut samples) = (0u64, 0u64, Samples::default());
    for t in tasks {
        let (o, x, s) = t.await?;
        ok += o;
        other += x;
        samples.merge(s);
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = callee_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    let rate = ok as f64 / window.secs();
    let (p50, p99) = (samples.pct(0.5), samples.pct(0.99));
    let what = if call.is_some() {
        "calls"
    } else {
        "publications"
    };
    let how = if keep_alive {
        "kept-alive connections"
    } else {
        "a connection each"
    };
    let scenario = match (call.is_some(), keep_alive) {
        (false, false) => "bridge",
        (false, true) => "bridge-keepalive",
        (true, false) => "bridge-call",
        (true, true) => "bridge-call-keepalive",
    };
    report(
        cli,
        scenario,
        serde_json::json!({"concurrency": concurrency, "requests_per_s": rate.round(),
            "not_200": other, "p50_ms": p50, "p99_ms": p99}),
        format!(
            "{concurrency} clients: {rate:>10.0} {what}/s over HTTP ({how})  p50 {p50:.3} ms  p99 {p99:.3} ms  ({other} not 200)"
        ),
    );
    Ok(())
}

async fn storm(cli: &Cli, concurrency: usize) -> Result<()> {
    let ser = cli.serializer.serializer();
    let window = Window::new(cli.warmup, cli.duration);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let url = cli.url.clone();
        let realm = cli.realm.clone();
        tasks.push(tokio::spawn(async move {
            let mut joined = 0u64;
            while Instant::now() < window.end {
                let c = Conn::join(&url, &realm, ser).await?;
                if window.measuring(Instant::now()) {
                    joined += 1;
                }
                c.leave().await?;
            }
            Ok::<_, anyhow::Error>(joined)
        }));
    }
    let mut total = 0u64;
    for t in tasks {
        total += t.await??;
    }
    let rate = total as f64 / window.secs();
    report(
        cli,
        "storm",
        serde_json::json!({"concurrency": concurrency, "sessions_per_s": rate.round()}),
        format!(
            "{concurrency} at once: {rate:>10.0} sessions joined/s (connect, HELLO, WELCOME, GOODBYE, close)"
        ),
    );
    Ok(())
}

/// Open file descriptors of `pid` and its descendants.
fn tree_fds(pid: u32) -> Result<usize> {
    let mut total = 0;
    for p in tree_pids(pid)? {
        total += std::fs::read_dir(format!("/proc/{p}/fd"))
            .with_context(|| format!("cannot list /proc/{p}/fd"))?
            .count();
    }
    Ok(total)
}

/// `pid` and all its descendants.
fn tree_pids(pid: u32) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        if out.len() > 10_000 {
            break;
        }
        out.push(p);
        for task in std::fs::read_dir(format!("/proc/{p}/task"))? {
            let children =
                std::fs::read_to_string(task?.path().join("children")).unwrap_or_default();
            stack.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    Ok(out)
}

async fn cycles(cli: &Cli, count: usize, concurrency: usize, pid: u32) -> Result<()> {
    let ser = cli.serializer.serializer();
    let (rss0, fds0) = (tree_rss_kib(pid)?, tree_fds(pid)?);
    let left = Arc::new(AtomicU64::new(count as u64));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (url, realm, left) = (cli.url.clone(), cli.realm.clone(), left.clone());
        tasks.push(tokio::spawn(async move {
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let c = Conn::join(&url, &realm, ser).await?;
                c.leave().await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let secs = t.elapsed().as_secs_f64();
    // Let the router finish closing the last connections.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss1, fds1) = (tree_rss_kib(pid)?, tree_fds(pid)?);
    report(
        cli,
        "cycles",
        serde_json::json!({"count": count, "seconds": secs, "rss_before_kib": rss0, "rss_after_kib": rss1,
            "fds_before": fds0, "fds_after": fds1}),
        format!(
            "{count} connect/HELLO/GOODBYE cycles in {secs:.1} s: RSS {:.1} -> {:.1} MiB, open fds {fds0} -> {fds1}",
            rss0 as f64 / 1024.0,
            rss1 as f64 / 1024.0
        ),
    );
    Ok(())
}

/// RSS in KiB of `pid` and all its descendants, from /proc.
fn tree_rss_kib(pid: u32) -> Result<u64> {
    let mut total = 0;
    for p in tree_pids(pid)? {
        let status = std::fs::read_to_string(format!("/proc/{p}/status"))
            .with_context(|| format!("cannot read /proc/{p}/status"))?;
        if let Some(line) = status.lines().find(|l| l.starts_with("VmRSS:")) {
            total += line
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

async fn idle(cli: &Cli, sessions: usize, pid: u32, concurrency: usize) -> Result<()> {
    let ser = cli.serializer.serializer();
    let before = tree_rss_kib(pid)?;
    let started = Instant::now();
    let mut conns = Vec::with_capacity(sessions);
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut launched = 0;
    while conns.len() < sessions {
        while launched < sessions && pending.len() < concurrency {
            let (url, realm) = (cli.url.clone(), cli.realm.clone());
            pending.push(async move { Conn::join(&url, &realm, ser).await });
            launched += 1;
        }
        match pending.next().await {
            Some(c) => conns.push(c?),
            None => break,
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!(
                "only {} of {sessions} sessions joined within 600 s",
                conns.len()
            );
        }
    }
    let fill = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = tree_rss_kib(pid)?;
    let per_session = (after.saturating_sub(before)) as f64 * 1024.0 / sessions as f64;
    // A newcomer still gets served promptly.
    let t = Instant::now();
    let mut callee = Conn::join(&cli.url, &cli.realm, ser).await?;
    let join_ms = t.elapsed().as_secs_f64() * 1000.0;
    callee.register("bench.idle.ping").await?;
    let mut caller = Conn::join(&cli.url, &cli.realm, ser).await?;
    let t = Instant::now();
    let request = caller.request();
    caller
        .send(&Message::Call(Call {
            request,
            options: Dict::new(),
            procedure: "bench.idle.ping".into(),
            payload: Payload::default(),
        }))
        .await?;
    let inv = callee.recv().await?;
    if let Message::Invocation(i) = inv {
        callee
            .send(&Message::Yield(Yield {
                request: i.request,
                options: Dict::new(),
                payload: Payload::default(),
            }))
            .await?;
    }
    let res = caller.recv().await?;
    let call_ms = t.elapsed().as_secs_f64() * 1000.0;
    if !matches!(res, Message::Result(_)) {
        bail!("the call under load failed: {res:?}");
    }
    report(
        cli,
        "idle",
        serde_json::json!({"sessions": sessions, "rss_before_kib": before, "rss_after_kib": after,
            "bytes_per_session": per_session.round(), "fill_s": fill, "new_join_ms": join_ms, "new_call_ms": call_ms}),
        format!(
            "{sessions} idle sessions: RSS {:.1} -> {:.1} MiB, {:.0} B/session (filled in {fill:.1} s); newcomer joins in {join_ms:.1} ms, calls in {call_ms:.2} ms",
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            per_session
        ),
    );
    drop(conns);
    Ok(())
}

/// Open a WebSocket by hand (the frame that follows must be written byte
/// by byte) and send a binary frame header declaring `declared` bytes, then
/// `sent` of them.
async fn open_unfinished(url: &str, declared: u64, sent: usize) -> Result<TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let u = url
        .strip_prefix("ws://")
        .ok_or_else(|| anyhow!("unfinished-frames needs a ws:// URL"))?;
    let (host, path) = u.split_once('/').unwrap_or((u, ""));
    let mut s = TcpStream::connect(host).await?;
    let req = format!(
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: wamp.2.msgpack\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await? == 0 || head.len() > 16 * 1024 {
            bail!("no WebSocket upgrade answer");
        }
        head.push(b[0]);
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        bail!("upgrade refused: {}", String::from_utf8_lossy(&head));
    }
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&declared.to_be_bytes());
    frame.extend_from_slice(&[0x11, 0x22, 0x33, 0x44]);
    frame.resize(frame.len() + sent, 0x5A);
    // A router that refuses the frame at its header closes the connection
    // while the rest is still being sent: that is the point, not an error.
    let _ = s.write_all(&frame).await;
    Ok(s)
}

async fn unfinished_frames(
    cli: &Cli,
    connections: usize,
    declared: u64,
    sent: usize,
    pid: u32,
) -> Result<()> {
    use tokio::io::AsyncReadExt;
    let before = tree_rss_kib(pid)?;
    let mut held = Vec::with_capacity(connections);
    for _ in 0..connections {
        held.push(open_unfinished(&cli.url, declared, sent).await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = tree_rss_kib(pid)?;
    // A connection the router closed reads to its end at once (after the
    // ABORT and close frames it may have sent); all are looked at together,
    // well within the router's HELLO deadline.
    let ended = futures::future::join_all(held.iter_mut().map(|s| async move {
        let mut buf = [0u8; 4096];
        tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => {}
                }
            }
        })
        .await
        .unwrap_or(false)
    }))
    .await;
    let closed = ended.into_iter().filter(|e| *e).count();
    let per_conn = after.saturating_sub(before) as f64 * 1024.0 / connections as f64;
    report(
        cli,
        "unfinished_frames",
        serde_json::json!({"connections": connections, "declared": declared, "sent": sent,
            "rss_before_kib": before, "rss_after_kib": after,
            "bytes_per_connection": per_conn.round(), "closed_by_router": closed}),
        format!(
            "{connections} connections holding a frame declared {declared} B ({sent} B sent): RSS {:.1} -> {:.1} MiB, {per_conn:.0} B/connection; {closed} closed by the router",
            before as f64 / 1024.0,
            after as f64 / 1024.0
        ),
    );
    Ok(())
}

async fn startup(cli: &Cli, cmd: &str, timeout: f64) -> Result<()> {
    let t = Instant::now();
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("exec {cmd}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the router command")?;
    let deadline = t + Duration::from_secs_f64(timeout);
    let ms = until_welcome(cli, t, deadline, Some(&mut child)).await?;
    if let Some(pid) = child.id() {
        // SIGTERM for a clean stop; kill_on_drop covers the rest.
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    report(
        cli,
        "startup",
        serde_json::json!({"startup_ms": ms}),
        format!("start to first WELCOME: {ms:>10.1} ms"),
    );
    Ok(())
}

/// Join until WELCOME, retrying every 2 ms; the time it took since
/// `since`. Fails if `child` (the router) exits first.
async fn until_welcome(
    cli: &Cli,
    since: Instant,
    deadline: Instant,
    mut child: Option<&mut tokio::process::Child>,
) -> Result<f64> {
    let ser = cli.serializer.serializer();
    loop {
        if Instant::now() > deadline {
            bail!("no WELCOME in time");
        }
        if let Some(c) = child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            bail!("the router exited with {status} before answering");
        }
        if let Ok(Ok(c)) = tokio::time::timeout(
            Duration::from_secs(2),
            Conn::join(&cli.url, &cli.realm, ser),
        )
        .await
        {
            let ms = since.elapsed().as_secs_f64() * 1000.0;
            let _ = c.leave().await;
            return Ok(ms);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The pid of the node's router worker: a child of `controller` run as
/// `trellis worker --type router`.
fn router_worker(controller: u32) -> Result<u32> {
    for task in std::fs::read_dir(format!("/proc/{controller}/task"))? {
        let children = std::fs::read_to_string(task?.path().join("children")).unwrap_or_default();
        for c in children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            let cmdline = std::fs::read(format!("/proc/{c}/cmdline")).unwrap_or_default();
            if cmdline
                .windows(b"--type\0router".len())
                .any(|w| w == b"--type\0router")
            {
                return Ok(c);
            }
        }
    }
    bail!("no router worker under pid {controller}")
}

async fn node(cli: &Cli, cmd: &str, timeout: f64) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("trellis-bench-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sock_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&sock_path);
    let sock = tokio::net::UnixDatagram::bind(&sock_path)?;
    let t = Instant::now();
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("exec {cmd}"))
        .env("NOTIFY_SOCKET", &sock_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the node command")?;
    let deadline = t + Duration::from_secs_f64(timeout);
    let mut buf = [0u8; 4096];
    let ready_ms = loop {
        let n = tokio::time::timeout_at(deadline.into(), sock.recv(&mut buf))
            .await
            .map_err(|_| anyhow!("no READY=1 within {timeout} s"))??;
        if String::from_utf8_lossy(&buf[..n]).contains("READY=1") {
            break t.elapsed().as_secs_f64() * 1000.0;
        }
    };
    let controller = child.id().context("the node exited")?;
    let router = router_worker(controller)?;
    // Let the first process settle, then kill it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed = Instant::now();
    std::process::Command::new("kill")
        .args(["-9", &router.to_string()])
        .status()?;
    let recovery_ms = until_welcome(
        cli,
        killed,
        killed + Duration::from_secs_f64(timeout),
        Some(&mut child),
    )
    .await?;
    let _ = std::process::Command::new("kill")
        .arg(controller.to_string())
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(20), child.wait()).await;
    let _ = std::fs::remove_dir_all(&dir);
    report(
        cli,
        "node",
        serde_json::json!({"start_to_ready_ms": ready_ms, "kill9_router_to_welcome_ms": recovery_ms}),
        format!(
            "start to READY=1: {ready_ms:>8.1} ms; kill -9 of the router to WELCOME: {recovery_ms:>8.1} ms"
        ),
    );
    Ok(())
}

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

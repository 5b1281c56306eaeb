//! MQTT scenarios, against any MQTT 3.1.1 broker (`--url mqtt://HOST:PORT`):
//! Trellis's `mqtt` transport, and Debian's mosquitto beside it.
//!
//! - `mqtt-fanout`: one publisher, S subscribers of one topic, QoS 0,
//!   payload P bytes; messages delivered/s and publish-to-receive latency.
//!   As in `pubsub`, the publisher keeps a bounded window ahead of the
//!   slowest subscriber, so the figure is sustained throughput with no
//!   drops.
//! - `mqtt-connect`: C clients connect, CONNECT, get their CONNACK,
//!   DISCONNECT and close, in a loop; connections/s.
//! - `mqtt-to-wamp`: the same fan-out with an MQTT publisher and WAMP
//!   subscribers (the node maps `bench` natively: the MQTT payload is
//!   `{"args": [seq, sent_ns, blob]}`), to set beside `pubsub`
//!   (WAMP to WAMP).
//!
//! The client is the benchmark's own minimal MQTT 3.1.1 (CONNECT,
//! SUBSCRIBE, PUBLISH at QoS 0): a load generator, not an interop test.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// The fan-out's topic (opaque payloads).
const TOPIC: &str = "fan/topic";

/// `mqtt-to-wamp`'s topic: `bench.topic` for the WAMP subscribers, under
/// the node's native `bench` mapping.
const WAMP_TOPIC: &str = "bench/topic";

/// `mqtt://HOST:PORT` as `HOST:PORT`.
pub(crate) fn mqtt_addr(url: &str) -> Result<String> {
    Ok(url
        .strip_prefix("mqtt://")
        .ok_or_else(|| anyhow!("MQTT scenarios take --url mqtt://HOST:PORT"))?
        .trim_end_matches('/')
        .to_owned())
}

/// An MQTT packet: the fixed header's first byte and the remaining length.
fn packet(first: u8, body: &[u8], out: &mut Vec<u8>) {
    out.push(first);
    let mut n = body.len();
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        out.push(if n > 0 { byte | 0x80 } else { byte });
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
}

fn string(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// Connect as MQTT 3.1.1 client `id` (clean session) and wait for the
/// CONNACK.
pub(crate) async fn mqtt_client(addr: &str, id: &str) -> Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut body = Vec::new();
    string(b"MQTT", &mut body);
    body.extend_from_slice(&[4, 0x02, 0, 0]);
    string(id.as_bytes(), &mut body);
    let mut p = Vec::new();
    packet(0x10, &body, &mut p);
    s.write_all(&p).await?;
    let mut ack = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(30), s.read_exact(&mut ack)).await??;
    if ack != [0x20, 0x02, 0x00, 0x00] {
        bail!("CONNACK {ack:?}: the client was refused");
    }
    Ok(s)
}

/// Reads whole MQTT packets from a connection.
struct Reader {
    s: TcpStream,
    buf: BytesMut,
}

impl Reader {
    /// The next packet: (first byte, body).
    async fn next(&mut self) -> Result<(u8, BytesMut)> {
        loop {
            if let Some(p) = split_packet(&mut self.buf)? {
                return Ok(p);
            }
            self.buf.reserve(64 << 10);
            if self.s.read_buf(&mut self.buf).await? == 0 {
                bail!("the broker closed the connection");
            }
        }
    }
}

/// The next whole packet at the front of `buf`: (first byte, body), split
/// off; `None` until all of it is there.
fn split_packet(buf: &mut BytesMut) -> Result<Option<(u8, BytesMut)>> {
    let mut len = 0usize;
    let mut shift = 0;
    for i in 1..5 {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        len |= usize::from(b & 0x7F) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            if buf.len() < i + 1 + len {
                return Ok(None);
            }
            let first = buf[0];
            buf.advance(i + 1);
            return Ok(Some((first, buf.split_to(len))));
        }
    }
    bail!("a remaining length over 4 bytes")
}

impl FanoutSource for Reader {
    async fn next_sample(&mut self) -> Result<Option<(u64, u64)>> {
        let (first, body) = self.next().await?;
        if first & 0xF0 != 0x30 {
            return Ok(None);
        }
        let Some(p) = payload_of(&body).filter(|p| p.len() >= 16) else {
            bail!("a message without the benchmark's payload");
        };
        Ok(Some((
            u64::from_be_bytes(p[..8].try_into()?),
            u64::from_be_bytes(p[8..16].try_into()?),
        )))
    }
}

/// A subscriber of `filter` at QoS 0, its SUBACK read.
async fn subscriber(addr: &str, id: &str, filter: &str) -> Result<Reader> {
    let mut s = mqtt_client(addr, id).await?;
    let mut body = vec![0, 1];
    string(filter.as_bytes(), &mut body);
    body.push(0);
    let mut p = Vec::new();
    packet(0x82, &body, &mut p);
    s.write_all(&p).await?;
    let mut r = Reader {
        s,
        buf: BytesMut::new(),
    };
    let (first, body) = tokio::time::timeout(Duration::from_secs(30), r.next()).await??;
    if first != 0x90 || body.get(2) != Some(&0) {
        bail!("SUBACK {first:#x} {body:?}: the subscription was refused");
    }
    Ok(r)
}

/// A QoS 0 PUBLISH of `payload` to `topic`, appended to `out`.
fn publish(topic: &str, payload: &[u8], out: &mut Vec<u8>) {
    let mut body = Vec::with_capacity(2 + topic.len() + payload.len());
    string(topic.as_bytes(), &mut body);
    body.extend_from_slice(payload);
    packet(0x30, &body, out);
}

/// A PUBLISH body's payload (QoS 0: no packet id).
fn payload_of(body: &[u8]) -> Option<&[u8]> {
    let n = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2 + n..)
}

/// What the publisher of a fan-out sends: the payload for a sequence number
/// and a send time.
type Encode = Box<dyn Fn(u64, u64) -> Vec<u8> + Send>;

/// The fan-out loop shared by the scenarios: publish on `publisher` as far
/// ahead of the slowest subscriber (`progress`) as `window` allows until
/// the window ends, then the end marker (`u64::MAX`).
async fn publish_windowed(
    publisher: &mut TcpStream,
    topic: &str,
    encode: &Encode,
    progress: &[AtomicU64],
    window_size: u64,
    t0: Instant,
    end: Instant,
) -> Result<()> {
    let mut seq = 0u64;
    let mut out = Vec::new();
    while Instant::now() < end {
        let room = window_room(progress, window_size, seq);
        if room == 0 {
            tokio::time::sleep(Duration::from_micros(50)).await;
            continue;
        }
        out.clear();
        for _ in 0..room.min(256) {
            seq += 1;
            let sent_ns = t0.elapsed().as_nanos() as u64;
            publish(topic, &encode(seq, sent_ns), &mut out);
        }
        publisher.write_all(&out).await?;
    }
    out.clear();
    publish(topic, &encode(u64::MAX, 0), &mut out);
    publisher.write_all(&out).await?;
    Ok(())
}

/// The binary payload: sequence number and send time, padded to `size`.
fn binary(size: usize) -> Encode {
    Box::new(move |seq, sent_ns| {
        let mut p = Vec::with_capacity(size.max(16));
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&sent_ns.to_be_bytes());
        p.resize(size.max(16), b'x');
        p
    })
}

/// One publisher, `subscribers` MQTT subscribers, QoS 0.
pub(crate) async fn mqtt_fanout(
    cli: &Cli,
    subscribers: usize,
    payload: usize,
    window_size: u64,
) -> Result<()> {
    let addr = mqtt_addr(&cli.url)?;
    let t0 = Instant::now();
    let mut readers = Vec::new();
    for i in 0..subscribers {
        readers.push(subscriber(&addr, &format!("fan-sub-{i}"), TOPIC).await?);
    }
    let window = Window::new(cli.warmup, cli.duration);
    let progress: Arc<Vec<AtomicU64>> =
        Arc::new((0..subscribers).map(|_| AtomicU64::new(0)).collect());
    let mut tasks = Vec::new();
    for (i, r) in readers.into_iter().enumerate() {
        tasks.push(receive_fanout(i, r, progress.clone(), window, t0));
    }
    let mut publisher = mqtt_client(&addr, "fan-pub").await?;
    publish_windowed(
        &mut publisher,
        TOPIC,
        &binary(payload),
        &progress,
        window_size,
        t0,
        window.end,
    )
    .await?;
    let (rate, p50, p99, p999) = collect(tasks, &window).await?;
    report(
        cli,
        "mqtt-fanout",
        serde_json::json!({"subscribers": subscribers, "payload": payload,
            "messages_per_s": rate.round(), "p50_ms": p50, "p99_ms": p99, "p999_ms": p999}),
        format!(
            "MQTT 1 -> {subscribers} subs, QoS 0, {payload} B: {rate:>10.0} msgs/s  p50 {p50:.3} ms  p99 {p99:.3} ms  p99.9 {p999:.3} ms"
        ),
    );
    Ok(())
}

/// An MQTT publisher, `subscribers` WAMP subscribers of `bench.topic`
/// (the node maps the `bench` prefix natively).
pub(crate) async fn mqtt_to_wamp(
    cli: &Cli,
    mqtt_url: &str,
    subscribers: usize,
    payload: usize,
    window_size: u64,
) -> Result<()> {
    let addr = mqtt_addr(mqtt_url)?;
    let t0 = Instant::now();
    let window = Window::new(cli.warmup, cli.duration);
    let (progress, tasks) = wamp_subscribers(cli, subscribers, window, t0).await?;
    let blob = "x".repeat(payload);
    let native: Encode = Box::new(move |seq, sent_ns| {
        serde_json::to_vec(&serde_json::json!({"args": [seq, sent_ns, blob]})).unwrap_or_default()
    });
    let mut publisher = mqtt_client(&addr, "m2w-pub").await?;
    publish_windowed(
        &mut publisher,
        WAMP_TOPIC,
        &native,
        &progress,
        window_size,
        t0,
        window.end,
    )
    .await?;
    let (rate, p50, p99, p999) = collect(tasks, &window).await?;
    report(
        cli,
        "mqtt-to-wamp",
        serde_json::json!({"subscribers": subscribers, "payload": payload,
            "events_per_s": rate.round(), "p50_ms": p50, "p99_ms": p99, "p999_ms": p999}),
        format!(
            "MQTT 1 -> {subscribers} WAMP subs, {payload} B: {rate:>10.0} events/s  p50 {p50:.3} ms  p99 {p99:.3} ms  p99.9 {p999:.3} ms"
        ),
    );
    Ok(())
}

/// `concurrency` clients connecting and disconnecting in a loop.
pub(crate) async fn mqtt_connect(cli: &Cli, concurrency: usize) -> Result<()> {
    let addr = mqtt_addr(&cli.url)?;
    let window = Window::new(cli.warmup, cli.duration);
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            let mut n = 0u64;
            while Instant::now() < window.end {
                n += 1;
                let mut s = mqtt_client(&addr, &format!("conn-{c}-{n}")).await?;
                s.write_all(&[0xE0, 0x00]).await?;
                // The broker closes after DISCONNECT.
                let mut rest = [0u8; 16];
                let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut rest)).await;
                if window.measuring(Instant::now()) {
                    done += 1;
                }
            }
            Ok::<_, anyhow::Error>(done)
        }));
    }
    let total = sum_counts(tasks).await?;
    let rate = total as f64 / window.secs();
    report(
        cli,
        "mqtt-connect",
        serde_json::json!({"concurrency": concurrency, "connections_per_s": rate.round()}),
        format!(
            "MQTT connect/CONNACK/DISCONNECT, {concurrency} at once: {rate:>8.0} connections/s"
        ),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_frame_and_split() {
        let mut out = Vec::new();
        publish("a/b", &[7u8; 200], &mut out);
        assert_eq!(&out[..3], &[0x30, 205, 1], "a two-byte remaining length");
        let mut buf = BytesMut::from(&out[..out.len() - 1]);
        assert!(
            split_packet(&mut buf).expect("valid").is_none(),
            "one byte short"
        );
        buf.extend_from_slice(&out[out.len() - 1..]);
        let (first, body) = split_packet(&mut buf).expect("valid").expect("whole");
        assert_eq!(first, 0x30);
        assert_eq!(payload_of(&body), Some(&[7u8; 200][..]));
        assert!(buf.is_empty());
        let mut bad = BytesMut::from(&[0x30u8, 0xFF, 0xFF, 0xFF, 0xFF, 0x01][..]);
        assert!(split_packet(&mut bad).is_err());
    }
}

//! The HTTP bridge scenario: kept-alive connections posting to `caller`
//! and `publisher` paths.

use super::*;

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

pub(crate) async fn bridge(
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

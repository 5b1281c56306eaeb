//! Scenarios about the node as a process: connection storms and cycles,
//! idle sessions and their memory, unfinished frames, start-up time.

use super::*;

pub(crate) async fn storm(cli: &Cli, concurrency: usize) -> Result<()> {
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
    let total = sum_counts(tasks).await?;
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

pub(crate) async fn cycles(cli: &Cli, count: usize, concurrency: usize, pid: u32) -> Result<()> {
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
pub(crate) fn tree_rss_kib(pid: u32) -> Result<u64> {
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

/// `count` connections opened by `open(n)`, at most `concurrency` at a
/// time, within 600 s; `what` names them in the error.
async fn fill_up<T, F, Fut>(count: usize, concurrency: usize, what: &str, open: F) -> Result<Vec<T>>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let started = Instant::now();
    let mut conns = Vec::with_capacity(count);
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut launched = 0;
    while conns.len() < count {
        while launched < count && pending.len() < concurrency {
            pending.push(open(launched));
            launched += 1;
        }
        match pending.next().await {
            Some(c) => conns.push(c?),
            None => break,
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("only {} of {count} {what} within 600 s", conns.len());
        }
    }
    Ok(conns)
}

pub(crate) async fn idle(cli: &Cli, sessions: usize, pid: u32, concurrency: usize) -> Result<()> {
    let ser = cli.serializer.serializer();
    let before = tree_rss_kib(pid)?;
    let started = Instant::now();
    let conns = fill_up(sessions, concurrency, "sessions joined", |_| {
        let (url, realm) = (cli.url.clone(), cli.realm.clone());
        async move { Conn::join(&url, &realm, ser).await }
    })
    .await?;
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

pub(crate) async fn unfinished_frames(
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

pub(crate) async fn startup(cli: &Cli, cmd: &str, timeout: f64) -> Result<()> {
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

pub(crate) async fn node(cli: &Cli, cmd: &str, timeout: f64) -> Result<()> {
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

/// One idle MQTT 3.1.1 client: CONNECT (client id `id`, keep-alive off),
/// then wait for the CONNACK that accepts it.
pub(crate) async fn mqtt_idle(
    cli: &Cli,
    clients: usize,
    pid: u32,
    concurrency: usize,
) -> Result<()> {
    let addr = super::mqtt::mqtt_addr(&cli.url)?;
    let before = tree_rss_kib(pid)?;
    let started = Instant::now();
    let conns = fill_up(clients, concurrency, "MQTT clients connected", |n| {
        let (addr, id) = (addr.clone(), format!("idle-{n}"));
        async move { super::mqtt::mqtt_client(&addr, &id).await }
    })
    .await?;
    let fill = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = tree_rss_kib(pid)?;
    let per_client = (after.saturating_sub(before)) as f64 * 1024.0 / clients as f64;
    // A newcomer still gets in promptly.
    let t = Instant::now();
    let newcomer = super::mqtt::mqtt_client(&addr, "idle-newcomer").await?;
    let connect_ms = t.elapsed().as_secs_f64() * 1000.0;
    report(
        cli,
        "mqtt-idle",
        serde_json::json!({"clients": clients, "rss_before_kib": before, "rss_after_kib": after,
            "bytes_per_client": per_client.round(), "fill_s": fill, "new_connect_ms": connect_ms}),
        format!(
            "{clients} idle MQTT clients: RSS {:.1} -> {:.1} MiB, {:.0} B/client (filled in {fill:.1} s); a newcomer connects in {connect_ms:.1} ms",
            before as f64 / 1024.0,
            after as f64 / 1024.0,
            per_client
        ),
    );
    drop(newcomer);
    drop(conns);
    Ok(())
}

//! The control link: a WAMP realm on a Unix socket in the node directory.
//!
//! The controller runs a small router (the same router code, RawSocket on
//! `NODE_DIR/control.sock`, mode 0600, realm [`REALM`]). Workers join it,
//! register their management procedures (`worker.ID.status`,
//! `.shutdown`, `.set_loglevel`) and publish [`ON_READY`]. The controller
//! joins too and registers [`NODE_STATUS`] and [`NODE_STOP`], which
//! `trellis status` and `trellis stop` call.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::collections::BTreeMap;

use client::{Client, ClientConfig, ConnectError};
use proto::{Dict, Payload, Value};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use trellis_config::router::RouterConfig;

/// The management realm.
pub const REALM: &str = "trellis.control";
/// Workers publish this when they are ready: a [`ReadyReport`] as kwargs.
pub const ON_READY: &str = "worker.on_ready";
/// The controller publishes this when a worker exits: an [`ExitReport`]
/// as kwargs.
pub const ON_EXIT: &str = "worker.on_exit";
/// The node's status: kwargs `workers`, a list of [`WorkerStatus`].
pub const NODE_STATUS: &str = "node.status";
/// The node's status document (as the admin listener's `/status`), for
/// the `nodeinfo` web service: kwargs `doc`, the document as JSON text.
pub const NODE_INFO: &str = "node.info";
/// The running workers' figures: kwargs `workers`, a dict of worker id to
/// [`WorkerStats`] (those that answered within a second).
pub const NODE_STATS: &str = "node.stats";

/// A worker is ready ([`ON_READY`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadyReport {
    pub id: String,
    /// `router` or `container`.
    #[serde(rename = "type")]
    pub kind: String,
    pub pid: u32,
    /// A router's listening transports.
    #[serde(default)]
    pub transports: Vec<Listening>,
}

/// One listening transport of a router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listening {
    /// `websocket`, `rawsocket`, `web`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `127.0.0.1:8080` or a socket path.
    pub listen: String,
}

/// A worker exited ([`ON_EXIT`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitReport {
    pub id: String,
    /// 0 when it never ran.
    pub pid: u32,
    /// How it ended (`exited with status 3`, `killed by signal 9`, ...).
    pub exit: String,
    /// `restart`, `stay` or `give-up`.
    pub action: String,
}

/// A worker's own answer to `worker.ID.status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub pid: u32,
    pub uptime_s: u64,
    /// Sessions per realm (routers).
    #[serde(default)]
    pub sessions: BTreeMap<String, u64>,
    #[serde(default)]
    pub transports: Vec<Listening>,
}

/// A worker's figures, its answer to `worker.ID.stats` (the metrics).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WorkerStats {
    /// A router's realms (not its internal ones).
    #[serde(default)]
    pub realms: BTreeMap<String, router_worker::realm::RealmStats>,
    /// A router's transports (not its private sockets).
    #[serde(default)]
    pub transports: Vec<TransportStats>,
    /// A router's token stores, when it has any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_store: Option<TokenStoreStats>,
    /// A clustered router's NATS backplane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backplane: Option<BackplaneReport>,
    /// Python components (a container's, a router's) and their states:
    /// `running`, `failed`, `stopped`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<ComponentStatus>,
}

/// One Python component's state, as its launcher reported it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ComponentStatus {
    /// Its class (`module.Class`).
    pub name: String,
    /// `running`, `failed` or `stopped`.
    pub state: String,
}

/// A clustered router's NATS backplane.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BackplaneReport {
    /// Connected to NATS now.
    pub connected: bool,
    /// Connections lost (each followed by reconnecting).
    pub reconnects: u64,
    /// Publications sent to the other nodes.
    pub sent: u64,
    /// Publications received from them.
    pub received: u64,
    /// Dropped, by reason (`queue_full`, `disconnected`, `slow_consumer`,
    /// `too_large`).
    pub dropped: BTreeMap<String, u64>,
    /// Other members (router workers of other nodes) heard from lately.
    #[serde(default)]
    pub members: u64,
    /// The last round trip to NATS, in milliseconds.
    #[serde(default)]
    pub rtt_ms: f64,
    /// The registration directory has been read through once.
    #[serde(default)]
    pub directory_ready: bool,
    /// Meta queries answered without a member that did not answer in time.
    #[serde(default)]
    pub meta_partial: u64,
    /// Direct member links (`cluster.links`); all zero without them.
    #[serde(default)]
    pub links: LinksReport,
}

/// A router's member links (`cluster.links`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LinksReport {
    /// Links to other members up now.
    pub open: u64,
    /// RPC frames sent on them, and received on the other members' links.
    pub sent: u64,
    pub received: u64,
    /// Connections to the link port refused (no hello, a wrong token).
    pub refused: u64,
}

impl BackplaneReport {
    /// Read a router's backplane counters.
    pub fn of(s: &router_worker::backplane::BackplaneStats) -> BackplaneReport {
        use std::sync::atomic::Ordering::Relaxed;
        BackplaneReport {
            connected: s.connected.load(Relaxed),
            members: s.members.load(Relaxed),
            rtt_ms: s.rtt_us.load(Relaxed) as f64 / 1000.0,
            directory_ready: s.directory_synced.load(Relaxed),
            meta_partial: s.meta_partial.load(Relaxed),
            links: LinksReport {
                open: s.links_open.load(Relaxed),
                sent: s.link_sent.load(Relaxed),
                received: s.link_received.load(Relaxed),
                refused: s.links_refused.load(Relaxed),
            },
            reconnects: s.reconnects.load(Relaxed),
            sent: s.sent.load(Relaxed),
            received: s.received.load(Relaxed),
            dropped: [
                ("queue_full", &s.dropped_queue_full),
                ("disconnected", &s.dropped_disconnected),
                ("slow_consumer", &s.dropped_slow_consumer),
                ("too_large", &s.dropped_too_large),
                ("link_queue_full", &s.link_dropped),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.load(Relaxed)))
            .collect(),
        }
    }
}

/// A router's one-time token stores.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TokenStoreStats {
    /// `embedded`, `redis`.
    pub kinds: Vec<String>,
    /// Operations by `op/result` (`consume/used`), non-zero only.
    pub operations: BTreeMap<String, u64>,
}

/// One transport's counters.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TransportStats {
    /// Its id, or `transport[i]`.
    pub name: String,
    /// `websocket`, `rawsocket`, `web`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where it listens (`127.0.0.1:8080`, a socket path).
    #[serde(default)]
    pub listen: String,
    /// Connections open now.
    pub open: u64,
    /// Of those, the ones whose idle sessions are parked.
    #[serde(default)]
    pub parked: u64,
    pub accepted: u64,
    /// Refused by `max_connections`.
    pub refused: u64,
    pub auth_ok: u64,
    pub auth_failed: u64,
    /// Logins welcomed by method (`wampcra`, `cookie`, ...).
    #[serde(default)]
    pub logins: BTreeMap<String, u64>,
    /// Dynamic and function authenticators' answer times.
    #[serde(default)]
    pub authenticator_duration: router_worker::realm::Histogram,
    /// WAMP message bytes from and to established sessions.
    #[serde(default)]
    pub bytes_received: u64,
    #[serde(default)]
    pub bytes_sent: u64,
    /// Messages larger than the receiving session's transport takes: not
    /// sent (events skipped, results and invocations turned into errors).
    #[serde(default)]
    pub too_large: u64,
    /// MQTT messages dropped from full client queues.
    #[serde(default)]
    pub mqtt_dropped: u64,
}

/// One worker in `trellis status` ([`NODE_STATUS`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub id: String,
    /// `router`, `container` or `guest`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `starting`, `running`, `restarting`, `stopping`, `stopped`,
    /// `failed`, `unresponsive`.
    pub state: String,
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// A running router's sessions per realm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<BTreeMap<String, u64>>,
    /// A running router's listening transports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transports: Option<Vec<Listening>>,
}

/// A control message as WAMP kwargs.
pub fn to_kwargs<T: Serialize>(message: &T) -> Dict {
    match serde_json::to_value(message).map(|v| Value::from(&v)) {
        Ok(Value::Dict(d)) => d,
        _ => Dict::new(),
    }
}

/// A control message from WAMP kwargs.
///
/// # Errors
/// The kwargs do not have the message's shape (the field is named).
pub fn from_kwargs<T: DeserializeOwned>(kwargs: &Dict) -> Result<T, String> {
    serde_json::from_value(Value::Dict(kwargs.clone()).to_json()).map_err(|e| e.to_string())
}
/// Stop the node (as SIGTERM does).
pub const NODE_STOP: &str = "node.stop";

/// A worker's management procedure: `worker.ID.NAME`. (The control realm
/// is private to the node, and `trellis.` URIs are reserved for routers.)
pub fn worker_procedure(id: &str, name: &str) -> String {
    format!("worker.{id}.{name}")
}

/// The control socket of a node directory.
pub fn socket_path(node_dir: &Path) -> PathBuf {
    node_dir.join("control.sock")
}

/// The node directory: `--node-dir`, else `$TRELLIS_NODE_DIR`, else
/// `./.trellis` when a node runs there, else the one `trellis start` would
/// take here (`./.crossbar` in a Crossbar.io project, else `./.trellis`).
pub fn node_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(d) = explicit.map(Path::to_owned).or_else(|| {
        std::env::var_os("TRELLIS_NODE_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    }) {
        return d;
    }
    // A node running in ./.trellis answers there; else the directory
    // `trellis start` would take here (`.crossbar` in a Crossbar.io
    // project).
    let trellis = PathBuf::from(".trellis");
    if socket_path(&trellis).exists() {
        return trellis;
    }
    trellis_config::node::locate_node(None, None).node_dir
}

/// The control router: one realm, RawSocket JSON on the socket; every
/// session gets the built-in `trusted` role (the socket's mode 0600 is the
/// access control).
pub fn router_config(socket: &Path) -> RouterConfig {
    RouterConfig {
        id: Some("controller".into()),
        realms: vec![trellis_config::router::RealmConfig {
            name: REALM.into(),
            id: None,
            roles: Vec::new(),
            options: Default::default(),
            store: None,
            stats: None,
            trace: None,
        }],
        transports: vec![trellis_config::router::TransportConfig::unix_anonymous(
            "control",
            socket.to_string_lossy().into_owned(),
            None,
            trellis_config::router::AnonymousAuth::fixed("trusted", None, None, false),
        )],
        components: Vec::new(),
        python: None,
        pythonpath: Vec::new(),
        cluster: None,
        compat: Default::default(),
    }
}

/// Join the control realm of the node in `node_dir` as `authid`.
///
/// # Errors
/// A message saying that no node runs there, or why joining failed.
pub async fn connect(node_dir: &Path, authid: &str) -> Result<Client, String> {
    let socket = socket_path(node_dir);
    let mut cfg = ClientConfig::new(REALM);
    cfg.authid = Some(authid.to_owned());
    cfg.open_timeout = Duration::from_secs(5);
    Client::connect_unix(&socket, &cfg)
        .await
        .map_err(|e| match e {
            ConnectError::Io(io)
                if matches!(
                    io.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                format!(
                    "no node is running in {} (no control socket at {}); give the node directory with --node-dir",
                    node_dir.display(),
                    socket.display()
                )
            }
            other => format!("cannot reach the node's control socket {}: {other}", socket.display()),
        })
}

/// `trellis status`: the node's workers as returned by [`NODE_STATUS`].
///
/// # Errors
/// The node is not reachable or did not answer.
pub async fn status(node_dir: &Path) -> Result<Vec<WorkerStatus>, String> {
    let client = connect(node_dir, "cli").await?;
    let rows = status_of(&client).await;
    client.leave().await;
    rows
}

/// What `trellis status` shows besides the table: each router's backplane
/// (empty without a cluster), each container's components, each router's
/// logins by method (with `refused`).
pub type StatusExtras = (
    BTreeMap<String, BackplaneReport>,
    BTreeMap<String, Vec<ComponentStatus>>,
    BTreeMap<String, BTreeMap<String, u64>>,
);

/// `trellis status` of a clustered node: the workers, and each router's
/// backplane (empty when the node has no cluster).
///
/// # Errors
/// The node is not reachable or did not answer.
pub async fn status_and_backplane(
    node_dir: &Path,
) -> Result<(Vec<WorkerStatus>, StatusExtras), String> {
    let client = connect(node_dir, "cli").await?;
    let rows = status_of(&client).await;
    let stats = client.call(NODE_STATS, Payload::default()).await;
    client.leave().await;
    let rows = rows?;
    let stats: BTreeMap<String, WorkerStats> = match stats {
        Ok(r) => match r.kwargs.get("workers") {
            Some(Value::Dict(d)) => from_kwargs(d).unwrap_or_default(),
            _ => BTreeMap::new(),
        },
        Err(_) => BTreeMap::new(),
    };
    let logins = stats
        .iter()
        .filter_map(|(id, st)| {
            let mut by: BTreeMap<String, u64> = BTreeMap::new();
            let mut refused = 0;
            for t in &st.transports {
                for (m, n) in &t.logins {
                    *by.entry(m.clone()).or_default() += n;
                }
                refused += t.auth_failed;
            }
            if refused > 0 {
                by.insert("refused".into(), refused);
            }
            (!by.is_empty()).then(|| (id.clone(), by))
        })
        .collect();
    let components = stats
        .iter()
        .filter(|(_, st)| !st.components.is_empty())
        .map(|(id, st)| (id.clone(), st.components.clone()))
        .collect();
    let backplane = stats
        .into_iter()
        .filter_map(|(id, st)| st.backplane.map(|b| (id, b)))
        .collect();
    Ok((rows, (backplane, components, logins)))
}

/// One line per router with logins: the count by method, then refused.
pub fn format_logins(l: &BTreeMap<String, BTreeMap<String, u64>>) -> String {
    let mut out = String::new();
    for (id, by) in l {
        let mut parts: Vec<String> = by
            .iter()
            .filter(|(m, _)| *m != "refused")
            .map(|(m, n)| format!("{m} {n}"))
            .collect();
        if let Some(n) = by.get("refused") {
            parts.push(format!("refused {n}"));
        }
        out.push_str(&format!("logins of {id}: {}\n", parts.join(", ")));
    }
    out
}

/// One line per worker with Python components: each one's state.
pub fn format_components(c: &BTreeMap<String, Vec<ComponentStatus>>) -> String {
    let mut out = String::new();
    for (id, list) in c {
        let states: Vec<String> = list
            .iter()
            .map(|c| {
                let state = if c.state == "running" {
                    c.state.clone()
                } else {
                    c.state.to_uppercase()
                };
                format!("{} {state}", c.name)
            })
            .collect();
        out.push_str(&format!("components of {id}: {}\n", states.join(", ")));
    }
    out
}

/// One line per router: its NATS backplane.
pub fn format_backplane(b: &BTreeMap<String, BackplaneReport>) -> String {
    let mut out = String::new();
    for (id, r) in b {
        let dropped: Vec<String> = r
            .dropped
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        out.push_str(&format!(
            "backplane of {id}: {}{}, {} other members, round trip {:.2} ms, {} reconnects, {} sent, {} received, dropped: {}\n",
            if r.connected {
                "connected"
            } else {
                "NOT CONNECTED"
            },
            if r.directory_ready {
                ""
            } else {
                " (directory not read yet)"
            },
            r.members,
            r.rtt_ms,
            r.reconnects,
            r.sent,
            r.received,
            if dropped.is_empty() {
                "none".to_owned()
            } else {
                dropped.join(", ")
            }
        ));
        let l = &r.links;
        if l.open + l.sent + l.received + l.refused > 0 {
            out.push_str(&format!(
                "  member links of {id}: {} up, {} frames sent, {} received, {} connections refused\n",
                l.open, l.sent, l.received, l.refused
            ));
        }
    }
    out
}

async fn status_of(client: &Client) -> Result<Vec<WorkerStatus>, String> {
    let r = client
        .call(NODE_STATUS, Payload::default())
        .await
        .map_err(|e| format!("{NODE_STATUS} failed: {e}"))?;
    match r.kwargs.get("workers") {
        Some(Value::List(l)) => l
            .iter()
            .map(|w| match w {
                Value::Dict(d) => from_kwargs(d),
                other => Err(format!("a worker is a {}", other.type_name())),
            })
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{NODE_STATUS} answered an unreadable worker: {e}")),
        _ => Err(format!("{NODE_STATUS} answered without a workers list")),
    }
}

/// `trellis status --watch`: the table and each router's message rates,
/// refreshed `every` until the process is interrupted; `show` gets each
/// screen.
///
/// # Errors
/// The node is not reachable, or stopped answering.
pub async fn watch(
    node_dir: &Path,
    every: std::time::Duration,
    mut show: impl FnMut(String),
) -> Result<(), String> {
    let client = connect(node_dir, "cli").await?;
    let mut before: Option<(std::time::Instant, BTreeMap<String, WorkerStats>)> = None;
    loop {
        let rows = status_of(&client).await?;
        let r = client
            .call(NODE_STATS, Payload::default())
            .await
            .map_err(|e| format!("{NODE_STATS} failed: {e}"))?;
        let now: BTreeMap<String, WorkerStats> = match r.kwargs.get("workers") {
            Some(Value::Dict(d)) => from_kwargs(d)?,
            _ => BTreeMap::new(),
        };
        let at = std::time::Instant::now();
        let mut screen = format_table(&rows);
        if let Some((then, prev)) = &before {
            screen.push('\n');
            screen.push_str(&format_rates(
                prev,
                &now,
                at.duration_since(*then).as_secs_f64(),
            ));
        }
        show(screen);
        before = Some((at, now));
        tokio::time::sleep(every).await;
    }
}

/// Per router and realm: sessions, and messages in and out per second
/// between two readings `secs` apart.
pub fn format_rates(
    before: &BTreeMap<String, WorkerStats>,
    now: &BTreeMap<String, WorkerStats>,
    secs: f64,
) -> String {
    let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
    let mut rows = vec![[
        "WORKER".to_owned(),
        "REALM".to_owned(),
        "SESSIONS".to_owned(),
        "IN/S".to_owned(),
        "OUT/S".to_owned(),
        "CALLS/S".to_owned(),
    ]];
    for (id, st) in now {
        for (realm, r) in &st.realms {
            let prev = before.get(id).and_then(|b| b.realms.get(realm));
            let rate = |f: &dyn Fn(&router_worker::realm::RealmStats) -> u64| {
                let was = prev.map_or(0, f);
                let d = f(r).saturating_sub(was) as f64;
                format!("{:.0}", if secs > 0.0 { d / secs } else { 0.0 })
            };
            rows.push([
                id.clone(),
                realm.clone(),
                r.sessions.to_string(),
                rate(&|x| total(&x.received)),
                rate(&|x| total(&x.sent)),
                rate(&|x| total(&x.calls)),
            ]);
        }
    }
    columns(&rows)
}

/// `trellis stop`: ask the node to stop and wait (up to `wait`) until its
/// control socket is gone.
///
/// # Errors
/// The node is not reachable, refused, or did not stop in time.
pub async fn stop(node_dir: &Path, wait: Duration) -> Result<(), String> {
    let client = connect(node_dir, "cli").await?;
    client
        .call(NODE_STOP, Payload::default())
        .await
        .map_err(|e| format!("{NODE_STOP} failed: {e}"))?;
    let socket = socket_path(node_dir);
    let deadline = tokio::time::Instant::now() + wait;
    while socket.exists() {
        if tokio::time::Instant::now() > deadline {
            return Err(format!(
                "the node accepted the stop but is still running after {} s",
                wait.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// `trellis status` as a table.
pub fn format_table(workers: &[WorkerStatus]) -> String {
    let mut rows = vec![[
        "ID".to_owned(),
        "TYPE".to_owned(),
        "PID".to_owned(),
        "STATE".to_owned(),
        "UPTIME".to_owned(),
        "RESTARTS".to_owned(),
        "MEMORY".to_owned(),
        "DETAIL".to_owned(),
    ]];
    for w in workers {
        let uptime = w.uptime_s.map_or("-".into(), human_duration);
        let memory = w
            .memory_bytes
            .map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0));
        let mut detail = Vec::new();
        for (realm, count) in w.sessions.iter().flatten() {
            detail.push(format!("{realm}: {count} sessions"));
        }
        for t in w.transports.iter().flatten() {
            detail.push(format!("{} {}", t.kind, t.listen));
        }
        if let Some(e) = &w.last_exit {
            detail.push(format!("last exit: {e}"));
        }
        rows.push([
            w.id.clone(),
            w.kind.clone(),
            w.pid.map_or("-".into(), |p| p.to_string()),
            w.state.clone(),
            uptime,
            w.restarts.to_string(),
            memory,
            detail.join("; "),
        ]);
    }
    columns(&rows)
}

/// Rows as left-aligned columns two spaces apart.
fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn human_duration(s: u64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

/// A process's resident memory, from `/proc/PID/status`.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backplane_line_names_member_links_only_when_there_are_some() {
        let mut r = BackplaneReport {
            connected: true,
            directory_ready: true,
            members: 2,
            ..BackplaneReport::default()
        };
        let one = |r: &BackplaneReport| {
            format_backplane(&BTreeMap::from([("router1".to_owned(), r.clone())]))
        };
        assert!(!one(&r).contains("member links"), "{}", one(&r));
        r.links = LinksReport {
            open: 2,
            sent: 40,
            received: 38,
            refused: 1,
        };
        assert!(
            one(&r).contains(
                "member links of router1: 2 up, 40 frames sent, 38 received, 1 connections refused"
            ),
            "{}",
            one(&r)
        );
    }

    #[test]
    fn the_control_router_config_is_valid() {
        let cfg = router_config(Path::new("/tmp/x/control.sock"));
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    }

    #[test]
    fn rates_are_differences_over_time() {
        let reading = |calls: u64| {
            let mut r = router_worker::realm::RealmStats {
                sessions: 2,
                ..Default::default()
            };
            r.received.insert("CALL".into(), calls);
            r.sent.insert("RESULT".into(), calls);
            r.calls.insert("ok".into(), calls);
            let st = WorkerStats {
                realms: [("realm1".to_owned(), r)].into_iter().collect(),
                transports: Vec::new(),
                token_store: None,
                backplane: None,
                components: Vec::new(),
            };
            [("router1".to_owned(), st)]
                .into_iter()
                .collect::<BTreeMap<_, _>>()
        };
        let text = format_rates(&reading(100), &reading(300), 2.0);
        let line = text.lines().nth(1).unwrap();
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cells,
            ["router1", "realm1", "2", "100", "100", "100"],
            "{text}"
        );
    }

    #[test]
    fn table_has_a_row_per_worker() {
        let w = WorkerStatus {
            id: "router1".into(),
            kind: "router".into(),
            state: "running".into(),
            restarts: 2,
            pid: Some(42),
            memory_bytes: Some(5 * 1048576),
            uptime_s: Some(3700),
            last_exit: None,
            sessions: Some(BTreeMap::from([("realm1".to_owned(), 3)])),
            transports: Some(vec![Listening {
                kind: "websocket".into(),
                listen: "127.0.0.1:8080".into(),
            }]),
        };
        // The status procedure's kwargs read back as they were sent.
        assert_eq!(from_kwargs::<WorkerStatus>(&to_kwargs(&w)), Ok(w.clone()));
        assert!(
            from_kwargs::<ReadyReport>(&proto::dict! { "id" => "r", "pid" => 7u64 })
                .unwrap_err()
                .contains("missing field `type`"),
            "a malformed report names what is missing"
        );
        let t = format_table(&[w]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ID "), "{t}");
        assert!(lines[1].contains("router1"), "{t}");
        assert!(lines[1].contains("1h01m"), "{t}");
        assert!(lines[1].contains("5.0 MiB"), "{t}");
        assert!(lines[1].contains("realm1: 3 sessions"), "{t}");
        assert!(lines[1].contains("websocket 127.0.0.1:8080"), "{t}");
    }

    #[test]
    fn rss_of_this_process() {
        assert!(rss_bytes(std::process::id()).is_some_and(|b| b > 0));
    }
}

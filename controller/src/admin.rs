//! The admin listener (`controller.admin`): `/livez`, `/readyz`,
//! `/status` and `/metrics` over HTTP, for probes, dashboards and people.
//! The controller gathers the workers' figures over their control links
//! on each request, within a time budget; a worker that does not answer
//! is reported down rather than waited for.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use client::Client;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use proto::Payload;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::control::{self, WorkerStats, WorkerStatus};
use crate::node::Input;

/// How long a worker has to give its figures.
const STATS_BUDGET: Duration = Duration::from_secs(1);

/// What the handlers share.
pub(crate) struct AdminState {
    /// The controller's loop (for the workers' rows).
    pub events: mpsc::Sender<Input>,
    /// The controller's control link (to ask workers).
    pub link: Client,
    /// SIGTERM arrived: `/readyz` says 503.
    pub draining: Arc<AtomicBool>,
    /// `Authorization: Bearer` for `/metrics` and `/status`.
    pub token: Option<String>,
    pub started: Instant,
    /// `cluster.require_backplane`: not ready while a router worker is not
    /// connected to NATS.
    pub require_backplane: bool,
    /// The listener's own connections.
    pub counters: Arc<AdminCounters>,
}

/// The admin listener's connections: open now and refused over the cap.
#[derive(Debug, Default)]
pub(crate) struct AdminCounters {
    pub open: AtomicU64,
    pub refused: AtomicU64,
}

/// What the admin listener allows each client.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdminLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// From a connection's opening or its previous response to the end of
    /// the next request head.
    pub head_timeout: Duration,
}

/// The longest an admin connection lives, whatever it does: a client that
/// does not read its response does not hold a slot for long.
const MAX_CONNECTION_LIFE: Duration = Duration::from_secs(120);

/// What a client over the cap is told before the connection is closed.
const OVER_CAP: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 62\r\n\r\ntoo many admin connections (controller.admin.max_connections)\n";

/// Serve until `shutdown`: at most `limits.max_connections` connections at
/// once (more are answered 503 and closed), each closed when its request
/// head does not arrive within `limits.head_timeout`.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    limits: AdminLimits,
    shutdown: CancellationToken,
) {
    let counters = state.counters.clone();
    let app = axum::Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(state);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_buf_size(64 * 1024);
    let last_refusal_log = AtomicU64::new(0);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    warn!(cause = %e, "admin listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            let now = started_secs();
            if last_refusal_log.swap(now, Ordering::Relaxed) != now {
                warn!(%peer, max = limits.max_connections,
                    "admin connection refused: controller.admin.max_connections are open (logged at most once a second)");
            }
            // Told without waiting: a client that does not read is not
            // waited for.
            let _ = stream.try_write(OVER_CAP);
            continue;
        };
        counters.open.fetch_add(1, Ordering::Relaxed);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let stop = shutdown.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = tokio::time::timeout(MAX_CONNECTION_LIFE, conn.as_mut()) => {
                    if let Ok(Err(e)) = r {
                        tracing::debug!(%peer, cause = %e, "admin connection ended");
                    }
                }
                _ = stop.cancelled() => {}
            }
            counters.open.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
}

/// Seconds since the epoch, for logging at most once a second.
fn started_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The controller's loop answers: nothing else is checked, so that a probe
/// never restarts a node for a worker's or a backplane's sake.
async fn livez(State(s): State<Arc<AdminState>>) -> StatusCode {
    match rows(&s).await {
        Some(_) => StatusCode::NO_CONTENT,
        None => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// 204 when every router worker is up (its transports listening) and the
/// node is not draining; else 503 naming what fails.
async fn readyz(State(s): State<Arc<AdminState>>) -> Response {
    let failing = match rows(&s).await {
        Some(rows) => {
            let mut failing = not_ready(&rows, s.draining.load(Ordering::Relaxed));
            if s.require_backplane {
                let stats = gather(&s.link, &rows).await;
                let connected = rows.iter().filter(|r| r.kind == "router").all(|r| {
                    stats
                        .get(&r.id)
                        .and_then(Option::as_ref)
                        .and_then(|st| st.backplane.as_ref())
                        .is_some_and(|b| b.connected && b.directory_ready)
                });
                if !connected {
                    failing.push("backplane".to_owned());
                }
            }
            failing
        }
        None => vec!["controller".to_owned()],
    };
    if failing.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({ "failing": failing })),
    )
        .into_response()
}

/// What keeps the node from being ready: `worker:ID` for each router worker
/// not running, `draining` after SIGTERM.
pub(crate) fn not_ready(rows: &[WorkerStatus], draining: bool) -> Vec<String> {
    let mut failing: Vec<String> = rows
        .iter()
        .filter(|r| r.kind == "router" && r.state != "running")
        .map(|r| format!("worker:{}", r.id))
        .collect();
    if rows.is_empty() {
        failing.push("workers".into());
    }
    if draining {
        failing.push("draining".into());
    }
    failing
}

async fn status(State(s): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    let Some(rows) = rows(&s).await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let stats = gather(&s.link, &rows).await;
    let doc = status_json(&rows, &stats, s.started, s.draining.load(Ordering::Relaxed));
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if wants_html {
        (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            status_html(&doc),
        )
            .into_response()
    } else {
        axum::Json(doc).into_response()
    }
}

async fn metrics(State(s): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&s, &headers) {
        return *r;
    }
    let Some(rows) = rows(&s).await else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let stats = gather(&s.link, &rows).await;
    match render_metrics(&rows, &stats, Some(&s.counters)) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The bearer token, compared in constant time.
fn authorized(s: &AdminState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(token) = &s.token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(subtle::ConstantTimeEq::ct_eq(
        given.as_bytes(),
        token.as_bytes(),
    )) {
        Ok(())
    } else {
        Err(Box::new(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "this path wants the header Authorization: Bearer TOKEN (controller.admin.token)\n",
            )
                .into_response(),
        ))
    }
}

/// The workers' rows from the controller's loop, or `None` if it does not
/// answer within the budget.
async fn rows(s: &AdminState) -> Option<Vec<WorkerStatus>> {
    let (reply, rx) = oneshot::channel();
    s.events.send(Input::Status(reply)).await.ok()?;
    tokio::time::timeout(STATS_BUDGET, rx).await.ok()?.ok()
}

/// Each running router's and container's figures, asked concurrently;
/// `None` for a worker that did not answer in time.
pub(crate) async fn gather(
    link: &Client,
    rows: &[WorkerStatus],
) -> BTreeMap<String, Option<WorkerStats>> {
    let asks = rows.iter().map(|row| {
        let link = link.clone();
        let ask = row.kind != "guest" && row.state == "running";
        let id = row.id.clone();
        async move {
            if !ask {
                return (id, None);
            }
            let uri = control::worker_procedure(&id, "stats");
            let call = link.call(&uri, Payload::default());
            let stats = match tokio::time::timeout(STATS_BUDGET, call).await {
                Ok(Ok(p)) => control::from_kwargs::<WorkerStats>(&p.kwargs).ok(),
                _ => None,
            };
            (id, stats)
        }
    });
    futures::future::join_all(asks).await.into_iter().collect()
}

/// The status document (`/status`, the `nodeinfo` web service).
pub(crate) fn status_json(
    rows: &[WorkerStatus],
    stats: &BTreeMap<String, Option<WorkerStats>>,
    started: Instant,
    draining: bool,
) -> serde_json::Value {
    let workers: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let mut w = serde_json::to_value(r).unwrap_or_default();
            if let Some(Some(st)) = stats.get(&r.id) {
                w["realms"] = serde_json::to_value(&st.realms).unwrap_or_default();
                w["transports"] = serde_json::to_value(&st.transports).unwrap_or_default();
                if let Some(t) = &st.token_store {
                    w["token_store"] = serde_json::to_value(t).unwrap_or_default();
                }
                if let Some(b) = &st.backplane {
                    w["backplane"] = serde_json::to_value(b).unwrap_or_default();
                }
                if !st.components.is_empty() {
                    w["components"] = serde_json::to_value(&st.components).unwrap_or_default();
                }
            }
            w
        })
        .collect();
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_s": started.elapsed().as_secs(),
        "draining": draining,
        "workers": workers,
    })
}

/// A small page for a person's browser.
pub(crate) fn status_html(doc: &serde_json::Value) -> String {
    let esc = |v: &serde_json::Value| {
        let text = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Null => "-".into(),
            other => other.to_string(),
        };
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut out = String::from(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Trellis node</title>\
         <style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}</style></head><body>",
    );
    let _ = write!(
        out,
        "<h1>Trellis {}</h1><p>controller pid {}, up {} s{}</p>",
        esc(&doc["version"]),
        esc(&doc["pid"]),
        esc(&doc["uptime_s"]),
        if doc["draining"] == true {
            ", draining"
        } else {
            ""
        }
    );
    out.push_str("<h2>Workers</h2><table><tr><th>worker</th><th>type</th><th>state</th><th>pid</th><th>restarts</th><th>memory</th><th>last exit</th></tr>");
    let empty = Vec::new();
    let workers = doc["workers"].as_array().unwrap_or(&empty);
    for w in workers {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&w["id"]),
            esc(&w["type"]),
            esc(&w["state"]),
            esc(&w["pid"]),
            esc(&w["restarts"]),
            esc(&w["memory_bytes"]),
            esc(&w["last_exit"])
        );
    }
    out.push_str("</table><h2>Realms</h2><table><tr><th>worker</th><th>realm</th><th>sessions</th><th>registrations</th><th>subscriptions</th><th>messages in</th><th>messages out</th></tr>");
    for w in workers {
        for (name, r) in w["realms"].as_object().into_iter().flatten() {
            let total = |m: &serde_json::Value| -> u64 {
                m.as_object().map_or(0, |o| {
                    o.values().filter_map(serde_json::Value::as_u64).sum()
                })
            };
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&w["id"]),
                esc(&serde_json::Value::String(name.clone())),
                esc(&r["sessions"]),
                esc(&r["registrations"]),
                esc(&r["subscriptions"]),
                total(&r["received"]),
                total(&r["sent"])
            );
        }
    }
    out.push_str("</table><h2>Transports</h2><table><tr><th>worker</th><th>transport</th><th>type</th><th>address</th><th>open</th><th>accepted</th><th>logins</th><th>refused logins</th></tr>");
    for w in workers {
        for t in w["transports"].as_array().into_iter().flatten() {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&w["id"]),
                esc(&t["name"]),
                esc(&t["type"]),
                esc(&t["listen"]),
                esc(&t["open"]),
                esc(&t["accepted"]),
                esc(&t["auth_ok"]),
                esc(&t["auth_failed"])
            );
        }
    }
    out.push_str("</table>");
    for w in workers {
        if let Some(t) = w.get("token_store") {
            let _ = write!(
                out,
                "<h2>Token store of {}</h2><p>{}: {}</p>",
                esc(&w["id"]),
                esc(&t["kinds"]),
                esc(&t["operations"])
            );
        }
        if let Some(b) = w.get("backplane") {
            let _ = write!(
                out,
                "<h2>Cluster backplane of {}</h2><p>connected: {}, reconnects: {}, sent: {}, received: {}, dropped: {}</p>",
                esc(&w["id"]),
                esc(&b["connected"]),
                esc(&b["reconnects"]),
                esc(&b["sent"]),
                esc(&b["received"]),
                esc(&b["dropped"])
            );
        }
    }
    out.push_str("</body></html>\n");
    out
}

type Labels = Vec<(String, String)>;

/// A histogram whose buckets a worker counted: set once per scrape, then
/// encoded (prometheus-client's own histogram only observes values).
#[derive(Debug, Default)]
struct Counted {
    inner: std::sync::Mutex<Buckets>,
}

/// A histogram's sum, count and per-bucket counts by upper bound.
type Buckets = (f64, u64, Vec<(f64, u64)>);

impl Counted {
    /// A worker's histogram over [`router_worker::realm::LATENCY_BUCKETS`]
    /// (one malformed, of another length, is left out).
    fn set(&self, h: &router_worker::realm::Histogram) {
        let bounds = router_worker::realm::LATENCY_BUCKETS;
        if h.buckets.len() != bounds.len() + 1 {
            return;
        }
        let buckets: Vec<(f64, u64)> = bounds
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(h.buckets.iter().copied())
            .collect();
        if let Ok(mut g) = self.inner.lock() {
            *g = (h.sum, h.count(), buckets);
        }
    }
}

impl prometheus_client::metrics::TypedMetric for Counted {
    const TYPE: prometheus_client::metrics::MetricType =
        prometheus_client::metrics::MetricType::Histogram;
}

impl prometheus_client::encoding::EncodeMetric for Counted {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        let g = self.inner.lock().map_err(|_| std::fmt::Error)?;
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(g.0, g.1, &g.2, None)
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The node's metrics in the OpenMetrics text format. Labels have bounded
/// values only: worker ids, transport names and realms come from the
/// config, message types and results from fixed lists; no session,
/// authid, topic, procedure or address.
pub(crate) fn render_metrics(
    rows: &[WorkerStatus],
    stats: &BTreeMap<String, Option<WorkerStats>>,
    admin: Option<&AdminCounters>,
) -> Result<String, std::fmt::Error> {
    let mut reg = Registry::default();
    if let Some(a) = admin {
        let open = Gauge::<i64>::default();
        open.set(i64::try_from(a.open.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
        reg.register(
            "trellis_admin_connections",
            "Connections open now on the admin listener",
            open,
        );
        let refused = Counter::<u64>::default();
        refused.inc_by(a.refused.load(Ordering::Relaxed));
        reg.register(
            "trellis_admin_connections_refused",
            "Admin connections refused over controller.admin.max_connections",
            refused,
        );
    }
    let counter = |reg: &mut Registry, name: &str, help: &str| {
        let f = Family::<Labels, Counter>::default();
        reg.register(name, help, f.clone());
        f
    };
    let gauge = |reg: &mut Registry, name: &str, help: &str| {
        let f = Family::<Labels, Gauge>::default();
        reg.register(name, help, f.clone());
        f
    };
    let gauge_f = |reg: &mut Registry, name: &str, help: &str| {
        let f = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        reg.register(name, help, f.clone());
        f
    };
    let build = gauge(&mut reg, "trellis_build_info", "The running build");
    build
        .get_or_create(&labels(&[
            ("version", env!("CARGO_PKG_VERSION")),
            ("commit", env!("TRELLIS_COMMIT")),
        ]))
        .set(1);
    let up = gauge(
        &mut reg,
        "trellis_worker_up",
        "1 when the worker runs and answered the controller within 1 s",
    );
    let restarts = counter(&mut reg, "trellis_worker_restarts", "Restarts of a worker");
    let memory = gauge(
        &mut reg,
        "trellis_worker_resident_memory_bytes",
        "A worker process's resident memory",
    );
    let conns = gauge(&mut reg, "trellis_connections", "Connections open now");
    let parked = gauge(
        &mut reg,
        "trellis_connections_parked",
        "Connections open now whose idle sessions are parked (no task while nothing happens)",
    );
    let accepted = counter(
        &mut reg,
        "trellis_connections_accepted",
        "Connections accepted",
    );
    let refused = counter(
        &mut reg,
        "trellis_connections_refused",
        "Connections refused by a transport's max_connections",
    );
    let component_up = gauge(
        &mut reg,
        "trellis_component_up",
        "1 while a Python component runs, 0 once it has failed or stopped",
    );
    let too_large = counter(
        &mut reg,
        "trellis_messages_too_large",
        "Messages larger than the receiving session's transport takes: events skipped, results and invocations turned into errors",
    );
    let mqtt_dropped = counter(
        &mut reg,
        "trellis_mqtt_messages_dropped",
        "QoS 1 messages for MQTT clients dropped because the client's queue was full (offline_queue_messages, offline_queue_bytes)",
    );
    let bytes_in = counter(
        &mut reg,
        "trellis_received_bytes",
        "WAMP message bytes from established sessions",
    );
    let bytes_out = counter(
        &mut reg,
        "trellis_sent_bytes",
        "WAMP message bytes to established sessions",
    );
    let auths = counter(
        &mut reg,
        "trellis_authentications",
        "Logins by transport and result (success, failure)",
    );
    let logins = counter(
        &mut reg,
        "trellis_logins",
        "Logins welcomed by transport and authentication method (cookie: by a tracking cookie)",
    );
    let sessions = gauge(&mut reg, "trellis_sessions", "Sessions joined now");
    let joined = counter(&mut reg, "trellis_sessions_joined", "Sessions that joined");
    let left = counter(&mut reg, "trellis_sessions_left", "Sessions that left");
    let registrations = gauge(&mut reg, "trellis_registrations", "Registrations now");
    let subscriptions = gauge(&mut reg, "trellis_subscriptions", "Subscriptions now");
    let received = counter(
        &mut reg,
        "trellis_messages_received",
        "WAMP messages from clients, by type",
    );
    let sent = counter(
        &mut reg,
        "trellis_messages_sent",
        "WAMP messages to clients, by type",
    );
    let calls = counter(
        &mut reg,
        "trellis_calls",
        "Calls ended, by result (ok, error, canceled, timeout, no_callee)",
    );
    let published = counter(&mut reg, "trellis_events_published", "PUBLISH messages");
    let delivered = counter(&mut reg, "trellis_events_delivered", "EVENT messages sent");
    let authz = counter(
        &mut reg,
        "trellis_authorizations",
        "Authorization decisions by action and result (allowed, denied)",
    );
    let histogram = |reg: &mut Registry, name: &str, help: &str| {
        let f = Family::<Labels, Counted>::default();
        reg.register(name, help, f.clone());
        f
    };
    let durations = histogram(
        &mut reg,
        "trellis_call_duration_seconds",
        "Calls from CALL to their end as the router saw it",
    );
    let authorizer = histogram(
        &mut reg,
        "trellis_authorizer_duration_seconds",
        "Dynamic authorizers' answer times",
    );
    let authenticator = histogram(
        &mut reg,
        "trellis_authenticator_duration_seconds",
        "Dynamic and function authenticators' answer times",
    );
    let token_ops = counter(
        &mut reg,
        "trellis_token_store_operations",
        "One-time token store operations by op (mint, consume) and result",
    );
    let dropped = counter(
        &mut reg,
        "trellis_outbound_queue_dropped",
        "Sessions closed because their outbound queue was full (slow consumers)",
    );
    let bp_connected = gauge(
        &mut reg,
        "trellis_backplane_connected",
        "1 while a clustered router worker is connected to NATS",
    );
    let bp_reconnects = counter(
        &mut reg,
        "trellis_backplane_reconnects",
        "NATS connections lost by a router worker (each followed by reconnecting)",
    );
    let bp_messages = counter(
        &mut reg,
        "trellis_backplane_messages",
        "Messages between this node and the cluster, by direction and kind",
    );
    let bp_rtt = gauge_f(
        &mut reg,
        "trellis_backplane_rtt_seconds",
        "The last round trip from a router worker to NATS",
    );
    let bp_members = gauge(
        &mut reg,
        "trellis_cluster_members",
        "Other members of the cluster (router workers of other nodes) a router worker hears from",
    );
    let bp_dropped = counter(
        &mut reg,
        "trellis_backplane_dropped_messages",
        "Cluster messages dropped, by reason (queue_full, disconnected, slow_consumer, too_large)",
    );
    let links_open = gauge(
        &mut reg,
        "trellis_cluster_links_open",
        "Direct member links (cluster.links) from a router worker up now",
    );
    let links_refused = counter(
        &mut reg,
        "trellis_cluster_links_refused",
        "Connections to a router worker's member link port refused (no hello, a wrong token)",
    );
    let meta_partial = counter(
        &mut reg,
        "trellis_meta_partial",
        "Cluster-wide meta queries answered without a member that did not answer within 250 ms",
    );
    for row in rows {
        let w = row.id.as_str();
        let answered = stats.get(w).is_some_and(Option::is_some);
        let is_up = row.state == "running" && (row.kind == "guest" || answered);
        up.get_or_create(&labels(&[("worker", w), ("kind", &row.kind)]))
            .set(i64::from(is_up));
        restarts
            .get_or_create(&labels(&[("worker", w), ("kind", &row.kind)]))
            .inc_by(u64::from(row.restarts));
        if let Some(m) = row.memory_bytes {
            memory
                .get_or_create(&labels(&[("worker", w)]))
                .set(i64::try_from(m).unwrap_or(i64::MAX));
        }
        let Some(Some(st)) = stats.get(w) else {
            continue;
        };
        for c in &st.components {
            component_up
                .get_or_create(&labels(&[("worker", w), ("component", &c.name)]))
                .set(i64::from(c.state == "running"));
        }
        if let Some(b) = &st.backplane {
            let l = labels(&[("worker", w)]);
            bp_connected.get_or_create(&l).set(i64::from(b.connected));
            bp_reconnects.get_or_create(&l).inc_by(b.reconnects);
            bp_rtt.get_or_create(&l).set(b.rtt_ms / 1000.0);
            meta_partial.get_or_create(&l).inc_by(b.meta_partial);
            bp_members
                .get_or_create(&l)
                .set(i64::try_from(b.members).unwrap_or(i64::MAX));
            for (direction, kind, n) in [
                ("out", "event", b.sent),
                ("in", "event", b.received),
                ("out", "rpc_link", b.links.sent),
                ("in", "rpc_link", b.links.received),
            ] {
                bp_messages
                    .get_or_create(&labels(&[
                        ("worker", w),
                        ("direction", direction),
                        ("kind", kind),
                    ]))
                    .inc_by(n);
            }
            links_open
                .get_or_create(&l)
                .set(i64::try_from(b.links.open).unwrap_or(i64::MAX));
            links_refused.get_or_create(&l).inc_by(b.links.refused);
            for (reason, n) in &b.dropped {
                bp_dropped
                    .get_or_create(&labels(&[("worker", w), ("reason", reason)]))
                    .inc_by(*n);
            }
        }
        for (key, n) in st.token_store.iter().flat_map(|t| &t.operations) {
            let (op, result) = key.split_once('/').unwrap_or((key, ""));
            token_ops
                .get_or_create(&labels(&[("worker", w), ("op", op), ("result", result)]))
                .inc_by(*n);
        }
        for t in &st.transports {
            let l = labels(&[("worker", w), ("transport", &t.name), ("kind", &t.kind)]);
            conns
                .get_or_create(&l)
                .set(i64::try_from(t.open).unwrap_or(i64::MAX));
            parked
                .get_or_create(&l)
                .set(i64::try_from(t.parked).unwrap_or(i64::MAX));
            let l = labels(&[("worker", w), ("transport", &t.name)]);
            accepted.get_or_create(&l).inc_by(t.accepted);
            bytes_in.get_or_create(&l).inc_by(t.bytes_received);
            bytes_out.get_or_create(&l).inc_by(t.bytes_sent);
            refused.get_or_create(&l).inc_by(t.refused);
            too_large.get_or_create(&l).inc_by(t.too_large);
            mqtt_dropped.get_or_create(&l).inc_by(t.mqtt_dropped);
            if t.authenticator_duration.count() > 0 {
                authenticator
                    .get_or_create(&labels(&[("worker", w), ("transport", &t.name)]))
                    .set(&t.authenticator_duration);
            }
            for (method, n) in &t.logins {
                logins
                    .get_or_create(&labels(&[
                        ("worker", w),
                        ("transport", &t.name),
                        ("method", method),
                    ]))
                    .inc_by(*n);
            }
            for (result, n) in [("success", t.auth_ok), ("failure", t.auth_failed)] {
                auths
                    .get_or_create(&labels(&[
                        ("worker", w),
                        ("transport", &t.name),
                        ("result", result),
                    ]))
                    .inc_by(n);
            }
        }
        for (realm, r) in &st.realms {
            let l = labels(&[("worker", w), ("realm", realm)]);
            let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            sessions.get_or_create(&l).set(g(r.sessions));
            registrations.get_or_create(&l).set(g(r.registrations));
            subscriptions.get_or_create(&l).set(g(r.subscriptions));
            joined.get_or_create(&l).inc_by(r.sessions_joined);
            left.get_or_create(&l).inc_by(r.sessions_left);
            published
                .get_or_create(&l)
                .inc_by(r.received.get("PUBLISH").copied().unwrap_or(0));
            delivered
                .get_or_create(&l)
                .inc_by(r.sent.get("EVENT").copied().unwrap_or(0));
            dropped
                .get_or_create(&labels(&[
                    ("worker", w),
                    ("realm", realm),
                    ("reason", "slow_consumer"),
                ]))
                .inc_by(r.slow_peers_closed);
            for (family, by_type) in [(&received, &r.received), (&sent, &r.sent)] {
                for (t, n) in by_type {
                    family
                        .get_or_create(&labels(&[("worker", w), ("realm", realm), ("type", t)]))
                        .inc_by(*n);
                }
            }
            durations.get_or_create(&l).set(&r.call_duration);
            if r.authorizer_duration.count() > 0 {
                authorizer.get_or_create(&l).set(&r.authorizer_duration);
            }
            for (result, n) in &r.calls {
                calls
                    .get_or_create(&labels(&[
                        ("worker", w),
                        ("realm", realm),
                        ("result", result),
                    ]))
                    .inc_by(*n);
            }
            for (key, n) in &r.authorizations {
                let (action, result) = key.split_once('/').unwrap_or((key, ""));
                authz
                    .get_or_create(&labels(&[
                        ("worker", w),
                        ("realm", realm),
                        ("action", action),
                        ("result", result),
                    ]))
                    .inc_by(*n);
            }
        }
    }
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg)?;
    Ok(out)
}

/// Bind the admin listener, saying where.
///
/// # Errors
/// The address is taken or not allowed.
pub(crate) async fn bind(
    cfg: &trellis_config::node::AdminConfig,
) -> std::io::Result<tokio::net::TcpListener> {
    let addr = format!("{}:{}", cfg.endpoint.interface, cfg.endpoint.port);
    let l = tokio::net::TcpListener::bind(&addr).await?;
    let at = l.local_addr().map_or(addr, |a| a.to_string());
    info!(listen = %at, token = cfg.token.is_some(), "admin listener: /livez /readyz /status /metrics");
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, kind: &str, state: &str) -> WorkerStatus {
        WorkerStatus {
            id: id.into(),
            kind: kind.into(),
            state: state.into(),
            restarts: 2,
            pid: Some(7),
            memory_bytes: Some(1 << 20),
            uptime_s: Some(1),
            last_exit: None,
            sessions: None,
            transports: None,
        }
    }

    #[test]
    fn readiness_names_what_fails() {
        let rows = [
            row("r1", "router", "running"),
            row("c1", "container", "restarting"),
        ];
        assert!(
            not_ready(&rows, false).is_empty(),
            "containers do not decide"
        );
        assert_eq!(not_ready(&rows, true), ["draining"]);
        let rows = [row("r1", "router", "restarting")];
        assert_eq!(not_ready(&rows, false), ["worker:r1"]);
        assert_eq!(not_ready(&[], false), ["workers"]);
    }

    /// Two routers: r1 answered with figures, r2 did not.
    fn sample() -> ([WorkerStatus; 2], BTreeMap<String, Option<WorkerStats>>) {
        let rows = [
            row("r1", "router", "running"),
            row("r2", "router", "running"),
        ];
        let mut realm = router_worker::realm::RealmStats {
            sessions: 3,
            ..Default::default()
        };
        realm.received.insert("CALL".into(), 5);
        realm.calls.insert("ok".into(), 4);
        for secs in [0.001, 0.0008, 0.0001, 40.0] {
            realm.call_duration.observe(secs);
        }
        realm.authorizations.insert("call/denied".into(), 1);
        realm.sent.insert("RESULT".into(), 4);
        let mut stats = BTreeMap::new();
        stats.insert(
            "r1".to_owned(),
            Some(WorkerStats {
                realms: [("realm1".to_owned(), realm)].into_iter().collect(),
                transports: vec![control::TransportStats {
                    name: "ws".into(),
                    kind: "websocket".into(),
                    open: 2,
                    accepted: 9,
                    ..Default::default()
                }],
                token_store: Some(control::TokenStoreStats {
                    kinds: vec!["embedded".into()],
                    operations: [("consume/used".to_owned(), 2)].into_iter().collect(),
                }),
                backplane: None,
                components: Vec::new(),
            }),
        );
        stats.insert("r2".to_owned(), None);
        (rows, stats)
    }

    #[test]
    fn metrics_have_bounded_labels_and_report_silent_workers_down() {
        let (rows, stats) = sample();
        let text = render_metrics(&rows, &stats, None).unwrap();
        for want in [
            "trellis_worker_up{worker=\"r1\",kind=\"router\"} 1",
            "trellis_worker_up{worker=\"r2\",kind=\"router\"} 0",
            "trellis_worker_restarts_total{worker=\"r1\",kind=\"router\"} 2",
            "trellis_sessions{worker=\"r1\",realm=\"realm1\"} 3",
            "trellis_messages_received_total{worker=\"r1\",realm=\"realm1\",type=\"CALL\"} 5",
            "trellis_calls_total{worker=\"r1\",realm=\"realm1\",result=\"ok\"} 4",
            "trellis_connections{worker=\"r1\",transport=\"ws\",kind=\"websocket\"} 2",
            "trellis_connections_accepted_total{worker=\"r1\",transport=\"ws\"} 9",
            "trellis_call_duration_seconds_bucket{le=\"0.001\",worker=\"r1\",realm=\"realm1\"} 3",
            "trellis_call_duration_seconds_bucket{le=\"30.0\",worker=\"r1\",realm=\"realm1\"} 3",
            "trellis_call_duration_seconds_bucket{le=\"+Inf\",worker=\"r1\",realm=\"realm1\"} 4",
            "trellis_call_duration_seconds_count{worker=\"r1\",realm=\"realm1\"} 4",
            "trellis_token_store_operations_total{worker=\"r1\",op=\"consume\",result=\"used\"} 2",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
        assert!(
            !text.contains("worker=\"r2\",realm"),
            "a silent worker has no series"
        );
    }

    /// Every metric the Grafana dashboard queries is one the node exports.
    #[test]
    fn the_grafana_dashboard_queries_exported_metrics() {
        let dashboard: serde_json::Value = serde_json::from_str(include_str!(
            "../../examples/grafana/trellis-dashboard.json"
        ))
        .expect("the dashboard is JSON");
        let (rows, stats) = sample();
        let text = render_metrics(&rows, &stats, None).unwrap();
        let mut queried = 0;
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr");
                let mut rest = expr;
                while let Some(i) = rest.find("trellis_") {
                    let name: String = rest[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    assert!(
                        text.contains(&format!("\n{name}{{")),
                        "{:?} queries {name}, which the node does not export",
                        panel["title"]
                    );
                    queried += 1;
                    rest = &rest[i + name.len()..];
                }
            }
        }
        assert!(queried >= 15, "{queried}");
    }
}

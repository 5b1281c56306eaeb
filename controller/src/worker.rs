//! The worker side of `trellis worker`: a router or container process
//! started by the controller.
//!
//! The controller writes the worker's part of the config as JSON on its
//! stdin. The worker opens its listeners, joins the control realm over the
//! controller's Unix socket, registers its management procedures, publishes
//! [`control::ON_READY`] and runs until SIGTERM, a `shutdown` call, or the
//! loss of its control link (the controller is gone: nothing to serve for).

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{CallError, Client, ClientConfig};
use proto::{Dict, Payload, Value};
use router_worker::Router;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};
use trellis_config::router::{INTERNAL_REALM_PREFIX, RealmConfig, RouterConfig};

use crate::control;
use crate::logging::LevelHandle;
use trellis_config::container::ContainerConfig;

/// Largest config a worker accepts on stdin.
const MAX_CONFIG: u64 = 16 << 20;

/// The kinds of worker the `trellis` binary runs itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// A router worker.
    Router,
    /// A container worker.
    Container,
}

/// A worker's part of the config, as the controller sends it.
pub enum WorkerConfig {
    /// A router's.
    Router(RouterConfig),
    /// A container's.
    Container(ContainerConfig),
}

/// Read the worker's config from stdin.
///
/// # Errors
/// stdin is unreadable, too large or not a valid config.
pub fn read_config(kind: Kind) -> Result<WorkerConfig, String> {
    let mut buf = Vec::new();
    std::io::stdin()
        .take(MAX_CONFIG)
        .read_to_end(&mut buf)
        .map_err(|e| format!("cannot read the worker config from stdin: {e}"))?;
    match kind {
        Kind::Router => serde_json::from_slice(&buf)
            .map(WorkerConfig::Router)
            .map_err(|e| format!("the router config on stdin is invalid: {e}")),
        Kind::Container => serde_json::from_slice(&buf)
            .map(WorkerConfig::Container)
            .map_err(|e| format!("the container config on stdin is invalid: {e}")),
    }
}

/// Run a worker until shutdown.
///
/// # Errors
/// The router could not start (bind failure, ...), or the control link
/// could not be set up or was lost.
pub async fn run(
    kind: Kind,
    id: String,
    control_socket: &Path,
    config: WorkerConfig,
    level: LevelHandle,
    shutdown: CancellationToken,
) -> Result<(), String> {
    let started = Instant::now();
    let router_cfg = match config {
        WorkerConfig::Router(r) => Some(r),
        WorkerConfig::Container(c) => {
            container_worker::start(&c, &shutdown)?;
            None
        }
    };
    // The router as bound: with the private links of its Python
    // components and the realm of its function authenticators.
    let bound = router_cfg
        .as_ref()
        .map(container_worker::python::with_private_transports);
    let router = match &bound {
        Some(cfg) => Some(Router::bind(cfg).await.map_err(|e| e.to_string())?),
        None => None,
    };
    // Router components join their realms in memory before the worker
    // reports ready; their sessions live as long as the worker.
    let mut component_sessions = Vec::new();
    if let (Some(r), Some(cfg)) = (&router, &router_cfg) {
        for (j, c) in cfg
            .components
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.is_python())
        {
            let realm = r.realms().get(&c.realm).ok_or_else(|| {
                format!("components[{j}]: realm {:?} is not on this router", c.realm)
            })?;
            let authid = c.authid.clone().unwrap_or_else(|| c.classname.clone());
            let session = router_worker::local::attach(&realm, &authid, &c.role)
                .await
                .map_err(|e| format!("components[{j}] ({}): {e}", c.classname))?;
            container_worker::components::start_router_component(c, &session)
                .await
                .map_err(|e| format!("components[{j}] ({}): {e}", c.classname))?;
            info!(component = %c.classname, realm = %c.realm, role = %c.role, "router component started");
            component_sessions.push(session);
        }
    }
    let transports: Vec<control::Listening> = router
        .as_ref()
        .map(|r| {
            r.endpoints()
                .into_iter()
                .zip(r.transport_kinds())
                // The private sockets of Python router components are not
                // for guests or anyone else.
                .filter(|(listen, _)| !listen.contains(".trellis-"))
                .map(|(listen, kind)| control::Listening {
                    kind: kind.to_owned(),
                    listen,
                })
                .collect()
        })
        .unwrap_or_default();
    // Counters of the public transports, for the `stats` procedure.
    type Counted = (
        String,
        String,
        String,
        Arc<router_worker::session::TransportCounters>,
    );
    let counters: Vec<Counted> = router
        .as_ref()
        .map(|r| {
            r.endpoints()
                .into_iter()
                .zip(r.transport_kinds())
                .zip(r.transport_counters())
                .filter(|((listen, _), _)| !listen.contains(".trellis-"))
                .map(|((listen, kind), (name, c))| (name, kind.to_owned(), listen, c))
                .collect()
        })
        .unwrap_or_default();
    let tls_endpoints = router
        .as_ref()
        .map(router_worker::Router::tls_endpoints)
        .unwrap_or_default();
    let node_info = router.as_ref().map(router_worker::Router::node_info_hook);
    let backplane = router.as_ref().and_then(|r| r.backplane_stats());
    let token_stores: Vec<String> = router
        .as_ref()
        .map(|r| r.token_stores().iter().map(|k| (*k).to_owned()).collect())
        .unwrap_or_default();
    let realms = router.as_ref().map(|r| r.realms().clone());
    // Serve the private sockets now: Python router components join over
    // them before the public transports accept anyone, and before the
    // worker reports ready (as Crossbar.io starts router components before
    // transports).
    let (joined, components_joined) = tokio::sync::oneshot::channel::<()>();
    let serving = router.map(|r| {
        tokio::spawn(r.serve_gated(shutdown.clone(), async move {
            let _ = components_joined.await;
        }))
    });
    if let Some(cfg) = &router_cfg {
        container_worker::python::start_router_components(cfg, Duration::from_secs(30), &shutdown)
            .await?;
    }
    let _ = joined.send(());
    // As bound: with the router's internal realms, which a reload keeps.
    let realm_configs = Arc::new(tokio::sync::Mutex::new(
        bound.map(|c| c.realms).unwrap_or_default(),
    ));

    let mut cfg = ClientConfig::new(control::REALM);
    cfg.authid = Some(id.clone());
    let link = Client::connect_unix(control_socket, &cfg)
        .await
        .map_err(|e| {
            format!(
                "cannot join the controller's control link at {}: {e}",
                control_socket.display()
            )
        })?;
    // `nodeinfo` web pages: the controller's status document, as a page.
    if let Some(hook) = &node_info {
        let link = link.clone();
        hook.set(Arc::new(move || {
            let link = link.clone();
            Box::pin(async move {
                let p = link
                    .call(control::NODE_INFO, Payload::default())
                    .await
                    .ok()?;
                let text = p.kwargs.get("doc").and_then(Value::as_str)?;
                let doc: serde_json::Value = serde_json::from_str(text).ok()?;
                Some(crate::admin::status_html(&doc))
            })
        }));
    }
    let kind_name = match kind {
        Kind::Router => "router",
        Kind::Container => "container",
    };
    let pid = std::process::id();
    let status = {
        let realms = realms.clone();
        let id = id.clone();
        let transports = transports.clone();
        move |_: Payload, _: Dict| {
            let mut sessions = std::collections::BTreeMap::new();
            if let Some(realms) = &realms {
                for r in realms.all() {
                    if r.name.starts_with(INTERNAL_REALM_PREFIX) {
                        continue;
                    }
                    sessions.insert(r.name.to_string(), r.session_count() as u64);
                }
            }
            let kwargs = control::to_kwargs(&control::WorkerReport {
                id: id.clone(),
                kind: kind_name.to_owned(),
                pid,
                uptime_s: started.elapsed().as_secs(),
                sessions,
                transports: transports.clone(),
            });
            async move {
                Ok(Payload {
                    kwargs,
                    ..Payload::default()
                })
            }
        }
    };
    register(&link, &control::worker_procedure(&id, "status"), status).await?;
    if !tls_endpoints.is_empty() {
        // SIGHUP: the controller asks; certificates are read again.
        let tls_endpoints = Arc::new(tls_endpoints);
        register(
            &link,
            &control::worker_procedure(&id, "reload_tls"),
            move |_: Payload, _: Dict| {
                let endpoints = tls_endpoints.clone();
                async move {
                    let mut failed = Vec::new();
                    for (i, tls, cfg) in endpoints.iter() {
                        match tls.reload(cfg, &format!("transports[{i}].endpoint.tls")) {
                            Ok(()) => info!(transport = i, "TLS certificate and key read again"),
                            Err((path, message)) => {
                                warn!("{path}: {message}: the old certificate stays in use");
                                failed.push(Value::from(format!("{path}: {message}")));
                            }
                        }
                    }
                    Ok(Payload::args(failed))
                }
            },
        )
        .await?;
    }
    let stats_realms = realms.clone();
    register(
        &link,
        &control::worker_procedure(&id, "stats"),
        move |_: Payload, _: Dict| {
            let realms = stats_realms.clone();
            let counters = counters.clone();
            let token_stores = token_stores.clone();
            let backplane = backplane.clone();
            async move {
                let mut out = control::WorkerStats {
                    backplane: backplane.as_deref().map(control::BackplaneReport::of),
                    components: container_worker::python::component_states()
                        .into_iter()
                        .map(|(name, state)| control::ComponentStatus { name, state })
                        .collect(),
                    ..Default::default()
                };
                if !token_stores.is_empty() {
                    out.token_store = Some(control::TokenStoreStats {
                        kinds: token_stores,
                        operations: router_worker::tokens::OPS.snapshot(),
                    });
                }
                for r in realms.iter().flat_map(|t| t.all()) {
                    if r.name.starts_with(INTERNAL_REALM_PREFIX) {
                        continue;
                    }
                    if let Ok(s) = r.stats().await {
                        out.realms.insert(r.name.to_string(), s);
                    }
                }
                use std::sync::atomic::Ordering::Relaxed;
                out.transports = counters
                    .iter()
                    .map(|(name, kind, listen, c)| control::TransportStats {
                        name: name.clone(),
                        kind: kind.clone(),
                        listen: listen.clone(),
                        open: c.open.load(Relaxed),
                        parked: c.parked.load(Relaxed),
                        accepted: c.accepted.load(Relaxed),
                        refused: c.refused.load(Relaxed),
                        auth_ok: c.auth_ok.load(Relaxed),
                        auth_failed: c.auth_failed.load(Relaxed),
                        logins: c.logins_by_method(),
                        authenticator_duration: c.authenticator.snapshot(),
                        bytes_received: c.bytes_received.load(Relaxed),
                        bytes_sent: c.bytes_sent.load(Relaxed),
                        too_large: c.too_large.load(Relaxed),
                        mqtt_dropped: c.mqtt_dropped.load(Relaxed),
                    })
                    .collect();
                Ok(Payload {
                    kwargs: control::to_kwargs(&out),
                    ..Payload::default()
                })
            }
        },
    )
    .await?;
    // The controller's liveness check: answered once every realm's actor
    // has got to it, so a stuck realm is as silent as a stopped process.
    let ping_realms = realms.clone();
    register(
        &link,
        &control::worker_procedure(&id, "ping"),
        move |_: Payload, _: Dict| {
            let realms = ping_realms.clone();
            async move {
                if let Some(realms) = realms {
                    let all: Vec<_> = realms.all();
                    for r in all {
                        r.ping().await.map_err(|_| {
                            CallError::new("trellis.error.stopping", "a realm has stopped")
                        })?;
                    }
                }
                Ok(Payload::default())
            }
        },
    )
    .await?;
    let stop = shutdown.clone();
    register(
        &link,
        &control::worker_procedure(&id, "shutdown"),
        move |_, _| {
            let stop = stop.clone();
            async move {
                info!("shutdown requested over the control link");
                stop.cancel();
                Ok(Payload::default())
            }
        },
    )
    .await?;
    if let Some(table) = realms.clone() {
        let current = realm_configs.clone();
        register(
            &link,
            &control::worker_procedure(&id, "reconfigure"),
            move |p: Payload, _| {
                let table = table.clone();
                let current = current.clone();
                async move {
                    let mut new: Vec<RealmConfig> = p
                        .args
                        .first()
                        .and_then(Value::as_str)
                        .map(serde_json::from_str)
                        .transpose()
                        .map_err(|e| {
                            CallError::new(
                                "wamp.error.invalid_argument",
                                format!("the realms must be a JSON string of realms[]: {e}"),
                            )
                        })?
                        .ok_or_else(|| {
                            CallError::new(
                                "wamp.error.invalid_argument",
                                "expected one argument: the new realms[] as a JSON string",
                            )
                        })?;
                    // One reconfiguration at a time; the lock is held
                    // across the realms' updates on purpose.
                    let mut old = current.lock().await;
                    new.extend(
                        old.iter()
                            .filter(|r| r.name.starts_with(INTERNAL_REALM_PREFIX))
                            .cloned(),
                    );
                    let changes = table
                        .apply(&old, &new)
                        .await
                        .map_err(|e| CallError::new("trellis.error.restart_required", e))?;
                    *old = new;
                    for c in &changes {
                        info!("config reload: {c}");
                    }
                    Ok(Payload::args(
                        changes.into_iter().map(Value::from).collect(),
                    ))
                }
            },
        )
        .await?;
    }
    let level = Arc::new(level);
    register(
        &link,
        &control::worker_procedure(&id, "set_loglevel"),
        move |p: Payload, _| {
            let level = level.clone();
            async move {
                let Some(spec) = p.args.first().and_then(Value::as_str) else {
                    return Err(CallError::new(
                        "wamp.error.invalid_argument",
                        "expected one string argument: the log level (error, warn, info, debug, trace) or a filter",
                    ));
                };
                level
                    .set(spec)
                    .map_err(|e| CallError::new("wamp.error.invalid_argument", e))?;
                info!(level = spec, "log level changed");
                Ok(Payload::default())
            }
        },
    )
    .await?;
    link.publish(
        control::ON_READY,
        Payload {
            kwargs: control::to_kwargs(&control::ReadyReport {
                id: id.clone(),
                kind: kind_name.to_owned(),
                pid,
                transports,
            }),
            ..Payload::default()
        },
    )
    .await
    .map_err(|e| format!("cannot report ready to the controller: {e}"))?;
    info!(
        worker = %id,
        startup_ms = started.elapsed().as_millis() as u64,
        threads = tokio::runtime::Handle::current().metrics().num_workers(),
        "{kind_name} worker ready"
    );

    let lost = CancellationToken::new();
    {
        let link = link.clone();
        let lost = lost.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let reason = link.closed().await;
            if !shutdown.is_cancelled() {
                error!(reason, "control link to the controller lost: stopping");
                lost.cancel();
                shutdown.cancel();
            }
        });
    }
    match serving {
        Some(task) => {
            let _ = task.await;
        }
        None => shutdown.cancelled().await,
    }
    drop(component_sessions);
    link.leave().await;
    if lost.is_cancelled() {
        return Err("the control link to the controller was lost".into());
    }
    info!("{kind_name} worker stopped");
    Ok(())
}

/// Register a management procedure; a registration left by this worker's
/// previous (killed) process may linger for a moment, so retry briefly.
async fn register<F, Fut>(link: &Client, uri: &str, handler: F) -> Result<(), String>
where
    F: Fn(Payload, Dict) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<Payload, CallError>> + Send + 'static,
{
    let mut tries = 0;
    loop {
        match link.register(uri, handler.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if e.uri == "wamp.error.procedure_already_exists" && tries < 40 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(format!("cannot register {uri} on the control link: {e}")),
        }
    }
}

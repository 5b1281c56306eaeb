//! `trellis start`: the controller's shell around [`crate::lifecycle`].
//!
//! It opens the control socket, then runs one loop that turns what happens
//! (signals, SIGHUP, worker exits and ready reports, ping answers, timers,
//! `trellis stop`) into [`Event`]s for the node's [`Lifecycle`], and carries
//! out the [`Action`]s it answers with: spawn a worker, signal a process
//! group, ping, publish an exit, tell systemd. The lifecycle decides
//! everything (routers first, then the rest; restarts as
//! [`crate::supervisor`] decides; reloads; a stop that signals every
//! worker's process group, waits `controller.options.shutdown_timeout` and
//! kills what is left, so no process of the node survives it); this file
//! only does what it is told.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use client::{CallError, Client};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use proto::{Payload, Value, dict};
use router_worker::Router;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::control;
use crate::lifecycle::{Action, Event, Lifecycle, NodeFailure, Notify, Sig};
use crate::logging::LogFormat;
use crate::logs;
use crate::spawn::{self, RouterAddress};
use crate::supervisor::Exit;
use crate::systemd;
use trellis_config::node::{self as config, NodeConfig, WorkerSpec};

/// How the controller was started.
#[derive(Debug, Clone)]
pub struct Options {
    /// The node directory (created if missing).
    pub node_dir: PathBuf,
    /// The node directory as given, made absolute without resolving
    /// symlinks: the config's relative paths resolve against it (also on
    /// SIGHUP), as Crossbar.io resolves them against `--cbdir`.
    pub paths_base: PathBuf,
    /// The config file, re-read on SIGHUP (`None`: the embedded default).
    pub config_path: Option<PathBuf>,
    /// `--log-format`, passed on to workers.
    pub log_format: LogFormat,
    /// The controller's log filter, the default for workers.
    pub log_spec: String,
}

/// Why `trellis start` ends with a non-zero status.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The node directory cannot be created or resolved.
    #[error("cannot {what} the node directory {path}: {cause}")]
    NodeDir {
        what: &'static str,
        path: String,
        cause: std::io::Error,
    },
    /// The control socket cannot be opened (another node runs there?).
    #[error("cannot open the control socket {path}: {cause}")]
    ControlSocket { path: String, cause: String },
    /// The controller cannot join or set up its own control realm.
    #[error("{0}")]
    ControlLink(String),
    /// The admin listener cannot listen.
    #[error("cannot open the admin listener (controller.admin.endpoint) on {addr}: {cause}")]
    Admin { addr: String, cause: std::io::Error },
    /// The executable to start workers with cannot be found.
    #[error("cannot find the trellis executable to start workers: {0}")]
    Exe(std::io::Error),
    /// The node ran and failed (a start, a router).
    #[error(transparent)]
    Failed(#[from] NodeFailure),
}

/// What reaches the controller's loop from its tasks and the control realm.
pub(crate) enum Input {
    /// Something that happened to the node.
    Life(Event),
    /// `trellis status`: the workers' rows.
    Status(oneshot::Sender<Vec<control::WorkerStatus>>),
}

/// Bounded: workers report rarely; a full queue only delays reports.
const EVENT_QUEUE: usize = 1024;

/// Carries out the lifecycle's actions.
struct Shell {
    opts: Options,
    ctx: spawn::Context,
    life: Lifecycle,
    /// Each worker's log, opened at its first spawn.
    sinks: HashMap<String, logs::Sink>,
    router: RouterAddress,
    events_tx: mpsc::Sender<Input>,
    link: Client,
    /// Stops the systemd watchdog pings.
    watchdog: CancellationToken,
    /// When the lifecycle wants [`Event::Wake`].
    wake: Option<Instant>,
    /// Every worker started: SIGHUP and pings are handled from now on.
    started: bool,
    started_at: Instant,
}

/// Run the node until `shutdown` (a signal) or `trellis stop`; SIGHUP
/// arrives on `reload`.
///
/// # Errors
/// The control socket cannot be opened (another node runs in the
/// directory), or a worker fails to start, or a router failed for good;
/// everything started is stopped before returning.
pub async fn run(
    cfg: NodeConfig,
    opts: Options,
    shutdown: CancellationToken,
    mut reload: mpsc::Receiver<()>,
) -> Result<(), NodeError> {
    let started_at = Instant::now();
    let dir_error = |what, cause| NodeError::NodeDir {
        what,
        path: opts.node_dir.display().to_string(),
        cause,
    };
    std::fs::create_dir_all(&opts.node_dir).map_err(|e| dir_error("create", e))?;
    let node_dir = opts
        .node_dir
        .canonicalize()
        .map_err(|e| dir_error("resolve", e))?;
    let opts = Options { node_dir, ..opts };
    let socket = control::socket_path(&opts.node_dir);
    let caps = crate::fds::plan(
        cfg.workers.len(),
        cfg.controller.admin.as_ref().map(|a| a.max_connections),
    );
    let mut control_cfg = control::router_config(&socket);
    for t in &mut control_cfg.transports {
        t.options.max_connections = caps.control;
    }
    let control_router =
        Router::bind(&control_cfg)
            .await
            .map_err(|e| NodeError::ControlSocket {
                path: socket.display().to_string(),
                cause: match e {
                    router_worker::RouterError::Bind { cause, .. } => cause.to_string(),
                    other => other.to_string(),
                },
            })?;
    let control_stop = CancellationToken::new();
    let control_task = tokio::spawn(control_router.serve(control_stop.clone()));
    let link = control::connect(&opts.node_dir, "controller")
        .await
        .map_err(NodeError::ControlLink)?;
    let (events_tx, mut events) = mpsc::channel(EVENT_QUEUE);
    // SIGTERM turns `/readyz` to 503 for `drain_grace` before the node stops.
    let draining = Arc::new(AtomicBool::new(false));
    register_node_api(&link, &events_tx, started_at, &draining)
        .await
        .map_err(NodeError::ControlLink)?;

    let admin_stop = CancellationToken::new();
    let drain_grace = match &cfg.controller.admin {
        Some(a) => {
            let listener = crate::admin::bind(a)
                .await
                .map_err(|cause| NodeError::Admin {
                    addr: format!("{}:{}", a.endpoint.interface, a.endpoint.port),
                    cause,
                })?;
            let state = Arc::new(crate::admin::AdminState {
                events: events_tx.clone(),
                link: link.clone(),
                draining: draining.clone(),
                token: a.token.clone(),
                started: started_at,
                require_backplane: cfg.cluster.as_ref().is_some_and(|c| c.require_backplane),
                counters: Arc::default(),
            });
            let limits = crate::admin::AdminLimits {
                max_connections: caps.admin,
                head_timeout: Duration::from_secs_f64(a.request_head_timeout),
            };
            tokio::spawn(crate::admin::serve(
                listener,
                state,
                limits,
                admin_stop.clone(),
            ));
            Duration::from_secs_f64(cfg.controller.drain_grace)
        }
        None => Duration::ZERO,
    };
    let mut drain_until: Option<Instant> = None;

    let exe = std::env::current_exe().map_err(NodeError::Exe)?;
    let ctx = spawn::Context {
        exe,
        node_dir: opts.node_dir.clone(),
        control_socket: socket.clone(),
        log_format: opts.log_format,
        log_spec: opts.log_spec.clone(),
        guest_grace: cfg.controller.shutdown_timeout,
    };
    info!(
        config = %cfg.source,
        node_dir = %opts.node_dir.display(),
        workers = cfg.workers.len(),
        "starting the node"
    );
    let ping_interval = Duration::from_secs_f64(cfg.controller.worker_ping_interval);
    let mut shell = Shell {
        life: Lifecycle::new(cfg.controller.clone(), cfg.workers, Instant::now()),
        opts,
        ctx,
        sinks: HashMap::new(),
        router: RouterAddress::default(),
        events_tx,
        link,
        watchdog: CancellationToken::new(),
        wake: None,
        started: false,
        started_at,
    };

    let mut watches = crate::watch::start(&shell.life.specs());
    let mut debounce = crate::watch::Debounce::default();
    let mut pings = tokio::time::interval(ping_interval);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop_sent = false;
    let mut outcome = shell.feed(Event::Start).await;
    while outcome.is_none() {
        let wake = shell.wake;
        let ev = tokio::select! {
            _ = shutdown.cancelled(), if !stop_sent && drain_until.is_none() => {
                if drain_grace.is_zero() {
                    stop_sent = true;
                    Event::Stop
                } else {
                    draining.store(true, Ordering::Relaxed);
                    info!(grace_s = drain_grace.as_secs_f64(), "draining: /readyz says 503 until the node stops (controller.options.drain_grace)");
                    drain_until = Some(Instant::now() + drain_grace);
                    continue;
                }
            }
            _ = tokio::time::sleep_until(drain_until.unwrap_or_else(Instant::now).into()), if drain_until.is_some() && !stop_sent => {
                stop_sent = true;
                Event::Stop
            }
            r = reload.recv(), if shell.started => match r {
                Some(()) => shell.reread_config(),
                None => continue,
            },
            _ = pings.tick(), if shell.started => Event::PingTick,
            Some(c) = watches.changes.recv() => {
                debounce.changed(c, Instant::now());
                continue;
            }
            _ = tokio::time::sleep_until(debounce.next().unwrap_or_else(Instant::now).into()), if debounce.next().is_some() => {
                match debounce.take_due(Instant::now()) {
                    Some(c) => Event::Watched { id: c.id, path: c.path.display().to_string() },
                    None => continue,
                }
            }
            _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now).into()), if wake.is_some() => {
                shell.wake = None;
                Event::Wake
            }
            input = events.recv() => match input {
                Some(Input::Life(ev)) => ev,
                Some(Input::Status(reply)) => {
                    let _ = reply.send(shell.status_rows());
                    continue;
                }
                None => Event::Stop,
            },
        };
        outcome = shell.feed(ev).await;
    }
    shell.watchdog.cancel();
    admin_stop.cancel();
    shell.link.leave().await;
    control_stop.cancel();
    let _ = control_task.await;
    info!("node stopped");
    match outcome {
        Some(Err(failure)) => Err(NodeError::Failed(failure)),
        _ => Ok(()),
    }
}

/// The workers' rows from the controller's loop, for a control procedure.
async fn status_rows(tx: &mpsc::Sender<Input>) -> Result<Vec<control::WorkerStatus>, CallError> {
    let stopping = || CallError::new("trellis.error.stopping", "the node is stopping");
    let (reply, rx) = oneshot::channel();
    tx.send(Input::Status(reply))
        .await
        .map_err(|_| stopping())?;
    rx.await.map_err(|_| stopping())
}

/// The controller's procedures on the control realm, and its subscription
/// to workers' ready reports.
async fn register_node_api(
    link: &Client,
    events: &mpsc::Sender<Input>,
    started: Instant,
    draining: &Arc<AtomicBool>,
) -> Result<(), String> {
    let tx = events.clone();
    link.subscribe(control::ON_READY, move |p: Payload, _| {
        let report: control::ReadyReport = match control::from_kwargs(&p.kwargs) {
            Ok(r) => r,
            Err(e) => {
                warn!("ignoring a malformed worker ready report on the control link: {e}");
                return;
            }
        };
        let id = report.id.clone();
        let ev = Input::Life(Event::Ready {
            id: report.id,
            pid: report.pid,
            transports: report
                .transports
                .into_iter()
                .map(|t| (t.kind, t.listen))
                .collect(),
        });
        if tx.try_send(ev).is_err() {
            warn!(worker = %id, "controller busy: a ready report was dropped");
        }
    })
    .await
    .map_err(|e| format!("cannot subscribe to {}: {e}", control::ON_READY))?;

    let tx = events.clone();
    link.register(control::NODE_STOP, move |_, _| {
        let tx = tx.clone();
        async move {
            info!("stop requested over the control socket (trellis stop)");
            tx.send(Input::Life(Event::Stop))
                .await
                .map_err(|_| CallError::new("trellis.error.stopping", "the node is stopping"))?;
            Ok(Payload::default())
        }
    })
    .await
    .map_err(|e| format!("cannot register {}: {e}", control::NODE_STOP))?;

    let tx = events.clone();
    let me = link.clone();
    link.register(control::NODE_STATUS, move |_, _| {
        let tx = tx.clone();
        let link = me.clone();
        async move {
            let mut rows = status_rows(&tx).await?;
            // Ask each running router for its sessions, concurrently and
            // briefly; a router that does not answer is shown without.
            let asks = rows.iter().map(|row| {
                let link = link.clone();
                let ask = row.kind == "router" && row.state == "running";
                let id = row.id.clone();
                async move {
                    if !ask {
                        return None;
                    }
                    let uri = control::worker_procedure(&id, "status");
                    let call = link.call(&uri, Payload::default());
                    match tokio::time::timeout(Duration::from_secs(2), call).await {
                        Ok(Ok(p)) => control::from_kwargs::<control::WorkerReport>(&p.kwargs).ok(),
                        _ => None,
                    }
                }
            });
            let reports = futures::future::join_all(asks).await;
            for (row, r) in rows.iter_mut().zip(reports) {
                if let Some(r) = r {
                    row.sessions = Some(r.sessions);
                    row.transports = Some(r.transports);
                }
            }
            let workers: Vec<Value> = rows
                .iter()
                .map(|r| Value::Dict(control::to_kwargs(r)))
                .collect();
            Ok(Payload {
                kwargs: dict! { "workers" => workers },
                ..Payload::default()
            })
        }
    })
    .await
    .map_err(|e| format!("cannot register {}: {e}", control::NODE_STATUS))?;

    let tx = events.clone();
    let me = link.clone();
    link.register(control::NODE_STATS, move |_, _| {
        let tx = tx.clone();
        let link = me.clone();
        async move {
            let rows = status_rows(&tx).await?;
            let mut workers = proto::Dict::new();
            for (id, stats) in crate::admin::gather(&link, &rows).await {
                if let Some(st) = stats {
                    workers.insert(id, Value::Dict(control::to_kwargs(&st)));
                }
            }
            Ok(Payload {
                kwargs: dict! { "workers" => workers },
                ..Payload::default()
            })
        }
    })
    .await
    .map_err(|e| format!("cannot register {}: {e}", control::NODE_STATS))?;

    let tx = events.clone();
    let me = link.clone();
    let draining = draining.clone();
    link.register(control::NODE_INFO, move |_, _| {
        let tx = tx.clone();
        let link = me.clone();
        let draining = draining.load(Ordering::Relaxed);
        async move {
            let rows = status_rows(&tx).await?;
            let stats = crate::admin::gather(&link, &rows).await;
            let doc = crate::admin::status_json(&rows, &stats, started, draining);
            Ok(Payload {
                kwargs: dict! { "doc" => doc.to_string() },
                ..Payload::default()
            })
        }
    })
    .await
    .map_err(|e| format!("cannot register {}: {e}", control::NODE_INFO))?;
    Ok(())
}

impl Shell {
    /// SIGHUP: re-read the config for the lifecycle to apply.
    fn reread_config(&self) -> Event {
        info!("SIGHUP: re-reading the config");
        // TLS certificates are read again by every running router (which
        // has TLS endpoints), whatever the config says.
        for s in self.life.slots() {
            if s.spec.kind.name() != "router" || s.state.name() != "running" {
                continue;
            }
            let link = self.link.clone();
            let uri = control::worker_procedure(&s.spec.id, "reload_tls");
            tokio::spawn(async move {
                let call = link.call(&uri, Payload::default());
                if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(5), call).await
                    && e.uri != "wamp.error.no_such_procedure"
                {
                    warn!(procedure = %uri, "TLS reload failed: {e}");
                }
            });
        }
        match config::load(self.opts.config_path.as_deref()) {
            Ok(mut c) => {
                c.resolve_paths(&self.opts.paths_base);
                Event::Reload(Ok(c.workers), Box::new(c.controller))
            }
            Err(e) => Event::Reload(Err(e.to_string()), Box::new(self.life.options().clone())),
        }
    }

    /// Feed one event and carry out what the lifecycle asks, feeding the
    /// answers (a spawn's result, a reconfiguration's) back at once.
    /// `Some` when the node is done.
    async fn feed(&mut self, ev: Event) -> Option<Result<(), NodeFailure>> {
        let mut queue = VecDeque::from([ev]);
        while let Some(ev) = queue.pop_front() {
            for action in self.life.on_event(ev, Instant::now()) {
                match action {
                    Action::Done(result) => return Some(result),
                    other => {
                        if let Some(answer) = self.carry_out(other).await {
                            queue.push_back(answer);
                        }
                    }
                }
            }
        }
        None
    }

    async fn carry_out(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::Spawn { id, generation } => return Some(self.spawn(id, generation).await),
            Action::Signal { pid, sig } => signal_group(
                pid,
                match sig {
                    Sig::Term => Signal::SIGTERM,
                    Sig::Kill => Signal::SIGKILL,
                },
            ),
            Action::RestartAfter {
                id,
                generation,
                delay,
            } => {
                let tx = self.events_tx.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx
                        .send(Input::Life(Event::RestartDue { id, generation }))
                        .await;
                });
            }
            Action::Ping { id, generation } => {
                let interval = Duration::from_secs_f64(self.life.options().worker_ping_interval);
                let (link, tx) = (self.link.clone(), self.events_tx.clone());
                tokio::spawn(async move {
                    let uri = control::worker_procedure(&id, "ping");
                    let call = link.call(&uri, Payload::default());
                    if let Ok(Ok(_)) = tokio::time::timeout(interval, call).await {
                        let _ = tx.try_send(Input::Life(Event::Alive { id, generation }));
                    }
                });
            }
            Action::PublishExit(report) => {
                let kwargs = control::to_kwargs(&report);
                let link = self.link.clone();
                tokio::spawn(async move {
                    let _ = link
                        .publish(
                            control::ON_EXIT,
                            Payload {
                                kwargs,
                                ..Payload::default()
                            },
                        )
                        .await;
                });
            }
            Action::RouterAt { transports, realm } => {
                self.router = RouterAddress::from_transports(&transports, realm);
            }
            Action::WakeAt(t) => self.wake = Some(t),
            Action::Notify(n) => match n {
                Notify::Ready(status) => systemd::ready(&status),
                Notify::Reloading => systemd::reloading(),
                Notify::Stopping => systemd::stopping(),
                Notify::Status(text) => systemd::status(&text),
            },
            Action::StopWatchdog => self.watchdog.cancel(),
            Action::Started => {
                let ms = self.started_at.elapsed().as_millis() as u64;
                info!(startup_ms = ms, "node ready: every worker is up");
                systemd::spawn_watchdog(self.watchdog.clone());
                self.started = true;
            }
            Action::Reconfigure { id, spec } => {
                let ok = self.reconfigure_in_place(&spec).await;
                return Some(Event::Reconfigured { id, spec, ok });
            }
            Action::Done(_) => {}
        }
        None
    }

    /// Start worker `id`'s process; its exit comes back as an event.
    async fn spawn(&mut self, id: String, generation: u64) -> Event {
        let Some(spec) = self.life.slot(&id).map(|s| s.spec.clone()) else {
            return Event::SpawnFailed {
                id,
                generation,
                error: "no such worker".into(),
            };
        };
        if !self.sinks.contains_key(&id) {
            let sink = self.open_sink(&spec);
            self.sinks.insert(id.clone(), sink);
        }
        let Some(sink) = self.sinks.get(&id) else {
            return Event::SpawnFailed {
                id,
                generation,
                error: "no log sink".into(),
            };
        };
        match spawn::spawn(&spec, &self.ctx, &self.router, sink).await {
            Ok(mut child) => {
                let pid = child.id().unwrap_or(0);
                let tx = self.events_tx.clone();
                let who = id.clone();
                tokio::spawn(async move {
                    let exit = match child.wait().await {
                        Ok(s) => Exit::from_status(s),
                        Err(_) => Exit::Code(-1),
                    };
                    let _ = tx
                        .send(Input::Life(Event::Exited {
                            id: who,
                            generation,
                            exit,
                        }))
                        .await;
                });
                Event::Spawned {
                    id,
                    generation,
                    pid,
                }
            }
            Err(e) => Event::SpawnFailed {
                id,
                generation,
                error: e.to_string(),
            },
        }
    }

    fn open_sink(&self, spec: &WorkerSpec) -> logs::Sink {
        let dir = logs::dir(&self.opts.node_dir);
        let o = self.life.options();
        let file = match logs::LogFile::open(&dir, &spec.id, o.log_max_size, o.log_keep) {
            Ok(f) => Some(f),
            Err(e) => {
                warn!(worker = %spec.id, cause = %e, dir = %dir.display(), "cannot open the worker's log file; its output goes to stderr only");
                None
            }
        };
        logs::Sink::new(&spec.id, file, self.opts.log_format)
    }

    fn status_rows(&self) -> Vec<control::WorkerStatus> {
        self.life
            .slots()
            .iter()
            .map(|s| control::WorkerStatus {
                id: s.spec.id.clone(),
                kind: s.spec.kind.name().to_owned(),
                state: s.state.name().to_owned(),
                restarts: s.restarts(),
                pid: s.pid,
                memory_bytes: s.pid.and_then(control::rss_bytes),
                uptime_s: s.pid.and(s.spawned).map(|t| t.elapsed().as_secs()),
                last_exit: s.last_exit.clone(),
                sessions: None,
                transports: None,
            })
            .collect()
    }

    /// Ask a running router to take new realms, roles and permissions in
    /// place, keeping its sessions. False if it refused or did not answer
    /// (then it is restarted instead).
    async fn reconfigure_in_place(&self, new: &WorkerSpec) -> bool {
        let config::WorkerKind::Router(next) = &new.kind else {
            return false;
        };
        let Ok(realms) = serde_json::to_string(&next.realms) else {
            return false;
        };
        let uri = control::worker_procedure(&new.id, "reconfigure");
        let call = self
            .link
            .call(&uri, Payload::args(vec![Value::from(realms)]));
        match tokio::time::timeout(Duration::from_secs(5), call).await {
            Ok(Ok(changes)) => {
                let changes: Vec<&str> = changes.args.iter().filter_map(Value::as_str).collect();
                info!(worker = %new.id, changes = %changes.join("; "), "realms changed in place; sessions kept");
                true
            }
            Ok(Err(e)) => {
                info!(worker = %new.id, "cannot change in place ({e}): restarting it");
                false
            }
            Err(_) => {
                warn!(worker = %new.id, "no answer to {uri} within 5 s: restarting it");
                false
            }
        }
    }
}

/// Signal a worker's whole process group (it leads its own group).
fn signal_group(pid: u32, sig: Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if let Err(e) = killpg(Pid::from_raw(raw), sig)
        && e != nix::errno::Errno::ESRCH
    {
        warn!(pid, signal = sig.as_str(), cause = %e, "cannot signal a worker");
    }
}

//! `trellis start`: the controller.
//!
//! It opens the control socket, starts the router workers and waits until
//! each reports ready over its control link, then starts container and
//! guest workers, then tells systemd it is ready. From then on one loop
//! owns every worker's state: exits are restarted as
//! [`crate::supervisor`] decides, `trellis status` and `trellis stop` are
//! answered, SIGHUP re-reads the config. A stop signals every worker's
//! process group, waits `controller.options.shutdown_timeout`, and kills
//! what is left, so no process of the node survives it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use client::{CallError, Client};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use proto::{Dict, Payload, Value, dict};
use router_worker::Router;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{self, ControllerOptions, NodeConfig, RouterFailure, WorkerKind, WorkerSpec};
use crate::control;
use crate::logging::LogFormat;
use crate::logs;
use crate::spawn::{self, RouterAddress};
use crate::supervisor::{Decision, Exit, Health, Liveness, Supervision};
use crate::systemd;

/// How the controller was started.
#[derive(Debug, Clone)]
pub struct Options {
    /// The node directory (created if missing).
    pub node_dir: PathBuf,
    /// The config file, re-read on SIGHUP (`None`: the embedded default).
    pub config_path: Option<PathBuf>,
    /// `--log-format`, passed on to workers.
    pub log_format: LogFormat,
    /// The controller's log filter, the default for workers.
    pub log_spec: String,
}

/// A worker's state, as `trellis status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Spawned, not yet ready.
    Starting,
    /// Ready (guests: spawned).
    Running,
    /// Exited; waiting to be restarted.
    Backoff,
    /// Asked to stop.
    Stopping,
    /// Exited and left stopped by its policy.
    Stopped,
    /// Restarted too often; given up.
    Failed,
    /// Running, but not answering the controller's pings.
    Unresponsive,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Backoff => "restarting",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Failed => "failed",
            State::Unresponsive => "unresponsive",
        }
    }
}

/// What a reload wants done once a worker has exited.
#[derive(Debug, Clone)]
enum Replace {
    /// Start it again with this spec.
    With(Box<WorkerSpec>),
    /// It was removed from the config.
    Remove,
}

struct Slot {
    spec: WorkerSpec,
    state: State,
    pid: Option<u32>,
    /// Bumped at every spawn, so events of an earlier process are ignored.
    generation: u64,
    /// When the current process was spawned.
    spawned: Option<Instant>,
    sup: Supervision,
    last_exit: Option<String>,
    sink: logs::Sink,
    replace: Option<Replace>,
    /// Answers to the controller's pings (routers and containers).
    live: Liveness,
    /// Why the controller killed the current process, for its exit line.
    killed_because: Option<String>,
}

enum Event {
    Ready {
        id: String,
        pid: u32,
        transports: Vec<(String, String)>,
    },
    Exited {
        id: String,
        generation: u64,
        exit: Exit,
    },
    SpawnFailed {
        id: String,
        generation: u64,
        error: String,
    },
    RestartDue {
        id: String,
        generation: u64,
    },
    /// A worker answered a ping.
    Alive {
        id: String,
        generation: u64,
    },
    Stop,
    Status(oneshot::Sender<Vec<Dict>>),
}

/// Why the start did not end with every worker ready.
#[derive(Debug, thiserror::Error)]
enum StartError {
    /// Asked to stop (a signal or `trellis stop`) while starting: a clean
    /// stop, not a failure.
    #[error("asked to stop while starting: stopping")]
    Stopped,
    /// A worker failed to start or was not ready in time.
    #[error("{0}")]
    Failed(String),
}

/// Bounded: workers report rarely; a full queue only delays reports.
const EVENT_QUEUE: usize = 1024;

struct Node {
    opts: Options,
    controller: ControllerOptions,
    ctx: spawn::Context,
    slots: Vec<Slot>,
    router: RouterAddress,
    events_tx: mpsc::Sender<Event>,
    events: mpsc::Receiver<Event>,
    link: Client,
    /// Stops the systemd watchdog pings.
    watchdog: CancellationToken,
    /// A router worker failed for good: why (the node exits non-zero).
    fatal: Option<String>,
}

/// Run the node until `shutdown` (a signal) or `trellis stop`; SIGHUP
/// arrives on `reload`.
///
/// # Errors
/// The control socket cannot be opened (another node runs in the
/// directory), or a worker fails to start; everything started is stopped
/// before returning.
pub async fn run(
    cfg: NodeConfig,
    opts: Options,
    shutdown: CancellationToken,
    mut reload: mpsc::Receiver<()>,
) -> Result<(), String> {
    let started = Instant::now();
    std::fs::create_dir_all(&opts.node_dir).map_err(|e| {
        format!(
            "cannot create the node directory {}: {e}",
            opts.node_dir.display()
        )
    })?;
    let node_dir = opts.node_dir.canonicalize().map_err(|e| {
        format!(
            "cannot resolve the node directory {}: {e}",
            opts.node_dir.display()
        )
    })?;
    let opts = Options { node_dir, ..opts };
    let socket = control::socket_path(&opts.node_dir);
    let control_router = Router::bind(&control::router_config(&socket))
        .await
        .map_err(|e| match e {
            router_worker::RouterError::Bind { cause, .. } => format!(
                "cannot open the control socket {}: {cause}",
                socket.display()
            ),
            other => other.to_string(),
        })?;
    let control_stop = CancellationToken::new();
    let control_task = tokio::spawn(control_router.serve(control_stop.clone()));
    let link = control::connect(&opts.node_dir, "controller").await?;
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    register_node_api(&link, &events_tx).await?;

    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find the trellis executable to start workers: {e}"))?;
    let ctx = spawn::Context {
        exe,
        node_dir: opts.node_dir.clone(),
        control_socket: socket.clone(),
        log_format: opts.log_format,
        log_spec: opts.log_spec.clone(),
        guest_grace: cfg.controller.shutdown_timeout,
    };
    let mut node = Node {
        controller: cfg.controller.clone(),
        ctx,
        slots: Vec::new(),
        router: RouterAddress::default(),
        events_tx,
        events,
        link,
        opts,
        watchdog: CancellationToken::new(),
        fatal: None,
    };
    for spec in cfg.workers {
        let slot = node.new_slot(spec);
        node.slots.push(slot);
    }
    info!(
        config = %cfg.source,
        node_dir = %node.opts.node_dir.display(),
        workers = node.slots.len(),
        "starting the node"
    );

    let mut result = Ok(());
    match node.start_all(&shutdown).await {
        Ok(()) => {
            let ms = started.elapsed().as_millis() as u64;
            info!(startup_ms = ms, "node ready: every worker is up");
            systemd::ready(&format!("{} workers running", node.slots.len()));
            systemd::spawn_watchdog(node.watchdog.clone());
            node.supervise(&shutdown, &mut reload).await;
            node.watchdog.cancel();
            if let Some(why) = node.fatal.take() {
                result = Err(why);
            }
        }
        Err(e @ StartError::Stopped) => info!("{e}"),
        Err(StartError::Failed(e)) => {
            error!("node start failed: {e}");
            result = Err(e);
        }
    }
    systemd::stopping();
    node.stop_all().await;
    node.link.leave().await;
    control_stop.cancel();
    let _ = control_task.await;
    info!("node stopped");
    result
}

/// The controller's procedures on the control realm, and its subscription
/// to workers' ready reports.
async fn register_node_api(link: &Client, events: &mpsc::Sender<Event>) -> Result<(), String> {
    let tx = events.clone();
    link.subscribe(control::ON_READY, move |p: Payload, _| {
        let get = |k: &str| p.kwargs.get(k);
        let (Some(id), Some(pid)) = (
            get("id").and_then(Value::as_str),
            get("pid").and_then(Value::as_u64),
        ) else {
            warn!("ignoring a malformed worker ready report on the control link");
            return;
        };
        let transports = get("transports")
            .and_then(Value::as_list)
            .unwrap_or_default()
            .iter()
            .filter_map(|t| {
                let d = t.as_dict()?;
                Some((
                    d.get("type")?.as_str()?.to_owned(),
                    d.get("listen")?.as_str()?.to_owned(),
                ))
            })
            .collect();
        let ev = Event::Ready {
            id: id.to_owned(),
            pid: pid as u32,
            transports,
        };
        if tx.try_send(ev).is_err() {
            warn!(worker = id, "controller busy: a ready report was dropped");
        }
    })
    .await
    .map_err(|e| format!("cannot subscribe to {}: {e}", control::ON_READY))?;

    let tx = events.clone();
    link.register(control::NODE_STOP, move |_, _| {
        let tx = tx.clone();
        async move {
            info!("stop requested over the control socket (trellis stop)");
            tx.send(Event::Stop)
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
            let (reply, rx) = oneshot::channel();
            tx.send(Event::Status(reply))
                .await
                .map_err(|_| CallError::new("trellis.error.stopping", "the node is stopping"))?;
            let mut rows = rx
                .await
                .map_err(|_| CallError::new("trellis.error.stopping", "the node is stopping"))?;
            // Ask each running router for its sessions, concurrently and
            // briefly; a router that does not answer is shown without.
            let asks = rows.iter().map(|row| {
                let link = link.clone();
                let ask = row.get("type").and_then(Value::as_str) == Some("router")
                    && row.get("state").and_then(Value::as_str) == Some("running");
                let id = row
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned();
                async move {
                    if !ask {
                        return None;
                    }
                    let uri = control::worker_procedure(&id, "status");
                    let call = link.call(&uri, Payload::default());
                    match tokio::time::timeout(Duration::from_secs(2), call).await {
                        Ok(Ok(p)) => p.kwargs.get("sessions").cloned(),
                        _ => None,
                    }
                }
            });
            let sessions = futures::future::join_all(asks).await;
            for (row, s) in rows.iter_mut().zip(sessions) {
                if let Some(s) = s {
                    row.insert("sessions".into(), s);
                }
            }
            Ok(Payload {
                kwargs: dict! { "workers" => rows.into_iter().map(Value::Dict).collect::<Vec<_>>() },
                ..Payload::default()
            })
        }
    })
    .await
    .map_err(|e| format!("cannot register {}: {e}", control::NODE_STATUS))?;
    Ok(())
}

impl Node {
    fn new_slot(&self, spec: WorkerSpec) -> Slot {
        let dir = logs::dir(&self.opts.node_dir);
        let file = match logs::LogFile::open(
            &dir,
            &spec.id,
            self.controller.log_max_size,
            self.controller.log_keep,
        ) {
            Ok(f) => Some(f),
            Err(e) => {
                warn!(worker = %spec.id, cause = %e, dir = %dir.display(), "cannot open the worker's log file; its output goes to stderr only");
                None
            }
        };
        Slot {
            sink: logs::Sink::new(&spec.id, file, self.opts.log_format),
            sup: Supervision::new(spec.options.restart.clone()),
            spec,
            state: State::Stopped,
            pid: None,
            generation: 0,
            spawned: None,
            last_exit: None,
            replace: None,
            live: self.liveness(),
            killed_because: None,
        }
    }

    fn liveness(&self) -> Liveness {
        Liveness::new(
            Duration::from_secs_f64(self.controller.worker_ping_interval),
            Duration::from_secs_f64(self.controller.worker_ping_timeout),
            Instant::now(),
        )
    }

    fn find(&self, id: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.spec.id == id)
    }

    /// Start slot `i`'s process; its exit comes back as an event.
    async fn spawn_slot(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        slot.generation += 1;
        let generation = slot.generation;
        let id = slot.spec.id.clone();
        match spawn::spawn(&slot.spec, &self.ctx, &self.router, &slot.sink).await {
            Ok(mut child) => {
                slot.pid = child.id();
                slot.spawned = Some(Instant::now());
                slot.state = match slot.spec.kind {
                    // A guest is any program: started is all we can know.
                    WorkerKind::Guest(_) => State::Running,
                    _ => State::Starting,
                };
                info!(worker = %id, kind = slot.spec.kind.name(), pid = slot.pid.unwrap_or(0), "worker started");
                let tx = self.events_tx.clone();
                tokio::spawn(async move {
                    let exit = match child.wait().await {
                        Ok(s) => Exit::from_status(s),
                        Err(_) => Exit::Code(-1),
                    };
                    let _ = tx
                        .send(Event::Exited {
                            id,
                            generation,
                            exit,
                        })
                        .await;
                });
            }
            Err(e) => {
                slot.pid = None;
                let tx = self.events_tx.clone();
                let _ = tx
                    .send(Event::SpawnFailed {
                        id,
                        generation,
                        error: e.to_string(),
                    })
                    .await;
            }
        }
    }

    /// Routers first (guests need their address), then the rest; each
    /// phase waits until its workers report ready.
    async fn start_all(&mut self, shutdown: &CancellationToken) -> Result<(), StartError> {
        let deadline = Instant::now() + Duration::from_secs_f64(self.controller.startup_timeout);
        let routers: Vec<usize> = (0..self.slots.len())
            .filter(|&i| matches!(self.slots[i].spec.kind, WorkerKind::Router(_)))
            .collect();
        let others: Vec<usize> = (0..self.slots.len())
            .filter(|i| !routers.contains(i))
            .collect();
        for phase in [routers, others] {
            for &i in &phase {
                self.spawn_slot(i).await;
            }
            self.wait_ready(&phase, deadline, shutdown).await?;
        }
        Ok(())
    }

    async fn wait_ready(
        &mut self,
        which: &[usize],
        deadline: Instant,
        shutdown: &CancellationToken,
    ) -> Result<(), StartError> {
        loop {
            let pending: Vec<&str> = which
                .iter()
                .filter(|&&i| self.slots[i].state != State::Running)
                .map(|&i| self.slots[i].spec.id.as_str())
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            let pending = pending.join(", ");
            let ev = tokio::select! {
                _ = shutdown.cancelled() => return Err(StartError::Stopped),
                _ = tokio::time::sleep_until(deadline.into()) => {
                    return Err(StartError::Failed(format!(
                        "not ready within {} s (controller.options.startup_timeout): {pending}",
                        self.controller.startup_timeout
                    )));
                }
                ev = self.events.recv() => ev,
            };
            let Some(ev) = ev else {
                return Err(StartError::Failed(
                    "the controller's event queue closed".into(),
                ));
            };
            match ev {
                Event::Exited {
                    id,
                    generation,
                    exit,
                } => {
                    // A router or container that dies before it is ready
                    // fails the start; a guest (running once spawned) is
                    // supervised as usual.
                    let starting = self.find(&id).filter(|&i| {
                        self.slots[i].generation == generation
                            && self.slots[i].state == State::Starting
                    });
                    if let Some(i) = starting {
                        let slot = &mut self.slots[i];
                        slot.state = State::Failed;
                        slot.pid = None;
                        slot.last_exit = Some(exit.to_string());
                        return Err(StartError::Failed(format!(
                            "worker {id:?} {exit} while starting; its log says why: {}",
                            logs::dir(&self.opts.node_dir)
                                .join(format!("{id}.log"))
                                .display()
                        )));
                    }
                    self.handle(Event::Exited {
                        id,
                        generation,
                        exit,
                    })
                    .await;
                }
                Event::SpawnFailed { error, .. } => return Err(StartError::Failed(error)),
                Event::Stop => return Err(StartError::Stopped),
                other => self.handle(other).await,
            }
        }
    }

    /// The node's steady state: until a signal or `trellis stop`, or a
    /// router's failure when `on_router_failure` is `stop`.
    async fn supervise(&mut self, shutdown: &CancellationToken, reload: &mut mpsc::Receiver<()>) {
        let mut pings = tokio::time::interval(Duration::from_secs_f64(
            self.controller.worker_ping_interval,
        ));
        pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = reload.recv() => if r.is_some() {
                    self.reload().await;
                },
                _ = pings.tick() => self.check_liveness(),
                ev = self.events.recv() => match ev {
                    None | Some(Event::Stop) => return,
                    Some(ev) => self.handle(ev).await,
                },
            }
            if self.fatal.is_some() && self.controller.on_router_failure == RouterFailure::Stop {
                return;
            }
        }
    }

    /// Judge each router and container by its answers to earlier pings,
    /// kill the ones silent for longer than `worker_ping_timeout`, and ping
    /// the rest again.
    fn check_liveness(&mut self) {
        let now = Instant::now();
        let interval = Duration::from_secs_f64(self.controller.worker_ping_interval);
        for s in &mut self.slots {
            if matches!(s.spec.kind, WorkerKind::Guest(_))
                || !matches!(s.state, State::Running | State::Unresponsive)
            {
                continue;
            }
            let Some(pid) = s.pid else { continue };
            let id = s.spec.id.clone();
            match s.live.health(now) {
                Health::Fine => {
                    if s.state == State::Unresponsive {
                        info!(worker = %id, pid, "worker answers its pings again");
                        s.state = State::Running;
                    }
                }
                Health::Unresponsive => {
                    if s.state == State::Running {
                        warn!(worker = %id, pid, "worker does not answer its pings (stopped or stuck?)");
                        s.state = State::Unresponsive;
                    }
                }
                Health::Dead => {
                    let why = format!(
                        "no answer to pings for {} s (controller.options.worker_ping_timeout)",
                        self.controller.worker_ping_timeout
                    );
                    error!(worker = %id, pid, "{why}: killing it; it is restarted like a crashed worker");
                    signal_group(pid, Signal::SIGKILL);
                    s.killed_because = Some(why);
                    // Its exit follows; no second kill before then.
                    s.live.answered(now);
                    continue;
                }
            }
            let (link, tx, generation) = (self.link.clone(), self.events_tx.clone(), s.generation);
            tokio::spawn(async move {
                let uri = control::worker_procedure(&id, "ping");
                let call = link.call(&uri, Payload::default());
                if let Ok(Ok(_)) = tokio::time::timeout(interval, call).await {
                    let _ = tx.try_send(Event::Alive { id, generation });
                }
            });
        }
    }

    /// A router has failed for good: the node is not serving what it
    /// should, and systemd must be able to tell.
    fn router_failed(&mut self, id: &str, why: &str) {
        let what = format!("router worker {id:?} failed for good ({why})");
        match self.controller.on_router_failure {
            RouterFailure::Stop => {
                error!(
                    "{what}: stopping the node with a non-zero status (controller.options.on_router_failure: stop)"
                );
            }
            RouterFailure::Keep => {
                error!(
                    "{what}: the other workers keep running, the systemd watchdog is no longer fed, and the node exits non-zero when stopped (controller.options.on_router_failure: keep)"
                );
                self.watchdog.cancel();
                systemd::status(&format!("degraded: {what}"));
            }
        }
        self.fatal = Some(what);
    }

    async fn handle(&mut self, ev: Event) {
        match ev {
            Event::Ready {
                id,
                pid,
                transports,
            } => {
                let Some(i) = self.find(&id) else { return };
                let first_router = self
                    .slots
                    .iter()
                    .position(|s| matches!(s.spec.kind, WorkerKind::Router(_)));
                let slot = &mut self.slots[i];
                if slot.pid != Some(pid) || slot.state != State::Starting {
                    return;
                }
                slot.state = State::Running;
                slot.live.answered(Instant::now());
                let ms = slot.spawned.map_or(0, |t| t.elapsed().as_millis() as u64);
                info!(worker = %id, pid, ready_ms = ms, restarts = slot.sup.total_restarts, "worker ready");
                if first_router == Some(i)
                    && let WorkerKind::Router(r) = &slot.spec.kind
                {
                    let realm = r.realms.first().map(|r| r.name.clone());
                    self.router = RouterAddress::from_transports(&transports, realm);
                }
            }
            Event::Exited {
                id,
                generation,
                exit,
            } => {
                self.on_exit(&id, generation, exit.to_string(), Some(exit))
                    .await
            }
            Event::SpawnFailed {
                id,
                generation,
                error,
            } => {
                error!(worker = %id, "{error}");
                self.on_exit(&id, generation, error, None).await;
            }
            Event::RestartDue { id, generation } => {
                if let Some(i) = self.find(&id)
                    && self.slots[i].generation == generation
                    && self.slots[i].state == State::Backoff
                {
                    self.spawn_slot(i).await;
                }
            }
            Event::Alive { id, generation } => {
                if let Some(i) = self.find(&id)
                    && self.slots[i].generation == generation
                {
                    self.slots[i].live.answered(Instant::now());
                }
            }
            Event::Status(reply) => {
                let _ = reply.send(self.status_rows());
            }
            Event::Stop => {}
        }
    }

    async fn on_exit(&mut self, id: &str, generation: u64, what: String, exit: Option<Exit>) {
        let Some(i) = self.find(id) else { return };
        let slot = &mut self.slots[i];
        if slot.generation != generation {
            return;
        }
        let pid = slot.pid.take();
        if let Some(pid) = pid {
            // Whatever the worker started in its group goes with it.
            signal_group(pid, Signal::SIGKILL);
        }
        let what = match slot.killed_because.take() {
            Some(why) => format!("{what} by the controller: {why}"),
            None => what,
        };
        slot.last_exit = Some(what.clone());
        match slot.replace.take() {
            Some(Replace::Remove) => {
                info!(worker = %id, "worker stopped and removed (config reload)");
                self.slots.remove(i);
                return;
            }
            Some(Replace::With(spec)) => {
                info!(worker = %id, "worker stopped; starting it with its new config (config reload)");
                slot.sup = Supervision::new(spec.options.restart.clone());
                slot.spec = *spec;
                self.spawn_slot(i).await;
                return;
            }
            None => {}
        }
        if slot.state == State::Stopping {
            slot.state = State::Stopped;
            return;
        }
        let exit = exit.unwrap_or(Exit::Code(127));
        let decision = slot.sup.on_exit(exit, Instant::now());
        let action = match &decision {
            Decision::Restart(delay) => {
                warn!(worker = %id, pid = pid.unwrap_or(0), "worker {what}; restarting in {} ms", delay.as_millis());
                slot.state = State::Backoff;
                let tx = self.events_tx.clone();
                let (id, delay) = (id.to_owned(), *delay);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = tx.send(Event::RestartDue { id, generation }).await;
                });
                "restart"
            }
            Decision::Stay => {
                info!(worker = %id, "worker {what}; not restarting (options.restart.policy)");
                slot.state = State::Stopped;
                "stay"
            }
            Decision::GiveUp(why) => {
                error!(worker = %id, "worker {what}; giving up: {why}");
                slot.state = State::Failed;
                "give-up"
            }
        };
        if let (Decision::GiveUp(why), WorkerKind::Router(_)) = (&decision, &slot.spec.kind) {
            let why = why.clone();
            self.router_failed(id, &why);
        }
        let link = self.link.clone();
        let kwargs = dict! {
            "id" => id,
            "pid" => u64::from(pid.unwrap_or(0)),
            "exit" => what,
            "action" => action,
        };
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

    fn status_rows(&self) -> Vec<Dict> {
        self.slots
            .iter()
            .map(|s| {
                let mut d = dict! {
                    "id" => s.spec.id.as_str(),
                    "type" => s.spec.kind.name(),
                    "state" => s.state.name(),
                    "restarts" => u64::from(s.sup.total_restarts),
                };
                if let Some(pid) = s.pid {
                    d.insert("pid".into(), u64::from(pid).into());
                    if let Some(m) = control::rss_bytes(pid) {
                        d.insert("memory_bytes".into(), m.into());
                    }
                    if let Some(t) = s.spawned {
                        d.insert("uptime_s".into(), t.elapsed().as_secs().into());
                    }
                }
                if let Some(e) = &s.last_exit {
                    d.insert("last_exit".into(), e.as_str().into());
                }
                d
            })
            .collect()
    }

    /// SIGTERM every worker's process group, wait up to the shutdown
    /// timeout, SIGKILL what is left. Containers and guests go first, so
    /// their components leave before the routers they use stop.
    async fn stop_all(&mut self) {
        let timeout = Duration::from_secs_f64(self.controller.shutdown_timeout);
        let deadline = Instant::now() + timeout;
        self.stop_where(|k| !matches!(k, WorkerKind::Router(_)), deadline, timeout)
            .await;
        self.stop_where(|k| matches!(k, WorkerKind::Router(_)), deadline, timeout)
            .await;
    }

    /// Stop the workers whose kind matches, by `deadline`.
    async fn stop_where(
        &mut self,
        which: impl Fn(&WorkerKind) -> bool,
        deadline: Instant,
        timeout: Duration,
    ) {
        let mut deadline = deadline;
        let mut alive: HashMap<String, u64> = HashMap::new();
        for s in self.slots.iter_mut().filter(|s| which(&s.spec.kind)) {
            s.replace = None;
            if let Some(pid) = s.pid {
                signal_group(pid, Signal::SIGTERM);
                s.state = State::Stopping;
                alive.insert(s.spec.id.clone(), s.generation);
            } else if s.state == State::Backoff || s.state == State::Starting {
                s.state = State::Stopped;
            }
        }
        if alive.is_empty() {
            return;
        }
        info!(workers = alive.len(), "stopping workers");
        let mut killed = false;
        while !alive.is_empty() {
            let ev = tokio::select! {
                _ = tokio::time::sleep_until(deadline.into()) => {
                    if killed {
                        warn!(workers = ?alive.keys().collect::<Vec<_>>(), "workers still not reaped after SIGKILL");
                        return;
                    }
                    for s in &self.slots {
                        if alive.contains_key(&s.spec.id) && let Some(pid) = s.pid {
                            warn!(worker = %s.spec.id, pid, "did not stop within {} s (controller.options.shutdown_timeout): killing it", timeout.as_secs_f64());
                            signal_group(pid, Signal::SIGKILL);
                        }
                    }
                    killed = true;
                    deadline = Instant::now() + Duration::from_secs(5);
                    continue;
                }
                ev = self.events.recv() => ev,
            };
            match ev {
                Some(Event::Exited {
                    id,
                    generation,
                    exit,
                }) => {
                    if alive.get(&id) == Some(&generation) {
                        alive.remove(&id);
                        if let Some(i) = self.find(&id) {
                            let s = &mut self.slots[i];
                            s.pid = None;
                            s.state = State::Stopped;
                            info!(worker = %id, "worker {exit}");
                        }
                    }
                }
                Some(Event::Status(reply)) => {
                    let _ = reply.send(self.status_rows());
                }
                Some(_) => {}
                None => return,
            }
        }
    }

    /// SIGHUP: re-read the config; keep running on the old one if the new
    /// one is invalid; otherwise start added workers, stop removed ones,
    /// change routers' realms in place where only those changed, and
    /// restart other changed workers. Unchanged workers are not touched.
    async fn reload(&mut self) {
        systemd::reloading();
        info!("SIGHUP: re-reading the config");
        let new = match config::load(self.opts.config_path.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                error!("the new config is invalid; the node keeps running on the old one:\n{e}");
                systemd::ready("config reload failed; running on the old config");
                return;
            }
        };
        self.controller = new.controller.clone();
        let new_ids: Vec<String> = new.workers.iter().map(|w| w.id.clone()).collect();
        for s in &mut self.slots {
            if !new_ids.contains(&s.spec.id) {
                info!(worker = %s.spec.id, "removed from the config: stopping it");
                match s.pid {
                    Some(pid) => {
                        s.replace = Some(Replace::Remove);
                        s.state = State::Stopping;
                        signal_group(pid, Signal::SIGTERM);
                    }
                    None => s.replace = Some(Replace::Remove),
                }
            }
        }
        self.slots
            .retain(|s| !(s.pid.is_none() && matches!(s.replace, Some(Replace::Remove))));
        let mut unchanged = 0;
        for spec in new.workers {
            match self.find(&spec.id) {
                None => {
                    info!(worker = %spec.id, kind = spec.kind.name(), "added to the config: starting it");
                    let slot = self.new_slot(spec);
                    self.slots.push(slot);
                    let i = self.slots.len() - 1;
                    self.spawn_slot(i).await;
                }
                Some(i)
                    if self.slots[i].spec.kind == spec.kind
                        && self.slots[i].spec.options == spec.options =>
                {
                    unchanged += 1;
                }
                Some(i) if self.reconfigure_in_place(i, &spec).await => {
                    self.slots[i].spec = spec;
                }
                Some(i) => {
                    let slot = &mut self.slots[i];
                    info!(worker = %spec.id, "its config changed: restarting it");
                    match slot.pid {
                        Some(pid) => {
                            slot.replace = Some(Replace::With(Box::new(spec)));
                            slot.state = State::Stopping;
                            signal_group(pid, Signal::SIGTERM);
                        }
                        None => {
                            slot.sup = Supervision::new(spec.options.restart.clone());
                            slot.spec = spec;
                            self.spawn_slot(i).await;
                        }
                    }
                }
            }
        }
        info!(unchanged, "config reloaded");
        systemd::ready(&format!("{} workers", self.slots.len()));
    }
}

impl Node {
    /// A running router whose transports and options are unchanged takes
    /// new realms, roles and permissions in place, keeping its sessions.
    /// False if that does not apply or the router refused (then it is
    /// restarted instead).
    async fn reconfigure_in_place(&self, i: usize, new: &WorkerSpec) -> bool {
        let slot = &self.slots[i];
        let (WorkerKind::Router(old), WorkerKind::Router(next)) = (&slot.spec.kind, &new.kind)
        else {
            return false;
        };
        if old.transports != next.transports
            || old.id != next.id
            || slot.spec.options != new.options
            || slot.state != State::Running
        {
            return false;
        }
        let realms = match serde_json::to_string(&next.realms) {
            Ok(r) => r,
            Err(_) => return false,
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

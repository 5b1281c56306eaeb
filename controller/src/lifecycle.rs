//! The node's lifecycle as a pure state machine: every worker's state, the
//! start in phases, restarts, liveness, reloads and the stop, decided by
//! [`Lifecycle::on_event`] from an [`Event`] and the time, answered with
//! [`Action`]s for the shell ([`crate::node`]) to carry out. No process is
//! spawned or signalled here, no clock is read and no task is started, so
//! the unit tests below run the node's whole life on fake time.
//!
//! The shell feeds what happens (a spawn's result, an exit, a ready
//! report, a ping answer, a timer, a signal, a new config) and carries out
//! what is asked (spawn, signal a process group, wake me at, ping, publish
//! an exit, tell systemd, reconfigure a router in place).

use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::control::ExitReport;
use crate::supervisor::{Decision, Exit, Health, Liveness, Supervision};
use trellis_config::node::{
    ControllerOptions, RouterFailure, ShutdownTrigger, WorkerKind, WorkerSpec,
};

/// A worker's state, as `trellis status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
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
    /// The name `trellis status` shows.
    pub fn name(self) -> &'static str {
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

/// A signal for a worker's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    Term,
    Kill,
}

/// What happens to the node.
#[derive(Debug)]
pub enum Event {
    /// Begin the start: routers first.
    Start,
    /// A spawn asked for by [`Action::Spawn`] succeeded.
    Spawned {
        id: String,
        generation: u64,
        pid: u32,
    },
    /// It failed.
    SpawnFailed {
        id: String,
        generation: u64,
        error: String,
    },
    /// A worker reported ready on its control link.
    Ready {
        id: String,
        pid: u32,
        transports: Vec<(String, String)>,
    },
    /// A worker's process exited.
    Exited {
        id: String,
        generation: u64,
        exit: Exit,
    },
    /// A restart's backoff has passed.
    RestartDue { id: String, generation: u64 },
    /// A worker answered a ping.
    Alive { id: String, generation: u64 },
    /// Time to judge liveness and ping again.
    PingTick,
    /// The time asked for by [`Action::WakeAt`] has come.
    Wake,
    /// A signal or `trellis stop`.
    Stop,
    /// SIGHUP: the config as re-read (or why it is invalid).
    Reload(Result<Vec<WorkerSpec>, String>, Box<ControllerOptions>),
    /// The answer to [`Action::Reconfigure`].
    Reconfigured {
        id: String,
        spec: Box<WorkerSpec>,
        ok: bool,
    },
    /// A file under a guest's watched directories changed (and the changes
    /// have been quiet since): restart it.
    Watched { id: String, path: String },
}

/// What systemd is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notify {
    /// READY=1 with a status line.
    Ready(String),
    /// RELOADING=1.
    Reloading,
    /// STOPPING=1.
    Stopping,
    /// A status line only.
    Status(String),
}

/// What the shell is asked to do.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Start worker `id` (its current spec) as `generation`; answer with
    /// [`Event::Spawned`] or [`Event::SpawnFailed`] before anything else.
    Spawn { id: String, generation: u64 },
    /// Signal a worker's process group.
    Signal { pid: u32, sig: Sig },
    /// Feed [`Event::RestartDue`] after `delay`.
    RestartAfter {
        id: String,
        generation: u64,
        delay: Duration,
    },
    /// Ping worker `id` on its control link; feed [`Event::Alive`] if it
    /// answers within the ping interval.
    Ping { id: String, generation: u64 },
    /// Publish `worker.on_exit`.
    PublishExit(ExitReport),
    /// The first router is ready at these transports: where guests find it.
    RouterAt {
        transports: Vec<(String, String)>,
        realm: Option<String>,
    },
    /// Feed [`Event::Wake`] at this time (replaces an earlier wake-up).
    WakeAt(Instant),
    /// Tell systemd.
    Notify(Notify),
    /// Stop feeding the systemd watchdog (a router failed for good).
    StopWatchdog,
    /// Every worker is ready: the node is up.
    Started,
    /// Ask a running router to take `spec`'s realms in place; answer with
    /// [`Event::Reconfigured`].
    Reconfigure { id: String, spec: Box<WorkerSpec> },
    /// The node is done: every worker has stopped. `Err` when it ends
    /// because something failed.
    Done(Result<(), NodeFailure>),
}

/// Why the node ends with a non-zero status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeFailure {
    /// A worker failed to start or was not ready in time.
    #[error("{0}")]
    StartFailed(String),
    /// A router worker failed for good.
    #[error("{0}")]
    RouterFailed(String),
    /// A worker failed, and `controller.options.shutdown` stops the node
    /// then.
    #[error("{0}")]
    WorkerExited(String),
}

/// A trigger as the config names it.
fn trigger_name(t: ShutdownTrigger) -> &'static str {
    match t {
        ShutdownTrigger::ShutdownOnShutdownRequested => "shutdown_on_shutdown_requested",
        ShutdownTrigger::ShutdownOnWorkerExit => "shutdown_on_worker_exit",
        ShutdownTrigger::ShutdownOnWorkerExitWithError => "shutdown_on_worker_exit_with_error",
        ShutdownTrigger::ShutdownOnLastWorkerExit => "shutdown_on_last_worker_exit",
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

/// One worker as the controller sees it.
#[derive(Debug)]
pub struct Slot {
    pub spec: WorkerSpec,
    pub state: State,
    pub pid: Option<u32>,
    /// Bumped at every spawn, so events of an earlier process are ignored.
    pub generation: u64,
    /// When the current process was spawned.
    pub spawned: Option<Instant>,
    sup: Supervision,
    pub last_exit: Option<String>,
    replace: Option<Replace>,
    /// Answers to the controller's pings (routers and containers).
    live: Liveness,
    /// Why the controller killed the current process, for its exit line.
    killed_because: Option<String>,
}

impl Slot {
    /// Restarts since the node started.
    pub fn restarts(&self) -> u32 {
        self.sup.total_restarts
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Created; waiting for [`Event::Start`].
    Idle,
    /// Starting group 0 (routers) or 1 (the rest) by `deadline`.
    Starting { group: u8, deadline: Instant },
    /// Every worker started; supervising.
    Running,
    /// Stopping group 0 (the rest) or 1 (routers): SIGTERM sent, SIGKILL at
    /// the deadline, then 5 s more for the kernel to reap.
    Stopping {
        group: u8,
        deadline: Instant,
        killed: bool,
    },
    /// Done.
    Done,
}

/// The node's workers and phase: see the module documentation.
#[derive(Debug)]
pub struct Lifecycle {
    opts: ControllerOptions,
    slots: Vec<Slot>,
    phase: Phase,
    /// A router worker failed for good: why.
    fatal: Option<NodeFailure>,
    /// How the start failed or the node is ending, kept for [`Action::Done`].
    ending: Option<NodeFailure>,
    out: Vec<Action>,
    /// When liveness was last judged: a much longer gap means the
    /// controller itself did not run (SIGSTOP, a suspended machine).
    last_ping_tick: Option<Instant>,
}

fn is_router(s: &WorkerSpec) -> bool {
    matches!(s.kind, WorkerKind::Router(_))
}

impl Lifecycle {
    /// A node with these workers, nothing started yet.
    pub fn new(opts: ControllerOptions, workers: Vec<WorkerSpec>, now: Instant) -> Lifecycle {
        let mut l = Lifecycle {
            opts,
            slots: Vec::new(),
            phase: Phase::Idle,
            fatal: None,
            ending: None,
            out: Vec::new(),
            last_ping_tick: None,
        };
        for spec in workers {
            let slot = l.new_slot(spec, now);
            l.slots.push(slot);
        }
        l
    }

    fn new_slot(&self, spec: WorkerSpec, now: Instant) -> Slot {
        Slot {
            sup: Supervision::new(spec.options.restart.clone()),
            spec,
            state: State::Stopped,
            pid: None,
            generation: 0,
            spawned: None,
            last_exit: None,
            replace: None,
            live: self.liveness(now),
            killed_because: None,
        }
    }

    fn liveness(&self, now: Instant) -> Liveness {
        Liveness::new(
            Duration::from_secs_f64(self.opts.worker_ping_interval),
            Duration::from_secs_f64(self.opts.worker_ping_timeout),
            now,
        )
    }

    /// The workers, in config order.
    pub fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The worker named `id`.
    pub fn slot(&self, id: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.spec.id == id)
    }

    /// The workers' specs, in config order.
    pub fn specs(&self) -> Vec<WorkerSpec> {
        self.slots.iter().map(|s| s.spec.clone()).collect()
    }

    /// The controller options in force.
    pub fn options(&self) -> &ControllerOptions {
        &self.opts
    }

    fn find(&self, id: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.spec.id == id)
    }

    /// Handle one event at `now`; returns what to do, in order.
    pub fn on_event(&mut self, event: Event, now: Instant) -> Vec<Action> {
        self.event(event, now);
        std::mem::take(&mut self.out)
    }

    fn event(&mut self, event: Event, now: Instant) {
        if self.phase == Phase::Done {
            return;
        }
        match event {
            Event::Start => self.start_group(0, now),
            Event::Spawned {
                id,
                generation,
                pid,
            } => self.spawned(&id, generation, pid, now),
            Event::SpawnFailed {
                id,
                generation,
                error,
            } => {
                if matches!(self.phase, Phase::Starting { .. }) {
                    return self.start_failed(error, now);
                }
                error!(worker = %id, "{error}");
                self.on_exit(&id, generation, error, None, now);
            }
            Event::Ready {
                id,
                pid,
                transports,
            } => self.ready(&id, pid, transports, now),
            Event::Exited {
                id,
                generation,
                exit,
            } => self.exited(&id, generation, exit, now),
            Event::RestartDue { id, generation } => {
                if let Some(i) = self.find(&id)
                    && self.slots[i].generation == generation
                    && self.slots[i].state == State::Backoff
                    && !matches!(self.phase, Phase::Stopping { .. })
                {
                    self.spawn(i);
                }
            }
            Event::Alive { id, generation } => {
                if let Some(i) = self.find(&id)
                    && self.slots[i].generation == generation
                {
                    self.slots[i].live.answered(now);
                }
            }
            Event::PingTick => {
                if self.phase == Phase::Running {
                    self.check_liveness(now);
                }
            }
            Event::Wake => self.wake(now),
            Event::Stop => match self.phase {
                Phase::Starting { .. } => {
                    info!("asked to stop while starting: stopping");
                    self.begin_stop(now);
                }
                Phase::Idle | Phase::Running => self.begin_stop(now),
                Phase::Stopping { .. } | Phase::Done => {}
            },
            Event::Reload(new, opts) => {
                if self.phase == Phase::Running {
                    self.reload(new, *opts, now);
                }
            }
            Event::Reconfigured { id, spec, ok } => self.reconfigured(&id, *spec, ok),
            Event::Watched { id, path } => {
                if self.phase != Phase::Running {
                    return;
                }
                let Some(i) = self.find(&id) else { return };
                if matches!(self.slots[i].state, State::Running | State::Starting) {
                    info!(worker = %id, changed = %path, "a watched file changed: restarting the guest (options.watch)");
                    let spec = self.slots[i].spec.clone();
                    self.restart_with(i, spec, "a watched file changed");
                }
            }
        }
    }

    /// Start group 0 (routers) or 1 (the rest); each phase ends when its
    /// workers are ready.
    fn start_group(&mut self, group: u8, now: Instant) {
        let deadline = match self.phase {
            Phase::Starting { deadline, .. } => deadline,
            _ => now + Duration::from_secs_f64(self.opts.startup_timeout),
        };
        self.phase = Phase::Starting { group, deadline };
        self.out.push(Action::WakeAt(deadline));
        for i in 0..self.slots.len() {
            if is_router(&self.slots[i].spec) == (group == 0) {
                self.spawn(i);
            }
        }
        self.check_started(now);
    }

    /// Move on when every worker of the starting group is running.
    fn check_started(&mut self, now: Instant) {
        let Phase::Starting { group, .. } = self.phase else {
            return;
        };
        let waiting = self
            .slots
            .iter()
            .any(|s| is_router(&s.spec) == (group == 0) && s.state != State::Running);
        if waiting {
            return;
        }
        if group == 0 {
            return self.start_group(1, now);
        }
        self.phase = Phase::Running;
        // READY=1 before the watchdog's first ping.
        self.out.push(Action::Notify(Notify::Ready(format!(
            "{} workers running",
            self.slots.len()
        ))));
        self.out.push(Action::Started);
    }

    fn start_failed(&mut self, why: String, now: Instant) {
        error!("node start failed: {why}");
        self.ending = Some(NodeFailure::StartFailed(why));
        self.begin_stop(now);
    }

    fn spawn(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        slot.generation += 1;
        slot.pid = None;
        slot.state = State::Starting;
        self.out.push(Action::Spawn {
            id: slot.spec.id.clone(),
            generation: slot.generation,
        });
    }

    fn spawned(&mut self, id: &str, generation: u64, pid: u32, now: Instant) {
        let Some(i) = self.find(id) else { return };
        let slot = &mut self.slots[i];
        if slot.generation != generation {
            return;
        }
        slot.pid = Some(pid);
        slot.spawned = Some(now);
        // A guest is any program: started is all we can know.
        if matches!(slot.spec.kind, WorkerKind::Guest(_)) {
            slot.state = State::Running;
        }
        info!(worker = %id, kind = slot.spec.kind.name(), pid, "worker started");
        self.check_started(now);
    }

    fn ready(&mut self, id: &str, pid: u32, transports: Vec<(String, String)>, now: Instant) {
        let Some(i) = self.find(id) else { return };
        let first_router = self.slots.iter().position(|s| is_router(&s.spec));
        let slot = &mut self.slots[i];
        if slot.pid != Some(pid) || slot.state != State::Starting {
            return;
        }
        slot.state = State::Running;
        slot.live.answered(now);
        let ms = slot
            .spawned
            .map_or(0, |t| now.saturating_duration_since(t).as_millis() as u64);
        info!(worker = %id, pid, ready_ms = ms, restarts = slot.sup.total_restarts, "worker ready");
        if first_router == Some(i)
            && let WorkerKind::Router(r) = &slot.spec.kind
        {
            let realm = r.realms.first().map(|r| r.name.clone());
            self.out.push(Action::RouterAt { transports, realm });
        }
        self.check_started(now);
    }

    fn exited(&mut self, id: &str, generation: u64, exit: Exit, now: Instant) {
        let Some(i) = self.find(id) else { return };
        if self.slots[i].generation != generation {
            return;
        }
        match self.phase {
            // A router or container that dies before it is ready fails the
            // start; a guest (running once spawned) is supervised as usual.
            Phase::Starting { .. } if self.slots[i].state == State::Starting => {
                let slot = &mut self.slots[i];
                slot.state = State::Failed;
                slot.pid = None;
                slot.last_exit = Some(exit.to_string());
                let why = format!(
                    "worker {id:?} {exit} while starting; its log says why: logs/{id}.log in the node directory"
                );
                self.start_failed(why, now);
            }
            // Stopping: whatever exits is stopped, asked to or not.
            Phase::Stopping { .. } => {
                let slot = &mut self.slots[i];
                slot.pid = None;
                slot.state = State::Stopped;
                info!(worker = %id, "worker {exit}");
                self.check_stopped(now);
            }
            _ => self.on_exit(id, generation, exit.to_string(), Some(exit), now),
        }
    }

    /// An exit (or failed spawn) while supervising.
    fn on_exit(
        &mut self,
        id: &str,
        generation: u64,
        what: String,
        exit: Option<Exit>,
        now: Instant,
    ) {
        let Some(i) = self.find(id) else { return };
        let slot = &mut self.slots[i];
        if slot.generation != generation {
            return;
        }
        let pid = slot.pid.take();
        if let Some(pid) = pid {
            // Whatever the worker started in its group goes with it.
            self.out.push(Action::Signal {
                pid,
                sig: Sig::Kill,
            });
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
                self.spawn(i);
                return;
            }
            None => {}
        }
        if slot.state == State::Stopping {
            slot.state = State::Stopped;
            return;
        }
        let exit = exit.unwrap_or(Exit::Code(127));
        let failed = exit != Exit::Code(0);
        let trigger = self.opts.shutdown.iter().copied().find(|t| match t {
            ShutdownTrigger::ShutdownOnWorkerExit => true,
            ShutdownTrigger::ShutdownOnWorkerExitWithError => failed,
            _ => false,
        });
        if let Some(t) = trigger {
            // Crossbar.io's node shutdown: the node stops instead of
            // restarting the worker.
            let slot = &mut self.slots[i];
            slot.state = if failed {
                State::Failed
            } else {
                State::Stopped
            };
            let why = format!(
                "worker {id:?} {what}: stopping the node (controller.options.shutdown: {})",
                trigger_name(t)
            );
            self.out.push(Action::PublishExit(ExitReport {
                id: id.to_owned(),
                pid: pid.unwrap_or(0),
                exit: what,
                action: "shutdown".to_owned(),
            }));
            if failed {
                error!("{why}");
                self.fatal = Some(NodeFailure::WorkerExited(why));
            } else {
                info!("{why}");
            }
            self.begin_stop(now);
            return;
        }
        let slot = &mut self.slots[i];
        let decision = slot.sup.on_exit(exit, now);
        let action = match &decision {
            Decision::Restart(delay) => {
                warn!(worker = %id, pid = pid.unwrap_or(0), "worker {what}; restarting in {} ms", delay.as_millis());
                slot.state = State::Backoff;
                self.out.push(Action::RestartAfter {
                    id: id.to_owned(),
                    generation,
                    delay: *delay,
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
        let router = is_router(&slot.spec);
        self.out.push(Action::PublishExit(ExitReport {
            id: id.to_owned(),
            pid: pid.unwrap_or(0),
            exit: what,
            action: action.to_owned(),
        }));
        if let (Decision::GiveUp(why), true) = (decision, router) {
            self.router_failed(id, &why, now);
        }
        if self
            .opts
            .shutdown
            .contains(&ShutdownTrigger::ShutdownOnLastWorkerExit)
            && matches!(self.phase, Phase::Running)
            && self
                .slots
                .iter()
                .all(|s| matches!(s.state, State::Stopped | State::Failed))
        {
            info!(
                "the last worker has exited: stopping the node (controller.options.shutdown: shutdown_on_last_worker_exit)"
            );
            self.begin_stop(now);
        }
    }

    /// A router has failed for good: the node is not serving what it
    /// should, and systemd must be able to tell.
    fn router_failed(&mut self, id: &str, why: &str, now: Instant) {
        let what = format!("router worker {id:?} failed for good ({why})");
        match self.opts.on_router_failure {
            RouterFailure::Stop => {
                error!(
                    "{what}: stopping the node with a non-zero status (controller.options.on_router_failure: stop)"
                );
                self.fatal = Some(NodeFailure::RouterFailed(what));
                self.begin_stop(now);
            }
            RouterFailure::Keep => {
                error!(
                    "{what}: the other workers keep running, the systemd watchdog is no longer fed, and the node exits non-zero when stopped (controller.options.on_router_failure: keep)"
                );
                self.out.push(Action::StopWatchdog);
                self.out
                    .push(Action::Notify(Notify::Status(format!("degraded: {what}"))));
                self.fatal = Some(NodeFailure::RouterFailed(what));
            }
        }
    }

    /// Judge each router and container by its answers to earlier pings,
    /// kill the ones silent for longer than `worker_ping_timeout`, and ping
    /// the rest again.
    fn check_liveness(&mut self, now: Instant) {
        let timeout = self.opts.worker_ping_timeout;
        let interval = Duration::from_secs_f64(self.opts.worker_ping_interval);
        if let Some(gap) = self
            .last_ping_tick
            .map(|t| now.saturating_duration_since(t))
            .filter(|gap| *gap > interval * 3)
        {
            // The controller was not running (stopped, suspended): the
            // workers were not asked meanwhile, so their silence is not
            // theirs. Judge them afresh from now.
            warn!(
                gap_s = gap.as_secs_f64(),
                "the controller did not run for a while (stopped or suspended?): the workers' liveness is judged afresh"
            );
            for s in &mut self.slots {
                s.live.answered(now);
            }
        }
        self.last_ping_tick = Some(now);
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
                        "no answer to pings for {timeout} s (controller.options.worker_ping_timeout)"
                    );
                    error!(worker = %id, pid, "{why}: killing it; it is restarted like a crashed worker");
                    self.out.push(Action::Signal {
                        pid,
                        sig: Sig::Kill,
                    });
                    s.killed_because = Some(why);
                    // Its exit follows; no second kill before then.
                    s.live.answered(now);
                    continue;
                }
            }
            self.out.push(Action::Ping {
                id,
                generation: s.generation,
            });
        }
    }

    fn wake(&mut self, now: Instant) {
        match self.phase {
            Phase::Starting { group, deadline } if now >= deadline => {
                let pending: Vec<&str> = self
                    .slots
                    .iter()
                    .filter(|s| is_router(&s.spec) == (group == 0) && s.state != State::Running)
                    .map(|s| s.spec.id.as_str())
                    .collect();
                let why = format!(
                    "not ready within {} s (controller.options.startup_timeout): {}",
                    self.opts.startup_timeout,
                    pending.join(", ")
                );
                self.start_failed(why, now);
            }
            Phase::Stopping {
                group,
                deadline,
                killed,
            } if now >= deadline => {
                let survivors: Vec<(String, Option<u32>)> = self
                    .slots
                    .iter()
                    .filter(|s| s.state == State::Stopping && Self::in_stop_group(s, group))
                    .map(|s| (s.spec.id.clone(), s.pid))
                    .collect();
                if killed {
                    warn!(workers = ?survivors.iter().map(|(id, _)| id).collect::<Vec<_>>(), "workers still not reaped after SIGKILL");
                    for s in &mut self.slots {
                        if s.state == State::Stopping && Self::in_stop_group(s, group) {
                            s.state = State::Stopped;
                            s.pid = None;
                        }
                    }
                    return self.next_stop_group(group, now);
                }
                for (id, pid) in survivors {
                    if let Some(pid) = pid {
                        warn!(worker = %id, pid, "did not stop within {} s (controller.options.shutdown_timeout): killing it", self.opts.shutdown_timeout);
                        self.out.push(Action::Signal {
                            pid,
                            sig: Sig::Kill,
                        });
                    }
                }
                let deadline = now + Duration::from_secs(5);
                self.phase = Phase::Stopping {
                    group,
                    deadline,
                    killed: true,
                };
                self.out.push(Action::WakeAt(deadline));
            }
            _ => {}
        }
    }

    /// Containers and guests go first (group 0), so their components leave
    /// before the routers they use stop (group 1).
    fn in_stop_group(s: &Slot, group: u8) -> bool {
        is_router(&s.spec) == (group == 1)
    }

    /// SIGTERM every worker's process group, wait up to the shutdown
    /// timeout, SIGKILL what is left.
    fn begin_stop(&mut self, now: Instant) {
        self.out.push(Action::Notify(Notify::Stopping));
        let deadline = now + Duration::from_secs_f64(self.opts.shutdown_timeout);
        self.stop_group(0, deadline, now);
    }

    fn stop_group(&mut self, group: u8, deadline: Instant, now: Instant) {
        self.phase = Phase::Stopping {
            group,
            deadline,
            killed: false,
        };
        let mut signalled = 0;
        for s in self
            .slots
            .iter_mut()
            .filter(|s| Self::in_stop_group(s, group))
        {
            s.replace = None;
            if let Some(pid) = s.pid {
                self.out.push(Action::Signal {
                    pid,
                    sig: Sig::Term,
                });
                s.state = State::Stopping;
                signalled += 1;
            } else if matches!(s.state, State::Backoff | State::Starting) {
                s.state = State::Stopped;
            }
        }
        if signalled > 0 {
            info!(workers = signalled, "stopping workers");
            self.out.push(Action::WakeAt(deadline));
        }
        self.check_stopped(now);
    }

    fn check_stopped(&mut self, now: Instant) {
        let Phase::Stopping {
            group, deadline, ..
        } = self.phase
        else {
            return;
        };
        let waiting = self
            .slots
            .iter()
            .any(|s| s.state == State::Stopping && Self::in_stop_group(s, group));
        if !waiting {
            if group == 0 {
                return self.stop_group(1, deadline, now);
            }
            self.next_stop_group(group, now);
        }
    }

    fn next_stop_group(&mut self, group: u8, now: Instant) {
        if group == 0 {
            let deadline = now + Duration::from_secs_f64(self.opts.shutdown_timeout);
            return self.stop_group(1, deadline, now);
        }
        self.phase = Phase::Done;
        let failure = self.ending.take().or_else(|| self.fatal.take());
        self.out.push(Action::Done(failure.map_or(Ok(()), Err)));
    }

    /// SIGHUP: keep running on the old config if the new one is invalid;
    /// otherwise start added workers, stop removed ones, change routers'
    /// realms in place where only those changed, and restart other changed
    /// workers. Unchanged workers are not touched.
    fn reload(
        &mut self,
        new: Result<Vec<WorkerSpec>, String>,
        opts: ControllerOptions,
        now: Instant,
    ) {
        self.out.push(Action::Notify(Notify::Reloading));
        let workers = match new {
            Ok(w) => w,
            Err(e) => {
                error!("the new config is invalid; the node keeps running on the old one:\n{e}");
                self.out.push(Action::Notify(Notify::Ready(
                    "config reload failed; running on the old config".into(),
                )));
                return;
            }
        };
        self.opts = opts;
        for s in &mut self.slots {
            if !workers.iter().any(|w| w.id == s.spec.id) {
                info!(worker = %s.spec.id, "removed from the config: stopping it");
                s.replace = Some(Replace::Remove);
                if let Some(pid) = s.pid {
                    s.state = State::Stopping;
                    self.out.push(Action::Signal {
                        pid,
                        sig: Sig::Term,
                    });
                }
            }
        }
        self.slots
            .retain(|s| !(s.pid.is_none() && matches!(s.replace, Some(Replace::Remove))));
        let mut unchanged = 0;
        for spec in workers {
            match self.find(&spec.id) {
                None => {
                    info!(worker = %spec.id, kind = spec.kind.name(), "added to the config: starting it");
                    let slot = self.new_slot(spec, now);
                    self.slots.push(slot);
                    self.spawn(self.slots.len() - 1);
                }
                Some(i)
                    if self.slots[i].spec.kind == spec.kind
                        && self.slots[i].spec.options == spec.options =>
                {
                    unchanged += 1;
                }
                Some(i) if self.in_place(i, &spec) => {
                    self.out.push(Action::Reconfigure {
                        id: spec.id.clone(),
                        spec: Box::new(spec),
                    });
                }
                Some(i) => self.restart_with(i, spec, "its config changed"),
            }
        }
        info!(unchanged, "config reloaded");
        self.out.push(Action::Notify(Notify::Ready(format!(
            "{} workers",
            self.slots.len()
        ))));
    }

    /// A running router whose transports and options are unchanged can take
    /// new realms, roles and permissions in place, keeping its sessions.
    fn in_place(&self, i: usize, new: &WorkerSpec) -> bool {
        let slot = &self.slots[i];
        let (WorkerKind::Router(old), WorkerKind::Router(next)) = (&slot.spec.kind, &new.kind)
        else {
            return false;
        };
        old.transports == next.transports
            && old.id == next.id
            && slot.spec.options == new.options
            && slot.state == State::Running
    }

    fn reconfigured(&mut self, id: &str, spec: WorkerSpec, ok: bool) {
        let Some(i) = self.find(id) else { return };
        if ok {
            self.slots[i].spec = spec;
        } else {
            self.restart_with(i, spec, "its config changed");
        }
    }

    fn restart_with(&mut self, i: usize, spec: WorkerSpec, why: &str) {
        let slot = &mut self.slots[i];
        info!(worker = %spec.id, "{why}: restarting it");
        match slot.pid {
            Some(pid) => {
                slot.replace = Some(Replace::With(Box::new(spec)));
                slot.state = State::Stopping;
                self.out.push(Action::Signal {
                    pid,
                    sig: Sig::Term,
                });
            }
            None => {
                slot.sup = Supervision::new(spec.options.restart.clone());
                slot.spec = spec;
                self.spawn(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_config::node::{RestartPolicy, WorkerOptions};

    fn spec(id: &str, kind: &str) -> WorkerSpec {
        let kind = match kind {
            "router" => WorkerKind::Router(
                serde_json::from_value(serde_json::json!({
                    "realms": [{"name": "realm1"}]
                }))
                .unwrap(),
            ),
            "container" => WorkerKind::Container(Default::default()),
            _ => WorkerKind::Guest(
                serde_json::from_value(serde_json::json!({"executable": "sleep"})).unwrap(),
            ),
        };
        WorkerSpec {
            index: 0,
            id: id.into(),
            kind,
            options: WorkerOptions::default(),
        }
    }

    /// A node on fake time that answers spawns with pids 100, 101, ...
    struct Fake {
        life: Lifecycle,
        now: Instant,
        next_pid: u32,
        /// Every action, in order, except the spawns answered.
        seen: Vec<Action>,
    }

    impl Fake {
        fn new(workers: Vec<WorkerSpec>) -> Fake {
            Fake::with(ControllerOptions::default(), workers)
        }

        fn with(opts: ControllerOptions, workers: Vec<WorkerSpec>) -> Fake {
            let now = Instant::now();
            Fake {
                life: Lifecycle::new(opts, workers, now),
                now,
                next_pid: 100,
                seen: Vec::new(),
            }
        }

        /// Feed `ev`; answer spawns at once, as the shell does. Returns the
        /// other actions.
        fn feed(&mut self, ev: Event) -> Vec<Action> {
            let mut out = Vec::new();
            let mut queue = vec![ev];
            while let Some(ev) = queue.pop() {
                for a in self.life.on_event(ev, self.now) {
                    match a {
                        Action::Spawn { id, generation } => {
                            self.next_pid += 1;
                            queue.insert(
                                0,
                                Event::Spawned {
                                    id,
                                    generation,
                                    pid: self.next_pid,
                                },
                            );
                        }
                        other => out.push(other),
                    }
                }
            }
            self.seen.extend(out.iter().map(clone_action));
            out
        }

        fn advance(&mut self, d: Duration) {
            self.now += d;
        }

        fn state(&self, id: &str) -> State {
            self.life.slot(id).unwrap().state
        }

        fn pid(&self, id: &str) -> u32 {
            self.life.slot(id).unwrap().pid.unwrap()
        }

        fn generation(&self, id: &str) -> u64 {
            self.life.slot(id).unwrap().generation
        }

        fn ready(&mut self, id: &str) -> Vec<Action> {
            let pid = self.pid(id);
            self.feed(Event::Ready {
                id: id.into(),
                pid,
                transports: vec![("websocket".into(), "127.0.0.1:8080".into())],
            })
        }

        fn exit(&mut self, id: &str, exit: Exit) -> Vec<Action> {
            let generation = self.generation(id);
            self.feed(Event::Exited {
                id: id.into(),
                generation,
                exit,
            })
        }

        /// Start routers and containers and report them ready.
        fn started(workers: Vec<WorkerSpec>) -> Fake {
            let ids: Vec<(String, bool)> = workers
                .iter()
                .map(|w| (w.id.clone(), matches!(w.kind, WorkerKind::Guest(_))))
                .collect();
            let mut f = Fake::new(workers);
            f.feed(Event::Start);
            for (id, guest) in &ids {
                if !guest && f.state(id) == State::Starting {
                    f.ready(id);
                }
            }
            for (id, guest) in &ids {
                if !guest && f.state(id) == State::Starting {
                    f.ready(id);
                }
            }
            assert!(f.seen.contains(&Action::Started), "{:?}", f.seen);
            f
        }
    }

    fn clone_action(a: &Action) -> Action {
        match a {
            Action::Signal { pid, sig } => Action::Signal {
                pid: *pid,
                sig: *sig,
            },
            Action::Started => Action::Started,
            Action::StopWatchdog => Action::StopWatchdog,
            Action::Notify(n) => Action::Notify(n.clone()),
            Action::Done(r) => Action::Done(r.clone()),
            Action::WakeAt(t) => Action::WakeAt(*t),
            Action::RestartAfter {
                id,
                generation,
                delay,
            } => Action::RestartAfter {
                id: id.clone(),
                generation: *generation,
                delay: *delay,
            },
            // The rest are not compared by the tests.
            _ => Action::WakeAt(Instant::now()),
        }
    }

    #[test]
    fn routers_start_first_then_the_rest_then_the_node_is_ready() {
        let mut f = Fake::new(vec![
            spec("container1", "container"),
            spec("router1", "router"),
            spec("guest1", "guest"),
        ]);
        f.feed(Event::Start);
        assert_eq!(f.state("router1"), State::Starting);
        assert_eq!(
            f.state("container1"),
            State::Stopped,
            "not before the router"
        );
        let out = f.ready("router1");
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::RouterAt { realm: Some(r), .. } if r == "realm1")),
            "guests learn where the router is: {out:?}"
        );
        assert_eq!(f.state("container1"), State::Starting);
        assert_eq!(
            f.state("guest1"),
            State::Running,
            "a guest runs once spawned"
        );
        assert!(!f.seen.contains(&Action::Started));
        let out = f.ready("container1");
        assert!(out.contains(&Action::Started));
        let ready = out
            .iter()
            .position(|a| matches!(a, Action::Notify(Notify::Ready(_))));
        let started = out.iter().position(|a| *a == Action::Started);
        assert!(ready < started, "READY=1 before the watchdog starts");
    }

    #[test]
    fn a_worker_dying_while_starting_fails_the_start_and_stops_the_rest() {
        let mut f = Fake::new(vec![spec("router1", "router"), spec("router2", "router")]);
        f.feed(Event::Start);
        let r2 = f.pid("router2");
        let out = f.exit("router1", Exit::Code(3));
        assert_eq!(f.state("router1"), State::Failed);
        assert!(out.contains(&Action::Signal {
            pid: r2,
            sig: Sig::Term
        }));
        let out = f.exit("router2", Exit::Signal(15));
        match out.last() {
            Some(Action::Done(Err(NodeFailure::StartFailed(why)))) => {
                assert!(why.contains("\"router1\" exited with status 3"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_start_that_takes_too_long_names_who_is_late() {
        let mut f = Fake::new(vec![spec("router1", "router")]);
        let out = f.feed(Event::Start);
        let Some(Action::WakeAt(deadline)) = out.first() else {
            panic!("{out:?}")
        };
        assert_eq!(
            *deadline - f.now,
            Duration::from_secs_f64(ControllerOptions::default().startup_timeout)
        );
        f.advance(*deadline - f.now);
        let out = f.feed(Event::Wake);
        assert!(out.contains(&Action::Signal {
            pid: f.pid("router1"),
            sig: Sig::Term
        }));
        let out = f.exit("router1", Exit::Signal(15));
        match out.last() {
            Some(Action::Done(Err(NodeFailure::StartFailed(why)))) => {
                assert!(why.contains("startup_timeout): router1"), "{why}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_crash_is_restarted_after_its_backoff_and_stale_events_are_ignored() {
        let mut f = Fake::started(vec![spec("router1", "router")]);
        let old = f.generation("router1");
        let pid = f.pid("router1");
        let out = f.exit("router1", Exit::Signal(9));
        assert!(
            out.contains(&Action::Signal {
                pid,
                sig: Sig::Kill
            }),
            "its group goes too"
        );
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::PublishExit(r) if r.action == "restart"))
        );
        let Some(Action::RestartAfter { delay, .. }) = out
            .iter()
            .find(|a| matches!(a, Action::RestartAfter { .. }))
        else {
            panic!("{out:?}")
        };
        assert_eq!(*delay, Duration::from_millis(100), "backoff_initial");
        assert_eq!(f.state("router1"), State::Backoff);
        f.advance(*delay);
        f.feed(Event::RestartDue {
            id: "router1".into(),
            generation: old,
        });
        assert_eq!(f.state("router1"), State::Starting);
        assert_eq!(f.life.slot("router1").unwrap().restarts(), 1);
        // The old process's late exit changes nothing.
        let out = f.feed(Event::Exited {
            id: "router1".into(),
            generation: old,
            exit: Exit::Code(0),
        });
        assert!(out.is_empty(), "{out:?}");
        f.ready("router1");
        assert_eq!(f.state("router1"), State::Running);
    }

    /// Crossbar.io's `controller.options.shutdown`: the listed trigger
    /// stops the node instead of restarting the worker.
    #[test]
    fn shutdown_triggers_stop_the_node_as_crossbar_does() {
        let mk = |triggers: Vec<ShutdownTrigger>| {
            let opts = ControllerOptions {
                shutdown: triggers,
                ..ControllerOptions::default()
            };
            let mut f = Fake::with(
                opts,
                vec![spec("router1", "router"), spec("c1", "container")],
            );
            f.feed(Event::Start);
            f.ready("router1");
            f.ready("c1");
            f
        };
        let stops = |out: &[Action], f: &Fake| {
            out.contains(&Action::Signal {
                pid: f.pid("router1"),
                sig: Sig::Term,
            })
        };
        // Any exit, clean or not: the node stops; a failure makes it fail.
        let mut f = mk(vec![ShutdownTrigger::ShutdownOnWorkerExit]);
        let out = f.exit("c1", Exit::Code(0));
        assert!(stops(&out, &f), "{out:?}");
        assert!(!out.iter().any(|a| matches!(a, Action::RestartAfter { .. })));
        let out = f.exit("router1", Exit::Signal(15));
        assert!(matches!(out.last(), Some(Action::Done(Ok(())))), "{out:?}");
        let mut f = mk(vec![ShutdownTrigger::ShutdownOnWorkerExit]);
        f.exit("c1", Exit::Code(3));
        let out = f.exit("router1", Exit::Signal(15));
        assert!(
            matches!(out.last(), Some(Action::Done(Err(NodeFailure::WorkerExited(w)))) if w.contains("shutdown_on_worker_exit")),
            "{out:?}"
        );
        // With error only: a clean exit is supervised as usual.
        let mut f = mk(vec![ShutdownTrigger::ShutdownOnWorkerExitWithError]);
        let out = f.exit("c1", Exit::Code(0));
        assert!(!stops(&out, &f), "{out:?}");
        let out = f.exit("router1", Exit::Signal(9));
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::PublishExit(r) if r.action == "shutdown")),
            "{out:?}"
        );
        // The last worker: only once none is left running.
        let mut f = mk(vec![ShutdownTrigger::ShutdownOnLastWorkerExit]);
        f.life.slots.iter_mut().for_each(|s| {
            s.sup = Supervision::new(trellis_config::node::RestartConfig {
                policy: trellis_config::node::RestartPolicy::Never,
                ..trellis_config::node::RestartConfig::default()
            })
        });
        let out = f.exit("c1", Exit::Code(0));
        assert!(
            !out.iter()
                .any(|a| matches!(a, Action::Notify(Notify::Stopping))),
            "{out:?}"
        );
        let out = f.exit("router1", Exit::Code(0));
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::Notify(Notify::Stopping))),
            "{out:?}"
        );
    }

    #[test]
    fn a_router_that_gives_up_stops_the_node_or_starves_the_watchdog() {
        let mut opts = ControllerOptions::default();
        let mut router = spec("router1", "router");
        router.options.restart.max_restarts = 0;
        let mut f = Fake::with(opts.clone(), vec![router.clone(), spec("c1", "container")]);
        f.feed(Event::Start);
        f.ready("router1");
        f.ready("c1");
        let out = f.exit("router1", Exit::Code(1));
        assert_eq!(f.state("router1"), State::Failed);
        assert!(
            out.contains(&Action::Signal {
                pid: f.pid("c1"),
                sig: Sig::Term
            }),
            "on_router_failure stop: the node stops"
        );
        let out = f.exit("c1", Exit::Signal(15));
        assert!(matches!(
            out.last(),
            Some(Action::Done(Err(NodeFailure::RouterFailed(_))))
        ));

        opts.on_router_failure = RouterFailure::Keep;
        let mut f = Fake::with(opts, vec![router, spec("c1", "container")]);
        f.feed(Event::Start);
        f.ready("router1");
        f.ready("c1");
        let out = f.exit("router1", Exit::Code(1));
        assert!(out.contains(&Action::StopWatchdog));
        assert_eq!(f.state("c1"), State::Running, "the rest keeps running");
        f.feed(Event::Stop);
        let out = f.exit("c1", Exit::Signal(15));
        assert!(
            matches!(
                out.last(),
                Some(Action::Done(Err(NodeFailure::RouterFailed(_))))
            ),
            "exits non-zero when stopped: {out:?}"
        );
    }

    #[test]
    fn restart_policy_never_leaves_it_stopped() {
        let mut w = spec("c1", "container");
        w.options.restart.policy = RestartPolicy::Never;
        let mut f = Fake::started(vec![spec("router1", "router"), w]);
        let out = f.exit("c1", Exit::Code(0));
        assert_eq!(f.state("c1"), State::Stopped);
        assert!(!out.iter().any(|a| matches!(a, Action::RestartAfter { .. })));
    }

    #[test]
    fn silence_is_unresponsive_then_killed_and_restarted() {
        let mut f = Fake::started(vec![spec("router1", "router")]);
        let pid = f.pid("router1");
        let opts = ControllerOptions::default();
        let interval = Duration::from_secs_f64(opts.worker_ping_interval);
        let out = f.feed(Event::PingTick);
        assert!(matches!(out.as_slice(), [Action::Ping { .. }]), "{out:?}");
        // No answers: unresponsive after the interval, killed after the
        // timeout.
        f.advance(interval);
        f.feed(Event::PingTick);
        f.advance(interval + Duration::from_millis(1));
        f.feed(Event::PingTick);
        assert_eq!(f.state("router1"), State::Unresponsive);
        let mut silent = interval * 2;
        let timeout = Duration::from_secs_f64(opts.worker_ping_timeout);
        while silent + interval < timeout {
            f.advance(interval);
            silent += interval;
            let out = f.feed(Event::PingTick);
            assert!(
                !out.iter().any(|a| matches!(a, Action::Signal { .. })),
                "{out:?}"
            );
        }
        f.advance(interval);
        let out = f.feed(Event::PingTick);
        assert!(
            out.contains(&Action::Signal {
                pid,
                sig: Sig::Kill
            }),
            "{out:?}"
        );
        let out = f.exit("router1", Exit::Signal(9));
        let exit = out.iter().find_map(|a| match a {
            Action::PublishExit(r) => Some(r.exit.clone()),
            _ => None,
        });
        assert!(
            exit.is_some_and(|e| e.contains("by the controller: no answer to pings")),
            "the exit says why"
        );
        assert_eq!(f.state("router1"), State::Backoff);
    }

    #[test]
    fn a_controller_that_did_not_run_does_not_blame_its_workers() {
        let mut f = Fake::started(vec![spec("router1", "router")]);
        let opts = ControllerOptions::default();
        let interval = Duration::from_secs_f64(opts.worker_ping_interval);
        let timeout = Duration::from_secs_f64(opts.worker_ping_timeout);
        f.feed(Event::PingTick);
        // SIGSTOP of the whole node, SIGCONT after longer than the timeout.
        f.advance(timeout * 2);
        let out = f.feed(Event::PingTick);
        assert!(
            !out.iter().any(|a| matches!(a, Action::Signal { .. })),
            "{out:?}"
        );
        assert!(
            out.iter().any(|a| matches!(a, Action::Ping { .. })),
            "{out:?}"
        );
        assert_eq!(f.state("router1"), State::Running);
        // A worker that then stays silent is still killed in time.
        let mut killed = false;
        for _ in 0..(timeout.as_secs_f64() / interval.as_secs_f64()).ceil() as usize + 2 {
            f.advance(interval);
            let out = f.feed(Event::PingTick);
            killed |= out
                .iter()
                .any(|a| matches!(a, Action::Signal { sig: Sig::Kill, .. }));
        }
        assert!(killed);
    }

    #[test]
    fn an_answer_keeps_a_worker_running() {
        let mut f = Fake::started(vec![spec("router1", "router")]);
        let interval = Duration::from_secs_f64(ControllerOptions::default().worker_ping_interval);
        for _ in 0..10 {
            f.feed(Event::PingTick);
            f.advance(interval);
            let generation = f.generation("router1");
            f.feed(Event::Alive {
                id: "router1".into(),
                generation,
            });
        }
        f.feed(Event::PingTick);
        assert_eq!(f.state("router1"), State::Running);
    }

    #[test]
    fn a_stop_terms_containers_first_then_routers_and_kills_the_stubborn() {
        let mut f = Fake::started(vec![spec("router1", "router"), spec("c1", "container")]);
        let (r, c) = (f.pid("router1"), f.pid("c1"));
        let out = f.feed(Event::Stop);
        assert!(out.contains(&Action::Notify(Notify::Stopping)));
        assert!(out.contains(&Action::Signal {
            pid: c,
            sig: Sig::Term
        }));
        assert!(
            !out.contains(&Action::Signal {
                pid: r,
                sig: Sig::Term
            }),
            "routers last"
        );
        let Some(Action::WakeAt(deadline)) = out.iter().find(|a| matches!(a, Action::WakeAt(_)))
        else {
            panic!("{out:?}")
        };
        f.advance(*deadline - f.now);
        let out = f.feed(Event::Wake);
        assert!(
            out.contains(&Action::Signal {
                pid: c,
                sig: Sig::Kill
            }),
            "{out:?}"
        );
        let out = f.exit("c1", Exit::Signal(9));
        assert!(
            out.contains(&Action::Signal {
                pid: r,
                sig: Sig::Term
            }),
            "{out:?}"
        );
        let out = f.exit("router1", Exit::Code(0));
        assert_eq!(out.last(), Some(&Action::Done(Ok(()))));
        assert!(f.feed(Event::Stop).is_empty(), "done is done");
    }

    #[test]
    fn a_reload_adds_removes_restarts_and_reconfigures_in_place() {
        let mut f = Fake::started(vec![
            spec("router1", "router"),
            spec("c1", "container"),
            spec("c2", "container"),
        ]);
        let (c1, c2) = (f.pid("c1"), f.pid("c2"));
        let mut router = spec("router1", "router");
        if let WorkerKind::Router(r) = &mut router.kind {
            r.realms
                .push(serde_json::from_value(serde_json::json!({"name": "realm2"})).unwrap());
        }
        let mut c2_new = spec("c2", "container");
        c2_new.options.loglevel = Some("debug".into());
        let out = f.feed(Event::Reload(
            Ok(vec![router, c2_new, spec("g1", "guest")]),
            Box::default(),
        ));
        assert_eq!(out.first(), Some(&Action::Notify(Notify::Reloading)));
        assert!(
            out.contains(&Action::Signal {
                pid: c1,
                sig: Sig::Term
            }),
            "c1 removed"
        );
        assert!(
            out.contains(&Action::Signal {
                pid: c2,
                sig: Sig::Term
            }),
            "c2 changed"
        );
        assert!(
            out.iter()
                .any(|a| matches!(a, Action::Reconfigure { id, .. } if id == "router1")),
            "only realms changed: in place"
        );
        assert_eq!(f.state("g1"), State::Running, "added and started");
        f.exit("c1", Exit::Signal(15));
        assert!(f.life.slot("c1").is_none(), "removed once it exited");
        f.exit("c2", Exit::Signal(15));
        assert_eq!(
            f.state("c2"),
            State::Starting,
            "started again with its new config"
        );
        // A router that refuses the change in place is restarted.
        let spec = Box::new(f.life.slot("router1").unwrap().spec.clone());
        let out = f.feed(Event::Reconfigured {
            id: "router1".into(),
            spec,
            ok: false,
        });
        assert!(out.contains(&Action::Signal {
            pid: f.pid("router1"),
            sig: Sig::Term
        }));
    }

    #[test]
    fn an_invalid_reload_keeps_the_old_config() {
        let mut f = Fake::started(vec![spec("router1", "router")]);
        let out = f.feed(Event::Reload(
            Err("workers[0].type: unknown".into()),
            Box::default(),
        ));
        assert!(out.contains(&Action::Notify(Notify::Ready(
            "config reload failed; running on the old config".into()
        ))));
        assert_eq!(f.state("router1"), State::Running);
    }
}

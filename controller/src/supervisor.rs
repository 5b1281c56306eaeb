//! Restart decisions, as data: what to do when a worker exits.
//!
//! [`Supervision`] is pure (time is passed in) and unit-tested; the async
//! shell in [`crate::node`] spawns, waits and sleeps as it says.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use trellis_config::node::{RestartConfig, RestartPolicy};

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl Exit {
    /// From a child's exit status.
    pub fn from_status(s: std::process::ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        match (s.code(), s.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(sig)) => Exit::Signal(sig),
            (None, None) => Exit::Code(-1),
        }
    }

    fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exited with status {c}"),
            Exit::Signal(s) => match nix::sys::signal::Signal::try_from(*s) {
                Ok(sig) => write!(f, "killed by {}", sig.as_str()),
                Err(_) => write!(f, "killed by signal {s}"),
            },
        }
    }
}

/// What to do after an exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after this delay.
    Restart(Duration),
    /// Leave it stopped (the policy says so).
    Stay,
    /// Too many restarts: leave it failed, with the reason for the log.
    GiveUp(String),
}

/// One worker's restart history.
#[derive(Debug, Clone)]
pub struct Supervision {
    cfg: RestartConfig,
    /// Restart times within the window, oldest first.
    recent: VecDeque<Instant>,
    /// Restarts since the node started, for `trellis status`.
    pub total_restarts: u32,
}

impl Supervision {
    /// A fresh history under `cfg`.
    pub fn new(cfg: RestartConfig) -> Supervision {
        Supervision {
            cfg,
            recent: VecDeque::new(),
            total_restarts: 0,
        }
    }

    /// The worker exited at `now`: restart, stay down, or give up.
    pub fn on_exit(&mut self, exit: Exit, now: Instant) -> Decision {
        let wanted = match self.cfg.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !exit.success(),
            RestartPolicy::Never => false,
        };
        if !wanted {
            return Decision::Stay;
        }
        let window = Duration::from_secs_f64(self.cfg.window);
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.cfg.max_restarts as usize {
            return Decision::GiveUp(format!(
                "{} restarts within {} s (options.restart.max_restarts); not restarting again",
                self.recent.len(),
                self.cfg.window
            ));
        }
        let n = self.recent.len().min(30) as i32;
        let delay = (self.cfg.backoff_initial * 2f64.powi(n)).min(self.cfg.backoff_max);
        self.recent.push_back(now);
        self.total_restarts += 1;
        Decision::Restart(Duration::from_secs_f64(delay))
    }
}

/// How a worker answers the controller's pings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// It answers.
    Fine,
    /// Silent for more than two ping intervals: shown as unresponsive.
    Unresponsive,
    /// Silent for longer than the ping timeout: to be killed.
    Dead,
}

/// One worker's liveness, from the answers to its pings (pure: time is
/// passed in).
#[derive(Debug, Clone)]
pub struct Liveness {
    interval: Duration,
    timeout: Duration,
    last_answer: Instant,
}

impl Liveness {
    /// A worker that was (re)started or became ready at `now`.
    pub fn new(interval: Duration, timeout: Duration, now: Instant) -> Liveness {
        Liveness {
            interval,
            timeout,
            last_answer: now,
        }
    }

    /// It answered a ping at `now`.
    pub fn answered(&mut self, now: Instant) {
        self.last_answer = now;
    }

    /// What its silence so far means.
    pub fn health(&self, now: Instant) -> Health {
        let silent = now.saturating_duration_since(self.last_answer);
        if silent > self.timeout {
            Health::Dead
        } else if silent > self.interval * 2 {
            Health::Unresponsive
        } else {
            Health::Fine
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(policy: RestartPolicy) -> RestartConfig {
        RestartConfig {
            policy,
            max_restarts: 3,
            window: 10.0,
            backoff_initial: 0.5,
            backoff_max: 1.5,
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_then_gives_up() {
        let mut s = Supervision::new(cfg(RestartPolicy::Always));
        let t = Instant::now();
        let crash = Exit::Signal(9);
        assert_eq!(
            s.on_exit(crash, t),
            Decision::Restart(Duration::from_millis(500))
        );
        assert_eq!(
            s.on_exit(crash, t + Duration::from_secs(1)),
            Decision::Restart(Duration::from_secs(1))
        );
        assert_eq!(
            s.on_exit(crash, t + Duration::from_secs(2)),
            Decision::Restart(Duration::from_millis(1500))
        );
        let d = s.on_exit(crash, t + Duration::from_secs(3));
        assert!(
            matches!(&d, Decision::GiveUp(why) if why.contains("3 restarts within 10 s")),
            "{d:?}"
        );
        assert_eq!(s.total_restarts, 3);
    }

    #[test]
    fn old_restarts_leave_the_window() {
        let mut s = Supervision::new(cfg(RestartPolicy::Always));
        let t = Instant::now();
        for i in 0..3 {
            assert!(matches!(
                s.on_exit(Exit::Code(1), t + Duration::from_secs(i)),
                Decision::Restart(_)
            ));
        }
        // 20 s later the window is empty again: back to the first delay.
        assert_eq!(
            s.on_exit(Exit::Code(1), t + Duration::from_secs(22)),
            Decision::Restart(Duration::from_millis(500))
        );
    }

    #[test]
    fn policies() {
        let t = Instant::now();
        let mut on_failure = Supervision::new(cfg(RestartPolicy::OnFailure));
        assert_eq!(on_failure.on_exit(Exit::Code(0), t), Decision::Stay);
        assert!(matches!(
            on_failure.on_exit(Exit::Code(2), t),
            Decision::Restart(_)
        ));
        assert!(matches!(
            on_failure.on_exit(Exit::Signal(9), t),
            Decision::Restart(_)
        ));
        let mut never = Supervision::new(cfg(RestartPolicy::Never));
        assert_eq!(never.on_exit(Exit::Signal(9), t), Decision::Stay);
        let mut always = Supervision::new(cfg(RestartPolicy::Always));
        assert!(matches!(
            always.on_exit(Exit::Code(0), t),
            Decision::Restart(_)
        ));
    }

    #[test]
    fn exits_read_well() {
        assert_eq!(Exit::Signal(9).to_string(), "killed by SIGKILL");
        assert_eq!(Exit::Code(3).to_string(), "exited with status 3");
    }

    #[test]
    fn silence_becomes_unresponsive_then_dead() {
        let t = Instant::now();
        let mut l = Liveness::new(Duration::from_secs(1), Duration::from_secs(5), t);
        let at = |s: f64| t + Duration::from_secs_f64(s);
        assert_eq!(l.health(at(1.5)), Health::Fine);
        assert_eq!(l.health(at(2.5)), Health::Unresponsive);
        assert_eq!(l.health(at(5.5)), Health::Dead);
        l.answered(at(5.0));
        assert_eq!(l.health(at(5.5)), Health::Fine, "an answer heals it");
        assert_eq!(l.health(at(10.1)), Health::Dead);
    }
}

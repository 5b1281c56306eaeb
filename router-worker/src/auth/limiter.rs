//! The login limiter: failed authentications counted per (address,
//! claimed authid), which locks that pair out, and per address, which only
//! slows it. Sans-IO: every method takes the time, so tests use fake time.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses tracked by the failure limiter at most; the oldest are
/// forgotten first, so a flood of addresses cannot grow memory.
const MAX_TRACKED_PEERS: usize = 65_536;

/// What the failure limiter says about a new attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Go ahead.
    Open,
    /// Go ahead after this pause: the address has failed often, with
    /// whatever authids. Bounded by `auth_failure_delay`, so a correct login
    /// from a busy NAT or proxy address is slowed a little, never refused.
    Delay(Duration),
    /// This authid has failed too often from this address: refused until
    /// the window has passed (the time left). `log` is true once per
    /// window, so that a storm of attempts is one line in the log.
    Locked { wait: Duration, log: bool },
}

/// Counts failed authentications in a sliding window: per (address,
/// claimed authid), which locks that pair out after `max` failures, and per
/// address, which only slows further attempts from it. Sans-IO: every
/// method takes the time, so tests use fake time.
#[derive(Debug)]
pub struct FailureLimiter {
    max: u32,
    window: Duration,
    /// The longest pause for an address (`auth_failure_delay`).
    max_delay: Duration,
    /// A std Mutex: held for a few map operations, never across an await.
    state: Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    /// Failure times per (address, authid).
    pairs: HashMap<(IpAddr, String), Failures>,
    /// Failure times per address, any authid (or none).
    addrs: HashMap<IpAddr, Failures>,
}

#[derive(Debug, Default)]
struct Failures {
    times: VecDeque<Instant>,
    /// When the lockout was last logged.
    logged: Option<Instant>,
}

impl Failures {
    fn expire(&mut self, now: Instant, window: Duration) {
        while self
            .times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > window)
        {
            self.times.pop_front();
        }
    }
}

/// Whether `map` may take `key`: at most [`MAX_TRACKED_PEERS`] entries,
/// those without a failure in the window forgotten first, so that a flood
/// of addresses or authids cannot grow memory.
fn room_for<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, Failures>,
    key: &K,
    now: Instant,
    window: Duration,
) -> bool {
    if map.len() < MAX_TRACKED_PEERS || map.contains_key(key) {
        return true;
    }
    map.retain(|_, f| {
        f.times
            .back()
            .is_some_and(|t| now.saturating_duration_since(*t) <= window)
    });
    map.len() < MAX_TRACKED_PEERS
}

/// The pause per failure over the limit, before `max_delay` caps it.
const DELAY_STEP: Duration = Duration::from_millis(100);
/// Failures kept per address: enough to compute the pause, bounded.
const MAX_ADDR_FAILURES: usize = 1024;

impl FailureLimiter {
    /// Lock a pair out after `max` failures within `window`; pause an
    /// address's attempts by up to `max_delay` once it has failed more
    /// than `max` times.
    pub fn new(max: u32, window: Duration, max_delay: Duration) -> Self {
        FailureLimiter {
            max,
            window,
            max_delay,
            state: Mutex::new(LimiterState::default()),
        }
    }

    /// Whether an attempt from `ip`, claiming `authid`, may proceed.
    /// Failures a pair may have in the window before it is locked out.
    pub fn max(&self) -> u32 {
        self.max
    }

    pub fn gate(&self, ip: IpAddr, authid: Option<&str>, now: Instant) -> Gate {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(authid) = authid
            && let Some(f) = st.pairs.get_mut(&(ip, authid.to_owned()))
        {
            f.expire(now, self.window);
            if f.times.len() as u32 >= self.max
                && let Some(first) = f.times.front()
            {
                let wait = self
                    .window
                    .saturating_sub(now.saturating_duration_since(*first));
                let log = f
                    .logged
                    .is_none_or(|t| now.saturating_duration_since(t) >= self.window);
                if log {
                    f.logged = Some(now);
                }
                return Gate::Locked { wait, log };
            }
        }
        let Some(f) = st.addrs.get_mut(&ip) else {
            return Gate::Open;
        };
        f.expire(now, self.window);
        let over = (f.times.len() as u32).saturating_sub(self.max);
        if over == 0 {
            return Gate::Open;
        }
        Gate::Delay(DELAY_STEP.saturating_mul(over).min(self.max_delay))
    }

    /// Record a failure of `ip` claiming `authid`; returns how many
    /// failures the address now has in the window.
    pub fn record(&self, ip: IpAddr, authid: Option<&str>, now: Instant) -> usize {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let window = self.window;
        let max = self.max as usize;
        if !room_for(&mut st.addrs, &ip, now, window) {
            return 0;
        }
        let f = st.addrs.entry(ip).or_default();
        f.expire(now, window);
        f.times.push_back(now);
        if f.times.len() > MAX_ADDR_FAILURES {
            f.times.pop_front();
        }
        let count = f.times.len();
        let Some(authid) = authid else {
            return count;
        };
        let key = (ip, authid.to_owned());
        if !room_for(&mut st.pairs, &key, now, window) {
            return count;
        }
        let f = st.pairs.entry(key).or_default();
        f.times.push_back(now);
        while f.times.len() > max.max(1) {
            f.times.pop_front();
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> (FailureLimiter, Instant) {
        let l = FailureLimiter::new(3, Duration::from_secs(60), Duration::from_secs(1));
        (l, Instant::now())
    }

    #[test]
    fn a_pair_is_locked_out_after_max_failures() {
        let (l, t0) = limiter();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.1".parse().unwrap();
        for i in 0..3 {
            assert_eq!(l.gate(a, Some("joe"), t0), Gate::Open, "attempt {i}");
            l.record(a, Some("joe"), t0);
        }
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(
            l.gate(a, Some("joe"), t1),
            Gate::Locked {
                wait: Duration::from_secs(50),
                log: true
            }
        );
        // Logged once per window, however often it is tried.
        assert!(matches!(
            l.gate(a, Some("joe"), t1),
            Gate::Locked { log: false, .. }
        ));
        // Another user behind the same address, anonymous from it, and joe
        // from elsewhere are not refused.
        assert_eq!(l.gate(a, Some("ann"), t1), Gate::Open);
        assert_eq!(l.gate(a, None, t1), Gate::Open);
        assert_eq!(l.gate(b, Some("joe"), t1), Gate::Open);
        // The window passes.
        assert_eq!(
            l.gate(a, Some("joe"), t0 + Duration::from_secs(61)),
            Gate::Open
        );
    }

    #[test]
    fn a_busy_address_is_slowed_within_a_bound_never_refused() {
        let (l, t0) = limiter();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        // A storm over many authids (credential stuffing).
        for i in 0..4 {
            l.record(a, Some(&format!("user{i}")), t0);
        }
        assert_eq!(
            l.gate(a, Some("ann"), t0),
            Gate::Delay(Duration::from_millis(100))
        );
        for i in 0..100 {
            l.record(a, Some(&format!("more{i}")), t0);
        }
        assert_eq!(
            l.gate(a, Some("ann"), t0),
            Gate::Delay(Duration::from_secs(1)),
            "capped at auth_failure_delay"
        );
        assert_eq!(l.gate(a, None, t0), Gate::Delay(Duration::from_secs(1)));
        assert_eq!(
            l.gate(a, None, t0 + Duration::from_secs(61)),
            Gate::Open,
            "the window passes"
        );
    }
}

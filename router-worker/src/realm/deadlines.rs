//! The realm actor's timers (call timeouts, authorizer deadlines) as one
//! ordered set of deadlines, polled by the actor's loop (quinn's
//! `poll_timeout`): no task per timer.

use std::collections::{BTreeMap, HashMap};

use tokio::time::Instant;

use super::core::Timer;

/// Pending timers, earliest first.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    by_time: BTreeMap<(Instant, u64), Timer>,
    by_timer: HashMap<Timer, (Instant, u64)>,
    seq: u64,
}

impl Deadlines {
    /// Start (or restart) `timer` to fire at `at`.
    pub(crate) fn start(&mut self, timer: Timer, at: Instant) {
        self.cancel(&timer);
        self.seq += 1;
        self.by_time.insert((at, self.seq), timer);
        self.by_timer.insert(timer, (at, self.seq));
    }

    /// Forget `timer`, if it is pending.
    pub(crate) fn cancel(&mut self, timer: &Timer) {
        if let Some(key) = self.by_timer.remove(timer) {
            self.by_time.remove(&key);
        }
    }

    /// When the earliest pending timer fires.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.by_time.first_key_value().map(|((at, _), _)| *at)
    }

    /// Take the timers due at `now`, earliest first.
    pub(crate) fn due(&mut self, now: Instant) -> Vec<Timer> {
        let mut out = Vec::new();
        while let Some(entry) = self.by_time.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let t = entry.remove();
            self.by_timer.remove(&t);
            out.push(t);
        }
        out
    }

    /// Pending timers.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_timer.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn timer(n: u64) -> Timer {
        Timer {
            invocation: n,
            caller: 1,
            request: n,
        }
    }

    #[test]
    fn timers_fire_in_order_and_cancel() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        assert_eq!(d.next(), None);
        d.start(timer(1), t0 + Duration::from_millis(300));
        d.start(timer(2), t0 + Duration::from_millis(100));
        d.start(timer(3), t0 + Duration::from_millis(200));
        d.start(timer(4), t0 + Duration::from_millis(100));
        assert_eq!(d.next(), Some(t0 + Duration::from_millis(100)));
        d.cancel(&timer(3));
        // Restarting moves a timer.
        d.start(timer(1), t0 + Duration::from_millis(150));
        assert!(d.due(t0 + Duration::from_millis(99)).is_empty());
        assert_eq!(
            d.due(t0 + Duration::from_millis(200)),
            vec![timer(2), timer(4), timer(1)]
        );
        assert_eq!(d.len(), 0);
        assert_eq!(d.next(), None);
    }
}

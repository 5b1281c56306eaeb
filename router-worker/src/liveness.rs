//! The cluster's liveness rules, without I/O or clocks of their own: a
//! member heard within the last heartbeats is live; silent for
//! [`SILENT_AFTER`] it is passed over by calls; silent for [`DEAD_AFTER`]
//! it is dead. This node judges only after it has itself been connected
//! that long without a break: after a reconnect, or after this process
//! was stopped (a gap of more than three heartbeats between ticks), what
//! it last heard says nothing of the others, and it judges afresh.
//!
//! The backplane's heartbeat loop feeds it the members heard and a tick
//! per heartbeat, with the time; tests give it fake time.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// A member silent this long is dead: its registrations are purged and
/// calls to it fail.
pub const DEAD_AFTER: Duration = Duration::from_secs(5);
/// A member silent this long (two heartbeats missed) is passed over by
/// calls while another callee can take them.
pub const SILENT_AFTER: Duration = Duration::from_millis(2500);
/// How often a member says it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// What a tick decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Say this member is alive (the link is up).
    pub heartbeat: bool,
    /// Members that became silent (`false`) or were heard again (`true`).
    pub reachable: Vec<(String, bool)>,
    /// Members now taken as dead (forgotten here).
    pub dead: Vec<String>,
}

/// The judge of the other members' liveness.
#[derive(Debug)]
pub struct Liveness {
    /// When each member was last heard.
    seen: HashMap<String, Instant>,
    /// Members passed over now.
    silent: HashSet<String>,
    last_tick: Option<Instant>,
    seen_reconnects: u64,
    /// Since when this node has been connected without a break.
    connected_since: Option<Instant>,
}

impl Liveness {
    pub fn new() -> Liveness {
        Liveness {
            seen: HashMap::new(),
            silent: HashSet::new(),
            last_tick: None,
            seen_reconnects: 0,
            connected_since: None,
        }
    }

    /// `member` said it is alive at `now`.
    pub fn heard(&mut self, member: &str, now: Instant) {
        match self.seen.get_mut(member) {
            Some(at) => *at = now,
            None => {
                self.seen.insert(member.to_owned(), now);
            }
        }
    }

    /// Members heard of and not dead.
    pub fn members(&self) -> usize {
        self.seen.len()
    }

    /// Their names.
    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.seen.keys()
    }

    /// `member` is known from other traffic (a directory entry, a meta
    /// answer): heard now if it was not known, else unchanged.
    pub fn known(&mut self, member: &str, now: Instant) {
        if !self.seen.contains_key(member) {
            self.seen.insert(member.to_owned(), now);
        }
    }

    /// A heartbeat tick at `now`: `up` if the link is connected,
    /// `reconnects` the link's reconnect count so far.
    pub fn tick(&mut self, now: Instant, up: bool, reconnects: u64) -> Verdict {
        let frozen = self
            .last_tick
            .is_some_and(|t| now.saturating_duration_since(t) > 3 * HEARTBEAT);
        self.last_tick = Some(now);
        let reconnected = reconnects != self.seen_reconnects;
        self.seen_reconnects = reconnects;
        if !up || frozen || reconnected {
            self.connected_since = None;
        }
        let mut v = Verdict::default();
        if !up {
            return v;
        }
        v.heartbeat = true;
        let since = *self.connected_since.get_or_insert(now);
        let connected = now.saturating_duration_since(since);
        if connected >= SILENT_AFTER {
            let now_silent: HashSet<String> = self
                .seen
                .iter()
                .filter(|(_, at)| now.saturating_duration_since(**at) > SILENT_AFTER)
                .map(|(k, _)| k.clone())
                .collect();
            let mut heard_again: Vec<_> = self.silent.difference(&now_silent).cloned().collect();
            let mut went_silent: Vec<_> = now_silent.difference(&self.silent).cloned().collect();
            heard_again.sort();
            went_silent.sort();
            v.reachable
                .extend(heard_again.into_iter().map(|m| (m, true)));
            v.reachable
                .extend(went_silent.into_iter().map(|m| (m, false)));
            self.silent = now_silent;
        }
        if connected >= DEAD_AFTER {
            let mut dead: Vec<String> = self
                .seen
                .iter()
                .filter(|(_, at)| now.saturating_duration_since(**at) > DEAD_AFTER)
                .map(|(k, _)| k.clone())
                .collect();
            dead.sort();
            for d in &dead {
                self.seen.remove(d);
                self.silent.remove(d);
            }
            v.dead = dead;
        }
        v
    }
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_silent_member_is_passed_over_then_dead() {
        let t0 = Instant::now();
        let mut l = Liveness::new();
        l.heard("b", t0);
        // Ticks every second; b is heard until 3 s.
        for s in 0..=3 {
            l.heard("b", t0 + Duration::from_secs(s));
            let v = l.tick(t0 + Duration::from_secs(s), true, 0);
            assert!(
                v.heartbeat && v.reachable.is_empty() && v.dead.is_empty(),
                "{s}: {v:?}"
            );
        }
        // 2.5 s after the last heartbeat: silent.
        assert!(l.tick(t0 + ms(5_000), true, 0).reachable.is_empty());
        let v = l.tick(t0 + ms(6_000), true, 0);
        assert_eq!(v.reachable, vec![("b".to_owned(), false)]);
        // Heard again: reachable.
        l.heard("b", t0 + ms(6_500));
        let v = l.tick(t0 + ms(7_000), true, 0);
        assert_eq!(v.reachable, vec![("b".to_owned(), true)]);
        // Silent from 6.5 s on: passed over at 10 s, dead at 12 s (ticks
        // every second: a longer gap would be a frozen process).
        let mut events = Vec::new();
        for s in 8..=12 {
            let v = l.tick(t0 + Duration::from_secs(s), true, 0);
            events.extend(v.reachable.into_iter().map(|r| (s, format!("{r:?}"))));
            events.extend(v.dead.into_iter().map(|d| (s, format!("dead {d}"))));
        }
        assert_eq!(
            events,
            vec![(10, "(\"b\", false)".to_owned()), (12, "dead b".to_owned())]
        );
        assert_eq!(l.members(), 0);
    }

    #[test]
    fn a_reconnect_or_a_frozen_process_judges_afresh() {
        let t0 = Instant::now();
        let mut l = Liveness::new();
        for s in 0..=10 {
            l.tick(t0 + Duration::from_secs(s), true, 0);
        }
        l.heard("b", t0 + Duration::from_secs(10));
        // The link drops and comes back: no verdict for 2.5 s, no death for
        // 5 s after the reconnect, whatever b's silence meanwhile.
        assert!(!l.tick(t0 + Duration::from_secs(11), false, 0).heartbeat);
        for s in 12..=16 {
            let v = l.tick(t0 + Duration::from_secs(s), true, 1);
            assert!(v.dead.is_empty(), "{s}: {v:?}");
        }
        let v = l.tick(t0 + Duration::from_secs(17), true, 1);
        assert_eq!(v.dead, vec!["b".to_owned()]);

        // This process was stopped for 30 s: the others' silence is not
        // theirs; judged afresh from the thaw.
        let mut l = Liveness::new();
        for s in 0..=10 {
            l.heard("c", t0 + Duration::from_secs(s));
            l.tick(t0 + Duration::from_secs(s), true, 0);
        }
        let thaw = t0 + Duration::from_secs(40);
        let v = l.tick(thaw, true, 0);
        assert!(v.reachable.is_empty() && v.dead.is_empty(), "{v:?}");
        l.heard("c", thaw + ms(200));
        for s in 1..=6 {
            l.heard("c", thaw + Duration::from_secs(s));
            let v = l.tick(thaw + Duration::from_secs(s), true, 0);
            assert!(v.reachable.is_empty() && v.dead.is_empty(), "{s}: {v:?}");
        }
    }
}

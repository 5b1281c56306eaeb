//! The Dealer: registrations and calls in flight (sans-IO).
//!
//! Owned by the realm's core. It decides which callee gets a call (the most
//! specific registration: exact, then longest prefix, then wildcard; within a
//! shared registration, by its invoke policy) and remembers each invocation
//! until its final YIELD or ERROR, or until caller or callee leaves.

use crate::fast::{HashMap, HashSet};

use proto::Id;
use proto::uri::{self, MatchPolicy, Specificity};
use rand::RngExt;

pub use proto::options::InvokePolicy;

/// A registration: a procedure (or pattern) and its callees.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The registration id handed to callees.
    pub id: Id,
    /// Procedure URI or pattern.
    pub procedure: String,
    /// How `procedure` matches calls.
    pub policy: MatchPolicy,
    /// How a callee is chosen.
    pub invoke: InvokePolicy,
    /// Callees in registration order.
    pub callees: Vec<Id>,
    /// Each callee's place in that order (beside `callees`): in a cluster
    /// the directory's revision of its entry, one order for every node;
    /// [`UNRANKED`] until known (a new local callee: the latest).
    ranks: Vec<u64>,
    /// Next round-robin position.
    rr_next: usize,
    /// When the registration was created (ISO 8601, for the meta API).
    pub created: String,
}

/// The rank of a callee whose place in the cluster's order is not known
/// yet: after every ranked one, in the order registered.
pub const UNRANKED: u64 = u64::MAX;

/// Why a REGISTER was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterError {
    /// A single registration exists already (`wamp.error.procedure_already_exists`).
    AlreadyExists,
    /// A shared registration exists with another invoke policy.
    PolicyMismatch {
        /// The existing registration's policy.
        existing: InvokePolicy,
    },
    /// This session has registered this procedure already.
    AlreadyRegisteredBySession,
}

/// A call in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// The invocation id the callee sees.
    pub invocation: Id,
    /// The calling session.
    pub caller: Id,
    /// The caller's CALL request id.
    pub caller_request: Id,
    /// The session running the call.
    pub callee: Id,
    /// The registration it was routed through.
    pub registration: Id,
    /// The caller is still sending progressive call invocations.
    pub caller_progress: bool,
    /// The callee has been sent INTERRUPT (kill mode): a second CANCEL is
    /// ignored.
    pub interrupted: bool,
    /// When the call was routed (the realm's clock), for its duration.
    pub started: std::time::SystemTime,
}

/// What [`Dealer::remove_session`] cleaned up.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// Registrations the session held and whether each was deleted.
    pub registrations: Vec<(Id, bool)>,
    /// Calls the session was running: their callers must get an error.
    pub orphaned_calls: Vec<Pending>,
    /// Calls the session had made: their callees may be interrupted.
    pub abandoned_calls: Vec<Pending>,
}

/// All registrations and pending calls of one realm.
#[derive(Debug, Default)]
pub struct Dealer {
    regs: HashMap<Id, Registration>,
    /// Exact registrations by procedure: the common case, no scan.
    exact: HashMap<String, Id>,
    /// Pattern registrations by (policy, pattern).
    patterns: HashMap<(MatchPolicy, String), Id>,
    /// Registration ids per session, for cleanup on leave.
    regs_by_session: HashMap<Id, HashSet<Id>>,
    /// Calls in flight by invocation id.
    pending: HashMap<Id, Pending>,
    /// Invocation id by (caller, request), to catch reused request ids and
    /// to find a call from its caller's side.
    by_caller: HashMap<(Id, Id), Id>,
    /// Calls in flight per session taking part (as caller or callee; a
    /// session calling itself counts once): a count rather than the set
    /// of ids, so a call costs no allocation. A session that leaves with
    /// calls in flight has them found in `pending`.
    calls_by_session: HashMap<Id, u32>,
    /// Calls in flight per caller, for the per-session limit.
    caller_calls: HashMap<Id, usize>,
    /// (registration, callee) → its `concurrency` limit and the
    /// invocations it runs now; only callees that set a limit.
    concurrency: HashMap<(Id, Id), (u32, u32)>,
    next_inv: Id,
}

fn next(counter: &mut Id) -> Id {
    *counter = if *counter >= proto::MAX_ID {
        1
    } else {
        *counter + 1
    };
    *counter
}

impl Dealer {
    /// An empty dealer.
    pub fn new() -> Self {
        Dealer::default()
    }

    /// Register `session` as a callee of `procedure`.
    ///
    /// # Errors
    /// [`RegisterError`] when the procedure is taken or the invoke policies
    /// disagree.
    pub fn register(
        &mut self,
        session: Id,
        procedure: &str,
        policy: MatchPolicy,
        invoke: InvokePolicy,
    ) -> Result<Id, RegisterError> {
        let existing = match policy {
            MatchPolicy::Exact => self.exact.get(procedure).copied(),
            _ => self.patterns.get(&(policy, procedure.to_owned())).copied(),
        };
        if let Some(id) = existing
            && let Some(reg) = self.regs.get_mut(&id)
        {
            if reg.callees.contains(&session) {
                return Err(RegisterError::AlreadyRegisteredBySession);
            }
            if reg.invoke == InvokePolicy::Single && invoke == InvokePolicy::Single {
                return Err(RegisterError::AlreadyExists);
            }
            if reg.invoke != invoke {
                return Err(RegisterError::PolicyMismatch {
                    existing: reg.invoke,
                });
            }
            reg.callees.push(session);
            reg.ranks.push(UNRANKED);
            self.regs_by_session.entry(session).or_default().insert(id);
            return Ok(id);
        }
        let id = crate::broker::stable_id("registration", policy, procedure, |id| {
            self.regs.contains_key(&id)
        });
        self.regs.insert(
            id,
            Registration {
                id,
                procedure: procedure.to_owned(),
                policy,
                invoke,
                callees: vec![session],
                ranks: vec![UNRANKED],
                rr_next: 0,
                created: crate::time::now_iso8601(),
            },
        );
        match policy {
            MatchPolicy::Exact => self.exact.insert(procedure.to_owned(), id),
            _ => self.patterns.insert((policy, procedure.to_owned()), id),
        };
        self.regs_by_session.entry(session).or_default().insert(id);
        Ok(id)
    }

    /// Limit the invocations `session` runs at once for registration `id`
    /// (Crossbar.io's `concurrency`; 0: no limit).
    pub fn set_concurrency(&mut self, id: Id, session: Id, limit: u32) {
        if limit == 0 {
            self.concurrency.remove(&(id, session));
        } else {
            self.concurrency.insert((id, session), (limit, 0));
        }
    }

    /// True if `callee` runs as many invocations of `registration` as its
    /// `concurrency` allows.
    pub fn at_limit(&self, registration: Id, callee: Id) -> bool {
        !self.concurrency.is_empty()
            && self
                .concurrency
                .get(&(registration, callee))
                .is_some_and(|(limit, running)| running >= limit)
    }

    /// Whether a call to `procedure` would find a callee with room now (a
    /// registration whose callees are not all at their `concurrency`).
    pub fn can_take(&self, procedure: &str) -> bool {
        self.lookup(procedure)
            .is_some_and(|r| r.callees.iter().any(|c| !self.at_limit(r.id, *c)))
    }

    /// The callees of `registration` at their limit.
    pub fn busy_callees(&self, registration: Id) -> Vec<Id> {
        self.regs.get(&registration).map_or_else(Vec::new, |r| {
            r.callees
                .iter()
                .copied()
                .filter(|c| self.at_limit(registration, *c))
                .collect()
        })
    }

    /// Remove `session` from registration `id`. `None` if it does not hold
    /// it (`wamp.error.no_such_registration`); otherwise whether the
    /// registration is now deleted.
    pub fn unregister(&mut self, session: Id, id: Id) -> Option<bool> {
        let held = self.regs_by_session.get_mut(&session)?;
        if !held.remove(&id) {
            return None;
        }
        if held.is_empty() {
            self.regs_by_session.remove(&session);
        }
        Some(self.detach(session, id))
    }

    fn detach(&mut self, session: Id, id: Id) -> bool {
        let Some(reg) = self.regs.get_mut(&id) else {
            return false;
        };
        if let Some(i) = reg.callees.iter().position(|c| *c == session) {
            reg.callees.remove(i);
            reg.ranks.remove(i);
        }
        self.concurrency.remove(&(id, session));
        if !reg.callees.is_empty() {
            if reg.rr_next >= reg.callees.len() {
                reg.rr_next = 0;
            }
            return false;
        }
        if let Some(reg) = self.regs.remove(&id) {
            match reg.policy {
                MatchPolicy::Exact => self.exact.remove(&reg.procedure),
                p => self.patterns.remove(&(p, reg.procedure)),
            };
        }
        true
    }

    /// The registration a call to `procedure` goes to: exact, else the
    /// longest prefix, else the most specific wildcard.
    pub fn lookup(&self, procedure: &str) -> Option<&Registration> {
        if let Some(reg) = self.exact.get(procedure).and_then(|id| self.regs.get(id)) {
            return Some(reg);
        }
        self.patterns
            .iter()
            .filter(|((policy, pattern), _)| uri::matches(pattern, *policy, procedure))
            .max_by(|((pa, a), ia), ((pb, b), ib)| {
                Specificity::of(a, *pa)
                    .cmp(&Specificity::of(b, *pb))
                    // Deterministic among equals: the older registration.
                    .then(ib.cmp(ia))
            })
            .and_then(|(_, id)| self.regs.get(id))
    }

    /// Route a call: pick the registration and callee by invoke policy.
    /// Returns (registration id, callee), or `None` when no callee exists.
    pub fn route(&mut self, procedure: &str, rng: &mut impl RngExt) -> Option<(Id, Id)> {
        let id = self.lookup(procedure)?.id;
        let reg = self.regs.get_mut(&id)?;
        let n = reg.callees.len();
        let callee = match reg.invoke {
            InvokePolicy::Single | InvokePolicy::First => *reg.callees.first()?,
            InvokePolicy::Last => *reg.callees.last()?,
            InvokePolicy::RoundRobin => {
                let c = *reg.callees.get(reg.rr_next % n)?;
                reg.rr_next = (reg.rr_next + 1) % n;
                c
            }
            InvokePolicy::Random => *reg.callees.get(rng.random_range(0..n))?,
        };
        Some((id, callee))
    }

    /// Route a call again, passing over the callees `unreachable` names
    /// (rerouting, WAMP's `wamp.error.unavailable`): the next one by the
    /// invoke policy. `None` when every callee is unreachable.
    pub fn reroute(
        &mut self,
        registration: Id,
        rng: &mut impl RngExt,
        unreachable: impl Fn(Id) -> bool,
    ) -> Option<Id> {
        let reg = self.regs.get_mut(&registration)?;
        let n = reg.callees.len();
        let ok = |c: &&Id| !unreachable(**c);
        match reg.invoke {
            InvokePolicy::Single | InvokePolicy::First => reg.callees.iter().find(ok).copied(),
            InvokePolicy::Last => reg.callees.iter().rev().find(ok).copied(),
            InvokePolicy::RoundRobin => {
                let start = reg.rr_next % n.max(1);
                let i = (0..n)
                    .map(|k| (start + k) % n)
                    .find(|&i| !unreachable(reg.callees[i]))?;
                reg.rr_next = (i + 1) % n;
                Some(reg.callees[i])
            }
            InvokePolicy::Random => {
                let left: Vec<Id> = reg.callees.iter().filter(ok).copied().collect();
                if left.is_empty() {
                    return None;
                }
                Some(left[rng.random_range(0..left.len())])
            }
        }
    }

    /// Put `session`'s place among registration `id`'s callees (for
    /// `first` and `last`): by `rank`, before the unranked.
    pub fn rank(&mut self, id: Id, session: Id, rank: u64) {
        let Some(reg) = self.regs.get_mut(&id) else {
            return;
        };
        let Some(i) = reg.callees.iter().position(|c| *c == session) else {
            return;
        };
        if reg.ranks[i] == rank {
            return;
        }
        reg.callees.remove(i);
        reg.ranks.remove(i);
        let at = reg.ranks.partition_point(|r| *r <= rank);
        reg.callees.insert(at, session);
        reg.ranks.insert(at, rank);
    }

    /// A registration by id.
    pub fn get(&self, id: Id) -> Option<&Registration> {
        self.regs.get(&id)
    }

    /// How many calls `caller` has in flight.
    pub fn calls_of(&self, caller: Id) -> usize {
        self.caller_calls.get(&caller).copied().unwrap_or(0)
    }

    /// True if `caller` already has call `request` in flight.
    pub fn call_in_flight(&self, caller: Id, request: Id) -> bool {
        self.by_caller.contains_key(&(caller, request))
    }

    /// Remember a call routed to `callee`; returns the invocation id.
    pub fn start_call(
        &mut self,
        caller: Id,
        caller_request: Id,
        registration: Id,
        callee: Id,
        now: std::time::SystemTime,
    ) -> Id {
        let mut invocation = next(&mut self.next_inv);
        while self.pending.contains_key(&invocation) {
            invocation = next(&mut self.next_inv);
        }
        let p = Pending {
            invocation,
            caller,
            caller_request,
            callee,
            registration,
            caller_progress: false,
            interrupted: false,
            started: now,
        };
        self.pending.insert(invocation, p);
        if let Some((_, running)) = self.concurrency.get_mut(&(registration, callee)) {
            *running += 1;
        }
        self.by_caller.insert((caller, caller_request), invocation);
        *self.caller_calls.entry(caller).or_insert(0) += 1;
        *self.calls_by_session.entry(caller).or_insert(0) += 1;
        if callee != caller {
            *self.calls_by_session.entry(callee).or_insert(0) += 1;
        }
        invocation
    }

    /// The call a caller has in flight under `request`.
    pub fn pending_for_caller(&self, caller: Id, request: Id) -> Option<Pending> {
        self.by_caller
            .get(&(caller, request))
            .and_then(|inv| self.pending.get(inv))
            .copied()
    }

    /// The call behind an invocation, if `callee` is the one running it.
    pub fn pending_for_callee(&self, callee: Id, invocation: Id) -> Option<Pending> {
        self.pending
            .get(&invocation)
            .filter(|p| p.callee == callee)
            .copied()
    }

    /// Change a call in flight.
    pub fn pending_mut(&mut self, invocation: Id) -> Option<&mut Pending> {
        self.pending.get_mut(&invocation)
    }

    /// The registration id for exactly this procedure and policy, if any.
    pub fn lookup_exact(&self, procedure: &str, policy: MatchPolicy) -> Option<Id> {
        match policy {
            MatchPolicy::Exact => self.exact.get(procedure).copied(),
            p => self.patterns.get(&(p, procedure.to_owned())).copied(),
        }
    }

    /// Registration ids by match policy (for `wamp.registration.list`).
    pub fn ids_by_policy(&self) -> [(MatchPolicy, Vec<Id>); 3] {
        crate::broker::group_by_policy(self.regs.values().map(|r| (r.policy, r.id)))
    }

    /// Finish a call (final YIELD, callee ERROR, cancel, timeout).
    pub fn finish(&mut self, invocation: Id) -> Option<Pending> {
        let p = self.pending.remove(&invocation)?;
        if let Some((_, running)) = self.concurrency.get_mut(&(p.registration, p.callee)) {
            *running = running.saturating_sub(1);
        }
        self.by_caller.remove(&(p.caller, p.caller_request));
        if let Some(n) = self.caller_calls.get_mut(&p.caller) {
            *n -= 1;
            if *n == 0 {
                self.caller_calls.remove(&p.caller);
            }
        }
        let parties = if p.caller == p.callee { 1 } else { 2 };
        for s in [p.caller, p.callee].into_iter().take(parties) {
            if let Some(n) = self.calls_by_session.get_mut(&s) {
                *n -= 1;
                if *n == 0 {
                    self.calls_by_session.remove(&s);
                }
            }
        }
        Some(p)
    }

    /// Number of calls in flight.
    pub fn pending_calls(&self) -> usize {
        self.pending.len()
    }

    /// Number of live registrations.
    pub fn len(&self) -> usize {
        self.regs.len()
    }

    /// True when there are no registrations.
    pub fn is_empty(&self) -> bool {
        self.regs.is_empty()
    }

    /// Drop everything of a session that left.
    pub fn remove_session(&mut self, session: Id) -> Removed {
        let mut out = Removed::default();
        if let Some(held) = self.regs_by_session.remove(&session) {
            let mut ids: Vec<Id> = held.into_iter().collect();
            ids.sort_unstable();
            for id in ids {
                let deleted = self.detach(session, id);
                out.registrations.push((id, deleted));
            }
        }
        if self.calls_by_session.contains_key(&session) {
            let mut ids: Vec<Id> = self
                .pending
                .values()
                .filter(|p| p.caller == session || p.callee == session)
                .map(|p| p.invocation)
                .collect();
            ids.sort_unstable();
            for inv in ids {
                if let Some(p) = self.finish(inv) {
                    if p.callee == session {
                        out.orphaned_calls.push(p);
                    } else {
                        out.abandoned_calls.push(p);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> rand::rngs::SmallRng {
        rand::rngs::SmallRng::seed_from_u64(7)
    }

    use InvokePolicy::*;
    use MatchPolicy::*;

    #[test]
    fn single_registration_is_exclusive() {
        let mut d = Dealer::new();
        let id = d.register(1, "com.add", Exact, Single).unwrap();
        assert_eq!(
            d.register(2, "com.add", Exact, Single),
            Err(RegisterError::AlreadyExists)
        );
        assert_eq!(
            d.register(2, "com.add", Exact, RoundRobin),
            Err(RegisterError::PolicyMismatch { existing: Single })
        );
        assert_eq!(d.route("com.add", &mut rng()), Some((id, 1)));
        assert_eq!(d.route("com.sub", &mut rng()), None);
    }

    #[test]
    fn invoke_policies_pick_callees() {
        let mut d = Dealer::new();
        let id = d.register(1, "p", Exact, RoundRobin).unwrap();
        d.register(2, "p", Exact, RoundRobin).unwrap();
        d.register(3, "p", Exact, RoundRobin).unwrap();
        assert_eq!(
            d.register(3, "p", Exact, RoundRobin),
            Err(RegisterError::AlreadyRegisteredBySession)
        );
        let picks: Vec<Id> = (0..4)
            .map(|_| d.route("p", &mut rng()).unwrap().1)
            .collect();
        assert_eq!(picks, [1, 2, 3, 1]);
        assert_eq!(d.unregister(2, id), Some(false));
        let picks: Vec<Id> = (0..3)
            .map(|_| d.route("p", &mut rng()).unwrap().1)
            .collect();
        assert!(picks.contains(&1) && picks.contains(&3) && !picks.contains(&2));

        let mut d = Dealer::new();
        for s in [5, 6, 7] {
            d.register(s, "q", Exact, First).unwrap();
        }
        assert_eq!(d.route("q", &mut rng()).unwrap().1, 5);
        d.remove_session(5);
        assert_eq!(d.route("q", &mut rng()).unwrap().1, 6);

        let mut d = Dealer::new();
        for s in [5, 6, 7] {
            d.register(s, "q", Exact, Last).unwrap();
        }
        assert_eq!(d.route("q", &mut rng()).unwrap().1, 7);
        d.remove_session(7);
        assert_eq!(d.route("q", &mut rng()).unwrap().1, 6);

        let mut d = Dealer::new();
        for s in [5, 6] {
            d.register(s, "q", Exact, Random).unwrap();
        }
        for _ in 0..20 {
            assert!([5, 6].contains(&d.route("q", &mut rng()).unwrap().1));
        }
    }

    #[test]
    fn first_and_last_follow_the_cluster_order() {
        // Callees 5 and 6 register here, 7 comes from the directory with
        // an older revision than theirs.
        let mut d = Dealer::new();
        let id = d.register(5, "q", Exact, First).unwrap();
        d.register(6, "q", Exact, First).unwrap();
        d.register(7, "q", Exact, First).unwrap();
        d.rank(id, 7, 10);
        assert_eq!(
            d.route("q", &mut rng()).unwrap().1,
            7,
            "ranked before unranked"
        );
        d.rank(id, 6, 12);
        d.rank(id, 5, 11);
        assert_eq!(d.get(id).unwrap().callees, [7, 5, 6]);
        d.rank(id, 7, 13);
        assert_eq!(d.get(id).unwrap().callees, [5, 6, 7]);
        d.unregister(6, id);
        assert_eq!(d.get(id).unwrap().callees, [5, 7]);
        d.register(8, "q", Exact, First).unwrap();
        d.rank(id, 8, 9);
        assert_eq!(d.route("q", &mut rng()).unwrap().1, 8);
        d.rank(id, 99, 1);
        assert_eq!(
            d.get(id).unwrap().callees,
            [8, 5, 7],
            "an unknown callee changes nothing"
        );
    }

    #[test]
    fn reroute_passes_over_unreachable_callees() {
        let mut d = Dealer::new();
        let id = d.register(1, "p", Exact, RoundRobin).unwrap();
        for s in [2, 3, 4] {
            d.register(s, "p", Exact, RoundRobin).unwrap();
        }
        let down = |c: Id| c == 2 || c == 3;
        let picks: Vec<Id> = (0..4)
            .map(|_| d.reroute(id, &mut rng(), down).unwrap())
            .collect();
        assert_eq!(picks, [1, 4, 1, 4]);
        for policy in [First, Last, Random, Single] {
            let mut d = Dealer::new();
            let id = d.register(1, "p", Exact, policy).unwrap();
            if policy != Single {
                d.register(2, "p", Exact, policy).unwrap();
                assert_eq!(d.reroute(id, &mut rng(), |c| c == 1), Some(2), "{policy:?}");
                assert_eq!(d.reroute(id, &mut rng(), |c| c == 2), Some(1), "{policy:?}");
            }
            assert_eq!(d.reroute(id, &mut rng(), |_| true), None, "{policy:?}");
        }
        assert_eq!(d.reroute(12345, &mut rng(), |_| false), None);
    }

    #[test]
    fn most_specific_registration_wins() {
        let mut d = Dealer::new();
        let wc = d.register(1, "com..pop", Wildcard, Single).unwrap();
        let short = d.register(2, "com.", Prefix, Single).unwrap();
        let long = d.register(3, "com.balloon.", Prefix, Single).unwrap();
        let exact = d.register(4, "com.balloon.pop", Exact, Single).unwrap();
        assert_eq!(d.route("com.balloon.pop", &mut rng()), Some((exact, 4)));
        d.remove_session(4);
        assert_eq!(d.route("com.balloon.pop", &mut rng()), Some((long, 3)));
        d.remove_session(3);
        assert_eq!(d.route("com.balloon.pop", &mut rng()), Some((short, 2)));
        d.remove_session(2);
        assert_eq!(d.route("com.balloon.pop", &mut rng()), Some((wc, 1)));
        assert_eq!(d.route("org.balloon.pop", &mut rng()), None);
    }

    #[test]
    fn calls_are_tracked_and_cleaned_up() {
        let mut d = Dealer::new();
        let reg = d.register(10, "p", Exact, Single).unwrap();
        let inv1 = d.start_call(1, 100, reg, 10, std::time::SystemTime::UNIX_EPOCH);
        let inv2 = d.start_call(2, 100, reg, 10, std::time::SystemTime::UNIX_EPOCH);
        assert!(d.call_in_flight(1, 100));
        assert_eq!(
            d.pending_for_callee(99, inv1),
            None,
            "only the callee may answer"
        );
        assert_eq!(d.finish(inv1).map(|p| p.caller_request), Some(100));
        assert!(!d.call_in_flight(1, 100));
        // Callee 10 leaves: call 2 is orphaned, its registration deleted.
        let removed = d.remove_session(10);
        assert_eq!(removed.registrations, vec![(reg, true)]);
        assert_eq!(removed.orphaned_calls.len(), 1);
        assert_eq!(removed.orphaned_calls[0].invocation, inv2);
        assert_eq!(d.pending_calls(), 0);
        assert!(d.is_empty());
    }

    /// A session that calls its own procedure takes part once per call;
    /// the counts go back to nothing, and a leave finds what is left.
    #[test]
    fn calls_to_oneself_are_counted_once_and_found_on_leave() {
        let mut d = Dealer::new();
        let reg = d.register(5, "p", Exact, Single).unwrap();
        let other = d.register(6, "q", Exact, Single).unwrap();
        let t = std::time::SystemTime::UNIX_EPOCH;
        let a = d.start_call(5, 1, reg, 5, t);
        let b = d.start_call(5, 2, reg, 5, t);
        let c = d.start_call(5, 3, other, 6, t);
        assert_eq!(d.calls_by_session.get(&5), Some(&3));
        assert_eq!(d.calls_by_session.get(&6), Some(&1));
        d.finish(a);
        d.finish(c);
        assert_eq!(d.calls_by_session.get(&5), Some(&1));
        assert_eq!(
            d.calls_by_session.get(&6),
            None,
            "no entry once its calls end"
        );
        let removed = d.remove_session(5);
        assert_eq!(removed.orphaned_calls.len(), 1);
        assert_eq!(removed.orphaned_calls[0].invocation, b);
        assert!(d.calls_by_session.is_empty());
        assert_eq!(d.pending_calls(), 0);
    }

    #[test]
    fn caller_leaving_abandons_its_calls() {
        let mut d = Dealer::new();
        let reg = d.register(10, "p", Exact, Single).unwrap();
        d.start_call(1, 7, reg, 10, std::time::SystemTime::UNIX_EPOCH);
        let removed = d.remove_session(1);
        assert_eq!(removed.abandoned_calls.len(), 1);
        assert!(removed.orphaned_calls.is_empty());
        assert_eq!(d.pending_calls(), 0);
        assert_eq!(d.unregister(10, reg), Some(true));
        assert_eq!(d.unregister(10, reg), None);
    }
}

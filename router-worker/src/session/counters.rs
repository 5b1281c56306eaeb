//! What a session counts, for metrics and `wamp.session.on_stats`:
//! logins by method, messages and bytes each way (batched into shared
//! atomics), and the latency histogram.

use super::*;

/// The methods logins are counted by (`cookie`: welcomed by a tracking
/// cookie, whatever method it first logged in by).
pub const LOGIN_METHODS: [&str; 10] = [
    "anonymous",
    "ticket",
    "wampcra",
    "cryptosign",
    "scram",
    "tls",
    "cookie",
    "token",
    "peercred",
    "other",
];

impl TransportCounters {
    /// Count a login welcomed by `method`.
    pub fn login(&self, method: &str) {
        let i = LOGIN_METHODS
            .iter()
            .position(|m| *m == method)
            .unwrap_or(LOGIN_METHODS.len() - 1);
        self.logins[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The logins so far by method (the methods with any).
    pub fn logins_by_method(&self) -> std::collections::BTreeMap<String, u64> {
        LOGIN_METHODS
            .iter()
            .zip(&self.logins)
            .map(|(m, n)| {
                (
                    (*m).to_owned(),
                    n.load(std::sync::atomic::Ordering::Relaxed),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// A transport's counters, shared by its connections (relaxed atomics:
/// one add per connection or login, nothing per message).
#[derive(Debug, Default)]
pub struct TransportCounters {
    /// Connections open now.
    pub open: std::sync::atomic::AtomicU64,
    /// Connections open now whose sessions are parked while idle
    /// ([`crate::park`]).
    pub parked: std::sync::atomic::AtomicU64,
    /// Connections accepted since the start.
    pub accepted: std::sync::atomic::AtomicU64,
    /// Connections refused by `max_connections`.
    pub refused: std::sync::atomic::AtomicU64,
    /// Logins welcomed.
    pub auth_ok: std::sync::atomic::AtomicU64,
    /// Logins refused (ABORT after HELLO or AUTHENTICATE).
    pub auth_failed: std::sync::atomic::AtomicU64,
    /// Logins welcomed, by method ([`LOGIN_METHODS`]).
    pub logins: [std::sync::atomic::AtomicU64; LOGIN_METHODS.len()],
    /// Dynamic and function authenticators' answer times.
    pub authenticator: crate::realm::AtomicHistogram,
    /// WAMP message bytes from established sessions' peers.
    pub bytes_received: std::sync::atomic::AtomicU64,
    /// WAMP message bytes to established sessions' peers.
    pub bytes_sent: std::sync::atomic::AtomicU64,
    /// Messages not sent because they were larger than the receiving
    /// session's transport takes (events skipped, results and invocations
    /// turned into errors).
    pub too_large: std::sync::atomic::AtomicU64,
    /// MQTT messages dropped because the client's queue was full
    /// (`offline_queue_messages`, `offline_queue_bytes`).
    pub mqtt_dropped: std::sync::atomic::AtomicU64,
}

/// One session's WAMP message bytes, added to its transport's counters
/// every 64 KiB and when the session ends: no shared write per message.
pub(super) struct Traffic {
    /// (Owned: a parked session's state stands alone.)
    counters: Arc<TransportCounters>,
    /// (32 bits: added to the shared counters before they pass
    /// `TRAFFIC_FLUSH`, and a message takes at most `u32::MAX`.)
    received: u32,
    sent: u32,
    /// The realm's `stats`: this session's meter, and whether statistics
    /// are due.
    /// (Boxed, as the cookie: most sessions have neither, and an idle
    /// session keeps this for its whole life.)
    pub(super) meter: Option<Box<stats::StatsMeter>>,
    pub(super) stats_due: bool,
    /// The connection's tracking cookie: a GOODBYE `wamp.close.logout`
    /// logs it out.
    pub(super) cookie: Option<Box<(Arc<crate::cookies::CookieStore>, String)>>,
}

/// Bytes a session counts before it adds them to the transport's.
const TRAFFIC_FLUSH: u32 = 64 << 10;

/// A message's size as a session counts it.
fn clamp(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Traffic {
    pub(super) fn new(counters: &Arc<TransportCounters>) -> Self {
        Traffic {
            counters: counters.clone(),
            received: 0,
            sent: 0,
            meter: None,
            stats_due: false,
            cookie: None,
        }
    }

    /// One message of `n` bytes, either way, for the realm's `stats`.
    pub(super) fn metered(&mut self, n: usize) {
        if let Some(m) = &mut self.meter
            && m.count(n)
        {
            self.stats_due = true;
        }
    }

    pub(super) fn received(&mut self, n: usize) {
        self.metered(n);
        self.received = self.received.saturating_add(clamp(n));
        if self.received >= TRAFFIC_FLUSH {
            self.flush();
        }
    }

    /// A message too large for the peer was not sent (rare: counted at
    /// once).
    pub(super) fn too_large(&mut self) {
        self.counters
            .too_large
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn sent(&mut self, n: usize) {
        self.sent = self.sent.saturating_add(clamp(n));
        if self.sent >= TRAFFIC_FLUSH {
            self.flush();
        }
    }

    pub(super) fn flush(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.received > 0 {
            self.counters
                .bytes_received
                .fetch_add(u64::from(self.received), Relaxed);
            self.received = 0;
        }
        if self.sent > 0 {
            self.counters
                .bytes_sent
                .fetch_add(u64::from(self.sent), Relaxed);
            self.sent = 0;
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.flush();
    }
}

impl TransportCounters {
    /// Add one to `counter`.
    pub fn bump(counter: &std::sync::atomic::AtomicU64) {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

//! Crossbar.io's session statistics (a realm's `stats`): each session's
//! WAMP messages in both directions are metered, and a
//! `wamp.session.on_stats` event is due after so many rated messages or
//! seconds, and on join and leave if the realm asks. Pure: the session
//! task feeds it sizes and the time, and publishes what it hands out.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proto::{Dict, Value};

use trellis_config::router::StatsConfig;

/// One session's meter.
#[derive(Debug)]
pub struct StatsMeter {
    /// Who the session is in the events (Crossbar.io's short session
    /// details: realm, session, authid, authrole).
    pub who: Dict,
    cfg: Arc<StatsConfig>,
    serializer: &'static str,
    bytes: u64,
    messages: u64,
    rated: u64,
    cycle: u64,
    /// Since the last statistics (or the join).
    since: Instant,
    /// A statistics event has been handed out already.
    first_done: bool,
}

impl StatsMeter {
    /// A meter for a session (`who`) that joined at `now`.
    pub fn new(
        who: Dict,
        cfg: Arc<StatsConfig>,
        serializer: &'static str,
        now: Instant,
    ) -> StatsMeter {
        StatsMeter {
            who,
            cfg,
            serializer,
            bytes: 0,
            messages: 0,
            rated: 0,
            cycle: 0,
            since: now,
            first_done: false,
        }
    }

    /// The realm wants statistics as soon as the session joins.
    pub fn on_join(&self) -> bool {
        self.cfg.trigger_on_join
    }

    /// The realm wants the last statistics when the session leaves.
    pub fn on_leave(&self) -> bool {
        self.cfg.trigger_on_leave
    }

    /// Count one message of `len` bytes (either direction); true when the
    /// rated-message trigger is reached.
    pub fn count(&mut self, len: usize) -> bool {
        let len = len as u64;
        self.bytes += len;
        self.messages += 1;
        self.rated += len.div_ceil(self.cfg.rated_message_size.max(1)).max(1);
        self.cfg.trigger_after_rated_messages > 0
            && self.rated >= self.cfg.trigger_after_rated_messages
    }

    /// When the duration trigger fires next, if there is one.
    pub fn due(&self) -> Option<Instant> {
        (self.cfg.trigger_after_duration > 0)
            .then(|| self.since + Duration::from_secs(self.cfg.trigger_after_duration))
    }

    /// The statistics since the last ones, in Crossbar.io's shape (times in
    /// nanoseconds), and a new cycle from `now`.
    pub fn take(&mut self, now: Instant, wall: SystemTime, last: bool) -> Dict {
        self.cycle += 1;
        let ns = |d: Duration| Value::from(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let mut d = Dict::new();
        d.insert("bytes".into(), Value::from(self.bytes));
        d.insert("cycle".into(), Value::from(self.cycle));
        d.insert(
            "duration".into(),
            ns(now.saturating_duration_since(self.since)),
        );
        d.insert("first".into(), Value::Bool(!self.first_done));
        d.insert("last".into(), Value::Bool(last));
        d.insert("messages".into(), Value::from(self.messages));
        d.insert("rated_messages".into(), Value::from(self.rated));
        d.insert("serializer".into(), Value::from(self.serializer));
        d.insert(
            "timestamp".into(),
            ns(wall.duration_since(UNIX_EPOCH).unwrap_or_default()),
        );
        self.first_done = true;
        self.bytes = 0;
        self.messages = 0;
        self.rated = 0;
        self.since = now;
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rated: u64, after: u64, secs: u64) -> Arc<StatsConfig> {
        Arc::new(StatsConfig {
            rated_message_size: rated,
            trigger_after_rated_messages: after,
            trigger_after_duration: secs,
            trigger_on_join: true,
            trigger_on_leave: true,
        })
    }

    #[test]
    fn rated_messages_trigger_and_reset() {
        let t0 = Instant::now();
        let mut m = StatsMeter::new(Dict::new(), cfg(256, 10, 0), "json", t0);
        assert_eq!(m.due(), None);
        // 100 bytes is one rated message, 600 bytes three.
        for _ in 0..7 {
            assert!(!m.count(100));
        }
        assert!(m.count(600), "7 + 3 = 10 rated messages");
        let wall = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let s = m.take(t0 + Duration::from_millis(1500), wall, false);
        assert_eq!(s.get("bytes"), Some(&Value::from(1300u64)));
        assert_eq!(s.get("messages"), Some(&Value::from(8u64)));
        assert_eq!(s.get("rated_messages"), Some(&Value::from(10u64)));
        assert_eq!(s.get("duration"), Some(&Value::from(1_500_000_000u64)));
        assert_eq!(s.get("first"), Some(&Value::Bool(true)));
        assert_eq!(s.get("cycle"), Some(&Value::from(1u64)));
        assert_eq!(
            s.get("timestamp"),
            Some(&Value::from(1_700_000_000_000_000_000u64))
        );
        assert!(!m.count(10), "counted afresh");
        let s = m.take(t0 + Duration::from_secs(2), wall, true);
        assert_eq!(s.get("first"), Some(&Value::Bool(false)));
        assert_eq!(s.get("last"), Some(&Value::Bool(true)));
        assert_eq!(s.get("messages"), Some(&Value::from(1u64)));
        assert_eq!(s.get("cycle"), Some(&Value::from(2u64)));
    }

    #[test]
    fn the_duration_trigger_counts_from_the_last_statistics() {
        let t0 = Instant::now();
        let mut m = StatsMeter::new(Dict::new(), cfg(512, 0, 5), "msgpack", t0);
        assert_eq!(m.due(), Some(t0 + Duration::from_secs(5)));
        assert!(!m.count(10_000), "no count trigger");
        m.take(t0 + Duration::from_secs(5), SystemTime::now(), false);
        assert_eq!(m.due(), Some(t0 + Duration::from_secs(10)));
    }
}

//! Guests' `options.watch`: a change under a watched directory restarts
//! the guest, once the changes have been quiet for a moment (an editor's
//! save or a build touches many files at once).
//!
//! Watching uses the `notify` crate (inotify on Linux); what it reports
//! reaches the controller's loop through a small bounded queue whose
//! overflow is dropped (one change is as good as a thousand), and the
//! [`Debounce`] decides when each guest's restart is due.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::{info, warn};

use trellis_config::node::WorkerSpec;

/// How long changes must be quiet before the guest restarts.
pub const QUIET: Duration = Duration::from_millis(300);
/// Changes waiting for the controller's loop, at most.
const QUEUE: usize = 64;

/// A change under a guest's watched directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub id: String,
    pub path: PathBuf,
}

/// The guests' restarts, each due [`QUIET`] after its last change.
#[derive(Debug, Default)]
pub struct Debounce {
    due: BTreeMap<String, (Instant, PathBuf)>,
}

impl Debounce {
    /// A change for `id` at `now`.
    pub fn changed(&mut self, c: Changed, now: Instant) {
        self.due.insert(c.id, (now + QUIET, c.path));
    }

    /// When the next restart is due.
    pub fn next(&self) -> Option<Instant> {
        self.due.values().map(|(t, _)| *t).min()
    }

    /// A restart due at `now`, if any: the guest and the last path changed.
    pub fn take_due(&mut self, now: Instant) -> Option<Changed> {
        let id = self
            .due
            .iter()
            .find(|(_, (t, _))| *t <= now)
            .map(|(id, _)| id.clone())?;
        let (_, path) = self.due.remove(&id)?;
        Some(Changed { id, path })
    }
}

/// The running watchers (dropping them stops watching) and their queue.
pub struct Watches {
    _watchers: Vec<notify::RecommendedWatcher>,
    pub changes: mpsc::Receiver<Changed>,
}

/// Watch every guest's `options.watch.directories` (resolved already).
pub fn start(specs: &[WorkerSpec]) -> Watches {
    let (tx, changes) = mpsc::channel(QUEUE);
    let mut watchers = Vec::new();
    for spec in specs {
        let Some(w) = &spec.options.watch else {
            continue;
        };
        let id = spec.id.clone();
        let tx = tx.clone();
        let handler = move |ev: notify::Result<notify::Event>| {
            let Ok(ev) = ev else { return };
            if matches!(ev.kind, notify::EventKind::Access(_)) {
                return;
            }
            if let Some(path) = ev.paths.into_iter().next() {
                // Full: a restart is pending anyway.
                let _ = tx.try_send(Changed {
                    id: id.clone(),
                    path,
                });
            }
        };
        let mut watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                warn!(worker = %spec.id, cause = %e, "cannot watch files (options.watch): the guest is not restarted on changes");
                continue;
            }
        };
        for dir in &w.directories {
            match watcher.watch(std::path::Path::new(dir), RecursiveMode::Recursive) {
                Ok(()) => {
                    info!(worker = %spec.id, directory = %dir, "watching for changes (options.watch): a change restarts the guest")
                }
                Err(e) => {
                    warn!(worker = %spec.id, directory = %dir, cause = %e, "cannot watch this directory (options.watch)")
                }
            }
        }
        watchers.push(watcher);
    }
    Watches {
        _watchers: watchers,
        changes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(id: &str, path: &str) -> Changed {
        Changed {
            id: id.into(),
            path: path.into(),
        }
    }

    #[test]
    fn a_burst_of_changes_restarts_once_after_the_quiet() {
        let t0 = Instant::now();
        let mut d = Debounce::default();
        assert_eq!(d.next(), None);
        for (i, f) in ["a.js", "b.js", "c.js"].iter().enumerate() {
            d.changed(ch("g1", f), t0 + Duration::from_millis(100 * i as u64));
        }
        assert_eq!(d.next(), Some(t0 + Duration::from_millis(200) + QUIET));
        assert_eq!(
            d.take_due(t0 + Duration::from_millis(400)),
            None,
            "still busy"
        );
        let due = d.take_due(t0 + Duration::from_millis(200) + QUIET);
        assert_eq!(due, Some(ch("g1", "c.js")));
        assert_eq!(d.take_due(t0 + Duration::from_secs(10)), None, "once");
    }

    #[test]
    fn each_guest_has_its_own_quiet() {
        let t0 = Instant::now();
        let mut d = Debounce::default();
        d.changed(ch("g1", "x"), t0);
        d.changed(ch("g2", "y"), t0 + Duration::from_millis(200));
        assert_eq!(d.take_due(t0 + QUIET).map(|c| c.id), Some("g1".into()));
        assert_eq!(d.take_due(t0 + QUIET), None);
        assert_eq!(
            d.take_due(t0 + Duration::from_millis(200) + QUIET)
                .map(|c| c.id),
            Some("g2".into())
        );
    }
}

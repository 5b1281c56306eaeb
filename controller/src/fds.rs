//! File descriptors: the controller keeps a reserve for its own work.
//!
//! Spawning and restarting workers (pipes for their output, log files),
//! their control links and the node's own files must never fail for want
//! of a descriptor, whatever a client does to a listener. So the soft
//! `RLIMIT_NOFILE` is raised to the hard one at start, a reserve is set
//! aside for that work, and every listener the controller owns gets a cap
//! on concurrent connections that keeps out of the reserve.

use tracing::{info, warn};

/// Descriptors kept for the runtime, the node's listeners and files.
const RESERVE_BASE: u64 = 48;
/// Descriptors kept per worker: its output pipes, its log file, its
/// control link, and those of a restart in progress.
const RESERVE_PER_WORKER: u64 = 8;
/// The smallest cap a listener gets, however few descriptors remain.
const MIN_CAP: usize = 4;

/// Raise the soft descriptor limit to the hard one, and return the limit
/// in force (`None` when it cannot be read).
pub fn raise_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => return Some(hard),
            Err(e) => warn!(soft, hard, cause = %e, "cannot raise the file-descriptor limit"),
        }
    }
    Some(soft)
}

/// Connection caps for the controller's listeners: the admin listener and
/// the control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Admin connections served at once.
    pub admin: usize,
    /// Control-socket connections (workers, `trellis` commands) at once.
    pub control: usize,
}

/// The caps that keep `limit` descriptors' reserve for `workers` workers:
/// the admin listener gets what it asked for (`admin_wanted`) within a
/// quarter of what remains, the control socket within a half (it serves
/// every worker and command, and only the node's user can open it).
pub fn caps(limit: u64, workers: usize, admin_wanted: usize) -> Caps {
    let reserve = RESERVE_BASE + RESERVE_PER_WORKER * workers as u64;
    let spare = usize::try_from(limit.saturating_sub(reserve)).unwrap_or(usize::MAX);
    let control_wanted = 1024.max(workers * 4);
    Caps {
        admin: admin_wanted.min(spare / 4).max(MIN_CAP),
        control: control_wanted.min(spare / 2).max(MIN_CAP.max(workers + 2)),
    }
}

/// The caps for this process, logged when the limit cuts the admin
/// listener's below what the config asked.
pub fn plan(workers: usize, admin_wanted: Option<usize>) -> Caps {
    let limit = raise_limit().unwrap_or(1024);
    let c = caps(limit, workers, admin_wanted.unwrap_or(0));
    if let Some(wanted) = admin_wanted
        && c.admin < wanted
    {
        warn!(
            limit,
            wanted,
            cap = c.admin,
            "the file-descriptor limit (ulimit -n, LimitNOFILE=) leaves room for fewer admin connections than controller.admin.max_connections asks: serving at most {} at once",
            c.admin
        );
    }
    match admin_wanted {
        Some(_) => info!(
            limit,
            admin = c.admin,
            control = c.control,
            "file descriptors: a reserve kept for spawning and restarting workers"
        ),
        None => info!(
            limit,
            control = c.control,
            "file descriptors: a reserve kept for spawning and restarting workers"
        ),
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_keep_the_reserve() {
        // ulimit -n 256, one router: the listeners' caps together leave
        // the reserve untouched.
        let c = caps(256, 1, 64);
        assert_eq!(
            c,
            Caps {
                admin: 50,
                control: 100
            }
        ); // (256 - 56) / 4 and / 2
        assert!(c.admin + c.control + 56 <= 256, "{c:?}");
        // A generous limit gives what was asked.
        let c = caps(1 << 20, 3, 64);
        assert_eq!(
            c,
            Caps {
                admin: 64,
                control: 1024
            }
        );
        // A tiny limit still serves something, and every worker's link.
        let c = caps(16, 10, 64);
        assert_eq!(
            c,
            Caps {
                admin: MIN_CAP,
                control: 12
            }
        );
    }
}

//! The guest shim: `trellis guest-shim -- PROGRAM ARGS...`, the process the
//! controller starts for each guest worker, so that nothing a guest starts
//! outlives the node.
//!
//! A guest is any program, and its children are not the controller's:
//! `PR_SET_PDEATHSIG` reaches only a direct child, so after `kill -9` of
//! the controller a guest's own children would be left running. The shim
//! sits between them: it dies with the controller (SIGTERM), is a child
//! subreaper (a guest's orphaned descendants become its children, even if
//! they left the process group), and before it exits it kills every process
//! still in its group or among its children. Otherwise it is transparent:
//! the guest inherits its environment, working directory and output; signals
//! the shim gets are passed on; it exits as the guest did.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// The signals the shim waits for instead of dying of them.
fn handled() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        set.add(s);
    }
    set
}

/// Run `program` as a guest under the shim; `grace` is how long the guest
/// gets after a SIGTERM before everything left is killed.
pub fn run(program: &OsString, args: &[OsString], grace: Duration) -> ExitCode {
    let set = handled();
    if let Err(e) = set.thread_block() {
        eprintln!("trellis guest-shim: cannot block signals: {e}");
        return ExitCode::from(1);
    }
    // Orphans of the guest's tree are re-parented here, not to init.
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("trellis guest-shim: cannot become a subreaper: {e}");
    }
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: runs in the forked child before exec: only async-signal-safe
    // calls (sigprocmask, prctl), no allocation, no locks.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            let set = handled();
            signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None)
                .map_err(std::io::Error::from)?;
            // The guest dies with the shim, however the shim ends.
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "cannot start the guest {:?} (workers[].executable; working directory {}): {e}",
                program,
                std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default()
            );
            return ExitCode::from(127);
        }
    };
    let guest = Pid::from_raw(child.id() as i32);
    let status = supervise(guest, &set, grace);
    clean_up();
    exit_like(status)
}

/// Wait for the guest; pass signals on; after a SIGTERM (a stop, or the
/// controller's death) give it `grace`, then stop waiting.
fn supervise(guest: Pid, set: &SigSet, grace: Duration) -> Option<WaitStatus> {
    let mut deadline: Option<Instant> = None;
    loop {
        if let Some(status) = reap(guest) {
            return Some(status);
        }
        if let Some(d) = deadline {
            if Instant::now() >= d {
                return None;
            }
            // Poll while the guest winds down: the shim has nothing else to do.
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let sig = match set.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        match sig {
            Signal::SIGCHLD => {}
            Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT => {
                let _ = signal::kill(guest, sig);
                deadline = Some(Instant::now() + grace);
            }
            other => {
                let _ = signal::kill(guest, other);
            }
        }
    }
}

/// Reap every exited child; the guest's status if it was among them.
fn reap(guest: Pid) -> Option<WaitStatus> {
    let mut found = None;
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return found,
            Ok(status) => {
                if status.pid() == Some(guest) {
                    found = Some(status);
                }
            }
        }
    }
}

/// Kill what is left of the guest's tree: the shim's process group and its
/// children (orphans that left the group), until none is left.
fn clean_up() {
    let me = std::process::id() as i32;
    let group = nix::unistd::getpgrp().as_raw();
    for _ in 0..50 {
        let left: Vec<i32> = processes()
            .into_iter()
            .filter(|p| p.pid != me && (p.pgrp == group || p.ppid == me))
            .map(|p| p.pid)
            .collect();
        if left.is_empty() {
            return;
        }
        for pid in left {
            let _ = signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
        let _ = reap(Pid::from_raw(-1));
    }
}

struct Proc {
    pid: i32,
    ppid: i32,
    pgrp: i32,
}

/// Every process's pid, parent and group, from /proc.
fn processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        parse_stat(pid, &stat)
    })
    .collect()
}

/// `pid (comm) state ppid pgrp ...`: the command may hold spaces and
/// parentheses, so the fields are read after the last `)`.
fn parse_stat(pid: i32, stat: &str) -> Option<Proc> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let _state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(Proc { pid, ppid, pgrp })
}

/// End as the guest ended: its exit status, or its signal.
fn exit_like(status: Option<WaitStatus>) -> ExitCode {
    match status {
        Some(WaitStatus::Exited(_, code)) => ExitCode::from(code as u8),
        Some(WaitStatus::Signaled(_, sig, _)) => {
            // Die of the same signal, so the controller reports it as such.
            let mut one = SigSet::empty();
            one.add(sig);
            // SAFETY: restores the default disposition; no handler runs.
            #[allow(unsafe_code)]
            let _ = unsafe { signal::signal(sig, signal::SigHandler::SigDfl) };
            let _ = one.thread_unblock();
            let _ = signal::raise(sig);
            ExitCode::from(128 + sig as u8)
        }
        // Killed after the grace period: as if by SIGKILL.
        _ => ExitCode::from(128 + Signal::SIGKILL as u8),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names() {
        let p = parse_stat(42, "42 (my (odd) cmd) S 7 42 42 0 -1 4194560").unwrap();
        assert_eq!((p.pid, p.ppid, p.pgrp), (42, 7, 42));
        assert!(parse_stat(1, "garbage").is_none());
    }
}

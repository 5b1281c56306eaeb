//! Starting worker processes, the same way for every kind.
//!
//! Each worker is its own process group (a terminal's Ctrl-C reaches only
//! the controller, and a stop signals the whole group), dies with the
//! controller (`PR_SET_PDEATHSIG`), runs in the node directory, and has
//! its stdout and stderr piped into its [`logs::Sink`]. Guests run under
//! [`crate::guest`]'s shim, so that their own children die with them.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use crate::logging::LogFormat;
use crate::logs;
use trellis_config::node::{WorkerKind, WorkerSpec};

/// What every spawn needs to know about the node.
#[derive(Debug, Clone)]
pub struct Context {
    /// This binary, re-executed for router and container workers.
    pub exe: PathBuf,
    /// The node directory (absolute): workers' working directory.
    pub node_dir: PathBuf,
    /// The control socket workers join.
    pub control_socket: PathBuf,
    /// `--log-format`, passed on.
    pub log_format: LogFormat,
    /// The controller's log filter, for workers without `options.loglevel`.
    pub log_spec: String,
    /// Seconds a guest gets after SIGTERM before its shim kills what is
    /// left (`controller.options.shutdown_timeout`).
    pub guest_grace: f64,
}

/// Where guests find the router: `TRELLIS_ROUTER_URL` and friends.
#[derive(Debug, Clone, Default)]
pub struct RouterAddress {
    /// `ws://127.0.0.1:8080/ws` of the first router's first WebSocket
    /// transport.
    pub websocket_url: Option<String>,
    /// `tcp:127.0.0.1:8081` or `unix:/path` of its first RawSocket transport.
    pub rawsocket: Option<String>,
    /// The first realm of that router.
    pub realm: Option<String>,
}

impl RouterAddress {
    /// From a router's ready report (`transports: [{type, listen}]`).
    pub fn from_transports(transports: &[(String, String)], realm: Option<String>) -> Self {
        let connectable = |listen: &str| {
            // A wildcard bind is reached on loopback.
            listen
                .replace("0.0.0.0:", "127.0.0.1:")
                .replace("[::]:", "[::1]:")
        };
        let websocket_url = transports
            .iter()
            .find(|(k, l)| k == "websocket" && !l.starts_with("unix:"))
            .map(|(_, l)| format!("ws://{}/ws", connectable(l)));
        let rawsocket = transports
            .iter()
            .find(|(k, _)| k == "rawsocket")
            .map(|(_, l)| {
                if l.starts_with("unix:") {
                    l.clone()
                } else {
                    format!("tcp:{}", connectable(l))
                }
            });
        RouterAddress {
            websocket_url,
            rawsocket,
            realm,
        }
    }
}

/// Start `spec`'s process. The caller waits on the child.
///
/// # Errors
/// The executable cannot be started (not found, not executable, bad
/// working directory), naming what was tried.
pub async fn spawn(
    spec: &WorkerSpec,
    ctx: &Context,
    router: &RouterAddress,
    sink: &logs::Sink,
) -> io::Result<Child> {
    let controller = std::process::id();
    let mut cmd;
    let mut config = None;
    let death_signal;
    match &spec.kind {
        WorkerKind::Router(_) | WorkerKind::Container(_) => {
            cmd = Command::new(&ctx.exe);
            cmd.arg("--log-format")
                .arg(match ctx.log_format {
                    LogFormat::Json => "json",
                    _ => "pretty",
                })
                .arg("worker")
                .arg("--type")
                .arg(spec.kind.name())
                .arg("--id")
                .arg(&spec.id)
                .arg("--control")
                .arg(&ctx.control_socket)
                .env(
                    "TRELLIS_LOG",
                    spec.options.loglevel.as_deref().unwrap_or(&ctx.log_spec),
                )
                .env_remove("RUST_LOG")
                // Worker lines go to their log file, which wants timestamps.
                .env_remove("JOURNAL_STREAM")
                .env_remove("NOTIFY_SOCKET")
                .current_dir(&ctx.node_dir)
                .stdin(Stdio::piped());
            if let Some(t) = &spec.options.title {
                cmd.arg("--title").arg(t);
            }
            if let Some(n) = spec.options.threads {
                cmd.arg("--threads").arg(n.to_string());
            }
            spec.options.env.apply(cmd.as_std_mut());
            config = Some(
                match &spec.kind {
                    WorkerKind::Router(r) => serde_json::to_vec(r),
                    WorkerKind::Container(c) => serde_json::to_vec(c),
                    WorkerKind::Guest(_) => Ok(Vec::new()),
                }
                .map_err(io::Error::other)?,
            );
            // Routers and containers stop cleanly on SIGTERM.
            death_signal = Signal::SIGTERM;
        }
        WorkerKind::Guest(g) => {
            // Through the shim (this binary), which takes the guest's whole
            // process tree with it however the node ends.
            cmd = Command::new(&ctx.exe);
            cmd.arg("guest-shim")
                .arg("--grace")
                .arg(ctx.guest_grace.to_string())
                .arg("--")
                .arg(&g.executable)
                .args(&g.arguments);
            spec.options.env.apply(cmd.as_std_mut());
            cmd.env_remove("NOTIFY_SOCKET");
            cmd.env("TRELLIS_WORKER_ID", &spec.id);
            cmd.env("TRELLIS_NODE_DIR", &ctx.node_dir);
            if let Some(u) = &router.websocket_url {
                cmd.env("TRELLIS_ROUTER_URL", u);
            }
            if let Some(r) = &router.rawsocket {
                cmd.env("TRELLIS_ROUTER_RAWSOCKET", r);
            }
            if let Some(r) = &router.realm {
                cmd.env("TRELLIS_ROUTER_REALM", r);
            }
            let workdir = match &spec.options.workdir {
                Some(w) => ctx.node_dir.join(w),
                None => ctx.node_dir.clone(),
            };
            cmd.current_dir(&workdir).stdin(Stdio::null());
            // The shim stops the guest (SIGTERM, then SIGKILL after the
            // grace) and everything it started.
            death_signal = Signal::SIGTERM;
        }
    }
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let cpus = match &spec.options.cpu_affinity {
        Some(list) => Some(cpu_set(list)?),
        None => None,
    };
    die_with_parent(&mut cmd, death_signal, controller, cpus);
    let mut child = cmd.spawn().map_err(|e| explain(spec, &ctx.node_dir, e))?;
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(sink.clone().pump(stdout, "stdout"));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(sink.clone().pump(stderr, "stderr"));
    }
    if let Some(mut stdin) = child.stdin.take() {
        let config = config.unwrap_or_default();
        // The worker reads it all before doing anything; a dead worker
        // shows up as its exit, so a write error needs no handling here.
        tokio::spawn(async move {
            let _ = stdin.write_all(&config).await;
            let _ = stdin.shutdown().await;
        });
    }
    Ok(child)
}

/// The CPU set of `options.cpu_affinity`.
fn cpu_set(list: &[usize]) -> io::Result<nix::sched::CpuSet> {
    let mut set = nix::sched::CpuSet::new();
    for &c in list {
        set.set(c)
            .map_err(|e| io::Error::other(format!("options.cpu_affinity: CPU {c}: {e}")))?;
    }
    Ok(set)
}

/// Ask the kernel to signal the child when the controller dies, and make
/// sure the controller has not already died while it was being forked;
/// pin it to `cpus` (`options.cpu_affinity`, kept across exec).
#[allow(unsafe_code)]
fn die_with_parent(
    cmd: &mut Command,
    signal: Signal,
    controller: u32,
    cpus: Option<nix::sched::CpuSet>,
) {
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe system calls (prctl, getppid,
    // sched_setaffinity on a set built before the fork); it allocates
    // nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(set) = &cpus {
                nix::sched::sched_setaffinity(Pid::from_raw(0), set).map_err(io::Error::from)?;
            }
            nix::sys::prctl::set_pdeathsig(signal).map_err(io::Error::from)?;
            if nix::unistd::getppid().as_raw() as u32 != controller {
                return Err(io::Error::other("the controller exited during the spawn"));
            }
            Ok(())
        });
    }
}

fn explain(spec: &WorkerSpec, node_dir: &Path, e: io::Error) -> io::Error {
    let what = match &spec.kind {
        WorkerKind::Guest(g) => format!(
            "cannot start guest worker {:?} (workers[{}].executable {:?}, working directory {}): {e}",
            spec.id,
            spec.index,
            g.executable,
            spec.options.workdir.as_ref().map_or_else(
                || node_dir.display().to_string(),
                |w| node_dir.join(w).display().to_string()
            )
        ),
        _ => format!("cannot start worker {:?}: {e}", spec.id),
    };
    io::Error::new(e.kind(), what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_reach_wildcard_binds_on_loopback() {
        let a = RouterAddress::from_transports(
            &[
                ("rawsocket".into(), "unix:/n/r.sock".into()),
                ("websocket".into(), "0.0.0.0:8080".into()),
            ],
            Some("realm1".into()),
        );
        assert_eq!(a.websocket_url.as_deref(), Some("ws://127.0.0.1:8080/ws"));
        assert_eq!(a.rawsocket.as_deref(), Some("unix:/n/r.sock"));
        let b = RouterAddress::from_transports(&[("rawsocket".into(), "[::]:9".into())], None);
        assert_eq!(b.rawsocket.as_deref(), Some("tcp:[::1]:9"));
        assert_eq!(b.websocket_url, None);
    }
}

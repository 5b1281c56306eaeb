//! # trellis: the node controller
//!
//! # Layout
//! - [`config`]: locate, load (JSON or YAML, and `TRELLIS__` env overrides) and validate
//!   `node.json`; the embedded default config.
//! - [`logging`]: tracing setup (`--loglevel`, `RUST_LOG`/`TRELLIS_LOG`,
//!   `--log-format`).
//! - [`lifecycle`]: the node's life as a pure state machine (start in
//!   phases, restarts as [`supervisor`] decides, liveness, reload, stop).
//! - [`node`]: `trellis start`: the controller's shell around it; spawns
//!   the workers ([`spawn`]), answers the control socket ([`control`], with
//!   its typed messages), keeps per-worker logs ([`logs`]), talks to
//!   systemd ([`systemd`]).
//! - [`worker`]: `trellis worker`: a router or container worker process
//!   (the control link, readiness, log level; the work itself is
//!   `router-worker`'s and `container-worker`'s).
//! - [`guest`]: `trellis guest-shim`: stands between the controller and a
//!   guest program so that nothing the guest starts outlives the node.
//!
//! The container worker's code and the built-in components are the
//! `container-worker` crate; the router's, `router-worker`.

pub mod admin;
pub mod control;
pub mod download;
pub mod fds;
pub mod guest;
pub mod lifecycle;
pub mod logging;
pub mod logs;
pub mod node;
pub mod preflight;
pub mod spawn;
pub mod supervisor;
pub mod systemd;
pub mod tools;
pub mod watch;
pub mod worker;

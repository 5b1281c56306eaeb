//! # trellis: the node controller
//!
//! # Layout
//! - [`config`]: locate, load (figment: file + `TRELLIS__` env) and validate
//!   `node.json`; the embedded default config.
//! - [`logging`]: tracing setup (`--loglevel`, `RUST_LOG`/`TRELLIS_LOG`,
//!   `--log-format`).
//! - [`node`]: `trellis start`: binds every router and serves until SIGTERM
//!   or SIGINT. Router workers run inside this process until process
//!   supervision lands.

pub mod components;
pub mod config;
pub mod control;
pub mod logging;
pub mod logs;
pub mod node;
pub mod spawn;
pub mod supervisor;
pub mod systemd;
pub mod worker;

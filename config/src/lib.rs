//! Trellis's configuration, read into typed values and checked, with no
//! I/O runtime: the controller's `check` and `start` and the workers share
//! it.
//!
//! The controller reads and checks the file ([`load`]: every problem at
//! once, each with its key path), runs the [`preflight`], and sends each
//! worker its part serialized. What a worker receives is already read and
//! typed (web paths' options by the path's type, IP networks, secrets from
//! the environment): it never reads options again, and nothing it
//! receives falls back to defaults because it could not be read.
//!
//! - [`node`]: the whole file (`load`): where it is, its format, the
//!   controller's part and each worker's, every problem at once with its
//!   key path.
//! - [`preflight`]: the checks that read the node directory.
//! - [`router`]: a router worker's part (realms, roles, transports, web
//!   paths, authentication, the cluster).
//! - [`container`]: a container worker's part (its components).
//! - [`component`]: Trellis's built-in components and their settings.
//! - [`unsupported`]: Crossbar.io's keys Trellis does not have, and what
//!   `check` says about each.
//! - [`net`]: IP networks as the config writes them.

pub use node::load;

pub mod component;
pub mod container;
pub mod net;
pub mod node;
pub mod preflight;
pub mod router;
pub mod unsupported;

//! Trellis's configuration, read into typed values and checked, with no
//! I/O runtime: the controller's `check` and `start` and the workers share
//! it.
//!
//! - [`node`]: the whole file (`load`): where it is, its format, the
//!   controller's part and each worker's, every problem at once with its
//!   key path.
//! - [`preflight`]: the checks that read the node directory.
//! - [`router`]: a router worker's part (realms, roles, transports, web
//!   paths, authentication, the cluster).
//! - [`container`]: a container worker's part (its components).
//! - [`component`]: Trellis's built-in components and their settings.
//! - [`net`]: IP networks as the config writes them.

pub mod component;
pub mod container;
pub mod net;
pub mod node;
pub mod preflight;
pub mod router;

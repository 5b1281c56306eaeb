//! Trellis's configuration, read into typed values and checked, with no
//! I/O runtime: the controller's `check` and `start` and the workers share
//! it.
//!
//! - [`router`]: a router worker's part (realms, roles, transports, web
//!   paths, authentication, the cluster).
//! - [`container`]: a container worker's part (its components).
//! - [`component`]: Trellis's built-in components and their settings.
//! - [`net`]: IP networks as the config writes them.

pub mod component;
pub mod container;
pub mod net;
pub mod router;

//! Trellis's configuration, read into typed values and checked, with no
//! I/O runtime: the controller's `check` and `start` and the workers share
//! it.
//!
//! - [`router`]: a router worker's part (realms, roles, transports, web
//!   paths, authentication, the cluster).
//! - [`net`]: IP networks as the config writes them.

pub mod net;
pub mod router;

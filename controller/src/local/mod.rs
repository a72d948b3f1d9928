//! The local platform: each app is a command Rouse spawns on free loopback ports, probes for
//! readiness, scales out to N processes, restarts when it crashes and stops when idle.
//!
//! - [`config`]: the `apps:` section of the local YAML file.
//! - [`supervisor`]: desired replicas → running processes, published as ready endpoints.
//! - [`replica`]: one process from spawn to stop: readiness probe, log prefixing, SIGTERM/SIGKILL.

pub mod config;
pub mod replica;
pub mod supervisor;

pub use config::AppConfig;
pub use supervisor::LocalPlatform;

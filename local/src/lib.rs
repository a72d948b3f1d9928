//! The local platform: each app is a command Rouse spawns on free loopback ports, probes for
//! readiness, scales out to N processes, restarts when it crashes and stops when idle. The
//! embedded default of `rouse local`; it implements [`rouse_scale::Scaler`] and publishes ready
//! replicas into the proxy's [`rouse_core::Target`].
//!
//! Where things are: [`config`] (the `apps:` section of the local YAML file), [`supervisor`]
//! (desired replicas → running processes), [`replica`] (one process from spawn to stop:
//! readiness probe, log prefixing, SIGTERM/SIGKILL), `spawner` (forks replicas from one
//! long-lived thread, so their parent-death signal fires only when Rouse dies), [`app`] (the
//! state they share),
//! [`telemetry`].

pub mod app;
pub mod config;
pub mod replica;
mod spawner;
pub mod supervisor;
pub mod telemetry;

pub use config::AppConfig;
pub use supervisor::LocalPlatform;
pub use telemetry::LocalMetrics;

//! Rouse's event gateway: Azure Event Grid and CloudEvents 1.0 webhooks delivered to targets
//! that may be scaled to zero, with no event lost.
//!
//! Where things are:
//!
//! | module | what |
//! |---|---|
//! | [`protocol`] | wire formats, pure: **where an event is parsed** |
//! | [`auth`] | shared keys, Entra ID bearer tokens (JWKS) |
//! | [`gateway`] | the webhook handler: handshakes, auth, parse, dedupe, durable acknowledgement |
//! | [`dedupe`] | the dedupe window: reserve / commit / release of `(subscription, key)` |
//! | [`queue`] | **the seam a durable backend plugs into** ([`queue::EventQueue`]) |
//! | [`queue::embedded`] | the backend of today: [`store`] plus in-memory ready queues |
//! | [`store`] | the fsync'd log, group commit, recovery, compaction |
//! | [`demand`] | queued events counted in their app's [`rouse_core::Target`] demand (and waking it) |
//! | [`deliver`] | workers, retries, dead-lettering |
//! | [`convert`] | delivery formats |
//! | [`config`], [`metrics`] | the YAML section, Prometheus metrics |
//! | [`server`] | a hyper front end for the standalone binary; inside Rouse the proxy mounts [`gateway::Gateway`] on its listener |
//!
//! Delivery model: *store, then acknowledge* (the model b). An event is acknowledged
//! only once it is on disk; it leaves the log only when the target answered 2xx or it was
//! written to the dead-letter sink.

pub mod auth;
pub mod config;
pub mod convert;
pub mod dedupe;
pub mod deliver;
pub mod demand;
pub mod gateway;
pub mod metrics;
pub mod protocol;
pub mod queue;
pub mod server;
pub mod store;

pub use config::{GatewayConfig, SubscriptionConfig};
pub use demand::DemandTargets;
pub use gateway::{Gateway, Request, Response};

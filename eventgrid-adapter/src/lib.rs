//! Rouse's event gateway: Azure Event Grid and CloudEvents 1.0 webhooks delivered to targets
//! that may be scaled to zero, with no event lost.
//!
//! Where things are: [`protocol`] (wire formats, pure: where an event is parsed), [`auth`],
//! [`gateway`] (the webhook handler: handshakes, dedupe, durable acknowledgement), [`store`]
//! (the fsync'd log and its recovery), [`deliver`] (workers, retries, dead-lettering),
//! [`convert`] (delivery formats), [`config`], [`metrics`], [`server`] (a hyper front end for
//! the standalone binary; inside Rouse the proxy mounts [`gateway::Gateway`] on its listener).
//!
//! Delivery model: *store, then acknowledge* (the model b). An event is acknowledged
//! only once it is on disk; it leaves the log only when the target answered 2xx or it was
//! written to the dead-letter sink.

pub mod auth;
pub mod config;
pub mod convert;
pub mod deliver;
pub mod gateway;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod store;

pub use config::{GatewayConfig, SubscriptionConfig};
pub use gateway::{Gateway, Request, Response};

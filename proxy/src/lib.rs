//! Rouse's data plane on pingora: routes each request, holds it while its target is cold or
//! full, signals a wake, and forwards it the moment an endpoint is ready.
//!
//! Where things are: [`front`] (the listener: connection cap, head deadlines and checks),
//! [`forward`] (the request lifecycle, pingora phases), [`hold`] (the hold
//! queue and its caps), [`balance`] (endpoint choice), [`state`] (everything shared), [`admin`]
//! (metrics and introspection), [`event_gateway`] (the webhook gateway the listener serves), [`tls`], [`drain`], [`config`] and [`server`] (assembly); [`kubernetes`] feeds
//! routes, endpoints and event subscriptions from the API server and [`demand`] streams demand to the controller.

pub mod access_log;
pub mod admin;
pub mod balance;
pub mod config;
pub mod delivery_guard;
pub mod demand;
pub mod drain;
pub mod event_gateway;
pub mod forward;
pub mod front;
pub mod hold;
pub mod kubernetes;
pub mod reason;
pub mod routing;
pub mod server;
pub mod state;
pub mod status;
pub mod telemetry;
pub mod tls;

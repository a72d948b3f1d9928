//! Rouse's control plane: decides how many replicas each target runs and has a platform carry
//! it out.
//!
//! - [`scale`]: the pure policy (wake, 1→N with stable/panic windows, idle → zero).
//! - [`autoscale`]: the loop that feeds demand into the policy and applies its decisions.
//! - [`platform`]: the seam a platform implements ([`platform::Scaler`]).
//! - [`local`]: the embedded platform: apps are local processes Rouse starts and stops.
//! - [`kubernetes`]: `rouse-controller`: demand from every proxy, Lease, `/scale`, status.

pub mod autoscale;
pub mod kubernetes;
pub mod local;
pub mod platform;
pub mod scale;
pub mod telemetry;

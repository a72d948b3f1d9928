//! How many replicas a target should run, and the loop that makes it so on any platform.
//!
//! Where things are: [`decide`] (**where a scale decision is made**: the pure, clock-free
//! policy — wake, 1→N with stable/panic windows, idle → zero), [`autoscale`] (the loop of one
//! target: demand in, decisions out, woken at once by a held request), [`seams`] (what a
//! platform implements: [`Scaler`], and where demand comes from: [`DemandSource`]),
//! [`telemetry`] (the loop's metrics). Used by the local platform inside `rouse local` and by
//! `rouse-controller` on Kubernetes; it knows neither.

pub mod autoscale;
pub mod decide;
pub mod seams;
pub mod telemetry;

pub use decide::*;
pub use seams::{DemandSource, ScaleError, Scaler};
pub use telemetry::ScaleMetrics;

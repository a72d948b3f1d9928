//! Holding requests while a target has no ready endpoint with capacity.
//!
//! [`budget`] counts and caps what is held (pure bookkeeping); [`queue`] is where a request
//! actually waits, woken by endpoint changes and freed capacity, never by a polling timer.

pub mod budget;
pub mod queue;

pub use budget::{Budget, Caps, Counter, HoldPermit};
pub use queue::{Acquired, EndpointSlot, acquire};

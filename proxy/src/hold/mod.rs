//! Holding requests while a target has no ready endpoint with capacity.
//!
//! [`budget`] counts and caps what is held (pure bookkeeping); [`queue`] is where a request
//! actually waits, woken by endpoint changes and freed capacity, never by a polling timer, and
//! where a request the hold gave up on takes a failover endpoint; [`claim`] wakes a target for a
//! request answered at once by a placeholder, as if it were held.

pub mod budget;
pub mod claim;
pub mod queue;

pub use budget::{Budget, Caps, Counter, HoldPermit};
pub use claim::{WakeClaim, claim_wake};
pub use queue::{Acquired, EndpointSlot, acquire, failover_slot, static_slot};

//! The two seams of the autoscaling loop: where demand comes from ([`DemandSource`]: the
//! proxy's own [`Target`] locally, the sum over every proxy replica on Kubernetes) and what
//! carries a decision out ([`Scaler`]: local processes, or `/scale` on Kubernetes). The
//! data-plane half of a platform (ready endpoints) is [`rouse_core::Target`], which every
//! platform publishes into.

use std::future::Future;
use std::time::Instant;

use rouse_core::Target;

use crate::decide::Observation;

/// A platform failed to read or change a target's replicas.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    #[error("target {0:?} is not managed by this platform")]
    UnknownTarget(String),
    #[error("target {target:?}: {message}")]
    Platform { target: String, message: String },
}

/// Reads and sets the replica count of a target: a local app's process count, or the `/scale`
/// subresource on Kubernetes.
pub trait Scaler: Send + Sync + 'static {
    /// Replicas the platform is asked to run (the spec, not the ready count: a replica that is
    /// still starting counts).
    fn replicas(&self, target: &str) -> impl Future<Output = Result<u32, ScaleError>> + Send;

    /// Asks the platform to run `replicas`. Returns once the request is recorded, not when the
    /// replicas are ready: readiness arrives through the target's endpoint set.
    fn scale(
        &self,
        target: &str,
        replicas: u32,
    ) -> impl Future<Output = Result<(), ScaleError>> + Send;
}

/// Where a target's demand comes from: the proxy's own [`Target`] in local mode, the sum over
/// every proxy replica's feed on Kubernetes.
pub trait DemandSource: Send + Sync + 'static {
    /// The target's name (metric label, log field, platform key).
    fn name(&self) -> &str;
    /// Resolves when a request was held since the last call, with the instant of the first one.
    fn woken(&self) -> impl Future<Output = Instant> + Send;
    /// The demand now.
    fn observe(&self) -> Observation;
}

impl DemandSource for Target {
    fn name(&self) -> &str {
        &self.name
    }

    fn woken(&self) -> impl Future<Output = Instant> + Send {
        self.demand.woken()
    }

    fn observe(&self) -> Observation {
        let d = self.demand.snapshot();
        Observation {
            held: d.pending(),
            in_flight: d.in_flight,
            requests_total: d.requests_total,
            last_activity: d.last_activity,
        }
    }
}

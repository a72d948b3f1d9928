//! The platform seam for scaling. The data-plane half (ready endpoints) is
//! [`rouse_core::Target`], which every platform publishes into.

use std::future::Future;

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

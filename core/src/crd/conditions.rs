//! Condition types and reasons written to `status.conditions`, and Event reasons: one place, so
//! the controller, the tests and `kubectl wait --for=condition=…` agree on the words.

/// Routes are served and scaling works.
pub const READY: &str = "Ready";
/// The target Service (and workload) exist.
pub const TARGET_FOUND: &str = "TargetFound";
/// Another object claims the same host and path; the older one wins.
pub const ROUTE_CONFLICT: &str = "RouteConflict";
/// Rouse is scaling the workload (false when, e.g., an HPA owns it).
pub const SCALING_ACTIVE: &str = "ScalingActive";

/// Reasons.
pub mod reason {
    pub const RECONCILED: &str = "Reconciled";
    pub const SERVICE_NOT_FOUND: &str = "ServiceNotFound";
    pub const WORKLOAD_NOT_FOUND: &str = "WorkloadNotFound";
    pub const HOST_PATH_TAKEN: &str = "HostPathTaken";
    pub const NO_CONFLICT: &str = "NoConflict";
    pub const HPA_OWNS_WORKLOAD: &str = "HPAOwnsWorkload";
    pub const SCALING: &str = "Scaling";
}

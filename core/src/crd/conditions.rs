//! Condition types and reasons written to `status.conditions`, and Event reasons: one place, so
//! the controller, the tests and `kubectl wait --for=condition=…` agree on the words.
//!
//! A Warning Event's reason is the reason of the condition that turned bad (see [`reason`]).

/// Routes are served and scaling works.
pub const READY: &str = "Ready";
/// The target Service (and workload) exist.
pub const TARGET_FOUND: &str = "TargetFound";
/// Another object claims the same host and path; the older one wins. A problem condition
/// (like Kubernetes' `*Pressure`): `"True"` means there is a conflict.
pub const ROUTE_CONFLICT: &str = "RouteConflict";
/// Rouse is scaling the workload (false when, e.g., an HPA owns it).
pub const SCALING_ACTIVE: &str = "ScalingActive";

/// EventSubscription: the spec is valid and a proxy serves it; the message carries the last
/// validation handshake.
pub const VALIDATED: &str = "Validated";
/// EventSubscription: the Secret named by `spec.auth.keySecretRef` exists and holds a key.
pub const SECRET_FOUND: &str = "SecretFound";
/// EventSubscription: another object claims the same webhook path (the older one keeps it).
/// A problem condition, like [`ROUTE_CONFLICT`].
pub const PATH_CONFLICT: &str = "PathConflict";

/// The values of a condition's `status`.
pub mod status {
    pub const TRUE: &str = "True";
    pub const FALSE: &str = "False";
    /// Not known yet: e.g. an EventSubscription's `SecretFound` while no proxy replica serves it
    /// (only the proxies read Secrets, so nobody has looked).
    pub const UNKNOWN: &str = "Unknown";
}

/// Reasons, of conditions and of the Warning Events sent when a condition turns bad.
pub mod reason {
    /// Everything the condition checks is fine.
    pub const RECONCILED: &str = "Reconciled";
    /// `spec.scaleTargetRef.service` names a Service that does not exist.
    pub const SERVICE_NOT_FOUND: &str = "ServiceNotFound";
    /// The workload's `/scale` read answered 404.
    pub const WORKLOAD_NOT_FOUND: &str = "WorkloadNotFound";
    /// An older object keeps one of this object's host/path pairs.
    pub const HOST_PATH_TAKEN: &str = "HostPathTaken";
    /// No other object claims this object's routes.
    pub const NO_CONFLICT: &str = "NoConflict";
    /// A HorizontalPodAutoscaler scales the same workload, so Rouse leaves `/scale` alone.
    pub const HPA_OWNS_WORKLOAD: &str = "HPAOwnsWorkload";
    /// A scaling loop runs (or would, once the other conditions hold).
    pub const SCALING: &str = "Scaling";
    /// InterceptorRoute without `spec.rouse.scaleTargetRef`: a KEDA ScaledObject scales the
    /// workload, through Rouse's external scaler.
    pub const EXTERNAL_SCALER: &str = "ExternalScaler";
    /// The spec cannot be turned into a route or a scaling policy, or asks for something Rouse
    /// does not serve (yet); the message names the fields.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// EventSubscription: `spec.target.httpScaledObject` names no object in the namespace.
    pub const HTTP_SCALED_OBJECT_NOT_FOUND: &str = "HTTPScaledObjectNotFound";
    /// EventSubscription: the key Secret does not exist.
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    /// EventSubscription: the key Secret exists but holds no non-empty entry.
    pub const SECRET_EMPTY: &str = "SecretEmpty";
    /// EventSubscription: no auth configured, so no Secret is needed.
    pub const NO_SECRET_NEEDED: &str = "NoSecretNeeded";
    /// EventSubscription: an older object keeps this object's webhook path.
    pub const PATH_TAKEN: &str = "PathTaken";
    /// EventSubscription: no connected proxy replica serves the webhook (yet).
    pub const NOT_SERVED: &str = "NotServed";
    /// EventSubscription: served; no validation handshake seen yet.
    pub const AWAITING_HANDSHAKE: &str = "AwaitingHandshake";
    /// EventSubscription: served, and a validation handshake was answered.
    pub const HANDSHAKE_ANSWERED: &str = "HandshakeAnswered";
}

/// Event actions (what the controller was doing when it sent the Event).
pub mod action {
    /// Assessing an object and writing its status.
    pub const RECONCILE: &str = "Reconcile";
}

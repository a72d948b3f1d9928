//! The status an object should have, decided from its [`Assessment`] and the last `/scale` read:
//! one small function per condition. Pure (no API calls); the only clock is the `now` that
//! [`status_of`] is given.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use rouse_core::Conflict;
use rouse_core::crd::HTTPScaledObjectStatus;
use rouse_core::crd::conditions::{self, reason, status};

use super::assess::Assessment;
use crate::scaler::Observed;

/// One condition as decided, before it is stamped with a generation and a transition time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Verdict {
    /// One of the types in [`conditions`].
    pub type_: &'static str,
    /// The condition's `status`: `true` is `"True"`.
    pub status: bool,
    /// One of [`reason`].
    pub reason: &'static str,
    pub message: String,
}

impl Verdict {
    fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Verdict {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Whether the workload can be scaled as far as anyone looked: only a 404 from `/scale` says no.
fn workload_ok(observed: Option<&Observed>) -> bool {
    !matches!(observed, Some(Observed::NotFound(_)))
}

/// TargetFound: the Service, then the workload (checked only once a scaling loop read `/scale`).
pub(super) fn target_found(a: &Assessment, observed: Option<&Observed>) -> Verdict {
    let service = &a.service;
    if !a.service_found {
        let message = format!("service \"{service}\" not found");
        return Verdict::new(
            conditions::TARGET_FOUND,
            false,
            reason::SERVICE_NOT_FOUND,
            message,
        );
    }
    let Some(workload) = &a.workload else {
        return Verdict::new(
            conditions::TARGET_FOUND,
            true,
            reason::RECONCILED,
            format!("service {service} found; the workload is a KEDA ScaledObject's"),
        );
    };
    let (ok, why, message) = match observed {
        Some(Observed::NotFound(m)) => (false, reason::WORKLOAD_NOT_FOUND, m.clone()),
        Some(Observed::Replicas(_)) => (
            true,
            reason::RECONCILED,
            format!("{workload} and service {service} found"),
        ),
        // Only a scaling loop reads `/scale`; none runs for this object (see ScalingActive).
        None => (
            true,
            reason::RECONCILED,
            format!("service {service} found; {workload} not checked"),
        ),
    };
    Verdict::new(conditions::TARGET_FOUND, ok, why, message)
}

/// RouteConflict: `"True"` when an older object keeps one of this object's host/path pairs.
pub(super) fn route_conflict(a: &Assessment) -> Verdict {
    match &a.conflict {
        Some(c) => Verdict::new(
            conditions::ROUTE_CONFLICT,
            true,
            reason::HOST_PATH_TAKEN,
            format!("an older object keeps this route: {}", claim(c)),
        ),
        None => Verdict::new(
            conditions::ROUTE_CONFLICT,
            false,
            reason::NO_CONFLICT,
            "no other object claims these routes",
        ),
    }
}

/// ScalingActive: an HPA in the way, then the spec, then whether a loop may run.
pub(super) fn scaling_active(a: &Assessment) -> Verdict {
    if let (Some(hpa), Some(workload)) = (&a.hpa, &a.workload) {
        let ns = &workload.namespace;
        return Verdict::new(
            conditions::SCALING_ACTIVE,
            false,
            reason::HPA_OWNS_WORKLOAD,
            format!(
                "HorizontalPodAutoscaler {ns}/{hpa} scales {workload}; Rouse does not patch \
                 /scale while it exists"
            ),
        );
    }
    if !a.invalid.is_empty() {
        return Verdict::new(
            conditions::SCALING_ACTIVE,
            false,
            reason::INVALID_SPEC,
            a.invalid.join("; "),
        );
    }
    let Some(workload) = &a.workload else {
        let name = a.key.split_once('/').map_or(a.key.as_str(), |(_, n)| n);
        return Verdict::new(
            conditions::SCALING_ACTIVE,
            a.healthy(),
            reason::EXTERNAL_SCALER,
            format!(
                "scaled by a KEDA ScaledObject through Rouse's external scaler (trigger \
                 external-push, metadata interceptorRoute: {name}); name the workload in \
                 spec.rouse.scaleTargetRef to let Rouse scale it"
            ),
        );
    };
    Verdict::new(
        conditions::SCALING_ACTIVE,
        a.healthy(),
        reason::SCALING,
        format!("scaling {workload}"),
    )
}

/// Ready: every other condition fine; otherwise the failing ones' messages, and the reason of
/// the first problem to fix ([`not_ready_reason`]).
pub(super) fn ready(
    a: &Assessment,
    observed: Option<&Observed>,
    target_found: &Verdict,
    scaling: &Verdict,
) -> Verdict {
    if a.healthy() && workload_ok(observed) {
        return Verdict::new(
            conditions::READY,
            true,
            reason::RECONCILED,
            "routes served and scaling active",
        );
    }
    let message = [target_found, scaling]
        .iter()
        .filter(|v| !v.status)
        .map(|v| v.message.clone())
        .chain(
            a.conflict
                .iter()
                .map(|c| format!("route conflict with {}", claim(c))),
        )
        .collect::<Vec<_>>()
        .join("; ");
    Verdict::new(
        conditions::READY,
        false,
        not_ready_reason(a, observed),
        message,
    )
}

/// Why an object is not Ready: its first problem, in the order a user would fix them.
fn not_ready_reason(a: &Assessment, observed: Option<&Observed>) -> &'static str {
    if !a.invalid.is_empty() {
        reason::INVALID_SPEC
    } else if a.conflict.is_some() {
        reason::HOST_PATH_TAKEN
    } else if !a.service_found {
        reason::SERVICE_NOT_FOUND
    } else if !workload_ok(observed) {
        reason::WORKLOAD_NOT_FOUND
    } else {
        reason::HPA_OWNS_WORKLOAD
    }
}

/// The host/path an object lost and who keeps it, e.g. `team/old (host a.test, path /)`.
fn claim(c: &Conflict) -> String {
    format!("{} (host {}, path {})", c.existing, c.host, c.path_prefix)
}

/// Every condition, in the order they are written: Ready, TargetFound, RouteConflict,
/// ScalingActive.
pub(super) fn decide(a: &Assessment, observed: Option<&Observed>) -> [Verdict; 4] {
    let target_found = target_found(a, observed);
    let scaling = scaling_active(a);
    let ready = ready(a, observed, &target_found, &scaling);
    [ready, target_found, route_conflict(a), scaling]
}

/// The status the object assessed in `a` should have. Keeps a condition's `lastTransitionTime`
/// while its status holds; a condition that is new or flipped gets `now`.
pub(super) fn status_of(
    a: &Assessment,
    observed: Option<&Observed>,
    desired: Option<u32>,
    previous: &HTTPScaledObjectStatus,
    now: &Time,
) -> HTTPScaledObjectStatus {
    let generation = a.generation;
    let conditions = decide(a, observed)
        .into_iter()
        .map(|v| stamp(v, generation, &previous.conditions, now))
        .collect();
    let current = match observed {
        Some(Observed::Replicas(n)) => i32::try_from(*n).ok(),
        _ => previous.current_replicas,
    };
    HTTPScaledObjectStatus {
        target_workload: a.workload.as_ref().map(ToString::to_string),
        target_service: Some(a.target_service.clone()),
        conditions,
        observed_generation: generation,
        current_replicas: current,
        desired_replicas: desired.and_then(|d| i32::try_from(d).ok()).or(current),
    }
}

/// `v` as a status condition; the transition time is the previous one while the status holds.
fn stamp(v: Verdict, generation: Option<i64>, previous: &[Condition], now: &Time) -> Condition {
    let status = if v.status {
        status::TRUE
    } else {
        status::FALSE
    };
    let since = previous
        .iter()
        .find(|p| p.type_ == v.type_)
        .filter(|p| p.status == status)
        .map_or_else(|| now.clone(), |p| p.last_transition_time.clone());
    Condition {
        type_: v.type_.to_string(),
        status: status.to_string(),
        reason: v.reason.to_string(),
        message: v.message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// Equal but for condition timestamps.
pub(super) fn same_status(a: &HTTPScaledObjectStatus, b: &HTTPScaledObjectStatus) -> bool {
    let strip = |s: &HTTPScaledObjectStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(a) == strip(b)
}

/// Whether `c` reports a problem: a `"True"` RouteConflict, any other condition `"False"`.
fn is_bad(c: &Condition) -> bool {
    let problem_when = if c.type_ == conditions::ROUTE_CONFLICT {
        status::TRUE
    } else {
        status::FALSE
    };
    c.status == problem_when
}

/// The conditions worth a Warning Event once `status` replaces `previous`: each bad one whose
/// status or reason changed. Not Ready, which only repeats the others.
pub(super) fn warnings<'a>(
    previous: &HTTPScaledObjectStatus,
    status: &'a HTTPScaledObjectStatus,
) -> Vec<&'a Condition> {
    status
        .conditions
        .iter()
        .filter(|c| {
            let before = previous.conditions.iter().find(|p| p.type_ == c.type_);
            let changed = before.is_none_or(|b| b.status != c.status || b.reason != c.reason);
            is_bad(c) && changed && c.type_ != conditions::READY
        })
        .collect()
}

//! The controller's `/status`: what `rouse status --admin <controller admin>` shows on
//! Kubernetes — every valid object's target with the replicas this controller asked `/scale`
//! for, and the demand summed over every proxy replica (the same document a proxy serves, so
//! one renderer reads both: [`rouse_core::status`]).

use std::sync::{Arc, OnceLock};

use rouse_core::status::{Status, TargetStatus};

use crate::demand::Aggregate;
use crate::scaler::{KubeScaler, Observed};

/// The scaler, once `crate::run` made it (the admin listener starts first).
pub type ScalerSlot = Arc<OnceLock<Arc<KubeScaler>>>;

/// `/status` from `aggregate` and, once it exists, the scaler. A standby controller knows the
/// demand but has asked for nothing: its DESIRED reads `-`.
pub fn document(aggregate: &Aggregate, scaler: Option<&KubeScaler>) -> Status {
    let targets: Vec<TargetStatus> = aggregate
        .target_keys()
        .into_iter()
        .map(|target| {
            let o = aggregate.observe(&target);
            // `observe` counts queued events as held (they wake and scale the target alike);
            // here they have their own column, as in a proxy's `/status`.
            let queued = aggregate.queued(&target);
            let unavailable = match scaler.and_then(|s| s.observed(&target)) {
                Some(Observed::NotFound(why)) => Some(why),
                _ => None,
            };
            TargetStatus {
                routes: Vec::new(),
                hosts: Vec::new(),
                // The controller reads /scale's spec, not the pods: ready is the proxies' view.
                ready: None,
                desired: scaler.and_then(|s| s.desired(&target)),
                held: o.held.saturating_sub(queued),
                in_flight: o.in_flight,
                queued_events: queued,
                cold_starts: None,
                last_wake_ms_ago: aggregate
                    .last_wake(&target)
                    .map(|w| u64::try_from(w.elapsed().as_millis()).unwrap_or(u64::MAX)),
                unavailable,
                target,
            }
        })
        .collect();
    Status {
        draining: false,
        held: targets.iter().map(|t| t.held).sum(),
        targets,
    }
}

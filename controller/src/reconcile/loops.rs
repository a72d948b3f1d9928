//! One autoscaling loop per healthy object Rouse scales (not those a KEDA ScaledObject scales
//! through the external scaler), on the leader only. A loop starts when its object
//! turns healthy and stops when the object goes, turns unhealthy, changes policy or workload, or
//! when leadership goes.

use std::collections::HashMap;

use rouse_scale::{Policy, autoscale};
use tokio::sync::watch;

use super::Reconciler;
use super::assess::Assessment;
use crate::scaler::WorkloadRef;

/// The running loops, by object key.
pub(super) type Loops = HashMap<String, Running>;

/// One running autoscaling loop.
pub(super) struct Running {
    policy: Policy,
    workload: WorkloadRef,
    stop: watch::Sender<bool>,
}

impl Running {
    /// Whether this loop still scales what `a` asks for.
    fn fits(&self, a: &Assessment) -> bool {
        a.scaled_by_rouse()
            && a.policy.as_ref() == Some(&self.policy)
            && a.workload.as_ref() == Some(&self.workload)
    }
}

impl Reconciler {
    /// Stops the loops that should not run: every one off the leader, and those whose object is
    /// gone, unhealthy or asks for another policy or workload.
    pub(super) fn stop_stale_loops(
        &self,
        running: &mut Loops,
        assessments: &HashMap<String, Assessment>,
        is_leader: bool,
    ) {
        running.retain(|key, r| {
            let keep = is_leader && assessments.get(key).is_some_and(|a| r.fits(a));
            if !keep {
                r.stop.send_replace(true);
                // Next time starts from a fresh `/scale` read (the workload may differ).
                self.scaler.remove(key);
            }
            keep
        });
    }

    /// Starts a loop for every healthy object that has none (call on the leader only).
    pub(super) fn start_loops(
        &self,
        running: &mut Loops,
        assessments: &HashMap<String, Assessment>,
        leader: &watch::Receiver<bool>,
    ) {
        for (key, a) in assessments {
            if !a.scaled_by_rouse() || running.contains_key(key) {
                continue;
            }
            let (Some(policy), Some(workload)) = (a.policy.clone(), a.workload.clone()) else {
                continue;
            };
            let loop_ = self.start_loop(key, workload, policy, leader);
            running.insert(key.clone(), loop_);
        }
    }

    fn start_loop(
        &self,
        key: &str,
        workload: WorkloadRef,
        policy: Policy,
        leader: &watch::Receiver<bool>,
    ) -> Running {
        self.scaler.set_workload(key, workload.clone());
        let (stop_tx, stop_rx) = watch::channel(false);
        stop_when_leadership_goes(stop_tx.clone(), leader.clone());
        tokio::spawn(autoscale::run(
            self.aggregate.source(key),
            policy.clone(),
            self.scaler.clone(),
            self.tick,
            self.metrics.clone(),
            stop_rx,
        ));
        tracing::info!(object = %key, workload = %workload, "Scaling loop started.");
        Running {
            policy,
            workload,
            stop: stop_tx,
        }
    }
}

/// Stops a loop the moment leadership goes, not when the reconciler next runs (it may be busy
/// writing status). Ends with the loop.
fn stop_when_leadership_goes(stop: watch::Sender<bool>, mut leader: watch::Receiver<bool>) {
    tokio::spawn(async move {
        tokio::select! {
            _ = leader.wait_for(|l| !*l) => {
                stop.send_replace(true);
            }
            () = stop.closed() => {}
        }
    });
}

/// Stops every loop (the controller is shutting down).
pub(super) fn stop_all(running: &mut Loops) {
    for (_, r) in running.drain() {
        r.stop.send_replace(true);
    }
}

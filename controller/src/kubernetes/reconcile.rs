//! Where a Kubernetes scale decision is carried out: watches `HTTPScaledObject`s, target
//! Services and HPAs; while leader, runs one autoscaling loop per healthy object (the policy is
//! [`crate::scale`], fed by the proxies' summed demand) and writes each object's status and
//! Events. A standby watches and aggregates too, so it takes over without a cold cache.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use rouse_core::RouteTable;
use rouse_core::crd::conditions::{self, reason};
use rouse_core::crd::{
    HTTPScaledObject, HTTPScaledObjectStatus, claim_order, object_key, route_of,
};
use serde_json::json;
use tokio::sync::watch;

use super::demand::Aggregate;
use super::policy::policy_of;
use super::scaler::{KubeScaler, Observed, WorkloadRef};
use super::{Scope, all_ready, watch_all};
use crate::autoscale;
use crate::scale::Policy;
use crate::telemetry::ControllerMetrics;

/// How often everything is re-assessed even without a watch event (status of replicas).
const RESYNC: Duration = Duration::from_secs(1);

/// What one object needs, as far as this controller can tell.
#[derive(Debug, Clone)]
struct Assessment {
    key: String,
    invalid: Vec<String>,
    service_found: bool,
    /// The newer object losing a host/path: the name of the one that keeps it.
    conflict_with: Option<String>,
    /// An HPA that scales the same workload.
    hpa: Option<String>,
    policy: Option<Policy>,
    workload: WorkloadRef,
}

/// One running autoscaling loop.
struct Running {
    policy: Policy,
    workload: WorkloadRef,
    stop: watch::Sender<bool>,
}

pub struct Reconciler {
    pub client: Client,
    pub scope: Scope,
    pub scaler: Arc<KubeScaler>,
    pub aggregate: Arc<Aggregate>,
    pub metrics: ControllerMetrics,
    pub recorder: Recorder,
    /// Autoscaling tick (decisions happen at once on wakes regardless).
    pub tick: Duration,
}

fn workload_of(o: &HTTPScaledObject) -> WorkloadRef {
    let r = &o.spec.scale_target_ref;
    WorkloadRef {
        namespace: o.namespace().unwrap_or_default(),
        api_version: r.api_version.clone().unwrap_or_else(|| "apps/v1".into()),
        kind: r.kind.clone().unwrap_or_else(|| "Deployment".into()),
        name: r.name.clone().unwrap_or_else(|| o.name_any()),
        object: o.object_ref(&()),
    }
}

/// An HPA in the object's namespace that targets the same workload.
fn hpa_for(
    o: &HTTPScaledObject,
    w: &WorkloadRef,
    hpas: &[Arc<HorizontalPodAutoscaler>],
) -> Option<String> {
    hpas.iter()
        .find(|h| {
            h.namespace().as_deref() == Some(w.namespace.as_str())
                && h.spec.as_ref().is_some_and(|s| {
                    s.scale_target_ref.kind == w.kind && s.scale_target_ref.name == w.name
                })
        })
        .map(|h| {
            let _ = o;
            h.name_any()
        })
}

impl Reconciler {
    /// Runs until `stop`; acts (scales, writes status) only while `leader` is true.
    pub async fn run(self, mut leader: watch::Receiver<bool>, mut stop: watch::Receiver<bool>) {
        let (objects, object_events) = watch_all::<HTTPScaledObject>(&self.scope, &self.client);
        let (services, service_events) = watch_all::<Service>(&self.scope, &self.client);
        let (hpas, hpa_events) = watch_all::<HorizontalPodAutoscaler>(&self.scope, &self.client);
        let mut events = futures::stream::select_all([
            object_events.map(|e| e.map(|_| ())).boxed(),
            service_events.map(|e| e.map(|_| ())).boxed(),
            hpa_events.map(|e| e.map(|_| ())).boxed(),
        ]);
        let mut running: HashMap<String, Running> = HashMap::new();
        let mut reported: HashMap<String, HTTPScaledObjectStatus> = HashMap::new();
        let mut resync = tokio::time::interval(RESYNC);
        loop {
            tokio::select! {
                e = events.next() => match e {
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "Watch failed; retrying with backoff.");
                        continue;
                    }
                    Some(Ok(())) => {}
                    None => return,
                },
                _ = resync.tick() => {}
                _ = leader.changed() => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                for (_, r) in running.drain() {
                    r.stop.send_replace(true);
                }
                return;
            }
            let ready = all_ready(&objects) && all_ready(&services) && all_ready(&hpas);
            if !ready {
                continue;
            }
            let all: Vec<Arc<HTTPScaledObject>> = objects.iter().flat_map(Store::state).collect();
            let service_keys: HashSet<String> = services
                .iter()
                .flat_map(Store::state)
                .map(|s| format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()))
                .collect();
            let hpa_list: Vec<Arc<HorizontalPodAutoscaler>> =
                hpas.iter().flat_map(Store::state).collect();
            let assessments = assess(&all, &service_keys, &hpa_list);

            // Every replica, leader or not, answers KEDA's external scaler: it needs each
            // valid object's target.
            for (key, a) in &assessments {
                if let Some(p) = &a.policy {
                    self.aggregate.set_target(key, p.metric);
                }
            }
            self.aggregate
                .retain_targets(|key| assessments.contains_key(key));

            let is_leader = *leader.borrow();
            // Loops: exactly the healthy objects, and only on the leader.
            running.retain(|key, r| {
                let keep = is_leader
                    && assessments.get(key).is_some_and(|a| {
                        a.healthy()
                            && a.policy.as_ref() == Some(&r.policy)
                            && a.workload == r.workload
                    });
                if !keep {
                    r.stop.send_replace(true);
                    // Next time starts from a fresh `/scale` read (the workload may differ).
                    self.scaler.remove(key);
                }
                keep
            });
            if !is_leader {
                // Another replica writes status meanwhile: compare against the objects again
                // when leading next time.
                reported.clear();
            }
            let live: HashSet<&String> = assessments.keys().collect();
            if is_leader {
                for (key, a) in &assessments {
                    if !a.healthy() || running.contains_key(key) {
                        continue;
                    }
                    let Some(policy) = a.policy.clone() else {
                        continue;
                    };
                    self.scaler.set_workload(key, a.workload.clone());
                    let (stop_tx, stop_rx) = watch::channel(false);
                    // The loop stops the moment leadership goes, not when this loop next runs
                    // (it may be busy writing status).
                    let (guard_stop, mut guard_leader) = (stop_tx.clone(), leader.clone());
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = guard_leader.wait_for(|l| !*l) => {
                                guard_stop.send_replace(true);
                            }
                            () = guard_stop.closed() => {}
                        }
                    });
                    tokio::spawn(autoscale::run(
                        self.aggregate.source(key),
                        policy.clone(),
                        self.scaler.clone(),
                        self.tick,
                        self.metrics.clone(),
                        stop_rx,
                    ));
                    tracing::info!(object = %key, workload = %a.workload, "Scaling loop started.");
                    running.insert(
                        key.clone(),
                        Running {
                            policy,
                            workload: a.workload.clone(),
                            stop: stop_tx,
                        },
                    );
                }
                for o in &all {
                    let key = object_key(o);
                    let Some(a) = assessments.get(&key) else {
                        continue;
                    };
                    self.report(o, a, &mut reported).await;
                }
            }
            reported.retain(|k, _| live.contains(k));
        }
    }

    /// Writes `o`'s status when it changed, and a Warning Event when a condition turns bad.
    async fn report(
        &self,
        o: &HTTPScaledObject,
        a: &Assessment,
        reported: &mut HashMap<String, HTTPScaledObjectStatus>,
    ) {
        let observed = self.scaler.observed(&a.key);
        let previous = reported
            .get(&a.key)
            .cloned()
            .or_else(|| o.status.clone())
            .unwrap_or_default();
        let status = status_of(
            o,
            a,
            observed.as_ref(),
            self.scaler.desired(&a.key),
            &previous,
        );
        if same_status(&status, &previous) && o.status.is_some() {
            reported.insert(a.key.clone(), previous);
            return;
        }
        let api: Api<HTTPScaledObject> =
            Api::namespaced(self.client.clone(), &o.namespace().unwrap_or_default());
        let patch = json!({"status": status});
        match api
            .patch_status(
                &o.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {
                for c in &status.conditions {
                    let before = previous.conditions.iter().find(|p| p.type_ == c.type_);
                    let bad = (c.type_ == conditions::ROUTE_CONFLICT && c.status == "True")
                        || (c.type_ != conditions::ROUTE_CONFLICT && c.status == "False");
                    let changed =
                        before.is_none_or(|b| b.status != c.status || b.reason != c.reason);
                    if bad && changed && c.type_ != conditions::READY {
                        self.warn(o, &c.reason, &c.message).await;
                    }
                }
                reported.insert(a.key.clone(), status);
            }
            Err(e) => tracing::warn!(object = %a.key, error = %e, "Status update failed."),
        }
    }

    async fn warn(&self, o: &HTTPScaledObject, reason: &str, note: &str) {
        let event = Event {
            type_: EventType::Warning,
            reason: reason.to_string(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &o.object_ref(&())).await {
            tracing::debug!(error = %e, "Event not recorded.");
        }
    }
}

impl Assessment {
    fn healthy(&self) -> bool {
        self.invalid.is_empty()
            && self.service_found
            && self.conflict_with.is_none()
            && self.hpa.is_none()
    }
}

/// Every object's assessment, by key. Pure over the watched state.
fn assess(
    all: &[Arc<HTTPScaledObject>],
    services: &HashSet<String>,
    hpas: &[Arc<HorizontalPodAutoscaler>],
) -> HashMap<String, Assessment> {
    let mut ordered: Vec<&HTTPScaledObject> = all.iter().map(AsRef::as_ref).collect();
    claim_order(&mut ordered);
    let mut routes = Vec::new();
    let mut out = HashMap::new();
    for o in ordered {
        let key = object_key(o);
        let mut invalid = Vec::new();
        match route_of(o) {
            Ok(r) => routes.push(r),
            Err(mut e) => invalid.append(&mut e),
        }
        let policy = match policy_of(&o.spec) {
            Ok(p) => Some(p),
            Err(mut e) => {
                invalid.append(&mut e);
                None
            }
        };
        let workload = workload_of(o);
        let service_key = format!(
            "{}/{}",
            o.namespace().unwrap_or_default(),
            o.spec.scale_target_ref.service
        );
        out.insert(
            key.clone(),
            Assessment {
                key,
                invalid,
                service_found: services.contains(&service_key),
                conflict_with: None,
                hpa: hpa_for(o, &workload, hpas),
                policy,
                workload,
            },
        );
    }
    // Same rule as the proxies: the older object keeps a host/path, the newer is refused.
    let (_, conflicts) = RouteTable::build(routes);
    for c in conflicts {
        if let Some(a) = out.get_mut(&c.route) {
            a.conflict_with = Some(format!(
                "{} (host {}, path {})",
                c.existing, c.host, c.path_prefix
            ));
        }
    }
    out
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: Time(jiff::Timestamp::now()),
    }
}

/// The status `o` should have. Keeps a condition's `lastTransitionTime` while its status holds.
fn status_of(
    o: &HTTPScaledObject,
    a: &Assessment,
    observed: Option<&Observed>,
    desired: Option<u32>,
    previous: &HTTPScaledObjectStatus,
) -> HTTPScaledObjectStatus {
    let generation = o.metadata.generation;
    let svc = &o.spec.scale_target_ref;
    let ns = o.namespace().unwrap_or_default();
    let (workload_ok, workload_msg) = match observed {
        Some(Observed::NotFound(m)) => (false, m.clone()),
        Some(Observed::Replicas(_)) => (
            true,
            format!("{} and service {ns}/{} found", a.workload, svc.service),
        ),
        // Only a scaling loop reads `/scale`; none runs for this object (see ScalingActive).
        None => (
            true,
            format!(
                "service {ns}/{} found; {} not checked",
                svc.service, a.workload
            ),
        ),
    };
    let target_found = if !a.service_found {
        condition(
            conditions::TARGET_FOUND,
            false,
            reason::SERVICE_NOT_FOUND,
            format!("service \"{ns}/{}\" not found", svc.service),
            generation,
        )
    } else if !workload_ok {
        condition(
            conditions::TARGET_FOUND,
            false,
            reason::WORKLOAD_NOT_FOUND,
            workload_msg,
            generation,
        )
    } else {
        condition(
            conditions::TARGET_FOUND,
            true,
            reason::RECONCILED,
            workload_msg,
            generation,
        )
    };
    // RouteConflict is "True" when there is a conflict (a problem condition, like k8s' *Pressure).
    let conflict = match &a.conflict_with {
        Some(winner) => {
            let mut c = condition(
                conditions::ROUTE_CONFLICT,
                true,
                reason::HOST_PATH_TAKEN,
                format!("an older object keeps this route: {winner}"),
                generation,
            );
            c.status = "True".into();
            c
        }
        None => {
            let mut c = condition(
                conditions::ROUTE_CONFLICT,
                false,
                reason::NO_CONFLICT,
                "no other object claims these routes".into(),
                generation,
            );
            c.status = "False".into();
            c
        }
    };
    let scaling = match (&a.hpa, a.invalid.is_empty()) {
        (Some(hpa), _) => condition(
            conditions::SCALING_ACTIVE,
            false,
            reason::HPA_OWNS_WORKLOAD,
            format!(
                "HorizontalPodAutoscaler {ns}/{hpa} scales {}; Rouse does not patch /scale while it exists",
                a.workload
            ),
            generation,
        ),
        (None, false) => condition(
            conditions::SCALING_ACTIVE,
            false,
            "InvalidSpec",
            a.invalid.join("; "),
            generation,
        ),
        (None, true) => condition(
            conditions::SCALING_ACTIVE,
            a.healthy(),
            reason::SCALING,
            format!("scaling {}", a.workload),
            generation,
        ),
    };
    let ready_ok = a.healthy() && workload_ok;
    let ready_msg = if ready_ok {
        "routes served and scaling active".to_string()
    } else {
        [&target_found, &scaling]
            .iter()
            .filter(|c| c.status == "False")
            .map(|c| c.message.clone())
            .chain(
                a.conflict_with
                    .iter()
                    .map(|w| format!("route conflict with {w}")),
            )
            .collect::<Vec<_>>()
            .join("; ")
    };
    let ready_reason = if ready_ok {
        reason::RECONCILED
    } else if !a.invalid.is_empty() {
        "InvalidSpec"
    } else if a.conflict_with.is_some() {
        reason::HOST_PATH_TAKEN
    } else if !a.service_found {
        reason::SERVICE_NOT_FOUND
    } else if !workload_ok {
        reason::WORKLOAD_NOT_FOUND
    } else {
        reason::HPA_OWNS_WORKLOAD
    };
    let ready = condition(
        conditions::READY,
        ready_ok,
        ready_reason,
        ready_msg,
        generation,
    );
    let mut conds = vec![ready, target_found, conflict, scaling];
    for c in &mut conds {
        if let Some(p) = previous.conditions.iter().find(|p| p.type_ == c.type_)
            && p.status == c.status
        {
            c.last_transition_time = p.last_transition_time.clone();
        }
    }
    let current = match observed {
        Some(Observed::Replicas(n)) => i32::try_from(*n).ok(),
        _ => previous.current_replicas,
    };
    HTTPScaledObjectStatus {
        target_workload: Some(a.workload.to_string()),
        target_service: Some(match (&svc.port, &svc.port_name) {
            (Some(p), _) => format!("{}:{p}", svc.service),
            (None, Some(n)) => format!("{}:{n}", svc.service),
            _ => svc.service.clone(),
        }),
        conditions: conds,
        observed_generation: generation,
        current_replicas: current,
        desired_replicas: desired.and_then(|d| i32::try_from(d).ok()).or(current),
    }
}

/// Equal but for condition timestamps.
fn same_status(a: &HTTPScaledObjectStatus, b: &HTTPScaledObjectStatus) -> bool {
    let strip = |s: &HTTPScaledObjectStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(a) == strip(b)
}

//! What each object needs, decided from the watched state alone (pure: no API calls).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::{Resource, ResourceExt};
use rouse_core::crd::{HTTPScaledObject, claim_order, object_key, route_of};
use rouse_core::{Conflict, Route, RouteTable};
use rouse_scale::Policy;

use crate::policy::policy_of;
use crate::scaler::WorkloadRef;

/// `scaleTargetRef.apiVersion` when the object leaves it out (KEDA's default).
const DEFAULT_API_VERSION: &str = "apps/v1";
/// `scaleTargetRef.kind` when the object leaves it out (KEDA's default).
const DEFAULT_KIND: &str = "Deployment";

/// The watched state one pass works from.
pub(super) struct World {
    pub objects: Vec<Arc<HTTPScaledObject>>,
    /// `namespace/name` of every Service.
    pub services: HashSet<String>,
    pub hpas: Vec<Arc<HorizontalPodAutoscaler>>,
}

/// What one object needs, as far as this controller can tell.
#[derive(Debug, Clone)]
pub(super) struct Assessment {
    /// `namespace/name`.
    pub key: String,
    /// Every problem with the spec, each naming its field.
    pub invalid: Vec<String>,
    /// `namespace/name` of the Service `spec.scaleTargetRef.service` names.
    pub service: String,
    pub service_found: bool,
    /// The host/path this (newer) object lost, and the object that keeps it.
    pub conflict: Option<Conflict>,
    /// An HPA that scales the same workload.
    pub hpa: Option<String>,
    pub policy: Option<Policy>,
    pub workload: WorkloadRef,
}

impl Assessment {
    /// Whether a scaling loop should run: a valid spec, the Service there, the routes its own
    /// and no HPA in the way.
    pub fn healthy(&self) -> bool {
        self.invalid.is_empty()
            && self.service_found
            && self.conflict.is_none()
            && self.hpa.is_none()
    }
}

/// Every object's assessment, by key.
pub(super) fn assess(world: &World) -> HashMap<String, Assessment> {
    let mut ordered: Vec<&HTTPScaledObject> = world.objects.iter().map(AsRef::as_ref).collect();
    claim_order(&mut ordered);
    let mut routes = Vec::new();
    let mut out = HashMap::new();
    for o in ordered {
        let (a, route) = assess_one(o, world);
        routes.extend(route);
        out.insert(a.key.clone(), a);
    }
    // Same rule as the proxies: the older object keeps a host/path, the newer is refused.
    let (_, conflicts) = RouteTable::build(routes);
    for c in conflicts {
        if let Some(a) = out.get_mut(&c.route) {
            a.conflict = Some(c);
        }
    }
    out
}

/// One object on its own (conflicts with others are found afterwards), and its route if valid.
fn assess_one(o: &HTTPScaledObject, world: &World) -> (Assessment, Option<Route>) {
    let mut invalid = Vec::new();
    let route = match route_of(o) {
        Ok(r) => Some(r),
        Err(mut e) => {
            invalid.append(&mut e);
            None
        }
    };
    let policy = match policy_of(&o.spec) {
        Ok(p) => Some(p),
        Err(mut e) => {
            invalid.append(&mut e);
            None
        }
    };
    let workload = workload_of(o);
    let service = format!(
        "{}/{}",
        o.namespace().unwrap_or_default(),
        o.spec.scale_target_ref.service
    );
    let a = Assessment {
        key: object_key(o),
        invalid,
        service_found: world.services.contains(&service),
        service,
        conflict: None,
        hpa: hpa_for(&workload, &world.hpas),
        policy,
        workload,
    };
    (a, route)
}

/// The workload `spec.scaleTargetRef` names, KEDA's defaults filled in.
pub(super) fn workload_of(o: &HTTPScaledObject) -> WorkloadRef {
    let r = &o.spec.scale_target_ref;
    WorkloadRef {
        namespace: o.namespace().unwrap_or_default(),
        api_version: r
            .api_version
            .clone()
            .unwrap_or_else(|| DEFAULT_API_VERSION.into()),
        kind: r.kind.clone().unwrap_or_else(|| DEFAULT_KIND.into()),
        name: r.name.clone().unwrap_or_else(|| o.name_any()),
        object: o.object_ref(&()),
    }
}

/// The name of an HPA in the workload's namespace that targets the same workload.
fn hpa_for(w: &WorkloadRef, hpas: &[Arc<HorizontalPodAutoscaler>]) -> Option<String> {
    hpas.iter()
        .find(|h| {
            h.namespace().as_deref() == Some(w.namespace.as_str())
                && h.spec.as_ref().is_some_and(|s| {
                    s.scale_target_ref.kind == w.kind && s.scale_target_ref.name == w.name
                })
        })
        .map(|h| h.name_any())
}

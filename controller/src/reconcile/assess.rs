//! What each object needs, decided from the watched state alone (pure: no API calls). The
//! three route kinds (HTTPScaledObject, InterceptorRoute and KEDA's InterceptorRoute) are
//! assessed together: they share one key space and claim hosts and paths in one order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::Resource;
use rouse_core::crd::{
    HTTPScaledObject, InterceptorRoute, KedaInterceptorRoute, RouteObject, claim_all, route_owner,
};
use rouse_core::{Conflict, Route, RouteTable};
use rouse_scale::Policy;

use super::interceptor::{interceptor_policy, interceptor_workload};
use crate::policy::policy_of;
use crate::scaler::WorkloadRef;

/// `scaleTargetRef.apiVersion` when the object leaves it out (KEDA's default).
pub(super) const DEFAULT_API_VERSION: &str = "apps/v1";
/// `scaleTargetRef.kind` when the object leaves it out (KEDA's default).
pub(super) const DEFAULT_KIND: &str = "Deployment";

/// The watched state one pass works from.
#[derive(Default)]
pub(super) struct World {
    pub objects: Vec<Arc<HTTPScaledObject>>,
    /// `rouse.dev` InterceptorRoutes.
    pub routes: Vec<Arc<InterceptorRoute>>,
    /// `http.keda.sh` InterceptorRoutes (empty unless `--keda-interceptor-routes`).
    pub keda_routes: Vec<Arc<KedaInterceptorRoute>>,
    /// `namespace/name` of every Service.
    pub services: HashSet<String>,
    pub hpas: Vec<Arc<HorizontalPodAutoscaler>>,
}

impl World {
    /// Every route object, of every kind.
    pub fn route_objects(&self) -> Vec<RouteObject<'_>> {
        self.objects
            .iter()
            .map(|o| RouteObject::Scaled(o))
            .chain(self.routes.iter().map(|o| RouteObject::Route(o)))
            .chain(self.keda_routes.iter().map(|o| RouteObject::Keda(o)))
            .collect()
    }
}

/// What one object needs, as far as this controller can tell.
#[derive(Debug, Clone)]
pub(super) struct Assessment {
    /// `namespace/name`.
    pub key: String,
    /// Every problem with the spec, each naming its field (including fields Rouse refuses).
    pub invalid: Vec<String>,
    /// `namespace/name` of the target Service.
    pub service: String,
    pub service_found: bool,
    /// `service:port` as the status shows it.
    pub target_service: String,
    /// The host/path this (newer) object lost, and the object that keeps it.
    pub conflict: Option<Conflict>,
    /// An HPA that scales the same workload.
    pub hpa: Option<String>,
    pub policy: Option<Policy>,
    /// The workload Rouse scales; `None`: a KEDA ScaledObject scales it through Rouse's
    /// external scaler (an InterceptorRoute without `spec.rouse.scaleTargetRef`).
    pub workload: Option<WorkloadRef>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// [`RouteObject::kind`] of the object assessed.
    pub kind: &'static str,
}

impl Assessment {
    /// Whether the object is served as asked: a valid spec, the Service there, the routes its
    /// own and no HPA in the way.
    pub fn healthy(&self) -> bool {
        self.invalid.is_empty()
            && self.service_found
            && self.conflict.is_none()
            && self.hpa.is_none()
    }

    /// Whether Rouse runs a scaling loop for it.
    pub fn scaled_by_rouse(&self) -> bool {
        self.healthy() && self.workload.is_some()
    }
}

/// Every object's assessment, by key.
pub(super) fn assess(world: &World) -> HashMap<String, Assessment> {
    let (claiming, shadowed) = claim_all(world.route_objects());
    let mut routes = Vec::new();
    let mut out = HashMap::new();
    for o in claiming {
        let (a, route) = assess_one(o, world);
        routes.extend(route.into_iter().flatten());
        out.insert(a.key.clone(), a);
    }
    for (o, by) in shadowed {
        let (mut a, _) = assess_one(o, world);
        a.invalid.push(format!(
            "metadata.name: an {by} of the same name replaces this {} (KEDA's rule); rename \
             one of them",
            o.kind()
        ));
        // The winner has the key itself; this one is found by [`assessment_key`].
        out.insert(assessment_key(&a.key, a.kind, false), a);
    }
    // Same rule as the proxies: the older object keeps a host/path, the newer is refused. An
    // object's own routes never conflict with each other in a report.
    let (_, conflicts) = RouteTable::build(routes);
    for c in conflicts {
        let (owner, holder) = (route_owner(&c.route), route_owner(&c.existing));
        if owner == holder {
            continue;
        }
        if let Some(a) = out.get_mut(owner)
            && a.conflict.is_none()
        {
            a.conflict = Some(Conflict {
                existing: holder.to_string(),
                ..c
            });
        }
    }
    out
}

/// Where [`assess`] files an object's assessment: its key, or for an object another kind of the
/// same name replaces (`shadowed`), its key and kind.
pub(super) fn assessment_key(key: &str, kind: &str, winner: bool) -> String {
    if winner {
        key.to_string()
    } else {
        format!("{key}#{kind}")
    }
}

/// One object on its own (conflicts with others are found afterwards), and its routes if
/// valid.
fn assess_one(o: RouteObject<'_>, world: &World) -> (Assessment, Option<Vec<Route>>) {
    let mut invalid = Vec::new();
    let routes = match o.routes() {
        Ok(r) => Some(r),
        Err(mut e) => {
            invalid.append(&mut e);
            None
        }
    };
    let key = o.key();
    let object = object_ref(o);
    let (policy, workload) = match o {
        RouteObject::Scaled(s) => (policy_of(&s.spec), Some(workload_of(s))),
        _ => match o.interceptor_spec() {
            Some(Ok(spec)) => (
                interceptor_policy(&spec),
                interceptor_workload(&spec, &key, object),
            ),
            // The spec's problems are already in `invalid` (from `routes`).
            _ => (Err(Vec::new()), None),
        },
    };
    let policy = match policy {
        Ok(p) => Some(p),
        Err(mut e) => {
            invalid.append(&mut e);
            None
        }
    };
    let target = o.target();
    let service = target
        .as_ref()
        .map(|t| format!("{}/{}", t.namespace, t.service))
        .unwrap_or_default();
    let target_service = target.map_or_else(String::new, |t| match (t.port, t.port_name) {
        (Some(p), _) => format!("{}:{p}", t.service),
        (None, Some(n)) => format!("{}:{n}", t.service),
        _ => t.service,
    });
    let hpa = workload.as_ref().and_then(|w| hpa_for(w, &world.hpas));
    let a = Assessment {
        key,
        invalid,
        service_found: world.services.contains(&service),
        service,
        target_service,
        conflict: None,
        hpa,
        policy,
        workload,
        generation: o.generation(),
        kind: o.kind(),
    };
    (a, routes)
}

/// The reference Events about `o` are attached to.
fn object_ref(o: RouteObject<'_>) -> k8s_openapi::api::core::v1::ObjectReference {
    match o {
        RouteObject::Scaled(s) => s.object_ref(&()),
        RouteObject::Route(r) => r.object_ref(&()),
        RouteObject::Keda(k) => k.object_ref(&()),
    }
}

/// The workload `spec.scaleTargetRef` names, KEDA's defaults filled in.
pub(super) fn workload_of(o: &HTTPScaledObject) -> WorkloadRef {
    let r = &o.spec.scale_target_ref;
    WorkloadRef {
        namespace: o.metadata.namespace.clone().unwrap_or_default(),
        api_version: r
            .api_version
            .clone()
            .unwrap_or_else(|| DEFAULT_API_VERSION.into()),
        kind: r.kind.clone().unwrap_or_else(|| DEFAULT_KIND.into()),
        name: r
            .name
            .clone()
            .unwrap_or_else(|| o.metadata.name.clone().unwrap_or_default()),
        object: o.object_ref(&()),
    }
}

/// The name of an HPA in the workload's namespace that targets the same workload.
fn hpa_for(w: &WorkloadRef, hpas: &[Arc<HorizontalPodAutoscaler>]) -> Option<String> {
    use kube::ResourceExt;
    hpas.iter()
        .find(|h| {
            h.namespace().as_deref() == Some(w.namespace.as_str())
                && h.spec.as_ref().is_some_and(|s| {
                    s.scale_target_ref.kind == w.kind && s.scale_target_ref.name == w.name
                })
        })
        .map(|h| h.name_any())
}

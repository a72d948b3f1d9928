//! The three kinds that claim routes — `HTTPScaledObject`, `InterceptorRoute` (rouse.dev) and
//! KEDA's `InterceptorRoute` (http.keda.sh) — seen alike, and the one order in which they claim
//! hosts and paths. Shared by the proxy and the controller so both agree on who serves what.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{InterceptorRoute, InterceptorRouteSpec, KedaInterceptorRoute, routes_of};
use crate::crd::{HTTPScaledObject, object_key, route_of};
use crate::route::Route;

/// One object that claims routes.
#[derive(Debug, Clone, Copy)]
pub enum RouteObject<'a> {
    /// `rouse.dev` InterceptorRoute: wins over the others of the same `namespace/name`.
    Route(&'a InterceptorRoute),
    /// `http.keda.sh` InterceptorRoute: wins over an HTTPScaledObject of the same name (KEDA's
    /// rule: "if an IR has the same namespace and name, the IR wins").
    Keda(&'a KedaInterceptorRoute),
    /// `rouse.dev` HTTPScaledObject.
    Scaled(&'a HTTPScaledObject),
}

/// A Service port an object names: its target's, or its fallback's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServicePort {
    /// The object's namespace (a Service is always in it).
    pub namespace: String,
    pub service: String,
    /// The port number, or
    pub port: Option<i32>,
    /// the port's name (exactly one of them in a valid object).
    pub port_name: Option<String>,
}

impl<'a> RouteObject<'a> {
    fn meta(&self) -> &'a ObjectMeta {
        match self {
            RouteObject::Route(o) => &o.metadata,
            RouteObject::Keda(o) => &o.metadata,
            RouteObject::Scaled(o) => &o.metadata,
        }
    }

    /// `Kind apiVersion`, as messages name it.
    pub fn kind(&self) -> &'static str {
        match self {
            RouteObject::Route(_) => "InterceptorRoute rouse.dev/v1alpha1",
            RouteObject::Keda(_) => "InterceptorRoute http.keda.sh/v1beta1",
            RouteObject::Scaled(_) => "HTTPScaledObject rouse.dev/v1alpha1",
        }
    }

    /// `namespace/name`: the route name, target and demand key of the object.
    pub fn key(&self) -> String {
        match self {
            RouteObject::Scaled(o) => object_key(o),
            _ => {
                let m = self.meta();
                format!(
                    "{}/{}",
                    m.namespace.as_deref().unwrap_or_default(),
                    m.name.as_deref().unwrap_or_default()
                )
            }
        }
    }

    /// Which kind wins when two objects share a key (lower wins).
    fn precedence(&self) -> u8 {
        match self {
            RouteObject::Route(_) => 0,
            RouteObject::Keda(_) => 1,
            RouteObject::Scaled(_) => 2,
        }
    }

    /// The InterceptorRoute spec, for the two InterceptorRoute kinds (KEDA's read strictly).
    pub fn interceptor_spec(&self) -> Option<Result<InterceptorRouteSpec, Vec<String>>> {
        match self {
            RouteObject::Route(o) => Some(Ok(o.spec.clone())),
            RouteObject::Keda(o) => Some(o.spec()),
            RouteObject::Scaled(_) => None,
        }
    }

    /// The object's routes, or every problem with it, each naming its field.
    pub fn routes(&self) -> Result<Vec<Route>, Vec<String>> {
        match self {
            RouteObject::Scaled(o) => route_of(o).map(|r| vec![r]),
            _ => match self.interceptor_spec() {
                Some(Ok(spec)) => routes_of(&self.key(), &spec),
                Some(Err(e)) => Err(e),
                None => Err(Vec::new()),
            },
        }
    }

    /// The Service port the object's requests go to.
    pub fn target(&self) -> Option<ServicePort> {
        let namespace = self.meta().namespace.clone().unwrap_or_default();
        match self {
            RouteObject::Scaled(o) => {
                let r = &o.spec.scale_target_ref;
                Some(ServicePort {
                    namespace,
                    service: r.service.clone(),
                    port: r.port,
                    port_name: r.port_name.clone(),
                })
            }
            _ => {
                let spec = self.interceptor_spec()?.ok()?;
                let t = spec.target;
                Some(ServicePort {
                    namespace,
                    service: t.service,
                    port: t.port,
                    port_name: t.port_name,
                })
            }
        }
    }

    /// The Service port of the object's fallback, if it has one.
    pub fn fallback(&self) -> Option<ServicePort> {
        let namespace = self.meta().namespace.clone().unwrap_or_default();
        match self {
            RouteObject::Scaled(o) => {
                let r = o.spec.cold_start_timeout_failover_ref.as_ref()?;
                Some(ServicePort {
                    namespace,
                    service: r.service.clone(),
                    port: r.port,
                    port_name: r.port_name.clone(),
                })
            }
            _ => {
                let spec = self.interceptor_spec()?.ok()?;
                let s = spec.cold_start?.fallback?.service?;
                Some(ServicePort {
                    namespace,
                    service: s.name,
                    port: s.port,
                    port_name: s.port_name,
                })
            }
        }
    }

    /// `metadata.generation`.
    pub fn generation(&self) -> Option<i64> {
        self.meta().generation
    }
}

/// The objects in the order their routes are claimed — oldest first, ties by key — without the
/// ones another object of the same key replaces, which come second with the kind that replaces
/// them. Whichever process computes it gets the same answer, so the proxy and the controller
/// agree on which newer object is refused on a conflict.
pub fn claim_all<'a>(
    mut objects: Vec<RouteObject<'a>>,
) -> (Vec<RouteObject<'a>>, Vec<(RouteObject<'a>, &'static str)>) {
    objects.sort_by_cached_key(|o| (o.key(), o.precedence()));
    let mut claiming: Vec<RouteObject<'a>> = Vec::with_capacity(objects.len());
    let mut shadowed = Vec::new();
    for o in objects {
        match claiming.last() {
            Some(winner) if winner.key() == o.key() => {
                let kind = winner.kind();
                shadowed.push((o, kind));
            }
            _ => claiming.push(o),
        }
    }
    claiming.sort_by_cached_key(|o| (o.meta().creation_timestamp.as_ref().map(|t| t.0), o.key()));
    (claiming, shadowed)
}

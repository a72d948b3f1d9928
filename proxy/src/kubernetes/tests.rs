use rouse_core::crd::{HTTPScaledObject, InterceptorRoute, KedaInterceptorRoute, RouteObject};
use serde_json::json;

use super::endpoints::{PortRef, ServiceRef};
use super::plan;

fn yaml<T: serde::de::DeserializeOwned>(
    api: &str,
    kind: &str,
    name: &str,
    spec: serde_json::Value,
) -> T {
    serde_json::from_value(json!({
        "apiVersion": api, "kind": kind,
        "metadata": {"name": name, "namespace": "team"}, "spec": spec
    }))
    .expect("object parses")
}

fn svc(name: &str, port: PortRef) -> ServiceRef {
    ServiceRef {
        namespace: "team".into(),
        name: name.into(),
        port,
    }
}

#[test]
fn every_kind_is_planned_alike_and_a_same_named_interceptor_route_wins() {
    let so: HTTPScaledObject = yaml(
        "rouse.dev/v1alpha1",
        "HTTPScaledObject",
        "shop",
        json!({"hosts": ["old.test"], "scaleTargetRef": {"service": "old", "port": 80}}),
    );
    let ir: InterceptorRoute = yaml(
        "rouse.dev/v1alpha1",
        "InterceptorRoute",
        "shop",
        json!({"target": {"service": "shop", "portName": "http"},
               "rules": [{"hosts": ["shop.test"]}],
               "scalingMetric": {"concurrency": {"targetValue": 1}},
               "coldStart": {"fallback": {"service": {"name": "spare", "port": 81}}}}),
    );
    let keda: KedaInterceptorRoute = yaml(
        "http.keda.sh/v1beta1",
        "InterceptorRoute",
        "api",
        json!({"target": {"service": "api", "port": 8080}, "rules": [{"hosts": ["api.test"]}],
               "scalingMetric": {"concurrency": {"targetValue": 1}}}),
    );
    let p = plan(vec![
        RouteObject::Scaled(&so),
        RouteObject::Route(&ir),
        RouteObject::Keda(&keda),
    ]);
    let hosts: Vec<String> = p.routes.iter().map(|r| r.hosts[0].to_string()).collect();
    assert_eq!(
        hosts.len(),
        2,
        "the HTTPScaledObject is replaced: {hosts:?}"
    );
    assert!(hosts.contains(&"shop.test".to_string()) && hosts.contains(&"api.test".to_string()));
    assert_eq!(
        p.targets["team/shop"],
        svc("shop", PortRef::Name("http".into()))
    );
    assert_eq!(p.targets["team/api"], svc("api", PortRef::Number(8080)));
    assert_eq!(
        p.failovers["team/shop#failover"],
        svc("spare", PortRef::Number(81))
    );
    assert!(p.present.contains("team/shop") && p.present.contains("team/api"));
}

#[test]
fn a_refused_interceptor_route_is_not_routed_nor_followed() {
    let ir: InterceptorRoute = yaml(
        "rouse.dev/v1alpha1",
        "InterceptorRoute",
        "slow",
        json!({"target": {"service": "slow", "port": 80},
               "scalingMetric": {"concurrency": {"targetValue": 1}},
               "timeouts": {"request": "60s"}}),
    );
    let p = plan(vec![RouteObject::Route(&ir)]);
    assert!(p.routes.is_empty() && p.targets.is_empty());
    assert!(
        p.present.contains("team/slow"),
        "known, so its old endpoints are dropped"
    );
}

use std::time::Duration;

use super::*;
use crate::crd::HTTPScaledObject;
use crate::crd::route::DEFAULT_FAILOVER_TIMEOUT;
use crate::route::{Failover, HostPattern, StaticMode};

/// KEDA's reference example (keda.sh, HTTP Add-on 0.16, reference/interceptorroute).
const KEDA_REFERENCE: &str = "
apiVersion: http.keda.sh/v1beta1
kind: InterceptorRoute
metadata:
  name: my-app
  namespace: default
spec:
  target:
    service: my-app-svc
    port: 8080
  rules:
    - hosts:
        - app.example.com
      paths:
        - value: /api
  scalingMetric:
    concurrency:
      targetValue: 100
  staticRoutes:
    - rules:
        - paths:
            - value: /healthz
      response:
        statusCode: 200
        body: \"OK\"
";

fn rouse(spec: &str) -> InterceptorRoute {
    serde_yaml::from_str(&format!(
        "apiVersion: rouse.dev/v1alpha1\nkind: InterceptorRoute\n\
         metadata: {{name: shop, namespace: apps}}\nspec: {spec}\n"
    ))
    .expect("object parses")
}

fn keda(spec: &str) -> KedaInterceptorRoute {
    serde_yaml::from_str(&format!(
        "apiVersion: http.keda.sh/v1beta1\nkind: InterceptorRoute\n\
         metadata: {{name: shop, namespace: apps}}\nspec: {spec}\n"
    ))
    .expect("object parses")
}

const BASE: &str =
    "target: {service: shop, port: 80}, scalingMetric: {concurrency: {targetValue: 10}}";

fn routes(extra: &str) -> Result<Vec<crate::Route>, Vec<String>> {
    RouteObject::Route(&rouse(&format!("{{{BASE}{extra}}}"))).routes()
}

fn assert_refused(errors: &[String], field: &str) {
    assert!(
        errors.iter().any(|e| e.starts_with(field)),
        "{field} not named in {errors:?}"
    );
}

#[test]
fn the_keda_reference_example_routes_its_host_and_answers_its_probe_path_itself() {
    let as_keda: KedaInterceptorRoute = serde_yaml::from_str(KEDA_REFERENCE).expect("parses");
    let as_rouse: InterceptorRoute =
        serde_yaml::from_str(&KEDA_REFERENCE.replace("http.keda.sh/v1beta1", "rouse.dev/v1alpha1"))
            .expect("parses with only the apiVersion changed");
    for o in [RouteObject::Keda(&as_keda), RouteObject::Route(&as_rouse)] {
        let r = o.routes().expect("valid");
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0].name, "default/my-app");
        assert_eq!(r[0].target, "default/my-app");
        assert_eq!(
            r[0].hosts,
            vec![HostPattern::parse("app.example.com").expect("host")]
        );
        assert_eq!(r[0].path_prefixes[0].as_str(), "/api");
        assert!(r[0].limits.static_answer.is_none());
        // The static route answers on the object's own host, never waking the target.
        assert_eq!(r[1].target, "default/my-app");
        assert_eq!(r[1].hosts, r[0].hosts);
        assert_eq!(r[1].path_prefixes[0].as_str(), "/healthz");
        let answer = r[1].limits.static_answer.as_ref().expect("static");
        assert_eq!(
            (answer.response.status, answer.response.body.as_str()),
            (200, "OK")
        );
        assert_eq!(answer.mode, StaticMode::WhenUnavailable);
        assert!(answer.answers(false) && !answer.answers(true));
        assert_eq!(
            o.target().map(|t| (t.service, t.port)),
            Some(("my-app-svc".into(), Some(8080)))
        );
    }
}

#[test]
fn each_rule_is_a_route_of_the_same_target_and_no_rule_means_every_host() {
    let r = routes(", rules: [{hosts: [a.test]}, {hosts: [b.test], paths: [{value: /x}], headers: [{name: X-Tenant, value: t1}]}]").expect("valid");
    let names: Vec<&str> = r.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["apps/shop", "apps/shop#rule-1"]);
    assert!(r.iter().all(|r| r.target == "apps/shop"));
    assert_eq!(r[1].headers[0].name, "x-tenant");
    assert_eq!(route_owner(&r[1].name), "apps/shop");
    let r = routes("").expect("valid");
    assert_eq!((r.len(), &r[0].hosts), (1, &vec![HostPattern::Any]));
    assert!(r[0].path_prefixes.is_empty(), "no paths: `/`");
}

#[test]
fn readiness_is_the_hold_deadline_with_kedas_fallback_default() {
    let hold = |extra: &str| routes(extra).expect("valid")[0].limits.hold_timeout;
    assert_eq!(hold(""), Duration::from_secs(20), "unset: Rouse's default");
    assert_eq!(hold(", timeouts: {readiness: 7s}"), Duration::from_secs(7));
    assert_eq!(
        hold(", timeouts: {readiness: 0s}"),
        MAX_HOLD,
        "0s: no deadline"
    );
    let fallback = ", coldStart: {fallback: {service: {name: spare, port: 80}}}";
    assert_eq!(hold(fallback), DEFAULT_FAILOVER_TIMEOUT);
    assert_eq!(
        hold(&format!("{fallback}, timeouts: {{readiness: 0s}}")),
        DEFAULT_FAILOVER_TIMEOUT,
        "KEDA: a fallback with readiness 0s gets 30 s"
    );
    assert_eq!(
        hold(&format!("{fallback}, timeouts: {{readiness: 5s}}")),
        Duration::from_secs(5)
    );
    assert_eq!(
        hold(", timeouts: {readiness: 5s}, rouse: {coldStart: {holdTimeoutMs: 900}}"),
        Duration::from_millis(900),
        "Rouse's extension wins"
    );
    let r = routes(fallback).expect("valid");
    assert_eq!(
        r[0].limits.failover,
        Some(Failover {
            target: "apps/shop#failover".into(),
            addr: None
        })
    );
}

#[test]
fn an_inline_placeholder_is_served_and_what_rouse_cannot_serve_is_refused_by_name() {
    let r = routes(", coldStart: {placeholder: {response: {body: '<h1>Loading...</h1>', headers: {Refresh: '5'}}}}").expect("valid");
    let p = r[0].limits.placeholder.as_ref().expect("placeholder");
    assert_eq!((p.status, p.header("refresh")), (503, Some("5")));

    let errors = routes(
        ", coldStart: {placeholder: {response: {bodyFromConfigMap: {name: page}}}}, \
         timeouts: {request: 60s, responseHeader: 30s}, \
         staticRoutes: [{rules: [{paths: [{value: /healthz}]}], response: {statusCode: 99}}]",
    )
    .expect_err("refused");
    for field in [
        "spec.coldStart.placeholder.response.bodyFromConfigMap: not served",
        "spec.timeouts.request: not served",
        "spec.timeouts.responseHeader: not served",
        "spec.staticRoutes[0].response.statusCode: must be 200..=599",
    ] {
        assert_refused(&errors, field);
    }
    let errors = routes(
        ", coldStart: {placeholder: {response: {}}, fallback: {service: {name: spare, port: 80}}}",
    )
    .expect_err("both");
    assert_refused(
        &errors,
        "spec.coldStart.placeholder: not served by Rouse together",
    );
    // `0s` disables a timeout: Rouse has none of these, so that is served as given.
    routes(", timeouts: {request: 0s, responseHeader: 0s}").expect("disabled timeouts are served");
    let errors = routes(", timeouts: {readiness: soon}, rules: [{hosts: ['bad host']}]")
        .expect_err("invalid");
    assert_refused(&errors, "spec.timeouts.readiness");
    assert_refused(&errors, "spec.rules[0].hosts");
}

#[test]
fn always_static_routes_keep_their_own_hosts_and_never_hold() {
    let r = routes(
        ", rules: [{hosts: [a.test]}], coldStart: {fallback: {service: {name: spare, port: 80}}}, \
         staticRoutes: [{rules: [{hosts: [status.test], paths: [{value: /}]}], responseMode: Always, \
         response: {body: down}}]",
    )
    .expect("valid");
    let s = &r[1];
    assert_eq!(s.name, "apps/shop#static-0-0");
    assert_eq!(
        s.hosts,
        vec![HostPattern::parse("status.test").expect("host")]
    );
    let answer = s.limits.static_answer.as_ref().expect("static");
    assert!(
        answer.answers(true),
        "Always answers even when the target runs"
    );
    assert_eq!(answer.response.status, 503, "KEDA's default status");
    assert!(s.limits.failover.is_none() && s.limits.placeholder.is_none());
}

#[test]
fn keda_objects_are_read_as_they_are_and_unknown_fields_are_refused_by_name() {
    let o = keda(&format!(
        "{{{BASE}, coldStart: {{fallback: {{service: {{name: spare, portName: http}}}}}}}}"
    ));
    let spec = o.spec().expect("valid");
    assert!(spec.rouse.is_none());
    let fallback = RouteObject::Keda(&o).fallback().expect("fallback");
    assert_eq!(
        (fallback.service.as_str(), fallback.port_name.as_deref()),
        ("spare", Some("http"))
    );

    let newer = keda(&format!(
        "{{{BASE}, coldStart: {{maxPendingRequests: 10, placeholder: {{response: {{}}}}}}, \
         sessionAffinity: {{cookie: x}}}}"
    ));
    let errors = newer.spec().expect_err("unknown fields");
    assert_refused(
        &errors,
        "spec.coldStart.maxPendingRequests: not served by Rouse",
    );
    assert_refused(&errors, "spec.sessionAffinity: not served by Rouse");
    let bad = keda("{target: {service: shop, port: eighty}, scalingMetric: {}}");
    assert_refused(&bad.spec().expect_err("bad type"), "spec.target.port");
}

#[test]
fn an_interceptor_route_replaces_an_http_scaled_object_of_the_same_name() {
    let ir = rouse(&format!("{{{BASE}}}"));
    let so: HTTPScaledObject = serde_yaml::from_str(
        "apiVersion: rouse.dev/v1alpha1\nkind: HTTPScaledObject\n\
         metadata: {name: shop, namespace: apps}\nspec: {scaleTargetRef: {service: shop, port: 80}}\n",
    )
    .expect("parses");
    let k = keda(&format!("{{{BASE}}}"));
    let (claiming, shadowed) = claim_all(vec![
        RouteObject::Scaled(&so),
        RouteObject::Keda(&k),
        RouteObject::Route(&ir),
    ]);
    assert_eq!(claiming.len(), 1);
    assert!(matches!(claiming[0], RouteObject::Route(_)));
    let by: Vec<&str> = shadowed.iter().map(|(_, by)| *by).collect();
    assert_eq!(by, ["InterceptorRoute rouse.dev/v1alpha1"; 2]);
}

#[test]
fn the_rouse_twin_carries_kedas_validation_rules() {
    let yaml = crate::crd::crds_yaml().expect("CRDs serialise");
    let ir = yaml
        .split("---\n")
        .find(|d| d.contains("kind: InterceptorRoute"))
        .expect("InterceptorRoute CRD");
    for rule in [
        "has(self.port) != has(self.portName)",
        "has(self.concurrency) || has(self.requestRate)",
        "has(self.fallback) || has(self.placeholder)",
        "!(has(self.body) && has(self.bodyFromConfigMap))",
        "x-kubernetes-list-type: set",
    ] {
        assert!(ir.contains(rule), "{rule}");
    }
}

#[test]
fn the_example_manifest_is_served_in_full() {
    let o: InterceptorRoute = serde_yaml::from_str(include_str!(
        "../../../../manifests/examples/interceptorroute.yaml"
    ))
    .expect("example parses");
    let r = RouteObject::Route(&o).routes().expect("nothing refused");
    assert_eq!(r.len(), 2);
    assert!(r[0].limits.placeholder.is_some());
    assert_eq!(r[0].limits.hold_timeout, Duration::from_secs(30));
    assert_eq!(r[0].limits.max_held_requests, 200);
    assert!(r[1].limits.static_answer.is_some());
}

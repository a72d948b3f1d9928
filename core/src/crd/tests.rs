use super::*;

/// A KEDA HTTP Add-on manifest using every `HTTPScaledObject` field (http-add-on v0.15.0).
pub const KEDA_MANIFEST: &str =
    include_str!("../../../manifests/examples/keda-httpscaledobject.yaml");

#[test]
fn committed_crd_yaml_matches_the_types() {
    let committed = include_str!("../../../manifests/crds/rouse.dev.yaml");
    let generated = crds_yaml().expect("CRDs serialise");
    assert!(
        committed == generated,
        "manifests/crds/rouse.dev.yaml is stale: run \
         `cargo run -p rouse-controller --bin crdgen > manifests/crds/rouse.dev.yaml`"
    );
}

#[test]
fn a_keda_manifest_reads_with_only_the_api_version_changed() {
    let yaml = KEDA_MANIFEST.replace("http.keda.sh/v1alpha1", "rouse.dev/v1alpha1");
    let o: HTTPScaledObject = serde_yaml::from_str(&yaml).expect("KEDA manifest parses");
    let s = &o.spec;
    assert_eq!(s.hosts.as_deref().map(<[String]>::len), Some(2));
    assert_eq!(s.scale_target_ref.port, Some(8080));
    assert_eq!(s.replica_bounds(), (0, 10));
    assert_eq!(s.scaledown_period_secs(), 120);
    let failover = s
        .cold_start_timeout_failover_ref
        .as_ref()
        .expect("failover");
    assert_eq!(failover.timeout_seconds, 30, "KEDA's default");
    let rate = s
        .scaling_metric
        .as_ref()
        .and_then(|m| m.request_rate.as_ref())
        .expect("request rate");
    assert_eq!((rate.target_value, rate.window.as_str()), (100, "1m"));
    assert_eq!(s.headers.as_ref().map(|h| h[1].value.is_none()), Some(true));
    assert!(s.rouse.is_none());
}

#[test]
fn keda_defaults_apply_when_fields_are_absent() {
    let o: HTTPScaledObject = serde_yaml::from_str(
        "apiVersion: rouse.dev/v1alpha1\nkind: HTTPScaledObject\nmetadata: {name: a}\n\
         spec: {scaleTargetRef: {service: a, port: 80}, scalingMetric: {concurrency: {}}}\n",
    )
    .expect("parses");
    assert_eq!(o.spec.replica_bounds(), (0, 100));
    assert_eq!(o.spec.scaledown_period_secs(), 300);
    let c = o.spec.scaling_metric.and_then(|m| m.concurrency);
    assert_eq!(c.map(|c| c.target_value), Some(100));
}

#[test]
fn the_schema_carries_keda_validation_rules() {
    let yaml = crds_yaml().expect("CRDs serialise");
    assert!(yaml.contains("has(self.portName) != has(self.port)"));
    assert!(yaml.contains("!(has(self.concurrency) && has(self.requestRate))"));
    assert!(yaml.contains("x-kubernetes-list-map-keys"));
    assert!(yaml.contains("shortNames"));
    assert!(
        yaml.contains("subresources:\n      status: {}"),
        "status subresource"
    );
}

fn object(yaml_spec: &str) -> HTTPScaledObject {
    serde_yaml::from_str(&format!(
        "apiVersion: rouse.dev/v1alpha1\nkind: HTTPScaledObject\n\
         metadata: {{name: shop, namespace: apps}}\nspec: {yaml_spec}\n"
    ))
    .expect("object parses")
}

#[test]
fn go_durations_parse_like_keda_reads_them() {
    use std::time::Duration;
    assert_eq!(parse_go_duration("20s"), Ok(Duration::from_secs(20)));
    assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
    assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
    for bad in ["", "20", "s", "1x", "-1s", "1m x"] {
        assert!(parse_go_duration(bad).is_err(), "{bad:?} must be refused");
    }
}

/// Of every field of KEDA's every-field manifest, the one Rouse cannot serve
/// (`timeouts.responseHeader: 5s`) is refused by name; without it, the rest is a route.
#[test]
fn the_keda_manifest_becomes_a_route() {
    let yaml = KEDA_MANIFEST.replace("http.keda.sh/v1alpha1", "rouse.dev/v1alpha1");
    let mut o: HTTPScaledObject = serde_yaml::from_str(&yaml).expect("parses");
    let errors = route_of(&o).expect_err("responseHeader: 5s is refused");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("spec.timeouts.responseHeader: not served"),
        "{errors:?}"
    );
    if let Some(t) = o.spec.timeouts.as_mut() {
        t.response_header = Some("0s".into());
    }
    let r = route_of(&o).expect("valid");
    assert_eq!(r.name, object_key(&o));
    assert_eq!(r.target, r.name);
    assert_eq!(r.hosts.len(), 2);
    assert!(!r.path_prefixes.is_empty());
    assert!(
        r.headers.iter().any(|h| h.value.is_none()),
        "presence match kept"
    );
}

#[test]
fn rouse_extensions_set_the_route_limits() {
    let o = object(
        "{hosts: [shop.example.com], scaleTargetRef: {service: shop, port: 80}, \
         timeouts: {conditionWait: 7s}, \
         rouse: {coldStart: {maxHeldRequests: 5, maxHeldBytes: 4096}, endpointConcurrency: 3, \
         rewritePrefix: /v2}}",
    );
    let r = route_of(&o).expect("valid");
    assert_eq!(r.name, "apps/shop");
    assert_eq!(r.limits.max_held_requests, 5);
    assert_eq!(r.limits.max_held_bytes, 4096);
    assert_eq!(r.limits.hold_timeout, std::time::Duration::from_secs(7));
    assert_eq!(r.limits.endpoint_concurrency, Some(3));
    assert_eq!(
        r.rewrite_prefix.map(|p| p.to_string()).as_deref(),
        Some("/v2")
    );
    // holdTimeoutMs wins over KEDA's conditionWait.
    let o = object(
        "{scaleTargetRef: {service: shop, port: 80}, timeouts: {conditionWait: 7s}, \
         rouse: {coldStart: {holdTimeoutMs: 1500}}}",
    );
    let r = route_of(&o).expect("valid");
    assert_eq!(
        r.limits.hold_timeout,
        std::time::Duration::from_millis(1500)
    );
    assert_eq!(
        r.hosts,
        vec![crate::HostPattern::Any],
        "no hosts = any host"
    );
}

#[test]
fn invalid_fields_are_all_reported_by_name() {
    let o = object(
        "{hosts: ['bad host'], pathPrefixes: [nope], headers: [{name: 'a b'}], \
         scaleTargetRef: {service: shop, port: 80}, timeouts: {conditionWait: soon}}",
    );
    let errors = route_of(&o).expect_err("invalid");
    assert_eq!(errors.len(), 4, "{errors:?}");
    for field in [
        "spec.hosts",
        "spec.pathPrefixes",
        "spec.headers",
        "spec.timeouts.conditionWait",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(field)),
            "{field}: {errors:?}"
        );
    }
}

#[test]
fn the_older_object_claims_first() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    let mut old = object("{scaleTargetRef: {service: a, port: 80}}");
    old.metadata.name = Some("z-old".into());
    old.metadata.creation_timestamp = Some(Time("2026-01-01T00:00:00Z".parse().expect("ts")));
    let mut new = object("{scaleTargetRef: {service: a, port: 80}}");
    new.metadata.name = Some("a-new".into());
    new.metadata.creation_timestamp = Some(Time("2026-02-01T00:00:00Z".parse().expect("ts")));
    let mut order = vec![&new, &old];
    claim_order(&mut order);
    assert_eq!(order[0].metadata.name.as_deref(), Some("z-old"));
}

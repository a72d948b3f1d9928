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

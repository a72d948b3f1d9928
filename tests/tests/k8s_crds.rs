//! Rouse's CRDs on a real kube-apiserver: the generated manifests apply (server-side apply) and
//! establish, a KEDA `HTTPScaledObject` with only its apiVersion changed is accepted, and the
//! schema's rules reject what KEDA's reject.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use rouse_core::crd::HTTPScaledObject;
use rouse_testcluster::TestCluster;

const CRDS: &str = include_str!("../../manifests/crds/rouse.dev.yaml");

/// The KEDA HTTP Add-on manifest (every field), as a KEDA user has it.
const KEDA_MANIFEST: &str = include_str!("../../manifests/examples/keda-httpscaledobject.yaml");

/// Applies the committed CRDs once per cluster and waits until they are served.
async fn install_crds(cluster: &TestCluster) {
    let api: Api<CustomResourceDefinition> = Api::all(cluster.client().await);
    let params = PatchParams::apply("rouse-test").force();
    for doc in CRDS.split("\n---\n").filter(|d| d.contains("kind:")) {
        let crd: CustomResourceDefinition =
            serde_yaml::from_str(doc).unwrap_or_else(|e| panic!("CRD YAML: {e}"));
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .unwrap_or_else(|e| panic!("server-side apply of {name}: {e}"));
        let api = api.clone();
        rouse_testcluster::wait_until(
            &format!("{name} Established"),
            Duration::from_secs(30),
            || {
                let (api, name) = (api.clone(), name.clone());
                async move {
                    api.get(&name).await.ok().is_some_and(|c| {
                        c.status
                            .and_then(|s| s.conditions)
                            .unwrap_or_default()
                            .iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    })
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

fn object(yaml: &str) -> HTTPScaledObject {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("object YAML: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_apply_and_accept_a_keda_manifest_with_the_api_version_changed() {
    let cluster = TestCluster::shared();
    install_crds(cluster).await;
    let ns = cluster.namespace("crds").await;
    let api: Api<HTTPScaledObject> = Api::namespaced(cluster.client().await, &ns);
    let yaml = KEDA_MANIFEST.replace("http.keda.sh/v1alpha1", "rouse.dev/v1alpha1");
    let created = api
        .create(&PostParams::default(), &object(&yaml))
        .await
        .unwrap_or_else(|e| panic!("the KEDA manifest was rejected: {e}"));
    // The API server applied the schema's defaults.
    let failover = created
        .spec
        .cold_start_timeout_failover_ref
        .expect("failover");
    assert_eq!(failover.timeout_seconds, 30);
    assert_eq!(created.spec.hosts.map(|h| h.len()), Some(2));

    // Applying the same manifest again (server-side apply) is a no-op, not a conflict.
    let again = api
        .patch(
            "xkcd",
            &PatchParams::apply("rouse-test"),
            &Patch::Apply(&object(&yaml)),
        )
        .await
        .unwrap_or_else(|e| panic!("re-apply: {e}"));
    assert_eq!(again.metadata.generation, created.metadata.generation);

    // The status subresource exists and takes Rouse's fields.
    let status =
        serde_json::json!({"status": {"targetService": "xkcd:8080", "desiredReplicas": 0}});
    let patched = api
        .patch_status("xkcd", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap_or_else(|e| panic!("status patch: {e}"));
    assert_eq!(
        patched.status.and_then(|s| s.target_service).as_deref(),
        Some("xkcd:8080")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_rejects_what_keda_rejects() {
    let cluster = TestCluster::shared();
    install_crds(cluster).await;
    let ns = cluster.namespace("crds-bad").await;
    let api: Api<HTTPScaledObject> = Api::namespaced(cluster.client().await, &ns);
    let cases = [
        (
            "port and portName",
            "scaleTargetRef: {service: a, port: 80, portName: http}",
            "must define either the 'portName' or the 'port'",
        ),
        (
            "neither port nor portName",
            "scaleTargetRef: {service: a}",
            "must define either the 'portName' or the 'port'",
        ),
        (
            "two scaling metrics",
            "scaleTargetRef: {service: a, port: 80}\n  scalingMetric: {concurrency: {targetValue: 5}, requestRate: {targetValue: 5}}",
            "set one scaling metric",
        ),
        (
            "an empty header name",
            "scaleTargetRef: {service: a, port: 80}\n  headers: [{name: \"\"}]",
            "headers[0].name",
        ),
    ];
    for (i, (what, spec, expected)) in cases.iter().enumerate() {
        let yaml = format!(
            "apiVersion: rouse.dev/v1alpha1\nkind: HTTPScaledObject\nmetadata: {{name: bad-{i}}}\nspec:\n  {spec}\n"
        );
        match api.create(&PostParams::default(), &object(&yaml)).await {
            Ok(_) => panic!("{what}: accepted, expected a rejection"),
            Err(kube::Error::Api(e)) => {
                assert_eq!(e.code, 422, "{what}: {e:?}");
                assert!(
                    e.message.contains(expected),
                    "{what}: message {:?} lacks {expected:?}",
                    e.message
                );
            }
            Err(e) => panic!("{what}: unexpected error {e}"),
        }
    }
}

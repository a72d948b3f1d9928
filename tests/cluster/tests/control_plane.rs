//! The real control plane itself: Deployments become pods that serve HTTP on 127.x addresses,
//! watches survive compaction, RBAC denies and allows, CRDs validate. Every test shares one
//! cluster and works in its own namespace.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use kube::{Api, Client};
use rouse_testcluster::TestCluster;
use serde_json::json;

async fn wait<F, Fut>(what: &str, timeout: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if !wait_ok(timeout, check).await {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

async fn wait_ok<F, Fut>(timeout: Duration, check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    rouse_testcluster::wait_until("", timeout, check)
        .await
        .is_ok()
}

fn object<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap_or_else(|e| panic!("test object: {e}"))
}

/// What a namespace looks like, for failure messages: pods, slices, events.
async fn dump(client: &Client, ns: &str) -> String {
    let mut out = String::new();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
    for p in pods
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        let st = p.status.unwrap_or_default();
        out.push_str(&format!(
            "pod {:?} node={:?} phase={:?} ip={:?} conditions={:?}\n",
            p.metadata.name,
            p.spec.and_then(|s| s.node_name),
            st.phase,
            st.pod_ip,
            st.conditions
                .unwrap_or_default()
                .iter()
                .map(|c| format!("{}={}", c.type_, c.status))
                .collect::<Vec<_>>()
        ));
    }
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    for s in slices
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        out.push_str(&format!(
            "slice {:?} endpoints={:?}\n",
            s.metadata.name, s.endpoints
        ));
    }
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns);
    for e in events
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
    {
        out.push_str(&format!(
            "event {:?} {:?}: {:?}\n",
            e.involved_object.name, e.reason, e.message
        ));
    }
    out
}

/// Ready endpoint addresses of a Service, from its EndpointSlices.
async fn ready_endpoints(client: &Client, ns: &str, service: &str) -> BTreeSet<String> {
    endpoints(client, ns, service, true).await
}

/// Endpoint addresses of a Service from its EndpointSlices (only ready ones if `ready_only`).
/// A failed list is a test failure, never "no endpoints".
async fn endpoints(client: &Client, ns: &str, service: &str, ready_only: bool) -> BTreeSet<String> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={service}"));
    let list = slices
        .list(&lp)
        .await
        .unwrap_or_else(|e| panic!("listing EndpointSlices: {e}"));
    list.items
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| !ready_only || e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false))
        .flat_map(|e| e.addresses.iter().cloned())
        .collect()
}

async fn http_get(addr: &str) -> Result<String, String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out)
        .await
        .map_err(|e| e.to_string())?;
    Ok(out
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_a_deployment_fills_its_endpointslice_with_serving_loopback_pods() {
    let cluster = TestCluster::shared();
    let client = cluster.client().await;
    let ns = cluster.namespace("scale").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    deployments
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": "web"},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1", "ports": [{"containerPort": 8080}]}]}
                    }
                }
            })),
        )
        .await
        .expect("create deployment");
    services
        .create(
            &PostParams::default(),
            &object(json!({
                "metadata": {"name": "web"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
            })),
        )
        .await
        .expect("create service");

    let started = Instant::now();
    deployments
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 2}})),
        )
        .await
        .expect("patch /scale");
    let ready = wait_ok(Duration::from_secs(30), || async {
        ready_endpoints(&client, &ns, "web").await.len() == 2
    })
    .await;
    assert!(
        ready,
        "no 2 ready endpoints after 30 s:\n{}",
        dump(&client, &ns).await
    );
    let took = started.elapsed();
    println!("scale 0→2 to 2 ready endpoints: {took:?}");
    assert!(took < Duration::from_secs(10), "scale-up took {took:?}");
    let addrs = ready_endpoints(&client, &ns, "web").await;
    assert!(addrs.iter().all(|a| a.starts_with("127.")), "{addrs:?}");

    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
    let pod_names: BTreeSet<String> = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    let mut answered = BTreeSet::new();
    for a in &addrs {
        let target = format!("{a}:8080");
        let mut body = Err(String::new());
        for _ in 0..40 {
            body = http_get(&target).await;
            if body.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        answered.insert(body.unwrap_or_else(|e| panic!("GET {target}: {e}")));
    }
    assert_eq!(
        answered, pod_names,
        "each endpoint answers with its pod's name"
    );

    deployments
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 0}})),
        )
        .await
        .expect("patch /scale to 0");
    wait(
        "every endpoint to leave the slice",
        Duration::from_secs(30),
        || async { endpoints(&client, &ns, "web", false).await.is_empty() },
    )
    .await;
    for a in &addrs {
        let target = format!("{a}:8080");
        wait(
            &format!("{target} to stop serving"),
            Duration::from_secs(15),
            || async { tokio::net::TcpStream::connect(&target).await.is_err() },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_compacted_resource_version_gets_410_and_the_kube_watcher_recovers() {
    let cluster = TestCluster::shared();
    let client = cluster.client().await;
    let ns = cluster.namespace("compact").await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let first = cms
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": "c0"}, "data": {"v": "0"}})),
        )
        .await
        .expect("create");
    let old_rv = first
        .metadata
        .resource_version
        .clone()
        .expect("resourceVersion");

    // Advance etcd and let the apiserver compact past `old_rv` (it compacts every 5 s here).
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut i = 0;
    let gone = loop {
        i += 1;
        cms.patch(
            "c0",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": i.to_string()}})),
        )
        .await
        .expect("update");
        let mut stream = cms
            .watch(&WatchParams::default().timeout(1), &old_rv)
            .await
            .expect("watch request")
            .boxed();
        let mut saw_410 = false;
        while let Ok(Some(ev)) = stream.try_next().await {
            if let WatchEvent::Error(e) = ev {
                saw_410 = e.code == 410;
                break;
            }
        }
        if saw_410 {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        gone,
        "no 410 Gone for a watch from compacted resourceVersion {old_rv}"
    );

    // A running kube-rs watcher whose resume point gets compacted away: each watch call ends
    // after 1 s and resumes from the last resourceVersion it saw, which nothing in its own
    // namespace advances, while writes elsewhere push etcd forward and compaction passes it.
    // The resume then gets 410, the watcher relists, and it keeps delivering.
    let quiet = cluster.namespace("compact-quiet").await;
    let quiet_cms: Api<ConfigMap> = Api::namespaced(client.clone(), &quiet);
    quiet_cms
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": "q0"}})),
        )
        .await
        .expect("create q0");
    let mut w = watcher::watcher(quiet_cms.clone(), watcher::Config::default().timeout(1)).boxed();
    let churn = {
        let cms = cms.clone();
        tokio::spawn(async move {
            for i in 0.. {
                let patch = Patch::Merge(json!({"data": {"v": format!("churn-{i}")}}));
                if cms
                    .patch("c0", &PatchParams::default(), &patch)
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let (mut saw_410, mut relisted_after_410, mut seen_new) = (false, false, false);
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end && !seen_new {
        match tokio::time::timeout(Duration::from_secs(2), w.next()).await {
            Ok(Some(Err(watcher::Error::WatchError(status)))) if status.code == 410 => {
                saw_410 = true
            }
            Ok(Some(Ok(watcher::Event::InitDone))) if saw_410 && !relisted_after_410 => {
                relisted_after_410 = true;
                quiet_cms
                    .create(
                        &PostParams::default(),
                        &object(json!({"metadata": {"name": "after"}})),
                    )
                    .await
                    .expect("create after");
            }
            Ok(Some(Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)))) => {
                seen_new |= relisted_after_410 && cm.metadata.name.as_deref() == Some("after");
            }
            Ok(Some(_)) => {}
            // A quiet namespace yields nothing between resumes: keep waiting until the deadline.
            Err(_) => {}
            Ok(None) => break,
        }
    }
    churn.abort();
    assert!(saw_410, "the watcher's resume never hit 410");
    assert!(relisted_after_410, "the watcher did not relist after 410");
    assert!(
        seen_new,
        "the watcher did not deliver an object created after recovering"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_account_token_is_limited_to_its_role() {
    let cluster = TestCluster::shared();
    let admin = cluster.client().await;
    let ns = cluster.namespace("rbac").await;
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), &ns);
    sas.create(
        &PostParams::default(),
        &object(json!({"metadata": {"name": "reader"}})),
    )
    .await
    .expect("create sa");
    let apply = PatchParams::apply("rouse-tests");
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(admin.clone(), &ns);
    roles
        .patch(
            "cm-reader",
            &apply,
            &Patch::Apply(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "cm-reader"},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]
            })),
        )
        .await
        .expect("role");
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(admin.clone(), &ns);
    bindings
        .patch(
            "cm-reader",
            &apply,
            &Patch::Apply(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "cm-reader"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}]
            })),
        )
        .await
        .expect("rolebinding");
    let token_request: k8s_openapi::api::authentication::v1::TokenRequest = sas
        .create_subresource(
            "token",
            "reader",
            &PostParams::default(),
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 600}}),
        )
        .await
        .expect("token request");
    let token = token_request.status.expect("token status").token;

    let reader = cluster.client_with_token(&token).await;
    let cms: Api<ConfigMap> = Api::namespaced(reader, &ns);
    // The authorizer learns of a new Role and RoleBinding from its informers: allow it a moment.
    wait(
        "the Role to allow list",
        Duration::from_secs(10),
        || async { cms.list(&ListParams::default()).await.is_ok() },
    )
    .await;
    match cms
        .create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": "nope"}})),
        )
        .await
    {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{e:?}"),
        other => panic!("create should be forbidden, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crd_from_yaml_is_established_and_enforces_its_schema() {
    let cluster = TestCluster::shared();
    let client = cluster.client().await;
    let ns = cluster.namespace("crd").await;
    let yaml = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.rouse.dev
spec:
  group: test.rouse.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [replicas]
            properties:
              replicas: {type: integer, minimum: 0, maximum: 10}
"#;
    let crd: CustomResourceDefinition = serde_yaml::from_str(yaml).expect("CRD YAML");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "widgets.test.rouse.dev",
        &PatchParams::apply("rouse-tests"),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply CRD");
    wait("CRD Established", Duration::from_secs(30), || async {
        crds.get("widgets.test.rouse.dev").await.is_ok_and(|c| {
            c.status.and_then(|s| s.conditions).is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            })
        })
    })
    .await;

    let ar = ApiResource {
        group: "test.rouse.dev".into(),
        version: "v1".into(),
        api_version: "test.rouse.dev/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    let widgets: Api<DynamicObject> = Api::namespaced_with(client, &ns, &ar);
    let good: DynamicObject = object(
        json!({"apiVersion": "test.rouse.dev/v1", "kind": "Widget", "metadata": {"name": "ok"}, "spec": {"replicas": 3}}),
    );
    // Discovery of a fresh CRD can lag Established by a moment.
    wait(
        "the Widget API to serve",
        Duration::from_secs(10),
        || async { widgets.list(&ListParams::default()).await.is_ok() },
    )
    .await;
    widgets
        .create(&PostParams::default(), &good)
        .await
        .expect("a valid Widget is accepted");
    let bad: DynamicObject = object(
        json!({"apiVersion": "test.rouse.dev/v1", "kind": "Widget", "metadata": {"name": "bad"}, "spec": {"replicas": 99}}),
    );
    match widgets.create(&PostParams::default(), &bad).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "{e:?}");
            assert!(e.message.contains("spec.replicas"), "{}", e.message);
        }
        other => panic!("schema violation accepted: {other:?}"),
    }
}

#[test]
fn the_shared_cluster_reports_its_start_up_time() {
    let cluster = TestCluster::shared();
    println!(
        "cluster start-up: {:?} (pods in {})",
        cluster.startup, cluster.pod_cidr
    );
    assert!(cluster.server.starts_with("https://127.0.0.1:"));
}

/// The Kubernetes release the build script builds (`K8S_VERSION=` in it), e.g. `v1.36.3`.
fn built_release() -> &'static str {
    include_str!("../build-control-plane.sh")
        .lines()
        .find_map(|l| l.strip_prefix("K8S_VERSION="))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("K8S_VERSION= in build-control-plane.sh")
}

/// `kubectl version` against the cluster, as a person would run it: both sides report the
/// release they were built from (the build script stamps it; unstamped, the apiserver said
/// `v0.0.0-master+$Format:%H$`, which kubectl cannot compare with its own version).
#[test]
fn kubectl_version_reports_the_built_release_for_client_and_server() {
    let cluster = TestCluster::shared();
    let kubectl = rouse_testcluster::binaries()
        .expect("control-plane binaries")
        .join("kubectl");
    let out = std::process::Command::new(&kubectl)
        .args(["version", "-o", "json"])
        .env("KUBECONFIG", &cluster.kubeconfig)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", kubectl.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kubectl version failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let release = built_release();
    let minor = release.split('.').nth(1).expect("vMAJOR.MINOR.PATCH");
    for side in ["clientVersion", "serverVersion"] {
        assert_eq!(v[side]["gitVersion"], release, "{side}: {stdout}");
        assert_eq!(v[side]["major"], "1", "{side}: {stdout}");
        assert_eq!(v[side]["minor"], minor, "{side}: {stdout}");
    }
    assert!(
        !stderr.contains("WARNING"),
        "kubectl warned about its version: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_annotations_set_start_delay_and_backend_behaviour() {
    let cluster = TestCluster::shared();
    let client = cluster.client().await;
    let ns = cluster.namespace("behave").await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
    let created = Instant::now();
    pods.create(
        &PostParams::default(),
        &object(json!({
            "metadata": {
                "name": "slow",
                "annotations": {
                    rouse_testcluster::START_DELAY_ANNOTATION: "1500ms",
                    rouse_testcluster::backends::STATUS_ANNOTATION: "503",
                    rouse_testcluster::backends::DELAY_ANNOTATION: "300"
                }
            },
            "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1", "ports": [{"containerPort": 9000}]}]}
        })),
    )
    .await
    .expect("create pod");
    let ready_ip = || async {
        pods.get("slow").await.ok().and_then(|p| {
            let st = p.status?;
            let ready = st
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some(st.pod_ip).flatten()
        })
    };
    let mut ip = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while ip.is_none() && Instant::now() < deadline {
        ip = ready_ip().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = created.elapsed();
    assert!(
        ip.is_some(),
        "pod not Ready after 20 s:\n{}",
        dump(&client, &ns).await
    );
    assert!(
        took >= Duration::from_millis(1500),
        "ready after {took:?}, start delay is 1.5 s"
    );
    let target = format!("{}:9000", ip.unwrap_or_default());
    wait("the backend to listen", Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(&target).await.is_ok()
    })
    .await;
    let asked = Instant::now();
    let mut s = tokio::net::TcpStream::connect(&target)
        .await
        .expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("read");
    assert!(out.starts_with("HTTP/1.1 503"), "{out}");
    assert!(out.contains("slow"), "{out}");
    assert!(
        asked.elapsed() >= Duration::from_millis(300),
        "answered without the configured delay"
    );
}

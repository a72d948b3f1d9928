//! Harness for Rouse on the real control plane: installs `manifests/base` once (server-side
//! apply), runs `rouse kubernetes` and `rouse-controller` as processes authenticated with their
//! own ServiceAccount tokens (the manifests' RBAC, nothing wider), and creates apps in a fresh
//! namespace per test.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use rouse_core::crd::HTTPScaledObject;
use rouse_e2e::{bin, free_addr};
use rouse_testcluster::{TestCluster, wait_until};
use serde_json::json;

pub const MANIFESTS: &[(&str, &str)] = &[
    (
        "crds/rouse.dev.yaml",
        include_str!("../../../manifests/crds/rouse.dev.yaml"),
    ),
    (
        "base/namespace.yaml",
        include_str!("../../../manifests/base/namespace.yaml"),
    ),
    (
        "base/rbac.yaml",
        include_str!("../../../manifests/base/rbac.yaml"),
    ),
    (
        "base/proxy.yaml",
        include_str!("../../../manifests/base/proxy.yaml"),
    ),
    (
        "base/controller.yaml",
        include_str!("../../../manifests/base/controller.yaml"),
    ),
    (
        "base/networkpolicy.yaml",
        include_str!("../../../manifests/base/networkpolicy.yaml"),
    ),
    (
        "nats/nats.yaml",
        include_str!("../../../manifests/nats/nats.yaml"),
    ),
];

/// Examples applied by the manifests test once [`install`] has waited for the CRDs to be
/// served (their objects are custom resources). Namespace `orders` is outside every test's
/// `--namespaces`.
pub const EXAMPLES: &[(&str, &str)] = &[
    (
        "examples/events/app.yaml",
        include_str!("../../../manifests/examples/events/app.yaml"),
    ),
    (
        "examples/events/secret.yaml",
        include_str!("../../../manifests/examples/events/secret.yaml"),
    ),
    (
        "examples/events/rbac.yaml",
        include_str!("../../../manifests/examples/events/rbac.yaml"),
    ),
    (
        "examples/events/subscription.yaml",
        include_str!("../../../manifests/examples/events/subscription.yaml"),
    ),
    // Namespace `default`, also outside every test's `--namespaces`.
    (
        "examples/interceptorroute.yaml",
        include_str!("../../../manifests/examples/interceptorroute.yaml"),
    ),
];

/// Server-side applies every document of `yaml` (any kind, resolved by discovery).
pub async fn apply_yaml(client: &Client, yaml: &str, manager: &str) -> anyhow::Result<Vec<String>> {
    let mut applied = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_json::to_value(serde_yaml::Value::deserialize(doc)?)?;
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_json::from_value(value.clone())?;
        let types = obj
            .types
            .clone()
            .ok_or_else(|| anyhow::anyhow!("document without apiVersion/kind"))?;
        let gvk = GroupVersionKind::try_from(&types)?;
        let (ar, caps) = kube::discovery::pinned_kind(client, &gvk).await?;
        let name = obj.metadata.name.clone().unwrap_or_default();
        let api: Api<DynamicObject> = match (&caps.scope, &obj.metadata.namespace) {
            (kube::discovery::Scope::Namespaced, Some(ns)) => {
                Api::namespaced_with(client.clone(), ns, &ar)
            }
            (kube::discovery::Scope::Namespaced, None) => {
                Api::default_namespaced_with(client.clone(), &ar)
            }
            (kube::discovery::Scope::Cluster, _) => Api::all_with(client.clone(), &ar),
        };
        api.patch(
            &name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(&value),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{} {name}: {e}", types.kind))?;
        applied.push(format!("{}/{name}", types.kind));
    }
    Ok(applied)
}

use serde::Deserialize;

/// Installs Rouse's manifests once per cluster and waits for the CRD to be served.
pub async fn install(cluster: &TestCluster) {
    // Per cluster (a test may start a private one), once.
    static DONE: tokio::sync::Mutex<Vec<String>> = tokio::sync::Mutex::const_new(Vec::new());
    let mut done = DONE.lock().await;
    if done.contains(&cluster.server) {
        return;
    }
    done.push(cluster.server.clone());
    {
        let client = cluster.client().await;
        for (name, yaml) in MANIFESTS {
            apply_yaml(&client, yaml, "rouse-e2e")
                .await
                .unwrap_or_else(|e| panic!("applying manifests/{name}: {e:#}"));
        }
        // The manifests' Deployments name images that cannot run here: their pods would be
        // fakes. The tests run the same binaries as processes instead, under the same
        // ServiceAccounts, so the Deployments are scaled to zero.
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), "rouse-system");
        for name in ["rouse-proxy", "rouse-controller"] {
            deployments
                .patch_scale(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"replicas": 0}})),
                )
                .await
                .unwrap_or_else(|e| panic!("scaling {name} to 0: {e}"));
        }
        let api: Api<HTTPScaledObject> = Api::all(client.clone());
        wait_until(
            "the HTTPScaledObject CRD is served",
            Duration::from_secs(30),
            || {
                let api = api.clone();
                async move { api.list(&Default::default()).await.is_ok() }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// A kubeconfig for `rouse-system/<sa>`: its token from the TokenRequest API, the cluster CA.
pub async fn kubeconfig_for(cluster: &TestCluster, sa: &str, dir: &std::path::Path) -> PathBuf {
    cluster.kubeconfig_for("rouse-system", sa, dir).await
}

/// A child process whose output is kept (and echoed on failure by the test's panic message).
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    output: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let output = Arc::new(Mutex::new(Vec::new()));
        for reader in [
            child
                .stdout
                .take()
                .map(|r| Box::new(r) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|r| Box::new(r) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let out = output.clone();
            let echo = std::env::var_os("ROUSE_E2E_ECHO").is_some();
            let name = name.to_string();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(reader)
                    .lines()
                    .map_while(Result::ok)
                {
                    if echo {
                        eprintln!("[{name}] {line}");
                    }
                    out.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        Proc {
            name: name.to_string(),
            child: Some(child),
            output,
        }
    }

    pub fn output(&self) -> Vec<String> {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.output().iter().filter(|l| l.contains(needle)).count()
    }

    pub fn tail(&self, n: usize) -> String {
        let out = self.output();
        let start = out.len().saturating_sub(n);
        format!("--- {} ---\n{}", self.name, out[start..].join("\n"))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no drain, no Lease release.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One `rouse kubernetes` replica.
pub struct Proxy {
    pub proc: Proc,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

/// One `rouse-controller` replica.
pub struct Controller {
    pub proc: Proc,
    pub id: String,
    pub admin: SocketAddr,
    pub grpc: SocketAddr,
}

/// A test's namespace, clients and Rouse processes.
pub struct Env {
    pub cluster: &'static TestCluster,
    pub client: Client,
    pub ns: String,
    pub dir: tempdir::Dir,
    pub http: HttpClient<HttpConnector, Full<Bytes>>,
    pub proxies: Vec<Proxy>,
    pub controllers: Vec<Controller>,
    /// Added to every `rouse kubernetes` started from now on (e.g. `--nats-url`).
    pub proxy_args: Vec<String>,
    /// Added to every `rouse-controller` started from now on (e.g. `--keda-interceptor-routes`).
    pub controller_args: Vec<String>,
    proxy_kubeconfig: PathBuf,
    controller_kubeconfig: PathBuf,
}

pub mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: String,
    pub headers: http::HeaderMap,
}

impl Env {
    pub async fn new(prefix: &str) -> Env {
        Env::on(TestCluster::shared(), prefix).await
    }

    pub async fn on(cluster: &'static TestCluster, prefix: &str) -> Env {
        install(cluster).await;
        let client = cluster.client().await;
        let ns = cluster.namespace(prefix).await;
        let dir = std::env::temp_dir().join(format!("rouse-k8s-{ns}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let proxy_kubeconfig = kubeconfig_for(cluster, "rouse-proxy", &dir).await;
        let controller_kubeconfig = kubeconfig_for(cluster, "rouse-controller", &dir).await;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = HttpClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(5))
            .build(connector);
        Env {
            cluster,
            client,
            ns,
            dir: tempdir::Dir(dir),
            http,
            proxies: Vec::new(),
            controllers: Vec::new(),
            proxy_args: Vec::new(),
            controller_args: Vec::new(),
            proxy_kubeconfig,
            controller_kubeconfig,
        }
    }

    /// Starts one more proxy replica and lists it in the proxies' admin Service.
    pub async fn start_proxy(&mut self) -> usize {
        let i = self.proxies.len();
        let (listen, admin) = (free_addr(), free_addr());
        let mut cmd = Command::new(bin("rouse"));
        cmd.args(["kubernetes", "--threads", "1", "--namespaces", &self.ns])
            .args([
                "--listen",
                &listen.to_string(),
                "--admin-listen",
                &admin.to_string(),
            ])
            .args(["--id", &format!("proxy-{i}")])
            .args(&self.proxy_args)
            .env("KUBECONFIG", &self.proxy_kubeconfig)
            .env("ROUSE_LOG", "info,rouse_proxy=debug");
        let proc = Proc::spawn(&format!("proxy-{i}"), cmd);
        let proxy = Proxy {
            proc,
            listen,
            admin,
        };
        let http = self.http.clone();
        wait_until("proxy admin up", Duration::from_secs(20), || {
            let http = http.clone();
            async move {
                get(&http, admin, "/readyz", None)
                    .await
                    .is_ok_and(|r| r.status == 200)
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", proxy.proc.tail(30)));
        self.proxies.push(proxy);
        self.publish_proxies().await;
        i
    }

    /// This test's proxies' admin Service: in rouse-system like `rouse-proxy-admin` (where the
    /// controller's RBAC lets it read EndpointSlices), named per test.
    pub fn proxy_service(&self) -> String {
        format!("proxies-{}", self.ns)
    }

    /// The proxies' admin Service (headless, selectorless) and one EndpointSlice per replica:
    /// what the Deployment's pods would give the controller in a cluster. `conditions` per
    /// replica: `{"ready": true}`, or a draining one's.
    pub async fn publish_proxies(&self) {
        let conditions = vec![json!({"ready": true}); self.proxies.len()];
        self.publish_proxies_with(&conditions).await;
    }

    pub async fn publish_proxies_with(&self, conditions: &[serde_json::Value]) {
        let svc = self.proxy_service();
        let services: Api<Service> = Api::namespaced(self.client.clone(), "rouse-system");
        let pp = PatchParams::apply("rouse-e2e").force();
        services
            .patch(
                &svc,
                &pp,
                &Patch::Apply(json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": svc},
                    "spec": {"clusterIP": "None", "ports": [{"name": "admin", "port": 9090}]}
                })),
            )
            .await
            .expect("proxy admin service");
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), "rouse-system");
        for (i, (p, c)) in self.proxies.iter().zip(conditions).enumerate() {
            slices
                .patch(
                    &format!("{svc}-{i}"),
                    &pp,
                    &Patch::Apply(json!({
                        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                        "metadata": {"name": format!("{svc}-{i}"),
                                     "labels": {"kubernetes.io/service-name": svc}},
                        "addressType": "IPv4",
                        "ports": [{"name": "admin", "port": p.admin.port()}],
                        "endpoints": [{"addresses": [p.admin.ip().to_string()], "conditions": c}]
                    })),
                )
                .await
                .expect("proxy admin slice");
        }
    }

    /// Removes replica `i`'s EndpointSlice (the replica's pod is gone).
    pub async fn unpublish_proxy(&self, i: usize) {
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), "rouse-system");
        slices
            .delete(
                &format!("{}-{i}", self.proxy_service()),
                &Default::default(),
            )
            .await
            .expect("delete slice");
    }

    /// Starts one more controller replica (Lease `<ns>` in rouse-system, 3 s duration).
    pub async fn start_controller(&mut self) -> usize {
        let i = self.controllers.len();
        let (admin, grpc) = (free_addr(), free_addr());
        let id = format!("controller-{i}");
        let mut cmd = Command::new(bin("rouse-controller"));
        cmd.args(["--namespaces", &self.ns])
            .args([
                "--proxy-service",
                &format!("rouse-system/{}", self.proxy_service()),
            ])
            .args([
                "--lease-namespace",
                "rouse-system",
                "--lease-name",
                &self.ns,
            ])
            .args(["--lease-duration-ms", "3000", "--lease-renew-ms", "500"])
            .args(["--report-interval-ms", "200", "--tick-ms", "200"])
            .args(["--admin-listen", &admin.to_string()])
            .args(["--external-scaler-listen", &grpc.to_string()])
            .args(["--id", &id])
            .args(&self.controller_args)
            .env("KUBECONFIG", &self.controller_kubeconfig)
            .env("ROUSE_LOG", "info");
        let proc = Proc::spawn(&id, cmd);
        let c = Controller {
            proc,
            id,
            admin,
            grpc,
        };
        let http = self.http.clone();
        wait_until("controller admin up", Duration::from_secs(20), || {
            let http = http.clone();
            async move {
                get(&http, admin, "/livez", None)
                    .await
                    .is_ok_and(|r| r.status == 200)
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", c.proc.tail(30)));
        self.controllers.push(c);
        i
    }

    /// The controller replica holding the Lease now.
    pub async fn leader(&self) -> Option<String> {
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(self.client.clone(), "rouse-system");
        leases
            .get_opt(&self.ns)
            .await
            .ok()
            .flatten()?
            .spec?
            .holder_identity
    }

    /// A Deployment (0 replicas), its Service and an HTTPScaledObject routing `host` to it.
    /// `spec` is merged into the object's spec.
    pub async fn app(&self, name: &str, host: &str, start_delay: &str, spec: serde_json::Value) {
        let pp = PatchParams::apply("rouse-e2e").force();
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &self.ns);
        deployments
            .patch(name, &pp, &Patch::Apply(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name},
                                     "annotations": {rouse_testcluster::START_DELAY_ANNOTATION: start_delay}},
                        "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1",
                                                 "ports": [{"name": "http", "containerPort": 8080}]}]}
                    }
                }
            })))
            .await
            .expect("deployment");
        self.service(name).await;
        self.scaled_object(name, host, spec).await;
    }

    pub async fn service(&self, name: &str) {
        self.service_speaking(name, None).await;
    }

    /// The app's Service, its port's `appProtocol` set to `app_protocol` if given.
    pub async fn service_speaking(&self, name: &str, app_protocol: Option<&str>) {
        let mut port = json!({"name": "http", "port": 80, "targetPort": "http"});
        if let Some(p) = app_protocol {
            port["appProtocol"] = json!(p);
        }
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.ns);
        services
            .patch(
                name,
                &PatchParams::apply("rouse-e2e").force(),
                &Patch::Apply(json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": name},
                    "spec": {"selector": {"app": name}, "ports": [port]}
                })),
            )
            .await
            .expect("service");
    }

    pub async fn scaled_object(&self, name: &str, host: &str, extra: serde_json::Value) {
        let mut spec = json!({
            "hosts": [host],
            "scaleTargetRef": {"name": name, "kind": "Deployment", "apiVersion": "apps/v1",
                               "service": name, "port": 80},
            "replicas": {"min": 0, "max": 10},
            "scaledownPeriod": 300,
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                s.insert(k.clone(), v.clone());
            }
        }
        let api: Api<HTTPScaledObject> = Api::namespaced(self.client.clone(), &self.ns);
        api.patch(
            name,
            &PatchParams::apply("rouse-e2e").force(),
            &Patch::Apply(json!({
                "apiVersion": "rouse.dev/v1alpha1", "kind": "HTTPScaledObject",
                "metadata": {"name": name}, "spec": spec
            })),
        )
        .await
        .unwrap_or_else(|e| panic!("HTTPScaledObject {name}: {e}"));
    }

    /// Waits until every proxy routes `host` (its table has the object's route).
    pub async fn wait_routed(&self, host: &str) {
        for p in &self.proxies {
            let http = self.http.clone();
            let admin = p.admin;
            let path = format!("/explain?host={host}&path=/");
            wait_until(&format!("{host} routed"), Duration::from_secs(20), || {
                let (http, path) = (http.clone(), path.clone());
                async move {
                    get(&http, admin, &path, None)
                        .await
                        .is_ok_and(|r| r.body.contains("\"matched\": true"))
                }
            })
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", p.proc.tail(30)));
        }
    }

    /// Waits until proxy `i` has no endpoint left for any target (the next request is cold).
    pub async fn wait_no_endpoints(&self, i: usize) {
        let (http, admin) = (self.http.clone(), self.proxies[i].admin);
        wait_until("endpoints gone", Duration::from_secs(30), || {
            let http = http.clone();
            async move {
                get(&http, admin, "/queues", None)
                    .await
                    .is_ok_and(|r| r.body.contains("\"endpoints\": []"))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.logs()));
    }

    /// Makes `name`'s pods answer after `ms` (the test backends read the annotation).
    pub async fn set_backend_delay(&self, name: &str, ms: u64) {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &self.ns);
        deployments
            .patch(
                name,
                &PatchParams::apply("rouse-e2e-delay"),
                &Patch::Apply(json!({
                    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
                    "spec": {"selector": {"matchLabels": {"app": name}}, "template": {
                        "metadata": {"labels": {"app": name},
                                     "annotations": {"rouse.dev/test-delay-ms": ms.to_string()}},
                        "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]}}}
                })),
            )
            .await
            .unwrap_or_else(|e| panic!("delay annotation on {name}: {e}"));
    }

    pub async fn replicas(&self, name: &str) -> i32 {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &self.ns);
        deployments
            .get_scale(name)
            .await
            .map_err(|e| eprintln!("get_scale {name}: {e}"))
            // `replicas: 0` is omitted on the wire.
            .map(|s| s.spec.and_then(|s| s.replicas).unwrap_or(0))
            .unwrap_or(-1)
    }

    pub async fn wait_replicas(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        ok: impl Fn(i32) -> bool,
    ) {
        let start = Instant::now();
        loop {
            let n = self.replicas(name).await;
            if ok(n) {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "{what}: replicas {n} after {timeout:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GET `path` on proxy `i` with `Host: host`.
    pub async fn request(&self, i: usize, host: &str, path: &str) -> Result<Resp, String> {
        get(&self.http, self.proxies[i].listen, path, Some(host)).await
    }

    pub async fn status(&self, name: &str) -> serde_json::Value {
        let api: Api<HTTPScaledObject> = Api::namespaced(self.client.clone(), &self.ns);
        api.get(name)
            .await
            .ok()
            .and_then(|o| serde_json::to_value(o.status).ok())
            .unwrap_or_default()
    }

    /// `status` of condition `type_` on object `name` ("" if absent).
    pub async fn condition(&self, name: &str, type_: &str) -> (String, String, String) {
        let s = self.status(name).await;
        s["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
            .map(|c| {
                (
                    c["status"].as_str().unwrap_or("").to_string(),
                    c["reason"].as_str().unwrap_or("").to_string(),
                    c["message"].as_str().unwrap_or("").to_string(),
                )
            })
            .unwrap_or_default()
    }

    pub async fn wait_condition(&self, name: &str, type_: &str, status: &str, reason: &str) {
        let start = Instant::now();
        loop {
            let c = self.condition(name, type_).await;
            if c.0 == status && c.1 == reason {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{name}: condition {type_} is {c:?}, expected {status}/{reason}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Output tails of every process, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for p in &self.proxies {
            out.push_str(&p.proc.tail(25));
            out.push('\n');
        }
        for c in &self.controllers {
            out.push_str(&c.proc.tail(25));
            out.push('\n');
        }
        out
    }

    /// Demand summed by the controller replica `i` for `ns/name`.
    pub async fn controller_demand(&self, i: usize, name: &str) -> serde_json::Value {
        let path = format!("/demand?target={}/{name}", self.ns);
        get(&self.http, self.controllers[i].admin, &path, None)
            .await
            .ok()
            .and_then(|r| serde_json::from_str(&r.body).ok())
            .unwrap_or_default()
    }
}

/// GET `path` from `addr`, optionally with a Host header.
pub async fn get(
    http: &HttpClient<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    path: &str,
    host: Option<&str>,
) -> Result<Resp, String> {
    let mut req = http::Request::get(format!("http://{addr}{path}"));
    if let Some(h) = host {
        req = req.header("host", h);
    }
    let req = req.body(Full::default()).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(60), http.request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Resp {
        status: parts.status.as_u16(),
        body: String::from_utf8_lossy(&body).into_owned(),
        headers: parts.headers,
    })
}

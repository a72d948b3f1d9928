//! Rouse's Helm chart (`charts/rouse`) with the real `helm` (v3.22.0, built from its Go module by
//! `tests/cluster/build-helm.sh`, cached):
//! - its CRDs are byte for byte `manifests/crds/rouse.dev.yaml` (one source of truth);
//! - `helm lint --strict` passes, with the defaults and with every value set;
//! - with default values it renders the same objects as the kustomize base (`kubectl kustomize
//!   manifests/base`), Helm's own labels and the Namespace object being the only, explained,
//!   differences;
//! - every flag of `rouse kubernetes` and `rouse-controller` is a value;
//! - every name an object uses to find another resolves, whatever the release is called;
//! - `values.schema.json` refuses unknown keys and wrongly typed values;
//! - `helm install` into the real control plane, then a cold request through the proxy wakes an
//!   app, with the proxy and controller run as processes under the Helm-installed
//!   ServiceAccounts, with the args and env of the Helm-installed Deployments (a NATS connection
//!   set through the chart's values included).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use rouse_core::crd::{EventSubscription, HTTPScaledObject};
use rouse_e2e::{bin, free_addr, target_dir};
use rouse_testcluster::nats::Nats;
use rouse_testcluster::{TestCluster, wait_until};
use serde::Deserialize;
use serde_json::{Value, json};

const RELEASE: &str = "rouse";
const NAMESPACE: &str = "rouse-system";
/// The labels Helm's chart adds to every object and pod template (`rouse.helmLabels` in
/// `templates/_helpers.tpl`) and the kustomize base does not have. Never in selectors.
const HELM_LABELS: [&str; 4] = [
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> PathBuf {
    repo().join("charts/rouse")
}

/// The chart's `version` and `appVersion`.
fn chart_versions() -> (String, String) {
    let chart: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(chart().join("Chart.yaml")).expect("read Chart.yaml"),
    )
    .expect("Chart.yaml parses");
    let field = |k: &str| {
        chart[k]
            .as_str()
            .unwrap_or_else(|| panic!("Chart.yaml {k} is not a string"))
            .to_string()
    };
    (field("version"), field("appVersion"))
}

/// What a finished command printed.
struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(mut cmd: Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {:?}: {e}", cmd.get_program()));
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `helm` with its config, cache and data under the target directory (never the user's), and
/// no kubeconfig unless the caller adds one.
fn helm(args: &[&str]) -> Command {
    let bin = rouse_testcluster::helm::binary().unwrap_or_else(|e| panic!("helm: {e:#}"));
    let home = target_dir().join("helm-home");
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .env_remove("HELM_NAMESPACE")
        .env_remove("HELM_KUBECONTEXT");
    cmd
}

/// `helm template` of the chart as release `rouse` in `rouse-system` (CRDs included), with
/// `extra` arguments; panics with helm's error if it fails.
fn render(extra: &[&str]) -> Vec<Value> {
    render_as(RELEASE, NAMESPACE, extra)
}

fn render_as(release: &str, namespace: &str, extra: &[&str]) -> Vec<Value> {
    let chart = chart();
    let chart = chart.to_str().expect("chart path is UTF-8");
    let mut args = vec![
        "template",
        release,
        chart,
        "--namespace",
        namespace,
        "--include-crds",
    ];
    args.extend_from_slice(extra);
    let out = run(helm(&args));
    assert!(out.ok, "helm template {extra:?} failed:\n{}", out.stderr);
    documents(&out.stdout)
}

/// Every non-empty YAML document of `yaml`, as JSON.
fn documents(yaml: &str) -> Vec<Value> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = serde_yaml::Value::deserialize(doc).expect("YAML document");
        let value = serde_json::to_value(value).expect("YAML as JSON");
        if !value.is_null() {
            docs.push(value);
        }
    }
    docs
}

/// `Kind namespace/name` (or `Kind name` for cluster-scoped objects).
fn key(o: &Value) -> String {
    let kind = o["kind"].as_str().unwrap_or("?");
    let name = o["metadata"]["name"].as_str().unwrap_or("?");
    match o["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

fn by_key(docs: Vec<Value>) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for d in docs {
        let k = key(&d);
        assert!(out.insert(k.clone(), d).is_none(), "{k} rendered twice");
    }
    out
}

/// One rendered object by kind and name.
fn object<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// Numbers as the values they are: a YAML `1.0` (the CRD file) and `1` (kustomize prints the
/// same CRD's `1.0` as `1`) are the same number in every Kubernetes schema.
fn normalise_numbers(v: &mut Value) {
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64()
                && n.is_f64()
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                // Exact: |f| < 2^53.
                *v = json!(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise_numbers),
        Value::Object(map) => map.values_mut().for_each(normalise_numbers),
        _ => {}
    }
}

/// Removes Helm's labels from `labels` (an object's or a pod template's), after checking each is
/// there with the value Helm gives it: stripped explicitly, never hidden.
fn strip_helm_labels(labels: &mut Value, what: &str) {
    let (version, app_version) = chart_versions();
    let expected = [
        format!("rouse-{version}"),
        "Helm".to_string(),
        RELEASE.to_string(),
        app_version,
    ];
    let map = labels
        .as_object_mut()
        .unwrap_or_else(|| panic!("{what}: no labels"));
    for (label, value) in HELM_LABELS.iter().zip(&expected) {
        let found = map.remove(*label);
        assert_eq!(
            found.as_ref().and_then(Value::as_str),
            Some(value.as_str()),
            "{what}: Helm label {label}"
        );
    }
}

/// Every path where `a` and `b` differ (at most 20), for a readable failure.
fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    if out.len() >= 20 {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let (xa, yb) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                differences(xa, yb, &format!("{path}.{k}"), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (xa, yb)) in x.iter().zip(y).enumerate() {
                differences(xa, yb, &format!("{path}[{i}]"), out);
            }
        }
        _ if a != b => out.push(format!("{path}: kustomize {a} / helm {b}")),
        _ => {}
    }
}

#[test]
fn the_charts_crds_are_the_committed_crds_byte_for_byte() {
    // manifests/crds/rouse.dev.yaml is generated from the Rust types (rouse-core's
    // committed_crd_yaml_matches_the_types); the chart's copy must be that file.
    let committed = include_str!("../../manifests/crds/rouse.dev.yaml");
    let chart = include_str!("../../charts/rouse/crds/rouse.dev.yaml");
    assert!(
        committed == chart,
        "charts/rouse/crds/rouse.dev.yaml differs from manifests/crds/rouse.dev.yaml: run \
         `cp manifests/crds/rouse.dev.yaml charts/rouse/crds/rouse.dev.yaml`"
    );
}

/// Every value set to something other than its default (the test of "every flag is a value"
/// also checks what each one renders to).
const ALL_VALUES: &str = r#"
eventGateway:
  nats:
    url: nats://nats-0.messaging:4222,nats://nats-1.messaging:4222
    stream: EVENTS_T
    replicas: 1
    publishTimeoutMs: 7000
    credentials: {secretName: nats-creds, key: user.creds}
imagePullSecrets: [regcred]
kedaInterceptorRoutes: true
proxy:
  replicas: 3
  image: {repository: registry.example/rouse-proxy, tag: "9.9.9", pullPolicy: Always}
  log: debug
  logFormat: json
  listen: 0.0.0.0:8081
  adminListen: 0.0.0.0:9191
  namespaces: [apps, web]
  threads: 3
  maxHeldRequests: 1234
  maxHeldBytes: 268435456
  maxConnections: 20000
  headerTimeoutMs: 5000
  keepaliveTimeoutSecs: 75
  sendTimeoutSecs: 30
  accessLog: true
  drainGraceSecs: 12
  readinessDelayMs: 2500
  extraArgs: [--future-flag=1]
  extraEnv: [{name: EXTRA, value: "1"}]
  podAnnotations: {prometheus.io/scrape: "true"}
  nodeSelector: {kubernetes.io/os: linux}
  priorityClassName: system-cluster-critical
  service: {type: LoadBalancer, port: 8000, annotations: {a: b}}
  pdb: {enabled: true, minAvailable: null, maxUnavailable: 1}
controller:
  log: debug
  logFormat: json
  namespaces: [apps]
  proxyService: other/proxies
  proxyPortName: adm
  proxyAddrs: ["127.0.0.1:9090", "127.0.0.2:9090"]
  leaseNamespace: leases
  leaseName: my-lease
  leaseDurationMs: 9000
  leaseRenewMs: 900
  reportIntervalMs: 300
  tickMs: 400
  adminListen: 0.0.0.0:9292
  externalScalerListen: 0.0.0.0:9393
  pdb: {enabled: false}
"#;

fn all_values_file() -> PathBuf {
    let path = target_dir().join("helm-home/all-values.yaml");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("helm-home");
    std::fs::write(&path, ALL_VALUES).expect("write all-values.yaml");
    path
}

#[test]
fn helm_lint_strict_passes_with_the_defaults_and_with_every_value_set() {
    let chart = chart();
    let chart = chart.to_str().expect("UTF-8");
    let out = run(helm(&["lint", "--strict", chart]));
    assert!(out.ok, "helm lint --strict:\n{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
        "{}",
        out.stdout
    );
    let values = all_values_file();
    let values = values.to_str().expect("UTF-8");
    let out = run(helm(&["lint", "--strict", chart, "-f", values]));
    assert!(
        out.ok,
        "helm lint --strict with every value set:\n{}{}",
        out.stdout, out.stderr
    );
}

#[test]
fn helm_template_renders_a_restricted_rouse() {
    let docs = render(&[]);
    let kinds: BTreeSet<String> = docs.iter().map(key).collect();
    for expected in [
        "CustomResourceDefinition httpscaledobjects.rouse.dev",
        "CustomResourceDefinition eventsubscriptions.rouse.dev",
        "Deployment rouse-system/rouse-proxy",
        "Deployment rouse-system/rouse-controller",
        "Service rouse-system/rouse-proxy",
        "Service rouse-system/rouse-proxy-admin",
        "Service rouse-system/rouse-controller",
        "PodDisruptionBudget rouse-system/rouse-proxy",
        "PodDisruptionBudget rouse-system/rouse-controller",
        "ServiceAccount rouse-system/rouse-proxy",
        "ServiceAccount rouse-system/rouse-controller",
        "ClusterRole rouse-proxy",
        "ClusterRole rouse-controller",
        "NetworkPolicy rouse-system/rouse-proxy",
    ] {
        assert!(kinds.contains(expected), "{expected} not in {kinds:#?}");
    }
    // No Namespace by default (Helm's --create-namespace), no NATS ConfigMap without a URL.
    assert!(!docs.iter().any(|d| d["kind"] == "Namespace"), "{kinds:#?}");
    assert!(!docs.iter().any(|d| d["kind"] == "ConfigMap"), "{kinds:#?}");
    for name in ["rouse-proxy", "rouse-controller"] {
        let d = object(&docs, "Deployment", name);
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true, "{name}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{name}");
        assert!(c["resources"]["requests"]["memory"].is_string(), "{name}");
        assert!(c["resources"]["limits"]["memory"].is_string(), "{name}");
    }
}

/// `kubectl` (for `kubectl kustomize`): `ROUSE_KUBECTL`, else the one on PATH, else the one
/// built with the test control plane.
fn kubectl() -> PathBuf {
    if let Some(path) = std::env::var_os("ROUSE_KUBECTL") {
        return PathBuf::from(path);
    }
    let on_path = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        return PathBuf::from("kubectl");
    }
    let dir = rouse_testcluster::binaries().unwrap_or_else(|e| panic!("no kubectl: {e:#}"));
    let path = dir.join("kubectl");
    assert!(
        path.is_file(),
        "no kubectl on PATH nor in {} (set ROUSE_KUBECTL)",
        dir.display()
    );
    path
}

/// Every name one rendered object uses to find another resolves to a rendered object: binding
/// subjects and roleRefs, ServiceAccounts, the proxies' admin Service, the NATS ConfigMap, PDB
/// and Service selectors.
fn check_references(docs: &[Value], namespace: &str) {
    let has = |kind: &str, ns: Option<&str>, name: &str| {
        docs.iter().any(|d| {
            d["kind"] == kind
                && d["metadata"]["name"] == name
                && d["metadata"]["namespace"].as_str() == ns
        })
    };
    for d in docs {
        let what = key(d);
        let kind = d["kind"].as_str().unwrap_or_default();
        if kind == "ClusterRoleBinding" || kind == "RoleBinding" {
            let role = &d["roleRef"];
            let role_ns = (role["kind"] == "Role").then_some(namespace);
            let role_kind = role["kind"].as_str().unwrap_or_default();
            let role_name = role["name"].as_str().unwrap_or_default();
            assert!(has(role_kind, role_ns, role_name), "{what}: roleRef {role}");
            for s in d["subjects"].as_array().into_iter().flatten() {
                let sa = s["name"].as_str().unwrap_or_default();
                assert!(
                    has("ServiceAccount", s["namespace"].as_str(), sa),
                    "{what}: subject {s}"
                );
            }
        }
        if kind == "Deployment" {
            let pod = &d["spec"]["template"];
            let sa = pod["spec"]["serviceAccountName"]
                .as_str()
                .unwrap_or_default();
            assert!(has("ServiceAccount", Some(namespace), sa), "{what}: {sa}");
            assert_eq!(
                d["spec"]["selector"]["matchLabels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, v)| pod["metadata"]["labels"][k.as_str()] != **v)
                    .count(),
                0,
                "{what}: the selector selects its pods"
            );
            let c = &pod["spec"]["containers"][0];
            for e in c["env"].as_array().into_iter().flatten() {
                if let Some(cm) = e["valueFrom"]["configMapKeyRef"]["name"].as_str() {
                    // Optional: rendered by the chart only with eventGateway.nats.url.
                    assert!(cm.ends_with("-proxy-nats"), "{what}: ConfigMap {cm}");
                }
                if e["name"] == "ROUSE_PROXY_SERVICE" {
                    let v = e["value"].as_str().unwrap_or_default();
                    let (ns, name) = v.split_once('/').unwrap_or_default();
                    assert!(has("Service", Some(ns), name), "{what}: {v}");
                }
            }
        }
        if kind == "Service" || kind == "PodDisruptionBudget" {
            let selector = if kind == "Service" {
                &d["spec"]["selector"]
            } else {
                &d["spec"]["selector"]["matchLabels"]
            };
            let selects =
                docs.iter().any(|o| {
                    o["kind"] == "Deployment"
                        && selector.as_object().into_iter().flatten().all(|(k, v)| {
                            o["spec"]["template"]["metadata"]["labels"][k.as_str()] == *v
                        })
                });
            assert!(selects, "{what}: selector {selector} selects no pods");
        }
    }
}

#[test]
fn names_resolve_whatever_the_release_is_called() {
    let docs = render(&[]);
    check_references(&docs, NAMESPACE);
    let docs = render_as(
        "edge",
        "infra",
        &["--set", "eventGateway.nats.url=nats://n:4222"],
    );
    check_references(&docs, "infra");
    let names: BTreeSet<String> = docs.iter().map(key).collect();
    for expected in [
        "Deployment infra/edge-rouse-proxy",
        "Service infra/edge-rouse-proxy-admin",
        "ConfigMap infra/edge-rouse-proxy-nats",
        "ClusterRole edge-rouse-event-keys",
    ] {
        assert!(names.contains(expected), "{expected} not in {names:#?}");
    }
    let env = env_of(&container(&docs, "edge-rouse-controller"));
    assert_eq!(env["ROUSE_PROXY_SERVICE"], "infra/edge-rouse-proxy-admin");
}

#[test]
fn chart_and_kustomize_base_render_the_same_objects_with_default_values() {
    let out = run({
        let mut cmd = Command::new(kubectl());
        cmd.arg("kustomize").arg(repo().join("manifests/base"));
        cmd
    });
    assert!(out.ok, "kubectl kustomize manifests/base:\n{}", out.stderr);
    let mut base = by_key(documents(&out.stdout));
    let mut chart = by_key(render(&[]));

    // Difference 1, the Namespace: the base creates `rouse-system`; the Helm way is the release
    // namespace (`helm install --namespace rouse-system --create-namespace`). The chart renders
    // the same Namespace when asked (`namespace.create=true`): checked here, then set aside.
    let base_ns = base
        .remove("Namespace rouse-system")
        .expect("the base has Namespace rouse-system");
    let mut with_ns = by_key(render(&["--set", "namespace.create=true"]));
    let mut chart_ns = with_ns
        .remove("Namespace rouse-system")
        .expect("namespace.create=true renders the Namespace");
    strip_helm_labels(&mut chart_ns["metadata"]["labels"], "Namespace");
    assert_eq!(chart_ns, base_ns, "namespace.create=true");

    // Difference 2, Helm's labels: on every object and pod template the chart renders (not on
    // CRDs, which Helm installs from crds/ as they are). Checked, then removed.
    for (k, o) in chart.iter_mut() {
        if o["kind"] == "CustomResourceDefinition" {
            continue;
        }
        strip_helm_labels(&mut o["metadata"]["labels"], k);
        if o["kind"] == "Deployment" {
            strip_helm_labels(
                &mut o["spec"]["template"]["metadata"]["labels"],
                &format!("{k} pod template"),
            );
        }
    }

    // Nothing else may differ.
    let base_keys: BTreeSet<&String> = base.keys().collect();
    let chart_keys: BTreeSet<&String> = chart.keys().collect();
    assert_eq!(
        base_keys,
        chart_keys,
        "objects only in the base: {:?}; only in the chart: {:?}",
        base_keys.difference(&chart_keys).collect::<Vec<_>>(),
        chart_keys.difference(&base_keys).collect::<Vec<_>>()
    );
    let mut all = Vec::new();
    for (k, b) in &mut base {
        let c = chart.get_mut(k).expect("same keys");
        normalise_numbers(b);
        normalise_numbers(c);
        let mut diffs = Vec::new();
        differences(b, c, k, &mut diffs);
        all.extend(diffs);
    }
    assert!(
        all.is_empty(),
        "the chart (default values) and manifests/base differ; change both (RBAC: \
         charts/rouse/templates/rbac.yaml mirrors manifests/base/rbac.yaml):\n{}",
        all.join("\n")
    );
}

#[test]
fn values_schema_refuses_unknown_keys_and_wrong_types() {
    for (set, error) in [
        // A typo'd key, nested and at the top.
        (
            "proxy.replicaz=3",
            "at '/proxy': additional properties 'replicaz' not allowed",
        ),
        (
            "evenGateway.nats.url=nats://x:4222",
            "additional properties 'evenGateway' not allowed",
        ),
        (
            "eventGateway.nats.ulr=nats://x:4222",
            "at '/eventGateway/nats': additional properties 'ulr' not allowed",
        ),
        // A wrong type and a malformed listen address.
        (
            "proxy.threads=two",
            "at '/proxy/threads': got string, want null or integer",
        ),
        (
            "controller.adminListen=localhost:9091",
            "/controller/adminListen",
        ),
    ] {
        let chart = chart();
        let out = run(helm(&[
            "template",
            RELEASE,
            chart.to_str().expect("UTF-8"),
            "--set",
            set,
        ]));
        assert!(!out.ok, "--set {set} was accepted:\n{}", out.stdout);
        assert!(
            out.stderr
                .contains("values don't meet the specifications of the schema"),
            "--set {set}: {}",
            out.stderr
        );
        assert!(out.stderr.contains(error), "--set {set}: {}", out.stderr);
    }
    // `--set x=null` (Helm: "back to the default") is fine for the optional flags.
    render(&[
        "--set",
        "proxy.threads=null",
        "--set",
        "controller.tickMs=null",
    ]);
}

/// The env var of every option in a binary's `--help` (`--flag <X>  text [env: NAME=] ...`):
/// `(flag, Some(env))`, or `(flag, None)` for an option without one.
fn help_options(help: &str) -> Vec<(String, Option<String>)> {
    let mut entries: Vec<String> = Vec::new();
    for line in help.lines() {
        let t = line.trim_start();
        if t.starts_with('-') && line.len() > t.len() {
            entries.push(t.to_string());
        } else if let Some(last) = entries.last_mut()
            && !line.trim().is_empty()
            && line.starts_with(' ')
        {
            last.push(' ');
            last.push_str(t);
        }
    }
    entries
        .iter()
        .filter_map(|e| {
            let flag = e
                .split([' ', ','])
                .find(|w| w.starts_with("--"))?
                .to_string();
            let env = e.split("[env: ").nth(1).map(|rest| {
                rest.split(['=', ']'])
                    .next()
                    .unwrap_or_default()
                    .to_string()
            });
            Some((flag, env))
        })
        .filter(|(flag, _)| flag != "--help" && flag != "--version")
        .collect()
}

fn container(docs: &[Value], deployment: &str) -> Value {
    object(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0].clone()
}

/// `name -> value` of a container's env (`valueFrom` entries as `from:<json>`).
fn env_of(c: &Value) -> BTreeMap<String, String> {
    c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let name = e["name"].as_str().unwrap_or_default().to_string();
            let value = match &e["value"] {
                Value::String(s) => s.clone(),
                _ => format!("from:{}", e["valueFrom"]),
            };
            (name, value)
        })
        .collect()
}

#[test]
fn every_flag_of_both_binaries_is_a_value() {
    let values = all_values_file();
    let docs = render(&["-f", values.to_str().expect("UTF-8")]);
    for (binary, args, deployment) in [
        ("rouse", &["kubernetes", "--help"][..], "rouse-proxy"),
        ("rouse-controller", &["--help"][..], "rouse-controller"),
    ] {
        let out = run({
            let mut cmd = Command::new(bin(binary));
            // The help shows the current value of each env var: none here.
            cmd.args(args).env_clear();
            cmd
        });
        assert!(out.ok, "{binary} {args:?}: {}", out.stderr);
        let options = help_options(&out.stdout);
        assert!(
            options.len() >= 10,
            "parsed {options:?} from\n{}",
            out.stdout
        );
        let env = env_of(&container(&docs, deployment));
        for (flag, var) in &options {
            let var = var.as_ref().unwrap_or_else(|| {
                panic!("{binary} {flag} has no env var: give the chart a value for it")
            });
            assert!(
                env.contains_key(var),
                "{binary} {flag} ({var}) is not a value of the chart (rendered env: {env:#?})"
            );
        }
    }

    // And each value renders what was asked for.
    let proxy = container(&docs, "rouse-proxy");
    let env = env_of(&proxy);
    for (var, value) in [
        ("ROUSE_LOG", "debug"),
        ("ROUSE_LOG_FORMAT", "json"),
        ("ROUSE_LISTEN", "0.0.0.0:8081"),
        ("ROUSE_ADMIN_LISTEN", "0.0.0.0:9191"),
        ("ROUSE_NAMESPACES", "apps,web"),
        ("ROUSE_KEDA_INTERCEPTOR_ROUTES", "true"),
        ("ROUSE_THREADS", "3"),
        ("ROUSE_MAX_HELD_REQUESTS", "1234"),
        // Not 2.68435456e+08 (Helm reads numbers as floats).
        ("ROUSE_MAX_HELD_BYTES", "268435456"),
        ("ROUSE_MAX_CONNECTIONS", "20000"),
        ("ROUSE_HEADER_TIMEOUT_MS", "5000"),
        ("ROUSE_KEEPALIVE_TIMEOUT_SECS", "75"),
        ("ROUSE_SEND_TIMEOUT_SECS", "30"),
        ("ROUSE_ACCESS_LOG", "true"),
        ("ROUSE_DRAIN_GRACE_SECS", "12"),
        ("ROUSE_READINESS_DELAY_MS", "2500"),
        ("ROUSE_NATS_STREAM", "EVENTS_T"),
        ("ROUSE_NATS_REPLICAS", "1"),
        ("ROUSE_NATS_PUBLISH_TIMEOUT_MS", "7000"),
        ("ROUSE_NATS_CREDENTIALS", "/etc/rouse/nats/user.creds"),
        ("EXTRA", "1"),
    ] {
        assert_eq!(env.get(var).map(String::as_str), Some(value), "proxy {var}");
    }
    assert!(env["ROUSE_ID"].contains("metadata.name"), "{env:?}");
    assert!(
        env["ROUSE_NATS_URL"].contains("rouse-proxy-nats"),
        "{env:?}"
    );
    assert_eq!(proxy["args"], json!(["kubernetes", "--future-flag=1"]));
    assert_eq!(proxy["image"], "registry.example/rouse-proxy:9.9.9");
    assert_eq!(proxy["imagePullPolicy"], "Always");
    let ports: Vec<(String, i64)> = proxy["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default().to_string(),
                p["containerPort"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(ports, [("http".into(), 8081), ("admin".into(), 9191)]);
    assert_eq!(
        proxy["volumeMounts"][1],
        json!({"name": "nats-creds", "mountPath": "/etc/rouse/nats", "readOnly": true})
    );
    let pod = &object(&docs, "Deployment", "rouse-proxy")["spec"]["template"];
    // 2.5 s readiness delay (rounded up) + 12 s drain + 5 s slack.
    assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 20);
    assert_eq!(
        pod["spec"]["imagePullSecrets"],
        json!([{"name": "regcred"}])
    );
    assert_eq!(pod["spec"]["priorityClassName"], "system-cluster-critical");
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    assert!(
        pod["metadata"]["annotations"]["checksum/nats"].is_string(),
        "the proxies roll when the NATS URL changes"
    );
    let cm = object(&docs, "ConfigMap", "rouse-proxy-nats");
    assert_eq!(
        cm["data"]["url"],
        "nats://nats-0.messaging:4222,nats://nats-1.messaging:4222"
    );
    let svc = object(&docs, "Service", "rouse-proxy");
    assert_eq!(svc["spec"]["type"], "LoadBalancer");
    assert_eq!(svc["spec"]["ports"][0]["port"], 8000);
    assert_eq!(
        object(&docs, "Service", "rouse-proxy-admin")["spec"]["ports"][0]["port"],
        9191
    );
    let pdb = object(&docs, "PodDisruptionBudget", "rouse-proxy");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1, "{pdb}");
    assert!(pdb["spec"].get("minAvailable").is_none(), "{pdb}");

    let controller = container(&docs, "rouse-controller");
    let env = env_of(&controller);
    for (var, value) in [
        ("ROUSE_LOG", "debug"),
        ("ROUSE_LOG_FORMAT", "json"),
        ("ROUSE_NAMESPACES", "apps"),
        ("ROUSE_KEDA_INTERCEPTOR_ROUTES", "true"),
        ("ROUSE_PROXY_SERVICE", "other/proxies"),
        ("ROUSE_PROXY_PORT_NAME", "adm"),
        ("ROUSE_PROXY_ADDRS", "127.0.0.1:9090,127.0.0.2:9090"),
        ("ROUSE_LEASE_NAMESPACE", "leases"),
        ("ROUSE_LEASE_NAME", "my-lease"),
        ("ROUSE_LEASE_DURATION_MS", "9000"),
        ("ROUSE_LEASE_RENEW_MS", "900"),
        ("ROUSE_REPORT_INTERVAL_MS", "300"),
        ("ROUSE_TICK_MS", "400"),
        ("ROUSE_ADMIN_LISTEN", "0.0.0.0:9292"),
        ("ROUSE_EXTERNAL_SCALER_LISTEN", "0.0.0.0:9393"),
    ] {
        assert_eq!(
            env.get(var).map(String::as_str),
            Some(value),
            "controller {var}"
        );
    }
    // kedaInterceptorRoutes=true binds the roles that read KEDA's InterceptorRoutes.
    for name in ["rouse-proxy-keda-routes", "rouse-controller-keda-routes"] {
        let crb = object(&docs, "ClusterRoleBinding", name);
        assert_eq!(crb["roleRef"]["name"], name);
    }
    // The Lease's RoleBinding follows the Lease.
    let rb = object(&docs, "RoleBinding", "rouse-controller-leader-election");
    assert_eq!(rb["metadata"]["namespace"], "leases");
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "PodDisruptionBudget"
                && d["metadata"]["name"] == "rouse-controller"),
        "controller.pdb.enabled=false"
    );

    // The KEDA scaler off: no grpc port anywhere.
    let docs = render(&["--set", "controller.externalScalerListen="]);
    let c = container(&docs, "rouse-controller");
    assert_eq!(env_of(&c)["ROUSE_EXTERNAL_SCALER_LISTEN"], "");
    assert_eq!(
        c["ports"].as_array().map(Vec::len),
        Some(1),
        "{}",
        c["ports"]
    );
    let svc = object(&docs, "Service", "rouse-controller");
    assert_eq!(svc["spec"]["ports"].as_array().map(Vec::len), Some(1));
}

// --- helm install on the real control plane ---------------------------------------------------

/// A process whose output is kept for failure messages.
struct Proc {
    name: String,
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let output = Arc::new(Mutex::new(Vec::new()));
        let readers: Vec<Box<dyn std::io::Read + Send>> = [
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
        .collect();
        for reader in readers {
            let out = output.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(reader)
                    .lines()
                    .map_while(Result::ok)
                {
                    out.lock().unwrap_or_else(|p| p.into_inner()).push(line);
                }
            });
        }
        Proc {
            name: name.to_string(),
            child,
            output,
        }
    }

    fn tail(&self) -> String {
        let out = self.output.lock().unwrap_or_else(|p| p.into_inner());
        let start = out.len().saturating_sub(30);
        format!("--- {} ---\n{}", self.name, out[start..].join("\n"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the kubelet would start for pod `pod` of a Helm-installed Deployment: the container's
/// args, and its env resolved as the kubelet resolves it (downward API fields, ConfigMap keys).
/// The listen addresses are the one change: a pod has its own network namespace, these processes
/// share the host's, so each `0.0.0.0:<port>` listener gets a free port on 127.0.0.1 instead
/// (returned, by env var).
struct PodSpec {
    service_account: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    listeners: BTreeMap<String, SocketAddr>,
}

async fn pod_spec(client: &Client, deployment: &Deployment, pod: &str) -> PodSpec {
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let namespace = deployment.metadata.namespace.clone().unwrap_or_default();
    let spec = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .unwrap_or_else(|| panic!("{name}: no pod spec"));
    assert_eq!(spec.containers.len(), 1, "{name}: one container");
    let c: &Container = &spec.containers[0];
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &namespace);
    let mut env = BTreeMap::new();
    let mut listeners = BTreeMap::new();
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            Some(v.clone())
        } else {
            let from = e
                .value_from
                .as_ref()
                .unwrap_or_else(|| panic!("{name} env {}: no value", e.name));
            if let Some(f) = &from.field_ref {
                match f.field_path.as_str() {
                    "metadata.name" => Some(pod.to_string()),
                    "metadata.namespace" => Some(namespace.clone()),
                    other => panic!("{name} env {}: fieldRef {other} not resolved here", e.name),
                }
            } else if let Some(r) = &from.config_map_key_ref {
                let cm = configmaps
                    .get_opt(&r.name)
                    .await
                    .unwrap_or_else(|e| panic!("ConfigMap {}: {e}", r.name));
                let value = cm
                    .and_then(|cm| cm.data)
                    .and_then(|d| d.get(&r.key).cloned());
                assert!(
                    value.is_some() || r.optional == Some(true),
                    "{name} env {}: ConfigMap {} key {} missing and not optional",
                    e.name,
                    r.name,
                    r.key
                );
                value
            } else {
                panic!(
                    "{name} env {}: valueFrom {from:?} not resolved here",
                    e.name
                )
            }
        };
        let Some(mut value) = value else { continue };
        let is_listener = e.name.ends_with("_LISTEN") && !value.is_empty();
        if is_listener {
            assert!(
                value.starts_with("0.0.0.0:"),
                "{name} {}={value}: a pod listens on all its addresses",
                e.name
            );
            let addr = free_addr();
            listeners.insert(e.name.clone(), addr);
            value = addr.to_string();
        }
        env.insert(e.name.clone(), value);
    }
    PodSpec {
        service_account: spec.service_account_name.clone().unwrap_or_default(),
        args: c.args.clone().unwrap_or_default(),
        env,
        listeners,
    }
}

/// Starts `program` as `spec` would run in its pod, authenticated as the pod's ServiceAccount:
/// no environment but the pod's and a KUBECONFIG holding that ServiceAccount's token.
fn start(name: &str, program: &Path, spec: &PodSpec, kubeconfig: &Path) -> Proc {
    let mut cmd = Command::new(program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(&spec.env)
        .env("KUBECONFIG", kubeconfig);
    Proc::spawn(name, cmd)
}

type Http = HttpClient<HttpConnector, Full<Bytes>>;

async fn request(
    http: &Http,
    method: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, http::HeaderMap, String), String> {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(60), http.request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_then_a_cold_request_through_the_helm_installed_proxy_wakes_an_app() {
    let cluster = TestCluster::shared();
    let client = cluster.client().await;
    let dir = cluster.dir.join("helm-install");
    std::fs::create_dir_all(&dir).expect("test dir");
    // The event gateway's queue, connected through the chart's values (a single server: one
    // copy of each event).
    let nats = Nats::start_in(&dir).await;
    let nats_url = format!("eventGateway.nats.url={}", nats.url());

    // helm install, waiting until both Deployments are available (KWOK runs their pods).
    let chart = chart();
    let kubeconfig = cluster.kubeconfig.to_str().expect("UTF-8").to_string();
    let started = Instant::now();
    let out = run(helm(&[
        "install",
        RELEASE,
        chart.to_str().expect("UTF-8"),
        "--kubeconfig",
        &kubeconfig,
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        "--set",
        &nats_url,
        "--set",
        "eventGateway.nats.replicas=1",
        "--wait",
        "--timeout",
        "3m",
    ]));
    assert!(out.ok, "helm install:\n{}{}", out.stdout, out.stderr);
    println!("helm install --wait: {:?}", started.elapsed());
    assert!(out.stdout.contains("STATUS: deployed"), "{}", out.stdout);
    let status = run(helm(&[
        "status",
        RELEASE,
        "--kubeconfig",
        &kubeconfig,
        "--namespace",
        NAMESPACE,
        "-o",
        "json",
    ]));
    assert!(status.ok, "helm status: {}", status.stderr);
    let status: Value = serde_json::from_str(&status.stdout).expect("helm status JSON");
    assert_eq!(status["info"]["status"], "deployed");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NAMESPACE);
    for name in ["rouse-proxy", "rouse-controller"] {
        let d = deployments.get(name).await.expect("installed Deployment");
        let available = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
        assert_eq!(available, 2, "{name}: --wait saw it available");
    }
    // Their pods are KWOK's fakes: no container runs (no runtime here). The same binaries run
    // as processes below instead, so the Deployments go to zero (like tests/tests/k8s/mod.rs
    // does for the kustomize base) and their fake pods leave the proxies' admin Service.
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
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    wait_until(
        "the fake Rouse pods gone",
        Duration::from_secs(60),
        || async {
            pods.list(&ListParams::default().labels("app.kubernetes.io/part-of=rouse"))
                .await
                .is_ok_and(|l| l.items.is_empty())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    println!("fake pods gone: {:?}", started.elapsed());
    let api: Api<HTTPScaledObject> = Api::all(client.clone());
    wait_until(
        "the Helm-installed CRDs served",
        Duration::from_secs(30),
        || {
            let api = api.clone();
            async move { api.list(&Default::default()).await.is_ok() }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // The proxy, as pod rouse-proxy-helm-0 of the Helm-installed Deployment would run it.
    let proxy_deployment = deployments.get("rouse-proxy").await.expect("proxy");
    let proxy_spec = pod_spec(&client, &proxy_deployment, "rouse-proxy-helm-0").await;
    assert_eq!(
        proxy_spec.args.first().map(String::as_str),
        Some("kubernetes")
    );
    assert_eq!(
        proxy_spec.env.get("ROUSE_NATS_URL"),
        Some(&nats.url()),
        "from the chart's ConfigMap"
    );
    let proxy_kubeconfig = cluster
        .kubeconfig_for(NAMESPACE, &proxy_spec.service_account, &dir)
        .await;
    let t = Instant::now();
    let rouse = bin("rouse");
    println!("workspace binaries: {:?}", t.elapsed());
    let proxy = start("proxy", &rouse, &proxy_spec, &proxy_kubeconfig);
    let listen = proxy_spec.listeners["ROUSE_LISTEN"];
    let admin = proxy_spec.listeners["ROUSE_ADMIN_LISTEN"];
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let http: Http = HttpClient::builder(TokioExecutor::new()).build(connector);
    wait_until("the proxy ready", Duration::from_secs(30), || async {
        request(&http, "GET", admin, "/readyz", &[], "")
            .await
            .is_ok_and(|r| r.0 == 200)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", proxy.tail()));

    // The proxies' admin Service Helm installed lists this proxy, as the EndpointSlice
    // controller would list the pod: the Service's admin port name, the container's port.
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let admin_svc = services
        .get("rouse-proxy-admin")
        .await
        .expect("Helm-installed rouse-proxy-admin");
    let port_name = admin_svc
        .spec
        .and_then(|s| s.ports)
        .and_then(|p| p.first().and_then(|p| p.name.clone()))
        .expect("admin port name");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    slices
        .patch(
            "rouse-proxy-admin-helm-0",
            &PatchParams::apply("rouse-e2e").force(),
            &Patch::Apply(json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "rouse-proxy-admin-helm-0",
                             "labels": {"kubernetes.io/service-name": "rouse-proxy-admin"}},
                "addressType": "IPv4",
                "ports": [{"name": port_name, "port": admin.port()}],
                "endpoints": [{"addresses": [admin.ip().to_string()], "conditions": {"ready": true},
                               "targetRef": {"kind": "Pod", "name": "rouse-proxy-helm-0", "namespace": NAMESPACE}}]
            })),
        )
        .await
        .expect("proxy admin EndpointSlice");

    // The controller, as pod rouse-controller-helm-0 would run it.
    let controller_deployment = deployments
        .get("rouse-controller")
        .await
        .expect("controller");
    let controller_spec =
        pod_spec(&client, &controller_deployment, "rouse-controller-helm-0").await;
    assert_eq!(
        controller_spec
            .env
            .get("ROUSE_PROXY_SERVICE")
            .map(String::as_str),
        Some("rouse-system/rouse-proxy-admin")
    );
    let controller_kubeconfig = cluster
        .kubeconfig_for(NAMESPACE, &controller_spec.service_account, &dir)
        .await;
    let controller = start(
        "controller",
        &bin("rouse-controller"),
        &controller_spec,
        &controller_kubeconfig,
    );
    let logs = || format!("{}\n{}", proxy.tail(), controller.tail());
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    wait_until(
        "the controller holds the Lease in rouse-system",
        Duration::from_secs(30),
        || async {
            leases
                .get_opt("rouse-controller")
                .await
                .ok()
                .flatten()
                .and_then(|l| l.spec.and_then(|s| s.holder_identity))
                == Some("rouse-controller-helm-0".to_string())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));

    // An app at zero in its own namespace.
    let ns = cluster.namespace("helm-app").await;
    let pp = PatchParams::apply("rouse-e2e").force();
    let apps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    apps.patch("web", &pp, &Patch::Apply(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"},
                                           "annotations": {rouse_testcluster::START_DELAY_ANNOTATION: "300ms"}},
                              "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1",
                                                       "ports": [{"name": "http", "containerPort": 8080}]}]}}}
    })))
    .await
    .expect("app Deployment");
    let app_services: Api<Service> = Api::namespaced(client.clone(), &ns);
    app_services
        .patch("web", &pp, &Patch::Apply(json!({
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
        })))
        .await
        .expect("app Service");
    let objects: Api<HTTPScaledObject> = Api::namespaced(client.clone(), &ns);
    objects
        .patch("web", &pp, &Patch::Apply(json!({
            "apiVersion": "rouse.dev/v1alpha1", "kind": "HTTPScaledObject", "metadata": {"name": "web"},
            "spec": {"hosts": ["web.helm.test"],
                     "scaleTargetRef": {"name": "web", "kind": "Deployment", "apiVersion": "apps/v1",
                                        "service": "web", "port": 80},
                     "replicas": {"min": 0, "max": 3}, "scaledownPeriod": 300}
        })))
        .await
        .expect("HTTPScaledObject");
    wait_until("web.helm.test routed", Duration::from_secs(30), || async {
        request(
            &http,
            "GET",
            admin,
            "/explain?host=web.helm.test&path=/",
            &[],
            "",
        )
        .await
        .is_ok_and(|r| r.2.contains("\"matched\": true"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));

    // The quick check: one cold request, held, woken, answered by the app's pod.
    let t = Instant::now();
    let (status, headers, body) =
        request(&http, "GET", listen, "/", &[("host", "web.helm.test")], "")
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    println!("cold request: {:?}", t.elapsed());
    assert_eq!(status, 200, "{body}\n{}", logs());
    assert!(body.starts_with("web-"), "answered by a pod: {body}");
    assert_eq!(
        headers.get("x-rouse-cold-start").map(|v| v.as_bytes()),
        Some(&b"true"[..]),
        "the request waited for the cold start"
    );
    let scale = apps.get_scale("web").await.expect("scale");
    assert!(
        scale.spec.and_then(|s| s.replicas).unwrap_or(0) >= 1,
        "the Helm-installed controller scaled web up\n{}",
        logs()
    );

    // The event gateway, through the NATS URL the chart's values gave the proxy: an
    // EventSubscription is served (without a queue its path would be 404) and answers Event
    // Grid's validation handshake itself.
    let subs: Api<EventSubscription> = Api::namespaced(client.clone(), &ns);
    subs.patch("orders", &pp, &Patch::Apply(json!({
        "apiVersion": "rouse.dev/v1alpha1", "kind": "EventSubscription", "metadata": {"name": "orders"},
        "spec": {"path": "/events/helm-orders", "target": {"httpScaledObject": "web", "path": "/api/events"}}
    })))
    .await
    .expect("EventSubscription");
    let validation = json!([{"id": "v-1", "topic": "/subscriptions/x", "subject": "",
        "data": {"validationCode": "helm-code"},
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": "2026-12-01T00:00:00Z", "dataVersion": "2"}])
    .to_string();
    let answered = Mutex::new(String::new());
    wait_until("the webhook served", Duration::from_secs(30), || async {
        let r = request(
            &http,
            "POST",
            listen,
            "/events/helm-orders",
            &[
                ("aeg-event-type", "SubscriptionValidation"),
                ("content-type", "application/json"),
            ],
            &validation,
        )
        .await;
        let done = r.as_ref().is_ok_and(|r| r.0 == 200);
        *answered.lock().unwrap_or_else(|p| p.into_inner()) = format!("{r:?}");
        done
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: last answer {}\n{}",
            answered.lock().unwrap_or_else(|p| p.into_inner()),
            logs()
        )
    });
    println!("test done: {:?}", started.elapsed());
    let answer = answered.into_inner().unwrap_or_else(|p| p.into_inner());
    assert!(answer.contains("helm-code"), "{answer}");
}

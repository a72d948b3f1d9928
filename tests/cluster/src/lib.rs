//! A real Kubernetes control plane on loopback for Rouse's tests.
//!
//! `TestCluster::shared()` gives every test in a test binary one cluster (isolate by namespace
//! with [`TestCluster::namespace`]); `TestCluster::start` gives a private one, torn down on drop.
//! Components: etcd, kube-apiserver (TLS, token auth, RBAC), kube-controller-manager,
//! kube-scheduler, KWOK with one fake Node (pod IPs inside 127.0.0.0/8, configurable start delay)
//! and [`backends`], which serves HTTP on every Ready pod's IP. Binaries come from
//! `tests/cluster/build-control-plane.sh` (pinned Go modules, cached outside the repository).
//!
//! ```text
//! let cluster = TestCluster::shared();
//! let client = cluster.client().await;
//! let ns = cluster.namespace("scale").await;
//! ```

pub mod backends;
pub mod helm;
pub mod nats;
mod pki;
pub(crate) mod procs;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// Token of the `system:masters` user the harness and tests use.
pub const ADMIN_TOKEN: &str = "rouse-test-admin-token";
/// Name of the fake node KWOK manages.
pub const NODE_NAME: &str = "kwok-node-0";
/// Pod annotation read by KWOK's pod-ready stage: how long the "container" takes to become ready
/// (a Go duration, e.g. `"750ms"`), modelling a cold start per workload.
pub const START_DELAY_ANNOTATION: &str = "rouse.dev/test-start-delay";

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// Default time from pod creation to Ready (KWOK stage delay), unless the pod annotates its own.
    pub pod_start_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            pod_start_delay: Duration::from_millis(200),
        }
    }
}

struct Component {
    name: &'static str,
    program: PathBuf,
    args: Vec<std::ffi::OsString>,
    child: Child,
}

/// A running control plane; everything is stopped and deleted on drop.
pub struct TestCluster {
    /// Working directory: certificates, kubeconfig, etcd data, component logs (`<name>.log`).
    pub dir: PathBuf,
    /// Kubeconfig for the admin token, verifying the apiserver against the test CA.
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// Pod IPs come from this range (inside 127.0.0.0/8).
    pub pod_cidr: String,
    /// Time `start` took (cold = binaries just built is not included).
    pub startup: Duration,
    components: Mutex<Vec<Component>>,
    backends: Option<std::thread::JoinHandle<()>>,
    backends_stop: Option<tokio::sync::oneshot::Sender<()>>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Runs one of our build scripts (`bash SCRIPT`, its progress on stderr; a no-op when what it
/// builds is cached) and returns the path it printed on its last stdout line: how the control
/// plane, helm and nats-server are found.
pub(crate) fn run_build_script(script: &Path) -> Result<PathBuf, String> {
    let out = Command::new("bash")
        .arg(script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} failed ({})", script.display(), out.status));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .ok_or_else(|| format!("{} printed no path", script.display()))
}

/// The control-plane binaries, built once per process by the build script (a no-op when cached).
pub fn binaries() -> anyhow::Result<&'static Path> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let r = BIN.get_or_init(|| {
        if let Ok(dir) = std::env::var("ROUSE_K8S_BIN") {
            return Ok(PathBuf::from(dir));
        }
        run_build_script(&Path::new(env!("CARGO_MANIFEST_DIR")).join("build-control-plane.sh"))
    });
    r.as_deref().map_err(|e| anyhow::anyhow!("{e}"))
}

/// Removes working directories left by test processes that no longer exist (killed by a signal,
/// when neither `Drop` nor the exit hook ran).
fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("rouse-cluster-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn spawn_logged(dir: &Path, name: &'static str, cmd: Command) -> anyhow::Result<Component> {
    let program = PathBuf::from(cmd.get_program());
    let args: Vec<std::ffi::OsString> = cmd.get_args().map(|a| a.to_os_string()).collect();
    let child = spawn_with_log(dir, name, &program, &args)?;
    Ok(Component {
        name,
        program,
        args,
        child,
    })
}

fn spawn_with_log(
    dir: &Path,
    name: &str,
    program: &Path,
    args: &[std::ffi::OsString],
) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(Stdio::null());
    procs::spawn(cmd).with_context(|| format!("spawning {name}"))
}

/// Polls `check` every 50 ms until it holds, or fails after `timeout` naming `what`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

impl TestCluster {
    /// A kubeconfig for ServiceAccount `namespace/sa` (its token from the TokenRequest API, the
    /// cluster CA), written to `dir/<sa>.kubeconfig`: a component run as that account gets
    /// exactly its RBAC.
    pub async fn kubeconfig_for(&self, namespace: &str, sa: &str, dir: &Path) -> PathBuf {
        use k8s_openapi::api::authentication::v1::TokenRequest;
        let sas: Api<ServiceAccount> = Api::namespaced(self.client().await, namespace);
        let tr: TokenRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600}
        }))
        .expect("token request");
        let token = sas
            .create_token_request(sa, &PostParams::default(), &tr)
            .await
            .unwrap_or_else(|e| panic!("token for {namespace}/{sa}: {e}"))
            .status
            .expect("token status")
            .token;
        let path = dir.join(format!("{sa}.kubeconfig"));
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
             users:\n- name: {sa}\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: {sa}\n\
             current-context: c\n",
            self.server,
            self.dir.join("ca.crt").display()
        );
        std::fs::write(&path, yaml).expect("write kubeconfig");
        path
    }

    /// The cluster shared by every test of this test binary, started on first use.
    ///
    /// A failed start is remembered: every test reports the same error at once instead of
    /// retrying.
    pub fn shared() -> &'static TestCluster {
        static SHARED: OnceLock<Result<TestCluster, String>> = OnceLock::new();
        let started = SHARED
            .get_or_init(|| TestCluster::start(Options::default()).map_err(|e| format!("{e:#}")));
        match started {
            Ok(c) => c,
            Err(e) => panic!("starting the test cluster: {e}"),
        }
    }

    /// Starts a private cluster. Blocking; safe to call from inside a tokio runtime.
    pub fn start(opts: Options) -> anyhow::Result<TestCluster> {
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(Self::start_inner(opts))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("cluster start-up thread panicked"))?
    }

    async fn start_inner(opts: Options) -> anyhow::Result<TestCluster> {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let bin = binaries()?.to_path_buf();
        let started = Instant::now();
        let dir = std::env::temp_dir().join(format!("rouse-cluster-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        sweep_stale_dirs();
        std::fs::create_dir_all(&dir)?;
        // It holds the CA key and the admin token.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        procs::remove_at_exit(dir.clone());
        pki::generate(&dir)?;
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{ADMIN_TOKEN},rouse-test-admin,rouse-test-admin,system:masters\n"),
        )?;

        // A per-process /16 in 127.0.0.0/8 so concurrent test processes never share pod IPs.
        let octet = 20 + (std::process::id() + n * 7) % 200;
        let pod_cidr = format!("127.{octet}.0.0/16");

        let mut cluster = TestCluster {
            kubeconfig: dir.join("kubeconfig"),
            server: String::new(),
            pod_cidr: pod_cidr.clone(),
            startup: Duration::ZERO,
            components: Mutex::new(Vec::new()),
            backends: None,
            backends_stop: None,
            dir: dir.clone(),
        };

        // etcd
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let etcd_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Command::new(bin.join("etcd"));
        etcd.arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=default={peer_url}"))
            .arg("--listen-metrics-urls=")
            .arg("--unsafe-no-fsync=true");
        cluster.push(spawn_logged(&dir, "etcd", etcd)?);
        let etcd_addr: SocketAddr = format!("127.0.0.1:{client_port}").parse()?;
        cluster
            .wait_ready("etcd", Duration::from_secs(30), || async {
                tokio::net::TcpStream::connect(etcd_addr).await.is_ok()
            })
            .await?;

        // kube-apiserver
        let port = free_port()?;
        cluster.server = format!("https://127.0.0.1:{port}");
        let p = |f: &str| dir.join(f).display().to_string();
        let mut api = Command::new(bin.join("kube-apiserver"));
        api.arg(format!("--etcd-servers={etcd_url}"))
            .arg("--bind-address=127.0.0.1")
            .arg("--advertise-address=127.0.0.1")
            .arg(format!("--secure-port={port}"))
            .arg(format!("--tls-cert-file={}", p("apiserver.crt")))
            .arg(format!("--tls-private-key-file={}", p("apiserver.key")))
            .arg(format!("--client-ca-file={}", p("ca.crt")))
            .arg(format!("--token-auth-file={}", p("tokens.csv")))
            .arg("--authorization-mode=RBAC")
            .arg("--service-cluster-ip-range=10.96.0.0/16")
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!("--service-account-key-file={}", p("sa.pub")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                p("sa.key")
            ))
            .arg(format!("--cert-dir={}", p("certs")))
            // Compact often and keep ConfigMaps out of the watch cache, so tests can provoke
            // "410 Gone" on a watch resumed from a compacted resourceVersion.
            .arg("--etcd-compaction-interval=5s")
            .arg("--watch-cache-sizes=configmaps#0")
            .arg("--enable-priority-and-fairness=false")
            .arg("--profiling=false");
        cluster.push(spawn_logged(&dir, "kube-apiserver", api)?);
        cluster.write_kubeconfig()?;
        let admin = cluster.client_inner().await?;
        cluster
            .wait_ready("kube-apiserver /readyz", Duration::from_secs(60), || {
                let admin = admin.clone();
                async move {
                    let req = http::Request::get("/readyz").body(Vec::new());
                    match req {
                        Ok(req) => admin
                            .request_text(req)
                            .await
                            .is_ok_and(|t| t.trim() == "ok"),
                        Err(_) => false,
                    }
                }
            })
            .await
            .with_context(|| cluster.log_tail("kube-apiserver"))?;

        // kube-controller-manager: the controllers that turn Deployments into Pods and
        // Services into EndpointSlices, plus namespace cleanup and service accounts.
        let kubeconfig = cluster.kubeconfig.display().to_string();
        let mut kcm = Command::new(bin.join("kube-controller-manager"));
        kcm.arg(format!("--kubeconfig={kubeconfig}"))
            .arg("--controllers=deployment-controller,replicaset-controller,endpointslice-controller,namespace-controller,garbage-collector-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller")
            .arg(format!("--service-account-private-key-file={}", p("sa.key")))
            .arg(format!("--root-ca-file={}", p("ca.crt")))
            .arg("--use-service-account-credentials=false")
            .arg("--leader-elect=false")
            .arg("--bind-address=127.0.0.1")
            .arg("--secure-port=0")
            .arg("--concurrent-deployment-syncs=10")
            .arg("--concurrent-replicaset-syncs=10");
        cluster.push(spawn_logged(&dir, "kube-controller-manager", kcm)?);

        let mut sched = Command::new(bin.join("kube-scheduler"));
        sched
            .arg(format!("--kubeconfig={kubeconfig}"))
            .arg(format!("--authentication-kubeconfig={kubeconfig}"))
            .arg(format!("--authorization-kubeconfig={kubeconfig}"))
            .arg("--leader-elect=false")
            .arg("--bind-address=127.0.0.1")
            .arg("--secure-port=0");
        cluster.push(spawn_logged(&dir, "kube-scheduler", sched)?);

        // KWOK: drives the fake node and its pods; the pod-ready stage gets the start delay.
        let stages = bin
            .parent()
            .map(|p| p.join("stages"))
            .context("stage directory")?;
        let delay_ms = opts.pod_start_delay.as_millis();
        let pod_ready = std::fs::read_to_string(stages.join("pod-ready.yaml"))?.replacen(
            "spec:\n",
            &format!(
                "spec:\n  delay:\n    durationMilliseconds: {delay_ms}\n    durationFrom:\n      expressionFrom: '.metadata.annotations[\"{START_DELAY_ANNOTATION}\"]'\n"
            ),
            1,
        );
        let kwok_config = [
            std::fs::read_to_string(stages.join("node-initialize.yaml"))?,
            pod_ready,
            std::fs::read_to_string(stages.join("pod-delete.yaml"))?,
        ]
        .join("\n---\n");
        std::fs::write(dir.join("kwok.yaml"), kwok_config)?;
        let mut kwok = Command::new(bin.join("kwok"));
        kwok.arg(format!("--kubeconfig={kubeconfig}"))
            .arg(format!("--config={}", p("kwok.yaml")))
            .arg("--manage-all-nodes=true")
            .arg(format!("--cidr={pod_cidr}"))
            .arg("--node-ip=127.0.0.1")
            .arg(format!("--server-address=127.0.0.1:{}", free_port()?));
        cluster.push(spawn_logged(&dir, "kwok", kwok)?);

        let nodes: Api<Node> = Api::all(admin.clone());
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": NODE_NAME,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux", "type": "kwok"}
            },
            "status": {
                "allocatable": {"cpu": "64", "memory": "256Gi", "pods": "1000"},
                "capacity": {"cpu": "64", "memory": "256Gi", "pods": "1000"}
            }
        }))?;
        nodes.create(&PostParams::default(), &node).await?;
        cluster
            .wait_ready("the KWOK node to be Ready", Duration::from_secs(60), || {
                let nodes = nodes.clone();
                async move {
                    nodes.get(NODE_NAME).await.is_ok_and(|n| {
                        n.status.and_then(|s| s.conditions).is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                    })
                }
            })
            .await
            .with_context(|| cluster.log_tail("kwok"))?;
        // The apiserver taints a new node `not-ready` and only the node-lifecycle controller
        // lifts it; that controller would also evict pods from a node without kubelet
        // heartbeats, so it is not run and the harness lifts the taint once KWOK reports Ready.
        nodes
            .patch(
                NODE_NAME,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"taints": null}})),
            )
            .await?;
        let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
        cluster
            .wait_ready(
                "the controller manager (default ServiceAccount)",
                Duration::from_secs(60),
                || {
                    let sas = sas.clone();
                    async move { sas.get("default").await.is_ok() }
                },
            )
            .await
            .with_context(|| cluster.log_tail("kube-controller-manager"))?;

        cluster.start_backends()?;
        cluster.startup = started.elapsed();
        Ok(cluster)
    }

    /// Fails if a component exited: start-up waits use it to stop at once with that component's
    /// log rather than time out.
    fn check_alive(&self) -> anyhow::Result<()> {
        let mut components = self.components.lock().unwrap_or_else(|p| p.into_inner());
        for c in components.iter_mut() {
            if let Ok(Some(status)) = c.child.try_wait() {
                bail!("{} exited ({status}); {}", c.name, self.log_tail(c.name));
            }
        }
        Ok(())
    }

    /// [`wait_until`] that also fails as soon as a component dies.
    async fn wait_ready<F, Fut>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: F,
    ) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            self.check_alive()?;
            if check().await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("timed out after {timeout:?} waiting for {what}")
    }

    fn push(&self, c: Component) {
        self.components
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(c);
    }

    fn write_kubeconfig(&self) -> anyhow::Result<()> {
        let ca = self.dir.join("ca.crt");
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: rouse-test\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
             users:\n- name: admin\n  user:\n    token: {ADMIN_TOKEN}\ncontexts:\n- name: rouse-test\n  context:\n    cluster: rouse-test\n    user: admin\n\
             current-context: rouse-test\n",
            self.server,
            ca.display()
        );
        std::fs::write(&self.kubeconfig, yaml)?;
        Ok(())
    }

    async fn config(&self) -> anyhow::Result<Config> {
        let kc = Kubeconfig::read_from(&self.kubeconfig)?;
        Ok(Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?)
    }

    async fn client_inner(&self) -> anyhow::Result<Client> {
        Ok(Client::try_from(self.config().await?)?)
    }

    /// An admin client for the calling runtime (clients are bound to the runtime that made them).
    pub async fn client(&self) -> Client {
        self.client_inner()
            .await
            .unwrap_or_else(|e| panic!("test cluster client: {e:#}"))
    }

    /// A client authenticating with `token` (e.g. a ServiceAccount token), verifying TLS.
    pub async fn client_with_token(&self, token: &str) -> Client {
        let mut config = self
            .config()
            .await
            .unwrap_or_else(|e| panic!("test cluster config: {e:#}"));
        config.auth_info = kube::config::AuthInfo {
            token: Some(token.to_string().into()),
            ..Default::default()
        };
        Client::try_from(config).unwrap_or_else(|e| panic!("client with token: {e}"))
    }

    /// Creates a fresh namespace `<prefix>-<n>` (tests isolate by namespace) and returns its name.
    pub async fn namespace(&self, prefix: &str) -> String {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id() % 100_000,
            N.fetch_add(1, Ordering::Relaxed)
        );
        let api: Api<Namespace> = Api::all(self.client().await);
        let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
            .unwrap_or_else(|e| panic!("namespace object: {e}"));
        api.create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        // The service-account controller creates `default`; pods need it to be admitted.
        let sas: Api<ServiceAccount> = Api::namespaced(self.client().await, &name);
        wait_until("default ServiceAccount", Duration::from_secs(30), || {
            let sas = sas.clone();
            async move {
                sas.list(&ListParams::default()).await.is_ok_and(|l| {
                    l.items
                        .iter()
                        .any(|s| s.metadata.name.as_deref() == Some("default"))
                })
            }
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "namespace {name}: {e:#}\n{}",
                self.log_tail("kube-controller-manager")
            )
        });
        name
    }

    fn start_backends(&mut self) -> anyhow::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let kubeconfig = self.kubeconfig.clone();
        let range = backends::PodRange::parse(&self.pod_cidr).context("pod CIDR")?;
        let handle = std::thread::Builder::new()
            .name("testcluster-backends".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    let client = async {
                        let kc = Kubeconfig::read_from(&kubeconfig).ok()?;
                        let config =
                            Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                                .await
                                .ok()?;
                        Client::try_from(config).ok()
                    };
                    let Some(client) = client.await else {
                        eprintln!("[testcluster] backends: no client");
                        return;
                    };
                    tokio::select! {
                        () = backends::run(client, range) => {}
                        _ = rx => {}
                    }
                });
            })?;
        self.backends = Some(handle);
        self.backends_stop = Some(tx);
        Ok(())
    }

    /// Process ids of the running components (benchmarks pin them away from measured CPUs).
    pub fn pids(&self) -> Vec<u32> {
        self.components
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|c| c.child.id())
            .collect()
    }

    /// The last lines of a component's log, for error messages.
    pub fn log_tail(&self, name: &str) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "{name}.log (last lines):\n{}",
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }

    /// Stops one component (SIGTERM, then SIGKILL) and starts it again with the same arguments,
    /// e.g. `kube-apiserver` to test that watches resume. Does not wait for it to be ready.
    pub fn restart(&self, name: &str) -> anyhow::Result<()> {
        let mut components = self.components.lock().unwrap_or_else(|p| p.into_inner());
        let c = components
            .iter_mut()
            .find(|c| c.name == name)
            .with_context(|| format!("no component named {name}"))?;
        procs::stop(&mut c.child, Duration::from_secs(10));
        c.child = spawn_with_log(&self.dir, c.name, &c.program, &c.args)?;
        Ok(())
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Some(tx) = self.backends_stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.backends.take() {
            let _ = h.join();
        }
        let mut components =
            std::mem::take(&mut *self.components.lock().unwrap_or_else(|p| p.into_inner()));
        while let Some(mut c) = components.pop() {
            procs::stop(&mut c.child, Duration::from_secs(5));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

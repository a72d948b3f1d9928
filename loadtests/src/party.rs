//! The parties a scenario compares, each started here on loopback: nginx and the KEDA HTTP
//! Add-on interceptor (Rouse itself comes from the e2e harness), plus the tools that drive them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use rouse_testcluster::TestCluster;
use serde_json::json;

/// The pinned load generator and peer binaries, from `build-tools.sh`.
pub struct Tools {
    pub oha: PathBuf,
    /// The KEDA interceptor binary and its CRD directory, or why they are missing.
    pub keda: Result<(PathBuf, PathBuf), String>,
}

impl Tools {
    /// Runs `build-tools.sh` (a no-op once cached) and takes the paths it prints.
    pub fn build(manifest: &Path) -> anyhow::Result<Tools> {
        let script = manifest.join("build-tools.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let field = |k: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .map(PathBuf::from)
        };
        let oha = field("oha").context("build-tools.sh did not build oha")?;
        let keda = match (field("interceptor"), field("keda_crds")) {
            (Some(i), Some(c)) if out.status.success() => Ok((i, c)),
            _ => Err(format!(
                "build-tools.sh could not build the KEDA interceptor ({})",
                out.status
            )),
        };
        Ok(Tools { oha, keda })
    }
}

/// CPU seconds (user + system) a process and its threads have used.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // CLK_TCK is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

pub use rouse_e2e::rss_kib;

/// Child processes of `pid` (nginx's workers).
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// A party's processes and the pids whose CPU and memory count as its cost. Processes the party
/// started are killed on drop, every one of them: nginx's workers outlive a killed master.
pub struct Party {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: Option<tokio::process::Child>,
    pids: Vec<u32>,
    _dir: Option<TempDir>,
}

impl Drop for Party {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            for pid in &self.pids {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

impl Party {
    /// A party that is only an address (the backend reached directly); no proxy cost to count.
    pub fn direct(addr: SocketAddr) -> Party {
        Party {
            name: "direct",
            addr,
            child: None,
            pids: Vec::new(),
            _dir: None,
        }
    }

    /// A party whose cost is `pids` (Rouse, started by the harness).
    pub fn pids(name: &'static str, addr: SocketAddr, pids: Vec<u32>) -> Party {
        Party {
            name,
            addr,
            child: None,
            pids,
            _dir: None,
        }
    }

    pub fn cpu_secs(&self) -> f64 {
        self.pids.iter().map(|p| cpu_secs(*p)).sum()
    }

    /// Whether every process counted for this party is still running (a dead one would read as
    /// zero CPU and memory).
    pub fn alive(&self) -> bool {
        self.pids
            .iter()
            .all(|p| Path::new(&format!("/proc/{p}/stat")).exists())
    }

    pub fn rss_kib(&self) -> u64 {
        self.pids.iter().map(|p| rss_kib(*p).0).sum()
    }
}

/// A private directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> anyhow::Result<TempDir> {
        let dir = std::env::temp_dir().join(format!("rouse-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits until `addr` answers `GET /` for `host` with a 2xx.
pub async fn wait_serving(addr: SocketAddr, host: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if get_status(addr, host)
            .await
            .is_ok_and(|s| (200..300).contains(&s))
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{addr} did not serve {host} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One HTTP/1.1 `GET /` on a fresh connection; the status code.
pub async fn get_status(addr: SocketAddr, host: &str) -> anyhow::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let head = String::from_utf8_lossy(&buf);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")
}

/// nginx as a plain keep-alive reverse proxy in front of `backend`: one worker (the same CPU
/// budget as the other proxies), upstream keep-alive, no access log. `http2` listens h2c
/// (prior knowledge) instead of HTTP/1.1.
pub async fn nginx(backend: SocketAddr, http2: bool, cpus: &str) -> anyhow::Result<Party> {
    let dir = TempDir::new(if http2 { "nginx-h2" } else { "nginx" })?;
    let listen = rouse_e2e::free_addr();
    let d = dir.0.display();
    let h2 = if http2 { " http2" } else { "" };
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 20000; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n\
         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         upstream backend {{ server {backend}; keepalive 256; keepalive_requests 1000000; }}\n\
         server {{\n    listen {listen}{h2};\n    location / {{\n      proxy_pass http://backend;\n\
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n\
         }}\n  }}\n}}\n"
    );
    let conf_path = dir.0.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    // /usr/sbin is not on a non-root user's PATH on Debian.
    let program = if Path::new("/usr/sbin/nginx").exists() {
        "/usr/sbin/nginx"
    } else {
        "nginx"
    };
    let child = tokio::process::Command::new("taskset")
        .args(["-c", cpus, program, "-c"])
        .arg(&conf_path)
        .args(["-p"])
        .arg(&dir.0)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting nginx (apt-get install nginx)")?;
    let master = child.id().context("nginx pid")?;
    let mut party = Party {
        name: "nginx",
        addr: listen,
        child: Some(child),
        pids: vec![master],
        _dir: Some(dir),
    };
    // The worker does the proxying: it must be counted, and killed on drop (it outlives a
    // killed master). From here on, an error drops `party` and takes the worker with it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let workers = children(master);
        if !workers.is_empty() {
            party.pids.extend(workers);
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("nginx started no worker within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if http2 {
        // An h2c-only listener cannot be probed with HTTP/1.1; wait for it to accept.
        wait_accepting(listen, Duration::from_secs(10)).await?;
    } else {
        wait_serving(listen, "bench", Duration::from_secs(10)).await?;
    }
    Ok(party)
}

/// Waits until something accepts connections on `addr`.
pub async fn wait_accepting(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if tokio::time::Instant::now() > deadline {
            bail!("nothing accepts on {addr} after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The KEDA HTTP Add-on interceptor, on the real control plane, routing `host` to `backend`
/// through an `HTTPScaledObject` (the object a KEDA user writes) whose Service has a ready
/// EndpointSlice pointing at the backend.
///
/// The interceptor dials `<service>.<namespace>:<port>` by name; outside a cluster there is no
/// cluster DNS, so it runs in its own mount namespace (`unshare`) whose `/etc/hosts` maps that
/// name to the backend's loopback address. The network namespace is the host's.
pub struct Keda {
    pub party: Party,
    client: kube::Client,
    ns: String,
    backend: SocketAddr,
    /// The interceptor's admin listener (`/queue`: its pending-request counts).
    admin: SocketAddr,
    host: String,
    _cluster: TestCluster,
}

impl Keda {
    /// Marks the backend's endpoint ready or not in its Service's EndpointSlice: with none
    /// ready, the interceptor holds requests (its readiness wait is unbounded by default).
    pub async fn set_ready(&self, ready: bool) -> anyhow::Result<()> {
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.ns);
        slices
            .patch(
                "bench-1",
                &PatchParams::default(),
                &Patch::Merge(json!({"endpoints": [{
                    "addresses": [self.backend.ip().to_string()],
                    "conditions": {"ready": ready}
                }]})),
            )
            .await?;
        Ok(())
    }

    /// Waits until the interceptor holds requests (it has seen the endpoint go unready): a
    /// probe request is not answered within 500 ms.
    pub async fn until_holding(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout(
                Duration::from_millis(500),
                get_status(self.party.addr, &self.host),
            )
            .await
            {
                Err(_) => return Ok(()),
                Ok(answer) => {
                    if tokio::time::Instant::now() > deadline {
                        bail!(
                            "the interceptor still answers ({answer:?}) {timeout:?} after the endpoint went unready"
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Requests the interceptor counts as pending (held or in flight), summed over its routes,
    /// from its admin API's `/queue` (what KEDA's scaler reads).
    pub async fn pending(&self) -> anyhow::Result<u64> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.admin).await?;
        s.write_all(b"GET /queue HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let counts: serde_json::Value =
            serde_json::from_str(body.trim()).with_context(|| format!("/queue said {body:?}"))?;
        Ok(counts
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, c)| c["Concurrency"].as_u64())
            .sum())
    }
}

pub async fn keda(
    interceptor: &Path,
    crds: &Path,
    backend: SocketAddr,
    host: &str,
    cpus: &str,
    control_plane_cpus: &str,
) -> anyhow::Result<Keda> {
    let cluster = TestCluster::start(rouse_testcluster::Options::default())?;
    // The control plane's background work (etcd compaction, controllers' resyncs) must not land
    // on the measured CPU, for any party.
    for pid in cluster.pids() {
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", control_plane_cpus, &pid.to_string()])
            .stdout(Stdio::null())
            .status();
    }
    let client = cluster.client().await;
    // The add-on's CRDs, exactly as its release ships them.
    let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for entry in std::fs::read_dir(crds)? {
        let path = entry?.path();
        let crd: CustomResourceDefinition = serde_yaml::from_str(&std::fs::read_to_string(&path)?)
            .with_context(|| format!("parsing {}", path.display()))?;
        crd_api.create(&PostParams::default(), &crd).await?;
    }
    for name in [
        "httpscaledobjects.http.keda.sh",
        "interceptorroutes.http.keda.sh",
    ] {
        let api = crd_api.clone();
        rouse_testcluster::wait_until(
            &format!("CRD {name} established"),
            Duration::from_secs(30),
            || {
                let api = api.clone();
                async move {
                    api.get(name).await.ok().is_some_and(|c| {
                        c.status
                            .and_then(|s| s.conditions)
                            .unwrap_or_default()
                            .iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    })
                }
            },
        )
        .await?;
    }
    let ns = cluster.namespace("bench").await;
    let port = backend.port();
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "bench"},
                "spec": {"ports": [{"name": "http", "port": port, "targetPort": port}]}
            }))?,
        )
        .await?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
    slices
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "bench-1", "labels": {
                    "kubernetes.io/service-name": "bench",
                    "endpointslice.kubernetes.io/managed-by": "rouse-bench"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [backend.ip().to_string()], "conditions": {"ready": true}}],
                "ports": [{"name": "http", "port": port, "protocol": "TCP"}]
            }))?,
        )
        .await?;
    let gvk = GroupVersionKind::gvk("http.keda.sh", "v1alpha1", "HTTPScaledObject");
    let hso: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &ApiResource::from_gvk(&gvk));
    hso.create(
        &PostParams::default(),
        &serde_json::from_value(json!({
            "apiVersion": "http.keda.sh/v1alpha1",
            "kind": "HTTPScaledObject",
            "metadata": {"name": "bench"},
            "spec": {
                "hosts": [host],
                "scaleTargetRef": {"name": "bench", "kind": "Deployment", "apiVersion": "apps/v1",
                                   "service": "bench", "port": port},
                "replicas": {"min": 1, "max": 1}
            }
        }))?,
    )
    .await?;

    let dir = TempDir::new("keda")?;
    let hosts = dir.0.join("hosts");
    std::fs::write(
        &hosts,
        format!("127.0.0.1 localhost\n{} bench.{ns}\n", backend.ip()),
    )?;
    let (proxy, admin, metrics) = (
        rouse_e2e::free_addr(),
        rouse_e2e::free_addr(),
        rouse_e2e::free_addr(),
    );
    let script = format!(
        "mount --bind {} /etc/hosts && exec {}",
        hosts.display(),
        interceptor.display()
    );
    let log = std::fs::File::create(dir.0.join("interceptor.log"))?;
    let child = tokio::process::Command::new("taskset")
        .args([
            "-c",
            cpus,
            "unshare",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
        ])
        .arg(&script)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("KEDA_HTTP_PROXY_PORT", proxy.port().to_string())
        .env("KEDA_HTTP_ADMIN_PORT", admin.port().to_string())
        .env("OTEL_PROM_EXPORTER_PORT", metrics.port().to_string())
        .env("KEDA_HTTP_WATCH_NAMESPACE", &ns)
        .env("GOMAXPROCS", "1")
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting the KEDA interceptor under unshare")?;
    let pid = child.id().context("interceptor pid")?;
    // Listens on 127.0.0.1 (build-tools.sh patches the hard-coded 0.0.0.0).
    let addr: SocketAddr = ([127, 0, 0, 1], proxy.port()).into();
    if let Err(e) = wait_serving(addr, host, Duration::from_secs(60)).await {
        let log = std::fs::read_to_string(dir.0.join("interceptor.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        bail!(
            "{e}; interceptor log tail:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(Keda {
        party: Party {
            name: "keda",
            addr,
            child: Some(child),
            pids: vec![pid],
            _dir: Some(dir),
        },
        client,
        ns,
        backend,
        admin: ([127, 0, 0, 1], admin.port()).into(),
        host: host.to_string(),
        _cluster: cluster,
    })
}

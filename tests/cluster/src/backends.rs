//! Stand-in for the kubelet's container runtime: for every Ready pod, a real HTTP server on
//! `podIP:containerPort` that answers with the pod's name; stopped when the pod stops being
//! Ready or goes away. Everything above this (Deployment → ReplicaSet → Pod → EndpointSlice) is
//! upstream Kubernetes.
//!
//! Pod annotations change a backend's behaviour while it runs:
//! - `rouse.dev/test-delay-ms: "250"`: wait before answering;
//! - `rouse.dev/test-status: "503"`: answer with this status.
//!
//! Each answer names the pod (`x-pod-name`, and the body) and the HTTP version the request came
//! in (HTTP/1.1 or h2c, both served on every port). A gRPC request (`application/grpc`) gets a
//! unary gRPC answer: the pod's name as the message, `grpc-status: 0` in trailers.
//!
//! Every `POST` a backend answers is recorded ([`posts`]): tests check what was delivered.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{Either, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tokio::task::JoinHandle;

/// Port served when a container declares none.
pub const DEFAULT_PORT: u16 = 8080;
pub const DELAY_ANNOTATION: &str = "rouse.dev/test-delay-ms";
pub const STATUS_ANNOTATION: &str = "rouse.dev/test-status";
/// Response header: the HTTP version the request reached the backend with (`HTTP/1.1`,
/// `HTTP/2.0`), so a test sees what the proxy spoke to the pod.
pub const HTTP_VERSION_HEADER: &str = "x-backend-http-version";

#[derive(Clone, Default)]
struct Behaviour {
    delay: Duration,
    status: u16,
}

struct Running {
    addrs: Vec<SocketAddr>,
    behaviour: Arc<RwLock<Behaviour>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn behaviour(pod: &Pod) -> Behaviour {
    let a = pod.annotations();
    Behaviour {
        delay: Duration::from_millis(
            a.get(DELAY_ANNOTATION)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        ),
        status: a
            .get(STATUS_ANNOTATION)
            .and_then(|v| v.parse().ok())
            .unwrap_or(200),
    }
}

/// One `POST` a backend answered (with a 2xx or not).
#[derive(Debug, Clone)]
pub struct Post {
    pub namespace: String,
    pub pod: String,
    pub status: u16,
    /// Path and query.
    pub target: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

static POSTS: std::sync::Mutex<Vec<Post>> = std::sync::Mutex::new(Vec::new());

/// The `POST`s answered so far by pods of `namespace` whose name starts with `pod_prefix`.
pub fn posts(namespace: &str, pod_prefix: &str) -> Vec<Post> {
    POSTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|p| p.namespace == namespace && p.pod.starts_with(pod_prefix))
        .cloned()
        .collect()
}

/// The pod IP range this supervisor serves (KWOK's `--cidr`); nothing outside it is bound, so a
/// host-network pod (node IP 127.0.0.1) never takes a host port.
#[derive(Clone, Copy, Debug)]
pub struct PodRange {
    base: u32,
    mask: u32,
}

impl PodRange {
    /// Parses `a.b.c.d/len` (IPv4 only, as KWOK is configured here).
    pub fn parse(cidr: &str) -> Option<PodRange> {
        let (ip, len) = cidr.split_once('/')?;
        let ip: std::net::Ipv4Addr = ip.parse().ok()?;
        let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        Some(PodRange {
            base: u32::from(ip) & mask,
            mask,
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        matches!(ip, IpAddr::V4(v4) if u32::from(v4) & self.mask == self.base)
    }
}

/// The addresses a Ready pod should be served on, or none.
fn wanted(pod: &Pod, range: PodRange) -> Vec<SocketAddr> {
    if pod.metadata.deletion_timestamp.is_some() {
        return vec![];
    }
    let Some(status) = &pod.status else {
        return vec![];
    };
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let Some(ip) = status
        .pod_ip
        .as_deref()
        .and_then(|ip| ip.parse::<IpAddr>().ok())
    else {
        return vec![];
    };
    // Only ever serve (and so only ever invite traffic to) loopback, inside the pod range.
    if !ready || !ip.is_loopback() || !range.contains(ip) {
        return vec![];
    }
    let mut ports: Vec<u16> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect();
    if ports.is_empty() {
        ports.push(DEFAULT_PORT);
    }
    ports.sort_unstable();
    ports.dedup();
    ports.into_iter().map(|p| SocketAddr::new(ip, p)).collect()
}

async fn serve(
    listener: tokio::net::TcpListener,
    namespace: String,
    name: String,
    behaviour: Arc<RwLock<Behaviour>>,
) {
    // Connections belong to this task: when the pod goes away and the task is aborted, the set
    // drops and aborts them, so no kept-alive connection keeps answering for a dead pod.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        let (name, behaviour) = (name.clone(), behaviour.clone());
        let namespace = namespace.clone();
        connections.spawn(async move {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let b = behaviour.read().map(|b| b.clone()).unwrap_or_default();
                let name = name.clone();
                let namespace = namespace.clone();
                async move {
                    tokio::time::sleep(b.delay).await;
                    let version = format!("{:?}", req.version());
                    let grpc = is_grpc(&req);
                    if req.method() == http::Method::POST {
                        use http_body_util::BodyExt;
                        let (head, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|c| c.to_bytes())
                            .unwrap_or_default();
                        POSTS.lock().unwrap_or_else(|p| p.into_inner()).push(Post {
                            namespace,
                            pod: name.clone(),
                            status: b.status,
                            target: head
                                .uri
                                .path_and_query()
                                .map_or("/", |p| p.as_str())
                                .to_string(),
                            headers: head.headers,
                            body,
                        });
                    }
                    let resp = http::Response::builder()
                        .status(b.status)
                        .header("x-pod-name", &name)
                        .header(HTTP_VERSION_HEADER, version);
                    let resp = if grpc {
                        resp.header(http::header::CONTENT_TYPE, "application/grpc")
                            .body(Either::Right(grpc_reply(&name)))
                    } else {
                        resp.body(Either::Left(Full::new(Bytes::from(format!("{name}\n")))))
                    };
                    Ok::<_, Infallible>(
                        resp.unwrap_or_else(|_| http::Response::new(Either::Left(Full::default()))),
                    )
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// A gRPC request (`application/grpc`, over h2): answered as a unary gRPC call would be.
fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

type Frames = futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>;

/// A unary gRPC answer: one length-prefixed message (the pod's name), then the trailers a gRPC
/// client needs to see the call succeed (`grpc-status: 0`) and one of the backend's own
/// (`x-backend-trailer`: the pod's name), so a test proves trailers crossed the proxy.
fn grpc_reply(name: &str) -> StreamBody<Frames> {
    let mut message = Vec::with_capacity(5 + name.len());
    message.push(0); // not compressed
    message.extend_from_slice(&u32::try_from(name.len()).unwrap_or(0).to_be_bytes());
    message.extend_from_slice(name.as_bytes());
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    if let Ok(v) = http::HeaderValue::from_str(name) {
        trailers.insert("x-backend-trailer", v);
    }
    StreamBody::new(futures::stream::iter(vec![
        Ok(Frame::data(Bytes::from(message))),
        Ok(Frame::trailers(trailers)),
    ]))
}

async fn start(pod: &Pod, addrs: Vec<SocketAddr>) -> Option<Running> {
    let name = pod.name_any();
    let mut running = Running {
        addrs: addrs.clone(),
        behaviour: Arc::new(RwLock::new(behaviour(pod))),
        tasks: Vec::new(),
    };
    for addr in &addrs {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => running.tasks.push(tokio::spawn(serve(
                l,
                pod.namespace().unwrap_or_default(),
                name.clone(),
                running.behaviour.clone(),
            ))),
            Err(e) => {
                // Dropping `running` aborts what already started; the next resync retries.
                eprintln!("[testcluster] pod {name}: cannot serve {addr} yet: {e}");
                return None;
            }
        }
    }
    Some(running)
}

/// How often pods whose backend could not start (address still in use) are retried.
const RESYNC: Duration = Duration::from_millis(250);

/// Runs until the task is aborted: keeps one backend per Ready pod in `range`, cluster-wide.
pub async fn run(client: Client, range: PodRange) {
    let pods: Api<Pod> = Api::all(client);
    let mut running: HashMap<String, Running> = HashMap::new();
    // Latest state of every pod, for retrying backends that failed to bind.
    let mut known: HashMap<String, Pod> = HashMap::new();
    let mut init: Option<HashMap<String, Pod>> = None;
    let mut stream = watcher::watcher(pods, watcher::Config::default()).boxed();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        let event = tokio::select! {
            e = stream.next() => match e {
                Some(e) => e,
                None => return,
            },
            _ = resync.tick() => {
                for (k, pod) in &known {
                    if !running.contains_key(k) && !wanted(pod, range).is_empty() {
                        reconcile(&mut running, pod, range).await;
                    }
                }
                continue;
            }
        };
        match event {
            Ok(Event::Apply(pod)) => {
                reconcile(&mut running, &pod, range).await;
                known.insert(key(&pod), pod);
            }
            Ok(Event::Delete(pod)) => {
                running.remove(&key(&pod));
                known.remove(&key(&pod));
            }
            Ok(Event::Init) => init = Some(HashMap::new()),
            Ok(Event::InitApply(pod)) => {
                if let Some(seen) = init.as_mut() {
                    seen.insert(key(&pod), pod);
                }
            }
            Ok(Event::InitDone) => {
                // A relist (first start or after a 410): reconcile against the full set.
                let seen = init.take().unwrap_or_default();
                running.retain(|k, _| seen.contains_key(k));
                for pod in seen.values() {
                    reconcile(&mut running, pod, range).await;
                }
                known = seen;
            }
            Err(e) => {
                if crate::procs::EXITING.load(std::sync::atomic::Ordering::Acquire) {
                    return;
                }
                eprintln!("[testcluster] pod watch: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn key(pod: &Pod) -> String {
    pod.uid()
        .unwrap_or_else(|| format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()))
}

async fn reconcile(running: &mut HashMap<String, Running>, pod: &Pod, range: PodRange) {
    let k = key(pod);
    let addrs = wanted(pod, range);
    if addrs.is_empty() {
        running.remove(&k);
        return;
    }
    if let Some(r) = running.get(&k) {
        if r.addrs == addrs {
            if let Ok(mut b) = r.behaviour.write() {
                *b = behaviour(pod);
            }
            return;
        }
        running.remove(&k);
        // Let the aborted listener release its address before binding it again.
        tokio::task::yield_now().await;
    }
    if let Some(r) = start(pod, addrs).await {
        running.insert(k, r);
    }
}

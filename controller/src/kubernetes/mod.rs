//! The Kubernetes platform of the controller (`rouse-controller`): demand from every proxy
//! replica ([`demand`]), leader election ([`lease`]), the `/scale` patcher ([`scaler`]), the
//! object watcher that runs scaling loops and writes status ([`reconcile`]), and KEDA's
//! external-push scaler API ([`external_scaler`]).

pub mod admin;
pub mod demand;
pub mod external_scaler;
pub mod lease;
pub mod policy;
pub mod reconcile;
pub mod scaler;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::telemetry::ControllerMetrics;
use demand::Aggregate;

/// Which namespaces to watch: every one (needs cluster-wide read) or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Namespaces(Vec<String>),
}

impl Scope {
    /// `""` = all namespaces; otherwise a comma-separated list.
    pub fn parse(raw: &str) -> Scope {
        let list: Vec<String> = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if list.is_empty() {
            Scope::All
        } else {
            Scope::Namespaces(list)
        }
    }

    /// One `Api` per watched namespace (or one cluster-wide).
    pub fn apis<K>(&self, client: &Client) -> Vec<Api<K>>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match self {
            Scope::All => vec![Api::all(client.clone())],
            Scope::Namespaces(list) => list
                .iter()
                .map(|ns| Api::namespaced(client.clone(), ns))
                .collect(),
        }
    }
}

/// The events of a set of reflectors (one per watched namespace).
pub type WatchEvents<K> =
    futures::stream::BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// Watches `K` in `scope`: one reflector per namespace (or one cluster-wide), their events
/// merged. Used by the proxy (routes) and the controller (objects, Services, HPAs).
pub fn watch_all<K>(scope: &Scope, client: &Client) -> (Vec<Store<K>>, WatchEvents<K>)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let mut stores = Vec::new();
    let mut streams = Vec::new();
    for api in scope.apis::<K>(client) {
        let (store, writer) = reflector::store();
        stores.push(store);
        streams.push(
            reflector::reflector(writer, watcher(api, watcher::Config::default()))
                .default_backoff()
                .boxed(),
        );
    }
    (stores, futures::stream::select_all(streams).boxed())
}

/// Whether every store has seen its first full list (before that, "empty" means "not known
/// yet", not "none").
pub fn all_ready<K>(stores: &[Store<K>]) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    stores
        .iter()
        .all(|s| futures::FutureExt::now_or_never(s.wait_until_ready()).is_some())
}

/// Where the proxy replicas are.
#[derive(Debug, Clone)]
pub enum Proxies {
    /// Every endpoint of this Service's EndpointSlices, on the port named `port_name` (or the
    /// only port). With `publishNotReadyAddresses`, draining replicas stay listed while they
    /// still hold requests.
    Service {
        namespace: String,
        name: String,
        port_name: String,
    },
    /// A fixed list (out-of-cluster development).
    Static(Vec<SocketAddr>),
}

/// Everything `rouse-controller` needs.
#[derive(Debug, Clone)]
pub struct Options {
    pub scope: Scope,
    pub proxies: Proxies,
    pub lease: lease::LeaseConfig,
    /// How often proxies send full demand snapshots (wakes come at once regardless).
    pub report_interval: Duration,
    /// Autoscaling tick.
    pub tick: Duration,
}

/// The addresses of the proxy replicas listed in `slices`.
pub fn proxy_addresses(slices: &[Arc<EndpointSlice>], port_name: &str) -> HashSet<SocketAddr> {
    let mut out = HashSet::new();
    for slice in slices {
        let ports = slice.ports.as_deref().unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| p.name.as_deref() == Some(port_name))
            .or(if ports.len() == 1 {
                ports.first()
            } else {
                None
            })
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok());
        let Some(port) = port else { continue };
        // Every listed replica counts, ready or not: a draining proxy (terminating, not
        // serving) still holds and forwards requests until it exits and leaves the slice.
        for ep in &slice.endpoints {
            if let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) {
                out.insert(SocketAddr::new(ip, port));
            }
        }
    }
    out
}

/// Keeps one demand stream per proxy replica, following the replica set.
pub async fn follow_proxies(
    client: Client,
    proxies: Proxies,
    aggregate: Arc<Aggregate>,
    interval: Duration,
) {
    let mut tasks: HashMap<SocketAddr, JoinHandle<()>> = HashMap::new();
    let apply = |present: HashSet<SocketAddr>, tasks: &mut HashMap<SocketAddr, JoinHandle<()>>| {
        aggregate.retain_proxies(&present);
        tasks.retain(|addr, t| {
            let keep = present.contains(addr);
            if !keep {
                tracing::info!(proxy = %addr, "Proxy replica gone; its demand no longer counts.");
                t.abort();
            }
            keep
        });
        for addr in present {
            tasks
                .entry(addr)
                .or_insert_with(|| tokio::spawn(demand::follow(aggregate.clone(), addr, interval)));
        }
    };
    match proxies {
        Proxies::Static(list) => {
            apply(list.into_iter().collect(), &mut tasks);
            futures::future::pending::<()>().await;
        }
        Proxies::Service {
            namespace,
            name,
            port_name,
        } => {
            let api: Api<EndpointSlice> = Api::namespaced(client, &namespace);
            let (store, writer): (Store<EndpointSlice>, _) = reflector::store();
            let mut events = reflector::reflector(
                writer,
                watcher(
                    api,
                    watcher::Config::default()
                        .labels(&format!("kubernetes.io/service-name={name}")),
                ),
            )
            .default_backoff()
            .boxed();
            while let Some(e) = events.next().await {
                match e {
                    Err(e) => tracing::warn!(error = %e, "Proxy discovery watch failed; retrying."),
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                    Ok(_) => apply(proxy_addresses(&store.state(), &port_name), &mut tasks),
                }
            }
        }
    }
}

/// Runs the controller until `stop` turns true; returns after releasing the Lease.
pub async fn run(
    client: Client,
    opts: Options,
    metrics: ControllerMetrics,
    aggregate: Arc<Aggregate>,
    stop: watch::Receiver<bool>,
) {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "rouse-controller".into(),
            instance: Some(opts.lease.identity.clone()),
        },
    );
    let scaler = Arc::new(scaler::KubeScaler::new(client.clone(), recorder.clone()));
    tokio::spawn(follow_proxies(
        client.clone(),
        opts.proxies.clone(),
        aggregate.clone(),
        opts.report_interval,
    ));
    let (leader_tx, leader_rx) = watch::channel(false);
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), &opts.lease.namespace);
    let campaign = tokio::spawn(lease::campaign(
        leases,
        opts.lease.clone(),
        leader_tx,
        stop.clone(),
    ));
    let reconciler = reconcile::Reconciler {
        client,
        scope: opts.scope.clone(),
        scaler,
        aggregate,
        metrics,
        recorder,
        tick: opts.tick,
    };
    reconciler.run(leader_rx, stop).await;
    let _ = campaign.await;
}

//! Where the proxy replicas are, and one demand stream per replica that follows the set as
//! replicas come and go (the proxy admin Service's EndpointSlices, or a fixed list).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio::task::JoinHandle;

use crate::demand::{self, Aggregate};

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

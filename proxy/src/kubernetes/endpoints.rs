//! A target's ready endpoints on Kubernetes: its Service's EndpointSlices, selected by the
//! `kubernetes.io/service-name` label (never a cluster-wide dump), turned into pod addresses
//! the proxy dials directly (no kube-proxy hop).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use rouse_core::{Endpoint, Target, UpstreamProtocol};
use rouse_kube::all_ready;

/// Which Service port a route forwards to: KEDA's `port` (the Service port number) or
/// `portName`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortRef {
    Number(i32),
    Name(String),
}

/// Where one target's endpoints come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
    pub port: PortRef,
}

impl std::fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A ready endpoint: `(id, address)`; the id is the pod name when the slice names it.
pub type Ready = (String, SocketAddr);

/// What a target's Service gives the proxy: its ready endpoints and what they speak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub ready: Vec<Ready>,
    /// From the Service port's `appProtocol`; `None` when it names none (HTTP/1.1).
    pub protocol: Option<UpstreamProtocol>,
}

/// The upstream protocol a Service port's `appProtocol` asks for (Kubernetes' own
/// `kubernetes.io/h2c` and `kubernetes.io/ws`, IANA names, and the `grpc`/`http2` of meshes),
/// or why the proxy cannot speak it. Values it has no meaning for (another domain's) are left
/// to HTTP/1.1, as Kubernetes leaves them to the implementation.
pub fn app_protocol(value: Option<&str>) -> Result<Option<UpstreamProtocol>, String> {
    let Some(v) = value else {
        return Ok(None);
    };
    match v.to_ascii_lowercase().as_str() {
        "kubernetes.io/h2c" | "h2c" | "grpc" | "http2" => Ok(Some(UpstreamProtocol::H2c)),
        "https" | "kubernetes.io/wss" | "grpcs" | "tls" => Err(format!(
            "appProtocol {v:?} is not served: Rouse speaks cleartext HTTP/1.1 or h2c to apps \
             (use kubernetes.io/h2c, grpc or http)"
        )),
        _ => Ok(Some(UpstreamProtocol::Http1)),
    }
}

/// The ready endpoints for `svc`'s port, or why there can be none. Pure: unit-tested below.
///
/// EndpointSlice ports carry the *target* port under the Service port's name, so the Service
/// port is found first (by number or name) and its name picks the slice port.
pub fn resolve(
    svc: &ServiceRef,
    service: Option<&Service>,
    slices: &[Arc<EndpointSlice>],
) -> Result<Resolved, String> {
    let Some(service) = service else {
        return Err(format!("service \"{svc}\" not found"));
    };
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let port = ports.iter().find(|p| match &svc.port {
        PortRef::Number(n) => p.port == *n,
        PortRef::Name(name) => p.name.as_deref() == Some(name.as_str()),
    });
    let Some(port) = port else {
        let wanted = match &svc.port {
            PortRef::Number(n) => format!("port {n}"),
            PortRef::Name(name) => format!("port named {name:?}"),
        };
        return Err(format!("service \"{svc}\" has no {wanted}"));
    };
    let port_name = port.name.clone().unwrap_or_default();
    let protocol = app_protocol(port.app_protocol.as_deref())
        .map_err(|e| format!("service \"{svc}\" port {}: {e}", port.port))?;

    let mut ready = Vec::new();
    for slice in slices {
        if slice.address_type == "FQDN" {
            continue;
        }
        let Some(number) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.clone().unwrap_or_default() == port_name)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in &slice.endpoints {
            // `ready` unset means ready (the API's documented default).
            if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
                continue;
            };
            let addr = SocketAddr::new(ip, number);
            let id = ep
                .target_ref
                .as_ref()
                .and_then(|r| r.name.clone())
                .unwrap_or_else(|| addr.to_string());
            ready.push((id, addr));
        }
    }
    ready.sort_by_key(|(_, addr)| *addr);
    ready.dedup_by_key(|(_, addr)| *addr);
    Ok(Resolved { ready, protocol })
}

/// Publishes `ready` into `target`, keeping the existing [`Endpoint`] of an address that stays
/// (its in-flight count feeds balancing and the per-endpoint cap). No-op when nothing changed.
fn publish(target: &Target, Resolved { ready, protocol }: Resolved) {
    let current = target.endpoints();
    let same = current.endpoints.len() == ready.len()
        && current
            .endpoints
            .iter()
            .zip(&ready)
            .all(|(e, (_, addr))| e.addr == *addr && e.protocol == protocol);
    if same {
        return;
    }
    let existing: HashMap<SocketAddr, Arc<Endpoint>> = current
        .endpoints
        .iter()
        .map(|e| (e.addr, e.clone()))
        .collect();
    let endpoints = ready
        .into_iter()
        .map(|(id, addr)| {
            existing
                .get(&addr)
                .filter(|e| e.protocol == protocol)
                .cloned()
                .unwrap_or_else(|| Endpoint::speaking(id, addr, protocol))
        })
        .collect::<Vec<_>>();
    tracing::info!(target = %target.name, ready = endpoints.len(), "Endpoints changed.");
    target.set_endpoints(endpoints);
}

/// Keeps `target`'s endpoints in step with `svc` until aborted. Watches resume by themselves
/// (with backoff) after an API server outage; meanwhile the last published set stays.
pub async fn follow(client: Client, svc: ServiceRef, target: Arc<Target>) {
    let services: Api<Service> = Api::namespaced(client.clone(), &svc.namespace);
    let slices: Api<EndpointSlice> = Api::namespaced(client, &svc.namespace);
    let (service_store, service_writer) = reflector::store();
    let (slice_store, slice_writer) = reflector::store();
    let service_events = reflector::reflector(
        service_writer,
        watcher(
            services,
            watcher::Config::default().fields(&format!("metadata.name={}", svc.name)),
        ),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()))
    .boxed();
    let slice_events = reflector::reflector(
        slice_writer,
        watcher(
            slices,
            watcher::Config::default().labels(&format!("kubernetes.io/service-name={}", svc.name)),
        ),
    )
    .default_backoff()
    .map(|e| e.map(|_| ()))
    .boxed();
    let mut events = futures::stream::select(service_events, slice_events);
    let mut last_problem: Option<String> = None;
    while let Some(event) = events.next().await {
        if let Err(e) = event {
            tracing::warn!(service = %svc, error = %e, "Endpoint watch failed; retrying.");
            continue;
        }
        if !(all_ready(std::slice::from_ref(&service_store))
            && all_ready(std::slice::from_ref(&slice_store)))
        {
            continue;
        }
        let service = service_store.state().into_iter().next();
        match resolve(&svc, service.as_deref(), &slice_store.state()) {
            Ok(resolved) => {
                if last_problem.take().is_some() {
                    tracing::info!(service = %svc, "Target service is usable again.");
                }
                target.set_unavailable(None);
                publish(&target, resolved);
            }
            Err(problem) => {
                if last_problem.as_deref() != Some(problem.as_str()) {
                    tracing::warn!(target = %target.name, %problem, "Target has no endpoint source.");
                }
                target.set_unavailable(Some(problem.clone()));
                publish(
                    &target,
                    Resolved {
                        ready: Vec::new(),
                        protocol: None,
                    },
                );
                last_problem = Some(problem);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ObjectReference, ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{
        Endpoint as SliceEndpoint, EndpointConditions, EndpointPort,
    };

    fn service(ports: &[(Option<&str>, i32)]) -> Service {
        Service {
            spec: Some(ServiceSpec {
                ports: Some(
                    ports
                        .iter()
                        .map(|(name, port)| ServicePort {
                            name: name.map(str::to_string),
                            port: *port,
                            ..ServicePort::default()
                        })
                        .collect(),
                ),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    fn slice(ports: &[(Option<&str>, i32)], eps: &[(&str, Option<bool>)]) -> Arc<EndpointSlice> {
        Arc::new(EndpointSlice {
            address_type: "IPv4".into(),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port)| EndpointPort {
                        name: name.map(str::to_string),
                        port: Some(*port),
                        ..EndpointPort::default()
                    })
                    .collect(),
            ),
            endpoints: eps
                .iter()
                .map(|(ip, ready)| SliceEndpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: *ready,
                        ..EndpointConditions::default()
                    }),
                    target_ref: Some(ObjectReference {
                        name: Some(format!("pod-{ip}")),
                        ..ObjectReference::default()
                    }),
                    ..SliceEndpoint::default()
                })
                .collect(),
            ..EndpointSlice::default()
        })
    }

    fn svc_ref(port: PortRef) -> ServiceRef {
        ServiceRef {
            namespace: "ns".into(),
            name: "web".into(),
            port,
        }
    }

    #[test]
    fn service_port_number_picks_the_slice_port_by_name() {
        let s = service(&[(Some("http"), 80), (Some("metrics"), 9000)]);
        let slices = [slice(
            &[(Some("metrics"), 9100), (Some("http"), 8080)],
            &[
                ("10.0.0.2", Some(true)),
                ("10.0.0.1", None),
                ("10.0.0.3", Some(false)),
            ],
        )];
        let r = resolve(&svc_ref(PortRef::Number(80)), Some(&s), &slices).expect("ok");
        assert_eq!(
            r.protocol, None,
            "no appProtocol: the route decides (HTTP/1.1)"
        );
        let ready = r.ready;
        let addrs: Vec<String> = ready.iter().map(|(_, a)| a.to_string()).collect();
        assert_eq!(
            addrs,
            ["10.0.0.1:8080", "10.0.0.2:8080"],
            "unready skipped, sorted"
        );
        assert_eq!(ready[0].0, "pod-10.0.0.1");
        let by_name = resolve(&svc_ref(PortRef::Name("metrics".into())), Some(&s), &slices);
        assert_eq!(by_name.expect("ok").ready[0].1.port(), 9100);
    }

    #[test]
    fn unnamed_single_port_services_work() {
        let s = service(&[(None, 80)]);
        let slices = [slice(&[(None, 8080)], &[("10.0.0.1", Some(true))])];
        let r = resolve(&svc_ref(PortRef::Number(80)), Some(&s), &slices).expect("ok");
        assert_eq!(r.ready.len(), 1);
    }

    #[test]
    fn missing_service_or_port_is_named() {
        let err = resolve(&svc_ref(PortRef::Number(80)), None, &[]).expect_err("missing");
        assert_eq!(err, "service \"ns/web\" not found");
        let s = service(&[(Some("http"), 80)]);
        let err = resolve(&svc_ref(PortRef::Number(81)), Some(&s), &[]).expect_err("no port");
        assert_eq!(err, "service \"ns/web\" has no port 81");
    }

    /// `route_of` cannot know what a Service speaks; its port's `appProtocol` says, so an h2c or
    /// gRPC app is reached over h2c (it used to be HTTP/1.1 whatever the Service said), and one
    /// the proxy cannot speak (TLS) makes the target unavailable with a reason naming it.
    #[test]
    fn the_service_ports_app_protocol_picks_what_the_proxy_speaks() {
        for (value, want) in [
            ("kubernetes.io/h2c", Some(UpstreamProtocol::H2c)),
            ("grpc", Some(UpstreamProtocol::H2c)),
            ("HTTP2", Some(UpstreamProtocol::H2c)),
            ("http", Some(UpstreamProtocol::Http1)),
            ("kubernetes.io/ws", Some(UpstreamProtocol::Http1)),
            ("example.com/custom", Some(UpstreamProtocol::Http1)),
        ] {
            let mut s = service(&[(Some("web"), 80)]);
            if let Some(p) = s.spec.as_mut().and_then(|s| s.ports.as_mut()) {
                p[0].app_protocol = Some(value.into());
            }
            let slices = [slice(&[(Some("web"), 50051)], &[("10.0.0.1", Some(true))])];
            let r = resolve(&svc_ref(PortRef::Number(80)), Some(&s), &slices).expect(value);
            assert_eq!(r.protocol, want, "{value}");
            assert_eq!(r.ready.len(), 1, "{value}");
        }
        let mut s = service(&[(Some("web"), 443)]);
        if let Some(p) = s.spec.as_mut().and_then(|s| s.ports.as_mut()) {
            p[0].app_protocol = Some("https".into());
        }
        let err = resolve(&svc_ref(PortRef::Number(443)), Some(&s), &[]).expect_err("https");
        assert!(
            err.starts_with("service \"ns/web\" port 443: appProtocol \"https\" is not served"),
            "{err}"
        );
    }
}

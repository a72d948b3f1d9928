//! `EventSubscription`s on Kubernetes: every proxy replica serves every webhook on its own
//! listener, with the queue on NATS JetStream (shared by the replicas: an event acknowledged by
//! one is delivered by whichever takes it, once).
//!
//! - [`plan`] (pure) turns the watched objects and this replica's routes into one gateway
//!   configuration, or says per object why it is not served;
//! - [`EventSource::run`] watches the objects and each key Secret they name (one watch per
//!   Secret, by name), opens a new gateway when the configuration changes — the old one stops
//!   taking events and hands back what it had not started — and puts new keys in force at once
//!   when only a Secret changed (rotation without a restart);
//! - [`EventSource::reports`] is what the demand feed tells the controller per object (pending,
//!   dead-lettered, last handshake, Secret problems, or why it is not served).
//!
//! Key values are never logged: only Secret names and key counts.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use rouse_core::HostPattern;
use rouse_core::crd::{
    DeliveryBatching, DeliveryFormat, EventSchema, EventSubscription, EventSubscriptionSpec,
    subscription_name, subscription_path_claims,
};
use rouse_core::feed::EventsReport;
use rouse_eventgrid::config::{
    AuthConfig, Batching, DEFAULT_DEDUPE_WINDOW_SECS, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_PENDING,
    DeadLetter, DeadLetterStream, DeliveryConfig, EntraConfig, Format, GatewayConfig,
    JetstreamConfig, QueueConfig, RetryConfig, Schema, SubscriptionConfig, TargetConfig,
};
use rouse_eventgrid::{DemandTargets, Gateway};
use rouse_kube::{Scope, all_ready, watch_all};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::delivery_guard::DeliveryGuard;
use crate::event_gateway::{EventGateway, GatewaySlot, start_delivery};
use crate::state::ProxyState;

/// How often the plan is recomputed without an API event (routes change under it: a new
/// HTTPScaledObject gives a subscription its delivery host).
const REPLAN_EVERY: Duration = Duration::from_secs(1);

/// Why an object is not served when the proxy has no queue.
pub const NO_QUEUE: &str = "this proxy replica was started without --nats-url: EventSubscriptions need the JetStream queue";

/// A Secret, by namespace and name.
type SecretRef = (String, String);

/// One object the gateway serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    /// `namespace/name`, as reported to the controller.
    pub key: String,
    /// The gateway's subscription name ([`subscription_name`]).
    pub name: String,
    /// The key Secret, if any.
    pub secret: Option<SecretRef>,
}

/// What this replica should serve.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// The gateway's configuration (`None`: nothing to serve, or no queue).
    pub config: Option<GatewayConfig>,
    pub served: Vec<Served>,
    /// `(key, why not served)`.
    pub unserved: Vec<(String, String)>,
}

/// The `namespace/name` of an object.
fn key_of(o: &EventSubscription) -> String {
    format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
}

/// Turns the watched objects into a gateway configuration. `hosts` gives, per HTTPScaledObject
/// key, the route's host patterns (absent: no such route on this replica). Pure.
pub fn plan(
    objects: &[&EventSubscription],
    hosts: &HashMap<String, Vec<HostPattern>>,
    queue: Option<&JetstreamConfig>,
) -> Plan {
    let mut out = Plan::default();
    let claims = subscription_path_claims(objects);
    let mut subscriptions = Vec::new();
    let mut sorted: Vec<&&EventSubscription> = objects.iter().collect();
    sorted.sort_by_key(|o| key_of(o));
    for o in sorted {
        let key = key_of(o);
        let Some(queue) = queue else {
            out.unserved.push((key, NO_QUEUE.to_string()));
            continue;
        };
        if let Some(Err(older)) = claims.get(&key) {
            out.unserved.push((
                key,
                format!("spec.path {:?} is kept by the older {older}", o.spec.path),
            ));
            continue;
        }
        let ns = o.namespace().unwrap_or_default();
        let errors = o.spec.validate();
        if !errors.is_empty() {
            out.unserved
                .push((key, format!("invalid spec: {}", errors.join("; "))));
            continue;
        }
        let target_key = format!("{ns}/{}", o.spec.target.http_scaled_object);
        let host = delivery_host(&o.spec, hosts.get(&target_key), &target_key);
        let config = subscription_config(&ns, &o.name_any(), &o.spec, target_key, host, queue);
        let errors = config.validate_shape();
        if !errors.is_empty() {
            out.unserved
                .push((key, format!("invalid spec: {}", errors.join("; "))));
            continue;
        }
        out.served.push(Served {
            key,
            name: config.name.clone(),
            secret: o.spec.key_secret().map(|s| (ns.clone(), s.to_string())),
        });
        subscriptions.push(config);
    }
    if let Some(queue) = queue
        && !subscriptions.is_empty()
    {
        out.config = Some(GatewayConfig {
            // Unused with JetStream (dead letters go to a stream); never created.
            data_dir: std::env::temp_dir().join("rouse-events-unused"),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            queue: QueueConfig::Jetstream(queue.clone()),
            subscriptions,
        });
    }
    out
}

/// The `Host` deliveries carry: `spec.target.host`, else the route's first exact host, else
/// (a route for any host) `localhost`. A target that does not exist yet gets a name that routes
/// nowhere: its deliveries are retried until the object appears (the plan then changes).
fn delivery_host(
    spec: &EventSubscriptionSpec,
    route_hosts: Option<&Vec<HostPattern>>,
    target_key: &str,
) -> String {
    if let Some(h) = &spec.target.host {
        return h.clone();
    }
    match route_hosts {
        Some(patterns) if patterns.is_empty() => "localhost".into(),
        Some(patterns) => patterns
            .iter()
            .find_map(|p| match p {
                HostPattern::Exact(h) => Some(h.clone()),
                _ => None,
            })
            .unwrap_or_else(|| missing_host(target_key)),
        None => missing_host(target_key),
    }
}

fn missing_host(target_key: &str) -> String {
    format!("{}.target-not-found.invalid", target_key.replace('/', "."))
}

/// The gateway's configuration of one object (keys come later, from the Secret).
fn subscription_config(
    ns: &str,
    name: &str,
    spec: &EventSubscriptionSpec,
    target_key: String,
    host: String,
    queue: &JetstreamConfig,
) -> SubscriptionConfig {
    let d = spec.delivery.clone().unwrap_or_default();
    let r = d.retry.clone().unwrap_or_default();
    let (dd, dr) = (DeliveryConfig::default(), RetryConfig::default());
    let num =
        |v: Option<i64>, default: u64| v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default);
    let small =
        |v: Option<i32>, default: usize| v.and_then(|v| usize::try_from(v).ok()).unwrap_or(default);
    let auth = spec.auth.clone().unwrap_or_default();
    SubscriptionConfig {
        name: subscription_name(ns, name),
        path: spec.path.clone(),
        schema: match spec.schema {
            None | Some(EventSchema::Eventgrid) => Schema::Eventgrid,
            Some(EventSchema::Cloudevents) => Schema::Cloudevents,
            Some(EventSchema::Both) => Schema::Both,
        },
        auth: AuthConfig {
            keys: Vec::new(),
            key_header: auth.key_header,
            key_query: auth.key_query,
            entra: auth.entra.map(|e| EntraConfig {
                jwks_url: e.jwks_url,
                audience: e.audience,
                issuers: e.issuers,
                cache_secs: num(e.cache_seconds, 3600),
            }),
        },
        subscription_names: spec.subscription_names.clone(),
        allowed_origins: spec.allowed_origins.clone(),
        allowed_rate: spec.allowed_rate.and_then(|r| u32::try_from(r).ok()),
        target: TargetConfig {
            app: Some(target_key),
            host: Some(host),
            url: None,
            path: spec.target.path.clone().unwrap_or_else(|| "/".into()),
        },
        delivery: DeliveryConfig {
            format: match d.format {
                None | Some(DeliveryFormat::Eventgrid) => Format::Eventgrid,
                Some(DeliveryFormat::CloudeventsBinary) => Format::CloudeventsBinary,
                Some(DeliveryFormat::CloudeventsStructured) => Format::CloudeventsStructured,
            },
            batching: match d.batching {
                None | Some(DeliveryBatching::PerEvent) => Batching::PerEvent,
                Some(DeliveryBatching::PerBatch) => Batching::PerBatch,
            },
            max_events: small(d.max_events, dd.max_events),
            concurrency: small(d.concurrency, dd.concurrency),
            timeout_ms: num(d.timeout_ms, dd.timeout_ms),
            retry: RetryConfig {
                max_attempts: r
                    .max_attempts
                    .and_then(|v| u32::try_from(v).ok())
                    .unwrap_or(dr.max_attempts),
                initial_backoff_ms: num(r.initial_backoff_ms, dr.initial_backoff_ms),
                max_backoff_ms: num(r.max_backoff_ms, dr.max_backoff_ms),
                ttl_secs: num(r.ttl_seconds, dr.ttl_secs),
            },
        },
        dead_letter: Some(DeadLetter::Stream(DeadLetterStream {
            stream: spec
                .dead_letter
                .as_ref()
                .map(|d| d.stream.clone())
                .unwrap_or_else(|| format!("{}_DEAD", queue.stream)),
        })),
        dedupe_window_secs: num(spec.dedupe_window_seconds, DEFAULT_DEDUPE_WINDOW_SECS),
        max_pending: spec
            .max_pending
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or(DEFAULT_MAX_PENDING),
        forward_headers: spec
            .forward_headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        strict_extension_names: spec.strict_extension_names.unwrap_or(false),
    }
}

/// What was last decided, for the feed.
#[derive(Default)]
struct Reported {
    served: Vec<Served>,
    unserved: Vec<(String, String)>,
    /// Per Secret: its keys' problem, if any (`None` in the map = read and fine).
    secret_problems: HashMap<SecretRef, Option<String>>,
}

/// EventSubscriptions on this replica: the planner's state, the gateway slot it fills, and
/// what the demand feed reports.
pub struct EventSource {
    queue: Option<JetstreamConfig>,
    metrics: rouse_eventgrid::metrics::Metrics,
    pub slot: Arc<GatewaySlot>,
    reported: Mutex<Reported>,
}

/// A Secret's accepted keys, or why there are none.
type Keys = Result<Vec<String>, String>;

impl EventSource {
    pub fn new(queue: Option<JetstreamConfig>, metrics: rouse_eventgrid::metrics::Metrics) -> Self {
        EventSource {
            queue,
            metrics,
            slot: Arc::new(GatewaySlot::default()),
            reported: Mutex::default(),
        }
    }

    /// One report per object in scope (served or not).
    pub fn reports(&self) -> Vec<EventsReport> {
        let reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.slot.current();
        let mut out = Vec::with_capacity(reported.served.len() + reported.unserved.len());
        for s in &reported.served {
            let sub = current.as_ref().and_then(|ev| {
                ev.gateway
                    .subscriptions()
                    .iter()
                    .find(|x| x.config.name == s.name)
                    .cloned()
            });
            let secret_problem = s
                .secret
                .as_ref()
                .and_then(|r| reported.secret_problems.get(r).cloned().flatten());
            out.push(EventsReport {
                subscription: s.key.clone(),
                pending: sub.as_ref().map_or(0, |x| x.pending() as u64),
                dead_lettered: sub.as_ref().and_then(|x| x.dead_lettered()),
                handshake_ms: sub.as_ref().and_then(|x| x.last_handshake_ms()),
                secret_problem,
                problem: None,
            });
        }
        for (key, problem) in &reported.unserved {
            out.push(EventsReport {
                subscription: key.clone(),
                pending: 0,
                dead_lettered: None,
                handshake_ms: None,
                secret_problem: None,
                problem: Some(problem.clone()),
            });
        }
        out
    }

    /// Watches EventSubscriptions in `scope` and their key Secrets, and keeps the gateway in
    /// step, until the process exits. Watch failures are retried with backoff; meanwhile the
    /// gateway in force keeps serving.
    pub async fn run(
        self: Arc<Self>,
        client: Client,
        scope: Scope,
        state: Arc<ProxyState>,
        listen: SocketAddr,
    ) {
        let (stores, mut changes) = watch_all::<EventSubscription>(&scope, &client);
        let (keys_tx, mut keys_rx) = mpsc::unbounded_channel::<(SecretRef, Keys)>();
        let mut followers: HashMap<SecretRef, JoinHandle<()>> = HashMap::new();
        let mut keys: HashMap<SecretRef, Keys> = HashMap::new();
        let mut applied: Option<Plan> = None;
        let mut replan = tokio::time::interval(REPLAN_EVERY);
        loop {
            let mut keys_changed = false;
            tokio::select! {
                change = changes.next() => match change {
                    None => return,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "EventSubscription watch failed; the gateway keeps its configuration.");
                        continue;
                    }
                    Some(Ok(_)) => {}
                },
                Some((secret, k)) = keys_rx.recv() => {
                    log_keys(&secret, &k);
                    keys.insert(secret, k);
                    keys_changed = true;
                }
                _ = replan.tick() => {}
            }
            if !all_ready(&stores) {
                continue;
            }
            let all: Vec<Arc<EventSubscription>> = stores.iter().flat_map(Store::state).collect();
            let objects: Vec<&EventSubscription> = all.iter().map(AsRef::as_ref).collect();
            let hosts: HashMap<String, Vec<HostPattern>> = state
                .snapshot()
                .routes
                .values()
                .map(|r| (r.route.name.clone(), r.route.hosts.clone()))
                .collect();
            let next = plan(&objects, &hosts, self.queue.as_ref());

            // Secrets: one follower per referenced Secret.
            let wanted: HashSet<SecretRef> = next
                .served
                .iter()
                .filter_map(|s| s.secret.clone())
                .collect();
            followers.retain(|r, task| {
                let keep = wanted.contains(r);
                if !keep {
                    task.abort();
                    keys.remove(r);
                }
                keep
            });
            for r in &wanted {
                followers.entry(r.clone()).or_insert_with(|| {
                    tokio::spawn(follow_secret(client.clone(), r.clone(), keys_tx.clone()))
                });
            }

            let config_changed = applied.as_ref().map(|p| &p.config) != Some(&next.config);
            // A gateway that cannot be opened is tried again at the next replan; meanwhile the
            // previous one keeps serving.
            if config_changed && !self.replace(&next, &state, listen).await {
                continue;
            }
            if config_changed || keys_changed {
                self.apply_keys(&next, &keys);
            }
            if applied.as_ref() != Some(&next) || keys_changed {
                let mut reported = self.reported.lock().unwrap_or_else(|p| p.into_inner());
                reported.served = next.served.clone();
                reported.unserved = next.unserved.clone();
                reported.secret_problems = keys
                    .iter()
                    .map(|(r, k)| (r.clone(), k.as_ref().err().cloned()))
                    .collect();
                drop(reported);
                for (key, problem) in &next.unserved {
                    if applied
                        .as_ref()
                        .is_none_or(|p| !p.unserved.contains(&(key.clone(), problem.clone())))
                    {
                        tracing::warn!(subscription = %key, %problem, "EventSubscription not served.");
                    }
                }
                applied = Some(next);
            }
        }
    }

    /// Opens the gateway of `plan` and puts it in force; the one it replaces stops. `false`:
    /// it could not be opened, and the previous one stays.
    async fn replace(&self, plan: &Plan, state: &Arc<ProxyState>, listen: SocketAddr) -> bool {
        let next = match &plan.config {
            None => None,
            Some(config) => {
                let targets: DemandTargets = config
                    .subscriptions
                    .iter()
                    .filter_map(|s| s.target.app.clone())
                    .map(|app| {
                        let target = state.target(&app);
                        (app, target)
                    })
                    .collect();
                let gateway = match Gateway::open(config, self.metrics.clone(), targets) {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::error!(error = %e, "Event gateway could not be opened; the previous one stays.");
                        return false;
                    }
                };
                let guard = DeliveryGuard::new(
                    config
                        .subscriptions
                        .iter()
                        .filter_map(|s| Some((s.target.app.clone()?, s.target.path.clone()))),
                );
                Some(EventGateway {
                    gateway,
                    guard: Arc::new(guard),
                })
            }
        };
        if let (Some(ev), Some(old)) = (&next, self.slot.current()) {
            for sub in ev.gateway.subscriptions() {
                if let Some(before) = old
                    .gateway
                    .subscriptions()
                    .iter()
                    .find(|o| o.config.name == sub.config.name)
                {
                    sub.carry_handshake(before);
                }
            }
        }
        if let Some(ev) = &next {
            start_delivery(ev, listen, &HashMap::new());
        }
        let apps = |ev: &EventGateway| -> HashSet<String> {
            ev.gateway
                .subscriptions()
                .iter()
                .filter_map(|s| s.config.target.app.clone())
                .collect()
        };
        let kept = next.as_ref().map(apps).unwrap_or_default();
        let count = next
            .as_ref()
            .map_or(0, |ev| ev.gateway.subscriptions().len());
        let old = self.slot.replace(next);
        tracing::info!(
            subscriptions = count,
            "Event gateway configuration in force."
        );
        if let Some(old) = old {
            old.gateway.close().await;
            // Targets no subscription delivers to any more: their queued demand is gone.
            for app in apps(&old).difference(&kept) {
                state.target(app).demand.set_queued(0);
            }
        }
        true
    }

    /// Puts each served subscription's keys in force (those without a Secret need none).
    fn apply_keys(&self, plan: &Plan, keys: &HashMap<SecretRef, Keys>) {
        let Some(ev) = self.slot.current() else {
            return;
        };
        for s in &plan.served {
            let Some(secret) = &s.secret else { continue };
            let Some(sub) = ev
                .gateway
                .subscriptions()
                .iter()
                .find(|x| x.config.name == s.name)
            else {
                continue;
            };
            let k = keys.get(secret).cloned().unwrap_or_else(|| {
                Err(format!("secret \"{}/{}\" not read yet", secret.0, secret.1))
            });
            sub.set_keys(k);
        }
    }
}

fn log_keys(secret: &SecretRef, keys: &Keys) {
    match keys {
        Ok(k) => {
            tracing::info!(secret = %format!("{}/{}", secret.0, secret.1), keys = k.len(), "Webhook keys loaded.")
        }
        Err(problem) => {
            tracing::warn!(secret = %format!("{}/{}", secret.0, secret.1), %problem, "Webhook keys unavailable.")
        }
    }
}

/// The accepted keys of a Secret: every data entry that is non-empty UTF-8 (surrounding
/// whitespace removed: a key pasted with a newline still matches). Pure.
pub fn secret_keys(
    secret: &SecretRef,
    data: Option<&BTreeMap<String, k8s_openapi::ByteString>>,
) -> Keys {
    let keys: Vec<String> = data
        .into_iter()
        .flatten()
        .filter_map(|(_, v)| std::str::from_utf8(&v.0).ok())
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if keys.is_empty() {
        Err(format!(
            "secret \"{}/{}\" has no non-empty entry",
            secret.0, secret.1
        ))
    } else {
        Ok(keys)
    }
}

/// Follows one Secret (by name) and sends its keys on every change, until aborted.
async fn follow_secret(
    client: Client,
    secret: SecretRef,
    tx: mpsc::UnboundedSender<(SecretRef, Keys)>,
) {
    let api: Api<Secret> = Api::namespaced(client, &secret.0);
    let (store, writer) = reflector::store();
    let mut events = reflector::reflector(
        writer,
        watcher(
            api,
            watcher::Config::default().fields(&format!("metadata.name={}", secret.1)),
        ),
    )
    .default_backoff()
    .boxed();
    let mut last: Option<Keys> = None;
    while let Some(event) = events.next().await {
        let keys = match event {
            // An API server outage must not take keys away: the last ones read stay in force.
            Err(_) if matches!(last, Some(Ok(_))) => continue,
            Err(e) => Err(format!(
                "secret \"{}/{}\" cannot be read: {e}",
                secret.0, secret.1
            )),
            Ok(_) if !all_ready(std::slice::from_ref(&store)) => continue,
            Ok(_) => match store.state().into_iter().next() {
                None => Err(format!("secret \"{}/{}\" not found", secret.0, secret.1)),
                Some(s) => secret_keys(&secret, s.data.as_ref()),
            },
        };
        if last.as_ref() != Some(&keys) {
            last = Some(keys.clone());
            if tx.send((secret.clone(), keys)).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;

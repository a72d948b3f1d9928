//! Where a Kubernetes scale decision is carried out: watches `HTTPScaledObject`s and
//! `InterceptorRoute`s (rouse.dev, and KEDA's http.keda.sh ones when enabled), target Services
//! and HPAs; while leader, runs one autoscaling loop per healthy object (the policy is
//! [`rouse_scale`], fed by the proxies' summed demand) and writes each object's status and
//! Events. A standby watches and aggregates too, so it takes over without a cold cache.
//!
//! One pass runs on every watch event and every [`RESYNC`]: `assess` each object from the
//! watched state (pure), keep the scaling `loops` in step with it (leader only), then write its
//! `status` (leader only; what to write is decided, purely, in `conditions`).
//!
//! The `HTTPScaledObject` watch ([`ObjectWatch`]) is shared: this reconciler drives it, and the
//! EventSubscription reconciler ([`crate::subscriptions`]) reads its stores.

mod assess;
mod conditions;
mod interceptor;
mod loops;
mod status;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use rouse_core::crd::{
    HTTPScaledObject, HTTPScaledObjectStatus, InterceptorRoute, KedaInterceptorRoute,
};
use rouse_kube::{Scope, WatchEvents, all_ready, watch_all};
use rouse_scale::ScaleMetrics;
use tokio::sync::watch;

use crate::demand::Aggregate;
use crate::error::{Error, Result};
use crate::scaler::KubeScaler;
use assess::{Assessment, World, assess};
use loops::Loops;

/// How often everything is re-assessed even without a watch event (status of replicas).
const RESYNC: Duration = Duration::from_secs(1);

/// Everything the reconciler needs (kube-rs's `Context`).
pub struct Reconciler {
    pub client: Client,
    pub scope: Scope,
    pub scaler: Arc<KubeScaler>,
    pub aggregate: Arc<Aggregate>,
    pub metrics: ScaleMetrics,
    pub recorder: Recorder,
    /// Autoscaling tick (decisions happen at once on wakes regardless).
    pub tick: Duration,
    /// Also watch, answer for and write the status of KEDA's `http.keda.sh/v1beta1`
    /// InterceptorRoutes (`--keda-interceptor-routes`; needs KEDA's CRD).
    pub keda_interceptor_routes: bool,
}

/// What the reconciler keeps from one pass to the next.
#[derive(Default)]
struct State {
    /// The scaling loops running on this replica, by object key.
    running: Loops,
    /// The status last written (or found unchanged) per object (`key#kind`).
    reported: HashMap<String, HTTPScaledObjectStatus>,
}

impl Reconciler {
    /// Runs until `stop`; acts (scales, writes status) only while `leader` is true. Drives
    /// `objects` (its stores update as this loop polls its events).
    pub async fn run(
        self,
        objects: ObjectWatch,
        mut leader: watch::Receiver<bool>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut watches = Watches::start(
            &self.scope,
            &self.client,
            objects,
            self.keda_interceptor_routes,
        );
        let mut state = State::default();
        let mut resync = tokio::time::interval(RESYNC);
        loop {
            tokio::select! {
                e = watches.events.next() => match e {
                    Some(Err(e)) => {
                        let kind = e.metric_label();
                        tracing::warn!(error = %e, kind, "Watch failed; retrying with backoff.");
                        if !watches.mark_unavailable(&e) {
                            continue;
                        }
                    }
                    Some(Ok(())) => {}
                    None => return,
                },
                _ = resync.tick() => {}
                _ = leader.changed() => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                loops::stop_all(&mut state.running);
                return;
            }
            if let Some(world) = watches.snapshot() {
                self.pass(&world, &leader, &mut state).await;
            }
        }
    }

    /// One pass over the watched state: assess → KEDA targets → loops → status.
    async fn pass(&self, world: &World, leader: &watch::Receiver<bool>, state: &mut State) {
        let assessments = assess(world);
        self.publish_targets(&assessments);
        let is_leader = *leader.borrow();
        self.stop_stale_loops(&mut state.running, &assessments, is_leader);
        if is_leader {
            self.start_loops(&mut state.running, &assessments, leader);
            self.report_all(world, &assessments, &mut state.reported)
                .await;
        } else {
            // Another replica writes status meanwhile: compare against the objects again when
            // leading next time.
            state.reported.clear();
        }
        state
            .reported
            .retain(|slot, _| assessments.contains_key(slot.split('#').next().unwrap_or(slot)));
    }

    /// Every replica, leader or not, answers KEDA's external scaler: it needs each valid
    /// object's target.
    fn publish_targets(&self, assessments: &HashMap<String, Assessment>) {
        for (key, a) in assessments {
            // Objects another kind of the same name replaces are filed under another key.
            if *key != a.key {
                continue;
            }
            if let Some(p) = &a.policy {
                self.aggregate.set_target(key, p.metric);
            }
        }
        self.aggregate
            .retain_targets(|key| assessments.contains_key(key));
    }
}

/// The reflectors a reconciler reads, and their events merged into one stream.
struct Watches {
    objects: Vec<Store<HTTPScaledObject>>,
    routes: Vec<Store<InterceptorRoute>>,
    /// Empty unless KEDA's InterceptorRoutes are enabled.
    keda_routes: Vec<Store<KedaInterceptorRoute>>,
    /// InterceptorRoute kinds the cluster does not serve or lets us list (CRD or RBAC missing):
    /// the others are reconciled without waiting for them.
    unavailable: HashSet<&'static str>,
    services: Vec<Store<Service>>,
    hpas: Vec<Store<HorizontalPodAutoscaler>>,
    /// One item per watch event (the content is read from the stores).
    events: BoxStream<'static, Result<()>>,
}

/// The `HTTPScaledObject` watch, started once for the whole controller. The object reconciler
/// drives it (polling its events is what updates the stores); the EventSubscription reconciler
/// reads the same stores through [`ObjectWatch::reader`] rather than keeping a second watch and
/// cache of every object.
pub struct ObjectWatch {
    stores: Vec<Store<HTTPScaledObject>>,
    /// One item per watch event; each also marks `changed`.
    events: BoxStream<'static, Result<()>>,
    changed: watch::Sender<()>,
}

/// The objects of an [`ObjectWatch`], read-only, and a signal on every change.
#[derive(Clone)]
pub struct ObjectReader {
    pub stores: Vec<Store<HTTPScaledObject>>,
    /// Marked changed after every watch event of the objects (the stores already hold it);
    /// closed once the object reconciler has stopped.
    pub changed: watch::Receiver<()>,
}

impl ObjectWatch {
    /// Starts watching `HTTPScaledObject`s in `scope` (nothing is read until the object
    /// reconciler runs).
    pub fn start(scope: &Scope, client: &Client) -> Self {
        let (stores, events) = watch_all::<HTTPScaledObject>(scope, client);
        let changed = watch::Sender::new(());
        let notify = changed.clone();
        let events = ticks("HTTPScaledObject", events)
            .inspect(move |e| {
                if e.is_ok() {
                    notify.send_replace(());
                }
            })
            .boxed();
        ObjectWatch {
            stores,
            events,
            changed,
        }
    }

    /// Another reader of the same objects.
    pub fn reader(&self) -> ObjectReader {
        ObjectReader {
            stores: self.stores.clone(),
            changed: self.changed.subscribe(),
        }
    }
}

/// The watch names of the InterceptorRoute kinds (also in logs and errors).
const ROUTES: &str = "InterceptorRoute";
const KEDA_ROUTES: &str = "InterceptorRoute.http.keda.sh";

impl Watches {
    /// Marks an InterceptorRoute kind whose watch failed for good (404/403) as unavailable, so
    /// HTTPScaledObjects are still reconciled; whether that changed anything.
    fn mark_unavailable(&mut self, e: &Error) -> bool {
        let Error::Watch { kind, source } = e else {
            return false;
        };
        let optional = *kind == ROUTES || *kind == KEDA_ROUTES;
        if !(optional && rouse_kube::kind_unavailable(source) && self.unavailable.insert(kind)) {
            return false;
        }
        tracing::warn!(
            kind,
            "Reconciling without this kind until it can be listed (CRD or RBAC missing?)."
        );
        true
    }

    fn start(scope: &Scope, client: &Client, objects: ObjectWatch, keda: bool) -> Self {
        let ObjectWatch {
            stores: objects,
            events: object_events,
            changed: _,
        } = objects;
        let (routes, route_events) = watch_all::<InterceptorRoute>(scope, client);
        let (services, service_events) = watch_all::<Service>(scope, client);
        let (hpas, hpa_events) = watch_all::<HorizontalPodAutoscaler>(scope, client);
        let mut streams = vec![
            object_events,
            ticks(ROUTES, route_events),
            ticks("Service", service_events),
            ticks("HorizontalPodAutoscaler", hpa_events),
        ];
        let mut keda_routes = Vec::new();
        if keda {
            let (stores, events) = watch_all::<KedaInterceptorRoute>(scope, client);
            keda_routes = stores;
            streams.push(ticks(KEDA_ROUTES, events));
        }
        let events = futures::stream::select_all(streams).boxed();
        Watches {
            objects,
            routes,
            keda_routes,
            unavailable: HashSet::new(),
            services,
            hpas,
            events,
        }
    }

    /// The watched state, once every store has seen its first list (before that, "absent"
    /// could mean "not listed yet").
    fn snapshot(&self) -> Option<World> {
        let listed = |ready: bool, kind: &str| ready || self.unavailable.contains(kind);
        if !(all_ready(&self.objects)
            && listed(all_ready(&self.routes), ROUTES)
            && listed(all_ready(&self.keda_routes), KEDA_ROUTES)
            && all_ready(&self.services)
            && all_ready(&self.hpas))
        {
            return None;
        }
        Some(World {
            objects: self.objects.iter().flat_map(Store::state).collect(),
            routes: self.routes.iter().flat_map(Store::state).collect(),
            keda_routes: self.keda_routes.iter().flat_map(Store::state).collect(),
            services: self
                .services
                .iter()
                .flat_map(Store::state)
                .map(|s| format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any()))
                .collect(),
            hpas: self.hpas.iter().flat_map(Store::state).collect(),
        })
    }
}

/// `events` reduced to "something changed", its errors naming the watched `kind`.
pub(crate) fn ticks<K: Send + 'static>(
    kind: &'static str,
    events: WatchEvents<K>,
) -> BoxStream<'static, Result<()>> {
    events
        .map(move |e| {
            e.map(|_| ())
                .map_err(|source| Error::Watch { kind, source })
        })
        .boxed()
}

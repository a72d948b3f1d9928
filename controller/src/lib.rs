//! `rouse-controller`: scales the workloads behind `HTTPScaledObject`s on Kubernetes.
//!
//! Where things are: [`demand`] (every proxy replica's feed, summed per target: the scaling
//! input), [`proxies`] (which replicas exist), [`lease`] (leader election), [`reconcile`] (the
//! object watcher that runs one scaling loop per object and writes status), [`subscriptions`]
//! (`EventSubscription` status, from the proxies' reports), [`policy`] (CRD →
//! [`rouse_scale::Policy`]), [`scaler`] (`/scale` of any scalable kind), [`external_scaler`]
//! (KEDA's external-push scaler API), [`admin`] (`/metrics`, `/livez`, `/readyz`, `/proxies`).
//! The decisions themselves are [`rouse_scale`]'s; this crate gathers inputs and applies them.

pub mod admin;
pub mod demand;
pub mod error;
pub mod external_scaler;
pub mod lease;
pub mod policy;
pub mod proxies;
pub mod reconcile;
pub mod scaler;
pub mod status;
mod status_writer;
pub mod subscriptions;

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::events::{Recorder, Reporter};
use kube::{Api, Client};
use rouse_kube::Scope;
use rouse_scale::ScaleMetrics;
use tokio::sync::watch;

use demand::Aggregate;
use proxies::Proxies;

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
    /// Also serve KEDA's `http.keda.sh/v1beta1` InterceptorRoutes (status, external scaler).
    pub keda_interceptor_routes: bool,
}

/// Runs the controller until `stop` turns true; returns after releasing the Lease.
pub async fn run(
    client: Client,
    opts: Options,
    metrics: ScaleMetrics,
    aggregate: Arc<Aggregate>,
    scaler_slot: status::ScalerSlot,
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
    let _ = scaler_slot.set(scaler.clone());
    tokio::spawn(proxies::follow_proxies(
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
    // The leadership gauge follows the Lease.
    let leader_gauge = metrics.leader.clone();
    let mut leading = leader_rx.clone();
    tokio::spawn(async move {
        loop {
            leader_gauge.set(i64::from(*leading.borrow_and_update()));
            if leading.changed().await.is_err() {
                leader_gauge.set(0);
                return;
            }
        }
    });
    let objects = reconcile::ObjectWatch::start(&opts.scope, &client);
    let subscriptions = subscriptions::Reconciler {
        client: client.clone(),
        scope: opts.scope.clone(),
        aggregate: aggregate.clone(),
        recorder: recorder.clone(),
        report_interval: opts.report_interval,
    };
    let subscriptions =
        tokio::spawn(subscriptions.run(objects.reader(), leader_rx.clone(), stop.clone()));
    let reconciler = reconcile::Reconciler {
        client,
        scope: opts.scope.clone(),
        scaler,
        aggregate,
        metrics,
        recorder,
        tick: opts.tick,
        keda_interceptor_routes: opts.keda_interceptor_routes,
    };
    reconciler.run(objects, leader_rx, stop).await;
    let _ = subscriptions.await;
    let _ = campaign.await;
}

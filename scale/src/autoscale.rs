//! The autoscaling loop of one target: demand in, decisions out.
//!
//! It decides at once when the proxy signals a wake (a request is held), and otherwise every
//! `tick` so the windows see regular samples. The policy itself is [`crate::decide`]; this loop
//! only gathers inputs and applies outputs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::decide::{Autoscaler, Policy, Reason};
use crate::seams::{DemandSource, Scaler};
use crate::telemetry::ScaleMetrics;

/// Runs until `shutdown` turns true. Decides once at start (a request may already be held when
/// this loop takes over, e.g. on a new leader), then on every wake and every `tick`.
pub async fn run<D: DemandSource, S: Scaler>(
    source: Arc<D>,
    policy: Policy,
    scaler: Arc<S>,
    tick: Duration,
    metrics: ScaleMetrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = source.name().to_string();
    let mut autoscaler = Autoscaler::new(policy);
    let mut first = true;
    loop {
        let woken_at = if std::mem::take(&mut first) {
            None
        } else {
            tokio::select! {
                at = source.woken() => Some(at),
                () = tokio::time::sleep(tick) => None,
                _ = shutdown.changed() => return,
            }
        };
        if *shutdown.borrow() {
            return;
        }
        let obs = source.observe();
        let current = match scaler.replicas(&name).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(target = %name, error = %e, "Reading replicas failed.");
                continue;
            }
        };
        let decision = autoscaler.decide(&obs, current, Instant::now());
        if decision.desired == current {
            continue;
        }
        match scaler.scale(&name, decision.desired).await {
            Ok(()) => {
                // A wake's signal → scale latency, per wake (the histogram below aggregates it).
                let wake_to_scale_us = match (woken_at, decision.reason) {
                    (Some(at), Reason::Wake) => Some(at.elapsed().as_micros() as u64),
                    _ => None,
                };
                tracing::info!(
                    target = %name,
                    from = current,
                    to = decision.desired,
                    reason = decision.reason.as_str(),
                    held = obs.held,
                    in_flight = obs.in_flight,
                    wake_to_scale_us,
                    "Scaled."
                );
                metrics
                    .decisions
                    .with_label_values(&[&name, decision.reason.as_str()])
                    .inc();
                metrics
                    .desired_replicas
                    .with_label_values(&[&name])
                    .set(i64::from(decision.desired));
                if let (Some(at), Reason::Wake) = (woken_at, decision.reason) {
                    metrics
                        .wake_to_scale
                        .with_label_values(&[&name])
                        .observe(at.elapsed().as_secs_f64());
                }
            }
            Err(e) => tracing::warn!(target = %name, error = %e, "Scaling failed; will retry."),
        }
    }
}

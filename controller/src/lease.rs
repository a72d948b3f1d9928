//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go does it: the holder
//! renews every `renew_every`; a candidate takes the Lease once it has seen the same record
//! unchanged for `duration` (measured on its own clock, so clock skew between nodes does not
//! matter); writes use the resourceVersion, so two candidates cannot both win. The holder steps
//! down by itself once it has not renewed for `renew_deadline` (⅔ of the duration, counted from
//! when the last successful renewal was *sent*, each attempt bounded by a timeout), so it stops
//! acting before any standby can take over. On shutdown the holder releases the Lease so the
//! standby takes over at once.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// Timing of the election (defaults: 15 s lease, renew every 2 s, like client-go's).
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This candidate's identity (the pod name).
    pub identity: String,
    pub duration: Duration,
    pub renew_every: Duration,
}

impl LeaseConfig {
    /// Leadership ends this long after the last successful renewal was sent: a margin of ⅓ of
    /// the duration before a standby may take the Lease.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }
}

/// What the candidate knows about the Lease between attempts.
#[derive(Default)]
struct Observed {
    /// Holder, renew time and transitions of the last record seen, and when it was first seen.
    record: Option<(Option<String>, Option<MicroTime>, Option<i32>)>,
    since: Option<Instant>,
}

fn now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

/// Campaigns until `stop` turns true, publishing leadership on `leader`. Leadership is dropped
/// (set to `false`) as soon as a renewal has not succeeded for `duration`.
pub async fn campaign(
    api: Api<Lease>,
    cfg: LeaseConfig,
    leader: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut observed = Observed::default();
    // When the last successful renewal was sent; leadership ends `renew_deadline` after it.
    let mut renewed_at: Option<Instant> = None;
    let deadline = cfg.renew_deadline();
    let step_down = |why: &str| {
        if *leader.borrow() {
            tracing::warn!(lease = %cfg.name, "{why}; stepping down.");
            leader.send_replace(false);
        }
    };
    loop {
        let sent = Instant::now();
        // Bounded: a hung request (half-open connection) must not keep a stale leader acting. A
        // leader's attempt may take until its deadline (a slow API server is not a lost lease);
        // a candidate's as long as a renewal could.
        let budget = match renewed_at {
            Some(t) if *leader.borrow() => (t + deadline).saturating_duration_since(sent),
            _ => deadline,
        };
        let attempt = tokio::time::timeout(
            budget.max(Duration::from_millis(100)),
            try_acquire_or_renew(&api, &cfg, &mut observed),
        )
        .await;
        match attempt {
            Ok(Ok(true)) => {
                renewed_at = Some(sent);
                if !*leader.borrow() {
                    tracing::info!(lease = %cfg.name, identity = %cfg.identity, "Became leader.");
                    leader.send_replace(true);
                }
            }
            Ok(Ok(false)) => step_down("Lost the lease to another candidate"),
            Ok(Err(e)) => tracing::warn!(lease = %cfg.name, error = %e, "Lease update failed."),
            Err(_) => tracing::warn!(lease = %cfg.name, "Lease update timed out."),
        }
        let expires = renewed_at.map(|t| t + deadline);
        if *leader.borrow() && expires.is_none_or(|e| e <= Instant::now()) {
            step_down("Could not renew in time");
        }
        let wait = if *leader.borrow() {
            cfg.renew_every
        } else {
            // Candidates poll a little faster than the holder renews, so takeover follows expiry
            // closely.
            (cfg.renew_every / 2).max(Duration::from_millis(100))
        };
        // A leader wakes at its deadline even if the next attempt is not due yet.
        let until_deadline = match (expires, *leader.borrow()) {
            (Some(e), true) => e.saturating_duration_since(Instant::now()),
            _ => wait,
        };
        tokio::select! {
            () = tokio::time::sleep(wait.min(until_deadline)) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            if *leader.borrow() {
                leader.send_replace(false);
                release(&api, &cfg).await;
            }
            return;
        }
    }
}

/// One attempt. `Ok(true)` = we hold the Lease now.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    observed: &mut Observed,
) -> Result<bool, kube::Error> {
    let secs = i32::try_from(cfg.duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let record = (
        spec.holder_identity.clone(),
        spec.renew_time.clone(),
        spec.lease_transitions,
    );
    if observed.record.as_ref() != Some(&record) {
        observed.record = Some(record);
        observed.since = Some(Instant::now());
    }
    let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
    let ours = holder == Some(cfg.identity.as_str());
    let held_for = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(cfg.duration, Duration::from_secs);
    let expired = holder.is_none() || observed.since.is_some_and(|t| t.elapsed() >= held_for);
    if !ours && !expired {
        return Ok(false);
    }
    let mut new_spec = spec.clone();
    new_spec.holder_identity = Some(cfg.identity.clone());
    new_spec.lease_duration_seconds = Some(secs);
    new_spec.renew_time = Some(now());
    if !ours {
        new_spec.acquire_time = Some(now());
        new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    lease.spec = Some(new_spec);
    // `replace` carries the resourceVersion we read: a concurrent writer makes this a 409.
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Gives the Lease up (holder cleared, 1 s duration) so a standby need not wait for expiry.
async fn release(api: &Api<Lease>, cfg: &LeaseConfig) {
    let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await else {
        return;
    };
    let Some(spec) = lease.spec.as_mut() else {
        return;
    };
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(now());
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => tracing::info!(lease = %cfg.name, "Lease released."),
        Err(e) => tracing::warn!(lease = %cfg.name, error = %e, "Lease release failed."),
    }
}

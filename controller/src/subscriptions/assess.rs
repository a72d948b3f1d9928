//! What each subscription has, decided from the watched state and the proxies' reports alone
//! (pure: no API calls, no clock).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;
use rouse_core::crd::{EventSubscription, subscription_key, subscription_path_claims};

use crate::demand::EventsObservation;

/// The state one pass works from.
pub(super) struct World {
    pub subscriptions: Vec<Arc<EventSubscription>>,
    /// `namespace/name` of every `HTTPScaledObject`.
    pub objects: HashSet<String>,
    /// What the connected proxy replicas report, by subscription key.
    pub reports: HashMap<String, EventsObservation>,
    /// When this reconciler started: its proxies' feeds may have connected only since.
    pub started: Timestamp,
    /// How long the proxies get to report a subscription before it counts as not served.
    pub grace: Duration,
}

/// One subscription, as far as this controller can tell.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Assessment {
    /// `namespace/name`.
    pub key: String,
    /// `spec.path`, as written.
    pub path: String,
    /// Every problem [`rouse_core::crd::EventSubscriptionSpec::validate`] finds, each naming
    /// its field.
    pub invalid: Vec<String>,
    /// `namespace/name` of the `HTTPScaledObject` `spec.target.httpScaledObject` names.
    pub target: String,
    pub target_found: bool,
    /// `namespace/name` of the Secret `spec.auth.keySecretRef` names, if any.
    pub secret: Option<String>,
    /// The older subscription that keeps this one's path ([`rouse_core::crd::path_claims`]).
    pub path_kept_by: Option<String>,
    /// What the connected proxy replicas report.
    pub observed: EventsObservation,
    /// From when no report means "not served" rather than "not reported yet": [`World::grace`]
    /// after the later of the object's creation and the reconciler's start.
    pub reports_due: Timestamp,
}

/// Every subscription's assessment, by key.
pub(super) fn assess(world: &World) -> HashMap<String, Assessment> {
    let objects: Vec<&EventSubscription> = world.subscriptions.iter().map(AsRef::as_ref).collect();
    // Every subscription in scope claims its path, valid or not: the proxy calls the same
    // function on the same objects, so both name the same winner.
    let claims = subscription_path_claims(&objects);
    objects
        .into_iter()
        .map(|o| {
            let a = assess_one(o, world, &claims);
            (a.key.clone(), a)
        })
        .collect()
}

fn assess_one(
    o: &EventSubscription,
    world: &World,
    claims: &HashMap<String, Result<(), String>>,
) -> Assessment {
    let key = subscription_key(o);
    let namespace = o.namespace().unwrap_or_default();
    let target = format!("{namespace}/{}", o.spec.target.http_scaled_object);
    let created = o
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(world.started, |t| t.0);
    let reports_due = created
        .max(world.started)
        .checked_add(world.grace)
        .unwrap_or(Timestamp::MAX);
    Assessment {
        path: o.spec.path.clone(),
        invalid: o.spec.validate(),
        target_found: world.objects.contains(&target),
        target,
        secret: o.spec.key_secret().map(|s| format!("{namespace}/{s}")),
        path_kept_by: claims.get(&key).and_then(|c| c.clone().err()),
        observed: world.reports.get(&key).cloned().unwrap_or_default(),
        reports_due,
        key,
    }
}

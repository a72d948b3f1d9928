//! Queued events as their app's demand: the sum over the subscriptions feeding an app is its
//! target's `queued` count, and events waiting for a target with no endpoint wake it.
//!
//! Why here: events are pending work like a held request, so they must scale the target up and
//! keep it up; only the gateway sees every change of a subscription's pending count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rouse_core::Target;

use crate::config::SubscriptionConfig;
use crate::queue::SubId;

/// The targets whose demand queued events count in, by app name (a subscription's
/// `target.app`). Subscriptions of apps not in it (and with a `target.url`) count nowhere.
pub type DemandTargets = HashMap<String, Arc<Target>>;

/// One app fed by subscriptions.
struct App {
    target: Arc<Target>,
    subs: Vec<SubId>,
    /// Serializes sum-and-store, so concurrent changes cannot leave a stale total behind.
    update: Mutex<()>,
}

/// Which app (if any) each subscription feeds.
pub(crate) struct AppDemand {
    apps: Vec<App>,
    /// By [`SubId`]: an index into `apps`.
    app_of: Vec<Option<usize>>,
}

impl AppDemand {
    pub(crate) fn new(subscriptions: &[SubscriptionConfig], targets: &DemandTargets) -> Self {
        let mut apps: Vec<App> = Vec::new();
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        let app_of = subscriptions
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let name = c.target.app.as_deref()?;
                let target = targets.get(name)?;
                let a = *by_name.entry(name).or_insert_with(|| {
                    apps.push(App {
                        target: target.clone(),
                        subs: Vec::new(),
                        update: Mutex::new(()),
                    });
                    apps.len() - 1
                });
                apps[a].subs.push(SubId::new(i));
                Some(a)
            })
            .collect();
        AppDemand { apps, app_of }
    }

    /// `sub`'s pending count changed: its app's target gets the new total (`pending` of each
    /// subscription feeding it) and is woken if events wait and it has no endpoint.
    pub(crate) fn changed(&self, sub: SubId, pending: impl Fn(SubId) -> usize) {
        let Some(app) = self
            .app_of
            .get(sub.index())
            .copied()
            .flatten()
            .and_then(|a| self.apps.get(a))
        else {
            return;
        };
        let _serial = app.update.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = app.subs.iter().map(|s| pending(*s)).sum();
        let target = &app.target;
        target.demand.set_queued(total as u64);
        if total > 0 && target.endpoints().is_empty() {
            target.demand.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use rouse_core::{Endpoint, Target};

    use super::DemandTargets;
    use crate::gateway::{Gateway, Request};
    use crate::metrics::Metrics;
    use crate::protocol::Headers;
    use crate::store::Outcome;

    fn open(dir: &std::path::Path, targets: DemandTargets) -> std::sync::Arc<Gateway> {
        let yaml = format!(
            "data_dir: {}\nsubscriptions:\n  \
             - {{name: a, path: /a, target: {{app: hello}}}}\n  \
             - {{name: b, path: /b, target: {{app: hello}}}}\n  \
             - {{name: c, path: /c, target: {{url: \"http://127.0.0.1:9\"}}}}\n",
            dir.display()
        );
        let config = crate::config::parse(&yaml, "test").expect("config");
        Gateway::open(&config, Metrics::new(&prometheus::Registry::new()), targets)
            .expect("gateway")
    }

    async fn post(gw: &std::sync::Arc<Gateway>, path: &str, ids: &[&str]) {
        let sub = gw.subscription_for(path).expect("sub").clone();
        let events: Vec<String> = ids
            .iter()
            .map(|id| {
                format!(
                    r#"{{"id":"{id}","topic":"t","subject":"s","eventType":"T","eventTime":"2024-01-01T00:00:00Z","data":{{}}}}"#
                )
            })
            .collect();
        let req = Request {
            method: http::Method::POST,
            query: String::new(),
            headers: Headers::new([
                ("content-type".to_string(), "application/json".to_string()),
                ("aeg-event-type".to_string(), "Notification".to_string()),
            ]),
            body: Bytes::from(format!("[{}]", events.join(","))),
        };
        assert_eq!(gw.handle(&sub, req).await.status, 200);
    }

    async fn woken(target: &Target, within: Duration) -> bool {
        tokio::time::timeout(within, target.demand.woken())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn subscriptions_of_one_app_sum_into_its_queued_demand_and_wake_it_while_it_has_no_endpoint()
     {
        let dir = tempfile::tempdir().expect("tmp");
        let hello = Target::new("hello");
        let gw = open(
            dir.path(),
            DemandTargets::from([("hello".to_string(), hello.clone())]),
        );
        assert_eq!(hello.demand.queued(), 0);
        post(&gw, "/a", &["1", "2"]).await;
        post(&gw, "/b", &["3"]).await;
        post(&gw, "/c", &["4"]).await; // not an app of the map: counts nowhere
        assert_eq!(hello.demand.queued(), 3, "a's 2 + b's 1");
        assert!(
            woken(&hello, Duration::from_secs(5)).await,
            "no endpoint: woken"
        );

        // With an endpoint, events change the count but wake nothing.
        hello.set_endpoints(vec![Endpoint::new(
            "hello-1",
            "127.0.0.1:1".parse().expect("addr"),
        )]);
        let a = gw.subscription_for("/a").expect("sub").clone();
        let items = gw.take(&a, 1).await;
        gw.retire(&a, &items, Outcome::Delivered).await;
        assert_eq!(hello.demand.queued(), 2, "one of a's retired");
        post(&gw, "/b", &["5"]).await;
        assert_eq!(hello.demand.queued(), 3);
        assert!(!woken(&hello, Duration::from_millis(100)).await);
        drop((gw, a));

        // After a restart, the recovered events count (and wake) at once.
        let hello = Target::new("hello");
        let _gw = open(
            dir.path(),
            DemandTargets::from([("hello".to_string(), hello.clone())]),
        );
        assert_eq!(hello.demand.queued(), 3);
        assert!(woken(&hello, Duration::from_secs(5)).await);
    }
}

//! Kubernetes plumbing shared by the proxy (`rouse kubernetes`) and `rouse-controller`: which
//! namespaces to watch, one reflector per namespace with its events merged, and whether the
//! stores have seen their first list. Nothing here decides anything; both binaries build on it
//! so they watch the same way and agree on when "empty" means "none".

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

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

/// Whether a watch failed because its kind cannot be watched at all here: the API server does
/// not serve it (404: e.g. a CRD that is not installed) or this identity may not list it (403).
/// A caller watching several kinds can then go on with the others rather than wait for ever
/// (e.g. a proxy whose cluster lacks the InterceptorRoute CRD still routes HTTPScaledObjects).
pub fn kind_unavailable(e: &watcher::Error) -> bool {
    let status = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.code,
        watcher::Error::WatchError(s) => s.code,
        _ => return false,
    };
    matches!(status, 403 | 404)
}

#[cfg(test)]
mod tests {
    use kube::core::Status;
    use kube::runtime::watcher::Error;

    use super::kind_unavailable;

    #[test]
    fn a_kind_not_served_or_not_allowed_is_unavailable_and_anything_else_is_transient() {
        let api = |code| kube::Error::Api(Status::failure("x", "y").with_code(code).boxed());
        assert!(kind_unavailable(&Error::InitialListFailed(api(404))));
        assert!(kind_unavailable(&Error::WatchStartFailed(api(403))));
        assert!(!kind_unavailable(&Error::InitialListFailed(api(500))));
        assert!(!kind_unavailable(&Error::WatchError(
            Status::failure("gone", "Expired").with_code(410).boxed()
        )));
        assert!(!kind_unavailable(&Error::NoResourceVersion));
    }
}

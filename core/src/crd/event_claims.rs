//! Which `EventSubscription` keeps a webhook path when several claim it: one pure rule, called by
//! the proxy (to serve the winner only) and by the controller (to report `PathConflict` on the
//! others), so the two never disagree on who won.
//!
//! The rule mirrors [`super::claim_order`] for `HTTPScaledObject` routes: the oldest object
//! (`metadata.creationTimestamp`, then `namespace/name`) keeps the path, whichever process
//! computes it and in whatever order the objects were listed.

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::EventSubscription;

/// The name status, logs and the demand feed use for a subscription: `namespace/name`.
pub fn subscription_key(o: &EventSubscription) -> String {
    format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
}

/// A webhook path as the gateway matches it: exact, a trailing `/` ignored.
fn normalised(path: &str) -> &str {
    path.trim_end_matches('/')
}

/// Who keeps each webhook path. `claims` are `(key, creationTimestamp, spec.path)`, one per
/// object, in any order and across namespaces (a path is global: every proxy replica serves
/// every subscription on any host). For every key: `Ok(())` when it keeps its path, or
/// `Err(winner)`, the key of the older object that keeps it.
///
/// Older means an earlier `creationTimestamp` (a missing one counts as oldest, as in
/// [`super::claim_order`]), ties broken by key. A key listed twice is one claim (it never loses
/// to itself).
pub fn path_claims<'a>(
    claims: impl IntoIterator<Item = (&'a str, Option<&'a Time>, &'a str)>,
) -> HashMap<String, Result<(), String>> {
    let mut ordered: Vec<_> = claims.into_iter().collect();
    ordered.sort_by(|(ka, ca, _), (kb, cb, _)| (ca, ka).cmp(&(cb, kb)));
    let mut keeper: HashMap<&str, &str> = HashMap::new();
    let mut out = HashMap::new();
    for (key, _, path) in ordered {
        let winner = *keeper.entry(normalised(path)).or_insert(key);
        let verdict = if winner == key {
            Ok(())
        } else {
            Err(winner.to_string())
        };
        out.entry(key.to_string()).or_insert(verdict);
    }
    out
}

/// [`path_claims`] of `objects` (each keyed by [`subscription_key`]): what the proxy and the
/// controller call with the objects they watch.
pub fn subscription_path_claims(
    objects: &[&EventSubscription],
) -> HashMap<String, Result<(), String>> {
    let keys: Vec<String> = objects.iter().map(|o| subscription_key(o)).collect();
    path_claims(objects.iter().zip(&keys).map(|(o, key)| {
        (
            key.as_str(),
            o.metadata.creation_timestamp.as_ref(),
            o.spec.path.as_str(),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Option<Time> {
        Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(secs).expect("timestamp"),
        ))
    }

    #[test]
    fn the_oldest_claim_keeps_a_path_and_the_others_name_it() {
        let (t1, t2, t3) = (at(1), at(2), at(3));
        let claims = path_claims([
            ("b/newest", t3.as_ref(), "/hook"),
            ("a/oldest", t1.as_ref(), "/hook/"),
            ("c/middle", t2.as_ref(), "/hook"),
            ("d/alone", t2.as_ref(), "/other"),
        ]);
        assert_eq!(claims["a/oldest"], Ok(()));
        assert_eq!(claims["c/middle"], Err("a/oldest".to_string()));
        assert_eq!(claims["b/newest"], Err("a/oldest".to_string()));
        assert_eq!(claims["d/alone"], Ok(()));
        assert_eq!(claims.len(), 4);
    }

    #[test]
    fn same_age_claims_are_ordered_by_key_whatever_the_listing_order() {
        let t = at(5);
        let forward = path_claims([("team/a", t.as_ref(), "/x"), ("other/z", t.as_ref(), "/x")]);
        let backward = path_claims([("other/z", t.as_ref(), "/x"), ("team/a", t.as_ref(), "/x")]);
        assert_eq!(forward, backward);
        assert_eq!(forward["other/z"], Ok(()), "\"other/z\" < \"team/a\"");
        assert_eq!(forward["team/a"], Err("other/z".to_string()));
    }

    #[test]
    fn a_missing_creation_time_counts_as_oldest_and_a_repeated_key_never_loses_to_itself() {
        let t = at(1);
        let claims = path_claims([
            ("ns/dated", t.as_ref(), "/p"),
            ("ns/undated", None, "/p"),
            ("ns/undated", None, "/p/"),
        ]);
        assert_eq!(claims["ns/undated"], Ok(()));
        assert_eq!(claims["ns/dated"], Err("ns/undated".to_string()));
    }

    #[test]
    fn objects_are_claimed_by_namespace_and_name() {
        let object = |ns: &str, name: &str, secs: i64| -> EventSubscription {
            serde_yaml::from_str(&format!(
                "apiVersion: rouse.dev/v1alpha1\nkind: EventSubscription\n\
                 metadata: {{name: {name}, namespace: {ns}, \
                 creationTimestamp: \"1970-01-01T00:00:{secs:02}Z\"}}\n\
                 spec: {{path: /events, target: {{httpScaledObject: fn}}}}\n"
            ))
            .expect("object parses")
        };
        let (old, new) = (object("b", "old", 1), object("a", "new", 2));
        assert_eq!(subscription_key(&old), "b/old");
        let claims = subscription_path_claims(&[&new, &old]);
        assert_eq!(claims["b/old"], Ok(()));
        assert_eq!(claims["a/new"], Err("b/old".to_string()));
    }
}

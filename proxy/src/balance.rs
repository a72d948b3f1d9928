//! Endpoint choice: least pending of two random candidates ("power of two choices"), honouring
//! the per-endpoint concurrency cap. P2C avoids both the herd effect of pure least-loaded and the
//! blindness of round robin, at O(1) per request.

use std::net::SocketAddr;
use std::sync::Arc;

use rouse_core::{Endpoint, EndpointSet};

/// Picks an endpoint and takes a slot on it, or `None` when every eligible endpoint is at `cap`
/// (or there is none). `exclude` lists endpoints that just refused a connection.
pub fn pick(set: &EndpointSet, cap: Option<u32>, exclude: &[SocketAddr]) -> Option<Arc<Endpoint>> {
    let eps = &set.endpoints;
    let eligible = |e: &&Arc<Endpoint>| !exclude.contains(&e.addr);
    match eps.len() {
        0 => None,
        1 => eps
            .first()
            .filter(eligible)
            .filter(|e| e.try_acquire(cap))
            .cloned(),
        n => {
            let i = rand::random_range(0..n);
            let j = (i + 1 + rand::random_range(0..n - 1)) % n;
            let (a, b) = (&eps[i], &eps[j]);
            let (first, second) = if a.in_flight() <= b.in_flight() {
                (a, b)
            } else {
                (b, a)
            };
            for e in [first, second] {
                if eligible(&e) && e.try_acquire(cap) {
                    return Some(e.clone());
                }
            }
            // Both samples full or excluded: fall back to the least loaded one that has room.
            let mut rest: Vec<&Arc<Endpoint>> = eps.iter().filter(eligible).collect();
            rest.sort_by_key(|e| e.in_flight());
            rest.into_iter().find(|e| e.try_acquire(cap)).cloned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: u16) -> EndpointSet {
        EndpointSet {
            endpoints: (0..n)
                .map(|i| {
                    Endpoint::new(
                        format!("e{i}"),
                        SocketAddr::from(([127, 0, 0, 1], 10_000 + i)),
                    )
                })
                .collect(),
            published: std::time::Instant::now(),
        }
    }

    #[test]
    fn empty_set_has_no_pick() {
        assert!(pick(&set(0), None, &[]).is_none());
    }

    #[test]
    fn cap_is_never_exceeded_and_all_capacity_is_used() {
        let s = set(3);
        let picks: Vec<_> = (0..6).filter_map(|_| pick(&s, Some(2), &[])).collect();
        assert_eq!(picks.len(), 6);
        assert!(pick(&s, Some(2), &[]).is_none());
        assert!(s.endpoints.iter().all(|e| e.in_flight() == 2));
    }

    #[test]
    fn load_spreads_evenly_without_cap() {
        let s = set(4);
        for _ in 0..4000 {
            let _ = pick(&s, None, &[]);
        }
        for e in &s.endpoints {
            assert!(
                (900..=1100).contains(&e.in_flight()),
                "{} has {}",
                e.id,
                e.in_flight()
            );
        }
    }

    #[test]
    fn excluded_endpoints_are_skipped() {
        let s = set(2);
        let bad = s.endpoints[0].addr;
        for _ in 0..20 {
            let e = pick(&s, None, &[bad]).expect("other endpoint");
            assert_ne!(e.addr, bad);
        }
        let one = set(1);
        assert!(pick(&one, None, &[one.endpoints[0].addr]).is_none());
    }
}

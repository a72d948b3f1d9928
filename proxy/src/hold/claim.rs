//! The wake of a request that is answered at once (a placeholder) instead of being held.
//!
//! Scaling from zero keys on pending work, never on a sampled rate: the autoscaler wakes a
//! target at zero when it sees `held > 0` (locally in-process, on Kubernetes in the demand
//! feed's wake line, read when the line is written). A placeholder answer takes microseconds,
//! so its request would be gone before anyone looked. A claim therefore counts as one held
//! request on the target and signals the wake exactly as [`super::acquire`] does for a held
//! one; it stands until the target has a ready endpoint (or is known unavailable), or the
//! route's hold timeout passes, whichever is first. One claim per target at a time: every
//! later placeholder answer while it stands adds nothing (held requests coalesce the same
//! way). A request after an expired claim claims again, so an app slower than the hold timeout
//! is still asked for.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rouse_core::Target;

/// A target's standing wake claim (shared by every route of the target, survives rebuilds).
#[derive(Debug, Default)]
pub struct WakeClaim {
    claimed: AtomicBool,
    /// When the standing claim was made: a waiting page shows the time since.
    since: Mutex<Option<Instant>>,
}

impl WakeClaim {
    /// How long the standing claim has stood (zero without one).
    pub fn elapsed(&self) -> Duration {
        self.since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(Duration::ZERO, |t| t.elapsed())
    }

    /// Whether a claim stands.
    pub fn stands(&self) -> bool {
        self.claimed.load(Ordering::Acquire)
    }
}

/// Claims a wake for `target` unless one stands (`claim`), for at most `until`. Returns
/// whether this call made the claim. Needs a Tokio runtime (it spawns the claim's watcher).
pub fn claim_wake(target: &Arc<Target>, claim: &Arc<WakeClaim>, until: Duration) -> bool {
    if claim.claimed.swap(true, Ordering::AcqRel) {
        return false;
    }
    *claim.since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    // Counted before the wake, so whoever the wake reaches sees the pending request.
    target.demand.held_inc();
    target.demand.wake();
    let (target, claim) = (target.clone(), claim.clone());
    tokio::spawn(async move {
        stand(&target, until).await;
        // Released first, then uncounted: a request in between claims again rather than
        // finding neither a claim nor a count.
        *claim.since.lock().unwrap_or_else(|p| p.into_inner()) = None;
        claim.claimed.store(false, Ordering::Release);
        target.demand.held_dec();
    });
    true
}

/// Waits until `target` has a ready endpoint or cannot get one, or `until` passes.
async fn stand(target: &Target, until: Duration) {
    let mut endpoints = target.watch_endpoints();
    let deadline = tokio::time::sleep(until);
    tokio::pin!(deadline);
    loop {
        if !endpoints.borrow_and_update().is_empty() || target.unavailable().is_some() {
            return;
        }
        tokio::select! {
            changed = endpoints.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = &mut deadline => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use rouse_core::Endpoint;

    use super::*;

    async fn until_held(target: &Target, n: u64) {
        let wait = async {
            while target.demand.held() != n {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .unwrap_or_else(|_| panic!("held never became {n}"));
    }

    #[tokio::test]
    async fn a_claim_counts_as_held_and_wakes_until_the_target_is_ready() {
        let target = Target::new("t");
        let claimed = Arc::new(WakeClaim::default());
        assert!(claim_wake(&target, &claimed, Duration::from_secs(60)));
        assert_eq!(target.demand.held(), 1, "counted like a held request");
        // The wake was signalled (resolves at once).
        tokio::time::timeout(Duration::from_secs(5), target.demand.woken())
            .await
            .expect("woken");
        assert!(
            !claim_wake(&target, &claimed, Duration::from_secs(60)),
            "one claim per target"
        );
        assert_eq!(target.demand.held(), 1);
        target.set_endpoints(vec![Endpoint::new(
            "e",
            SocketAddr::from(([127, 0, 0, 1], 1)),
        )]);
        until_held(&target, 0).await;
        assert!(!claimed.stands(), "released before uncounted");
        assert_eq!(claimed.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_claim_expires_with_the_hold_timeout_and_can_be_made_again() {
        let target = Target::new("t");
        let claimed = Arc::new(WakeClaim::default());
        assert!(claim_wake(&target, &claimed, Duration::from_millis(20)));
        until_held(&target, 0).await;
        assert!(!claimed.stands());
        assert!(claim_wake(&target, &claimed, Duration::from_secs(60)));
        assert!(claimed.stands());
        assert_eq!(target.demand.held(), 1);
    }

    #[tokio::test]
    async fn an_unavailable_target_ends_the_claim() {
        let target = Target::new("t");
        let claimed = Arc::new(WakeClaim::default());
        claim_wake(&target, &claimed, Duration::from_secs(60));
        target.set_unavailable(Some("service gone".into()));
        until_held(&target, 0).await;
    }
}

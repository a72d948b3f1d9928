use super::*;
use std::time::{Duration, Instant};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn obs(held: u64, in_flight: u64, requests_total: u64, last: Option<Instant>) -> Observation {
    Observation {
        held,
        in_flight,
        requests_total,
        last_activity: last,
    }
}

fn d(desired: u32, reason: Reason) -> ScaleDecision {
    ScaleDecision { desired, reason }
}

fn concurrency(target: f64) -> Policy {
    Policy {
        metric: Metric::Concurrency { target },
        ..Policy::default()
    }
}

fn errors_of(p: &Policy) -> Vec<String> {
    match p.validate() {
        Ok(()) => Vec::new(),
        Err(errors) => errors,
    }
}

#[test]
fn reason_labels_are_lowercase_names() {
    let table = [
        (Reason::Wake, "wake"),
        (Reason::Idle, "idle"),
        (Reason::Stable, "stable"),
        (Reason::Panic, "panic"),
        (Reason::Bounds, "bounds"),
        (Reason::Hold, "hold"),
    ];
    for (reason, label) in table {
        assert_eq!(reason.as_str(), label);
    }
}

#[test]
fn default_policy_has_documented_values_and_is_valid() {
    let p = Policy::default();
    assert_eq!((p.min_replicas, p.max_replicas), (0, 10));
    assert_eq!(p.metric, Metric::Concurrency { target: 100.0 });
    assert_eq!((p.stable_window, p.panic_window), (secs(60), secs(6)));
    assert_eq!((p.panic_threshold, p.max_scale_down_rate), (2.0, 2.0));
    assert_eq!(
        (p.scaledown_period, p.initial_cooldown),
        (secs(300), Duration::ZERO)
    );
    assert_eq!(p.validate(), Ok(()));
    assert_eq!(Autoscaler::new(p.clone()).policy(), &p);
}

#[test]
fn validate_names_the_offending_field() {
    type Mutation = fn(&mut Policy);
    let table: [(Mutation, &str); 11] = [
        (
            |p| (p.min_replicas, p.max_replicas) = (3, 2),
            "replicas.min (3) must not exceed replicas.max (2)",
        ),
        (
            |p| p.max_replicas = 0,
            "replicas.max (0) must be at least 1",
        ),
        (
            |p| p.metric = Metric::Concurrency { target: 0.0 },
            "metric.target (0)",
        ),
        (
            |p| p.metric = Metric::RequestRate { target: -1.0 },
            "metric.target (-1)",
        ),
        (
            |p| p.metric = Metric::Concurrency { target: f64::NAN },
            "metric.target (NaN)",
        ),
        (
            |p| {
                p.metric = Metric::RequestRate {
                    target: f64::INFINITY,
                }
            },
            "metric.target (inf)",
        ),
        (
            |p| p.panic_window = secs(61),
            "panic_window (61s) must not exceed stable_window (60s)",
        ),
        (|p| p.panic_threshold = 1.0, "panic_threshold (1)"),
        (|p| p.panic_threshold = f64::NAN, "panic_threshold (NaN)"),
        (|p| p.max_scale_down_rate = 0.5, "max_scale_down_rate (0.5)"),
        (
            |p| p.max_scale_down_rate = f64::NAN,
            "max_scale_down_rate (NaN)",
        ),
    ];
    for (mutate, expected) in table {
        let mut p = Policy::default();
        mutate(&mut p);
        let errors = errors_of(&p);
        assert_eq!(errors.len(), 1, "{expected}: {errors:?}");
        assert!(
            errors[0].starts_with(expected),
            "{errors:?} should start with {expected}"
        );
    }
}

#[test]
fn validate_reports_every_problem_at_once() {
    let p = Policy {
        min_replicas: 1,
        max_replicas: 0,
        metric: Metric::Concurrency { target: 0.0 },
        panic_threshold: 0.5,
        ..Policy::default()
    };
    assert_eq!(errors_of(&p).len(), 4);
}

#[test]
fn first_request_after_a_week_wakes_keda_1692() {
    let week = 7 * 24 * 3600;
    for metric in [
        Metric::Concurrency { target: 100.0 },
        Metric::RequestRate { target: 1.0 },
    ] {
        let policy = Policy {
            metric,
            stable_window: secs(30 * 24 * 3600),
            ..Policy::default()
        };
        let mut a = Autoscaler::new(policy);
        let t0 = Instant::now();
        for s in (0..week).step_by(60) {
            let decision = a.decide(&obs(0, 0, 0, None), 0, t0 + secs(s));
            assert_eq!(decision, d(0, Reason::Idle), "{metric:?} at {s}s");
        }
        assert!(a.sample_count() <= MAX_SAMPLES);
        let woke = a.decide(&obs(1, 0, 1, Some(t0 + secs(week))), 0, t0 + secs(week));
        assert_eq!(woke, d(1, Reason::Wake), "{metric:?}");
    }
}

#[test]
fn wake_goes_to_at_least_one_and_at_least_min() {
    // (min_replicas, held, expected)
    for (min, held, expected) in [(0, 1, 1), (0, 500, 1), (1, 1, 1), (3, 1, 3)] {
        let mut a = Autoscaler::new(Policy {
            min_replicas: min,
            ..Policy::default()
        });
        let t0 = Instant::now();
        assert_eq!(
            a.decide(&obs(held, 0, 0, None), 0, t0),
            d(expected, Reason::Wake)
        );
    }
}

#[test]
fn steady_short_requests_never_scale_to_zero_keda_1352() {
    // Proxies that report timestamps, and proxies that only report the counter.
    for report_timestamps in [true, false] {
        let policy = Policy {
            scaledown_period: secs(300),
            ..Policy::default()
        };
        let mut a = Autoscaler::new(policy);
        let t0 = Instant::now();
        let mut current = 1;
        for s in (0..2 * 3600).step_by(15) {
            let total = s / 60 + 1; // one short request a minute, never in flight at a poll
            let last = report_timestamps.then(|| t0 + secs(s - s % 60));
            let decision = a.decide(&obs(0, 0, total, last), current, t0 + secs(s));
            assert_eq!(
                decision,
                d(1, Reason::Stable),
                "timestamps={report_timestamps} at {s}s"
            );
            current = decision.desired;
        }
    }
}

#[test]
fn open_long_lived_stream_keeps_target_up_for_an_hour() {
    let mut a = Autoscaler::new(Policy {
        scaledown_period: secs(300),
        ..Policy::default()
    });
    let t0 = Instant::now();
    for s in (0..=3600).step_by(15) {
        let decision = a.decide(&obs(0, 1, 1, Some(t0)), 1, t0 + secs(s));
        assert_eq!(decision, d(1, Reason::Stable), "at {s}s");
    }
}

#[test]
fn idle_needs_nothing_held_nothing_in_flight_and_a_quiet_period() {
    // (held, in_flight, requests_total, seconds since last activity, min, current, expected)
    let table = [
        (0, 0, 0, None, 0, 1, d(0, Reason::Idle)), // never used
        (0, 0, 7, Some(300), 0, 1, d(0, Reason::Idle)),
        (0, 0, 7, Some(299), 0, 1, d(1, Reason::Stable)),
        (0, 0, 7, Some(5000), 0, 8, d(0, Reason::Idle)), // idle is not rate limited
        (0, 0, 7, Some(5000), 2, 3, d(2, Reason::Idle)),
        (1, 0, 7, Some(5000), 0, 1, d(1, Reason::Stable)),
        (0, 1, 7, Some(5000), 0, 1, d(1, Reason::Stable)),
        // First sight of a used target whose proxies give no timestamp (e.g. after a
        // controller restart): assume it is in use now rather than "never".
        (0, 0, 7, None, 0, 1, d(1, Reason::Stable)),
    ];
    let t0 = Instant::now();
    let now = t0 + secs(10_000);
    for (i, (held, in_flight, total, ago, min, current, expected)) in table.into_iter().enumerate()
    {
        let policy = Policy {
            min_replicas: min,
            scaledown_period: secs(300),
            ..Policy::default()
        };
        let mut a = Autoscaler::new(policy);
        let last = ago.map(|ago| now - secs(ago));
        let decision = a.decide(&obs(held, in_flight, total, last), current, now);
        assert_eq!(decision, expected, "case {i}");
    }
}

#[test]
fn initial_cooldown_blocks_return_to_zero_after_a_wake() {
    let policy = Policy {
        scaledown_period: secs(60),
        initial_cooldown: secs(600),
        ..Policy::default()
    };
    let mut a = Autoscaler::new(policy);
    let t0 = Instant::now();
    assert_eq!(a.decide(&obs(1, 0, 1, Some(t0)), 0, t0), d(1, Reason::Wake));
    let served = obs(0, 0, 1, Some(t0 + secs(1)));
    let table = [
        (1, d(1, Reason::Stable)),
        (120, d(1, Reason::Stable)),
        (599, d(1, Reason::Stable)),
    ];
    for (s, expected) in table {
        assert_eq!(a.decide(&served, 1, t0 + secs(s)), expected, "at {s}s");
    }
    assert_eq!(a.decide(&served, 1, t0 + secs(600)), d(0, Reason::Idle));
}

#[test]
fn at_zero_with_nothing_to_serve_stays_at_zero_or_min() {
    let t0 = Instant::now();
    for (min, expected) in [(0, d(0, Reason::Idle)), (2, d(2, Reason::Bounds))] {
        let mut a = Autoscaler::new(Policy {
            min_replicas: min,
            ..Policy::default()
        });
        // Even with very recent activity: nothing is waiting, so nothing needs a replica.
        assert_eq!(
            a.decide(&obs(0, 0, 9, Some(t0)), 0, t0),
            expected,
            "min {min}"
        );
    }
}

#[test]
fn in_flight_at_zero_replicas_brings_one_back() {
    // Draining pods still serve a stream after the platform reported zero: someone is using it.
    let mut a = Autoscaler::new(Policy::default());
    let t0 = Instant::now();
    assert_eq!(
        a.decide(&obs(0, 2, 9, Some(t0)), 0, t0),
        d(1, Reason::Stable)
    );
}

#[test]
fn active_target_never_drops_below_one() {
    let mut a = Autoscaler::new(Policy::default());
    let t0 = Instant::now();
    for s in (0..=240).step_by(10) {
        let decision = a.decide(&obs(0, 0, 3, Some(t0)), 1, t0 + secs(s));
        assert_eq!(decision, d(1, Reason::Stable), "at {s}s");
    }
}

/// Feeds `load` every 2 s for a full stable window at a steady `current`; returns the last decision.
fn steady(
    a: &mut Autoscaler,
    t0: Instant,
    held: u64,
    in_flight: u64,
    current: u32,
) -> ScaleDecision {
    let mut last = d(0, Reason::Idle);
    for s in (0..=60).step_by(2) {
        last = a.decide(
            &obs(held, in_flight, s, Some(t0 + secs(s))),
            current,
            t0 + secs(s),
        );
    }
    last
}

#[test]
fn concurrency_scales_to_stable_average_over_target() {
    // (target, held, in_flight, current, expected)
    let table = [
        (10.0, 0, 35, 4, d(4, Reason::Stable)),
        (10.0, 0, 40, 4, d(4, Reason::Stable)),
        (10.0, 0, 41, 4, d(5, Reason::Stable)),
        (100.0, 300, 0, 2, d(3, Reason::Stable)), // held counts toward concurrency
        (100.0, 100, 150, 2, d(3, Reason::Stable)),
        (1.0, 0, 7, 6, d(7, Reason::Stable)),
    ];
    for (i, (target, held, in_flight, current, expected)) in table.into_iter().enumerate() {
        let mut a = Autoscaler::new(concurrency(target));
        let t0 = Instant::now();
        assert_eq!(
            steady(&mut a, t0, held, in_flight, current),
            expected,
            "case {i}"
        );
        assert!(!a.in_panic(), "case {i}");
    }
}

#[test]
fn burst_panics_never_scales_down_and_ends_after_a_stable_window() {
    let mut a = Autoscaler::new(concurrency(10.0));
    let t0 = Instant::now();
    assert_eq!(steady(&mut a, t0, 0, 5, 1), d(1, Reason::Stable));
    // Panic window at 62 s holds 5, 5, 5, 100: mean 28.75 -> 3 replicas, 3x current.
    let burst = a.decide(&obs(0, 100, 62, Some(t0 + secs(62))), 1, t0 + secs(62));
    assert_eq!(burst, d(3, Reason::Panic));
    assert!(a.in_panic());
    // Load falls back; the stable demand is 1 but panic holds current for a stable window.
    for s in (64..122).step_by(2) {
        let decision = a.decide(&obs(0, 5, s, Some(t0 + secs(s))), 3, t0 + secs(s));
        assert_eq!(decision, d(3, Reason::Panic), "at {s}s");
    }
    // 60 s after the last trigger: stable again, and scale-down is rate limited (3 -> 2 -> 1).
    let t = t0 + secs(122);
    assert_eq!(
        a.decide(&obs(0, 5, 122, Some(t)), 3, t),
        d(2, Reason::Stable)
    );
    assert!(!a.in_panic());
    let t = t0 + secs(124);
    assert_eq!(
        a.decide(&obs(0, 5, 124, Some(t)), 2, t),
        d(1, Reason::Stable)
    );
}

#[test]
fn panic_scales_further_when_the_burst_keeps_growing() {
    let mut a = Autoscaler::new(concurrency(10.0));
    let t0 = Instant::now();
    let mut current = 1;
    let mut seen = Vec::new();
    for (i, load) in [20u64, 80, 200, 1000].into_iter().enumerate() {
        let t = t0 + secs(i as u64);
        let decision = a.decide(&obs(0, load, i as u64, Some(t)), current, t);
        seen.push(decision);
        current = decision.desired;
    }
    // Means 20, 50, 100, 325 -> 2, 5, 10, then 33 which max (10) caps.
    let expected = [
        (2, Reason::Panic),
        (5, Reason::Panic),
        (10, Reason::Panic),
        (10, Reason::Bounds),
    ];
    assert_eq!(seen, expected.map(|(n, r)| d(n, r)));
}

#[test]
fn stable_scale_down_is_rate_limited() {
    // (current, max_scale_down_rate, expected desired); the demand is 1 replica.
    let table = [
        (10, 2.0, 5),
        (5, 2.0, 3),
        (3, 2.0, 2),
        (2, 2.0, 1),
        (9, 3.0, 3),
        (10, 1.0, 10),
    ];
    let table = table.into_iter().chain([(10, f64::INFINITY, 1)]);
    for (current, rate, expected) in table {
        let mut a = Autoscaler::new(Policy {
            max_scale_down_rate: rate,
            ..Policy::default()
        });
        let t0 = Instant::now();
        let decision = a.decide(&obs(0, 1, 1, Some(t0)), current, t0);
        assert_eq!(
            decision,
            d(expected, Reason::Stable),
            "current {current}, rate {rate}"
        );
    }
}

#[test]
fn bounds_override_demand_and_say_so() {
    // (min, max, target, in_flight, current, expected)
    let table = [
        (0, 3, 10.0, 100, 3, d(3, Reason::Bounds)), // demand 10, capped at max
        (2, 10, 100.0, 1, 2, d(2, Reason::Bounds)), // demand 1, raised to min
        (0, 2, 100.0, 1, 5, d(2, Reason::Bounds)),  // max lowered below current
        (0, 10, 10.0, 30, 3, d(3, Reason::Stable)), // inside bounds
    ];
    for (i, (min, max, target, in_flight, current, expected)) in table.into_iter().enumerate() {
        let policy = Policy {
            min_replicas: min,
            max_replicas: max,
            ..concurrency(target)
        };
        let mut a = Autoscaler::new(policy);
        let t0 = Instant::now();
        assert_eq!(
            a.decide(&obs(0, in_flight, 1, Some(t0)), current, t0),
            expected,
            "case {i}"
        );
    }
}

#[test]
fn held_requests_with_replicas_refuse_scale_down_as_hold() {
    // (held, current, max, expected): window demand is 1 and the rate limit allows current / 2.
    let table = [
        (1, 4, 10, d(4, Reason::Hold)),
        (0, 4, 10, d(2, Reason::Stable)),
        (1, 1, 10, d(1, Reason::Stable)), // nothing to refuse
        (1, 6, 4, d(4, Reason::Bounds)),  // max still wins
    ];
    for (i, (held, current, max, expected)) in table.into_iter().enumerate() {
        let mut a = Autoscaler::new(Policy {
            max_replicas: max,
            ..Policy::default()
        });
        let t0 = Instant::now();
        assert_eq!(
            a.decide(&obs(held, 0, 1, Some(t0)), current, t0),
            expected,
            "case {i}"
        );
    }
}

#[test]
fn cold_start_with_a_held_request_does_not_ratchet_up() {
    let mut a = Autoscaler::new(Policy::default());
    let t0 = Instant::now();
    assert_eq!(a.decide(&obs(1, 0, 0, None), 0, t0), d(1, Reason::Wake));
    // The replica takes a minute to become ready; the request stays held meanwhile.
    for s in (2..=60).step_by(2) {
        let decision = a.decide(&obs(1, 0, 0, None), 1, t0 + secs(s));
        assert_eq!(decision, d(1, Reason::Stable), "at {s}s");
    }
}

#[test]
fn request_rate_scales_by_requests_per_second() {
    // (rps, target, current, expected)
    let table = [
        (50, 10.0, 5, 5),
        (51, 10.0, 5, 6),
        (1, 10.0, 1, 1),
        (8, 1.0, 8, 8),
    ];
    for (rps, target, current, expected) in table {
        let policy = Policy {
            metric: Metric::RequestRate { target },
            ..Policy::default()
        };
        let mut a = Autoscaler::new(policy);
        let t0 = Instant::now();
        let mut last = d(0, Reason::Idle);
        for s in (0..=60).step_by(2) {
            let t = t0 + secs(s);
            last = a.decide(&obs(0, 0, 1000 + rps * s, Some(t)), current, t);
        }
        assert_eq!(last, d(expected, Reason::Stable), "{rps} rps");
    }
}

#[test]
fn request_rate_from_a_single_sample_is_zero() {
    let policy = Policy {
        metric: Metric::RequestRate { target: 1.0 },
        ..Policy::default()
    };
    let mut a = Autoscaler::new(policy);
    let t0 = Instant::now();
    // A large counter on the first poll says nothing about the current rate.
    assert_eq!(
        a.decide(&obs(0, 1, 1_000_000, Some(t0)), 1, t0),
        d(1, Reason::Stable)
    );
}

#[test]
fn request_rate_ignores_counter_resets() {
    let policy = Policy {
        metric: Metric::RequestRate { target: 10.0 },
        ..Policy::default()
    };
    let mut a = Autoscaler::new(policy);
    let t0 = Instant::now();
    let mut last = d(0, Reason::Idle);
    // A proxy restarts between 2 s and 4 s; its counter starts over.
    for (s, total) in [(0, 1000), (2, 1010), (4, 5), (6, 15)] {
        let t = t0 + secs(s);
        last = a.decide(&obs(0, 0, total, Some(t)), 1, t);
    }
    assert_eq!(last, d(1, Reason::Stable));
    assert!(!a.in_panic());
}

#[test]
fn request_rate_from_polls_milliseconds_apart_is_not_inflated() {
    let policy = Policy {
        metric: Metric::RequestRate { target: 10.0 },
        ..Policy::default()
    };
    let mut a = Autoscaler::new(policy);
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_millis(10);
    assert_eq!(
        a.decide(&obs(0, 0, 100, Some(t0)), 1, t0),
        d(1, Reason::Stable)
    );
    // 5 requests in 10 ms is not 500 rps: the span counts as at least a second.
    assert_eq!(
        a.decide(&obs(0, 0, 105, Some(t1)), 1, t1),
        d(1, Reason::Stable)
    );
    assert!(!a.in_panic());
}

#[test]
fn samples_are_pruned_to_the_window_and_capped() {
    let t0 = Instant::now();
    let busy = obs(0, 1, 1, Some(t0));

    let mut a = Autoscaler::new(Policy::default());
    for s in 0..600 {
        let _ = a.decide(&busy, 1, t0 + secs(s));
    }
    assert_eq!(
        a.sample_count(),
        61,
        "one per second within a 60 s window, inclusive"
    );

    let mut a = Autoscaler::new(Policy::default());
    for _ in 0..100 {
        let _ = a.decide(&busy, 1, t0);
    }
    assert_eq!(
        a.sample_count(),
        1,
        "repeated calls at one instant keep one sample"
    );

    let huge = Policy {
        stable_window: secs(u32::MAX as u64),
        ..Policy::default()
    };
    let mut a = Autoscaler::new(huge);
    for ms in 0..10_000 {
        let _ = a.decide(&busy, 1, t0 + Duration::from_millis(ms));
    }
    assert_eq!(a.sample_count(), MAX_SAMPLES);
}

#[test]
fn invalid_policies_and_odd_inputs_never_panic() {
    let policies = [
        concurrency(f64::NAN),
        concurrency(0.0),
        concurrency(-5.0),
        concurrency(f64::INFINITY),
        Policy {
            metric: Metric::RequestRate { target: 0.0 },
            ..Policy::default()
        },
        Policy {
            panic_threshold: f64::NAN,
            ..Policy::default()
        },
        Policy {
            panic_threshold: 0.5,
            ..Policy::default()
        },
        Policy {
            max_scale_down_rate: f64::NAN,
            ..Policy::default()
        },
        Policy {
            max_scale_down_rate: 0.1,
            ..Policy::default()
        },
        Policy {
            max_replicas: 0,
            ..Policy::default()
        },
        Policy {
            min_replicas: 9,
            max_replicas: 3,
            ..Policy::default()
        },
        Policy {
            stable_window: Duration::ZERO,
            panic_window: secs(60),
            ..Policy::default()
        },
    ];
    let t0 = Instant::now();
    for (i, policy) in policies.into_iter().enumerate() {
        let hi = policy.max_replicas.max(1);
        let mut a = Autoscaler::new(policy);
        let inputs = [
            (obs(1, 0, 0, None), 0, 0),
            (obs(u64::MAX, u64::MAX, u64::MAX, Some(t0)), 1, 1),
            (obs(0, 3, 0, Some(t0 + secs(5))), u32::MAX, 2),
            (obs(0, 0, 7, Some(t0 + secs(99))), 4, 1), // last_activity in the future
            (obs(0, 0, 7, None), 2, 0),                // time going backwards
        ];
        for (j, (o, current, s)) in inputs.into_iter().enumerate() {
            let decision = a.decide(&o, current, t0 + secs(s));
            assert!(decision.desired <= hi, "policy {i} input {j}: {decision:?}");
        }
    }
}

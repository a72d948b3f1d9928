//! Knative-KPA-style stable/panic windows plus KEDA-style scale-to-zero, hardened against two
//! KEDA HTTP add-on bugs: #1692 (a lone request after a long idle never woke the target) and
//! #1352 (short requests between polls were invisible, so steady traffic scaled to zero).
//! Pure: no I/O and no clock reads; the caller passes `now`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Most samples one [`Autoscaler`] keeps, so a caller polling far faster than the stable window
/// needs cannot grow memory without bound; the oldest go first.
pub const MAX_SAMPLES: usize = 4096;

/// Shortest span a rate is divided by: two polls milliseconds apart must not turn a handful of
/// requests into a huge rate (and a panic).
const MIN_RATE_SPAN: Duration = Duration::from_secs(1);

/// What the proxies observed for one target, summed over proxy replicas, at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Observation {
    /// Requests waiting because the target has no ready endpoint (or all are at their cap).
    pub held: u64,
    /// Requests being served, including open long-lived streams (WebSocket, SSE).
    pub in_flight: u64,
    /// Monotonic count of requests admitted since start; feeds the rate metric and activity.
    pub requests_total: u64,
    /// Last time a request started or finished; `None` = never.
    pub last_activity: Option<Instant>,
}

/// The load one replica should carry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Metric {
    /// `held + in_flight` per replica.
    Concurrency { target: f64 },
    /// Admitted requests per second per replica.
    RequestRate { target: f64 },
}

impl Metric {
    /// The per-replica load this metric aims for.
    pub fn target(self) -> f64 {
        match self {
            Self::Concurrency { target } | Self::RequestRate { target } => target,
        }
    }
}

/// Scaling rules for one workload. Run [`Policy::validate`] on user input; an invalid policy
/// still never panics [`Autoscaler::decide`], it is clamped to something usable instead.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub metric: Metric,
    /// Averaging window for normal decisions (default 60 s).
    pub stable_window: Duration,
    /// Short window that detects bursts (default 6 s).
    pub panic_window: Duration,
    /// Panic when panic-window demand / current replicas reaches this (default 2.0 = 200 %).
    pub panic_threshold: f64,
    /// Idle time before going to `min_replicas` (default 300 s, KEDA's default).
    pub scaledown_period: Duration,
    /// After a wake from zero, never return to zero before this (default 0).
    pub initial_cooldown: Duration,
    /// One stable decision never goes below `ceil(current / rate)` (default 2.0).
    pub max_scale_down_rate: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            min_replicas: 0,
            max_replicas: 10,
            metric: Metric::Concurrency { target: 100.0 },
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
            panic_threshold: 2.0,
            scaledown_period: Duration::from_secs(300),
            initial_cooldown: Duration::ZERO,
            max_scale_down_rate: 2.0,
        }
    }
}

impl Policy {
    /// Every problem at once, each message naming the offending field.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let (min, max, target) = (self.min_replicas, self.max_replicas, self.metric.target());
        let (panic, stable) = (self.panic_window, self.stable_window);
        let (threshold, rate) = (self.panic_threshold, self.max_scale_down_rate);
        let checks = [
            (
                min > max,
                format!("replicas.min ({min}) must not exceed replicas.max ({max})"),
            ),
            (max < 1, format!("replicas.max ({max}) must be at least 1")),
            (
                !target.is_finite() || target <= 0.0,
                format!("metric.target ({target}) must be a finite number above 0"),
            ),
            (
                panic > stable,
                format!("panic_window ({panic:?}) must not exceed stable_window ({stable:?})"),
            ),
            (
                threshold.is_nan() || threshold <= 1.0,
                format!("panic_threshold ({threshold}) must be above 1"),
            ),
            (
                rate.is_nan() || rate < 1.0,
                format!("max_scale_down_rate ({rate}) must be at least 1"),
            ),
        ];
        let errors: Vec<String> = checks
            .into_iter()
            .filter_map(|(bad, message)| bad.then_some(message))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// Upper bound actually applied: at least 1, so a wake is possible even if unvalidated.
    fn hi(&self) -> u32 {
        self.max_replicas.max(1)
    }

    /// Lower bound actually applied: never above `hi`, so clamping cannot invert.
    fn lo(&self) -> u32 {
        self.min_replicas.min(self.hi())
    }

    /// Floor while the target is in use: one replica, or `min_replicas` if higher.
    fn active_floor(&self) -> u32 {
        self.lo().max(1)
    }

    /// Applies `[min, max]`; if that changed the value, the bounds decided, so say so.
    fn bound(&self, desired: u32, reason: Reason) -> ScaleDecision {
        let bounded = desired.max(self.lo()).min(self.hi());
        let reason = if bounded == desired {
            reason
        } else {
            Reason::Bounds
        };
        ScaleDecision {
            desired: bounded,
            reason,
        }
    }
}

/// Why a decision came out as it did; [`Reason::as_str`] is the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Held requests found the target at zero: `max(1, min_replicas)` at once.
    Wake,
    /// No activity for `scaledown_period` (or already at zero with nothing to do): `min_replicas`.
    Idle,
    /// Stable-window demand, limited by `max_scale_down_rate`.
    Stable,
    /// Burst seen in the panic window; never scales down until it has passed.
    Panic,
    /// `min_replicas`/`max_replicas` overrode the demand (e.g. capped at max).
    Bounds,
    /// Requests are queued while replicas exist, so a window-driven scale-down was refused and
    /// `current` kept. Deliberately not "+1 per decision": `current` counts starting replicas,
    /// so during a cold start that would ratchet to max; held requests already count toward
    /// concurrency, which drives scale-out.
    Hold,
}

impl Reason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Wake => "wake",
            Self::Idle => "idle",
            Self::Stable => "stable",
            Self::Panic => "panic",
            Self::Bounds => "bounds",
            Self::Hold => "hold",
        }
    }
}

/// Replicas wanted, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScaleDecision {
    pub desired: u32,
    pub reason: Reason,
}

impl ScaleDecision {
    pub const fn new(desired: u32, reason: Reason) -> Self {
        Self { desired, reason }
    }
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    concurrency: f64,
    requests_total: u64,
}

/// Owns the sample windows for one target; one per scaled workload.
#[derive(Clone, Debug)]
pub struct Autoscaler {
    policy: Policy,
    samples: VecDeque<Sample>,
    /// `requests_total` at the previous call, to see requests that came and went between polls.
    last_total: Option<u64>,
    /// Latest call that showed activity: a `requests_total` change or anything held/in flight.
    seen_active: Option<Instant>,
    last_wake: Option<Instant>,
    /// `Some` while panicking: the last time the panic threshold was met.
    panic_triggered: Option<Instant>,
}

impl Autoscaler {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            samples: VecDeque::new(),
            last_total: None,
            seen_active: None,
            last_wake: None,
            panic_triggered: None,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Whether the last decision was made in panic mode (for a gauge).
    pub fn in_panic(&self) -> bool {
        self.panic_triggered.is_some()
    }

    #[cfg(test)]
    pub(super) fn sample_count(&self) -> usize {
        self.samples.len()
    }

    /// Record an observation and decide. `current` = replicas the platform has now (ready or
    /// starting). Rules, in order: wake from zero; stay at zero; idle to min; stable/panic
    /// windows, where held requests refuse a scale-down (`Hold`); then `[min, max]` (`Bounds`).
    #[must_use]
    pub fn decide(&mut self, obs: &Observation, current: u32, now: Instant) -> ScaleDecision {
        self.record(obs, now);
        let (desired, reason) = if obs.held > 0 && current == 0 {
            // KEDA #1692: never consult the windows here; a week-old average rounds to zero.
            self.last_wake = Some(now);
            self.panic_triggered = None;
            (self.policy.active_floor(), Reason::Wake)
        } else if current == 0 && obs.in_flight == 0 {
            self.panic_triggered = None;
            match self.policy.lo() {
                0 => (0, Reason::Idle),
                min => (min, Reason::Bounds),
            }
        } else if self.is_idle(obs, now) {
            self.panic_triggered = None;
            (self.policy.lo(), Reason::Idle)
        } else {
            match self.windowed(current, now) {
                (desired, _) if obs.held > 0 && desired < current => (current, Reason::Hold),
                windowed => windowed,
            }
        };
        self.policy.bound(desired, reason)
    }

    fn record(&mut self, obs: &Observation, now: Instant) {
        // A used target seen first without a timestamp (a controller restart, say) counts as
        // active now: "never" would scale it straight to zero whatever its traffic.
        let total_moved = match self.last_total {
            Some(t) => t != obs.requests_total,
            None => obs.requests_total > 0 && obs.last_activity.is_none(),
        };
        if total_moved || obs.held > 0 || obs.in_flight > 0 {
            self.seen_active = self.seen_active.max(Some(now));
        }
        self.last_total = Some(obs.requests_total);
        let sample = Sample {
            at: now,
            concurrency: obs.held.saturating_add(obs.in_flight) as f64,
            requests_total: obs.requests_total,
        };
        match self.samples.back_mut() {
            Some(last) if last.at == now => *last = sample,
            _ => self.samples.push_back(sample),
        }
        let window = self.policy.stable_window;
        while self
            .samples
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.at) > window)
        {
            self.samples.pop_front();
        }
        while self.samples.len() > MAX_SAMPLES {
            self.samples.pop_front();
        }
    }

    /// Idle is judged from timestamps and `requests_total` deltas, never from sampled
    /// concurrency: KEDA #1352, where one short request a minute fell between polls.
    fn is_idle(&self, obs: &Observation, now: Instant) -> bool {
        if obs.held > 0 || obs.in_flight > 0 {
            return false;
        }
        let p = &self.policy;
        let last = obs.last_activity.max(self.seen_active);
        let quiet = last.is_none_or(|t| now.saturating_duration_since(t) >= p.scaledown_period);
        let cooling = self
            .last_wake
            .is_some_and(|w| now.saturating_duration_since(w) < p.initial_cooldown);
        quiet && !cooling
    }

    /// Stable/panic decision before bounds, floored at one replica because the target is active.
    fn windowed(&mut self, current: u32, now: Instant) -> (u32, Reason) {
        let p = &self.policy;
        let target = p.metric.target();
        let stable = replicas_for(self.window_value(p.stable_window, now), target).max(1);
        let burst = replicas_for(self.window_value(p.panic_window, now), target).max(1);
        // Demand beyond max cannot be served, so it must not keep panic alive on its own.
        let ratio = f64::from(burst.min(p.hi())) / f64::from(current.max(1));
        if ratio >= p.panic_threshold {
            self.panic_triggered = Some(now);
        } else if self
            .panic_triggered
            .is_some_and(|t| now.saturating_duration_since(t) >= p.stable_window)
        {
            self.panic_triggered = None;
        }
        if self.panic_triggered.is_some() {
            return (burst.max(stable).max(current), Reason::Panic);
        }
        // Rates below 1 (or NaN, which `f64::max` drops) would force a scale-up: use 1.
        let step_floor = replicas_for(f64::from(current), p.max_scale_down_rate.max(1.0));
        (stable.max(step_floor), Reason::Stable)
    }

    /// Concurrency: mean of samples in the window. Rate: requests admitted since the oldest
    /// sample in the window, over the span actually covered (so a young autoscaler is not
    /// diluted by an empty window); a lone sample gives 0. Counter drops (a proxy restarted)
    /// count as 0, not as a negative or wrapped delta.
    fn window_value(&self, window: Duration, now: Instant) -> f64 {
        let mut in_window = self
            .samples
            .iter()
            .filter(|s| now.saturating_duration_since(s.at) <= window);
        match self.policy.metric {
            Metric::Concurrency { .. } => {
                let (sum, n) =
                    in_window.fold((0.0, 0usize), |(sum, n), s| (sum + s.concurrency, n + 1));
                if n == 0 { 0.0 } else { sum / n as f64 }
            }
            Metric::RequestRate { .. } => {
                let Some(base) = in_window.next() else {
                    return 0.0;
                };
                let (mut prev, mut admitted) = (base, 0u64);
                for s in in_window {
                    admitted = admitted
                        .saturating_add(s.requests_total.saturating_sub(prev.requests_total));
                    prev = s;
                }
                let span = prev.at.saturating_duration_since(base.at);
                if span.is_zero() {
                    return 0.0;
                }
                admitted as f64 / span.max(MIN_RATE_SPAN).as_secs_f64()
            }
        }
    }
}

/// Replicas needed to carry `load` at `per_replica` each. `as` saturates: NaN and negatives
/// give 0 and infinities `u32::MAX`, so a bad policy or metric cannot panic.
fn replicas_for(load: f64, per_replica: f64) -> u32 {
    (load / per_replica).ceil() as u32
}

#[cfg(test)]
mod tests;

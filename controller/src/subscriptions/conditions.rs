//! The status a subscription should have, decided from its [`Assessment`]: one small function
//! per condition, then when to write it. Pure (no API calls); the only clocks are the `now`s
//! the functions are given.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use rouse_core::crd::conditions::{self, reason, status};
use rouse_core::crd::{EventSubscription, EventSubscriptionStatus};

use super::assess::Assessment;

/// The shortest time between two status writes for `pending`/`deadLettered` alone, per
/// subscription. A busy queue changes every millisecond and every status write costs an etcd
/// write (and a watch event to everyone watching the object), so counts are a sample, not a
/// stream. Condition changes are written at once regardless, and carry the current counts.
pub(super) const COUNTS_MIN_INTERVAL: Duration = Duration::from_secs(5);

/// The `Validated` message when no replica serves the webhook and none says why: the usual
/// cause is proxies without a queue to accept events into.
const NOT_SERVED_HINT: &str =
    "no connected proxy replica serves this webhook; are the proxies started with --nats-url?";

/// One condition as decided, before it is stamped with a generation and a transition time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Verdict {
    /// One of the types in [`conditions`].
    pub type_: &'static str,
    /// One of [`status`].
    pub status: &'static str,
    /// One of [`reason`].
    pub reason: &'static str,
    pub message: String,
}

impl Verdict {
    fn new(
        type_: &'static str,
        status: &'static str,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Verdict {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// The `status` a condition of `type_` has when all is well: `"False"` for the problem
/// condition PathConflict, `"True"` for the others.
fn fine_status(type_: &str) -> &'static str {
    if type_ == conditions::PATH_CONFLICT {
        status::FALSE
    } else {
        status::TRUE
    }
}

/// Whether a condition reports a problem: the opposite of its fine status. `"Unknown"` is not
/// (yet) a problem.
fn is_bad(type_: &str, status_: &str) -> bool {
    let problem = if fine_status(type_) == status::TRUE {
        status::FALSE
    } else {
        status::TRUE
    };
    status_ == problem
}

/// A handshake time as Kubernetes stores it: whole seconds (so a time read back compares equal
/// to the one written).
pub(super) fn handshake_time(ms: u64) -> Option<Timestamp> {
    let secs = i64::try_from(ms / 1000).ok()?;
    Timestamp::from_second(secs).ok()
}

/// Validated: the spec, then whether a proxy replica serves the webhook, then the handshake.
///
/// While no replica has had time to report a new subscription (before `a.reports_due`), "not
/// served" is `"Unknown"`, not yet `"False"`.
pub(super) fn validated(a: &Assessment, handshake: Option<Timestamp>, now: Timestamp) -> Verdict {
    let v = |status, reason, message| Verdict::new(conditions::VALIDATED, status, reason, message);
    if !a.invalid.is_empty() {
        return v(status::FALSE, reason::INVALID_SPEC, a.invalid.join("; "));
    }
    let o = &a.observed;
    if o.served_by == 0 {
        if o.problems.is_empty() && now < a.reports_due {
            let message = "no proxy replica has reported this webhook yet".to_string();
            return v(status::UNKNOWN, reason::NOT_SERVED, message);
        }
        let message = if o.problems.is_empty() {
            NOT_SERVED_HINT.to_string()
        } else {
            format!(
                "no connected proxy replica serves this webhook: {}",
                o.problems.join("; ")
            )
        };
        return v(status::FALSE, reason::NOT_SERVED, message);
    }
    match handshake {
        Some(at) => v(
            status::TRUE,
            reason::HANDSHAKE_ANSWERED,
            format!("last validation handshake at {at}"),
        ),
        None => v(
            status::TRUE,
            reason::AWAITING_HANDSHAKE,
            "served; no validation handshake answered yet (a sender validates the endpoint \
             when its subscription is created)"
                .to_string(),
        ),
    }
}

/// TargetFound: `spec.target.httpScaledObject` names an object in the same namespace.
pub(super) fn target_found(a: &Assessment) -> Verdict {
    let target = &a.target;
    if a.target_found {
        Verdict::new(
            conditions::TARGET_FOUND,
            status::TRUE,
            reason::RECONCILED,
            format!("HTTPScaledObject {target} found"),
        )
    } else {
        Verdict::new(
            conditions::TARGET_FOUND,
            status::FALSE,
            reason::HTTP_SCALED_OBJECT_NOT_FOUND,
            format!("spec.target.httpScaledObject: HTTPScaledObject \"{target}\" not found"),
        )
    }
}

/// What a proxy's Secret problem says, split from its text by the rule in [`secret_reason`].
struct SecretProblem<'a> {
    /// The Secret exists and holds no non-empty entry.
    empty: bool,
    /// The problem without its `secret "<namespace>/<name>" ` prefix (all of it when it has
    /// none).
    what: &'a str,
}

/// Splits a proxy's problem text, which reads `secret "<namespace>/<name>" <what>` with `<what>`
/// one of `not found`, `has no non-empty entry` or `cannot be read: <error>`.
fn secret_problem(problem: &str) -> SecretProblem<'_> {
    let what = problem
        .strip_prefix("secret \"")
        .and_then(|rest| rest.split_once('"'))
        .map_or(problem, |(_, what)| what.trim_start());
    SecretProblem {
        empty: what.starts_with("has no non-empty entry"),
        what,
    }
}

/// SecretFound's reason from the proxies' problems: `SecretEmpty` when every problem's `<what>`
/// (see [`secret_problem`]) starts with `has no non-empty entry`; otherwise `SecretNotFound`
/// (`not found`, `cannot be read: …` and any text this build does not know: the proxies could
/// not load keys from the Secret, and the message carries their words). When replicas disagree,
/// the more basic problem (no Secret) wins.
fn secret_reason(problems: &[String]) -> &'static str {
    if problems.iter().all(|p| secret_problem(p).empty) {
        reason::SECRET_EMPTY
    } else {
        reason::SECRET_NOT_FOUND
    }
}

/// SecretFound, from the serving replicas' reports (the controller never reads Secrets): no key
/// needed, a problem loading it, nobody serving (so nobody looked: `"Unknown"`), or loaded.
pub(super) fn secret_found(a: &Assessment) -> Verdict {
    let v =
        |status, reason, message| Verdict::new(conditions::SECRET_FOUND, status, reason, message);
    let Some(secret) = &a.secret else {
        return v(
            status::TRUE,
            reason::NO_SECRET_NEEDED,
            "spec.auth.keySecretRef is not set: no key needed".to_string(),
        );
    };
    let o = &a.observed;
    if !o.secret_problems.is_empty() {
        let mut whats: Vec<&str> = Vec::new();
        for p in &o.secret_problems {
            let what = secret_problem(p).what;
            if !whats.contains(&what) {
                whats.push(what);
            }
        }
        return v(
            status::FALSE,
            secret_reason(&o.secret_problems),
            format!(
                "spec.auth.keySecretRef.name: Secret \"{secret}\" {}",
                whats.join("; ")
            ),
        );
    }
    if o.served_by == 0 {
        return v(
            status::UNKNOWN,
            reason::NOT_SERVED,
            format!(
                "no proxy replica serves this webhook, so none has read Secret \"{secret}\" \
                 (spec.auth.keySecretRef.name) yet"
            ),
        );
    }
    v(
        status::TRUE,
        reason::RECONCILED,
        format!("Secret \"{secret}\" holds the accepted keys"),
    )
}

/// PathConflict: `"True"` when an older subscription keeps this one's path.
pub(super) fn path_conflict(a: &Assessment) -> Verdict {
    let path = &a.path;
    match &a.path_kept_by {
        Some(older) => Verdict::new(
            conditions::PATH_CONFLICT,
            status::TRUE,
            reason::PATH_TAKEN,
            format!("spec.path \"{path}\" is kept by the older EventSubscription {older}"),
        ),
        None => Verdict::new(
            conditions::PATH_CONFLICT,
            status::FALSE,
            reason::NO_CONFLICT,
            format!("no other EventSubscription claims spec.path \"{path}\""),
        ),
    }
}

/// Ready: every other condition fine (Validated, TargetFound and SecretFound `"True"`,
/// PathConflict `"False"`). Otherwise the failing ones' messages, and the reason of the first
/// failing one in that order, except that `NotServed` comes last: a proxy refuses a webhook
/// whose spec, target or path is wrong, so "not served" is usually the consequence of the
/// other, more telling problem.
pub(super) fn ready(others: &[Verdict]) -> Verdict {
    let failing: Vec<&Verdict> = others
        .iter()
        .filter(|v| v.status != fine_status(v.type_))
        .collect();
    let Some(first) = failing
        .iter()
        .find(|v| v.reason != reason::NOT_SERVED)
        .or(failing.first())
    else {
        return Verdict::new(
            conditions::READY,
            status::TRUE,
            reason::RECONCILED,
            "webhook served and its target found",
        );
    };
    let message = failing
        .iter()
        .map(|v| v.message.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    Verdict::new(conditions::READY, status::FALSE, first.reason, message)
}

/// Every condition, in the order they are written: Ready, Validated, TargetFound, SecretFound,
/// PathConflict. `handshake` is the last validation handshake known.
pub(super) fn decide(a: &Assessment, handshake: Option<Timestamp>, now: Timestamp) -> [Verdict; 5] {
    let others = [
        validated(a, handshake, now),
        target_found(a),
        secret_found(a),
        path_conflict(a),
    ];
    let [validated, target, secret, conflict] = others.clone();
    [ready(&others), validated, target, secret, conflict]
}

/// A count as the status stores it.
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The status `o` should have. Keeps a condition's `lastTransitionTime` while its status holds
/// (a condition that is new or flipped gets `now`), and what the proxies cannot tell right now:
/// the counts while no replica serves the webhook, the last handshake after the replicas that
/// answered it restarted.
pub(super) fn status_of(
    o: &EventSubscription,
    a: &Assessment,
    previous: &EventSubscriptionStatus,
    now: &Time,
) -> EventSubscriptionStatus {
    let generation = o.metadata.generation;
    let observed = &a.observed;
    let handshake = observed
        .handshake_ms
        .and_then(handshake_time)
        .max(previous.last_handshake_time.as_ref().map(|t| t.0));
    let conditions = decide(a, handshake, now.0)
        .into_iter()
        .map(|v| stamp(v, generation, &previous.conditions, now))
        .collect();
    let served = observed.served_by > 0;
    EventSubscriptionStatus {
        conditions,
        observed_generation: generation,
        pending: if served {
            Some(count(observed.pending))
        } else {
            previous.pending
        },
        dead_lettered: observed.dead_lettered.map(count).or(previous.dead_lettered),
        last_handshake_time: handshake.map(Time),
    }
}

/// `v` as a status condition; the transition time is the previous one while the status holds.
fn stamp(v: Verdict, generation: Option<i64>, previous: &[Condition], now: &Time) -> Condition {
    let since = previous
        .iter()
        .find(|p| p.type_ == v.type_)
        .filter(|p| p.status == v.status)
        .map_or_else(|| now.clone(), |p| p.last_transition_time.clone());
    Condition {
        type_: v.type_.to_string(),
        status: v.status.to_string(),
        reason: v.reason.to_string(),
        message: v.message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// `s` without what may change without a write being due: transition times and counts.
fn without_counts(s: &EventSubscriptionStatus) -> EventSubscriptionStatus {
    let mut s = s.clone();
    for c in &mut s.conditions {
        c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
    }
    s.pending = None;
    s.dead_lettered = None;
    s
}

/// Whether counts may be written at `now`, the last write having been at `last` (`None`: not by
/// this replica since it leads).
pub(super) fn counts_due(last: Option<Instant>, now: Instant) -> bool {
    last.is_none_or(|t| now.saturating_duration_since(t) >= COUNTS_MIN_INTERVAL)
}

/// Whether to write `status` over `previous` at `now`: when the object has no status yet, when
/// anything but the counts changed (at once), or when only the counts changed and
/// [`counts_due`] (the status was last written at `written`).
pub(super) fn should_write(
    previous: &EventSubscriptionStatus,
    status: &EventSubscriptionStatus,
    has_status: bool,
    written: Option<Instant>,
    now: Instant,
) -> bool {
    if !has_status || without_counts(previous) != without_counts(status) {
        return true;
    }
    let counts_changed =
        (previous.pending, previous.dead_lettered) != (status.pending, status.dead_lettered);
    counts_changed && counts_due(written, now)
}

/// The conditions that differ from `previous` in status, reason or message (or are new): what
/// is logged when `status` is written.
pub(super) fn changes<'a>(
    previous: &EventSubscriptionStatus,
    status: &'a EventSubscriptionStatus,
) -> Vec<&'a Condition> {
    status
        .conditions
        .iter()
        .filter(|c| {
            let before = previous.conditions.iter().find(|p| p.type_ == c.type_);
            before.is_none_or(|b| {
                (&b.status, &b.reason, &b.message) != (&c.status, &c.reason, &c.message)
            })
        })
        .collect()
}

/// The conditions worth a Warning Event once `status` replaces `previous`: each bad one whose
/// status or reason changed. Not Ready, which only repeats the others.
pub(super) fn warnings<'a>(
    previous: &EventSubscriptionStatus,
    status: &'a EventSubscriptionStatus,
) -> Vec<&'a Condition> {
    status
        .conditions
        .iter()
        .filter(|c| {
            let before = previous.conditions.iter().find(|p| p.type_ == c.type_);
            let changed = before.is_none_or(|b| b.status != c.status || b.reason != c.reason);
            is_bad(&c.type_, &c.status) && changed && c.type_ != conditions::READY
        })
        .collect()
}

//! The EventSubscription decisions, from watched state and proxy reports to status, without an
//! API server or a proxy.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use rouse_core::crd::conditions::{self, reason, status};
use rouse_core::crd::{EventSubscription, EventSubscriptionStatus};

use super::assess::{Assessment, World, assess};
use super::conditions::{
    COUNTS_MIN_INTERVAL, Verdict, changes, counts_due, decide, path_conflict, ready, secret_found,
    should_write, status_of, target_found, validated, warnings,
};
use super::serve_grace;
use crate::demand::EventsObservation;

/// The grace the test worlds give the proxies to report a subscription.
const GRACE: Duration = Duration::from_secs(5);

/// A subscription `namespace/name`, created `created_secs` after the epoch, with `spec` (YAML).
fn subscription(key: &str, created_secs: i64, spec: &str) -> Arc<EventSubscription> {
    let (namespace, name) = key.split_once('/').expect("namespace/name");
    let yaml = format!(
        "apiVersion: rouse.dev/v1alpha1\nkind: EventSubscription\n\
         metadata: {{name: {name}, namespace: {namespace}, generation: 2, \
         creationTimestamp: \"1970-01-01T00:00:{created_secs:02}Z\"}}\nspec: {spec}\n"
    );
    Arc::new(serde_yaml::from_str(&yaml).expect("subscription parses"))
}

/// `team/<name>` on `path`, delivering to the HTTPScaledObject `fn`.
fn open(name: &str, created_secs: i64, path: &str) -> Arc<EventSubscription> {
    let spec = format!("{{path: {path}, target: {{httpScaledObject: fn}}}}");
    subscription(&format!("team/{name}"), created_secs, &spec)
}

/// `team/<name>` on `/keyed`, its keys in the Secret `keys`.
fn keyed(name: &str) -> Arc<EventSubscription> {
    subscription(
        &format!("team/{name}"),
        1,
        "{path: /keyed, target: {httpScaledObject: fn}, \
         auth: {keySecretRef: {name: keys}, keyHeader: x-key}}",
    )
}

/// The world with `subscriptions`, the HTTPScaledObjects `objects` (keys) and no reports; the
/// reconciler started at the epoch.
fn world(subscriptions: &[&Arc<EventSubscription>], objects: &[&str]) -> World {
    World {
        subscriptions: subscriptions.iter().map(|s| Arc::clone(s)).collect(),
        objects: objects
            .iter()
            .map(|o| (*o).to_string())
            .collect::<HashSet<_>>(),
        reports: HashMap::new(),
        started: Timestamp::UNIX_EPOCH,
        grace: GRACE,
    }
}

/// `s` assessed alone, its target there, reported as `observed`.
fn assessed(s: &Arc<EventSubscription>, observed: EventsObservation) -> Assessment {
    let mut w = world(&[s], &["team/fn"]);
    w.reports.insert(key(s), observed);
    assess(&w).remove(&key(s)).expect("assessed")
}

fn key(s: &EventSubscription) -> String {
    rouse_core::crd::subscription_key(s)
}

/// Served by `n` replicas, nothing else reported.
fn served(n: usize) -> EventsObservation {
    EventsObservation {
        served_by: n,
        ..EventsObservation::default()
    }
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).expect("timestamp")
}

fn at(secs: i64) -> Time {
    Time(ts(secs))
}

/// Long after every test object's grace.
fn later() -> Timestamp {
    ts(1000)
}

fn assert_verdict(v: &Verdict, type_: &str, status: &str, reason: &str) {
    assert_eq!(
        (v.type_, v.status, v.reason),
        (type_, status, reason),
        "{v:?}"
    );
}

#[test]
fn an_invalid_spec_makes_validated_false_naming_every_field_and_comes_first_in_ready() {
    let bad = subscription(
        "team/bad",
        1,
        "{path: /bad, schema: cloudevents, target: {httpScaledObject: gone}, \
         forwardHeaders: [\"no spaces\"]}",
    );
    let a = assessed(&bad, EventsObservation::default());
    let [r, v, t, ..] = decide(&a, None, later());
    assert_verdict(
        &v,
        conditions::VALIDATED,
        status::FALSE,
        reason::INVALID_SPEC,
    );
    assert_eq!(v.message, bad.spec.validate().join("; "));
    assert!(v.message.contains("spec.delivery.format"), "{v:?}");
    assert!(v.message.contains("spec.forwardHeaders[0]"), "{v:?}");
    assert_verdict(
        &t,
        conditions::TARGET_FOUND,
        status::FALSE,
        reason::HTTP_SCALED_OBJECT_NOT_FOUND,
    );
    assert_verdict(&r, conditions::READY, status::FALSE, reason::INVALID_SPEC);
    assert!(r.message.starts_with(&v.message), "{r:?}");
}

#[test]
fn an_unreported_subscription_is_unknown_during_the_grace_then_not_served_with_a_hint() {
    let s = open("orders", 10, "/orders");
    let a = assessed(&s, EventsObservation::default());
    assert_eq!(a.reports_due, ts(15), "created at 10 s, 5 s of grace");
    let early = validated(&a, None, ts(14));
    assert_verdict(
        &early,
        conditions::VALIDATED,
        status::UNKNOWN,
        reason::NOT_SERVED,
    );
    let late = validated(&a, None, ts(15));
    assert_verdict(
        &late,
        conditions::VALIDATED,
        status::FALSE,
        reason::NOT_SERVED,
    );
    assert_eq!(
        late.message,
        "no connected proxy replica serves this webhook; are the proxies started with \
         --nats-url?"
    );

    // The reconciler started after the object: the grace runs from its start.
    let mut w = world(&[&s], &["team/fn"]);
    w.started = ts(100);
    assert_eq!(assess(&w)["team/orders"].reports_due, ts(105));
    assert_eq!(
        serve_grace(Duration::from_secs(10)),
        Duration::from_secs(30)
    );
    assert_eq!(
        serve_grace(Duration::from_millis(100)),
        Duration::from_secs(5)
    );
}

#[test]
fn replicas_that_say_why_they_do_not_serve_make_it_not_served_at_once() {
    let s = open("orders", 10, "/orders");
    let a = assessed(
        &s,
        EventsObservation {
            problems: vec!["p1: no queue".into(), "p2: no queue".into()],
            ..EventsObservation::default()
        },
    );
    let v = validated(&a, None, ts(11));
    assert_verdict(&v, conditions::VALIDATED, status::FALSE, reason::NOT_SERVED);
    assert_eq!(
        v.message,
        "no connected proxy replica serves this webhook: p1: no queue; p2: no queue"
    );
}

#[test]
fn a_served_subscription_awaits_a_handshake_then_names_its_time() {
    let s = open("orders", 1, "/orders");
    let a = assessed(&s, served(2));
    let v = validated(&a, None, later());
    assert_verdict(
        &v,
        conditions::VALIDATED,
        status::TRUE,
        reason::AWAITING_HANDSHAKE,
    );
    let v = validated(&a, Some(ts(1_700_000_000)), later());
    assert_verdict(
        &v,
        conditions::VALIDATED,
        status::TRUE,
        reason::HANDSHAKE_ANSWERED,
    );
    assert_eq!(
        v.message,
        "last validation handshake at 2023-11-14T22:13:20Z"
    );
}

#[test]
fn target_found_names_the_object_and_the_field() {
    let s = open("orders", 1, "/orders");
    let mut w = world(&[&s], &["team/other", "elsewhere/fn"]);
    let v = target_found(&assess(&w)["team/orders"]);
    assert_verdict(
        &v,
        conditions::TARGET_FOUND,
        status::FALSE,
        reason::HTTP_SCALED_OBJECT_NOT_FOUND,
    );
    assert_eq!(
        v.message,
        "spec.target.httpScaledObject: HTTPScaledObject \"team/fn\" not found"
    );
    w.objects.insert("team/fn".into());
    let v = target_found(&assess(&w)["team/orders"]);
    assert_verdict(
        &v,
        conditions::TARGET_FOUND,
        status::TRUE,
        reason::RECONCILED,
    );
    assert_eq!(v.message, "HTTPScaledObject team/fn found");
}

#[test]
fn secret_found_needs_no_secret_without_a_key_secret_ref() {
    let a = assessed(&open("orders", 1, "/orders"), EventsObservation::default());
    assert_eq!(a.secret, None);
    let v = secret_found(&a);
    assert_verdict(
        &v,
        conditions::SECRET_FOUND,
        status::TRUE,
        reason::NO_SECRET_NEEDED,
    );
}

#[test]
fn secret_found_is_unknown_until_a_replica_serves_then_true_without_problems() {
    let s = keyed("orders");
    let unserved = assessed(&s, EventsObservation::default());
    assert_eq!(unserved.secret.as_deref(), Some("team/keys"));
    let v = secret_found(&unserved);
    assert_verdict(
        &v,
        conditions::SECRET_FOUND,
        status::UNKNOWN,
        reason::NOT_SERVED,
    );
    assert!(v.message.contains("\"team/keys\""), "{v:?}");
    assert!(v.message.contains("spec.auth.keySecretRef.name"), "{v:?}");

    let v = secret_found(&assessed(&s, served(1)));
    assert_verdict(
        &v,
        conditions::SECRET_FOUND,
        status::TRUE,
        reason::RECONCILED,
    );
    assert_eq!(v.message, "Secret \"team/keys\" holds the accepted keys");
}

#[test]
fn secret_problems_pick_not_found_or_empty_by_what_the_proxies_say() {
    let s = keyed("orders");
    let with = |problems: &[&str]| {
        let mut o = served(2);
        o.secret_problems = problems.iter().map(|p| (*p).to_string()).collect();
        secret_found(&assessed(&s, o))
    };
    let cases: [(&[&str], &str, &str); 6] = [
        (
            &["secret \"team/keys\" not found"],
            reason::SECRET_NOT_FOUND,
            "Secret \"team/keys\" not found",
        ),
        (
            &["secret \"team/keys\" has no non-empty entry"],
            reason::SECRET_EMPTY,
            "Secret \"team/keys\" has no non-empty entry",
        ),
        (
            &["secret \"team/keys\" cannot be read: forbidden"],
            reason::SECRET_NOT_FOUND,
            "Secret \"team/keys\" cannot be read: forbidden",
        ),
        (
            // Replicas disagree (mid-change): the more basic problem wins.
            &[
                "secret \"team/keys\" has no non-empty entry",
                "secret \"team/keys\" not found",
            ],
            reason::SECRET_NOT_FOUND,
            "Secret \"team/keys\" has no non-empty entry; not found",
        ),
        (
            &[
                "secret \"team/keys\" has no non-empty entry",
                "secret \"team/keys\" has no non-empty entry",
            ],
            reason::SECRET_EMPTY,
            "Secret \"team/keys\" has no non-empty entry",
        ),
        (
            // A text this build does not know is passed on whole.
            &["keys went missing"],
            reason::SECRET_NOT_FOUND,
            "Secret \"team/keys\" keys went missing",
        ),
    ];
    for (problems, why, message) in cases {
        let v = with(problems);
        assert_verdict(&v, conditions::SECRET_FOUND, status::FALSE, why);
        assert_eq!(
            v.message,
            format!("spec.auth.keySecretRef.name: {message}"),
            "{problems:?}"
        );
    }
}

#[test]
fn the_newer_of_two_subscriptions_on_a_path_gets_path_conflict_naming_the_older() {
    let older = subscription(
        "zeta/first",
        1,
        "{path: /shared/, target: {httpScaledObject: fn}}",
    );
    let newer = open("second", 2, "/shared");
    let alone = open("third", 3, "/other");
    let all = assess(&world(&[&newer, &alone, &older], &["team/fn", "zeta/fn"]));

    let v = path_conflict(&all["team/second"]);
    assert_verdict(
        &v,
        conditions::PATH_CONFLICT,
        status::TRUE,
        reason::PATH_TAKEN,
    );
    assert_eq!(
        v.message,
        "spec.path \"/shared\" is kept by the older EventSubscription zeta/first"
    );
    let [r, ..] = decide(&all["team/second"], None, later());
    assert_verdict(&r, conditions::READY, status::FALSE, reason::PATH_TAKEN);

    for winner in ["zeta/first", "team/third"] {
        let v = path_conflict(&all[winner]);
        assert_verdict(
            &v,
            conditions::PATH_CONFLICT,
            status::FALSE,
            reason::NO_CONFLICT,
        );
    }
}

#[test]
fn same_age_subscriptions_on_a_path_go_to_the_smaller_key() {
    let b = open("b", 5, "/same");
    let a = open("a", 5, "/same");
    let all = assess(&world(&[&b, &a], &[]));
    assert_eq!(all["team/a"].path_kept_by, None);
    assert_eq!(all["team/b"].path_kept_by.as_deref(), Some("team/a"));
}

#[test]
fn ready_takes_the_first_failing_reason_with_not_served_last() {
    let v = |type_, status, reason| Verdict {
        type_,
        status,
        reason,
        message: format!("{type_} says {reason}"),
    };
    let validated_ok = v(
        conditions::VALIDATED,
        status::TRUE,
        reason::AWAITING_HANDSHAKE,
    );
    let not_served = v(conditions::VALIDATED, status::FALSE, reason::NOT_SERVED);
    let target_ok = v(conditions::TARGET_FOUND, status::TRUE, reason::RECONCILED);
    let no_target = v(
        conditions::TARGET_FOUND,
        status::FALSE,
        reason::HTTP_SCALED_OBJECT_NOT_FOUND,
    );
    let secret_ok = v(
        conditions::SECRET_FOUND,
        status::TRUE,
        reason::NO_SECRET_NEEDED,
    );
    let secret_unknown = v(
        conditions::SECRET_FOUND,
        status::UNKNOWN,
        reason::NOT_SERVED,
    );
    let no_secret = v(
        conditions::SECRET_FOUND,
        status::FALSE,
        reason::SECRET_EMPTY,
    );
    let free = v(
        conditions::PATH_CONFLICT,
        status::FALSE,
        reason::NO_CONFLICT,
    );
    let taken = v(conditions::PATH_CONFLICT, status::TRUE, reason::PATH_TAKEN);

    let cases = [
        (
            [&validated_ok, &target_ok, &secret_ok, &free],
            reason::RECONCILED,
        ),
        (
            [&validated_ok, &no_target, &no_secret, &taken],
            reason::HTTP_SCALED_OBJECT_NOT_FOUND,
        ),
        (
            [&validated_ok, &target_ok, &no_secret, &taken],
            reason::SECRET_EMPTY,
        ),
        (
            [&validated_ok, &target_ok, &secret_ok, &taken],
            reason::PATH_TAKEN,
        ),
        // Not served is usually a consequence: the cause is named instead.
        (
            [&not_served, &target_ok, &secret_unknown, &taken],
            reason::PATH_TAKEN,
        ),
        (
            [&not_served, &no_target, &secret_ok, &free],
            reason::HTTP_SCALED_OBJECT_NOT_FOUND,
        ),
        (
            [&not_served, &target_ok, &secret_unknown, &free],
            reason::NOT_SERVED,
        ),
        (
            [&validated_ok, &target_ok, &secret_unknown, &free],
            reason::NOT_SERVED,
        ),
    ];
    for (others, want) in cases {
        let others: Vec<Verdict> = others.into_iter().cloned().collect();
        let r = ready(&others);
        assert_eq!(r.type_, conditions::READY);
        assert_eq!(r.reason, want, "{others:?}");
        let ok = want == reason::RECONCILED;
        assert_eq!(r.status, if ok { status::TRUE } else { status::FALSE });
        if !ok {
            let failing: Vec<&str> = others
                .iter()
                .filter(|o| {
                    let fine = if o.type_ == conditions::PATH_CONFLICT {
                        status::FALSE
                    } else {
                        status::TRUE
                    };
                    o.status != fine
                })
                .map(|o| o.message.as_str())
                .collect();
            assert_eq!(r.message, failing.join("; "));
        }
    }
}

#[test]
fn a_served_subscription_with_its_target_and_keys_is_ready() {
    let s = keyed("orders");
    let a = assessed(&s, served(2));
    let [r, v, t, k, c] = decide(&a, None, later());
    assert_verdict(&r, conditions::READY, status::TRUE, reason::RECONCILED);
    assert_eq!(r.message, "webhook served and its target found");
    assert_verdict(
        &v,
        conditions::VALIDATED,
        status::TRUE,
        reason::AWAITING_HANDSHAKE,
    );
    assert_verdict(
        &t,
        conditions::TARGET_FOUND,
        status::TRUE,
        reason::RECONCILED,
    );
    assert_verdict(
        &k,
        conditions::SECRET_FOUND,
        status::TRUE,
        reason::RECONCILED,
    );
    assert_verdict(
        &c,
        conditions::PATH_CONFLICT,
        status::FALSE,
        reason::NO_CONFLICT,
    );
}

fn find<'a>(s: &'a EventSubscriptionStatus, type_: &str) -> &'a Condition {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .expect("condition")
}

#[test]
fn status_keeps_transition_times_while_a_condition_holds() {
    let s = open("orders", 1, "/orders");
    let unserved = assessed(&s, EventsObservation::default());
    let first = status_of(&s, &unserved, &Default::default(), &Time(later()));
    let types: Vec<&str> = first.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        types,
        [
            conditions::READY,
            conditions::VALIDATED,
            conditions::TARGET_FOUND,
            conditions::SECRET_FOUND,
            conditions::PATH_CONFLICT,
        ]
    );
    assert!(
        first
            .conditions
            .iter()
            .all(|c| c.last_transition_time == Time(later()))
    );
    assert!(
        first
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(2))
    );
    assert_eq!(first.observed_generation, Some(2));

    // A replica serves it: Validated and Ready flip; the others hold their time.
    let served_now = assessed(&s, served(1));
    let second = status_of(&s, &served_now, &first, &at(2000));
    assert_eq!(
        find(&second, conditions::VALIDATED).last_transition_time,
        at(2000)
    );
    assert_eq!(
        find(&second, conditions::READY).last_transition_time,
        at(2000)
    );
    assert_eq!(
        find(&second, conditions::TARGET_FOUND).last_transition_time,
        Time(later())
    );

    // A handshake changes Validated's reason, not its status: the time holds.
    let mut shaken = served(1);
    shaken.handshake_ms = Some(1_700_000_000_999);
    let third = status_of(&s, &assessed(&s, shaken), &second, &at(3000));
    let v = find(&third, conditions::VALIDATED);
    assert_eq!(v.reason, reason::HANDSHAKE_ANSWERED);
    assert_eq!(v.last_transition_time, at(2000));

    let again = status_of(&s, &assessed(&s, served(1)), &third, &at(4000));
    assert_eq!(again, third, "nothing changed, timestamps included");
}

#[test]
fn counts_and_handshake_come_from_the_reports_and_are_kept_while_unknown() {
    let s = open("orders", 1, "/orders");
    let report = EventsObservation {
        served_by: 2,
        pending: 40,
        dead_lettered: Some(3),
        handshake_ms: Some(1_700_000_000_999),
        ..EventsObservation::default()
    };
    let first = status_of(
        &s,
        &assessed(&s, report),
        &Default::default(),
        &Time(later()),
    );
    assert_eq!((first.pending, first.dead_lettered), (Some(40), Some(3)));
    assert_eq!(
        first.last_handshake_time,
        Some(at(1_700_000_000)),
        "whole seconds, as the API server stores it"
    );

    // The replicas restarted: nothing served, no dead-letter count, no handshake remembered.
    let gone = status_of(
        &s,
        &assessed(&s, EventsObservation::default()),
        &first,
        &Time(later()),
    );
    assert_eq!((gone.pending, gone.dead_lettered), (Some(40), Some(3)));
    assert_eq!(gone.last_handshake_time, first.last_handshake_time);

    // Served again, empty queue, dead letters unreadable; the handshake is still the one known.
    let back = status_of(&s, &assessed(&s, served(1)), &gone, &Time(later()));
    assert_eq!((back.pending, back.dead_lettered), (Some(0), Some(3)));
    assert_eq!(
        find(&back, conditions::VALIDATED).reason,
        reason::HANDSHAKE_ANSWERED
    );
}

#[test]
fn counts_alone_are_written_at_most_once_per_interval() {
    let s = open("orders", 1, "/orders");
    let with_pending = |pending| {
        let mut o = served(1);
        o.pending = pending;
        o
    };
    let written = status_of(
        &s,
        &assessed(&s, with_pending(1)),
        &Default::default(),
        &Time(later()),
    );
    let busier = status_of(
        &s,
        &assessed(&s, with_pending(500)),
        &written,
        &Time(later()),
    );
    let t0 = Instant::now();
    let just_before = t0 + COUNTS_MIN_INTERVAL - Duration::from_millis(1);
    let due = t0 + COUNTS_MIN_INTERVAL;

    assert!(
        !should_write(&written, &written, true, Some(t0), due),
        "nothing changed"
    );
    assert!(!should_write(&written, &busier, true, Some(t0), t0));
    assert!(!should_write(
        &written,
        &busier,
        true,
        Some(t0),
        just_before
    ));
    assert!(should_write(&written, &busier, true, Some(t0), due));
    assert!(
        should_write(&written, &busier, true, None, t0),
        "not written by this replica yet"
    );
    assert!(
        should_write(&written, &written, false, Some(t0), t0),
        "the object carries no status yet"
    );

    assert!(!counts_due(Some(t0), just_before));
    assert!(counts_due(Some(t0), due));
    assert!(counts_due(None, t0));
    assert!(!counts_due(Some(due), t0), "a clock going backwards waits");
}

#[test]
fn a_condition_change_is_written_at_once_with_the_counts() {
    let s = open("orders", 1, "/orders");
    let mut report = served(1);
    report.pending = 1;
    let written = status_of(
        &s,
        &assessed(&s, report.clone()),
        &Default::default(),
        &Time(later()),
    );
    report.pending = 2;
    report.handshake_ms = Some(1_700_000_000_000);
    let shaken = status_of(&s, &assessed(&s, report), &written, &Time(later()));
    let t0 = Instant::now();
    assert!(should_write(&written, &shaken, true, Some(t0), t0));
    assert_eq!(shaken.pending, Some(2));
}

#[test]
fn a_condition_turning_bad_warns_once_and_unknown_and_ready_never_do() {
    let newer = keyed("newer");
    let older = subscription(
        "team/older",
        0,
        "{path: /keyed, target: {httpScaledObject: fn}}",
    );
    let mut w = world(&[&newer, &older], &[]);
    w.reports
        .insert("team/newer".into(), EventsObservation::default());
    let a = assess(&w).remove("team/newer").expect("assessed");
    // Within the grace: Validated and SecretFound are Unknown, which is no warning yet.
    let early = status_of(&newer, &a, &Default::default(), &at(2));
    let warned = |previous: &EventSubscriptionStatus, s: &EventSubscriptionStatus| {
        warnings(previous, s)
            .iter()
            .map(|c| (c.type_.clone(), c.reason.clone()))
            .collect::<Vec<_>>()
    };
    let pair = |t: &str, r: &str| (t.to_string(), r.to_string());
    assert_eq!(
        warned(&Default::default(), &early),
        [
            pair(
                conditions::TARGET_FOUND,
                reason::HTTP_SCALED_OBJECT_NOT_FOUND
            ),
            pair(conditions::PATH_CONFLICT, reason::PATH_TAKEN),
        ]
    );
    // The grace over, still not served: Validated turns False and warns, the rest said so.
    let late = status_of(&newer, &a, &early, &Time(later()));
    assert_eq!(
        warned(&early, &late),
        [pair(conditions::VALIDATED, reason::NOT_SERVED)]
    );
    assert!(
        warned(&late, &late).is_empty(),
        "nothing changed, nothing to say"
    );

    // A healthy subscription: nothing to warn about.
    let fine = keyed("fine");
    let s = status_of(
        &fine,
        &assessed(&fine, served(1)),
        &Default::default(),
        &at(1),
    );
    assert!(warned(&Default::default(), &s).is_empty(), "{s:?}");
}

#[test]
fn changes_are_the_conditions_whose_status_reason_or_message_moved() {
    let s = open("orders", 1, "/orders");
    let first = status_of(&s, &assessed(&s, served(1)), &Default::default(), &at(1));
    assert_eq!(changes(&Default::default(), &first).len(), 5, "all new");
    assert!(changes(&first, &first).is_empty());
    let mut shaken = served(1);
    shaken.handshake_ms = Some(1_700_000_000_000);
    let second = status_of(&s, &assessed(&s, shaken), &first, &at(2));
    let moved: Vec<&str> = changes(&first, &second)
        .iter()
        .map(|c| c.type_.as_str())
        .collect();
    assert_eq!(moved, [conditions::VALIDATED]);

    // A later handshake: same status and reason, a new message. Logged too.
    let mut again = served(1);
    again.handshake_ms = Some(1_700_000_060_000);
    let third = status_of(&s, &assessed(&s, again), &second, &at(3));
    let moved: Vec<&str> = changes(&second, &third)
        .iter()
        .map(|c| c.type_.as_str())
        .collect();
    assert_eq!(moved, [conditions::VALIDATED]);
}

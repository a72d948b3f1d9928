//! The condition decisions, from watched state to status, without an API server.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use rouse_core::crd::conditions::{self, reason};
use rouse_core::crd::{HTTPScaledObject, HTTPScaledObjectStatus};

use super::assess::{Assessment, World, assess};
use super::conditions::{
    Verdict, decide, ready, route_conflict, same_status, scaling_active, status_of, target_found,
    warnings,
};
use crate::scaler::Observed;

/// An object in namespace `team`, created `created_secs` after the epoch, with `spec` (YAML).
fn object(name: &str, created_secs: i64, spec: &str) -> Arc<HTTPScaledObject> {
    let yaml = format!(
        "apiVersion: rouse.dev/v1alpha1\nkind: HTTPScaledObject\n\
         metadata: {{name: {name}, namespace: team, generation: 3, \
         creationTimestamp: \"1970-01-01T00:00:{created_secs:02}Z\"}}\nspec: {spec}\n"
    );
    Arc::new(serde_yaml::from_str(&yaml).expect("object parses"))
}

/// `name` routing `host`, its Service and Deployment both named `name`.
fn app(name: &str, created_secs: i64, host: &str) -> Arc<HTTPScaledObject> {
    let spec = format!("{{hosts: [{host}], scaleTargetRef: {{service: {name}, port: 80}}}}");
    object(name, created_secs, &spec)
}

fn hpa(name: &str, target: &str) -> Arc<HorizontalPodAutoscaler> {
    let yaml = format!(
        "metadata: {{name: {name}, namespace: team}}\n\
         spec: {{maxReplicas: 3, scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, \
         name: {target}}}}}\n"
    );
    Arc::new(serde_yaml::from_str(&yaml).expect("hpa parses"))
}

fn world(objects: &[&Arc<HTTPScaledObject>], services: &[&str]) -> World {
    World {
        objects: objects.iter().map(|o| Arc::clone(o)).collect(),
        routes: Vec::new(),
        keda_routes: Vec::new(),
        services: services
            .iter()
            .map(|s| format!("team/{s}"))
            .collect::<HashSet<_>>(),
        hpas: Vec::new(),
    }
}

fn assessed(w: &World, key: &str) -> Assessment {
    assess(w).remove(key).expect("assessed")
}

fn assert_verdict(v: &Verdict, type_: &str, status: bool, reason: &str) {
    assert_eq!(
        (v.type_, v.status, v.reason),
        (type_, status, reason),
        "{v:?}"
    );
}

#[test]
fn a_missing_service_makes_target_found_false_naming_the_service() {
    let web = app("web", 1, "web.test");
    let a = assessed(&world(&[&web], &[]), "team/web");
    let v = target_found(&a, None);
    assert_verdict(
        &v,
        conditions::TARGET_FOUND,
        false,
        reason::SERVICE_NOT_FOUND,
    );
    assert_eq!(v.message, "service \"team/web\" not found");
    // No loop runs, so ScalingActive is false too (with the reason it would have once healthy).
    let scaling = scaling_active(&a);
    assert_verdict(&scaling, conditions::SCALING_ACTIVE, false, reason::SCALING);
    let r = ready(&a, None, &v, &scaling);
    assert_verdict(&r, conditions::READY, false, reason::SERVICE_NOT_FOUND);
    assert!(
        r.message.starts_with("service \"team/web\" not found"),
        "{r:?}"
    );
}

#[test]
fn a_found_service_with_an_unread_workload_is_target_found_but_not_checked() {
    let web = app("web", 1, "web.test");
    let a = assessed(&world(&[&web], &["web"]), "team/web");
    let v = target_found(&a, None);
    assert_verdict(&v, conditions::TARGET_FOUND, true, reason::RECONCILED);
    assert_eq!(
        v.message,
        "service team/web found; apps/v1/Deployment/web not checked"
    );
    let read = target_found(&a, Some(&Observed::Replicas(2)));
    assert_verdict(&read, conditions::TARGET_FOUND, true, reason::RECONCILED);
    assert_eq!(
        read.message,
        "apps/v1/Deployment/web and service team/web found"
    );
}

#[test]
fn a_workload_scale_404_makes_target_found_and_ready_false() {
    let web = app("web", 1, "web.test");
    let a = assessed(&world(&[&web], &["web"]), "team/web");
    let gone = Observed::NotFound("apps/v1/Deployment/web not found".into());
    let [r, t, _, s] = decide(&a, Some(&gone));
    assert_verdict(
        &t,
        conditions::TARGET_FOUND,
        false,
        reason::WORKLOAD_NOT_FOUND,
    );
    assert_eq!(t.message, "apps/v1/Deployment/web not found");
    assert_verdict(&s, conditions::SCALING_ACTIVE, true, reason::SCALING);
    assert_verdict(&r, conditions::READY, false, reason::WORKLOAD_NOT_FOUND);
    assert_eq!(r.message, "apps/v1/Deployment/web not found");
}

#[test]
fn the_newer_of_two_claims_gets_route_conflict_naming_the_older_object() {
    let first = app("first", 1, "shared.test");
    let second = app("second", 2, "shared.test");
    let w = world(&[&second, &first], &["first", "second"]);
    let all = assess(&w);

    let loser = &all["team/second"];
    let v = route_conflict(loser);
    assert_verdict(
        &v,
        conditions::ROUTE_CONFLICT,
        true,
        reason::HOST_PATH_TAKEN,
    );
    assert!(v.message.contains("team/first"), "{v:?}");
    assert!(v.message.contains("host shared.test"), "{v:?}");
    let [r, ..] = decide(loser, None);
    assert_verdict(&r, conditions::READY, false, reason::HOST_PATH_TAKEN);
    assert!(
        r.message.contains("route conflict with team/first"),
        "{r:?}"
    );
    assert!(!loser.healthy());

    let winner = &all["team/first"];
    let v = route_conflict(winner);
    assert_verdict(&v, conditions::ROUTE_CONFLICT, false, reason::NO_CONFLICT);
    assert_eq!(v.message, "no other object claims these routes");
    assert!(winner.healthy());
}

#[test]
fn an_hpa_on_the_same_workload_makes_scaling_active_false_naming_it() {
    let web = app("web", 1, "web.test");
    let mut w = world(&[&web], &["web"]);
    w.hpas = vec![hpa("other", "elsewhere"), hpa("web-hpa", "web")];
    let a = assessed(&w, "team/web");
    assert_eq!(a.hpa.as_deref(), Some("web-hpa"));
    let [r, _, _, s] = decide(&a, None);
    assert_verdict(
        &s,
        conditions::SCALING_ACTIVE,
        false,
        reason::HPA_OWNS_WORKLOAD,
    );
    assert_eq!(
        s.message,
        "HorizontalPodAutoscaler team/web-hpa scales apps/v1/Deployment/web; \
         Rouse does not patch /scale while it exists"
    );
    assert_verdict(&r, conditions::READY, false, reason::HPA_OWNS_WORKLOAD);
}

#[test]
fn an_invalid_spec_names_every_bad_field_and_comes_first_in_ready() {
    let bad = object(
        "bad",
        1,
        "{hosts: [shared.test], scaleTargetRef: {service: nope, port: 80}, \
         replicas: {min: 5, max: 2}, pathPrefixes: [nope]}",
    );
    let a = assessed(&world(&[&bad], &[]), "team/bad");
    assert!(a.policy.is_none());
    let [r, t, _, s] = decide(&a, None);
    assert_verdict(&s, conditions::SCALING_ACTIVE, false, reason::INVALID_SPEC);
    assert!(s.message.contains("spec.pathPrefixes"), "{s:?}");
    assert!(s.message.contains("replicas"), "{s:?}");
    assert_verdict(&r, conditions::READY, false, reason::INVALID_SPEC);
    assert_eq!(r.message, format!("{}; {}", t.message, s.message));
}

#[test]
fn a_healthy_object_is_ready() {
    let web = app("web", 1, "web.test");
    let a = assessed(&world(&[&web], &["web"]), "team/web");
    assert!(a.healthy());
    let [r, _, c, s] = decide(&a, Some(&Observed::Replicas(1)));
    assert_verdict(&r, conditions::READY, true, reason::RECONCILED);
    assert_eq!(r.message, "routes served and scaling active");
    assert_verdict(&c, conditions::ROUTE_CONFLICT, false, reason::NO_CONFLICT);
    assert_verdict(&s, conditions::SCALING_ACTIVE, true, reason::SCALING);
    assert_eq!(s.message, "scaling apps/v1/Deployment/web");
}

#[test]
fn scale_target_ref_defaults_to_a_deployment_named_like_the_object() {
    let custom = object(
        "w",
        1,
        "{scaleTargetRef: {service: w, port: 80, name: widget, kind: Widget, \
         apiVersion: test.rouse.dev/v1}}",
    );
    let plain = object("plain", 2, "{scaleTargetRef: {service: s, portName: http}}");
    let all = assess(&world(&[&custom, &plain], &[]));
    assert_eq!(
        all["team/w"]
            .workload
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        "test.rouse.dev/v1/Widget/widget"
    );
    assert_eq!(
        all["team/plain"]
            .workload
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        "apps/v1/Deployment/plain"
    );
}

fn at(secs: i64) -> Time {
    Time(jiff::Timestamp::from_second(secs).expect("timestamp"))
}

fn find<'a>(s: &'a HTTPScaledObjectStatus, type_: &str) -> &'a Condition {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .expect("condition")
}

#[test]
fn status_keeps_transition_times_while_a_condition_holds() {
    let web = app("web", 1, "web.test");
    let missing = assessed(&world(&[&web], &[]), "team/web");
    let first = status_of(&missing, None, None, &Default::default(), &at(10));
    let types: Vec<&str> = first.conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(
        types,
        [
            conditions::READY,
            conditions::TARGET_FOUND,
            conditions::ROUTE_CONFLICT,
            conditions::SCALING_ACTIVE
        ]
    );
    assert!(
        first
            .conditions
            .iter()
            .all(|c| c.last_transition_time == at(10))
    );
    assert!(
        first
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(3))
    );

    // The Service appears: TargetFound and Ready flip, RouteConflict holds.
    let found = assessed(&world(&[&web], &["web"]), "team/web");
    let second = status_of(&found, None, None, &first, &at(20));
    assert_eq!(
        find(&second, conditions::TARGET_FOUND).last_transition_time,
        at(20)
    );
    assert_eq!(
        find(&second, conditions::READY).last_transition_time,
        at(20)
    );
    assert_eq!(
        find(&second, conditions::ROUTE_CONFLICT).last_transition_time,
        at(10)
    );

    let again = status_of(&found, None, None, &second, &at(30));
    assert!(same_status(&again, &second));
    assert_eq!(again, second, "nothing changed, timestamps included");
    assert!(!same_status(&second, &first));
}

#[test]
fn status_reports_target_service_and_replicas() {
    let web = app("web", 1, "web.test");
    let a = assessed(&world(&[&web], &["web"]), "team/web");
    let previous = HTTPScaledObjectStatus {
        current_replicas: Some(4),
        ..Default::default()
    };
    let s = status_of(&a, None, None, &previous, &at(1));
    assert_eq!(s.target_service.as_deref(), Some("web:80"));
    assert_eq!(s.target_workload.as_deref(), Some("apps/v1/Deployment/web"));
    assert_eq!((s.current_replicas, s.desired_replicas), (Some(4), Some(4)));
    assert_eq!(s.observed_generation, Some(3));
    let s = status_of(&a, Some(&Observed::Replicas(2)), Some(5), &previous, &at(1));
    assert_eq!((s.current_replicas, s.desired_replicas), (Some(2), Some(5)));

    let named = object("n", 1, "{scaleTargetRef: {service: n, portName: http}}");
    let a = assessed(&world(&[&named], &["n"]), "team/n");
    let s = status_of(&a, None, None, &Default::default(), &at(1));
    assert_eq!(s.target_service.as_deref(), Some("n:http"));
}

#[test]
fn a_condition_turning_bad_warns_once_and_ready_never_does() {
    let first = app("first", 1, "shared.test");
    let second = app("second", 2, "shared.test");
    let w = world(&[&first, &second], &["first"]);
    let a = assessed(&w, "team/second");
    let s = status_of(&a, None, None, &Default::default(), &at(1));
    let warned: Vec<(&str, &str)> = warnings(&Default::default(), &s)
        .iter()
        .map(|c| (c.type_.as_str(), c.reason.as_str()))
        .collect();
    assert_eq!(
        warned,
        [
            (conditions::TARGET_FOUND, reason::SERVICE_NOT_FOUND),
            (conditions::ROUTE_CONFLICT, reason::HOST_PATH_TAKEN),
            (conditions::SCALING_ACTIVE, reason::SCALING),
        ]
    );
    assert!(
        warnings(&s, &s).is_empty(),
        "nothing changed, nothing to say"
    );

    // The winner: nothing bad, nothing to warn about.
    let a = assessed(&w, "team/first");
    let s = status_of(&a, None, None, &Default::default(), &at(1));
    assert!(warnings(&Default::default(), &s).is_empty(), "{s:?}");
}

/// A `rouse.dev` InterceptorRoute in namespace `team`.
fn route(name: &str, created_secs: i64, spec: &str) -> Arc<rouse_core::crd::InterceptorRoute> {
    let yaml = format!(
        "apiVersion: rouse.dev/v1alpha1\nkind: InterceptorRoute\n\
         metadata: {{name: {name}, namespace: team, generation: 2, \
         creationTimestamp: \"1970-01-01T00:00:{created_secs:02}Z\"}}\nspec: {spec}\n"
    );
    Arc::new(serde_yaml::from_str(&yaml).expect("route parses"))
}

#[test]
fn an_interceptor_route_without_a_workload_is_ready_and_scaled_by_keda() {
    let shop = route(
        "shop",
        1,
        "{target: {service: shop, port: 80}, rules: [{hosts: [shop.test]}], \
         scalingMetric: {concurrency: {targetValue: 5}}}",
    );
    let mut w = world(&[], &["shop"]);
    w.routes.push(shop);
    let a = assessed(&w, "team/shop");
    assert!(a.healthy() && !a.scaled_by_rouse(), "{a:?}");
    let [r, t, _, s] = decide(&a, None);
    assert_verdict(&r, conditions::READY, true, reason::RECONCILED);
    assert_verdict(&t, conditions::TARGET_FOUND, true, reason::RECONCILED);
    assert_verdict(
        &s,
        conditions::SCALING_ACTIVE,
        true,
        reason::EXTERNAL_SCALER,
    );
    assert!(s.message.contains("interceptorRoute: shop"), "{s:?}");
    let status = status_of(&a, None, None, &Default::default(), &at(1));
    assert_eq!(status.target_service.as_deref(), Some("shop:80"));
    assert_eq!(status.target_workload, None);
    assert_eq!(status.observed_generation, Some(2));
}

#[test]
fn a_refused_interceptor_route_field_is_named_in_its_conditions() {
    let slow = route(
        "slow",
        1,
        "{target: {service: slow, port: 80}, scalingMetric: {concurrency: {targetValue: 5}}, \
         timeouts: {responseHeader: 30s}, rouse: {scaleTargetRef: {name: slow}}}",
    );
    let mut w = world(&[], &["slow"]);
    w.routes.push(slow);
    let a = assessed(&w, "team/slow");
    let [r, _, _, s] = decide(&a, None);
    assert_verdict(&r, conditions::READY, false, reason::INVALID_SPEC);
    assert_verdict(&s, conditions::SCALING_ACTIVE, false, reason::INVALID_SPEC);
    assert!(
        s.message
            .starts_with("spec.timeouts.responseHeader: not served"),
        "{s:?}"
    );
}

#[test]
fn kinds_share_hosts_the_older_keeps_them_and_a_same_named_route_replaces_the_scaled_object() {
    let old = app("old", 1, "shared.test");
    let newer = route(
        "newer",
        2,
        "{target: {service: newer, port: 80}, rules: [{hosts: [other.test]}, {hosts: [shared.test]}], \
         scalingMetric: {concurrency: {targetValue: 5}}}",
    );
    let twin = app("twin", 3, "twin.test");
    let twin_route = route(
        "twin",
        4,
        "{target: {service: twin, port: 80}, scalingMetric: {concurrency: {targetValue: 5}}}",
    );
    let mut w = world(&[&old, &twin], &["old", "newer", "twin"]);
    w.routes.extend([newer, twin_route]);
    let all = assess(&w);
    let c = all["team/newer"].conflict.as_ref().expect("conflict");
    assert_eq!(
        (c.existing.as_str(), c.host.as_str()),
        ("team/old", "shared.test")
    );
    assert!(all["team/old"].conflict.is_none());
    // The InterceptorRoute wins its name; the HTTPScaledObject is told why it is not served.
    assert_eq!(all["team/twin"].kind, "InterceptorRoute rouse.dev/v1alpha1");
    let loser = &all["team/twin#HTTPScaledObject rouse.dev/v1alpha1"];
    assert!(
        loser
            .invalid
            .iter()
            .any(|e| e.starts_with("metadata.name: an InterceptorRoute")),
        "{loser:?}"
    );
}

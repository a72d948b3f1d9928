use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rouse_core::crd::EventSubscriptionSpec;

fn object(ns: &str, name: &str, age_secs: i64, spec: serde_json::Value) -> EventSubscription {
    let spec: EventSubscriptionSpec = serde_json::from_value(spec).expect("spec");
    let mut o = EventSubscription::new(name, spec);
    o.metadata.namespace = Some(ns.into());
    let created =
        k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 - age_secs).expect("time");
    o.metadata.creation_timestamp = Some(Time(created));
    o
}

fn js() -> JetstreamConfig {
    JetstreamConfig {
        url: "nats://127.0.0.1:4222".into(),
        stream: "ROUSE_EVENTS".into(),
        replicas: 1,
        credentials_file: None,
        publish_timeout_ms: 5000,
    }
}

fn routes(entries: &[(&str, &[&str])]) -> HashMap<String, Vec<HostPattern>> {
    entries
        .iter()
        .map(|(k, hosts)| {
            (
                k.to_string(),
                hosts
                    .iter()
                    .map(|h| HostPattern::parse(h).expect("host"))
                    .collect(),
            )
        })
        .collect()
}

fn orders() -> serde_json::Value {
    serde_json::json!({
        "path": "/events/orders",
        "auth": {"keySecretRef": {"name": "orders-keys"}, "keyQuery": "code"},
        "target": {"httpScaledObject": "fn", "path": "/runtime/webhooks/EventGrid?functionName=F"},
    })
}

#[test]
fn an_object_becomes_a_jetstream_subscription_with_the_gateways_defaults() {
    let o = object("shop", "orders", 10, orders());
    let p = plan(
        &[&o],
        &routes(&[("shop/fn", &["*.fn.test", "fn.test"])]),
        Some(&js()),
    );
    assert!(p.unserved.is_empty(), "{:?}", p.unserved);
    assert_eq!(
        p.served,
        [Served {
            key: "shop/orders".into(),
            name: "shop_orders".into(),
            secret: Some(("shop".into(), "orders-keys".into())),
        }]
    );
    let config = p.config.expect("a gateway");
    assert_eq!(config.queue, QueueConfig::Jetstream(js()));
    let s = &config.subscriptions[0];
    assert_eq!(s.path, "/events/orders");
    assert_eq!(s.auth.key_query.as_deref(), Some("code"));
    assert!(
        s.auth.keys.is_empty(),
        "keys come from the Secret at run time"
    );
    assert_eq!(s.target.app.as_deref(), Some("shop/fn"));
    assert_eq!(
        s.target.host.as_deref(),
        Some("fn.test"),
        "first exact host"
    );
    assert_eq!(s.target.path, "/runtime/webhooks/EventGrid?functionName=F");
    let d = DeliveryConfig::default();
    assert_eq!(
        (
            s.delivery.max_events,
            s.delivery.concurrency,
            s.delivery.timeout_ms
        ),
        (d.max_events, d.concurrency, d.timeout_ms)
    );
    assert_eq!(
        s.delivery.retry.max_attempts,
        RetryConfig::default().max_attempts
    );
    assert_eq!(
        s.dead_letter,
        Some(DeadLetter::Stream(DeadLetterStream {
            stream: "ROUSE_EVENTS_DEAD".into()
        }))
    );
    assert_eq!(
        (s.dedupe_window_secs, s.max_pending),
        (DEFAULT_DEDUPE_WINDOW_SECS, DEFAULT_MAX_PENDING)
    );
}

#[test]
fn every_spec_field_reaches_the_gateway() {
    let spec = serde_json::json!({
        "path": "/e", "schema": "cloudevents",
        "auth": {"keySecretRef": {"name": "k"}, "keyHeader": "X-Key",
                 "entra": {"jwksUrl": "https://login.example/keys", "audience": "api://x",
                           "issuers": ["https://sts.example/t/"], "cacheSeconds": 60}},
        "subscriptionNames": ["sub-a"], "allowedOrigins": ["*"], "allowedRate": 120,
        "target": {"httpScaledObject": "fn", "host": "override.test"},
        "delivery": {"format": "cloudevents-structured", "batching": "per-batch", "maxEvents": 500,
                     "concurrency": 8, "timeoutMs": 9000,
                     "retry": {"maxAttempts": 5, "initialBackoffMs": 10, "maxBackoffMs": 20,
                               "ttlSeconds": 30}},
        "dedupeWindowSeconds": 60, "maxPending": 7, "forwardHeaders": ["X-Trace"],
        "strictExtensionNames": true, "deadLetter": {"stream": "DLQ"},
    });
    let o = object("ns", "a.b", 0, spec);
    let p = plan(&[&o], &routes(&[("ns/fn", &["fn.test"])]), Some(&js()));
    let s = &p.config.expect("gateway").subscriptions[0];
    assert_eq!(s.name, "ns_a__b");
    assert_eq!(s.schema, Schema::Cloudevents);
    assert_eq!(s.auth.key_header.as_deref(), Some("X-Key"));
    let entra = s.auth.entra.as_ref().expect("entra");
    assert_eq!((entra.audience.as_str(), entra.cache_secs), ("api://x", 60));
    assert_eq!(s.subscription_names, ["sub-a"]);
    assert_eq!(s.allowed_origins, ["*"]);
    assert_eq!(s.allowed_rate, Some(120));
    assert_eq!(s.target.host.as_deref(), Some("override.test"));
    assert_eq!(s.target.path, "/", "default target path");
    let d = &s.delivery;
    assert_eq!(
        (
            d.format,
            d.batching,
            d.max_events,
            d.concurrency,
            d.timeout_ms
        ),
        (
            Format::CloudeventsStructured,
            Batching::PerBatch,
            500,
            8,
            9000
        )
    );
    let r = &d.retry;
    assert_eq!(
        (
            r.max_attempts,
            r.initial_backoff_ms,
            r.max_backoff_ms,
            r.ttl_secs
        ),
        (5, 10, 20, 30)
    );
    assert_eq!((s.dedupe_window_secs, s.max_pending), (60, 7));
    assert_eq!(s.forward_headers, ["x-trace"]);
    assert!(s.strict_extension_names);
    assert_eq!(
        s.dead_letter,
        Some(DeadLetter::Stream(DeadLetterStream {
            stream: "DLQ".into()
        }))
    );
}

#[test]
fn without_a_queue_nothing_is_served_and_each_object_says_why() {
    let o = object("shop", "orders", 10, orders());
    let p = plan(&[&o], &HashMap::new(), None);
    assert_eq!(p.config, None);
    assert_eq!(
        p.unserved,
        [("shop/orders".to_string(), NO_QUEUE.to_string())]
    );
}

#[test]
fn the_older_object_keeps_a_webhook_path_and_the_newer_is_told_which() {
    let old = object("a", "first", 100, orders());
    let new = object("b", "second", 5, orders());
    let p = plan(&[&new, &old], &HashMap::new(), Some(&js()));
    assert_eq!(p.served.len(), 1);
    assert_eq!(p.served[0].key, "a/first");
    assert_eq!(p.unserved.len(), 1);
    let (key, why) = &p.unserved[0];
    assert_eq!(key, "b/second");
    assert!(why.contains("kept by the older a/first"), "{why}");
}

#[test]
fn an_invalid_spec_is_not_served_and_names_the_field() {
    let mut spec = orders();
    spec["schema"] = "cloudevents".into();
    let o = object("shop", "orders", 10, spec);
    let p = plan(&[&o], &HashMap::new(), Some(&js()));
    assert!(p.served.is_empty());
    assert!(
        p.unserved[0].1.contains("spec.delivery.format"),
        "{:?}",
        p.unserved
    );
}

#[test]
fn delivery_hosts_follow_the_route_and_a_missing_target_routes_nowhere() {
    let o = object("shop", "orders", 10, orders());
    let host = |r: &HashMap<String, Vec<HostPattern>>| {
        plan(&[&o], r, Some(&js()))
            .config
            .expect("gateway")
            .subscriptions[0]
            .target
            .host
            .clone()
    };
    assert_eq!(
        host(&routes(&[("shop/fn", &[])])).as_deref(),
        Some("localhost")
    );
    let missing = host(&HashMap::new()).expect("host");
    assert!(missing.ends_with(".invalid"), "{missing}");
    assert_eq!(
        host(&routes(&[("shop/fn", &["*.only-wildcards.test"])])),
        Some(missing),
        "no exact host to send"
    );
}

#[test]
fn secret_keys_are_the_non_empty_entries_and_never_appear_in_the_problem() {
    let r = ("ns".to_string(), "keys".to_string());
    let data: BTreeMap<String, k8s_openapi::ByteString> = [
        ("key1", b"s3cret-one\n".to_vec()),
        ("key2", b"   ".to_vec()),
        ("bin", vec![0xff, 0xfe]),
        ("key3", b"s3cret-two".to_vec()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), k8s_openapi::ByteString(v)))
    .collect();
    assert_eq!(
        secret_keys(&r, Some(&data)),
        Ok(vec!["s3cret-one".to_string(), "s3cret-two".to_string()])
    );
    let empty: BTreeMap<String, k8s_openapi::ByteString> =
        [("key2".to_string(), k8s_openapi::ByteString(b"  ".to_vec()))].into();
    assert_eq!(
        secret_keys(&r, Some(&empty)),
        Err("secret \"ns/keys\" has no non-empty entry".into())
    );
    assert!(secret_keys(&r, None).is_err());
}

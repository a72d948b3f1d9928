//! The interoperability vectors of the Event Grid / CloudEvents reference (§7), one test each,
//! named by number. Requests go through the gateway's handler exactly as the proxy and the
//! standalone server hand them over; "ACK" means 200 (Event Grid) / 202 (CloudEvents) with the
//! events durably stored and pending. Where the reference offers a choice, the test says which.

use std::sync::Arc;

use bytes::Bytes;
use rouse_eventgrid::protocol::Headers;
use rouse_eventgrid::{Gateway, GatewayConfig, Request, Response};

struct Fixture {
    gw: Arc<Gateway>,
    _dir: tempfile::TempDir,
}

const SUB: &str = "orders";

fn fixture(extra: &str) -> Fixture {
    let dir = tempfile::tempdir().expect("tmp");
    let yaml = format!(
        "data_dir: {}\nmax_body_bytes: 2097152\nsubscriptions:\n  - name: {SUB}\n    path: /events\n    target: {{url: \"http://127.0.0.1:9\"}}\n{extra}",
        dir.path().display()
    );
    let config: GatewayConfig = rouse_eventgrid::config::parse(&yaml, "test").expect("config");
    let registry = prometheus::Registry::new();
    let gw = Gateway::open(
        &config,
        rouse_eventgrid::metrics::Metrics::new(&registry),
        Default::default(),
    )
    .expect("gateway");
    Fixture { gw, _dir: dir }
}

fn eg_headers(kind: &str) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json; charset=utf-8".into()),
        ("aeg-event-type", kind.to_string()),
        ("aeg-subscription-name", "SUB1".into()),
        ("aeg-delivery-count", "0".into()),
        ("aeg-metadata-version", "1".into()),
        ("aeg-data-version", "1".into()),
    ]
}

const CE_JSON: &str = "application/cloudevents+json; charset=utf-8";

impl Fixture {
    async fn send(
        &self,
        method: &str,
        query: &str,
        headers: &[(&str, String)],
        body: &str,
    ) -> Response {
        let sub = self
            .gw
            .subscription_for("/events")
            .expect("subscription")
            .clone();
        self.gw
            .handle(
                &sub,
                Request {
                    method: method.parse().expect("method"),
                    query: query.to_string(),
                    headers: Headers::new(headers.iter().map(|(k, v)| (k.to_string(), v.clone()))),
                    body: Bytes::from(body.to_string()),
                },
            )
            .await
    }

    async fn post(&self, headers: &[(&str, String)], body: &str) -> Response {
        self.send("POST", "", headers, body).await
    }

    fn pending(&self) -> usize {
        self.gw.subscription_for("/events").expect("sub").pending()
    }

    fn queued_json(&self) -> Vec<String> {
        self.gw.queued(SUB).iter().map(|e| e.json.clone()).collect()
    }

    fn metric(&self, name: &str) -> u64 {
        let m = &self.gw.metrics;
        match name {
            "deduplicated" => m.deduplicated.with_label_values(&[SUB]).get(),
            "raw" => m.raw_header_values.with_label_values(&[SUB]).get(),
            "acknowledged" => m.acknowledged.with_label_values(&[SUB]).get(),
            _ => panic!("metric {name}"),
        }
    }
}

fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

const VALIDATION: &str = r#"[{"id":"2d1781af-3a4c-4d7c-bd0c-e34b19da4e66","topic":"/subscriptions/xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx","subject":"","data":{"validationCode":"512d38b6-c7b8-40c8-89fe-f46f9e9622b6","validationUrl":"https://rp-eastus2.eventgrid.azure.net:553/eventsubscriptions/estest/validate?id=512d38b6&t=2022-10-28T04:23:35.1981776Z&apiVersion=2018-05-01-preview&token=1A1A1A1A"},"eventType":"Microsoft.EventGrid.SubscriptionValidationEvent","eventTime":"2022-10-28T04:23:35.1981776Z","metadataVersion":"1","dataVersion":"1"}]"#;

const BLOB: &str = r#"{"topic":"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/acct","subject":"/blobServices/default/containers/c/blobs/b.txt","eventType":"Microsoft.Storage.BlobCreated","id":"831e1650-001e-001b-66ab-eeb76e069631","data":{"api":"PutBlockList","contentLength":524288},"dataVersion":"","metadataVersion":"1","eventTime":"2017-06-26T18:41:00.9584103Z"}"#;

fn blob(id: &str, ty: &str) -> String {
    BLOB.replace("831e1650-001e-001b-66ab-eeb76e069631", id)
        .replace("Microsoft.Storage.BlobCreated", ty)
}

#[tokio::test]
async fn v01_eg_sync_validation_is_answered_at_once_with_the_code() {
    let f = fixture("");
    let r = f
        .post(&eg_headers("SubscriptionValidation"), VALIDATION)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "content-type"), Some("application/json"));
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        r#"{"validationResponse":"512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}"#
    );
    assert_eq!(f.pending(), 0, "nothing enqueued, workload untouched");
}

#[tokio::test]
async fn v02_eg_validation_of_an_unknown_subscription_is_refused() {
    let f = fixture("    subscription_names: [OTHER]\n");
    let r = f
        .post(&eg_headers("SubscriptionValidation"), VALIDATION)
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(f.pending(), 0);
}

#[tokio::test]
async fn v03_eg_validation_without_the_aeg_header_is_detected_from_the_body() {
    let f = fixture("");
    let r = f
        .post(&[("content-type", "application/json".into())], VALIDATION)
        .await;
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("validationResponse"));
}

#[tokio::test]
async fn v04_eg_validation_with_only_a_validation_url_is_a_400() {
    // Choice: 400 (manual validation through validationUrl is not supported).
    let f = fixture("");
    let body = VALIDATION.replace(
        r#""validationCode":"512d38b6-c7b8-40c8-89fe-f46f9e9622b6","#,
        "",
    );
    let r = f.post(&eg_headers("SubscriptionValidation"), &body).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn v05_eg_validation_with_string_encoded_data() {
    let f = fixture("");
    let body = r#"[{"id":"1","topic":"t","subject":"","eventType":"Microsoft.EventGrid.SubscriptionValidationEvent","eventTime":"2022-10-28T04:23:35Z","data":"{\"validationCode\":\"abc\"}"}]"#;
    let r = f.post(&eg_headers("SubscriptionValidation"), body).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        r#"{"validationResponse":"abc"}"#
    );
}

#[tokio::test]
async fn v06_eg_validation_is_answered_without_contacting_the_target() {
    // Delivery workers run against a real listener standing in for the target (at zero, it
    // would be woken by any connection): the handshake must not reach it.
    let target = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = target.local_addr().expect("addr");
    let contacted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let c = contacted.clone();
    tokio::spawn(async move {
        while target.accept().await.is_ok() {
            c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let f = fixture("");
    rouse_eventgrid::deliver::start(&f.gw, |_| rouse_eventgrid::deliver::Destination {
        base: format!("http://{addr}"),
        host: None,
        ..Default::default()
    });
    let started = std::time::Instant::now();
    let r = f
        .post(&eg_headers("SubscriptionValidation"), VALIDATION)
        .await;
    assert_eq!(r.status, 200);
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        contacted.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "target never contacted"
    );
    // Control: an event does reach it.
    assert_eq!(
        f.post(&eg_headers("Notification"), &format!("[{BLOB}]"))
            .await
            .status,
        200
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while contacted.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the event was never delivered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn v07_eg_single_notification_is_stored_byte_identical() {
    let f = fixture("");
    let r = f
        .post(&eg_headers("Notification"), &format!("[{BLOB}]"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        f.queued_json(),
        vec![BLOB.to_string()],
        "no timestamp reformatting"
    );
}

#[tokio::test]
async fn v08_eg_batch_of_50_mixed_events_about_1_mb_is_stored_all_or_none() {
    let f = fixture("");
    let pad = "x".repeat(20_000);
    let events: Vec<String> = (0..50)
        .map(|i| {
            let ty = if i % 2 == 0 {
                "Microsoft.Storage.BlobCreated"
            } else {
                "Contoso.Items.ItemSold"
            };
            blob(&format!("id-{i}"), ty).replace("\"PutBlockList\"", &format!("\"{pad}\""))
        })
        .collect();
    let body = format!("[{}]", events.join(","));
    assert!(body.len() > 1_000_000);
    let r = f.post(&eg_headers("Notification"), &body).await;
    assert_eq!(r.status, 200);
    assert_eq!(f.pending(), 50);
    // All-or-none: a batch with one bad event stores nothing.
    let f = fixture("");
    let bad = format!("[{},{{\"id\":\"x\"}}]", events[0]);
    assert_eq!(f.post(&eg_headers("Notification"), &bad).await.status, 400);
    assert_eq!(f.pending(), 0);
}

#[tokio::test]
async fn v09_eg_duplicate_is_acknowledged_and_not_enqueued_twice() {
    let f = fixture("");
    let body = format!("[{BLOB}]");
    assert_eq!(f.post(&eg_headers("Notification"), &body).await.status, 200);
    let mut h = eg_headers("Notification");
    h.retain(|(k, _)| *k != "aeg-delivery-count");
    h.push(("aeg-delivery-count", "1".into()));
    assert_eq!(f.post(&h, &body).await.status, 200);
    assert_eq!(f.pending(), 1);
    assert_eq!(f.metric("deduplicated"), 1);
}

#[tokio::test]
async fn v10_eg_object_body_is_an_array_of_one() {
    let f = fixture("");
    assert_eq!(f.post(&eg_headers("Notification"), BLOB).await.status, 200);
    assert_eq!(f.pending(), 1);
}

#[tokio::test]
async fn v11_eg_subscription_deleted_is_acknowledged_and_not_forwarded() {
    let f = fixture("");
    let body = r#"[{"id":"d1","topic":"t","subject":"","eventType":"Microsoft.EventGrid.SubscriptionDeletedEvent","eventTime":"2022-10-28T04:23:35Z","data":{"eventSubscriptionId":"/subscriptions/s/providers/Microsoft.EventGrid/eventSubscriptions/SUB1"}}]"#;
    let r = f.post(&eg_headers("SubscriptionDeletion"), body).await;
    assert_eq!(r.status, 200);
    assert_eq!(f.pending(), 0);
    let sub = f.gw.subscription_for("/events").expect("sub");
    assert!(
        sub.deleted.load(std::sync::atomic::Ordering::Relaxed),
        "marked inactive"
    );
}

#[tokio::test]
async fn v12_eg_legacy_unsubscribe_is_202_and_ignored() {
    let f = fixture("");
    assert_eq!(f.post(&eg_headers("Unsubscribe"), "[]").await.status, 202);
    assert_eq!(f.pending(), 0);
}

#[tokio::test]
async fn v13_eg_unknown_aeg_type_is_400() {
    let f = fixture("");
    assert_eq!(
        f.post(&eg_headers("Foo"), &format!("[{BLOB}]"))
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn v14_eg_missing_required_field_is_400() {
    let f = fixture("");
    for field in ["eventType", "id", "eventTime"] {
        let mut v: serde_json::Value = serde_json::from_str(BLOB).expect("json");
        v.as_object_mut().expect("object").remove(field);
        let r = f.post(&eg_headers("Notification"), &format!("[{v}]")).await;
        assert_eq!(r.status, 400, "without {field}");
        assert!(String::from_utf8_lossy(&r.body).contains(field));
    }
    assert_eq!(f.pending(), 0);
}

#[tokio::test]
async fn v15_eg_malformed_json_is_400() {
    let f = fixture("");
    assert_eq!(
        f.post(&eg_headers("Notification"), r#"[{"id":"#)
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn v16_eg_empty_array_is_a_200_no_op() {
    let f = fixture("");
    assert_eq!(f.post(&eg_headers("Notification"), "[]").await.status, 200);
    assert_eq!(f.pending(), 0);
}

#[tokio::test]
async fn v17_eg_odd_content_type_is_accepted_with_the_aeg_header() {
    let f = fixture("");
    let mut h = eg_headers("Notification");
    h[0] = ("content-type", "text/plain".into());
    assert_eq!(f.post(&h, &format!("[{BLOB}]")).await.status, 200);
    assert_eq!(f.pending(), 1);
}

#[tokio::test]
async fn v18_oversized_body_is_413_and_nothing_stored() {
    // Handler level (the socket-level "before the body is read" case is in tests/server.rs).
    let f = fixture("");
    let big = format!("[{}]", blob(&"x".repeat(2 * 1024 * 1024 + 1), "T"));
    assert_eq!(f.post(&eg_headers("Notification"), &big).await.status, 413);
    assert_eq!(f.pending(), 0);
}

#[tokio::test]
async fn v19_back_pressure_is_503_with_retry_after_never_4xx() {
    let f = fixture("    max_pending: 2\n");
    let body = |i: usize| format!("[{}]", blob(&format!("bp-{i}"), "T"));
    assert_eq!(
        f.post(&eg_headers("Notification"), &body(0)).await.status,
        200
    );
    assert_eq!(
        f.post(&eg_headers("Notification"), &body(1)).await.status,
        200
    );
    let full = f.post(&eg_headers("Notification"), &body(2)).await;
    assert_eq!(full.status, 503, "queue full");
    assert!(header(&full, "retry-after").is_some());
    // The store is down: 503 again, and the event is not half-accepted (a retry stores it).
    let f = fixture("");
    f.gw.inject_store_failure(true);
    let down = f.post(&eg_headers("Notification"), &body(3)).await;
    assert_eq!(down.status, 503);
    assert!(header(&down, "retry-after").is_some());
    f.gw.inject_store_failure(false);
    assert_eq!(
        f.post(&eg_headers("Notification"), &body(3)).await.status,
        200
    );
    assert_eq!(
        f.pending(),
        1,
        "the retried event was not taken for a duplicate"
    );
}

#[tokio::test]
async fn v20_query_secret_with_rotation() {
    let f = fixture("    auth: {keys: [old-key, new-key], key_query: code}\n");
    let body = |i: usize| format!("[{}]", blob(&format!("q-{i}"), "T"));
    let h = eg_headers("Notification");
    assert_eq!(f.send("POST", "code=wrong", &h, &body(0)).await.status, 401);
    assert_eq!(f.send("POST", "", &h, &body(0)).await.status, 401);
    assert_eq!(
        f.send("POST", "code=old-key", &h, &body(1)).await.status,
        200
    );
    assert_eq!(
        f.send("POST", "x=1&code=new-key", &h, &body(2))
            .await
            .status,
        200
    );
    assert_eq!(f.pending(), 2);
}

// v21 (Entra bearer) needs a JWKS server and RSA keys: tests/entra.rs.

#[tokio::test]
async fn v22_custom_delivery_headers_are_kept_for_delivery() {
    let f = fixture("    forward_headers: [x-tenant, authorization]\n");
    let mut h = eg_headers("Notification");
    h.push(("x-tenant", "a".into()));
    h.push(("authorization", "Bearer static-secret".into()));
    h.push(("x-other", "dropped".into()));
    assert_eq!(f.post(&h, &format!("[{BLOB}]")).await.status, 200);
    let e = &f.gw.queued(SUB)[0];
    assert_eq!(
        e.headers,
        vec![
            ("x-tenant".to_string(), "a".to_string()),
            (
                "authorization".to_string(),
                "Bearer static-secret".to_string()
            )
        ]
    );
}

#[tokio::test]
async fn v23_ce_handshake_from_event_grid() {
    let f = fixture("    schema: cloudevents\n    delivery: {format: cloudevents-structured}\n");
    let r = f
        .send(
            "OPTIONS",
            "",
            &[("webhook-request-origin", "eventgrid.azure.net".into())],
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        header(&r, "webhook-allowed-origin"),
        Some("eventgrid.azure.net")
    );
    assert_eq!(header(&r, "webhook-allowed-rate"), Some("*"));
    assert_eq!(header(&r, "allow"), Some("POST, OPTIONS"));
}

#[tokio::test]
async fn v24_ce_handshake_with_a_requested_rate() {
    // Choice: the configured rate (or `*` when none is configured) is granted.
    let f = fixture(
        "    schema: cloudevents\n    allowed_rate: 120\n    delivery: {format: cloudevents-structured}\n",
    );
    let r = f
        .send(
            "OPTIONS",
            "",
            &[
                ("webhook-request-origin", "eventgrid.azure.net".into()),
                ("webhook-request-rate", "120".into()),
            ],
            "",
        )
        .await;
    assert_eq!(
        header(&r, "webhook-allowed-origin"),
        Some("eventgrid.azure.net")
    );
    assert_eq!(header(&r, "webhook-allowed-rate"), Some("120"));
}

#[tokio::test]
async fn v25_ce_handshake_from_a_foreign_origin_gets_no_consent() {
    // Choice: 200 + Allow, without any WebHook-Allowed-* header.
    let f = fixture("    schema: cloudevents\n    delivery: {format: cloudevents-structured}\n");
    let r = f
        .send(
            "OPTIONS",
            "",
            &[("webhook-request-origin", "evil.example.com".into())],
            "",
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(header(&r, "webhook-allowed-origin").is_none());
    assert!(header(&r, "webhook-allowed-rate").is_none());
    assert_eq!(header(&r, "allow"), Some("POST, OPTIONS"));
}

#[tokio::test]
async fn v26_ce_handshake_with_a_callback_answers_synchronously() {
    let f = fixture("    schema: cloudevents\n    delivery: {format: cloudevents-structured}\n");
    let r = f
        .send(
            "OPTIONS",
            "",
            &[
                ("webhook-request-origin", "eventgrid.azure.net".into()),
                (
                    "webhook-request-callback",
                    "https://127.0.0.1:1/never-called".into(),
                ),
            ],
            "",
        )
        .await;
    assert_eq!(
        header(&r, "webhook-allowed-origin"),
        Some("eventgrid.azure.net")
    );
}

#[tokio::test]
async fn v27_plain_options_is_200_with_allow_and_no_consent() {
    let f = fixture("");
    let r = f.send("OPTIONS", "", &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "allow"), Some("POST, OPTIONS"));
    assert!(header(&r, "webhook-allowed-origin").is_none());
}

const CE: &str = r#"{"specversion":"1.0","type":"com.example.order.created","source":"/orders","id":"A234-1234-1234","time":"2018-04-05T17:31:00Z","datacontenttype":"application/json","data":{"order":42}}"#;

fn ce_fixture() -> Fixture {
    fixture("    schema: cloudevents\n    delivery: {format: cloudevents-structured}\n")
}

#[tokio::test]
async fn v28_ce_structured_from_event_grid_tolerates_dataschema_hash() {
    // Choice: the "#" is kept raw.
    let f = ce_fixture();
    let body = CE.replace("\"time\"", "\"dataschema\":\"#\",\"time\"");
    let r = f
        .post(
            &[
                ("content-type", CE_JSON.into()),
                ("aeg-event-type", "Notification".into()),
            ],
            &body,
        )
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(f.queued_json(), vec![body]);
}

#[tokio::test]
async fn v29_ce_content_type_is_matched_case_insensitively() {
    let f = ce_fixture();
    let r = f
        .post(
            &[(
                "content-type",
                "Application/CloudEvents+JSON; charset=UTF-8".into(),
            )],
            CE,
        )
        .await;
    assert_eq!(r.status, 202);
}

#[tokio::test]
async fn v30_ce_batch_with_base64_and_json_events() {
    let f = ce_fixture();
    let b64 = r#"{"specversion":"1.0","type":"t.thrift","source":"/s","id":"b1","datacontenttype":"application/vnd.apache.thrift.binary","data_base64":"AAECAwQ="}"#;
    let body = format!("[{b64},{CE}]");
    let r = f
        .post(
            &[("content-type", "application/cloudevents-batch+json".into())],
            &body,
        )
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(f.pending(), 2);
}

#[tokio::test]
async fn v31_ce_empty_batch_is_a_202_no_op() {
    let f = ce_fixture();
    let r = f
        .post(
            &[("content-type", "application/cloudevents-batch+json".into())],
            "[]",
        )
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(f.pending(), 0);
}

#[tokio::test]
async fn v32_ce_batch_with_mixed_specversions_is_400() {
    let f = ce_fixture();
    let old = CE.replace("\"1.0\"", "\"0.3\"").replace("A234", "B234");
    let r = f
        .post(
            &[("content-type", "application/cloudevents-batch+json".into())],
            &format!("[{CE},{old}]"),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(f.pending(), 0);
}

fn binary_headers() -> Vec<(&'static str, String)> {
    vec![
        ("ce-specversion", "1.0".into()),
        ("ce-id", "bin-1".into()),
        ("ce-source", "/mycontext".into()),
        ("ce-type", "com.example.someevent".into()),
        ("content-type", "application/json".into()),
    ]
}

fn stored(f: &Fixture) -> serde_json::Value {
    serde_json::from_str(&f.queued_json()[0]).expect("stored json")
}

#[tokio::test]
async fn v33_ce_binary_mode_with_a_json_body() {
    let f = ce_fixture();
    let r = f.post(&binary_headers(), r#"{"a":1}"#).await;
    assert_eq!(r.status, 202);
    let e = stored(&f);
    assert_eq!(e["datacontenttype"], "application/json");
    assert_eq!(
        e["data"],
        serde_json::json!({"a": 1}),
        "body kept as the event's data"
    );
    assert_eq!(e["source"], "/mycontext");
}

#[tokio::test]
async fn v34_ce_binary_percent_encoded_header_is_decoded() {
    for encoded in [
        "Euro%20%E2%82%AC%20%F0%9F%98%80",
        "Euro%20%e2%82%ac%20%f0%9f%98%80",
    ] {
        let f = ce_fixture();
        let mut h = binary_headers();
        h.push(("ce-subject", encoded.into()));
        assert_eq!(f.post(&h, "{}").await.status, 202);
        assert_eq!(stored(&f)["subject"], "Euro € 😀");
    }
}

#[tokio::test]
async fn v35_ce_binary_invalid_utf8_escape_is_400() {
    let f = ce_fixture();
    let mut h = binary_headers();
    h.push(("ce-subject", "%C0%A0".into()));
    assert_eq!(f.post(&h, "{}").await.status, 400);
}

#[tokio::test]
async fn v36_ce_binary_go_style_raw_percent_is_kept_and_counted() {
    let f = ce_fixture();
    let mut h = binary_headers();
    h.push(("ce-ext", "100%".into()));
    assert_eq!(f.post(&h, "{}").await.status, 202);
    assert_eq!(stored(&f)["ext"], "100%");
    assert_eq!(f.metric("raw"), 1);
}

#[tokio::test]
async fn v37_ce_binary_quoted_string_is_unquoted() {
    let f = ce_fixture();
    let mut h = binary_headers();
    h.push(("ce-subject", "\"a b\"".into()));
    assert_eq!(f.post(&h, "{}").await.status, 202);
    assert_eq!(stored(&f)["subject"], "a b");
}

#[tokio::test]
async fn v38_ce_binary_with_ce_datacontenttype_is_400() {
    let f = ce_fixture();
    let mut h = binary_headers();
    h.push(("ce-datacontenttype", "application/json".into()));
    assert_eq!(f.post(&h, "{}").await.status, 400);
}

#[tokio::test]
async fn v39_ce_binary_without_content_type_has_no_datacontenttype() {
    let f = ce_fixture();
    let mut h = binary_headers();
    h.retain(|(k, _)| *k != "content-type");
    assert_eq!(f.post(&h, "raw bytes").await.status, 202);
    let e = stored(&f);
    assert!(
        e.get("datacontenttype").is_none(),
        "JSON is not assumed: {e}"
    );
    assert_eq!(e["data_base64"], "cmF3IGJ5dGVz");
}

#[tokio::test]
async fn v40_wrong_specversion_is_400() {
    let f = ce_fixture();
    let r = f
        .post(
            &[("content-type", CE_JSON.into())],
            &CE.replace("\"1.0\"", "\"2.0\""),
        )
        .await;
    assert_eq!(r.status, 400);
    let mut h = binary_headers();
    h[0] = ("ce-specversion", "0.2".into());
    assert_eq!(f.post(&h, "{}").await.status, 400);
}

#[tokio::test]
async fn v41_missing_or_empty_required_attribute_is_400() {
    let f = ce_fixture();
    let no_source = CE.replace(r#""source":"/orders","#, "");
    assert_eq!(
        f.post(&[("content-type", CE_JSON.into())], &no_source)
            .await
            .status,
        400
    );
    let empty_id = CE.replace("A234-1234-1234", "");
    assert_eq!(
        f.post(&[("content-type", CE_JSON.into())], &empty_id)
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn v42_data_and_data_base64_together_are_400() {
    let f = ce_fixture();
    let both = CE.replace("\"data\":", "\"data_base64\":\"AA==\",\"data\":");
    assert_eq!(
        f.post(&[("content-type", CE_JSON.into())], &both)
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn v43_bad_extension_name_is_400_in_strict_mode_and_kept_in_lenient_mode() {
    let body = CE.replace("\"time\"", "\"my_Ext\":\"x\",\"time\"");
    let strict = fixture(
        "    schema: cloudevents\n    strict_extension_names: true\n    delivery: {format: cloudevents-structured}\n",
    );
    assert_eq!(
        strict
            .post(&[("content-type", CE_JSON.into())], &body)
            .await
            .status,
        400
    );
    let lenient = ce_fixture();
    assert_eq!(
        lenient
            .post(&[("content-type", CE_JSON.into())], &body)
            .await
            .status,
        202
    );
    assert_eq!(stored(&lenient)["my_Ext"], "x");
}

#[tokio::test]
async fn v44_parameterised_json_content_type_is_json() {
    let f = ce_fixture();
    let body = CE.replace(
        "\"application/json\"",
        "\"application/vnd.api+json; charset=utf-8\"",
    );
    assert_eq!(
        f.post(&[("content-type", CE_JSON.into())], &body)
            .await
            .status,
        202
    );
    // And in binary mode the body becomes JSON data, not base64.
    let f = ce_fixture();
    let mut h = binary_headers();
    h[4] = (
        "content-type",
        "application/vnd.api+json; charset=utf-8".into(),
    );
    assert_eq!(f.post(&h, r#"{"k":true}"#).await.status, 202);
    assert_eq!(stored(&f)["data"], serde_json::json!({"k": true}));
}

#[tokio::test]
async fn v45_bad_time_is_400() {
    let f = ce_fixture();
    let body = CE.replace("2018-04-05T17:31:00Z", "yesterday");
    assert_eq!(
        f.post(&[("content-type", CE_JSON.into())], &body)
            .await
            .status,
        400
    );
}

#[tokio::test]
async fn v46_unsupported_event_format_is_415() {
    // Choice: 415 (not forwarded as binary).
    let f = ce_fixture();
    let r = f
        .post(
            &[("content-type", "application/cloudevents+avro".into())],
            "x",
        )
        .await;
    assert_eq!(r.status, 415);
}

#[tokio::test]
async fn v47_not_a_cloudevent_is_415() {
    let f = ce_fixture();
    let r = f
        .post(&[("content-type", "application/xml".into())], "<a/>")
        .await;
    assert_eq!(r.status, 415);
}

#[tokio::test]
async fn v48_ce_duplicate_is_202_both_times_and_stored_once() {
    let f = ce_fixture();
    for _ in 0..2 {
        assert_eq!(
            f.post(&[("content-type", CE_JSON.into())], CE).await.status,
            202
        );
    }
    assert_eq!(f.pending(), 1);
    assert_eq!(f.metric("deduplicated"), 1);
}

#[tokio::test]
async fn v49_wrong_method_is_405_with_allow() {
    let f = fixture("");
    for m in ["GET", "PUT", "DELETE"] {
        let r = f.send(m, "", &[], "").await;
        assert_eq!(r.status, 405, "{m}");
        assert_eq!(header(&r, "allow"), Some("POST, OPTIONS"));
    }
}

// v50 (replay to an Azure Functions URL) runs against a real HTTP server: tests/delivery.rs.

#[tokio::test]
async fn both_schemas_on_one_endpoint_are_told_apart_per_request() {
    let f = fixture("    schema: both\n    delivery: {format: cloudevents-structured}\n");
    assert_eq!(
        f.post(&eg_headers("Notification"), &format!("[{BLOB}]"))
            .await
            .status,
        200
    );
    assert_eq!(
        f.post(&[("content-type", CE_JSON.into())], CE).await.status,
        202
    );
    assert_eq!(f.pending(), 2);
    assert_eq!(f.metric("acknowledged"), 2);
}

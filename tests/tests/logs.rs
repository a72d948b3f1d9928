//! Rouse's log lines as a log pipeline reads them: `--log-format json` (here through
//! `ROUSE_LOG_FORMAT`) writes one JSON object per line with stable field names, and no key,
//! token or webhook query string reaches them, even at `debug`.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use rouse_e2e::{App, Launch, Rouse};

/// The webhook's key (in `?code=`), a wrong key, a token and a signed query of an app request:
/// none may appear in any line Rouse writes.
const KEY: &str = "KEY-5f1e9c-SECRET";
const WRONG_KEY: &str = "WRONG-KEY-77ad-SECRET";
const TOKEN: &str = "TOKEN-0b3d-SECRET";
const QUERY: &str = "SIG-c41a-SECRET";

const EVENT: &str = r#"[{"id":"ev-1","topic":"/subscriptions/s","subject":"/blobs/1","eventType":"Microsoft.Storage.BlobCreated","eventTime":"2026-11-28T18:41:00Z","data":{},"dataVersion":"","metadataVersion":"1"}]"#;

async fn post_event(rouse: &Rouse, key: &str) -> u16 {
    let req = http::Request::post(format!("http://{}/webhooks/blobs?code={key}", rouse.proxy))
        .header("host", "events.example.com")
        .header("content-type", "application/json")
        .header("aeg-event-type", "Notification")
        .body(Full::new(Bytes::from(EVENT)))
        .expect("request");
    rouse.request(req).await.expect("answered").status
}

/// `2026-12-01T07:01:46.123456Z`: RFC 3339, UTC.
fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && s.ends_with('Z')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_stable_fields_and_never_carry_secrets() {
    let dir = std::env::temp_dir().join(format!("rouse-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let apps = [App::hello("web")
        .with("replicas: {min: 0, max: 1}")
        .env("EVENT_LOG", &dir.join("events.log").display().to_string())
        .env("LOG_REQUESTS", "0")];
    let extra = format!(
        "event_gateway:\n  data_dir: {}\n  subscriptions:\n    - name: blobs\n      path: /webhooks/blobs\n      auth: {{keys: [{KEY}], key_query: code}}\n      target: {{app: web, path: /events}}\n",
        dir.join("queue").display()
    );
    let rouse = Rouse::launch(Launch {
        apps: &apps,
        extra: &extra,
        log: "debug",
        log_format: "json",
        ..Launch::default()
    })
    .await;

    assert_eq!(post_event(&rouse, WRONG_KEY).await, 401);
    assert_eq!(post_event(&rouse, KEY).await, 200);
    let req = http::Request::get(format!("http://{}/?sig={QUERY}", rouse.proxy))
        .header("host", "web.localhost")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .expect("request");
    assert_eq!(rouse.request(req).await.expect("answered").status, 200);
    rouse
        .wait_for("the event delivered", Duration::from_secs(30), || async {
            rouse
                .metric("rouse_events_delivered_total{subscription=\"blobs\"}")
                .await
                .unwrap_or(0.0)
                >= 1.0
        })
        .await;
    rouse.settle().await;
    let output = rouse.output();

    // Rouse's own lines (apps' lines are prefixed `[app-n] ` on stdout) are JSON objects.
    let mut objects = Vec::new();
    for line in output.iter().filter(|l| !l.starts_with('[')) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
        assert!(v.is_object(), "not an object: {line}");
        let timestamp = v["timestamp"].as_str().unwrap_or_default();
        assert!(is_rfc3339_utc(timestamp), "timestamp {timestamp:?}: {line}");
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                .contains(&v["level"].as_str().unwrap_or("")),
            "level: {line}"
        );
        assert!(v["target"].is_string(), "target: {line}");
        assert!(v["fields"]["message"].is_string(), "message: {line}");
        objects.push(v);
    }
    // The preconditions: debug lines were written, and the requests carrying the secrets were
    // logged (so their absence below means something).
    assert!(
        objects.iter().any(|v| v["level"] == "DEBUG"),
        "no debug line among {} lines",
        objects.len()
    );
    let refused = objects
        .iter()
        .find(|v| v["fields"]["message"] == "Webhook request refused.")
        .unwrap_or_else(|| panic!("the 401 was not logged:\n{}", output.join("\n")));
    assert_eq!(refused["fields"]["status"], 401, "{refused}");
    assert_eq!(refused["fields"]["subscription"], "blobs", "{refused}");
    // No field of a line is called `message` besides the line's own (it would be duplicated).
    assert!(
        refused["fields"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("key")),
        "{refused}"
    );
    // A line's own `target` field (the app) does not clobber the module's.
    let scaled = objects
        .iter()
        .find(|v| v["fields"]["message"] == "Scaled.")
        .unwrap_or_else(|| panic!("the wake was not logged:\n{}", output.join("\n")));
    assert_eq!(scaled["fields"]["target"], "web", "{scaled}");
    assert_ne!(scaled["target"], "web", "{scaled}");

    for secret in [KEY, WRONG_KEY, TOKEN, QUERY] {
        let leaks: Vec<&String> = output.iter().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret} logged: {leaks:#?}");
    }
    drop(rouse);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The access log (`proxy.access_log: true`): one JSON line per finished request (here in the
/// JSON log format) with the route, status, duration, time held and cold start of each, the
/// endpoint it went to and Rouse's reason for an error; paths without their query (keys travel
/// there). Without the setting there is none: the test above reads every line as a log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_a_line_per_request_with_its_outcome_and_never_a_query() {
    // The app's own request log would print the query: off, so every line is Rouse's.
    let apps = [App::hello("web").env("LOG_REQUESTS", "0")];
    let rouse = Rouse::launch(Launch {
        apps: &apps,
        proxy_extra: "  access_log: true\n",
        log_format: "json",
        ..Launch::default()
    })
    .await;
    let cold = rouse.get("web.localhost", "/").await;
    assert_eq!(cold.status, 200);
    assert_eq!(cold.header("x-rouse-cold-start"), Some("true"));
    let warm = rouse
        .get("web.localhost", &format!("/sleep?ms=1&sig={QUERY}"))
        .await;
    assert_eq!(warm.status, 200);
    assert_eq!(rouse.get("nowhere.localhost", "/x").await.status, 404);

    let access = || -> Vec<serde_json::Value> {
        rouse
            .output()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("duration_ms").is_some())
            .collect()
    };
    rouse
        .wait_for("three access-log lines", Duration::from_secs(5), || async {
            access().len() >= 3
        })
        .await;
    let lines = access();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let (first, second, missing) = (&lines[0], &lines[1], &lines[2]);
    for l in &lines {
        assert!(l["timestamp"].as_str().is_some_and(is_rfc3339_utc), "{l}");
        assert!(l["duration_ms"].as_f64().is_some_and(|d| d >= 0.0), "{l}");
    }
    assert_eq!(first["route"], "web", "{first}");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/");
    assert_eq!(first["status"], 200);
    assert_eq!(first["cold_start"], true);
    assert!(
        first["held_ms"].as_f64().is_some_and(|h| h > 0.0),
        "{first}"
    );
    assert!(
        first["upstream"]
            .as_str()
            .is_some_and(|u| u.starts_with("127.0.0.1:")),
        "{first}"
    );
    assert_eq!(first["reason"], serde_json::Value::Null);
    assert_eq!(second["path"], "/sleep", "no query: {second}");
    assert_eq!(second["cold_start"], false);
    assert_eq!(second["held_ms"], serde_json::Value::Null);
    assert_eq!(missing["route"], serde_json::Value::Null, "{missing}");
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["reason"], "no_route");
    let leaks: Vec<String> = rouse
        .output()
        .into_iter()
        .filter(|l| l.contains(QUERY))
        .collect();
    assert!(leaks.is_empty(), "the query reached a log line: {leaks:#?}");
    assert_eq!(
        rouse.metric("rouse_proxy_access_log_dropped_total").await,
        Some(0.0)
    );
}

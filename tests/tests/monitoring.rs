//! The dashboard (`manifests/monitoring/dashboard.json`) and the alert rules
//! (`manifests/monitoring/alerts.yaml`) against the real thing: Debian's Prometheus scrapes a
//! running Rouse under a short load that makes each alert's condition true; `promtool check
//! rules` passes, every panel's query returns series through Prometheus' HTTP API, and every
//! alert becomes pending or firing. The main panels are drawn from the same queries into
//! `target/<profile>/monitoring/dashboard.png` (the README shows a copy).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use rouse_e2e::plot::{self, Panel};
use rouse_e2e::{App, Launch, Rouse, free_addr, target_dir};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
}

/// Debian's `prometheus` package (`ROUSE_PROMETHEUS_BIN` overrides the directory).
fn tool(name: &str) -> PathBuf {
    let dir =
        std::env::var_os("ROUSE_PROMETHEUS_BIN").map_or_else(|| "/usr/bin".into(), PathBuf::from);
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} missing: apt-get install prometheus (.ci/run does)",
        path.display()
    );
    path
}

/// A series as drawn: its legend and its (x, y) points.
type Series = (String, Vec<(f64, f64)>);

/// A Prometheus server of this test, stopped on drop.
struct Prometheus {
    child: Child,
    addr: std::net::SocketAddr,
    http: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(dir: &Path, rouse_admin: std::net::SocketAddr, gone: std::net::SocketAddr) -> Self {
        let addr = free_addr();
        let rules = repo().join("manifests/monitoring/alerts.yaml");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                 rule_files: [{}]\n\
                 scrape_configs:\n\
                 \x20 - job_name: rouse\n\
                 \x20   static_configs: [{{targets: ['{rouse_admin}']}}]\n\
                 \x20 - job_name: rouse-proxy-gone\n\
                 \x20   static_configs: [{{targets: ['{gone}']}}]\n",
                rules.display()
            ),
        )
        .expect("prometheus.yml");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("prometheus");
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        Prometheus { child, addr, http }
    }

    /// GET `path` and its JSON; `None` while Prometheus is not answering.
    async fn get(&self, path_and_query: &str) -> Option<serde_json::Value> {
        use http_body_util::BodyExt;
        let uri: http::Uri = format!("http://{}{path_and_query}", self.addr)
            .parse()
            .ok()?;
        let resp = self
            .http
            .request(http::Request::get(uri).body(Full::default()).ok()?)
            .await
            .ok()?;
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice(&body).ok()
    }

    /// An instant query's result vector.
    async fn query(&self, expr: &str) -> Vec<serde_json::Value> {
        let q: String = form_urlencoded::byte_serialize(expr.as_bytes()).collect();
        self.get(&format!("/api/v1/query?query={q}"))
            .await
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    }

    /// A range query's series: (legend, points as (seconds from `start`, value)); the legend is
    /// `legend` with each `{{label}}` replaced by the series' value, as Grafana does.
    async fn range(&self, expr: &str, legend: &str, start: f64, end: f64) -> Vec<Series> {
        let q: String = form_urlencoded::byte_serialize(expr.as_bytes()).collect();
        let v = self
            .get(&format!(
                "/api/v1/query_range?query={q}&start={start}&end={end}&step=1"
            ))
            .await
            .unwrap_or_default();
        v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .fold(legend.to_string(), |l, (k, v)| {
                        l.replace(&format!("{{{{{k}}}}}"), v.as_str().unwrap_or_default())
                    });
                let points = s["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| {
                        let t = p[0].as_f64()?;
                        let y: f64 = p[1].as_str()?.parse().ok()?;
                        y.is_finite().then_some((t - start, y))
                    })
                    .collect();
                (labels, points)
            })
            .collect()
    }
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Every panel target of the dashboard: (panel title, expr, legend format).
fn panel_queries() -> Vec<(String, String, String)> {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("manifests/monitoring/dashboard.json"))
            .expect("dashboard.json"),
    )
    .expect("dashboard.json is JSON");
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            out.push((
                p["title"].as_str().unwrap_or_default().to_string(),
                t["expr"].as_str().expect("expr").to_string(),
                t["legendFormat"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    out
}

/// Every alert's name in the rule file.
fn alert_names() -> Vec<String> {
    let rules: serde_json::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("manifests/monitoring/alerts.yaml"))
            .expect("alerts.yaml"),
    )
    .expect("alerts.yaml is YAML");
    rules["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect()
}

const EVENT: &str = r#"[{"id":"ev-1","topic":"/subscriptions/s","subject":"/blobs/1","eventType":"Microsoft.Storage.BlobCreated","eventTime":"2026-11-28T18:41:00Z","data":{},"dataVersion":"","metadataVersion":"1"}]"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboards_queries_return_series_and_every_alert_fires_on_a_live_rouse() {
    let rules = repo().join("manifests/monitoring/alerts.yaml");
    let check = Command::new(tool("promtool"))
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool");
    assert!(
        check.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    let dir = tempfile::tempdir().expect("tmp");
    // web: woken once, then warm. cold: never ready in time, its request held (stuck cold).
    // stuck: held requests time out at 0.5 s (504 cold_start_timeout). Events to web go to a
    // path it answers 404 with one attempt allowed: dead-lettered.
    let apps = [
        App::hello("web").env("LOG_REQUESTS", "0"),
        App::hello("cold")
            .env("STARTUP_DELAY_MS", "120000")
            .with("startup_timeout_secs: 300")
            .with("cold_start: {hold_timeout_ms: 120000}"),
        App::hello("stuck")
            .env("STARTUP_DELAY_MS", "120000")
            .with("startup_timeout_secs: 300")
            .with("cold_start: {hold_timeout_ms: 500}"),
    ];
    let extra = format!(
        "event_gateway:\n  data_dir: {}\n  subscriptions:\n    - name: blobs\n      path: /webhooks/blobs\n      auth: {{keys: [monitoring-key], key_query: code}}\n      target: {{app: web, path: /nope}}\n      delivery: {{retry: {{max_attempts: 1}}}}\n",
        dir.path().join("queue").display()
    );
    let rouse = Rouse::launch(Launch {
        apps: &apps,
        extra: &extra,
        ..Launch::default()
    })
    .await;
    let gone = free_addr();
    let prometheus = Prometheus::start(dir.path(), rouse.admin, gone);
    let started = now_secs();
    // Prometheus scrapes Rouse before anything happens: counters then rise from a sample at 0
    // (what `increase()` in the alert rules needs), as in a cluster running for a while.
    let deadline = Instant::now() + Duration::from_secs(60);
    while prometheus.query("up{job=\"rouse\"} == 1").await.is_empty() {
        assert!(Instant::now() < deadline, "Prometheus never scraped Rouse");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The load.
    assert_eq!(rouse.get("web.localhost", "/").await.status, 200);
    let proxy = rouse.proxy;
    let held = tokio::spawn(async move {
        let _ = tokio::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-H", "Host: cold.localhost"])
            .arg(format!("http://{proxy}/"))
            .output()
            .await;
    });
    assert_eq!(rouse.get("stuck.localhost", "/").await.status, 504);
    let event = http::Request::post(format!(
        "http://{}/webhooks/blobs?code=monitoring-key",
        rouse.proxy
    ))
    .header("host", "events.localhost")
    .header("content-type", "application/json")
    .header("aeg-event-type", "Notification")
    .body(Full::new(Bytes::from(EVENT)))
    .expect("request");
    assert_eq!(rouse.request(event).await.expect("answered").status, 200);

    // Every panel query returns series (rates need two scrapes: wait for them).
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut missing = panel_queries();
    while !missing.is_empty() {
        for _ in 0..3 {
            let _ = rouse.get_raw("web.localhost", "/").await;
        }
        let mut still = Vec::new();
        for (title, expr, legend) in missing {
            if prometheus.query(&expr).await.is_empty() {
                still.push((title, expr, legend));
            }
        }
        missing = still;
        assert!(
            Instant::now() < deadline,
            "panels whose queries return no series: {missing:#?}\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Every alert active (pending or firing: `/api/v1/alerts` lists no other), each about what
    // the load made go wrong and nothing else.
    let want = alert_names();
    assert!(want.len() >= 4, "{want:?}");
    let about = |alert: &serde_json::Value| -> (String, String) {
        let l = &alert["labels"];
        let subject = ["route", "subscription", "job"]
            .iter()
            .find_map(|k| l[*k].as_str())
            .unwrap_or_default()
            .to_string();
        (
            l["alertname"].as_str().unwrap_or_default().to_string(),
            subject,
        )
    };
    let active: Vec<(String, String)> = loop {
        let active: Vec<(String, String)> = prometheus
            .get("/api/v1/alerts")
            .await
            .and_then(|v| v["data"]["alerts"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(about)
            .collect();
        if want.iter().all(|w| active.iter().any(|(n, _)| n == w)) {
            break active;
        }
        assert!(
            Instant::now() < deadline,
            "alerts never active: {:?}; active: {active:?}",
            want.iter()
                .filter(|w| !active.iter().any(|(n, _)| n == *w))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let mut active = active;
    active.sort();
    active.dedup();
    assert_eq!(
        active,
        [
            ("RouseDeadLettersGrowing".to_string(), "blobs".to_string()),
            ("RouseHoldTimeouts".into(), "stuck".into()),
            ("RouseProxyNotReporting".into(), "rouse-proxy-gone".into()),
            ("RouseTargetStuckCold".into(), "cold".into()),
        ],
        "each alert about what went wrong, and only that"
    );
    // And the panels show the load, not only series at zero.
    let value = |v: &[serde_json::Value]| -> f64 {
        v.first()
            .and_then(|s| s["value"][1].as_str())
            .and_then(|x| x.parse().ok())
            .unwrap_or(f64::NAN)
    };
    for (expr, at_least) in [
        ("sum(rouse_proxy_held_requests{route=\"cold\"})", 1.0),
        ("sum(rouse_proxy_cold_starts_total{route=\"web\"})", 1.0),
        (
            "sum(rouse_controller_desired_replicas{target=\"web\"})",
            1.0,
        ),
        ("sum(rouse_local_ready_replicas{target=\"web\"})", 1.0),
        (
            "sum(rouse_events_dead_lettered_total{subscription=\"blobs\"})",
            1.0,
        ),
        ("max(rouse_controller_leader)", 1.0),
    ] {
        let v = value(&prometheus.query(expr).await);
        assert!(v >= at_least, "{expr} = {v}, expected at least {at_least}");
    }

    // The dashboard's main panels, drawn from the same queries after some more traffic (about
    // 20 requests a second to the warm app for 20 s).
    let more = Instant::now() + Duration::from_secs(20);
    while Instant::now() < more {
        let _ = rouse.get_raw("web.localhost", "/").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let end = now_secs();
    let mut panels = Vec::new();
    let targets = panel_queries();
    for wanted in [
        "Cold starts",
        "Held requests",
        "Replicas: desired and ready",
        "Requests by status",
    ] {
        let mut series = Vec::new();
        for (_, expr, legend) in targets.iter().filter(|(t, _, _)| t == wanted) {
            series.extend(prometheus.range(expr, legend, started, end).await);
        }
        panels.push((wanted, series));
    }
    let panels: Vec<Panel<'_>> = panels
        .iter()
        .map(|(title, series)| Panel {
            y_label: title,
            series: series
                .iter()
                .map(|(l, p)| (l.as_str(), p.clone()))
                .collect(),
        })
        .collect();
    let out = target_dir().join("monitoring");
    std::fs::create_dir_all(&out).expect("output dir");
    let png = out.join("dashboard.png");
    plot::lines(
        &png,
        "Rouse dashboard (main panels) during the test's load",
        "seconds since Prometheus started",
        &panels,
        false,
    )
    .expect("dashboard PNG");
    assert!(std::fs::metadata(&png).is_ok_and(|m| m.len() > 10_000));
    held.abort();
}

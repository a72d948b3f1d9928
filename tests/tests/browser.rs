//! The waiting page, as a person sees it: a real headless Chromium (Debian's `chromium`, driven
//! over the DevTools protocol) opens an app at zero, gets Rouse's waiting page (a screenshot is
//! kept under `target/browser/`), and the same tab lands on the app once it is up, without a
//! click or a navigation from the test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use futures::{SinkExt, StreamExt};
use rouse_e2e::{App, Rouse, target_dir};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium, headless, with its own profile; killed on drop.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    /// The DevTools HTTP endpoint, `127.0.0.1:PORT`.
    devtools: String,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn start() -> Browser {
        assert!(
            Path::new(CHROMIUM).exists(),
            "{CHROMIUM} is missing: install Debian's `chromium` (.ci/run does)"
        );
        let profile = tempfile::tempdir().expect("profile dir");
        // The flags keep Chromium off the network (this machine's is closed) and quiet.
        let child = Command::new(CHROMIUM)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1000,700",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        // Chromium writes the port it bound into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u16>().ok()))
            {
                break port;
            }
            assert!(Instant::now() < deadline, "chromium did not open DevTools");
            std::thread::sleep(Duration::from_millis(50));
        };
        Browser {
            child,
            _profile: profile,
            devtools: format!("127.0.0.1:{port}"),
        }
    }

    /// The DevTools WebSocket of the first page (tab).
    async fn page(&self) -> Tab {
        let deadline = Instant::now() + Duration::from_secs(20);
        let url = loop {
            let list = http_get(&self.devtools, "/json/list").await;
            if let Some(url) = serde_json::from_str::<Value>(&list).ok().and_then(|v| {
                v.as_array()?.iter().find_map(|t| {
                    (t["type"] == "page")
                        .then(|| t["webSocketDebuggerUrl"].as_str().map(str::to_string))?
                })
            }) {
                break url;
            }
            assert!(Instant::now() < deadline, "no page target: {list}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("devtools websocket");
        Tab { ws, next_id: 1 }
    }
}

/// A GET on loopback (the DevTools JSON endpoints); empty when it fails or takes over 5 s.
async fn http_get(addr: &str, path: &str) -> String {
    use http_body_util::BodyExt;
    let client: hyper_util::client::legacy::Client<_, http_body_util::Empty<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let Ok(uri) = format!("http://{addr}{path}").parse::<http::Uri>() else {
        return String::new();
    };
    let get = async {
        let resp = client.get(uri).await.ok()?;
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some(String::from_utf8_lossy(&body).to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), get)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One tab, over the DevTools protocol.
struct Tab {
    ws: Ws,
    next_id: u64,
}

impl Tab {
    /// Sends `method` and returns its result (events in between are skipped).
    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws
            .send(Message::Text(msg.into()))
            .await
            .expect("devtools send");
        let answer = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(Ok(m)) = self.ws.next().await {
                if let Message::Text(t) = m
                    && let Ok(v) = serde_json::from_str::<Value>(&t)
                    && v["id"] == id
                {
                    return v;
                }
            }
            Value::Null
        })
        .await
        .unwrap_or_else(|_| panic!("{method}: no answer from chromium"));
        assert!(answer["error"].is_null(), "{method}: {answer}");
        answer["result"].clone()
    }

    /// Evaluates `expr` in the page; its value.
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true}),
            )
            .await;
        r["result"]["value"].clone()
    }

    /// Polls `expr` until `ok` holds for its value (or panics after `within`).
    async fn wait_for(
        &mut self,
        what: &str,
        within: Duration,
        expr: &str,
        ok: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.eval(expr).await;
            if ok(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: last {expr} = {v}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn screenshot_path() -> PathBuf {
    let dir = target_dir().join("browser");
    std::fs::create_dir_all(&dir).expect("target/browser");
    dir.join("waiting-page.png")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_sees_the_waiting_page_then_the_app_in_the_same_tab_without_a_click() {
    // Slow to start, so the page is on screen for at least one refresh.
    let app = App::hello("shop")
        .env("STARTUP_DELAY_MS", "2500")
        .with("cold_start: {placeholder: {audience: browsers, refresh_secs: 1}}");
    let rouse = Rouse::start(&app).await;
    assert_eq!(rouse.ready_replicas("shop").await, 0, "starts at zero");
    let browser = Browser::start();
    let mut tab = browser.page().await;
    tab.call("Page.enable", json!({})).await;
    // `*.localhost` is loopback to Chromium: the Host header routes to the app.
    let url = format!("http://shop.localhost:{}/", rouse.proxy.port());
    tab.call("Page.navigate", json!({"url": url})).await;

    // The waiting page, as the browser received it.
    tab.wait_for(
        "the waiting page",
        Duration::from_secs(20),
        "document.title",
        |v| v.as_str().is_some_and(|t| t.starts_with("Starting shop")),
    )
    .await;
    let status = tab
        .eval("performance.getEntriesByType('navigation')[0].responseStatus")
        .await;
    assert_eq!(status, 503, "a waiting page, not the app");
    let text = tab.eval("document.body.innerText").await;
    assert!(
        text.as_str().is_some_and(|t| t.contains("is waking up")),
        "{text}"
    );
    let shot = tab
        .call("Page.captureScreenshot", json!({"format": "png"}))
        .await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().expect("screenshot data"))
        .expect("base64");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 2_000,
        "a real image"
    );
    let path = screenshot_path();
    std::fs::write(&path, &png).expect("save screenshot");
    eprintln!("waiting page screenshot: {}", path.display());

    // Nothing more from the test: the page reloads by itself until the app answers.
    tab.wait_for(
        "the app in the same tab",
        Duration::from_secs(30),
        "document.body.innerText",
        |v| v.as_str().is_some_and(|t| t.contains("hello from shop-1")),
    )
    .await;
    let status = tab
        .eval("performance.getEntriesByType('navigation')[0].responseStatus")
        .await;
    assert_eq!(status, 200, "the app's own answer");
    assert_eq!(rouse.count_output("hello-fn started"), 1, "one cold start");
}

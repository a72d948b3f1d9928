//! Harness for Rouse's end-to-end tests: runs the real `rouse` binary with the real `hello-fn`
//! app on loopback ports, and talks to it with real clients.
//!
//! ```text
//! let rouse = Rouse::start(&App::hello("hello").env("STARTUP_DELAY_MS", "200")).await;
//! let r = rouse.get("hello.localhost", "/").await;
//! assert_eq!(r.status, 200);
//! ```

pub mod plot;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// `target/<profile>/`, where cargo put this executable and the binaries it runs.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    // A test is target/<profile>/deps/<test>-<hash>; a binary (the load-test runner) is
    // target/<profile>/<bin>.
    let dir = exe.parent().expect("executable directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path to a workspace binary, built once per test process if missing or stale.
pub fn bin(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let dir = target_dir();
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--workspace", "--bins", "--quiet"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building the workspace binaries failed");
    });
    let p = target_dir().join(name);
    assert!(p.exists(), "{} missing", p.display());
    p
}

/// Resident set of a process, (current VmRSS, peak VmHWM) in KiB; zeros if it is gone.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A free loopback port for a listener Rouse will bind.
///
/// Taken below the kernel's ephemeral range (32768+), from a per-process sequence, so it cannot
/// collide with client sockets or with the ports Rouse's replicas get from `bind(0)` while tests
/// run in parallel.
pub fn free_addr() -> SocketAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20_000 + (std::process::id() * 97) % 10_000;
    for _ in 0..2_000 {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 2_000;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().expect("local addr");
        }
    }
    panic!("no free loopback port in 20000..32000");
}

/// One app in the local config, built fluently and rendered to YAML.
#[derive(Clone)]
pub struct App {
    lines: Vec<String>,
    env: Vec<(String, String)>,
}

impl App {
    /// `hello-fn` under `name`, answering `<name>.localhost`, scale-to-zero, fast-reacting
    /// scaling windows, requests logged by the app.
    pub fn hello(name: &str) -> App {
        App {
            lines: vec![
                format!("name: {name}"),
                format!("hosts: [{name}.localhost]"),
                format!("command: {}", bin("hello-fn").display()),
                "readiness_path: /healthz".into(),
            ],
            env: vec![("LOG_REQUESTS".into(), "1".into())],
        }
    }

    /// Adds a raw YAML line to the app (e.g. `"replicas: {min: 0, max: 3}"`).
    pub fn with(mut self, yaml: &str) -> App {
        self.lines.push(yaml.to_string());
        self
    }

    /// Replaces the app's hosts (YAML flow list content, e.g. `"a.test, \"*.b.test\""`).
    pub fn hosts(mut self, hosts: &str) -> App {
        for l in &mut self.lines {
            if l.starts_with("hosts:") {
                *l = format!("hosts: [{hosts}]");
            }
        }
        self
    }

    /// Sets an environment variable of the app (replacing an earlier value).
    pub fn env(mut self, k: &str, v: &str) -> App {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.into(), v.into()));
        self
    }

    fn render(&self) -> String {
        let mut s = String::new();
        for (i, l) in self.lines.iter().enumerate() {
            s.push_str(if i == 0 { "  - " } else { "    " });
            s.push_str(l);
            s.push('\n');
        }
        s.push_str("    env:\n");
        for (k, v) in &self.env {
            s.push_str(&format!("      {k}: \"{v}\"\n"));
        }
        s
    }
}

/// How [`Rouse::launch`] starts Rouse.
pub struct Launch<'a> {
    pub apps: &'a [App],
    /// Extra `proxy:` YAML lines, each indented by two spaces and ending in a newline.
    pub proxy_extra: &'a str,
    /// `ROUSE_LOG` filter.
    pub log: &'a str,
    /// `ROUSE_LOG_FORMAT`: `text` or `json`.
    pub log_format: &'a str,
    /// Proxy worker threads.
    pub threads: usize,
    /// CPUs to pin Rouse and its apps to (`taskset -c` list), if any.
    pub cpus: Option<&'a str>,
    /// Top-level YAML appended after `apps:` (e.g. an `event_gateway:` section).
    pub extra: &'a str,
}

impl Default for Launch<'_> {
    fn default() -> Self {
        Launch {
            apps: &[],
            proxy_extra: "",
            log: "info",
            log_format: "text",
            threads: 2,
            cpus: None,
            extra: "",
        }
    }
}

/// A running `rouse local`, killed (with its apps) on drop.
pub struct Rouse {
    child: Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub dir: PathBuf,
    output: Arc<Mutex<Vec<String>>>,
    /// Readers of Rouse's stdout/stderr; joined once it exits so no last line is missed.
    pumps: Vec<std::thread::JoinHandle<()>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn pump(
    reader: impl std::io::Read + Send + 'static,
    out: Arc<Mutex<Vec<String>>>,
    echo: bool,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(reader)
            .lines()
            .map_while(Result::ok)
        {
            if echo {
                eprintln!("{line}");
            }
            out.lock().unwrap_or_else(|p| p.into_inner()).push(line);
        }
    })
}

impl Rouse {
    pub async fn start(app: &App) -> Rouse {
        Rouse::start_with(std::slice::from_ref(app), "").await
    }

    /// Starts Rouse with `apps` and extra `proxy:` YAML lines (indented by two spaces).
    pub async fn start_with(apps: &[App], proxy_extra: &str) -> Rouse {
        let log = std::env::var("ROUSE_E2E_LOG").unwrap_or_else(|_| "info".into());
        Rouse::start_with_log(apps, proxy_extra, &log).await
    }

    /// [`Rouse::start_with`] with an explicit log filter.
    pub async fn start_with_log(apps: &[App], proxy_extra: &str, log: &str) -> Rouse {
        Rouse::launch(Launch {
            apps,
            proxy_extra,
            log,
            ..Launch::default()
        })
        .await
    }

    /// Starts Rouse as `launch` describes and waits until it serves.
    pub async fn launch(launch: Launch<'_>) -> Rouse {
        let Launch {
            apps,
            proxy_extra,
            log,
            log_format,
            threads,
            cpus,
            extra,
        } = launch;
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "rouse-e2e-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (proxy, admin) = (free_addr(), free_addr());
        let mut yaml = format!(
            "proxy:\n  listen: {proxy}\n  admin_listen: {admin}\n  threads: {threads}\n{proxy_extra}apps:\n"
        );
        for a in apps {
            yaml.push_str(&a.render());
        }
        yaml.push_str(extra);
        let config = dir.join("rouse.yaml");
        std::fs::write(&config, &yaml).expect("write config");
        // `taskset` pins Rouse and, by inheritance, the apps it starts.
        let mut cmd = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(bin("rouse"));
                c
            }
            None => Command::new(bin("rouse")),
        };
        let mut child = cmd
            .args(["local", "--config"])
            .arg(&config)
            .env("ROUSE_LOG", log)
            .env("ROUSE_LOG_FORMAT", log_format)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rouse");
        let output = Arc::new(Mutex::new(Vec::new()));
        let echo = std::env::var("ROUSE_E2E_ECHO").is_ok();
        let mut pumps = Vec::new();
        if let Some(o) = child.stdout.take() {
            pumps.push(pump(o, output.clone(), echo));
        }
        if let Some(e) = child.stderr.take() {
            pumps.push(pump(e, output.clone(), echo));
        }
        let client = Client::builder(TokioExecutor::new()).build_http();
        let rouse = Rouse {
            child,
            proxy,
            admin,
            dir,
            output,
            pumps,
            client,
        };
        rouse
            .wait_for(
                "admin /readyz and the proxy listener",
                Duration::from_secs(20),
                || async {
                    rouse
                        .admin_get("/readyz")
                        .await
                        .is_some_and(|r| r.status == 200)
                        && tokio::net::TcpStream::connect(rouse.proxy).await.is_ok()
                },
            )
            .await;
        rouse
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything Rouse and its apps printed so far.
    pub fn output(&self) -> Vec<String> {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until the output stops growing (200 ms without a new line, at most 5 s): app log
    /// lines travel app → Rouse → test through two pipes and may trail the HTTP response that
    /// caused them.
    pub async fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut len = self.output.lock().unwrap_or_else(|p| p.into_inner()).len();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = self.output.lock().unwrap_or_else(|p| p.into_inner()).len();
            if now == len {
                return;
            }
            len = now;
        }
    }

    pub fn count_output(&self, needle: &str) -> usize {
        self.output().iter().filter(|l| l.contains(needle)).count()
    }

    /// Polls `check` until it holds or `timeout` passes (then panics with the output).
    pub async fn wait_for<F, Fut>(&self, what: &str, timeout: Duration, check: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "timed out waiting for {what}; output:\n{}",
            self.output().join("\n")
        );
    }

    pub async fn request(&self, req: http::Request<Full<Bytes>>) -> Result<Resp, String> {
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Resp {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }

    /// GET through the proxy with this `Host`.
    pub async fn get(&self, host: &str, path: &str) -> Resp {
        let req = http::Request::get(format!("http://{}{path}", self.proxy))
            .header("host", host)
            .body(Full::default())
            .expect("request");
        self.request(req)
            .await
            .unwrap_or_else(|e| panic!("GET {host}{path}: {e}"))
    }

    /// Like [`Rouse::get`] but returns transport errors instead of panicking.
    pub async fn get_raw(&self, host: &str, path: &str) -> Result<Resp, String> {
        let req = http::Request::get(format!("http://{}{path}", self.proxy))
            .header("host", host)
            .body(Full::default())
            .map_err(|e| e.to_string())?;
        self.request(req).await
    }

    pub async fn admin_get(&self, path: &str) -> Option<Resp> {
        let req = http::Request::get(format!("http://{}{path}", self.admin))
            .body(Full::default())
            .ok()?;
        self.request(req).await.ok()
    }

    pub async fn metrics(&self) -> String {
        self.admin_get("/metrics")
            .await
            .map(|r| r.text())
            .unwrap_or_default()
    }

    /// The value of the first metric line starting with `prefix` (name + labels).
    pub async fn metric(&self, prefix: &str) -> Option<f64> {
        self.metrics()
            .await
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// Ready replicas of `app`, from Rouse's own metric (registered for every app at start).
    /// Panics when it cannot be read — the admin port unreachable, or no line for `app` — so
    /// that "0 replicas" is always a 0 Rouse reported, never a failed read taken for one.
    pub async fn ready_replicas(&self, app: &str) -> u64 {
        let metrics = self
            .admin_get("/metrics")
            .await
            .filter(|r| r.status == 200)
            .map(|r| r.text())
            .unwrap_or_else(|| panic!("ready replicas of {app}: admin /metrics unreachable"));
        let prefix = format!("rouse_local_ready_replicas{{target=\"{app}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("ready replicas of {app}: no {prefix}line in /metrics"))
            as u64
    }

    /// Resident set of the Rouse process: (current, peak) in KiB. Panics when the process is
    /// gone, so that a memory bound is never met by a process that no longer exists.
    pub fn rss_kib(&self) -> (u64, u64) {
        let (rss, peak) = rss_kib(self.pid());
        assert!(
            rss > 0 && peak > 0,
            "Rouse (pid {}) is gone: no resident set to read",
            self.pid()
        );
        (rss, peak)
    }

    /// Sends a signal to Rouse.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args(["-s", sig, &self.pid().to_string()])
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -s {sig}");
    }

    /// Waits for Rouse to exit, returning its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                // The pipes are at EOF now (apps die with Rouse): collect the last lines.
                for p in self.pumps.drain(..) {
                    let _ = p.join();
                }
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

/// A WebSocket client connection through the proxy.
pub type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Rouse {
    /// Opens a WebSocket to `/ws` on the app behind `host` and checks it echoes.
    ///
    /// Retries (at most 3 times, saying so on stderr) when the tunnel closes right after the
    /// `101`: pingora 0.9.1 bug cloudflare/pingora#946 (fix in PR #947, unreleased) tears an
    /// HTTP/1 upgrade down when the upstream's 101 is read before the request's empty body.
    /// It needs a loaded machine to show; the README lists it under known issues.
    pub async fn open_ws(&self, host: &str) -> WebSocket {
        use futures::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        for attempt in 1..=3 {
            let mut req = format!("ws://{}/ws", self.proxy)
                .into_client_request()
                .expect("ws request");
            req.headers_mut()
                .insert("host", host.parse().expect("host"));
            let (mut ws, resp) = tokio_tungstenite::connect_async(req)
                .await
                .expect("websocket handshake");
            assert_eq!(resp.status().as_u16(), 101);
            ws.send(Message::text("ping")).await.expect("send");
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
                Ok(Some(Ok(m))) if m == Message::text("ping") => return ws,
                other => eprintln!(
                    "WebSocket attempt {attempt} closed after 101 ({other:?}); pingora#946, retrying"
                ),
            }
        }
        panic!("WebSocket through the proxy failed 3 times");
    }
}

impl Drop for Rouse {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGINT is Rouse's fast shutdown; its apps die with it (kill-on-drop, parent-death
            // signal). Escalate if it lingers.
            let _ = Command::new("kill")
                .args(["-s", "INT", &self.child.id().to_string()])
                .status();
            if self.wait_exit(Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("--- rouse output ---\n{}", self.output().join("\n"));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

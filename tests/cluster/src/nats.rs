//! A real `nats-server -js` on 127.0.0.1 for end-to-end tests: built from its Go module by
//! `eventgrid-adapter/nats/build-nats-server.sh` (cached), stopped when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The nats-server binary (built once per test process, then from the cache).
pub fn binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../eventgrid-adapter/nats/build-nats-server.sh");
        let path = crate::run_build_script(&script).unwrap_or_else(|e| panic!("{e}"));
        assert!(path.is_file(), "{} missing", path.display());
        path
    })
    .clone()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A running server; [`Nats::stop`] and [`Nats::start`] keep its port and store.
pub struct Nats {
    store: PathBuf,
    port: u16,
    monitor: u16,
    child: Option<Child>,
}

impl Nats {
    /// Starts a server with its JetStream store under `dir` and waits until JetStream is up.
    pub async fn start_in(dir: &Path) -> Nats {
        let mut n = Nats {
            store: dir.join("nats"),
            port: free_port(),
            monitor: free_port(),
            child: None,
        };
        n.start().await;
        n
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the (stopped) server again and waits for `/healthz?js-enabled-only=true`.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(binary())
            .args(["-js", "-sd"])
            .arg(&self.store)
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.monitor.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.healthy().await {
            assert!(
                Instant::now() < deadline,
                "nats-server did not become healthy"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILLs the server.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn healthy(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.monitor));
        let probe = async {
            let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
            s.write_all(b"GET /healthz?js-enabled-only=true HTTP/1.0\r\n\r\n")
                .await
                .ok()?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).await.ok()?;
            Some(out.starts_with(b"HTTP/1.0 200") || out.starts_with(b"HTTP/1.1 200"))
        };
        tokio::time::timeout(Duration::from_secs(2), probe)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

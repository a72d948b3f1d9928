//! The public plaintext listener, before pingora's HTTP engine: accepts connections up to a cap,
//! reads each HTTP/1 request head itself under deadlines, refuses what RFC 9112 forbids, and only
//! then hands the connection to the engine with the head replayed ([`conn`]; the checks
//! themselves are pure, in [`rouse_core::http1`]). A request the engine would hold is parked
//! here instead, for the price of its socket and head ([`park`]). h2c connections are
//! recognised by their preface and handed over whole.
//!
//! Why here and not in the engine: an engine session is tens of KiB and lives as long as the
//! connection, so a client that sends nothing, or one header byte a second, must be turned away
//! before one exists; and the head is where framing ambiguities (request smuggling) are decided.

pub mod conn;
pub mod park;
pub mod stream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_proxy::HttpProxy;
use tokio::sync::Semaphore;

use crate::config::ConnectionConfig;
use crate::event_gateway::GatewaySlot;
use crate::forward::Forwarder;
use crate::reason::Reason;
use crate::state::ProxyState;

/// Connections the kernel may queue before the accept loop takes them (capped by
/// `net.core.somaxconn`). std's `bind` queues 128, and a burst of new connections beyond that
/// waits for SYN retransmits (1 s, then 3 s …); pingora's own listener uses the same 65 535.
const BACKLOG: i32 = 65_535;

/// Binds the public listener, bound before the runtimes start so a taken port fails at once.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// The engine a connection is handed to.
pub type Engine = HttpProxy<Forwarder>;

/// The connection limits of [`ConnectionConfig`], as durations.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// From a connection's accept (or the first byte of a later request) to its complete head.
    pub header_timeout: Duration,
    /// An idle keep-alive connection (no byte of a next request) is closed after this.
    pub keepalive_timeout: Duration,
}

impl From<&ConnectionConfig> for Limits {
    fn from(c: &ConnectionConfig) -> Self {
        Limits {
            max_connections: c.max,
            header_timeout: Duration::from_millis(c.header_timeout_ms),
            keepalive_timeout: Duration::from_secs(c.keepalive_timeout_secs),
        }
    }
}

/// The listener's accept loop, run as a pingora background service so it shares the process's
/// runtimes and shutdown signal.
pub struct Front {
    pub engine: Arc<Engine>,
    pub state: Arc<ProxyState>,
    /// The event gateway's webhooks: their paths are never parked (the engine serves them).
    pub events: Arc<GatewaySlot>,
    pub limits: Limits,
    pub listener: std::sync::Mutex<Option<std::net::TcpListener>>,
}

/// Seconds between two "connection limit reached" log lines (each says how many were refused).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(5);

#[async_trait]
impl BackgroundService for Front {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(listener) = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let listener = match listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener))
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "The public listener cannot be used.");
                std::process::exit(1);
            }
        };
        let permits = Arc::new(Semaphore::new(self.limits.max_connections));
        let mut refused_since_log = 0u64;
        let mut last_log: Option<Instant> = None;
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.changed() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors (EMFILE/ENFILE) or a connection reset before
                    // accept: say so and back off a little rather than spin.
                    tracing::warn!(error = %e, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                self.state.metrics.connections_refused.inc();
                conn::refuse_at_capacity(tcp);
                refused_since_log += 1;
                if last_log.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_EVERY) {
                    tracing::warn!(
                        max_connections = self.limits.max_connections,
                        refused = refused_since_log,
                        reason = Reason::ConnectionLimit.as_str(),
                        "Connection limit reached: new connections are answered 503 and closed (proxy.connections.max)."
                    );
                    refused_since_log = 0;
                    last_log = Some(Instant::now());
                }
                continue;
            };
            let conn = conn::Conn {
                engine: self.engine.clone(),
                state: self.state.clone(),
                events: self.events.clone(),
                limits: self.limits,
                shutdown: shutdown.clone(),
            };
            pingora_runtime::current_handle()
                .spawn(conn.serve(conn::Conn::stream(tcp, peer), permit));
        }
        tracing::debug!("The public listener is closed.");
    }
}

//! One replica process: spawn on a free loopback port, prefix its logs, probe readiness tightly,
//! publish it as an endpoint, and stop it with SIGTERM then SIGKILL. Crashes are restarted with
//! exponential backoff by [`run`].

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rouse_core::Endpoint;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::AppHandle;
use crate::config::ProcessSpec;
use crate::spawner;

/// Waits between readiness probes, by time since spawn: every 1 ms for the first 2 s (where most
/// cold starts end, so a ready replica is seen within about a millisecond), then every 5 ms, then
/// every 20 ms after 10 s for slow starters. A probe of a port nobody listens on yet is one
/// refused connect: cheap enough to repeat this often.
fn probe_interval(since_spawn: Duration) -> Duration {
    match since_spawn.as_secs() {
        0..2 => Duration::from_millis(1),
        2..10 => Duration::from_millis(5),
        _ => Duration::from_millis(20),
    }
}
/// One probe's own time budget.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Restart backoff bounds; the backoff resets once a replica stayed up this long.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
const HEALTHY_RESET: Duration = Duration::from_secs(30);
/// Longest wait for a stopped replica's remaining output.
const LOG_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

enum Outcome {
    /// Stopped because the supervisor asked.
    Stopped,
    /// Exited, failed to spawn, or never became ready.
    Failed { ran_for: Duration },
}

/// Runs one replica slot until `stop` turns true, restarting the process when it dies.
pub async fn run(app: Arc<AppHandle>, id: String, mut stop: watch::Receiver<bool>) {
    let mut backoff = BACKOFF_MIN;
    loop {
        if *stop.borrow() {
            return;
        }
        let mut pumps = Vec::new();
        let outcome = run_once(&app, &id, &mut stop, &mut pumps).await;
        flush_logs(&mut pumps).await;
        match outcome {
            Outcome::Stopped => return,
            Outcome::Failed { ran_for } => {
                app.metrics
                    .replica_crashes
                    .with_label_values(&[&app.spec.name])
                    .inc();
                if ran_for >= HEALTHY_RESET {
                    backoff = BACKOFF_MIN;
                }
                tracing::warn!(replica = %id, backoff_ms = backoff.as_millis() as u64, "Replica failed; restarting.");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stopped(&mut stop) => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Resolves once the supervisor asks this slot to stop (the watch guard never crosses an await).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn free_port() -> std::io::Result<SocketAddr> {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    l.local_addr()
}

async fn spawn(spec: &ProcessSpec, id: &str, addr: SocketAddr) -> std::io::Result<Child> {
    let mut cmd = Command::new(&spec.command);
    cmd.args(&spec.args)
        .envs(&spec.env)
        .env("PORT", addr.port().to_string())
        .env("HOST", addr.ip().to_string())
        .env("ROUSE_REPLICA", id)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = &spec.workdir {
        cmd.current_dir(dir);
    }
    spawner::spawn(cmd).await
}

/// Copies a replica's output to Rouse's stdout, one prefixed line at a time. It never stops
/// reading before the pipe closes (non-UTF-8 bytes are replaced, a closed stdout is ignored), so
/// the app never blocks on, or dies of, a full or broken pipe.
fn pump_logs<R: AsyncRead + Unpin + Send + 'static>(id: String, reader: R) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(reader);
        let mut line = Vec::with_capacity(256);
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "[{id}] {}", text.trim_end_matches(['\n', '\r']));
                }
            }
        }
    })
}

/// One HTTP/1.1 GET; ready means a 2xx status line.
async fn probe(addr: SocketAddr, path: &str) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: rouse-probe\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.ok()?;
        // "HTTP/1.1 200"
        Some(buf.starts_with(b"HTTP/1.") && buf[9] == b'2')
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, attempt).await,
        Ok(Some(true))
    )
}

async fn until_ready(addr: SocketAddr, path: &str) {
    let spawned = Instant::now();
    loop {
        if probe(addr, path).await {
            return;
        }
        tokio::time::sleep(probe_interval(spawned.elapsed())).await;
    }
}

/// SIGTERM, then SIGKILL after `grace`.
async fn terminate(child: &mut Child, id: &str, grace: Duration) -> Option<ExitStatus> {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            tracing::warn!(replica = %id, grace_ms = grace.as_millis() as u64, "Replica ignored SIGTERM; killing.");
            let _ = child.kill().await;
            child.wait().await.ok()
        }
    }
}

/// Lets the log pumps forward a process's last lines (they end at EOF once it exited), so a
/// replica's final words are not lost when Rouse exits right after stopping it. Bounded, in case a
/// grandchild inherited the pipes.
async fn flush_logs(pumps: &mut Vec<JoinHandle<()>>) {
    let all = futures_join_all(std::mem::take(pumps));
    let _ = tokio::time::timeout(LOG_FLUSH_TIMEOUT, all).await;
}

async fn futures_join_all(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

async fn run_once(
    app: &AppHandle,
    id: &str,
    stop: &mut watch::Receiver<bool>,
    pumps: &mut Vec<JoinHandle<()>>,
) -> Outcome {
    let spec = &app.spec;
    let started = Instant::now();
    let failed = || Outcome::Failed {
        ran_for: started.elapsed(),
    };
    let addr = match free_port() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(replica = %id, error = %e, "No free loopback port.");
            return failed();
        }
    };
    let mut child = match spawn(spec, id, addr).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(replica = %id, command = %spec.command.display(), error = %e, "Replica failed to start.");
            return failed();
        }
    };
    app.metrics
        .replica_starts
        .with_label_values(&[&spec.name])
        .inc();
    if let Some(out) = child.stdout.take() {
        pumps.push(pump_logs(id.to_string(), out));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(pump_logs(id.to_string(), err));
    }
    tracing::info!(replica = %id, %addr, pid = child.id().unwrap_or(0), "Replica starting.");

    tokio::select! {
        () = until_ready(addr, &spec.readiness_path) => {}
        status = child.wait() => {
            tracing::warn!(replica = %id, status = ?status.ok(), "Replica exited before it was ready.");
            return failed();
        }
        () = stopped(stop) => {
            terminate(&mut child, id, spec.stop_grace).await;
            return Outcome::Stopped;
        }
        () = tokio::time::sleep(spec.startup_timeout) => {
            tracing::warn!(replica = %id, timeout_ms = spec.startup_timeout.as_millis() as u64, "Replica not ready in time; killing.");
            let _ = child.kill().await;
            return failed();
        }
    }
    let startup = started.elapsed();
    app.metrics
        .replica_startup
        .with_label_values(&[&spec.name])
        .observe(startup.as_secs_f64());
    let endpoint = Endpoint::new(id, addr);
    app.add_endpoint(endpoint.clone());
    tracing::info!(replica = %id, %addr, startup_ms = startup.as_millis() as u64, "Replica ready.");

    tokio::select! {
        status = child.wait() => {
            app.remove_endpoint(&endpoint);
            tracing::warn!(replica = %id, status = ?status.ok(), "Replica exited.");
            failed()
        }
        () = stopped(stop) => {
            // No new requests, then let in-flight ones finish before the signal.
            app.remove_endpoint(&endpoint);
            let deadline = Instant::now() + spec.stop_grace;
            while endpoint.in_flight() > 0
                && Instant::now() < deadline
                && !app
                    .abandon_in_flight
                    .load(std::sync::atomic::Ordering::Acquire)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let status = terminate(&mut child, id, spec.stop_grace).await;
            tracing::info!(replica = %id, status = ?status, "Replica stopped.");
            Outcome::Stopped
        }
    }
}

//! `rouse-controller`: scales the workloads behind `HTTPScaledObject`s on Kubernetes. Thin on
//! purpose: flags in, [`rouse_controller::run`] out.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use rouse_controller::demand::Aggregate;
use rouse_controller::lease::LeaseConfig;
use rouse_controller::proxies::Proxies;
use rouse_controller::{self as controller, Options};
use rouse_kube::Scope;
use rouse_scale::ScaleMetrics;

/// Rouse's controller for Kubernetes (leader-elected; run two).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, env = "ROUSE_LOG", default_value = "info")]
    log: String,
    /// Log line format: `text` (for people) or `json` (one object per line, for pipelines).
    #[arg(long, env = "ROUSE_LOG_FORMAT", default_value = "text")]
    log_format: rouse_core::logging::LogFormat,
    /// Namespaces to watch, comma-separated; empty = all.
    #[arg(long, env = "ROUSE_NAMESPACES", default_value = "")]
    namespaces: String,
    /// Also serve KEDA HTTP Add-on's `http.keda.sh/v1beta1` InterceptorRoutes: status
    /// conditions and the external scaler (KEDA's CRD must be installed).
    #[arg(long, env = "ROUSE_KEDA_INTERCEPTOR_ROUTES")]
    keda_interceptor_routes: bool,
    /// `namespace/name` of the proxies' admin Service (its EndpointSlices list the replicas).
    #[arg(
        long,
        env = "ROUSE_PROXY_SERVICE",
        default_value = "rouse-system/rouse-proxy-admin"
    )]
    proxy_service: String,
    /// Port name of the proxies' admin port in that Service.
    #[arg(long, env = "ROUSE_PROXY_PORT_NAME", default_value = "admin")]
    proxy_port_name: String,
    /// Fixed proxy admin addresses instead of the Service (comma-separated, for development).
    #[arg(long, env = "ROUSE_PROXY_ADDRS", value_delimiter = ',')]
    proxy_addrs: Vec<SocketAddr>,
    /// This replica's identity in the Lease (the pod name).
    #[arg(long, env = "ROUSE_ID", default_value = "rouse-controller")]
    id: String,
    #[arg(long, env = "ROUSE_LEASE_NAMESPACE", default_value = "rouse-system")]
    lease_namespace: String,
    #[arg(long, env = "ROUSE_LEASE_NAME", default_value = "rouse-controller")]
    lease_name: String,
    /// A standby takes over this long after the leader stopped renewing.
    #[arg(long, env = "ROUSE_LEASE_DURATION_MS", default_value_t = 15_000)]
    lease_duration_ms: u64,
    /// The leader renews this often.
    #[arg(long, env = "ROUSE_LEASE_RENEW_MS", default_value_t = 2_000)]
    lease_renew_ms: u64,
    /// Full demand snapshots from each proxy this often (wakes arrive at once regardless).
    #[arg(long, env = "ROUSE_REPORT_INTERVAL_MS", default_value_t = 1_000)]
    report_interval_ms: u64,
    /// Autoscaling decisions at least this often.
    #[arg(long, env = "ROUSE_TICK_MS", default_value_t = 1_000)]
    tick_ms: u64,
    /// /livez, /readyz, /metrics, /proxies, /demand.
    #[arg(long, env = "ROUSE_ADMIN_LISTEN", default_value = "0.0.0.0:9091")]
    admin_listen: SocketAddr,
    /// KEDA external-push scaler gRPC API; empty to disable.
    #[arg(
        long,
        env = "ROUSE_EXTERNAL_SCALER_LISTEN",
        default_value = "0.0.0.0:9100"
    )]
    external_scaler_listen: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    rouse_core::logging::init(&cli.log, cli.log_format, &[]);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let proxies = if cli.proxy_addrs.is_empty() {
        let (namespace, name) = cli.proxy_service.split_once('/').ok_or_else(|| {
            anyhow::anyhow!(
                "--proxy-service {:?}: expected namespace/name",
                cli.proxy_service
            )
        })?;
        Proxies::Service {
            namespace: namespace.into(),
            name: name.into(),
            port_name: cli.proxy_port_name.clone(),
        }
    } else {
        Proxies::Static(cli.proxy_addrs.clone())
    };
    let opts = Options {
        scope: Scope::parse(&cli.namespaces),
        proxies,
        lease: LeaseConfig {
            namespace: cli.lease_namespace.clone(),
            name: cli.lease_name.clone(),
            identity: cli.id.clone(),
            duration: Duration::from_millis(cli.lease_duration_ms.max(1000)),
            renew_every: Duration::from_millis(cli.lease_renew_ms.max(100)),
        },
        report_interval: Duration::from_millis(cli.report_interval_ms.clamp(50, 60_000)),
        tick: Duration::from_millis(cli.tick_ms.max(50)),
        keda_interceptor_routes: cli.keda_interceptor_routes,
    };
    let client = kube::Client::try_default().await?;
    let registry = prometheus::Registry::new();
    let metrics = ScaleMetrics::new(&registry);
    let aggregate = Arc::new(Aggregate::default());

    let admin = tokio::net::TcpListener::bind(cli.admin_listen)
        .await
        .map_err(|e| anyhow::anyhow!("admin listener {}: {e}", cli.admin_listen))?;
    let scaler = controller::status::ScalerSlot::default();
    tokio::spawn(controller::admin::serve(
        admin,
        registry,
        aggregate.clone(),
        scaler.clone(),
    ));
    if !cli.external_scaler_listen.is_empty() {
        let addr: SocketAddr = cli.external_scaler_listen.parse().map_err(|e| {
            anyhow::anyhow!(
                "--external-scaler-listen {:?}: {e}",
                cli.external_scaler_listen
            )
        })?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("external scaler listener {addr}: {e}"))?;
        tokio::spawn(controller::external_scaler::serve(
            listener,
            aggregate.clone(),
        ));
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "No SIGTERM handler.");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("Shutting down: releasing the lease.");
        stop_tx.send_replace(true);
    });
    tracing::info!(id = %cli.id, admin = %cli.admin_listen, "rouse-controller is up.");
    controller::run(client, opts, metrics, aggregate, scaler, stop_rx).await;
    Ok(())
}

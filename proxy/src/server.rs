//! Assembly: the pingora server with the proxy service (HTTP + h2c, optional TLS with h2), and
//! one background service for everything else (admin API, the platform — local processes and
//! autoscalers, or the Kubernetes watches and demand feed —, certificate reload, drain).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::HttpServerOptions;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::{RunArgs, Server, ShutdownWatch};
use pingora_core::services::background::{BackgroundService, background_service};
use rouse_local::{LocalMetrics, LocalPlatform};
use rouse_scale::{ScaleMetrics, autoscale};

use crate::config::{LocalConfig, ProxySettings};
use crate::delivery_guard::DeliveryGuard;
use crate::demand::DemandFeed;
use crate::drain::{DrainSignal, wait_drained};
use crate::event_gateway::{EventGateway, GatewaySlot, start_delivery};
use crate::forward::Forwarder;
use crate::front::{Front, Limits};
use crate::hold::Caps;
use crate::kubernetes::Scope;
use crate::state::ProxyState;
use crate::telemetry::Metrics;
use crate::tls::{CertStore, Resolver};
use rouse_eventgrid::Gateway;

/// pingora's wait after shutdown starts for runtimes to stop (explicit: its default is 5 s).
const RUNTIME_SHUTDOWN_SECS: u64 = 5;

/// Where routes and endpoints come from.
enum Platform {
    /// Apps are local processes; the controller runs in this process.
    Local {
        platform: Arc<LocalPlatform>,
        config: Box<LocalConfig>,
        scale_metrics: ScaleMetrics,
    },
    /// Routes, endpoints and event subscriptions come from the API server; a separate
    /// controller reads the demand feed and scales.
    Kubernetes {
        scope: Scope,
        /// Also route KEDA's `http.keda.sh/v1beta1` InterceptorRoutes.
        keda_interceptor_routes: bool,
        feed: DemandFeed,
        events: Arc<crate::kubernetes::events::EventSource>,
    },
}

/// Everything that is not the request path, run on its own runtime.
struct ControlPlane {
    state: Arc<ProxyState>,
    platform: Platform,
    settings: ProxySettings,
    admin: std::sync::Mutex<Option<std::net::TcpListener>>,
    certs: Option<Arc<CertStore>>,
    events: Arc<GatewaySlot>,
}

#[async_trait]
impl BackgroundService for ControlPlane {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let admin = self.admin.lock().unwrap_or_else(|p| p.into_inner()).take();
        let feed = match &self.platform {
            Platform::Kubernetes { feed, .. } => Some(feed.clone()),
            Platform::Local { .. } => None,
        };
        if let Some(listener) = admin {
            tokio::spawn(crate::admin::serve(listener, self.state.clone(), feed));
        }
        if let (Some(ev), Platform::Local { config, .. }) = (self.events.current(), &self.platform)
        {
            let hosts = config
                .apps
                .iter()
                .map(|a| (a.route.name.clone(), crate::config::delivery_host(&a.route)))
                .collect();
            start_delivery(&ev, self.settings.listen, &hosts);
        }
        if let (Some(certs), Some(tls)) = (&self.certs, &self.settings.tls) {
            tokio::spawn(
                certs
                    .clone()
                    .watch(Duration::from_secs(tls.reload_interval_secs.max(1))),
            );
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let platform = match &self.platform {
            Platform::Local {
                platform,
                config,
                scale_metrics,
            } => {
                for app in &config.apps {
                    tokio::spawn(autoscale::run(
                        self.state.target(&app.route.target),
                        app.policy.clone(),
                        platform.clone(),
                        app.tick,
                        scale_metrics.clone(),
                        stop_rx.clone(),
                    ));
                }
                Some(tokio::spawn(platform.clone().run(stop_rx)))
            }
            Platform::Kubernetes {
                scope,
                keda_interceptor_routes,
                feed,
                events,
            } => {
                let client = match kube::Client::try_default().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "No Kubernetes client (in-cluster or KUBECONFIG).");
                        std::process::exit(1);
                    }
                };
                let sources = crate::kubernetes::Sources {
                    scope: scope.clone(),
                    keda_interceptor_routes: *keda_interceptor_routes,
                };
                tokio::spawn(crate::kubernetes::run(
                    client.clone(),
                    sources,
                    self.state.clone(),
                    feed.clone(),
                ));
                tokio::spawn(events.clone().run(
                    client,
                    scope.clone(),
                    self.state.clone(),
                    self.settings.listen,
                ));
                None
            }
        };
        let _ = shutdown.wait_for(|s| *s).await;

        // Listeners are closing. Let held and in-flight requests finish (apps stay up for them),
        // then stop the apps and leave without waiting out the rest of pingora's grace period.
        let grace = self.settings.grace();
        let drained = wait_drained(&self.state, grace).await;
        tracing::info!(drained, pending = self.state.pending(), "Drain finished.");
        if !drained && let Platform::Local { platform: apps, .. } = &self.platform {
            // What is still in flight is cut when the process exits: do not make the apps wait
            // for it before their SIGTERM.
            apps.abandon_in_flight();
        }
        stop_tx.send_replace(true);
        if let Some(platform) = platform {
            let _ = platform.await;
        }
        tracing::info!("Shutdown complete.");
        std::process::exit(if drained { 0 } else { 1 });
    }
}

/// Builds and runs the proxy for Kubernetes: routes and endpoints from the API server (watch
/// `scope`), demand streamed to the controller on the admin listener as replica `id`.
///
/// With `queue` (NATS JetStream), the `EventSubscription`s in scope are served as webhooks on
/// the same listener; without it they are reported to the controller as not served. With
/// `keda_interceptor_routes`, KEDA's own InterceptorRoutes are routed too.
pub fn run_kubernetes(
    settings: ProxySettings,
    scope: Scope,
    keda_interceptor_routes: bool,
    id: &str,
    queue: Option<rouse_eventgrid::config::JetstreamConfig>,
) -> anyhow::Result<()> {
    let registry = prometheus::Registry::new();
    let state = ProxyState::new(
        Caps {
            max_requests: settings.max_held_requests,
            max_bytes: settings.max_held_bytes,
        },
        Metrics::new(registry.clone()),
    );
    // Not ready until the first routing table is read (see `ProxyState::is_synced`).
    state.set_synced(false);
    let events = Arc::new(crate::kubernetes::events::EventSource::new(
        queue,
        rouse_eventgrid::metrics::Metrics::new(&registry),
    ));
    let slot = events.slot.clone();
    let platform = Platform::Kubernetes {
        scope,
        keda_interceptor_routes,
        feed: DemandFeed::new(id).with_events(events.clone()),
        events,
    };
    serve(settings, state, platform, slot, 0)
}

/// Builds and runs the local all-in-one server. Returns only after a fast shutdown; a graceful
/// one exits the process from the control plane once drained.
pub fn run_local(config: LocalConfig) -> anyhow::Result<()> {
    let registry = prometheus::Registry::new();
    let metrics = Metrics::new(registry.clone());
    let scale_metrics = ScaleMetrics::new(&registry);
    // One process, no election: it always decides.
    scale_metrics.leader.set(1);
    let p = &config.proxy;
    let state = ProxyState::new(
        Caps {
            max_requests: p.max_held_requests,
            max_bytes: p.max_held_bytes,
        },
        metrics,
    );
    let conflicts = state.set_routes(config.apps.iter().map(|a| a.route.clone()).collect());
    anyhow::ensure!(conflicts.is_empty(), "route conflicts: {conflicts:?}");
    let platform = LocalPlatform::new(
        config
            .apps
            .iter()
            .map(|a| (a.process.clone(), state.target(&a.route.target)))
            .collect(),
        LocalMetrics::new(&registry),
    );
    let apps = platform.clone();
    state.set_desired_replicas(Box::new(move |target| apps.desired(target)));
    let max_stop_grace = config
        .apps
        .iter()
        .map(|a| a.process.stop_grace)
        .max()
        .unwrap_or_default()
        .max(Duration::from_secs(1));
    let gateway = match &config.event_gateway {
        Some(gw_config) => Some(open_gateway(gw_config, &config, &state, &registry)?),
        None => None,
    };
    let gateway = Arc::new(GatewaySlot::new(gateway));
    let settings = config.proxy.clone();
    let platform = Platform::Local {
        platform,
        config: Box::new(config),
        scale_metrics,
    };
    serve(
        settings,
        state,
        platform,
        gateway,
        2 * max_stop_grace.as_secs(),
    )
}

/// Opens the event gateway (replaying its queue) and reserves each subscription's delivery path
/// on its app's route. The gateway counts each subscription's queued events in its app's demand
/// and wakes the app when events wait for it.
fn open_gateway(
    gw_config: &rouse_eventgrid::GatewayConfig,
    config: &LocalConfig,
    state: &Arc<ProxyState>,
    registry: &prometheus::Registry,
) -> anyhow::Result<EventGateway> {
    let targets: rouse_eventgrid::DemandTargets = config
        .apps
        .iter()
        .map(|a| (a.route.name.clone(), state.target(&a.route.target)))
        .collect();
    let gateway = Gateway::open(
        gw_config,
        rouse_eventgrid::metrics::Metrics::new(registry),
        targets,
    )?;
    let guard = DeliveryGuard::new(gw_config.subscriptions.iter().filter_map(|s| {
        let app = s.target.app.clone()?;
        Some((app, s.target.path.clone()))
    }));
    Ok(EventGateway {
        gateway,
        guard: Arc::new(guard),
    })
}

/// The pingora server shared by both platforms. `stop_secs` is what the platform needs after the
/// drain to stop its own workloads (local apps), added to pingora's grace bound.
fn serve(
    p: ProxySettings,
    state: Arc<ProxyState>,
    platform: Platform,
    events: Arc<GatewaySlot>,
    stop_secs: u64,
) -> anyhow::Result<()> {
    let admin = std::net::TcpListener::bind(p.admin_listen)
        .map_err(|e| anyhow::anyhow!("admin listener {}: {e}", p.admin_listen))?;
    let public =
        crate::front::bind(p.listen).map_err(|e| anyhow::anyhow!("listener {}: {e}", p.listen))?;

    let threads = p
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let conf = ServerConf {
        threads,
        // One single-threaded runtime per worker: a connection stays on its thread, and the
        // per-wakeup cost of the work-stealing scheduler goes (+8 % throughput, loadtests `warm`).
        work_stealing: false,
        // Upper bound only: the control plane exits as soon as the drain completes and the apps
        // stopped. It must outlast both, or pingora drops the control plane mid-stop: the drain,
        // then per replica up to `stop_grace` for its requests plus `stop_grace` after SIGTERM.
        grace_period_seconds: Some(p.drain.grace_secs + stop_secs + 2),
        graceful_shutdown_timeout_seconds: Some(RUNTIME_SHUTDOWN_SECS),
        pid_file: std::env::temp_dir()
            .join(format!("rouse-{}.pid", std::process::id()))
            .display()
            .to_string(),
        upgrade_sock: std::env::temp_dir()
            .join(format!("rouse-{}.sock", std::process::id()))
            .display()
            .to_string(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    if p.access_log {
        let log = crate::access_log::AccessLog::start(
            rouse_core::logging::format(),
            state.metrics.access_log_dropped.clone(),
            std::io::stdout(),
        )
        .map_err(|e| anyhow::anyhow!("access log writer: {e}"))?;
        state.set_access_log(log);
    }

    let forwarder = || Forwarder {
        state: state.clone(),
        events: events.clone(),
        send_timeout: Duration::from_secs(p.connections.send_timeout_secs),
    };
    let options = || {
        let mut opts = HttpServerOptions::default();
        opts.h2c = true;
        opts
    };
    // The plaintext listener is Rouse's own front (connection cap, head deadlines and checks),
    // handing each request to the engine; pingora's listener serves TLS only.
    let mut engine = pingora_proxy::http_proxy(&server.configuration, forwarder());
    engine.server_options = Some(options());
    server.add_service(background_service(
        "rouse-front",
        Front {
            engine: Arc::new(engine),
            state: state.clone(),
            events: events.clone(),
            limits: Limits::from(&p.connections),
            listener: std::sync::Mutex::new(Some(public)),
        },
    ));
    let certs = match &p.tls {
        Some(tls) => {
            let mut proxy = pingora_proxy::http_proxy_service_with_name(
                &server.configuration,
                forwarder(),
                "rouse-proxy-tls",
            );
            if let Some(app) = proxy.app_logic_mut() {
                app.server_options = Some(options());
            }
            let store = CertStore::load(tls.certificates.clone())?;
            let mut settings = TlsSettings::intermediate("", "")?;
            settings.set_cert_resolver(Arc::new(Resolver(store.clone())));
            settings.enable_h2();
            proxy.add_tls_with_settings(&tls.listen.to_string(), None, settings);
            server.add_service(proxy);
            Some(store)
        }
        None => None,
    };
    server.add_service(background_service(
        "control-plane",
        ControlPlane {
            state: state.clone(),
            platform,
            settings: p.clone(),
            admin: std::sync::Mutex::new(Some(admin)),
            certs,
            events,
        },
    ));

    tracing::info!(listen = %p.listen, admin = %p.admin_listen, tls = ?p.tls.as_ref().map(|t| t.listen), "Rouse is up.");
    server.run(RunArgs {
        shutdown_signal: Box::new(DrainSignal {
            state,
            readiness_delay: Duration::from_millis(p.drain.readiness_delay_ms),
        }),
    });
    Ok(())
}

//! `rouse`: the command-line entry point. Thin on purpose: parse flags, load config, run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Rouse: scale HTTP apps to zero and wake them on the first request.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info,rouse_proxy=debug`.
    #[arg(long, env = "ROUSE_LOG", default_value = "info", global = true)]
    log: String,
    /// Log line format: `text` (for people) or `json` (one object per line, for pipelines).
    #[arg(long, env = "ROUSE_LOG_FORMAT", default_value = "text", global = true)]
    log_format: rouse_core::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy, the controller and the local platform in one process.
    Local {
        /// The local YAML file (see examples/local.yaml).
        #[arg(long, env = "ROUSE_CONFIG")]
        config: PathBuf,
    },
    /// Validate a local YAML file and exit: 0 if valid, 64 with every error otherwise.
    CheckConfig { config: PathBuf },
    /// Show a running Rouse: each target's hosts, replicas (ready and desired), held and
    /// in-flight requests, queued events, cold starts and last wake (its admin API's `/status`).
    Status {
        /// The admin listener of `rouse local` or of a `rouse kubernetes` replica.
        #[arg(long, env = "ROUSE_ADMIN", default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
        /// Redraw every `--interval-ms` until interrupted.
        #[arg(long)]
        watch: bool,
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
        interval_ms: u64,
        /// `table` for people, `json` (one document per refresh, one line each) for scripts.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: rouse_proxy::status::Output,
    },
    /// Run the proxy on Kubernetes: routes from HTTPScaledObjects and InterceptorRoutes,
    /// endpoints from the target Services' EndpointSlices, demand streamed to `rouse-controller`
    /// (in-cluster config, or KUBECONFIG); EventSubscriptions served as webhooks with the queue
    /// on NATS JetStream.
    Kubernetes(Box<KubernetesArgs>),
}

#[derive(clap::Args)]
struct KubernetesArgs {
    /// Public HTTP listener (HTTP/1.1 and h2c).
    #[arg(long, env = "ROUSE_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Admin listener: /metrics, /livez, /readyz, /routes, /explain, /queues, /demand/stream.
    #[arg(long, env = "ROUSE_ADMIN_LISTEN", default_value = "0.0.0.0:9090")]
    admin_listen: SocketAddr,
    /// Namespaces to watch, comma-separated; empty = all (needs cluster-wide read).
    #[arg(long, env = "ROUSE_NAMESPACES", default_value = "")]
    namespaces: String,
    /// Also route KEDA HTTP Add-on's `http.keda.sh/v1beta1` InterceptorRoutes as they are
    /// (KEDA's CRD must be installed, and the proxy allowed to list and watch them).
    #[arg(long, env = "ROUSE_KEDA_INTERCEPTOR_ROUTES")]
    keda_interceptor_routes: bool,
    /// This replica's name in the demand feed (the pod name).
    #[arg(long, env = "ROUSE_ID", default_value = "rouse-proxy")]
    id: String,
    /// Worker threads. Default: the number of CPUs.
    #[arg(long, env = "ROUSE_THREADS")]
    threads: Option<usize>,
    /// Held requests at once, all routes together.
    #[arg(long, env = "ROUSE_MAX_HELD_REQUESTS", default_value_t = 10_000)]
    max_held_requests: u64,
    /// Held bytes (heads + declared bodies) at once, all routes together.
    #[arg(long, env = "ROUSE_MAX_HELD_BYTES", default_value_t = 256 * 1024 * 1024)]
    max_held_bytes: u64,
    /// Seconds held and in-flight requests get to finish after SIGTERM.
    #[arg(long, env = "ROUSE_DRAIN_GRACE_SECS", default_value_t = 30)]
    drain_grace_secs: u64,
    /// Readiness fails this long before listeners close, so Services stop sending.
    #[arg(long, env = "ROUSE_READINESS_DELAY_MS", default_value_t = 0)]
    readiness_delay_ms: u64,
    /// Open connections on the public listener; beyond it, 503 `connection_limit` and close.
    #[arg(long, env = "ROUSE_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// Milliseconds a request head gets to arrive whole; else 408 `header_timeout`.
    #[arg(long, env = "ROUSE_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    header_timeout_ms: u64,
    /// Seconds a keep-alive connection may stay idle between requests.
    #[arg(long, env = "ROUSE_KEEPALIVE_TIMEOUT_SECS", default_value_t = 60)]
    keepalive_timeout_secs: u64,
    /// Seconds a write to a client that does not read may block before its request ends.
    #[arg(long, env = "ROUSE_SEND_TIMEOUT_SECS", default_value_t = 60)]
    send_timeout_secs: u64,
    /// One line per finished request on stdout (route, status, duration, held time, cold
    /// start, endpoint), in `--log-format`.
    #[arg(long, env = "ROUSE_ACCESS_LOG")]
    access_log: bool,
    /// NATS server(s) of the event queue (`nats://host:port`, comma-separated seeds, `tls://`
    /// for TLS). Without it, EventSubscriptions are not served (and reported so).
    #[arg(long, env = "ROUSE_NATS_URL")]
    nats_url: Option<String>,
    /// The JetStream stream of accepted events (shared by every replica).
    #[arg(long, env = "ROUSE_NATS_STREAM", default_value = "ROUSE_EVENTS")]
    nats_stream: String,
    /// Copies of each event in the NATS cluster: 1 (one server) or 3 (survives losing one).
    #[arg(long, env = "ROUSE_NATS_REPLICAS", default_value_t = 1)]
    nats_replicas: usize,
    /// A NATS `.creds` file (user JWT and NKey seed), e.g. mounted from a Secret.
    #[arg(long, env = "ROUSE_NATS_CREDENTIALS")]
    nats_credentials: Option<std::path::PathBuf>,
    /// Milliseconds a webhook request waits for JetStream's acknowledgement before 503.
    #[arg(long, env = "ROUSE_NATS_PUBLISH_TIMEOUT_MS", default_value_t = 5000)]
    nats_publish_timeout_ms: u64,
}

/// sysexits' EX_USAGE: bad configuration.
const EX_USAGE: u8 = 64;

/// mimalloc: per-request allocations (pingora's header maps, buffers) are small and short-lived,
/// and glibc's malloc spent ~11 % of the proxy's CPU on them (perf, loadtests `warm`).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// pingora's debug and trace lines print whole request heads (the target with its query, every
/// header): keys travel there (`?code=…`, key headers, bearer tokens). Those modules never log
/// below `info`, whatever `ROUSE_LOG` asks; their info-and-above lines name a request by
/// `Forwarder::request_summary`, without the query.
const HELD_AT_INFO: &[&str] = &["pingora_proxy", "pingora_core::protocols"];

fn main() -> ExitCode {
    let cli = Cli::parse();
    rouse_core::logging::init(&cli.log, cli.log_format, HELD_AT_INFO);
    let path = match &cli.command {
        Command::Local { config } | Command::CheckConfig { config } => config,
        Command::Kubernetes(args) => return run_kubernetes(args),
        Command::Status {
            admin,
            watch,
            interval_ms,
            output,
        } => {
            let every = watch.then(|| std::time::Duration::from_millis(*interval_ms));
            return exit_code(rouse_proxy::status::run(*admin, *output, every));
        }
    };
    let config = match rouse_proxy::config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            return ExitCode::from(EX_USAGE);
        }
    };
    match cli.command {
        Command::CheckConfig { .. } => {
            println!("{}: ok ({} apps)", path.display(), config.apps.len());
            ExitCode::SUCCESS
        }
        Command::Local { .. } => exit_code(rouse_proxy::server::run_local(config)),
        Command::Kubernetes(_) | Command::Status { .. } => unreachable!("handled above"),
    }
}

fn run_kubernetes(args: &KubernetesArgs) -> ExitCode {
    use rouse_eventgrid::config::JetstreamConfig;
    use rouse_proxy::config::{ConnectionConfig, DrainConfig, ProxySettings};
    let settings = ProxySettings {
        listen: args.listen,
        admin_listen: args.admin_listen,
        tls: None,
        threads: args.threads,
        max_held_requests: args.max_held_requests,
        max_held_bytes: args.max_held_bytes,
        drain: DrainConfig {
            grace_secs: args.drain_grace_secs,
            readiness_delay_ms: args.readiness_delay_ms,
        },
        connections: ConnectionConfig {
            max: args.max_connections,
            header_timeout_ms: args.header_timeout_ms,
            keepalive_timeout_secs: args.keepalive_timeout_secs,
            send_timeout_secs: args.send_timeout_secs,
        },
        access_log: args.access_log,
    };
    let errors = settings.validate();
    if !errors.is_empty() {
        // The same checks as the local file's `proxy:` section, named by flag here.
        const FLAGS: [(&str, &str); 9] = [
            ("proxy.connections.max", "--max-connections"),
            ("proxy.connections.header_timeout_ms", "--header-timeout-ms"),
            (
                "proxy.connections.keepalive_timeout_secs",
                "--keepalive-timeout-secs",
            ),
            ("proxy.connections.send_timeout_secs", "--send-timeout-secs"),
            ("proxy.threads", "--threads"),
            ("proxy.max_held_requests", "--max-held-requests"),
            ("proxy.drain.grace_secs", "--drain-grace-secs"),
            ("proxy.drain.readiness_delay_ms", "--readiness-delay-ms"),
            ("proxy.admin_listen", "--admin-listen"),
        ];
        for e in errors {
            let e = FLAGS
                .iter()
                .fold(e, |e, (field, flag)| e.replacen(field, flag, 1));
            eprintln!("error: {e}");
        }
        return ExitCode::from(EX_USAGE);
    }
    let queue = args.nats_url.as_ref().map(|url| JetstreamConfig {
        url: url.clone(),
        stream: args.nats_stream.clone(),
        replicas: args.nats_replicas,
        credentials_file: args.nats_credentials.clone(),
        publish_timeout_ms: args.nats_publish_timeout_ms,
    });
    if let Some(q) = &queue {
        let errors = q.validate();
        if !errors.is_empty() {
            const FLAGS: [(&str, &str); 4] = [
                ("event_gateway.queue.url", "--nats-url"),
                ("event_gateway.queue.stream", "--nats-stream"),
                ("event_gateway.queue.replicas", "--nats-replicas"),
                (
                    "event_gateway.queue.publish_timeout_ms",
                    "--nats-publish-timeout-ms",
                ),
            ];
            for e in errors {
                let e = FLAGS
                    .iter()
                    .fold(e, |e, (field, flag)| e.replacen(field, flag, 1));
                eprintln!("error: {e}");
            }
            return ExitCode::from(EX_USAGE);
        }
    }
    let scope = rouse_proxy::kubernetes::Scope::parse(&args.namespaces);
    exit_code(rouse_proxy::server::run_kubernetes(
        settings,
        scope,
        args.keda_interceptor_routes,
        &args.id,
        queue,
    ))
}

fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

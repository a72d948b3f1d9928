//! `rouse-eventgrid`: the event gateway on its own (Rouse mounts the same gateway on its proxy
//! listener; use this when events must be received somewhere else). Delivers to `target.url`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rouse_eventgrid::GatewayConfig;

/// Event Grid / CloudEvents webhook gateway with a durable queue.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// YAML file: the `event_gateway` section of Rouse's config.
    #[arg(long, env = "ROUSE_EVENTS_CONFIG")]
    config: PathBuf,
    /// Webhook listener.
    #[arg(long, env = "ROUSE_EVENTS_LISTEN", default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// `/metrics`, `/livez`.
    #[arg(
        long,
        env = "ROUSE_EVENTS_ADMIN_LISTEN",
        default_value = "127.0.0.1:9092"
    )]
    admin_listen: SocketAddr,
    #[arg(long, env = "ROUSE_LOG", default_value = "info")]
    log: String,
    /// Log line format: `text` (for people) or `json` (one object per line, for pipelines).
    #[arg(long, env = "ROUSE_LOG_FORMAT", default_value = "text")]
    log_format: rouse_core::logging::LogFormat,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    rouse_core::logging::init(&cli.log, cli.log_format, &[]);
    let config = match load(&cli.config) {
        Ok(c) => c,
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            return ExitCode::from(64);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: &PathBuf) -> Result<GatewayConfig, Vec<String>> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| vec![format!("{origin}: {e}")])?;
    rouse_eventgrid::config::parse(&text, &origin)
}

async fn run(cli: Cli, config: GatewayConfig) -> anyhow::Result<()> {
    let registry = prometheus::Registry::new();
    let metrics = rouse_eventgrid::metrics::Metrics::new(&registry);
    let gw = rouse_eventgrid::Gateway::open(&config, metrics, Default::default())?;
    rouse_eventgrid::deliver::start(&gw, |sub| rouse_eventgrid::deliver::Destination {
        base: sub.config.target.url.clone().unwrap_or_default(),
        host: sub.config.target.host.clone(),
        ..Default::default()
    });
    tokio::spawn(gw.clone().maintain());
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listener {}: {e}", cli.listen))?;
    let admin = tokio::net::TcpListener::bind(cli.admin_listen)
        .await
        .map_err(|e| anyhow::anyhow!("admin listener {}: {e}", cli.admin_listen))?;
    tokio::spawn(rouse_eventgrid::server::serve_admin(admin, registry));
    tracing::info!(listen = %cli.listen, subscriptions = config.subscriptions.len(), "rouse-eventgrid is up.");
    rouse_eventgrid::server::serve(listener, gw).await;
    Ok(())
}

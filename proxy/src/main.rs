//! `rouse`: the command-line entry point. Thin on purpose: parse flags, load config, run.

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
}

/// sysexits' EX_USAGE: bad configuration.
const EX_USAGE: u8 = 64;

/// mimalloc: per-request allocations (pingora's header maps, buffers) are small and short-lived,
/// and glibc's malloc spent ~11 % of the proxy's CPU on them (perf, loadtests `warm`).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let path = match &cli.command {
        Command::Local { config } | Command::CheckConfig { config } => config,
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
        Command::Local { .. } => match rouse_proxy::server::run_local(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

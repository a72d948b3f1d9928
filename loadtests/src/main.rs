//! `rouse-bench`: Rouse side by side with the baselines a user would pick instead, in one run.
//!
//! Every party runs on loopback, started here; load comes from a pinned `oha` (never a home-made
//! generator for plain load). Each scenario writes `results/<scenario>.md`, `.json` and PNG plots
//! and prints one summary line with its headline ratio. See `loadtests/README.md`.

mod machine;
mod oha;
mod party;
mod preflight;
mod report;
mod scenario;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};

/// The scenarios, in the order `all` runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Warm,
    Wake,
    Burst,
    Held,
    Routes,
    Soak,
    Events,
    Slowloris,
}

impl Scenario {
    const ALL: [Scenario; 8] = [
        Scenario::Warm,
        Scenario::Wake,
        Scenario::Burst,
        Scenario::Held,
        Scenario::Routes,
        Scenario::Soak,
        Scenario::Events,
        Scenario::Slowloris,
    ];
}

#[derive(Parser)]
#[command(about = "Rouse load tests: side-by-side benchmarks with reports and plots")]
struct Cli {
    /// Scenarios to run (all when none is named).
    #[arg(value_enum)]
    scenarios: Vec<Scenario>,
    /// Seconds-long runs of every scenario, to prove they work; their numbers mean nothing.
    #[arg(long)]
    smoke: bool,
    /// Directory for the reports (default: loadtests/results, or target/bench-smoke with --smoke).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// What every scenario gets: the mode, where reports go, the tools and the machine.
pub struct Ctx {
    pub smoke: bool,
    pub out: PathBuf,
    pub tools: party::Tools,
    pub machine: machine::Machine,
}

impl Ctx {
    /// `full` normally, `smoke` with `--smoke`.
    pub fn pick<T>(&self, full: T, smoke: T) -> T {
        if self.smoke { smoke } else { full }
    }
}

/// Raises this process's open-file limit to its hard limit: `held` and `burst` need one socket
/// per request here and in Rouse, which inherits the limit.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        eprintln!("rouse-bench: cannot raise the open-file limit from {soft} to {hard}: {e}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(text) = preflight::check() {
        eprint!("rouse-bench: {text}");
        return ExitCode::FAILURE;
    }
    raise_open_file_limit();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = cli.out.unwrap_or_else(|| {
        if cli.smoke {
            rouse_e2e::target_dir().join("bench-smoke")
        } else {
            manifest.join("results")
        }
    });
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("rouse-bench: cannot create {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    let tools = match party::Tools::build(manifest) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("rouse-bench: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut machine = machine::Machine::read();
    machine.with(
        "oha",
        machine::first_line(&tools.oha.display().to_string(), &["--version"]),
    );
    machine.with(
        "KEDA interceptor",
        match &tools.keda {
            Ok(_) => "kedacore/http-add-on v0.15.0 (built from its Go module)".into(),
            Err(e) => e.clone(),
        },
    );
    let ctx = Ctx {
        smoke: cli.smoke,
        out,
        tools,
        machine,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rouse-bench: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let wanted = if cli.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        cli.scenarios
    };
    let mut failed = Vec::new();
    for s in wanted {
        eprintln!("== {s:?}");
        // The e2e harness panics on what it cannot do (start Rouse, get an answer); a panic
        // fails this scenario, not the run.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(async {
                match s {
                    Scenario::Warm => scenario::warm::run(&ctx).await,
                    Scenario::Wake => scenario::wake::run(&ctx).await,
                    Scenario::Burst => scenario::burst::run(&ctx).await,
                    Scenario::Held => scenario::held::run(&ctx).await,
                    Scenario::Routes => scenario::routes::run(&ctx).await,
                    Scenario::Soak => scenario::soak::run(&ctx).await,
                    Scenario::Events => scenario::events::run(&ctx).await,
                    Scenario::Slowloris => scenario::slowloris::run(&ctx).await,
                }
            })
        }))
        .unwrap_or_else(|_| Err(anyhow::anyhow!("panicked (message above)")));
        match result.and_then(|r| r.write(&ctx).map(|()| r)) {
            Ok(r) => {
                println!("{}", r.summary);
            }
            Err(e) => {
                println!("{s:?}: FAILED: {e:#}");
                failed.push(s);
            }
        }
    }
    if let Err(e) = report::write_index(&ctx) {
        eprintln!("rouse-bench: writing the index: {e:#}");
        return ExitCode::FAILURE;
    }
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("rouse-bench: failed: {failed:?}");
        ExitCode::FAILURE
    }
}

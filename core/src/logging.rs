//! The one log set-up of Rouse's binaries (`rouse`, `rouse-controller`, `rouse-eventgrid`), so
//! they write the same lines and share one rule: libraries whose verbose lines print whole
//! request heads (a query string, a key header, a bearer token) never log below `info`,
//! whatever the filter asks — keys never reach the logs.

use tracing_subscriber::prelude::*;

/// Installs the global subscriber: `filter` in tracing's `EnvFilter` syntax (an invalid one
/// falls back to `info`), lines on stderr (coloured on a terminal), and every target starting
/// with one of `held_at_info` kept at `info` and above.
pub fn init(filter: &str, held_at_info: &'static [&'static str]) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    let no_request_heads = tracing_subscriber::filter::filter_fn(move |m| {
        *m.level() <= tracing::Level::INFO
            || !held_at_info.iter().any(|t| m.target().starts_with(t))
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(no_request_heads),
        )
        .init();
}

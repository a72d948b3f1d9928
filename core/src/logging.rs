//! The one log set-up of Rouse's binaries (`rouse`, `rouse-controller`, `rouse-eventgrid`), so
//! they write the same lines and share one rule: libraries whose verbose lines print whole
//! request heads (a query string, a key header, a bearer token) never log below `info`,
//! whatever the filter asks — keys never reach the logs.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use tracing_subscriber::Layer;
use tracing_subscriber::prelude::*;

/// How lines are written (`--log-format`, `ROUSE_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `2026-12-01T07:01:46.123456Z  INFO target: message key=value`, for people (coloured
    /// on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log pipelines: `timestamp` (RFC 3339, UTC), `level`,
    /// `target` (the module that logged) and `fields` (`message` and the line's own fields).
    /// These names are stable. Fields stay nested: several lines have a field named `target`
    /// (the app), which would collide with the module's at the top level.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?}: use text or json")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

/// The format [`init`] installed: other line writers of the process (the proxy's access log)
/// follow it.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The process's log format (text until [`init`] ran).
pub fn format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

/// Installs the global subscriber: `filter` in tracing's `EnvFilter` syntax (an invalid one
/// falls back to `info`), lines on stderr in `format`, and every target starting with one of
/// `held_at_info` kept at `info` and above.
pub fn init(filter: &str, format: LogFormat, held_at_info: &'static [&'static str]) {
    let _ = FORMAT.set(format);
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    let no_request_heads = tracing_subscriber::filter::filter_fn(move |m| {
        *m.level() <= tracing::Level::INFO
            || !held_at_info.iter().any(|t| m.target().starts_with(t))
    });
    let lines = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(lines.with_filter(no_request_heads))
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_by_name_and_refuse_others() {
        assert_eq!("text".parse(), Ok(LogFormat::Text));
        assert_eq!("json".parse(), Ok(LogFormat::Json));
        assert_eq!(LogFormat::Json.to_string(), "json");
        let e = "JSON".parse::<LogFormat>().expect_err("case-sensitive");
        assert!(e.contains("text or json"), "{e}");
    }
}

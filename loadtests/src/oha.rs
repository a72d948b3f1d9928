//! Drives `oha` (pinned by `build-tools.sh`) and reads its JSON report.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Value, json};

/// One `oha` run.
#[derive(Debug, Clone)]
pub struct Load {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The request's authority (`Host` in HTTP/1.1, `:authority` in h2): parties route by it.
    pub host: String,
    /// h2c with prior knowledge instead of HTTP/1.1.
    pub http2: bool,
    /// Client connections.
    pub connections: u32,
    /// HTTP/2 streams in flight per connection.
    pub streams: u32,
    /// Fixed rate (requests per second, with latency correction for coordinated omission);
    /// `None` is an open throttle.
    pub rate: Option<u32>,
    /// Run for this long …
    pub duration: Option<Duration>,
    /// … or send this many requests.
    pub requests: Option<u64>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// CPUs to pin the load generator to (`taskset -c`).
    pub cpus: Option<&'static str>,
}

impl Load {
    pub fn new(addr: SocketAddr, host: &str) -> Load {
        Load {
            addr,
            host: host.to_string(),
            http2: false,
            connections: 32,
            streams: 1,
            rate: None,
            duration: Some(Duration::from_secs(10)),
            requests: None,
            timeout: Duration::from_secs(30),
            cpus: None,
        }
    }
}

/// What a run measured. Latencies in seconds.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub rps: f64,
    pub requests: u64,
    /// Responses with a 2xx status.
    pub ok: u64,
    pub status: BTreeMap<String, u64>,
    /// Client-side failures by kind (refused, reset, timeout …).
    pub errors: BTreeMap<String, u64>,
    /// Requests a timed run had queued but not finished when its time was up: not failures.
    pub aborted: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub slowest: f64,
    /// (latency s, count) buckets, as oha reports them.
    pub histogram: Vec<(f64, u64)>,
}

impl Outcome {
    pub fn failed(&self) -> u64 {
        self.requests.saturating_sub(self.ok)
    }

    pub fn json(&self) -> Value {
        json!({
            "rps": self.rps, "requests": self.requests, "ok": self.ok,
            "status": self.status, "errors": self.errors, "aborted_at_deadline": self.aborted,
            "p50_ms": self.p50 * 1e3, "p90_ms": self.p90 * 1e3, "p99_ms": self.p99 * 1e3,
            "p999_ms": self.p999 * 1e3, "slowest_ms": self.slowest * 1e3,
        })
    }
}

#[derive(Deserialize)]
struct Report {
    summary: Summary,
    #[serde(rename = "latencyPercentiles")]
    latency_percentiles: BTreeMap<String, Option<f64>>,
    #[serde(rename = "responseTimeHistogram", default)]
    histogram: BTreeMap<String, u64>,
    #[serde(rename = "statusCodeDistribution", default)]
    status: BTreeMap<String, u64>,
    #[serde(rename = "errorDistribution", default)]
    errors: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
struct Summary {
    #[serde(rename = "requestsPerSec")]
    requests_per_sec: f64,
    slowest: Option<f64>,
}

/// oha's error for a request cut off by the end of a timed run.
const ABORTED: &str = "aborted due to deadline";

fn secs(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Runs `oha` to completion and parses its report.
pub async fn run(oha: &Path, load: &Load) -> anyhow::Result<Outcome> {
    let mut cmd = match load.cpus {
        Some(cpus) => {
            let mut c = tokio::process::Command::new("taskset");
            c.args(["-c", cpus]).arg(oha);
            c
        }
        None => tokio::process::Command::new(oha),
    };
    // The URL carries the routing host, so HTTP/1.1 `Host` and h2 `:authority` agree;
    // `--connect-to` sends it to the party's loopback address without any name lookup.
    let port = load.addr.port();
    let url = format!("http://{}:{port}/", load.host);
    let connect_to = format!("{}:{port}:{}:{port}", load.host, load.addr.ip());
    cmd.args([
        "--no-tui",
        "--output-format",
        "json",
        "--connect-to",
        &connect_to,
    ])
    .args(["-c", &load.connections.to_string()])
    .args(["-t", &secs(load.timeout)]);
    if load.http2 {
        cmd.args(["--http2", "-p", &load.streams.to_string()]);
    }
    if let Some(rate) = load.rate {
        cmd.args(["-q", &rate.to_string(), "--latency-correction"]);
    }
    match (load.duration, load.requests) {
        (_, Some(n)) => cmd.args(["-n", &n.to_string()]),
        (Some(d), None) => cmd.args(["-z", &secs(d), "--wait-ongoing-requests-after-deadline"]),
        (None, None) => bail!("a load needs a duration or a request count"),
    };
    cmd.arg(&url).kill_on_drop(true);
    let out = cmd.output().await.context("running oha")?;
    if !out.status.success() {
        bail!(
            "oha failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&out.stdout)
}

/// Parses oha's `--output-format json` report.
pub fn parse(json: &[u8]) -> anyhow::Result<Outcome> {
    let r: Report = serde_json::from_slice(json).context("oha's JSON report")?;
    let p = |k: &str| {
        r.latency_percentiles
            .get(k)
            .copied()
            .flatten()
            .unwrap_or(0.0)
    };
    let ok = r
        .status
        .iter()
        .filter(|(code, _)| code.starts_with('2'))
        .map(|(_, n)| n)
        .sum();
    let mut errors = r.errors;
    let aborted = errors.remove(ABORTED).unwrap_or(0);
    let requests = r.status.values().sum::<u64>() + errors.values().sum::<u64>();
    let mut histogram: Vec<(f64, u64)> = r
        .histogram
        .iter()
        .filter_map(|(k, n)| Some((k.parse::<f64>().ok()?, *n)))
        .collect();
    histogram.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(Outcome {
        rps: r.summary.requests_per_sec,
        requests,
        ok,
        status: r.status,
        errors,
        aborted,
        p50: p("p50"),
        p90: p("p90"),
        p99: p("p99"),
        p999: p("p99.9"),
        slowest: r.summary.slowest.unwrap_or(0.0),
        histogram,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_oha_report() {
        let json = br#"{"summary":{"successRate":1.0,"total":1.0,"slowest":0.004,"fastest":0.0001,
            "average":0.001,"requestsPerSec":999.5,"totalData":10,"sizePerRequest":1,"sizePerSec":10.0},
            "responseTimeHistogram":{"0.001":900,"0.002":95,"0.004":5},
            "latencyPercentiles":{"p10":0.0005,"p50":0.001,"p90":0.0015,"p99":0.002,"p99.9":0.0035,"p99.99":0.004},
            "statusCodeDistribution":{"200":990,"503":8},
            "errorDistribution":{"connection closed":2,"aborted due to deadline":7}}"#;
        let o = parse(json).expect("parse");
        assert_eq!(o.requests, 1000);
        assert_eq!(o.ok, 990);
        assert_eq!(o.failed(), 10);
        assert_eq!(o.aborted, 7);
        assert!((o.p999 - 0.0035).abs() < 1e-12);
        assert_eq!(o.histogram.first(), Some(&(0.001, 900)));
    }
}

//! One module per scenario; each returns a [`crate::report::Report`].

pub mod burst;
pub mod events;
pub mod held;
pub mod routes;
pub mod soak;
pub mod wake;
pub mod warm;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use rouse_e2e::Rouse;

/// The load generator's CPU.
pub const LOAD_CPU: &str = "0";
/// The system under test's CPU: the backend and the proxy in front of it.
pub const SUT_CPU: &str = "1";

/// The address of `route`'s first ready endpoint, as Rouse's admin API reports it.
pub async fn backend_of(rouse: &Rouse, route: &str) -> anyhow::Result<SocketAddr> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(r) = rouse.admin_get("/queues").await {
            let v = r.json();
            let addr = v["routes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["route"] == route)
                .and_then(|r| r["endpoints"][0]["addr"].as_str())
                .and_then(|a| a.parse().ok());
            if let Some(a) = addr {
                return Ok(a);
            }
        }
        if tokio::time::Instant::now() > deadline {
            return None.context(format!("route {route} has no ready endpoint after 20 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn fmt_ms(secs: f64) -> String {
    format!("{:.3}", secs * 1e3)
}

pub fn fmt_rps(rps: f64) -> String {
    format!("{rps:.0}")
}

/// The `p` quantile (0..=1) of sorted values, nearest rank.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Microseconds since midnight UTC of a tracing line (`2026-11-28T15:21:41.640285Z ...`).
pub fn time_of_day_us(line: &str) -> Option<u64> {
    let t = line.split('T').nth(1)?.split('Z').next()?;
    let mut parts = t.split(':');
    let h: u64 = parts.next()?.parse().ok()?;
    let m: u64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some((h * 3600 + m * 60) * 1_000_000 + (s * 1e6).round() as u64)
}

/// The value of `key=` in a log line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.split(&format!("{key}=")).nth(1)?;
    rest.split_whitespace().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_log_fields_and_times() {
        let l =
            "2026-11-28T01:02:03.000004Z  INFO rouse: Scaled. target=a wake_to_scale_us=41 held=1";
        assert_eq!(field(l, "wake_to_scale_us"), Some("41"));
        assert_eq!(time_of_day_us(l), Some(3_723_000_004));
        assert_eq!(quantile(&[1.0, 2.0, 3.0], 0.5), 2.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}

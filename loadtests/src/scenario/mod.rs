//! One module per scenario; each returns a [`crate::report::Report`].

pub mod burst;
pub mod events;
pub mod held;
pub mod routes;
pub mod slowloris;
pub mod soak;
pub mod wake;
pub mod warm;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use rouse_e2e::{App, Launch, Rouse};

/// The load generator's CPU.
pub const LOAD_CPU: &str = "0";
/// The system under test's CPU: the backend and the proxy in front of it.
pub const SUT_CPU: &str = "1";

/// Rouse serving one warm `hello-fn` replica (never scaled) as app `name`, pinned with its app
/// to the measured CPU, one proxy worker; and that replica's address.
pub async fn warm_rouse(name: &str) -> anyhow::Result<(Rouse, SocketAddr)> {
    let app = App::hello(name)
        .env("LOG_REQUESTS", "0")
        .with("replicas: {min: 1, max: 1}")
        .with("scaledown_period_secs: 86400");
    let rouse = Rouse::launch(Launch {
        apps: std::slice::from_ref(&app),
        log: "warn",
        threads: 1,
        cpus: Some(SUT_CPU),
        ..Launch::default()
    })
    .await;
    let backend = backend_of(&rouse, name).await?;
    Ok((rouse, backend))
}

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

/// Unix microseconds of a tracing line's timestamp (`2026-11-28T15:21:41.640285Z ...`).
pub fn unix_us(line: &str) -> Option<u64> {
    let stamp = line.split_whitespace().next()?;
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.split('-');
    let (y, mo, da): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let mut t = time.strip_suffix('Z')?.split(':');
    let h: u64 = t.next()?.parse().ok()?;
    let m: u64 = t.next()?.parse().ok()?;
    let s: f64 = t.next()?.parse().ok()?;
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + da - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    Some((days * 86_400 + h * 3600 + m * 60) * 1_000_000 + (s * 1e6).round() as u64)
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
        // 2026-11-28T01:02:03.000004Z: 20 785 days after the epoch.
        assert_eq!(unix_us(l), Some((20_785 * 86_400 + 3_723) * 1_000_000 + 4));
        assert_eq!(unix_us("1970-01-01T00:00:00.5Z x"), Some(500_000));
        assert_eq!(unix_us("2000-03-01T00:00:00Z"), Some(951_868_800_000_000));
        assert_eq!(quantile(&[1.0, 2.0, 3.0], 0.5), 2.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }
}

//! Scenario 3 — burst at zero: many concurrent requests to a cold route. Every one must be
//! served, by one app start, with bounded proxy memory.

use std::time::Duration;

use rouse_e2e::{App, Launch, Rouse};
use serde_json::json;

use crate::Ctx;
use crate::oha::{self, Load};
use crate::party;
use crate::report::{Report, verdict};
use rouse_e2e::plot;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let n: u64 = ctx.pick(10_000, 500);
    // One replica at most: the burst must be absorbed by holding, not by starting more apps.
    // 300 ms of boot makes every request arrive while the app is still starting.
    let app = App::hello("burst")
        .env("LOG_REQUESTS", "0")
        .env("STARTUP_DELAY_MS", "300")
        .with("replicas: {min: 0, max: 1}")
        // At most 1 000 in flight to the replica; the rest stay held and follow as capacity frees.
        .with("endpoint_concurrency: 1000")
        .with("cold_start: {max_held_requests: 20000, hold_timeout_ms: 60000}");
    let rouse = Rouse::launch(Launch {
        apps: std::slice::from_ref(&app),
        proxy_extra: "  max_held_requests: 20000\n  connections: {max: 30000}\n",
        log: "info",
        ..Launch::default()
    })
    .await;
    let idle_kib = party::rss_kib(rouse.pid()).0;
    let mut load = Load::new(rouse.proxy, "burst.localhost");
    (load.connections, load.requests, load.duration) = (n as u32, Some(n), None);
    load.timeout = Duration::from_secs(60);
    let o = oha::run(&ctx.tools.oha, &load).await?;
    rouse.settle().await;
    let starts = rouse.count_output("hello-fn started");
    let (_, peak_kib) = party::rss_kib(rouse.pid());
    let success = o.ok as f64 / n as f64 * 100.0;
    let mut r = Report::new(
        "burst",
        "Burst at zero: concurrent requests to a cold route",
    );
    r.para(&format!(
        "Method: `oha -n {n} -c {n}` (one connection per request, all opened at once) against a route \
         whose app is at zero replicas, at most one replica, 300 ms boot. Rouse holds the burst \
         (per-route and global caps raised to 20 000) and releases it to the single replica as \
         it becomes ready, at most 1 000 in flight (`endpoint_concurrency: 1000`). Peak RSS is the kernel's high-water mark \
         (VmHWM) of the Rouse process."
    ));
    r.table(
        &[
            "requests",
            "served 2xx",
            "other",
            "app starts",
            "p50 ms",
            "p99 ms",
            "slowest ms",
            "Rouse RSS idle MiB",
            "Rouse peak RSS MiB",
        ],
        &[vec![
            n.to_string(),
            format!("{} ({success:.2} %)", o.ok),
            format!("{:?} {:?}", o.status, o.errors),
            starts.to_string(),
            format!("{:.1}", o.p50 * 1e3),
            format!("{:.1}", o.p99 * 1e3),
            format!("{:.1}", o.slowest * 1e3),
            format!("{:.1}", idle_kib as f64 / 1024.0),
            format!("{:.1}", peak_kib as f64 / 1024.0),
        ]],
    );
    let met = o.ok == n && starts == 1;
    r.para("## Targets");
    r.table(
        &["target", "measured", "verdict"],
        &[vec![
            format!("{n}-request burst 100 % served with one start"),
            format!("{success:.2} % served, {starts} start(s)"),
            verdict(met).into(),
        ]],
    );
    r.summary = format!(
        "burst: {success:.2} % of {n} cold requests served, {starts} app start(s), Rouse peak RSS {:.0} MiB",
        peak_kib as f64 / 1024.0
    );
    let png = "burst-latency.png";
    let samples: Vec<f64> = o
        .histogram
        .iter()
        .flat_map(|(lat, count)| std::iter::repeat_n(lat * 1e3, *count as usize))
        .collect();
    plot::histograms(
        &ctx.out.join(png),
        &format!("{n} requests to a cold route: response time"),
        &[("response time (client)", &samples, "ms")],
    )?;
    r.plots.push(png.into());
    r.data = json!({
        "requests": n, "outcome": o.json(), "app_starts": starts,
        "rss_idle_kib": idle_kib, "rss_peak_kib": peak_kib,
    });
    Ok(r)
}

//! Scenario 6 — soak: steady load through Rouse for minutes; RSS and latency over time must be
//! flat (no leak, no drift).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{LOAD_CPU, SUT_CPU};
use crate::Ctx;
use crate::oha::{self, Load};
use crate::party;
use crate::report::{Report, verdict};
use rouse_e2e::plot::{self, Panel};

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let (segments, segment_secs, rate) = ctx.pick((20u64, 30u64, 1000u32), (3, 1, 200));
    let (rouse, _) = super::warm_rouse("soak").await?;
    let pid = rouse.pid();
    // RSS sampled every second, beside the load.
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut rss = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                rss.push((
                    started.elapsed().as_secs_f64(),
                    party::rss_kib(pid).0 as f64 / 1024.0,
                ));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            rss
        })
    };
    // Consecutive fixed-rate runs: each gives the latency percentiles of its slice of time.
    let mut load = Load::new(rouse.proxy, "soak.localhost");
    (load.rate, load.duration, load.cpus) = (
        Some(rate),
        Some(Duration::from_secs(segment_secs)),
        Some(LOAD_CPU),
    );
    let mut slices = Vec::new();
    let mut failure = None;
    for _ in 0..segments {
        let at = started.elapsed().as_secs_f64();
        match oha::run(&ctx.tools.oha, &load).await {
            Ok(o) => slices.push((at + segment_secs as f64 / 2.0, o)),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    // The sampler stops whatever happened, so it never outlives the scenario.
    stop.store(true, Ordering::Relaxed);
    let rss = sampler.await?;
    if let Some(e) = failure {
        return Err(e);
    }
    let requests: u64 = slices.iter().map(|(_, o)| o.requests).sum();
    let failed: u64 = slices.iter().map(|(_, o)| o.failed()).sum();
    // Flatness: RSS at the end vs after the first slice (warm caches, pools filled); p99 of the
    // last slice vs the first.
    let first_slice_end = segment_secs as f64;
    let rss_warm = rss
        .iter()
        .find(|(t, _)| *t >= first_slice_end)
        .or(rss.last())
        .map_or(0.0, |r| r.1);
    let rss_end = rss.last().map_or(0.0, |r| r.1);
    let growth = rss_end - rss_warm;
    let p99_first = slices.first().map_or(0.0, |s| s.1.p99) * 1e3;
    let p99_last = slices.last().map_or(0.0, |s| s.1.p99) * 1e3;
    let p99_max = slices.iter().map(|s| s.1.p99).fold(0.0, f64::max) * 1e3;
    let rss_flat = growth <= (rss_warm * 0.10).max(2.0);
    let lat_flat = p99_last <= p99_first * 2.0 + 1.0;
    let mut r = Report::new("soak", "Soak: steady load, RSS and latency over time");
    r.para(&format!(
        "Method: {rate} rps through Rouse (HTTP/1.1, warm app, one replica) for {} s, as {segments} \
         consecutive {segment_secs} s `oha` runs (each with latency correction; each reopens its 32 \
         connections) so latency can be read per slice; Rouse's RSS sampled every second. Placement as in \
         the warm scenario: oha on CPU {LOAD_CPU}, Rouse (one worker) and the app on CPU {SUT_CPU}. Flat means: RSS \
         at the end within max(10 %, 2 MiB) of RSS after the first slice, and the last slice's p99 within \
         2× + 1 ms of the first's.",
        segments * segment_secs
    ));
    r.table(
        &[
            "requests",
            "failed",
            "RSS after first slice MiB",
            "RSS at end MiB",
            "growth MiB",
            "p99 first slice ms",
            "p99 last slice ms",
            "worst slice p99 ms",
        ],
        &[vec![
            requests.to_string(),
            failed.to_string(),
            format!("{rss_warm:.1}"),
            format!("{rss_end:.1}"),
            format!("{growth:+.2}"),
            format!("{p99_first:.3}"),
            format!("{p99_last:.3}"),
            format!("{p99_max:.3}"),
        ]],
    );
    r.para("## Targets");
    r.table(
        &["target", "measured", "verdict"],
        &[
            vec![
                "flat RSS".into(),
                format!("{growth:+.2} MiB over the run"),
                verdict(rss_flat).into(),
            ],
            vec![
                "flat latency".into(),
                format!("p99 {p99_first:.3} → {p99_last:.3} ms"),
                verdict(lat_flat).into(),
            ],
            vec![
                "no failed request".into(),
                format!("{failed} of {requests}"),
                verdict(failed == 0).into(),
            ],
        ],
    );
    r.summary = format!(
        "soak: {} s at {rate} rps, RSS {rss_warm:.1} → {rss_end:.1} MiB ({}), p99 {p99_first:.2} → {p99_last:.2} ms ({}), {failed} failed",
        segments * segment_secs,
        if rss_flat { "flat" } else { "growing" },
        if lat_flat { "flat" } else { "drifting" },
    );
    let png = "soak.png";
    let p50: Vec<(f64, f64)> = slices.iter().map(|(t, o)| (*t, o.p50 * 1e3)).collect();
    let p99: Vec<(f64, f64)> = slices.iter().map(|(t, o)| (*t, o.p99 * 1e3)).collect();
    plot::lines(
        &ctx.out.join(png),
        &format!("Soak: {rate} rps through Rouse"),
        "seconds",
        &[
            Panel {
                y_label: "Rouse RSS MiB",
                series: vec![("RSS", rss.clone())],
            },
            Panel {
                y_label: "latency ms",
                series: vec![("p50", p50), ("p99", p99)],
            },
        ],
        false,
    )?;
    r.plots.push(png.into());
    r.data = json!({
        "rate": rate, "segments": segments, "segment_secs": segment_secs,
        "requests": requests, "failed": failed,
        "rss_mib": rss, "slices": slices.iter().map(|(t, o)| json!({"t": t, "outcome": o.json()})).collect::<Vec<_>>(),
    });
    Ok(r)
}

//! Scenario 2 — wake latency: repeated wakes of a cold app, each split into the platform's part
//! (scale signal → app listening) and Rouse's (held request → scale signal, app listening →
//! request released for forwarding).

use std::time::{Duration, Instant};

use rouse_e2e::{App, Rouse};
use serde_json::json;

use super::{field, quantile, unix_us};
use crate::Ctx;
use crate::report::{Report, verdict};
use rouse_e2e::plot;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let wakes = ctx.pick(100, 3);
    let app = App::hello("wake")
        .env("LOG_REQUESTS", "0")
        .with("scaledown_period_secs: 0.2")
        .with("scaling: {stable_window_secs: 0.5, panic_window_secs: 0.1, tick_secs: 0.05}");
    let rouse = Rouse::start_with_log(&[app], "", "info,rouse_proxy=debug").await;
    let mut client_ms = Vec::new();
    for i in 0..wakes {
        rouse
            .wait_for("zero replicas", Duration::from_secs(10), || async {
                rouse.ready_replicas("wake").await == 0
            })
            .await;
        let t = Instant::now();
        let r = rouse.get("wake.localhost", &format!("/?wake={i}")).await;
        client_ms.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(r.status == 200, "wake {i}: status {}", r.status);
        anyhow::ensure!(
            r.header("x-rouse-cold-start") == Some("true"),
            "wake {i} was not a cold start"
        );
    }
    rouse.settle().await;
    let out = rouse.output();
    // Per wake, in order: the scale decision (with its signal → scale latency), the app's own
    // "listening" clock, and the held request's release.
    let scaled: Vec<(u64, f64)> = out
        .iter()
        .filter(|l| l.contains("Scaled.") && l.contains("wake_to_scale_us="))
        .filter_map(|l| {
            Some((
                unix_us(l)?,
                field(l, "wake_to_scale_us")?.parse::<f64>().ok()?,
            ))
        })
        .collect();
    let ready: Vec<u64> = out
        .iter()
        .filter_map(|l| field(l, "ready_unix_us")?.parse::<u64>().ok())
        .collect();
    let released: Vec<(u64, f64)> = out
        .iter()
        .filter(|l| l.contains("Held request released."))
        .filter_map(|l| {
            Some((
                unix_us(l)?,
                field(l, "since_ready_us")?.parse::<f64>().ok()?,
            ))
        })
        .collect();
    anyhow::ensure!(
        scaled.len() == wakes && ready.len() == wakes && released.len() == wakes,
        "expected {wakes} of each log line, got {} scale decisions, {} app starts, {} releases",
        scaled.len(),
        ready.len(),
        released.len()
    );
    let mut signal_us: Vec<f64> = scaled.iter().map(|s| s.1).collect();
    let mut platform_ms: Vec<f64> = scaled
        .iter()
        .zip(&ready)
        .map(|((at, _), ready)| ready.saturating_sub(*at) as f64 / 1e3)
        .collect();
    let mut ready_fwd_ms: Vec<f64> = ready
        .iter()
        .zip(&released)
        .map(|(ready, (at, _))| at.saturating_sub(*ready) as f64 / 1e3)
        .collect();
    let mut published_us: Vec<f64> = released.iter().map(|r| r.1).collect();
    let (signal_hist, platform_hist, ready_hist) =
        (signal_us.clone(), platform_ms.clone(), ready_fwd_ms.clone());
    for v in [
        &mut signal_us,
        &mut platform_ms,
        &mut ready_fwd_ms,
        &mut published_us,
        &mut client_ms,
    ] {
        v.sort_by(f64::total_cmp);
    }
    let stats = |v: &[f64]| json!({"median": quantile(v, 0.5), "p99": quantile(v, 0.99), "max": v.last().copied().unwrap_or(0.0)});
    let row = |name: &str, unit: &str, v: &[f64]| {
        vec![
            name.to_string(),
            format!("{:.3} {unit}", quantile(v, 0.5)),
            format!("{:.3} {unit}", quantile(v, 0.99)),
            format!("{:.3} {unit}", v.last().copied().unwrap_or(0.0)),
        ]
    };
    let mut r = Report::new("wake", "Wake latency: platform start vs Rouse overhead");
    r.para(&format!(
        "Method: {wakes} wakes of `hello-fn` (no artificial boot delay) on the local platform. Before each, \
         the app is back at zero (idle 0.2 s); one GET is sent and held. Timestamps: Rouse's log (scale \
         decision, release of the held request) and the app's own clock when it starts listening — one \
         machine, one wall clock. *held request → scale signal* is measured inside Rouse from the wake \
         notification to the platform accepting the scale request; *app listening → released* includes \
         readiness-probe detection (1 ms probes for the first 2 s) and the proxy's release; *endpoint \
         published → released* is Rouse's share after the probe passed."
    ));
    r.table(
        &["segment", "median", "p99", "worst"],
        &[
            row("held request → scale signal (Rouse)", "µs", &signal_us),
            row(
                "scale signal → app listening (platform start)",
                "ms",
                &platform_ms,
            ),
            row(
                "app listening → released (Rouse, incl. probe)",
                "ms",
                &ready_fwd_ms,
            ),
            row("endpoint published → released (Rouse)", "µs", &published_us),
            row("client: request → response (whole wake)", "ms", &client_ms),
        ],
    );
    let p99_fwd = quantile(&ready_fwd_ms, 0.99);
    let max_signal_ms = signal_us.last().copied().unwrap_or(0.0) / 1e3;
    r.para("## Targets");
    r.table(
        &["target", "measured", "verdict"],
        &[
            vec![
                "ready → forward ≤ 5 ms p99".into(),
                format!("{p99_fwd:.2} ms"),
                verdict(p99_fwd <= 5.0).into(),
            ],
            vec![
                "held request → scale signal ≤ 10 ms (every wake)".into(),
                format!("worst {max_signal_ms:.3} ms"),
                verdict(max_signal_ms <= 10.0).into(),
            ],
        ],
    );
    r.summary = format!(
        "wake: Rouse overhead ready→forward p99 {p99_fwd:.2} ms, signal→scale worst {:.0} µs; platform start median {:.1} ms ({} wakes)",
        signal_us.last().copied().unwrap_or(0.0),
        quantile(&platform_ms, 0.5),
        wakes
    );
    let png = "wake-histogram.png";
    plot::histograms(
        &ctx.out.join(png),
        &format!("{wakes} wakes of a cold app"),
        &[
            ("held request → scale signal (Rouse)", &signal_hist, "µs"),
            (
                "scale signal → app listening (platform start)",
                &platform_hist,
                "ms",
            ),
            (
                "app listening → released for forwarding (Rouse)",
                &ready_hist,
                "ms",
            ),
        ],
    )?;
    r.plots.push(png.into());
    r.data = json!({
        "wakes": wakes,
        "signal_to_scale_us": stats(&signal_us),
        "platform_start_ms": stats(&platform_ms),
        "ready_to_released_ms": stats(&ready_fwd_ms),
        "published_to_released_us": stats(&published_us),
        "client_ms": stats(&client_ms),
        "samples": {"signal_to_scale_us": signal_hist, "platform_start_ms": platform_hist, "ready_to_released_ms": ready_hist},
    });
    Ok(r)
}

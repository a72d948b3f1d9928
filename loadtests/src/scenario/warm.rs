//! Scenario 1 — warm path: one backend reached directly, through Rouse, through nginx and
//! through the KEDA HTTP Add-on interceptor; fixed-rate (added latency) and open-throttle (max
//! rate) runs, HTTP/1.1 and h2c.

use std::time::Duration;

use serde_json::json;

use super::{LOAD_CPU, SUT_CPU, fmt_ms, fmt_rps};
use crate::Ctx;
use crate::oha::{self, Load, Outcome};
use crate::party::{self, Party};
use crate::report::{Report, verdict};
use rouse_e2e::plot::{self, Group};

const HOST: &str = "bench.localhost";
const PARTIES: [&str; 4] = ["direct", "rouse", "nginx", "keda"];

struct Row {
    proto: &'static str,
    party: &'static str,
    fixed: Outcome,
    open: Outcome,
    /// Proxy CPU milliseconds per 1 000 requests in the open run (none for direct).
    cpu_ms_per_k: Option<f64>,
    rss_kib: u64,
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let (interceptor, crds) = ctx.tools.keda.clone().map_err(anyhow::Error::msg)?;
    // Rouse owns the backend (one hello-fn replica, never scaled); every party forwards to that
    // same process. Rouse, the backend and each proxy share CPU 1; oha has CPU 0 to itself.
    let (rouse, backend) = super::warm_rouse("bench").await?;
    // The control plane runs through every party's turn, so its background noise is common.
    let keda = party::keda(&interceptor, &crds, backend, HOST, SUT_CPU, LOAD_CPU).await?;
    if !ctx.smoke {
        // Let the control plane finish its start-up churn before anything is measured.
        tokio::time::sleep(Duration::from_secs(10)).await;
    }

    let (fixed_secs, open_secs, rate) = ctx.pick((10, 10, 1000), (1, 1, 200));
    let mut rows = Vec::new();
    for (proto, http2) in [("HTTP/1.1", false), ("h2c", true)] {
        let nginx = party::nginx(backend, http2, SUT_CPU).await?;
        let direct = Party::direct(backend);
        let rouse_party = Party::pids("rouse", rouse.proxy, vec![rouse.pid()]);
        for p in [&direct, &rouse_party, &nginx, &keda.party] {
            let mut load = Load::new(p.addr, HOST);
            load.http2 = http2;
            load.cpus = Some(LOAD_CPU);
            // The same client concurrency for both protocols: 64 requests in flight.
            (load.connections, load.streams) = if http2 { (8, 8) } else { (64, 1) };
            if !ctx.smoke {
                let mut warm = load.clone();
                warm.duration = Some(Duration::from_secs(2));
                oha::run(&ctx.tools.oha, &warm).await?;
            }
            let mut fixed = load.clone();
            fixed.rate = Some(rate);
            fixed.duration = Some(Duration::from_secs(fixed_secs));
            (fixed.connections, fixed.streams) = if http2 { (4, 8) } else { (32, 1) };
            let fixed = oha::run(&ctx.tools.oha, &fixed).await?;
            let cpu_before = p.cpu_secs();
            let mut open = load.clone();
            open.duration = Some(Duration::from_secs(open_secs));
            let open = oha::run(&ctx.tools.oha, &open).await?;
            let cpu = p.cpu_secs() - cpu_before;
            anyhow::ensure!(p.alive(), "{} exited during the {proto} runs", p.name);
            let cpu_ms_per_k =
                (p.name != "direct" && open.requests > 0).then(|| cpu * 1e6 / open.requests as f64);
            eprintln!(
                "warm {proto} {}: {} rps open, p99 {} ms at {rate} rps, {} failed, statuses {:?}",
                p.name,
                fmt_rps(open.rps),
                fmt_ms(fixed.p99),
                open.failed() + fixed.failed(),
                open.status,
            );
            anyhow::ensure!(
                open.ok > 0 && fixed.ok > 0,
                "{proto} through {}: no successful response ({:?} {:?})",
                p.name,
                open.status,
                open.errors
            );
            rows.push(Row {
                proto,
                party: p.name,
                fixed,
                open,
                cpu_ms_per_k,
                rss_kib: p.rss_kib(),
            });
        }
    }
    drop(keda);
    report(ctx, &rows, rate, fixed_secs, open_secs)
}

fn find<'a>(rows: &'a [Row], proto: &str, party: &str) -> Option<&'a Row> {
    rows.iter().find(|r| r.proto == proto && r.party == party)
}

fn report(
    ctx: &Ctx,
    rows: &[Row],
    rate: u32,
    fixed_secs: u64,
    open_secs: u64,
) -> anyhow::Result<Report> {
    let mut r = Report::new(
        "warm",
        "Warm path: direct vs Rouse vs nginx vs KEDA interceptor",
    );
    r.para(&format!(
        "Method: one `hello-fn` backend (started by Rouse, one replica) reached directly and through each proxy. \
         CPU placement: `oha` is pinned to CPU {LOAD_CPU}; the backend and every proxy to CPU {SUT_CPU}, each proxy \
         with one worker (Rouse `threads: 1`, nginx `worker_processes 1`, interceptor `GOMAXPROCS=1`), so the \
         load generator's capacity is the same for every party and each proxy competes with the same backend \
         for one core. Fixed rate: {rate} rps for {fixed_secs} s with latency correction (coordinated omission), \
         32 connections (h2c: 4 × 8 streams); \"added\" is the party's percentile minus the direct one's. Open throttle: \
         64 requests in flight (h2c: 8 connections × 8 streams) for {open_secs} s. Each party gets a 2 s warm-up first. \
         nginx: plain keep-alive reverse proxy (upstream keepalive 256, HTTP/1.1 to the backend). KEDA: the \
         interceptor of http-add-on v0.15.0 on the real control plane (etcd + kube-apiserver), routing by an \
         `HTTPScaledObject` whose Service has a ready EndpointSlice pointing at the backend; it dials the Service \
         by name, resolved to the backend through a private `/etc/hosts` (no kube-proxy hop, which in a cluster \
         would add to its latency). The control plane's processes are pinned to CPU {LOAD_CPU}, away from the \
         measured CPU, and run through every party's turn. Every proxy speaks HTTP/1.1 to the backend."
    ));
    let mut table = Vec::new();
    for row in rows {
        let direct = find(rows, row.proto, "direct");
        let added = |f: fn(&Outcome) -> f64| {
            direct.map_or("-".into(), |d| {
                if row.party == "direct" {
                    "-".into()
                } else {
                    format!("{:+.3}", (f(&row.fixed) - f(&d.fixed)) * 1e3)
                }
            })
        };
        table.push(vec![
            row.proto.to_string(),
            row.party.to_string(),
            fmt_rps(row.open.rps),
            fmt_ms(row.fixed.p50),
            fmt_ms(row.fixed.p99),
            fmt_ms(row.fixed.p999),
            added(|o| o.p50),
            added(|o| o.p99),
            added(|o| o.p999),
            format!("{}", row.open.failed() + row.fixed.failed()),
            row.cpu_ms_per_k.map_or("-".into(), |c| format!("{c:.0}")),
            if row.party == "direct" {
                "-".into()
            } else {
                format!("{:.1}", row.rss_kib as f64 / 1024.0)
            },
        ]);
    }
    r.table(
        &[
            "protocol",
            "party",
            "max rps",
            &format!("p50 ms @{rate}"),
            "p99 ms",
            "p99.9 ms",
            "added p50 ms",
            "added p99 ms",
            "added p99.9 ms",
            "errors",
            "proxy CPU ms / 1k req",
            "proxy RSS MiB",
        ],
        &table,
    );
    let ratio = |proto: &str, other: &str| -> Option<f64> {
        let rouse = find(rows, proto, "rouse")?.open.rps;
        let o = find(rows, proto, other)?.open.rps;
        (o > 0.0).then(|| rouse / o)
    };
    let added_p99 = |proto: &str| -> Option<f64> {
        Some((find(rows, proto, "rouse")?.fixed.p99 - find(rows, proto, "direct")?.fixed.p99) * 1e3)
    };
    let mut targets = Vec::new();
    let mut summary = Vec::new();
    for proto in ["HTTP/1.1", "h2c"] {
        let (n, k, a) = (
            ratio(proto, "nginx").unwrap_or(0.0),
            ratio(proto, "keda").unwrap_or(0.0),
            added_p99(proto).unwrap_or(f64::INFINITY),
        );
        targets.push(vec![
            format!("{proto}: throughput ≥ 1.0× nginx"),
            format!("{n:.2}×"),
            verdict(n >= 1.0).into(),
        ]);
        targets.push(vec![
            format!("{proto}: throughput ≥ 5× KEDA interceptor"),
            format!("{k:.2}×"),
            verdict(k >= 5.0).into(),
        ]);
        targets.push(vec![
            format!("{proto}: added p99 ≤ 1 ms at {rate} rps"),
            format!("{a:+.3} ms"),
            verdict(a <= 1.0).into(),
        ]);
        summary.push(format!(
            "{proto} {n:.2}× nginx, {k:.2}× KEDA, added p99 {a:+.2} ms"
        ));
    }
    r.para("## Targets");
    r.table(&["target", "measured", "verdict"], &targets);
    r.summary = format!("warm: Rouse max rate {}", summary.join("; "));

    let plot_rps = "warm-throughput.png";
    let groups: Vec<Group> = ["HTTP/1.1", "h2c"]
        .iter()
        .map(|proto| Group {
            label: proto.to_string(),
            values: PARTIES
                .iter()
                .map(|p| find(rows, proto, p).map_or(0.0, |r| r.open.rps))
                .collect(),
        })
        .collect();
    plot::bars(
        &ctx.out.join(plot_rps),
        "Open-throttle throughput (same backend, same machine, one run)",
        "requests / s",
        &PARTIES,
        &groups,
    )?;
    let plot_lat = "warm-latency.png";
    let groups: Vec<Group> = ["HTTP/1.1", "h2c"]
        .iter()
        .flat_map(|proto| {
            [("p50", 0usize), ("p99", 1), ("p99.9", 2)].map(|(name, i)| Group {
                label: format!("{proto} {name}"),
                values: PARTIES
                    .iter()
                    .map(|p| {
                        find(rows, proto, p)
                            .map_or(0.0, |r| [r.fixed.p50, r.fixed.p99, r.fixed.p999][i] * 1e3)
                    })
                    .collect(),
            })
        })
        .collect();
    plot::bars(
        &ctx.out.join(plot_lat),
        &format!("Latency at a fixed {rate} rps"),
        "ms",
        &PARTIES,
        &groups,
    )?;
    r.plots = vec![plot_rps.into(), plot_lat.into()];
    r.data = json!({
        "rate": rate, "fixed_secs": fixed_secs, "open_secs": open_secs,
        "runs": rows.iter().map(|row| json!({
            "protocol": row.proto, "party": row.party,
            "fixed": row.fixed.json(), "open": row.open.json(),
            "proxy_cpu_ms_per_1k": row.cpu_ms_per_k, "proxy_rss_kib": row.rss_kib,
        })).collect::<Vec<_>>(),
        "ratios": {
            "http1_vs_nginx": ratio("HTTP/1.1", "nginx"), "http1_vs_keda": ratio("HTTP/1.1", "keda"),
            "h2c_vs_nginx": ratio("h2c", "nginx"), "h2c_vs_keda": ratio("h2c", "keda"),
            "http1_added_p99_ms": added_p99("HTTP/1.1"), "h2c_added_p99_ms": added_p99("h2c"),
        },
    });
    Ok(r)
}

//! Scenario 5 — many routes: lookup cost and full table rebuild at up to 10 000 routes, from the
//! criterion micro-benchmark in `core/benches/routes.rs`.

use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::Ctx;
use crate::report::{Report, verdict};
use rouse_e2e::plot::{self, Panel};

const SIZES: [u64; 3] = [100, 1_000, 10_000];
const LOOKUPS: [&str; 5] = ["exact", "wildcard", "header", "miss", "normalize+exact"];

/// Criterion's mean estimate in nanoseconds for `<group>/<function>/<parameter>`.
fn mean_ns(home: &Path, group: &str, id: &str) -> anyhow::Result<f64> {
    let mut path = home.join(group);
    for part in id.split('/') {
        path = path.join(part);
    }
    let path = path.join("new/estimates.json");
    let v: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    v["mean"]["point_estimate"]
        .as_f64()
        .with_context(|| format!("no mean in {}", path.display()))
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Report> {
    let home = rouse_e2e::target_dir().join("criterion");
    let _ = std::fs::remove_dir_all(&home);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = tokio::process::Command::new(cargo);
    cmd.args(["bench", "-p", "rouse-core", "--bench", "routes", "--"])
        .env("CRITERION_HOME", &home)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    if ctx.smoke {
        cmd.args([
            "--warm-up-time",
            "0.1",
            "--measurement-time",
            "0.2",
            "--sample-size",
            "10",
        ]);
    } else {
        cmd.arg("--noplot");
    }
    let status = cmd.status().await.context("running cargo bench")?;
    if !status.success() {
        bail!("cargo bench --bench routes failed ({status})");
    }
    let mut rows = Vec::new();
    let mut data = serde_json::Map::new();
    let mut lookup_series = Vec::new();
    for kind in LOOKUPS {
        let mut pts = Vec::new();
        for n in SIZES {
            let ns = mean_ns(&home, "lookup", &format!("{kind}/{n}"))?;
            data.insert(format!("lookup_{kind}_{n}_ns"), json!(ns));
            pts.push((n as f64, ns));
        }
        rows.push(
            std::iter::once(format!("lookup: {kind}"))
                .chain(pts.iter().map(|(_, ns)| format!("{ns:.0} ns")))
                .collect::<Vec<_>>(),
        );
        lookup_series.push((kind, pts));
    }
    let mut rebuild = Vec::new();
    for n in SIZES {
        let ns = mean_ns(&home, "rebuild", &n.to_string())?;
        data.insert(format!("rebuild_{n}_ns"), json!(ns));
        rebuild.push((n as f64, ns / 1e6));
    }
    rows.push(
        std::iter::once("full table rebuild".to_string())
            .chain(rebuild.iter().map(|(_, ms)| format!("{ms:.2} ms")))
            .collect(),
    );
    let worst_10k = LOOKUPS
        .iter()
        .filter_map(|k| data.get(&format!("lookup_{k}_10000_ns"))?.as_f64())
        .fold(0.0_f64, f64::max);
    let rebuild_10k = rebuild.last().map_or(0.0, |r| r.1);

    let mut r = Report::new("routes", "Many routes: lookup and rebuild cost");
    r.para(
        "Method: criterion micro-benchmark (`core/benches/routes.rs`) on `rouse_core::RouteTable`, \
         the table the proxy resolves every request against. Tables of 100 / 1 000 / 10  000 routes: 70 % \
         exact hosts, 20 % wildcard hosts, 10 % header-matched routes sharing one host, two path prefixes \
         each. Lookups use mid-table keys; *miss* is an unknown host; *normalize+exact* adds the per-request \
         path normalisation. Rebuild = building the whole table from route definitions (what a config or \
         CRD change triggers; the proxy then swaps it in atomically).",
    );
    r.table(
        &["operation", "100 routes", "1 000 routes", "10 000 routes"],
        &rows,
    );
    r.para("## Targets");
    r.table(
        &["target", "measured", "verdict"],
        &[vec![
            "10 000-route lookup ≤ 1 µs (every kind)".into(),
            format!("worst {worst_10k:.0} ns"),
            verdict(worst_10k <= 1000.0).into(),
        ]],
    );
    r.summary = format!(
        "routes: 10 000-route lookup worst {worst_10k:.0} ns (target ≤ 1 µs {}), full rebuild {rebuild_10k:.1} ms",
        if worst_10k <= 1000.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    let png = "routes.png";
    plot::lines(
        &ctx.out.join(png),
        "Route lookup cost vs table size",
        "routes in the table (log scale)",
        &[
            Panel {
                y_label: "ns per lookup",
                series: lookup_series,
            },
            Panel {
                y_label: "rebuild ms",
                series: vec![("full rebuild", rebuild)],
            },
        ],
        true,
    )?;
    r.plots.push(png.into());
    r.data = Value::Object(data);
    Ok(r)
}

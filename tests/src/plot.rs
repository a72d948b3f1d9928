//! PNG plots (plotters, bitmap backend). Text uses DejaVu Sans from the system
//! (`fonts-dejavu-core`), registered once, so no font library is linked.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, anyhow};
use plotters::prelude::*;
use plotters::style::FontStyle;

pub const FONT_FILES: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

fn font() -> anyhow::Result<()> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let bytes = FONT_FILES
            .iter()
            .find_map(|p| std::fs::read(p).ok())
            .ok_or("DejaVuSans.ttf not found (apt-get install fonts-dejavu-core)")?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| "DejaVuSans.ttf is not a valid font".to_string())
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting: {e:?}")
}

/// One bar group: a category (x label) and a value per series.
pub struct Group {
    pub label: String,
    pub values: Vec<f64>,
}

/// A grouped bar chart: `series` names the bars in each group (legend).
pub fn bars(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[&str],
    groups: &[Group],
) -> anyhow::Result<()> {
    font()?;
    let root = BitMapBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let max = groups
        .iter()
        .flat_map(|g| g.values.iter().copied())
        .fold(0.0_f64, f64::max)
        .max(1e-9)
        * 1.15;
    let n = groups.len().max(1);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..n as f64, 0.0..max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 {
                groups.get(i).map(|g| g.label.clone()).unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    let k = series.len().max(1) as f64;
    let width = 0.8 / k;
    for (s, name) in series.iter().enumerate() {
        let color = COLORS[s % COLORS.len()];
        chart
            .draw_series(groups.iter().enumerate().filter_map(|(i, g)| {
                let v = *g.values.get(s)?;
                let x0 = i as f64 + 0.1 + s as f64 * width;
                Some(Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.95, v)],
                    color.filled(),
                ))
            }))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(err)?;
    root.present().map_err(err).context("writing PNG")
}

/// Histograms stacked vertically, one per (title, values, unit) panel.
pub fn histograms(path: &Path, title: &str, panels: &[(&str, &[f64], &str)]) -> anyhow::Result<()> {
    font()?;
    let rows = panels.len().max(1);
    let root = BitMapBackend::new(path, (960, 300 * rows as u32 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(err)?;
    for (area, (name, values, unit)) in root.split_evenly((rows, 1)).iter().zip(panels) {
        let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo.is_finite() && hi > lo {
            (lo, hi)
        } else {
            (0.0, lo.max(0.0) + 1.0)
        };
        let bins = 40;
        let step = (hi - lo) / bins as f64;
        let mut counts = vec![0u32; bins];
        for v in values.iter() {
            let i = (((v - lo) / step) as usize).min(bins - 1);
            counts[i] += 1;
        }
        let top = counts.iter().copied().max().unwrap_or(1).max(1);
        let mut chart = ChartBuilder::on(area)
            .caption(*name, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(lo..hi + step, 0u32..top + top / 10 + 1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(*unit)
            .y_desc("count")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(counts.iter().enumerate().map(|(i, c)| {
                let x0 = lo + i as f64 * step;
                Rectangle::new([(x0, 0), (x0 + step * 0.95, *c)], COLORS[0].filled())
            }))
            .map_err(err)?;
    }
    root.present().map_err(err).context("writing PNG")
}

/// One panel of line series sharing an x axis.
pub struct Panel<'a> {
    pub y_label: &'a str,
    pub series: Vec<(&'a str, Vec<(f64, f64)>)>,
}

/// Line charts stacked vertically; `log_x` for sizes spanning decades.
pub fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    panels: &[Panel<'_>],
    log_x: bool,
) -> anyhow::Result<()> {
    font()?;
    let rows = panels.len().max(1);
    let root = BitMapBackend::new(path, (960, 320 * rows as u32 + 40)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(err)?;
    for (area, panel) in root.split_evenly((rows, 1)).iter().zip(panels) {
        let pts = || panel.series.iter().flat_map(|(_, s)| s.iter().copied());
        let x_lo = pts().map(|p| p.0).fold(f64::INFINITY, f64::min);
        let x_hi = pts().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
        let y_hi = pts().map(|p| p.1).fold(0.0_f64, f64::max).max(1e-9) * 1.15;
        let (x_lo, x_hi) = if x_lo.is_finite() && x_hi > x_lo {
            (x_lo, x_hi)
        } else {
            (0.0, 1.0)
        };
        let mut builder = ChartBuilder::on(area);
        builder
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(70);
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart;
                chart
                    .configure_mesh()
                    .x_desc(x_label)
                    .y_desc(panel.y_label)
                    .label_style(("sans-serif", 13))
                    .draw()
                    .map_err(err)?;
                for (i, (name, s)) in panel.series.iter().enumerate() {
                    let color = COLORS[i % COLORS.len()];
                    chart
                        .draw_series(LineSeries::new(s.iter().copied(), color.stroke_width(2)))
                        .map_err(err)?
                        .label(*name)
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                        });
                }
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 13))
                    .draw()
                    .map_err(err)?;
            }};
        }
        if log_x {
            draw!(
                builder
                    .build_cartesian_2d((x_lo.max(1e-9)..x_hi).log_scale(), 0.0..y_hi)
                    .map_err(err)?
            );
        } else {
            draw!(
                builder
                    .build_cartesian_2d(x_lo..x_hi, 0.0..y_hi)
                    .map_err(err)?
            );
        }
    }
    root.present().map_err(err).context("writing PNG")
}

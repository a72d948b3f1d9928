//! A scenario's report: `<scenario>.md` for people, `<scenario>.json` for tools, PNG plots.

use std::fmt::Write as _;

use anyhow::Context;
use serde_json::{Value, json};

use crate::Ctx;

pub struct Report {
    pub scenario: &'static str,
    pub title: &'static str,
    /// The one line printed at the end of the scenario, with its headline ratio.
    pub summary: String,
    /// Markdown: method, tables, targets.
    pub body: String,
    /// The raw numbers.
    pub data: Value,
    /// PNG files written into the output directory.
    pub plots: Vec<String>,
}

impl Report {
    pub fn new(scenario: &'static str, title: &'static str) -> Report {
        Report {
            scenario,
            title,
            summary: String::new(),
            body: String::new(),
            data: json!({}),
            plots: Vec::new(),
        }
    }

    /// Appends a markdown paragraph or block.
    pub fn para(&mut self, text: &str) {
        self.body.push_str(text.trim_end());
        self.body.push_str("\n\n");
    }

    /// Appends a markdown table.
    pub fn table(&mut self, header: &[&str], rows: &[Vec<String>]) {
        let mut s = format!("| {} |\n", header.join(" | "));
        let _ = writeln!(s, "|{}", "---|".repeat(header.len()));
        for r in rows {
            let _ = writeln!(s, "| {} |", r.join(" | "));
        }
        self.para(&s);
    }

    pub fn write(&self, ctx: &Ctx) -> anyhow::Result<()> {
        let mut md = format!("# {}\n\n**{}**\n\n", self.title, self.summary);
        if ctx.smoke {
            md.push_str("*Smoke run (seconds-long, to prove the scenario works): the numbers mean nothing.*\n\n");
        }
        md.push_str(&self.body);
        for p in &self.plots {
            let _ = writeln!(md, "![{p}]({p})\n");
        }
        md.push_str(&ctx.machine.markdown());
        let md_path = ctx.out.join(format!("{}.md", self.scenario));
        std::fs::write(&md_path, md).with_context(|| format!("writing {}", md_path.display()))?;
        let json = json!({
            "scenario": self.scenario,
            "summary": self.summary,
            "smoke": ctx.smoke,
            "machine": ctx.machine.json(),
            "data": self.data,
        });
        let json_path = ctx.out.join(format!("{}.json", self.scenario));
        std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", json_path.display()))?;
        Ok(())
    }
}

/// "met" or "**not met**", for a target line.
pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**not met**" }
}

/// `results/README.md`: every scenario's summary line, read back from the JSON reports present,
/// so the index always matches the files beside it.
pub fn write_index(ctx: &Ctx) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for s in crate::Scenario::ALL {
        let name = format!("{s:?}").to_lowercase();
        let path = ctx.out.join(format!("{name}.json"));
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        let date = v["machine"]["date"].as_str().unwrap_or("?").to_string();
        rows.push(format!(
            "| [{name}]({name}.md) | {} | {date} |",
            v["summary"].as_str().unwrap_or("?")
        ));
    }
    let mut md = String::from(
        "# Load-test results\n\nWritten by `rouse-bench` (see ../README.md); each row links its report.\n\n\
         | scenario | summary | run |\n|---|---|---|\n",
    );
    for r in rows {
        md.push_str(&r);
        md.push('\n');
    }
    md.push('\n');
    md.push_str(&ctx.machine.markdown());
    std::fs::write(ctx.out.join("README.md"), md)?;
    Ok(())
}

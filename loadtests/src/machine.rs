//! The machine a run happened on: part of every report, since ratios only compare within a run.

use std::process::Command;

use serde_json::{Value, json};

pub struct Machine {
    /// (what, value) pairs, in display order.
    facts: Vec<(&'static str, String)>,
}

pub fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            // nginx prints its version on stderr.
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "not found".into())
}

impl Machine {
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_gib = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<f64>().ok())
            .map_or_else(
                || "unknown".into(),
                |kib| format!("{:.1} GiB", kib / 1048576.0),
            );
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let date = first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
        Machine {
            facts: vec![
                ("date", date),
                ("cpu", format!("{cpu} × {cpus} (as the OS sees them)")),
                ("memory", mem_gib),
                ("kernel", kernel),
                ("rustc", first_line("rustc", &["-V"])),
                ("nginx", first_line("nginx", &["-v"])),
                ("go", first_line("go", &["version"])),
            ],
        }
    }

    /// Adds a fact (a tool's version, found later).
    pub fn with(&mut self, what: &'static str, value: String) {
        self.facts.push((what, value));
    }

    pub fn markdown(&self) -> String {
        let mut s = String::from("| machine | |\n|---|---|\n");
        for (k, v) in &self.facts {
            s.push_str(&format!("| {k} | {v} |\n"));
        }
        s
    }

    pub fn json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (k, v) in &self.facts {
            m.insert((*k).to_string(), json!(v));
        }
        Value::Object(m)
    }
}

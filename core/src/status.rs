//! What `rouse status` shows, as data and as a table: the `/status` document of a proxy's admin
//! API (and of the controller's, on Kubernetes) and its rendering for a person. Pure: the
//! proxy and the controller build the document, `rouse status` fetches and renders it.

use serde::{Deserialize, Serialize};

/// One target as `/status` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetStatus {
    pub target: String,
    /// Routes (names) that send requests to this target.
    pub routes: Vec<String>,
    /// Host patterns of those routes.
    pub hosts: Vec<String>,
    /// Endpoints ready now (a proxy's view); `None` from the controller, which reads `/scale`'s
    /// spec and does not see the pods.
    pub ready: Option<usize>,
    /// Replicas the autoscaler asks for, where this process knows it (the local platform; on
    /// Kubernetes the controller does).
    pub desired: Option<u32>,
    pub held: u64,
    pub in_flight: u64,
    /// Events accepted by the event gateway and not yet delivered to it.
    pub queued_events: u64,
    /// Requests that waited for an endpoint, since this process started (a proxy's count;
    /// `None` from the controller, which does not see them).
    pub cold_starts: Option<u64>,
    /// Milliseconds since a wake was last signalled for it; `None` if never.
    pub last_wake_ms_ago: Option<u64>,
    /// Why it cannot get endpoints at all, if it cannot.
    pub unavailable: Option<String>,
}

/// The whole `/status` document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub draining: bool,
    /// Held requests, all targets together.
    pub held: u64,
    pub targets: Vec<TargetStatus>,
}

/// `12s ago`, `3m ago`, `2h ago`, `never`.
pub fn ago(ms: Option<u64>) -> String {
    match ms {
        None => "never".into(),
        Some(ms) if ms < 1_000 => "just now".into(),
        Some(ms) if ms < 60_000 => format!("{}s ago", ms / 1_000),
        Some(ms) if ms < 3_600_000 => format!("{}m ago", ms / 60_000),
        Some(ms) => format!("{}h ago", ms / 3_600_000),
    }
}

/// The table a person reads: a header line naming the source, then one row per target.
pub fn table(source: &str, s: &Status) -> String {
    let header = [
        "TARGET",
        "HOSTS",
        "READY",
        "DESIRED",
        "HELD",
        "IN-FLIGHT",
        "EVENTS",
        "COLD-STARTS",
        "LAST-WAKE",
        "NOTE",
    ];
    let rows: Vec<[String; 10]> = s
        .targets
        .iter()
        .map(|t| {
            [
                t.target.clone(),
                if t.hosts.is_empty() {
                    "-".into()
                } else {
                    t.hosts.join(",")
                },
                t.ready.map_or("-".into(), |r| r.to_string()),
                t.desired.map_or("-".into(), |d| d.to_string()),
                t.held.to_string(),
                t.in_flight.to_string(),
                t.queued_events.to_string(),
                t.cold_starts.map_or("-".into(), |c| c.to_string()),
                ago(t.last_wake_ms_ago),
                t.unavailable
                    .as_deref()
                    .map_or(String::new(), |u| format!("unavailable: {u}")),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = format!(
        "Rouse at {source}{}: {} held, {} target{}\n",
        if s.draining { " (draining)" } else { "" },
        s.held,
        s.targets.len(),
        if s.targets.len() == 1 { "" } else { "s" }
    );
    out.push_str(&line(&header.map(String::from)));
    for r in &rows {
        out.push_str(&line(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str) -> TargetStatus {
        TargetStatus {
            target: name.into(),
            routes: vec![name.into()],
            hosts: vec![format!("{name}.localhost")],
            ready: Some(1),
            desired: Some(2),
            held: 3,
            in_flight: 4,
            queued_events: 5,
            cold_starts: Some(6),
            last_wake_ms_ago: Some(12_500),
            unavailable: None,
        }
    }

    #[test]
    fn the_table_has_a_row_per_target_in_aligned_columns() {
        let mut cold = target("hello-world");
        cold.ready = Some(0);
        cold.desired = None;
        cold.last_wake_ms_ago = None;
        cold.unavailable = Some("service \"ns/x\" not found".into());
        let s = Status {
            draining: false,
            held: 3,
            targets: vec![target("api"), cold],
        };
        let t = table("127.0.0.1:9090", &s);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "Rouse at 127.0.0.1:9090: 3 held, 2 targets");
        assert!(lines[1].starts_with("TARGET       HOSTS"), "{t}");
        let api: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            api,
            [
                "api",
                "api.localhost",
                "1",
                "2",
                "3",
                "4",
                "5",
                "6",
                "12s",
                "ago"
            ]
        );
        assert!(
            lines[3].starts_with("hello-world  hello-world.localhost  0      -"),
            "{t}"
        );
        assert!(lines[3].contains("never"), "{t}");
        assert!(
            lines[3].ends_with("unavailable: service \"ns/x\" not found"),
            "{t}"
        );
        // Columns line up: every row's HELD value starts where the header's does.
        let col = lines[1].find("HELD").expect("HELD");
        assert_eq!(&lines[2][col..col + 1], "3");
    }

    #[test]
    fn wakes_read_as_people_say_them() {
        assert_eq!(ago(None), "never");
        assert_eq!(ago(Some(400)), "just now");
        assert_eq!(ago(Some(59_999)), "59s ago");
        assert_eq!(ago(Some(61_000)), "1m ago");
        assert_eq!(ago(Some(7_300_000)), "2h ago");
    }
}

//! `rouse status` as a person uses it: `--watch` in a real terminal (tmux, on a private socket),
//! against a live Rouse, through a cold start — the pane is captured and read as a person would
//! read it — and `-o json` as a script reads it.

use std::process::Command;
use std::time::{Duration, Instant};

use rouse_e2e::{App, Rouse, bin, target_dir};

/// A tmux server of this test alone (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        Tmux {
            socket: format!("rouse-status-test-{}", std::process::id()),
        }
    }

    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux (Debian's tmux package)")
    }

    /// Starts `command` in a detached 160×20 session.
    fn start(&self, command: &str) {
        let out = self.cmd(&[
            "new-session",
            "-d",
            "-x",
            "160",
            "-y",
            "20",
            "-s",
            "status",
            command,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// What the pane shows now.
    fn pane(&self) -> String {
        let out = self.cmd(&["capture-pane", "-p", "-t", "status"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the pane shows what `check` wants; returns that screen.
    async fn wait_for(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pane = self.pane();
            if check(&pane) {
                return pane;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for the pane to show {what}; it shows:\n{pane}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

/// The cells of `target`'s row in the table on `pane` (the last such row: the screen is
/// redrawn in place, so there is one).
fn row(pane: &str, target: &str) -> Vec<String> {
    pane.lines()
        .rfind(|l| l.starts_with(&format!("{target} ")))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Saves a screen next to the other test artifacts (target/status/), for a person to look at.
fn save(name: &str, pane: &str) {
    let dir = target_dir().join("status");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(name), pane);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rouse_status_watch_in_a_terminal_shows_a_cold_start_as_it_happens() {
    // The app takes 2.5 s to start: long enough to see the request held on the screen.
    let app = App::hello("slowpoke").env("STARTUP_DELAY_MS", "2500");
    let rouse = Rouse::start(&app).await;
    let tmux = Tmux::new();
    tmux.start(&format!(
        "{} status --admin {} --watch --interval-ms 100",
        bin("rouse").display(),
        rouse.admin
    ));

    // TARGET HOSTS READY DESIRED HELD IN-FLIGHT EVENTS COLD-STARTS LAST-WAKE
    let at_zero = tmux
        .wait_for("the app at zero", |p| {
            row(p, "slowpoke")
                == [
                    "slowpoke",
                    "slowpoke.localhost",
                    "0",
                    "0",
                    "0",
                    "0",
                    "0",
                    "0",
                    "never",
                ]
        })
        .await;
    assert!(
        at_zero.contains(&format!("Rouse at {}: 0 held, 1 target", rouse.admin)),
        "{at_zero}"
    );
    save("1-at-zero.txt", &at_zero);

    let proxy = rouse.proxy;
    let request = tokio::spawn(async move {
        let out = tokio::process::Command::new("curl")
            .args([
                "-s",
                "-H",
                "Host: slowpoke.localhost",
                "-w",
                "|%{http_code}",
            ])
            .arg(format!("http://{proxy}/"))
            .output()
            .await
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    });
    // During the cold start: held 1, one replica asked for, none ready yet, woken just now.
    let waking = tmux
        .wait_for("the request held while the app starts", |p| {
            let r = row(p, "slowpoke");
            r.get(2..5) == Some(&["0".to_string(), "1".into(), "1".into()][..])
                && p.contains("just now")
        })
        .await;
    assert!(waking.contains(": 1 held, 1 target"), "{waking}");
    save("2-cold-start.txt", &waking);

    let answered = request.await.expect("request task");
    assert!(answered.ends_with("|200"), "{answered}");
    // After: ready, nothing held, one cold start counted.
    let awake = tmux
        .wait_for("the app up with one cold start", |p| {
            let r = row(p, "slowpoke");
            r.get(2..8)
                == Some(
                    &[
                        "1".to_string(),
                        "1".into(),
                        "0".into(),
                        "0".into(),
                        "0".into(),
                        "1".into(),
                    ][..],
                )
        })
        .await;
    save("3-awake.txt", &awake);

    // For scripts: the same, as one JSON document.
    let out = Command::new(bin("rouse"))
        .args(["status", "--admin", &rouse.admin.to_string(), "-o", "json"])
        .output()
        .expect("rouse status -o json");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let t = &doc["targets"][0];
    assert_eq!(t["target"], "slowpoke", "{doc}");
    assert_eq!(t["hosts"][0], "slowpoke.localhost");
    assert_eq!(t["ready"], 1);
    assert_eq!(t["desired"], 1);
    assert_eq!(t["cold_starts"], 1);
    assert!(t["last_wake_ms_ago"].as_u64().is_some(), "{doc}");

    // Pointed at nothing, it says so and fails (not a table of zeros).
    let nothing = rouse_e2e::free_addr();
    let out = Command::new(bin("rouse"))
        .args(["status", "--admin", &nothing.to_string()])
        .output()
        .expect("rouse status");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("connecting to {nothing}")), "{err}");
}

//! Measurements quoted in the README and closing notes, not pass/fail checks: run with
//! `cargo test --release -p rouse-e2e --test measure -- --ignored --nocapture`.
//! (Timing belongs in loadtests/; these only print.)

use std::time::Duration;

use rouse_e2e::{App, Rouse};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Microseconds since midnight UTC of a tracing line (`2026-11-28T15:21:41.640285Z ...`).
fn time_of_day_us(line: &str) -> Option<u64> {
    let t = line.split('T').nth(1)?.split('Z').next()?;
    let mut parts = t.split(':');
    let h: u64 = parts.next()?.parse().ok()?;
    let m: u64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some((h * 3600 + m * 60) * 1_000_000 + (s * 1e6).round() as u64)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: prints ready→forward latency over 100 wakes"]
async fn ready_to_forward_over_100_wakes() {
    let app = App::hello("wake")
        .with("scaledown_period_secs: 0.2")
        .with("scaling: {stable_window_secs: 0.5, panic_window_secs: 0.1, tick_secs: 0.05}");
    let rouse = Rouse::start_with_log(&[app], "", "info,rouse_proxy=debug").await;
    for i in 0..100 {
        rouse
            .wait_for("zero", Duration::from_secs(10), || async {
                rouse.ready_replicas("wake").await == 0
            })
            .await;
        let r = rouse.get("wake.localhost", &format!("/?wake={i}")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-rouse-cold-start"), Some("true"));
    }
    // Rouse's own view: endpoint published → request released.
    let out = rouse.output();
    let mut since_ready: Vec<u64> = out
        .iter()
        .filter(|l| l.contains("Held request released."))
        .filter_map(|l| l.split("since_ready_us=").nth(1))
        .filter_map(|v| v.split_whitespace().next()?.parse().ok())
        .collect();
    since_ready.sort_unstable();
    println!(
        "endpoint published→forward over {} wakes: median {} µs, p99 {} µs, worst {} µs",
        since_ready.len(),
        percentile(&since_ready, 0.5),
        percentile(&since_ready, 0.99),
        since_ready.last().copied().unwrap_or(0)
    );
    // End to end: the backend's own "listening" clock → the proxy releasing the held request
    // (includes readiness-probe detection). Both clocks are this machine's wall clock.
    let backend_ready: Vec<u64> = out
        .iter()
        .filter_map(|l| l.split("ready_unix_us=").nth(1))
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .map(|us| us % 86_400_000_000)
        .collect();
    let released: Vec<u64> = out
        .iter()
        .filter(|l| l.contains("Held request released."))
        .filter_map(|l| time_of_day_us(l))
        .collect();
    let mut ready_to_forward: Vec<u64> = backend_ready
        .iter()
        .zip(released.iter())
        .map(|(ready, rel)| rel.saturating_sub(*ready))
        .collect();
    ready_to_forward.sort_unstable();
    println!(
        "backend ready→forward over {} wakes: median {} µs, p99 {} µs, worst {} µs",
        ready_to_forward.len(),
        percentile(&ready_to_forward, 0.5),
        percentile(&ready_to_forward, 0.99),
        ready_to_forward.last().copied().unwrap_or(0)
    );
    println!(
        "{}",
        rouse
            .metrics()
            .await
            .lines()
            .filter(
                |l| l.starts_with("rouse_controller_wake_to_scale_seconds_sum")
                    || l.starts_with("rouse_controller_wake_to_scale_seconds_count")
            )
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: prints proxy RSS with 10 000 held requests"]
async fn rss_with_ten_thousand_held_requests() {
    const N: usize = 10_000;
    let app = App::hello("held")
        .env("STARTUP_DELAY_MS", "20000")
        .env("LOG_REQUESTS", "0")
        .with("cold_start: {max_held_requests: 20000, hold_timeout_ms: 120000}");
    let rouse = Rouse::start(&app).await;
    let (idle_rss, _) = rouse.rss_kib();
    let proxy = rouse.proxy;
    let clients: Vec<_> = (0..N)
        .map(|i| {
            tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(proxy)
                    .await
                    .expect("connect");
                s.write_all(
                    format!(
                        "GET /?i={i} HTTP/1.1\r\nHost: held.localhost\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await
                .expect("write");
                let mut out = Vec::new();
                let _ = s.read_to_end(&mut out).await;
                out.starts_with(b"HTTP/1.1 200")
            })
        })
        .collect();
    rouse
        .wait_for("10 000 held", Duration::from_secs(60), || async {
            rouse
                .metric("rouse_proxy_held_requests{route=\"held\"}")
                .await
                == Some(N as f64)
        })
        .await;
    let (held_rss, _) = rouse.rss_kib();
    println!(
        "RSS idle {idle_rss} KiB, with {N} held {held_rss} KiB: {:.2} KiB per held request",
        (held_rss.saturating_sub(idle_rss)) as f64 / N as f64
    );
    let mut ok = 0;
    for c in clients {
        if c.await.unwrap_or(false) {
            ok += 1;
        }
    }
    println!(
        "released: {ok}/{N} answered 200, starts: {}",
        rouse.count_output("hello-fn started")
    );
    assert_eq!(ok, N);
}

//! Graceful shutdown: SIGTERM lets in-flight requests finish, refuses new connections, stops the
//! apps and exits within the grace period.

use std::time::{Duration, Instant};

use rouse_e2e::{App, Rouse};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_refuses_new_ones_and_exits_in_grace() {
    let mut rouse = Rouse::start_with(&[App::hello("drain")], "  drain: {grace_secs: 10}\n").await;
    assert_eq!(rouse.get("drain.localhost", "/").await.status, 200);

    let proxy = rouse.proxy;
    let in_flight: Vec<_> = (0..5)
        .map(|_| {
            tokio::spawn(async move {
                let out = tokio::process::Command::new("curl")
                    .args(["-s", "-H", "Host: drain.localhost", "-w", "|%{http_code}"])
                    .arg(format!("http://{proxy}/sleep?ms=1500"))
                    .output()
                    .await
                    .expect("curl");
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
        })
        .collect();
    rouse
        .wait_for("5 requests in flight", Duration::from_secs(5), || async {
            rouse
                .metric("rouse_proxy_requests_in_flight{route=\"drain\"}")
                .await
                == Some(5.0)
        })
        .await;

    let signalled = Instant::now();
    rouse.signal("TERM");
    // New connections are refused once the listener closes.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(proxy).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the proxy still accepts connections after SIGTERM");

    for r in in_flight {
        let out = r.await.expect("request task");
        assert!(out.ends_with("|200"), "in-flight request cut: {out}");
    }
    let code = tokio::task::block_in_place(|| rouse.wait_exit(Duration::from_secs(10)));
    let took = signalled.elapsed();
    assert_eq!(code, Some(0), "exit status");
    assert!(
        took < Duration::from_secs(10),
        "exit took {took:?}, grace is 10 s"
    );
    assert_eq!(
        rouse.count_output("hello-fn stopping name=drain-1 (SIGTERM)"),
        1,
        "app stopped gracefully"
    );
}

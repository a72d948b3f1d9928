//! Protocols through the proxy, with real clients: WebSocket, h2c, h2 over TLS, large streamed
//! bodies with bounded proxy memory, path rewrite and forwarding headers.

use std::process::Stdio;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rouse_e2e::{App, Rouse};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

/// A self-signed P-256 certificate for `san` (a DNS name), written as `<stem>.pem`/`<stem>.key`.
fn self_signed(
    dir: &std::path::Path,
    stem: &str,
    san: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    );
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args([
            "-subj",
            &format!("/CN={stem}"),
            "-addext",
            &format!("subjectAltName=DNS:{san}"),
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl req failed");
    (cert, key)
}

async fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(args)
        .output()
        .await
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_proxy_from_cold() {
    let rouse = Rouse::start(&App::hello("ws").env("STARTUP_DELAY_MS", "200")).await;
    let mut ws = rouse.open_ws("ws.localhost").await;
    for i in 0..10 {
        let text = format!("message {i}");
        ws.send(Message::text(text.clone())).await.expect("send");
        assert_eq!(
            ws.next().await.and_then(Result::ok),
            Some(Message::text(text))
        );
    }
    let big = vec![7u8; 1 << 20];
    ws.send(Message::binary(big.clone()))
        .await
        .expect("send binary");
    assert_eq!(
        ws.next().await.and_then(Result::ok),
        Some(Message::binary(big))
    );
    ws.close(None).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_request_with_prior_knowledge() {
    let rouse = Rouse::start(&App::hello("h2")).await;
    let url = format!("http://{}/", rouse.proxy);
    let out = curl(&[
        "-s",
        "--http2-prior-knowledge",
        "-H",
        "Host: h2.localhost",
        "-w",
        "|%{http_version}|%{http_code}",
        &url,
    ])
    .await;
    assert_eq!(out, "hello from h2-1\n|2|200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_tls_with_sni_and_alpn() {
    let dir = std::env::temp_dir().join(format!("rouse-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (cert, key) = self_signed(&dir, "cert", "*.rouse.test");
    let tls = rouse_e2e::free_addr();
    let proxy_yaml = format!(
        "  tls:\n    listen: {tls}\n    certificates:\n      - cert: {}\n        key: {}\n        server_names: [\"*.rouse.test\"]\n",
        cert.display(),
        key.display()
    );
    let rouse = Rouse::start_with(
        &[App::hello("secure").hosts("secure.rouse.test")],
        &proxy_yaml,
    )
    .await;
    let port = tls.port();
    let resolve = format!("secure.rouse.test:{port}:127.0.0.1");
    let url = format!("https://secure.rouse.test:{port}/headers");
    let ca = cert.display().to_string();
    // ALPN picks h2 when the client offers it and HTTP/1.1 when it does not.
    for (flag, version) in [("--http2", "|2"), ("--http1.1", "|1.1")] {
        let out = curl(&[
            "-s",
            flag,
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "-w",
            "|%{http_version}",
            &url,
        ])
        .await;
        assert!(out.ends_with(version), "{flag}: {out}");
        assert!(out.contains("x-forwarded-proto: https"), "{flag}: {out}");
    }
    drop(rouse);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_rewrite_and_forwarding_headers_reach_the_app() {
    let app = App::hello("api")
        .with("paths: [/api]")
        .with("rewrite_prefix: /");
    let rouse = Rouse::start(&app).await;
    let r = rouse.get("api.localhost", "/api/headers?x=1").await;
    assert_eq!(r.status, 200);
    let t = r.text();
    assert!(t.contains("uri: /headers?x=1"), "{t}");
    assert!(t.contains("x-forwarded-for: 127.0.0.1"), "{t}");
    assert!(t.contains("x-forwarded-host: api.localhost"), "{t}");
    assert!(
        t.contains("forwarded: for=127.0.0.1;proto=http;host=\"api.localhost\""),
        "{t}"
    );
    // Segment-wise: /apix is not under /api.
    assert_eq!(rouse.get("api.localhost", "/apix").await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_megabytes_stream_both_ways_with_bounded_proxy_memory() {
    const SIZE: u64 = 200 * 1024 * 1024;
    let rouse = Rouse::start(&App::hello("bulk")).await;
    let (_, before_peak) = rouse.rss_kib();

    // Upload: curl streams stdin as a chunked PUT; the app counts what arrives.
    let url = format!("http://{}/count", rouse.proxy);
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c {SIZE} /dev/zero | curl -s -T - -H 'Host: bulk.localhost' {url}"
        ))
        .stdout(Stdio::piped())
        .spawn()
        .expect("upload");
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("upload in time");
    assert_eq!(
        String::from_utf8_lossy(&out.expect("upload output").stdout).trim(),
        SIZE.to_string()
    );

    // Download: the app streams SIZE bytes; curl counts them.
    let url = format!("http://{}/bytes?n={SIZE}", rouse.proxy);
    let size = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-H",
        "Host: bulk.localhost",
        "-w",
        "%{size_download}",
        &url,
    ])
    .await;
    assert_eq!(size, SIZE.to_string());

    let (_, peak) = rouse.rss_kib();
    eprintln!("proxy peak RSS: {before_peak} KiB before, {peak} KiB after 2 × 200 MiB");
    // Streaming means the bodies never sit in memory: the peak stays far below one body.
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upstream_protocol_speaks_http2_to_the_app() {
    // gRPC backends need HTTP/2 end to end; `upstream_protocol: h2c` gives them that even when
    // the client speaks HTTP/1.1.
    let rouse = Rouse::start(&App::hello("grpcish").with("upstream_protocol: h2c")).await;
    let r = rouse.get("grpcish.localhost", "/headers").await;
    assert_eq!(r.status, 200, "{}", r.text());
    rouse.settle().await;
    assert_eq!(
        rouse.count_output("request GET /headers HTTP/2.0"),
        1,
        "{:?}",
        rouse.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_certificate_files_are_served_without_a_restart() {
    let dir = std::env::temp_dir().join(format!("rouse-tls-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (old_cert, _) = self_signed(&dir, "live", "renew.rouse.test");
    let (cert, key) = (dir.join("live.pem"), dir.join("live.key"));
    let tls = rouse_e2e::free_addr();
    let proxy_yaml = format!(
        "  tls:\n    listen: {tls}\n    reload_interval_secs: 1\n    certificates:\n      - cert: {}\n        key: {}\n",
        cert.display(),
        key.display()
    );
    let rouse = Rouse::start_with(
        &[App::hello("renew").hosts("renew.rouse.test")],
        &proxy_yaml,
    )
    .await;
    let resolve = format!("renew.rouse.test:{}:127.0.0.1", tls.port());
    let url = format!("https://renew.rouse.test:{}/", tls.port());
    let trusts = |ca: std::path::PathBuf| {
        let (resolve, url) = (resolve.clone(), url.clone());
        async move {
            Command::new("curl")
                .args(["-s", "-o", "/dev/null", "--cacert"])
                .arg(ca)
                .args(["--resolve", &resolve, &url])
                .status()
                .await
                .is_ok_and(|s| s.success())
        }
    };
    let kept = dir.join("old.pem");
    std::fs::copy(&old_cert, &kept).expect("keep old cert");
    assert!(
        trusts(kept.clone()).await,
        "the first certificate is served"
    );

    // Renew: a new key pair lands on the same paths (each file replaced atomically).
    let (new_cert, new_key) = self_signed(&dir, "next", "renew.rouse.test");
    std::fs::rename(&new_key, &key).expect("replace key");
    std::fs::rename(&new_cert, &cert).expect("replace cert");
    let mut renewed = false;
    for _ in 0..60 {
        if trusts(cert.clone()).await {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(renewed, "the renewed certificate was not picked up");
    assert!(!trusts(kept).await, "the old certificate is still served");
    drop(rouse);
    let _ = std::fs::remove_dir_all(&dir);
}

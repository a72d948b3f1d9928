//! The README's "Try Rouse on Kubernetes from a shell" block, run as written by bash against the
//! real control plane, with the admin kubeconfig and the cluster's own `kubectl` on `PATH` (what
//! `up` prints). Only the fixed ports (8080, 9090, 9091) and `target/debug/` are replaced, by free
//! loopback ports and this build's binary directory, so the test can run beside others.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rouse_e2e::{bin, free_addr};
use rouse_testcluster::TestCluster;

/// The shell block that follows the README's walkthrough marker.
fn walkthrough() -> String {
    let readme = include_str!("../../README.md");
    let (_, after) = readme
        .split_once("<!-- walkthrough:")
        .expect("walkthrough marker in README.md");
    let (_, block) = after.split_once("```sh\n").expect("```sh after the marker");
    let (block, _) = block.split_once("```").expect("end of the block");
    block.to_string()
}

#[test]
fn the_readme_walkthrough_wakes_hello_and_kubectl_shows_it() {
    let cluster = TestCluster::shared();
    let bin_dir = bin("rouse")
        .parent()
        .expect("binary directory")
        .to_path_buf();
    let k8s_bin = rouse_testcluster::binaries().expect("control-plane binaries");
    let mut script = walkthrough();
    for fixed in ["127.0.0.1:8080", "127.0.0.1:9090", "127.0.0.1:9091"] {
        assert!(script.contains(fixed), "the block no longer uses {fixed}");
        script = script.replace(fixed, &free_addr().to_string());
    }
    script = script.replace("target/debug/", &format!("{}/", bin_dir.display()));
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root");
    let path = format!(
        "{}:{}",
        k8s_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // Its own process group: the two `&` jobs are stopped with the shell at the end.
    let mut child = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(repo)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("PATH", path)
        .env("ROUSE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("bash");
    let pgid = child.id();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for bash") {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(120) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = Command::new("kill")
        .args(["-TERM", "--", &format!("-{pgid}")])
        .status();
    let _ = child.wait();
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let shown = format!("--- stdout ---\n{out}\n--- stderr ---\n{err}");
    // What a person would have seen, in the test's output.
    println!("{shown}\n(ran {:?})", started.elapsed());
    let status = status.unwrap_or_else(|| panic!("the walkthrough ran over 120 s\n{shown}"));
    assert!(
        status.success(),
        "the walkthrough failed: {status}\n{shown}"
    );

    // kubectl version: both sides stamped with the release.
    assert!(out.contains("Server Version: v1."), "{shown}");
    // The cold request: held while hello went 0 → 1, then answered by its pod.
    assert!(out.contains("HTTP/1.1 200"), "{shown}");
    assert!(out.contains("x-rouse-cold-start: true"), "{shown}");
    // kubectl get: the printer columns, with the replica the wake made.
    let header = out
        .lines()
        .find(|l| l.starts_with("NAME") && l.contains("TARGETWORKLOAD"))
        .unwrap_or_else(|| panic!("no kubectl get header\n{shown}"));
    for column in [
        "TARGETSERVICE",
        "MINREPLICAS",
        "MAXREPLICAS",
        "DESIRED",
        "CURRENT",
        "READY",
        "AGE",
    ] {
        assert!(header.contains(column), "column {column}\n{shown}");
    }
    let row: Vec<&str> = out
        .lines()
        .find(|l| l.starts_with("hello "))
        .unwrap_or_else(|| panic!("no hello row\n{shown}"))
        .split_whitespace()
        .collect();
    // NAME TARGETWORKLOAD TARGETSERVICE MIN MAX DESIRED CURRENT READY AGE
    assert_eq!(
        row.get(3..8),
        Some(&["0", "10", "1", "1", "True"][..]),
        "{shown}"
    );
    // describe: the Ready condition and the Scaled Event of the wake.
    assert!(
        out.lines().any(|l| l.contains("Normal")
            && l.contains("Scaled apps/v1/Deployment/hello from ")
            && l.trim_end().ends_with("to 1")),
        "no Scaled event of the wake\n{shown}"
    );
    // rouse status: the proxy's view of the target (desired is the controller's: `-`).
    // TARGET HOSTS READY DESIRED HELD IN-FLIGHT EVENTS COLD-STARTS LAST-WAKE
    let rows: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.starts_with("hello/hello "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows.len(),
        2,
        "a proxy's and the controller's status\n{shown}"
    );
    assert_eq!(
        rows[0].get(..8),
        Some(
            &[
                "hello/hello",
                "hello.example.com",
                "1",
                "-",
                "0",
                "0",
                "0",
                "1"
            ][..]
        ),
        "{shown}"
    );
    // The controller's: no hosts or pods of its own, one replica desired, nothing held.
    assert_eq!(
        rows[1].get(..8),
        Some(&["hello/hello", "-", "-", "1", "0", "0", "0", "-"][..]),
        "{shown}"
    );
}

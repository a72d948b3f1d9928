//! Starts a test cluster and keeps it up until Ctrl-C (or Enter), for poking at it with
//! kubectl: `cargo build --workspace --bins --examples && target/debug/examples/up`, then paste
//! the two `export` lines it prints (the admin kubeconfig, and the directory of the `kubectl` built
//! with the control plane). Stopping it stops every component and removes its directory.

fn main() -> anyhow::Result<()> {
    let cluster = rouse_testcluster::TestCluster::start(rouse_testcluster::Options::default())?;
    println!("cluster up in {:?}", cluster.startup);
    println!("export KUBECONFIG={}", cluster.kubeconfig.display());
    // kubectl of the cluster's own version, built with it (same modules, same cache).
    println!(
        "export PATH={}:$PATH",
        rouse_testcluster::binaries()?.display()
    );
    println!("logs in {}", cluster.dir.display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let enter = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        });
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = enter => {}
        }
    });
    drop(cluster);
    // The stdin reader may still be blocked: do not wait for it.
    rt.shutdown_background();
    Ok(())
}

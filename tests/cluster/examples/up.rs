//! Starts a test cluster and keeps it up until Ctrl-C (or Enter), for poking at it with
//! kubectl: `cargo run -p rouse-testcluster --example up`, then `export KUBECONFIG=<printed path>`.
//! Stopping it stops every component and removes its directory.

fn main() -> anyhow::Result<()> {
    let cluster = rouse_testcluster::TestCluster::start(rouse_testcluster::Options::default())?;
    println!("cluster up in {:?}", cluster.startup);
    println!("export KUBECONFIG={}", cluster.kubeconfig.display());
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

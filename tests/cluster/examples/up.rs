//! Starts a test cluster and keeps it up until Ctrl-C, for poking at it with kubectl:
//! `cargo run -p rouse-testcluster --example up`, then `export KUBECONFIG=<printed path>`.

fn main() -> anyhow::Result<()> {
    let cluster = rouse_testcluster::TestCluster::start(rouse_testcluster::Options::default())?;
    println!("cluster up in {:?}", cluster.startup);
    println!("export KUBECONFIG={}", cluster.kubeconfig.display());
    println!("logs in {}", cluster.dir.display());
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = tx.send(());
    });
    let _ = rx.recv();
    Ok(())
}

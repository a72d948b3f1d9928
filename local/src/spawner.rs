//! Replicas are forked from one thread that lives as long as Rouse.
//!
//! Each replica asks the kernel for SIGTERM when its parent dies (`PR_SET_PDEATHSIG`), so no
//! orphan keeps a port if Rouse is SIGKILLed. But "parent" there is the *thread* that forked,
//! not the process: a child forked from a thread that later exits (a tokio blocking-pool thread
//! after its idle keep-alive, a worker handed off by `block_in_place`) would be SIGTERMed while
//! Rouse runs on. Forking from this dedicated, never-exiting thread makes the signal mean what
//! it says, whatever thread the supervisor happens to run on.

use std::process::Stdio;
use std::sync::OnceLock;
use std::sync::mpsc;

use nix::sys::signal::Signal;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

type Job = (
    Command,
    tokio::runtime::Handle,
    oneshot::Sender<std::io::Result<Child>>,
);

/// The spawner thread's inbox; the thread is started by the first spawn and never stops (the
/// sender lives in a static, so its `recv` never ends).
static SPAWNER: OnceLock<std::io::Result<mpsc::Sender<Job>>> = OnceLock::new();

fn spawner() -> std::io::Result<&'static mpsc::Sender<Job>> {
    let started = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("rouse-spawner".into())
            .spawn(move || {
                for (mut cmd, runtime, reply) in rx {
                    // The child is registered with the caller's runtime (reaping, pipes).
                    let _entered = runtime.enter();
                    let _ = reply.send(cmd.spawn());
                }
            })
            .map(|_| tx)
    });
    started
        .as_ref()
        .map_err(|e| std::io::Error::new(e.kind(), format!("spawner thread: {e}")))
}

/// Spawns `cmd` from the spawner thread, with the parent-death signal set and stdin closed.
/// Must be called inside a tokio runtime (the child is tied to it).
pub async fn spawn(mut cmd: Command) -> std::io::Result<Child> {
    cmd.stdin(Stdio::null());
    set_parent_death_signal(&mut cmd);
    let (reply, answer) = oneshot::channel();
    spawner()?
        .send((cmd, tokio::runtime::Handle::current(), reply))
        .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
    answer
        .await
        .map_err(|_| std::io::Error::other("spawner thread dropped the request"))?
}

/// Makes the kernel SIGTERM the replica if Rouse dies without stopping it (e.g. SIGKILL), so no
/// orphan keeps a port or a GPU.
#[allow(unsafe_code)]
fn set_parent_death_signal(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2), which is
    // async-signal-safe; it allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// A replica spawned while the supervisor runs on a thread that then exits must live on:
    /// the kernel's parent-death signal follows the forking thread, not the process.
    #[test]
    fn a_replica_outlives_the_thread_that_asked_for_it() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_keep_alive(Duration::from_millis(20))
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            // Ask from a blocking-pool thread, which exits once idle past its keep-alive.
            let (mut child, tid) = tokio::task::spawn_blocking(|| {
                let tid = nix::unistd::gettid();
                let mut cmd = Command::new("sleep");
                cmd.arg("30").kill_on_drop(true);
                let child = tokio::runtime::Handle::current().block_on(spawn(cmd));
                (child.expect("spawned"), tid)
            })
            .await
            .expect("joined");

            // Precondition: the asking thread is really gone.
            let task = format!("/proc/self/task/{tid}");
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::path::Path::new(&task).exists() {
                assert!(
                    Instant::now() < deadline,
                    "blocking thread {tid} never exited"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // A SIGTERM sent at that thread's exit would end `sleep` within milliseconds.
            let watch_until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < watch_until {
                assert!(
                    child.try_wait().expect("try_wait").is_none(),
                    "the replica died with the thread that spawned it"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            child.kill().await.expect("kill");
        });
    }
}

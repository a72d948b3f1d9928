//! Child processes of a test cluster.
//!
//! They are spawned from one long-lived thread with a parent-death signal, so the kernel kills
//! them when the test process ends, however it ends; an `atexit` hook also kills them and
//! removes their directories when the test harness exits normally (a shared cluster, held in a
//! static, is never dropped).

use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

static KEEPER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
static CLEANUP: Mutex<Vec<Cleanup>> = Mutex::new(Vec::new());

enum Cleanup {
    Pid(i32),
    Dir(PathBuf),
}

/// Set when the process is exiting: background tasks stop reporting the errors it causes.
pub static EXITING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn cleanup_at_exit() {
    EXITING.store(true, std::sync::atomic::Ordering::Release);
    let items = std::mem::take(&mut *CLEANUP.lock().unwrap_or_else(|p| p.into_inner()));
    let pids: Vec<i32> = items
        .iter()
        .filter_map(|c| match c {
            Cleanup::Pid(p) => Some(*p),
            Cleanup::Dir(_) => None,
        })
        .collect();
    for &pid in &pids {
        signal(pid, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    for &pid in &pids {
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    for item in items {
        if let Cleanup::Dir(d) = item {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

#[allow(unsafe_code)]
fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid we spawned; no memory is shared.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Reaps `pid` if it exited; true while it still runs.
#[allow(unsafe_code)]
fn alive(pid: i32) -> bool {
    let mut status = 0;
    // SAFETY: waitpid(2) on our own child with WNOHANG; `status` outlives the call.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    r == 0
}

#[allow(unsafe_code)]
fn keeper() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    KEEPER.get_or_init(|| {
        // SAFETY: registers a plain `extern "C" fn` with no captured state.
        unsafe {
            libc::atexit(cleanup_at_exit);
        }
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testcluster-keeper".into())
            .spawn(move || {
                // The parent-death signal fires when the *thread* that forked exits, so every
                // child is forked here, on a thread that lives as long as the process.
                for (mut cmd, reply) in rx {
                    // SAFETY: the closure runs between fork and exec and only calls prctl(2),
                    // which is async-signal-safe and allocates nothing.
                    unsafe {
                        cmd.pre_exec(|| {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                                return Err(io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(cmd.spawn());
                }
            })
            .unwrap_or_else(|e| panic!("cannot start the process keeper thread: {e}"));
        Mutex::new(tx)
    })
}

/// Spawns `cmd` so that it cannot outlive the test process.
pub fn spawn(cmd: Command) -> io::Result<Child> {
    let (tx, rx) = mpsc::channel();
    keeper()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send((cmd, tx))
        .map_err(|_| io::Error::other("process keeper thread is gone"))?;
    let child = rx
        .recv()
        .map_err(|_| io::Error::other("process keeper thread is gone"))??;
    if let Ok(pid) = i32::try_from(child.id()) {
        CLEANUP
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Cleanup::Pid(pid));
    }
    Ok(child)
}

/// Removes `dir` when the test process exits (if nothing removed it before).
pub fn remove_at_exit(dir: PathBuf) {
    let _ = keeper();
    CLEANUP
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Cleanup::Dir(dir));
}

/// SIGTERM, then SIGKILL after `grace`; reaps the child.
pub fn stop(child: &mut Child, grace: Duration) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // Once reaped, the pid may be reused by anyone: the exit hook must not kill it then.
        CLEANUP
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|c| !matches!(c, Cleanup::Pid(p) if *p == pid));
        signal(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

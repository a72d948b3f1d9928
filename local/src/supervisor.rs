//! Desired replicas → running processes. One reconcile loop per app starts and stops replica
//! slots ([`crate::replica::run`]); the app's ready list lives in its [`AppHandle`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rouse_core::Target;
use rouse_scale::{ScaleError, Scaler};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::AppHandle;
use crate::config::ProcessSpec;
use crate::replica;
use crate::telemetry::LocalMetrics;

struct Slot {
    id: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The embedded platform: every configured app, keyed by name.
pub struct LocalPlatform {
    apps: HashMap<String, Arc<AppHandle>>,
}

impl LocalPlatform {
    /// `apps` pairs each process spec with the proxy target it serves.
    pub fn new(apps: Vec<(ProcessSpec, Arc<Target>)>, metrics: LocalMetrics) -> Arc<Self> {
        let apps = apps
            .into_iter()
            .map(|(spec, target)| {
                let handle = AppHandle::new(spec, target, metrics.clone());
                (handle.spec.name.clone(), Arc::new(handle))
            })
            .collect();
        Arc::new(LocalPlatform { apps })
    }

    /// Replicas `target` is asked for now (what the supervisor converges to).
    pub fn desired(&self, target: &str) -> Option<u32> {
        self.apps.get(target).map(|a| *a.desired.borrow())
    }

    /// Stopping replicas from now on get SIGTERM without first waiting for their in-flight
    /// requests: Rouse's drain grace ran out, and the shutdown must not outlast it by another
    /// `stop_grace_secs` per replica.
    pub fn abandon_in_flight(&self) {
        for app in self.apps.values() {
            app.abandon_in_flight
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Runs every app's reconcile loop. When `shutdown` turns true, stops every replica (each
    /// drained, then SIGTERM, then SIGKILL after its grace) and returns.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let loops: Vec<_> = self
            .apps
            .values()
            .map(|app| tokio::spawn(reconcile(app.clone(), shutdown.clone())))
            .collect();
        for l in loops {
            let _ = l.await;
        }
    }
}

async fn reconcile(app: Arc<AppHandle>, mut shutdown: watch::Receiver<bool>) {
    let mut desired = app.desired.subscribe();
    let mut slots: Vec<Slot> = Vec::new();
    let mut stopping: Vec<Slot> = Vec::new();
    let mut next_id = 1u64;
    // Also set when the shutdown sender is gone: nobody can ask us to keep running.
    let mut orphaned = false;
    loop {
        let closing = orphaned || *shutdown.borrow();
        let want = if closing {
            0
        } else {
            *desired.borrow_and_update()
        } as usize;
        stopping.retain(|s| !s.task.is_finished());
        while slots.len() < want {
            let id = format!("{}-{next_id}", app.spec.name);
            next_id += 1;
            let (stop, rx) = watch::channel(false);
            let task = tokio::spawn(replica::run(app.clone(), id.clone(), rx));
            slots.push(Slot { id, stop, task });
        }
        if slots.len() > want {
            // Stop the least busy replicas first: fewer requests to drain, fewer streams cut.
            slots.sort_by_key(|s| std::cmp::Reverse(app.in_flight_of(&s.id)));
            for slot in slots.drain(want..) {
                slot.stop.send_replace(true);
                stopping.push(slot);
            }
        }
        if closing && slots.is_empty() {
            for s in stopping.drain(..) {
                let _ = s.task.await;
            }
            return;
        }
        tokio::select! {
            r = desired.changed() => {
                if r.is_err() {
                    return;
                }
            }
            r = shutdown.changed(), if !closing => {
                if r.is_err() {
                    orphaned = true;
                }
            }
            () = tokio::time::sleep(Duration::from_millis(200)), if !stopping.is_empty() => {}
        }
    }
}

impl Scaler for LocalPlatform {
    async fn replicas(&self, target: &str) -> Result<u32, ScaleError> {
        self.apps
            .get(target)
            .map(|a| *a.desired.borrow())
            .ok_or_else(|| ScaleError::UnknownTarget(target.to_string()))
    }

    async fn scale(&self, target: &str, replicas: u32) -> Result<(), ScaleError> {
        let app = self
            .apps
            .get(target)
            .ok_or_else(|| ScaleError::UnknownTarget(target.to_string()))?;
        app.desired.send_replace(replicas);
        Ok(())
    }
}

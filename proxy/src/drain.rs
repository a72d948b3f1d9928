//! Graceful shutdown. On SIGTERM: fail readiness first, wait `readiness_delay` so load balancers
//! notice, then let pingora close the listeners (new connections are refused) while in-flight
//! and held requests finish, bounded by the grace period. SIGINT is a fast shutdown.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{SignalKind, signal};

use crate::state::ProxyState;

/// Pingora's shutdown trigger, with readiness failing before listeners close.
pub struct DrainSignal {
    pub state: Arc<ProxyState>,
    pub readiness_delay: Duration,
}

#[async_trait]
impl ShutdownSignalWatch for DrainSignal {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("Cannot install signal handlers; shutting down.");
            return ShutdownSignal::FastShutdown;
        };
        tokio::select! {
            _ = term.recv() => {
                tracing::info!(delay_ms = self.readiness_delay.as_millis() as u64, "SIGTERM: draining.");
                self.state.start_draining();
                tokio::time::sleep(self.readiness_delay).await;
                ShutdownSignal::GracefulTerminate
            }
            _ = int.recv() => {
                tracing::info!("SIGINT: fast shutdown.");
                self.state.start_draining();
                ShutdownSignal::FastShutdown
            }
        }
    }
}

/// Waits until nothing is held or in flight, or `grace` passes. Returns whether it drained.
pub async fn wait_drained(state: &ProxyState, grace: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + grace;
    // Shutdown is rare and bounded, so a short poll is the simple, robust choice here.
    loop {
        if state.pending() == 0 {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

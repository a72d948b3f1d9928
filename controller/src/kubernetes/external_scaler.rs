//! KEDA external-push scaler (gRPC): placeholder until the tonic service lands.

use std::sync::Arc;

use super::demand::Aggregate;

pub async fn serve(_listener: tokio::net::TcpListener, _aggregate: Arc<Aggregate>) {}

//! What every long-running job shares: the Prometheus endpoint.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;

/// Serve a job's metrics registry at `http://ADDR/metrics` until the
/// process ends.
pub async fn serve_metrics(
    address: SocketAddr,
    registry: prometheus::Registry,
) -> anyhow::Result<()> {
    let registry = Arc::new(registry);
    let render = move || {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if encoder.encode_utf8(&registry.gather(), &mut out).is_err() {
            out.clear();
        }
        out
    };
    let render = Arc::new(render);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let render = Arc::clone(&render);
            async move { render() }
        }),
    );
    tracing::info!(%address, "serving metrics at /metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    });
    Ok(())
}

//! What the jobs share: reading their configuration file, and the
//! Prometheus endpoint.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

/// A job's configuration file (TOML), parsed; errors name the file.
pub fn read_config<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the configuration {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

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

//! `skolflode produce`: read vendor connections and publish their changes
//! exactly once.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde::Deserialize;
use skolflode_kafka::KafkaConfig;
use skolflode_producers::metrics::Metrics;
use skolflode_producers::pseudonym::Pseudonymiser;
use skolflode_producers::runner::{self, ConnectionConfig, Runner};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Producer configuration (TOML): Kafka, the pseudonym key file and the
    /// vendor connections.
    #[arg(long)]
    config: PathBuf,

    /// Poll every connection once and exit (non-zero if a poll failed),
    /// instead of polling until SIGTERM.
    #[arg(long)]
    once: bool,

    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
}

/// The configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProducerConfig {
    #[serde(default)]
    kafka: KafkaConfig,
    /// File holding the pseudonym secret; `SKOLFLODE_PSEUDONYM_KEY` when
    /// absent.
    pseudonym_key_file: Option<PathBuf>,
    connections: Vec<ConnectionConfig>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let mut config: ProducerConfig =
        toml::from_str(&text).with_context(|| format!("parsing {}", args.config.display()))?;
    config.kafka.apply_env();
    if config.connections.is_empty() {
        bail!("no connections configured");
    }
    let names: std::collections::HashSet<&str> =
        config.connections.iter().map(|c| c.name.as_str()).collect();
    if names.len() != config.connections.len() {
        bail!("connection names must be unique");
    }
    let pseudonymiser = Arc::new(
        Pseudonymiser::from_config(config.pseudonym_key_file.as_deref())
            .context("the pseudonym key")?,
    );
    runner::ensure_topics(&config.kafka)
        .await
        .context("creating topics")?;
    let metrics = Arc::new(Metrics::new().context("metrics")?);
    if let Some(address) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("binding {address}"))?;
        let served = Arc::clone(&metrics);
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let served = Arc::clone(&served);
                async move { served.render() }
            }),
        );
        tracing::info!(%address, "serving metrics at /metrics");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the metrics server stopped");
            }
        });
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for connection in config.connections {
        let name = connection.name.clone();
        let mut runner = Runner::start(connection, &config.kafka, Arc::clone(&pseudonymiser))
            .await
            .with_context(|| format!("starting connection {name}"))?
            .with_metrics(Arc::clone(&metrics));
        if args.once {
            let started = std::time::Instant::now();
            let result = runner.poll().await;
            let stats = runner.stats();
            let events: u64 = stats.events.values().sum();
            // One machine-readable line per connection, for scripts.
            println!(
                "connection={name} events={events} event_bytes={} records={} items={} pages={} transactions={} seconds={:.3} waited_for_pages={:.3} waited_for_kafka={:.3} handing_over={:.3}",
                stats.event_bytes,
                stats.records,
                stats.items,
                stats.pages,
                stats.transactions,
                started.elapsed().as_secs_f64(),
                stats.waited_for_pages.as_secs_f64(),
                stats.waited_for_kafka.as_secs_f64(),
                stats.handing_over.as_secs_f64()
            );
            tracing::info!(connection = %name, pages = stats.pages, items = stats.items, events = ?stats.events, dead_letters = stats.dead_letters, findings = stats.findings, "poll done");
            result.with_context(|| format!("polling {name}"))?;
        } else {
            let stop = stop_rx.clone();
            tasks.push(tokio::spawn(async move { (name, runner.run(stop).await) }));
        }
    }
    if args.once {
        return Ok(());
    }
    shutdown_signal().await;
    tracing::info!("stopping after the current transaction");
    let _ = stop_tx.send(true);
    let mut failed = false;
    for task in tasks {
        match task.await {
            Ok((name, Ok(stats))) => {
                tracing::info!(connection = %name, polls = stats.polls, events = ?stats.events, "stopped")
            }
            Ok((name, Err(e))) => {
                failed = true;
                tracing::error!(connection = %name, error = %e, "connection failed");
            }
            Err(e) => {
                failed = true;
                tracing::error!(error = %e, "connection task failed");
            }
        }
    }
    if failed {
        bail!("a connection failed");
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}

//! `skolflode produce`: read vendor connections and publish their changes
//! exactly once.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use serde::Deserialize;
use skolflode_kafka::KafkaConfig;
use skolflode_producers::metrics::Metrics;
use skolflode_producers::pseudonym::Pseudonymiser;
use skolflode_producers::runner::{self, ConnectionConfig, RunError, Runner};
use skolflode_producers::seal::SealConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Producer configuration (TOML): Kafka, the pseudonym key file and the
    /// vendor connections.
    #[arg(long)]
    config: PathBuf,

    /// Poll every connection once and exit, instead of polling until
    /// SIGTERM. The exit status is 2 when some reads failed (a summary
    /// lists them all), 1 when the producer could not run at all.
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
    /// How dead letters are sealed: the operators' age recipients.
    #[serde(default)]
    dead_letters: SealConfig,
    connections: Vec<ConnectionConfig>,
}

/// Some reads failed while others went on: the process exits 2.
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} connections had failures (listed above)")]
pub struct PartialFailure {
    failed: usize,
    total: usize,
}

/// One machine-readable line per connection, for scripts.
fn print_stats(name: &str, stats: &runner::RunStats, seconds: f64) {
    let events: u64 = stats.events.values().sum();
    println!(
        "connection={name} events={events} event_bytes={} records={} items={} pages={} transactions={} dead_letters={} findings={} seconds={seconds:.3} waited_for_pages={:.3} waited_for_kafka={:.3} handing_over={:.3}",
        stats.event_bytes,
        stats.records,
        stats.items,
        stats.pages,
        stats.transactions,
        stats.dead_letters,
        stats.findings,
        stats.waited_for_pages.as_secs_f64(),
        stats.waited_for_kafka.as_secs_f64(),
        stats.handing_over.as_secs_f64()
    );
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
    let sealer = Arc::new(config.dead_letters.build().context("[dead_letters]")?);
    if !sealer.keeps_raw() {
        tracing::warn!(
            "no [dead_letters] age_recipients: dead letters keep only a redacted copy of what \
             could not be read, not its raw bytes"
        );
    }
    runner::ensure_topics(&config.kafka)
        .await
        .context("creating topics")?;
    let metrics = Arc::new(Metrics::new().context("metrics")?);
    if let Some(address) = args.metrics_listen {
        crate::job::serve_metrics(address, metrics.registry.clone()).await?;
    }

    let total = config.connections.len();
    let mut runners = Vec::new();
    let mut failures: Vec<(String, RunError)> = Vec::new();
    for connection in config.connections {
        let name = connection.name.clone();
        match Runner::start_sealed(
            connection,
            &config.kafka,
            Arc::clone(&pseudonymiser),
            Arc::clone(&sealer),
        )
        .await
        {
            Ok(runner) => runners.push(runner.with_metrics(Arc::clone(&metrics))),
            // With --once the other connections are still read; a
            // service must not start half of its connections.
            Err(e) if args.once => {
                tracing::error!(connection = %name, error = %e.chain(), "the connection could not start");
                failures.push((name, e));
            }
            Err(e) => {
                return Err(anyhow::anyhow!(e.chain()))
                    .with_context(|| format!("starting connection {name}"))
            }
        }
    }

    if args.once {
        // Every connection is polled, each in its own task; one vendor's
        // failure does not keep the others from being read.
        let mut tasks = Vec::new();
        for mut runner in runners {
            tasks.push(tokio::spawn(async move {
                let started = std::time::Instant::now();
                let result = runner.poll().await;
                (runner, result, started.elapsed().as_secs_f64())
            }));
        }
        for task in tasks {
            let (runner, result, seconds) = task.await.context("a connection's task failed")?;
            let name = runner.name().to_owned();
            print_stats(&name, runner.stats(), seconds);
            if let Err(e) = result {
                failures.push((name, e));
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        eprintln!(
            "summary: {} of {total} connections had failures",
            failures.len()
        );
        for (name, e) in &failures {
            let errors = match e {
                RunError::Partial(each) => each.iter().collect::<Vec<_>>(),
                other => vec![other],
            };
            for error in errors {
                eprintln!("  {name}: {}", error.chain());
            }
        }
        if failures.len() == total || failures.iter().any(|(_, e)| e.is_fatal()) {
            bail!("no connection was read, or one failed fatally");
        }
        return Err(PartialFailure {
            failed: failures.len(),
            total,
        }
        .into());
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for runner in runners {
        let name = runner.name().to_owned();
        let stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move { (name, runner.run(stop).await) }));
    }
    super::shutdown_signal().await;
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
                tracing::error!(connection = %name, error = %e.chain(), "connection failed");
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

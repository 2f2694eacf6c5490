//! `skolflode sink`: the weekly and yearly registers in Parquet, from the
//! processors' snapshot topics.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use serde::Deserialize;
use skolflode_kafka::KafkaConfig;
use skolflode_sinks::metrics::Metrics;
use skolflode_sinks::run::{self, Progress, Until};
use skolflode_sinks::SinkConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Sink configuration (TOML): `[kafka]` and `[sink]`.
    #[arg(long)]
    config: PathBuf,

    /// Stop once both snapshot topics have been read to their end and what
    /// is whole is written, instead of running until SIGTERM.
    #[arg(long)]
    until_caught_up: bool,

    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
}

/// The configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    kafka: KafkaConfig,
    #[serde(default)]
    sink: SinkConfig,
}

/// Run the sink in a blocking task until `until`, stopping cleanly on
/// SIGTERM or Ctrl-C.
pub async fn go(
    kafka: KafkaConfig,
    config: SinkConfig,
    until: Until,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Progress> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let signal = tokio::spawn(async move {
        crate::cmd::shutdown_signal().await;
        tracing::info!("stopping: writing what is whole");
        flag.store(true, Ordering::Relaxed);
    });
    let result =
        tokio::task::spawn_blocking(move || run::run(&kafka, &config, &metrics, until, &stop))
            .await;
    signal.abort();
    Ok(result??)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut file: File = crate::job::read_config(&args.config)?;
    file.kafka.apply_env();
    file.sink.build()?;
    let metrics = Arc::new(Metrics::new().context("metrics")?);
    if let Some(address) = args.metrics_listen {
        crate::job::serve_metrics(address, metrics.registry.clone()).await?;
    }
    let until = if args.until_caught_up {
        Until::CaughtUp
    } else {
        Until::Stopped
    };
    let started = std::time::Instant::now();
    let p = go(file.kafka, file.sink, until, metrics).await?;
    println!(
        "records={} bad_records={} revisions={} redelivered={} weekly_files={} yearly_files={} rows_written={} seconds={:.3}",
        p.records,
        p.bad_records,
        p.revisions,
        p.redelivered,
        p.weekly_files,
        p.yearly_files,
        p.rows_written,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

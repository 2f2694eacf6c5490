//! `skolflode process` and `skolflode replay`: the change topics to history
//! topics and weekly register snapshots, exactly once.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use serde::Deserialize;
use skolflode_kafka::KafkaConfig;
use skolflode_processors::weekly::metrics::Metrics;
use skolflode_processors::weekly::run::{self, Outputs, Progress, Until};
use skolflode_processors::weekly::ProcessConfig;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Processor configuration (TOML): `[kafka]` and `[process]`.
    #[arg(long)]
    config: PathBuf,

    /// Stop once every input has been read to its end and every heartbeat
    /// applied, instead of running until SIGTERM.
    #[arg(long)]
    until_caught_up: bool,

    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Processor configuration (TOML): `[kafka]` and `[process]`.
    #[arg(long)]
    config: PathBuf,

    /// The replay's application id: its consumer group and transactional
    /// id, and the suffix of the topics it writes
    /// (`skolflode.snapshot.attendance.<ID>`, …), so that the original
    /// outputs stay as they are and the two can be compared.
    #[arg(long, value_name = "ID")]
    application_id: String,
}

/// The configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    kafka: KafkaConfig,
    #[serde(default)]
    process: ProcessConfig,
}

fn load(path: &std::path::Path) -> anyhow::Result<File> {
    let mut file: File = crate::job::read_config(path)?;
    file.kafka.apply_env();
    file.process.build()?;
    Ok(file)
}

async fn go(
    kafka: KafkaConfig,
    config: ProcessConfig,
    outputs: Outputs,
    until: Until,
    metrics_listen: Option<std::net::SocketAddr>,
) -> anyhow::Result<Progress> {
    run::ensure_topics(&kafka, &config, &outputs).await?;
    let metrics = Arc::new(Metrics::new().context("metrics")?);
    if let Some(address) = metrics_listen {
        crate::job::serve_metrics(address, metrics.registry.clone()).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    tokio::spawn(async move {
        crate::cmd::shutdown_signal().await;
        tracing::info!("stopping: committing what is done");
        flag.store(true, Ordering::Relaxed);
    });
    let started = std::time::Instant::now();
    let progress = tokio::task::spawn_blocking(move || {
        run::run(&kafka, &config, &outputs, &metrics, until, &stop)
    })
    .await??;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "records={} kept={} repeats={} dead_letters={} heartbeats={} snapshots={} restored={} aborts={} seconds={seconds:.3}",
        progress.records,
        progress.kept,
        progress.repeats,
        progress.dead_letters,
        progress.heartbeats,
        progress.snapshots,
        progress.restored,
        progress.aborts,
    );
    Ok(progress)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let file = load(&args.config)?;
    let until = if args.until_caught_up {
        Until::CaughtUp
    } else {
        Until::Stopped
    };
    go(
        file.kafka,
        file.process,
        Outputs::default(),
        until,
        args.metrics_listen,
    )
    .await?;
    Ok(())
}

pub async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let mut file = load(&args.config)?;
    file.process.application_id = args.application_id.clone();
    file.process.build()?;
    let outputs = Outputs {
        suffix: Some(args.application_id),
    };
    go(file.kafka, file.process, outputs, Until::CaughtUp, None).await?;
    Ok(())
}

//! `skolflode produce`: read vendor connections and publish their changes
//! exactly once.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Deserialize;
use skolflode_kafka::KafkaConfig;
use skolflode_producers::metrics::Metrics;
use skolflode_producers::pseudonym::Pseudonymiser;
use skolflode_producers::runner::{self, ConnectionConfig, Polled, RunError, Runner};
use skolflode_producers::seal::{SealConfig, Sealer};
use tokio::sync::watch;

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
    /// Seconds a stop (SIGTERM) may take (default 30): polls under way
    /// are cancelled and their transactions aborted at once; past this,
    /// the process exits whatever is still stopping.
    #[serde(default = "default_grace")]
    shutdown_grace_secs: u64,
}

fn default_grace() -> u64 {
    30
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
        "connection={name} events={events} event_bytes={} records={} items={} pages={} transactions={} dead_letters={} findings={} retired={} restored={} restore_seconds={:.3} seconds={seconds:.3} waited_for_pages={:.3} waited_for_kafka={:.3} handing_over={:.3}",
        stats.event_bytes,
        stats.records,
        stats.items,
        stats.pages,
        stats.transactions,
        stats.dead_letters,
        stats.findings,
        stats.retired,
        stats.restored,
        stats.restore.as_secs_f64(),
        stats.waited_for_pages.as_secs_f64(),
        stats.waited_for_kafka.as_secs_f64(),
        stats.handing_over.as_secs_f64()
    );
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut config: ProducerConfig = crate::job::read_config(&args.config)?;
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
    let shared = Arc::new(Shared {
        kafka: config.kafka.clone(),
        pseudonymiser,
        sealer,
        metrics,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        super::shutdown_signal().await;
        tracing::info!("stopping: polls under way are cancelled, their transactions aborted");
        let _ = stop_tx.send(true);
    });

    // Every connection starts at once; each says for itself whether it
    // can work.
    let total = config.connections.len();
    let mut starting = Vec::new();
    for connection in config.connections {
        let shared = Arc::clone(&shared);
        starting.push(tokio::spawn(async move {
            let started = shared.start(connection.clone()).await;
            (connection, started)
        }));
    }
    let mut started = Vec::new();
    let mut stop = stop_rx.clone();
    for task in starting {
        // Loading a connection's state can take a while: a stop then
        // need not wait for it (nothing is open yet).
        tokio::select! {
            done = task => started.push(done.context("a connection's start-up task failed")?),
            _ = stop.wait_for(|stopping| *stopping) => return Ok(()),
        }
    }
    if args.once {
        return once(started, total, stop_rx).await;
    }

    // A connection misconfigured stops the service at once, every such
    // error listed; one that cannot start for another reason (the broker
    // away) is retried by its supervisor.
    let misconfigured: Vec<String> = started
        .iter()
        .filter_map(|(c, r)| match r {
            Err(e @ RunError::Config(_)) => Some(format!("  {}: {}", c.name, e.chain())),
            _ => None,
        })
        .collect();
    if !misconfigured.is_empty() {
        eprintln!("{}", misconfigured.join("\n"));
        bail!(
            "{} of {total} connections are misconfigured",
            misconfigured.len()
        );
    }
    let mut tasks = Vec::new();
    for (connection, result) in started {
        let first = match result {
            Ok(runner) => Some(runner),
            Err(e) => {
                tracing::error!(connection = %connection.name, error = %e.chain(), "the connection could not start; retrying");
                None
            }
        };
        tasks.push(tokio::spawn(supervise(
            connection,
            first,
            Arc::clone(&shared),
            stop_rx.clone(),
        )));
    }
    let _ = stop.wait_for(|stopping| *stopping).await;
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let all = async {
        for task in tasks {
            let _ = task.await;
        }
    };
    if tokio::time::timeout(grace, all).await.is_err() {
        tracing::warn!(
            grace_s = grace.as_secs(),
            "connections still stopping after shutdown_grace_secs; exiting: a transaction left \
             open is aborted by the next start"
        );
    }
    Ok(())
}

/// What every connection of the process shares.
struct Shared {
    kafka: KafkaConfig,
    pseudonymiser: Arc<Pseudonymiser>,
    sealer: Arc<Sealer>,
    metrics: Arc<Metrics>,
}

impl Shared {
    async fn start(&self, connection: ConnectionConfig) -> Result<Runner, RunError> {
        Runner::start_sealed(
            connection,
            &self.kafka,
            Arc::clone(&self.pseudonymiser),
            Arc::clone(&self.sealer),
        )
        .await
        .map(|r| r.with_metrics(Arc::clone(&self.metrics)))
    }
}

/// `--once`: every connection that started polls once, each in its own
/// task; the summary and the exit status cover them all.
async fn once(
    started: Vec<(ConnectionConfig, Result<Runner, RunError>)>,
    total: usize,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut failures: Vec<(String, RunError)> = Vec::new();
    let mut tasks = Vec::new();
    for (connection, result) in started {
        match result {
            Ok(mut runner) => {
                let mut stop = stop.clone();
                tasks.push(tokio::spawn(async move {
                    let started = Instant::now();
                    let polled = runner.poll_or_stop(&mut stop).await;
                    (runner, polled, started.elapsed().as_secs_f64())
                }));
            }
            Err(e) => failures.push((connection.name, e)),
        }
    }
    let mut stopped = false;
    for task in tasks {
        let (runner, polled, seconds) = task.await.context("a connection's task failed")?;
        let name = runner.name().to_owned();
        print_stats(&name, runner.stats(), seconds);
        match polled {
            Polled::Done(Ok(())) => {}
            Polled::Done(Err(e)) => failures.push((name, e)),
            Polled::Stopped => stopped = true,
        }
    }
    if stopped {
        tracing::info!("stopped before every poll ended; what was committed stays");
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
    Err(PartialFailure {
        failed: failures.len(),
        total,
    }
    .into())
}

/// Restarts after this many failures in a row make a connection
/// unhealthy in the log.
const UNHEALTHY_AFTER: u32 = 3;
/// A run this long resets the count of failures in a row.
const HEALTHY_RUN: Duration = Duration::from_secs(600);
/// Restart backoff: from 1 s, doubling, at most 5 minutes, full jitter.
const RESTART_BASE: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(300);

/// Run a connection until the stop, starting it again with backoff
/// whenever it fails: its state is restored from Kafka at each start.
async fn supervise(
    connection: ConnectionConfig,
    mut first: Option<Runner>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let name = connection.name.clone();
    let up = shared.metrics.up.with_label_values(&[&name]);
    let restarts = shared.metrics.restarts.with_label_values(&[&name]);
    // A connection that could not start waits before its first retry.
    let mut failures = u32::from(first.is_none());
    if failures > 0 {
        tokio::select! {
            _ = tokio::time::sleep(restart_backoff(failures)) => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
    }
    loop {
        let runner = match first.take() {
            Some(runner) => Ok(runner),
            None => shared.start(connection.clone()).await,
        };
        let began = Instant::now();
        let failed = match runner {
            Ok(runner) => {
                up.set(1);
                match runner.run(stop.clone()).await {
                    Ok(stats) => {
                        tracing::info!(connection = %name, polls = stats.polls, events = ?stats.events, "stopped");
                        return;
                    }
                    Err(e) => e,
                }
            }
            Err(e) => e,
        };
        up.set(0);
        failures = if began.elapsed() >= HEALTHY_RUN {
            1
        } else {
            failures + 1
        };
        let wait = restart_backoff(failures);
        if failures >= UNHEALTHY_AFTER {
            tracing::error!(connection = %name, failures, error = %failed.chain(), "the connection is unhealthy: it keeps failing; restarting in {:.1} s", wait.as_secs_f64());
        } else {
            tracing::warn!(connection = %name, failures, error = %failed.chain(), "the connection failed; restarting in {:.1} s", wait.as_secs_f64());
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
        restarts.inc();
    }
}

/// Full jitter: a uniform wait in [0, min(max, base·2^(failures−1))].
fn restart_backoff(failures: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let cap = RESTART_BASE
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(RESTART_MAX);
    // A fresh random seed per call, from the standard library.
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let millis = cap.as_millis() as u64;
    Duration::from_millis(random % (millis + 1))
}

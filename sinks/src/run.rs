//! The sink's writing loop: whole revisions come from a reading thread
//! per table ([`crate::read`]); the loop stages them, writes them, then
//! records the offsets they cover.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use skolflode_kafka::eos::StageContext;
use skolflode_kafka::KafkaConfig;

use crate::assemble::{Assembler, BlockId};
use crate::checkpoint::Checkpoint;
use crate::config::OutputKind;
use crate::metrics::Metrics;
use crate::output::Output;
use crate::postgres::Postgres;
use crate::read::{self, Input, Report};
use crate::registers::{Integration, Registers};
use crate::table::Table;
use crate::{SinkConfig, SinkError};
use skolflode_producers::pseudonym::Pseudonymiser;

/// When the sink stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// When every partition has been read to its end and all that is
    /// whole is written.
    CaughtUp,
    /// When the stop flag is raised (SIGTERM).
    Stopped,
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub records: u64,
    pub bad_records: u64,
    pub revisions: u64,
    pub redelivered: u64,
    pub weekly_files: u64,
    pub yearly_files: u64,
    pub rows_written: u64,
    pub flushes: u64,
}

/// Reports in the channel from the reading threads: few, since a whole
/// revision may be large and the writing loop's budget (`flush_bytes`)
/// does not count them.
const IN_TRANSIT: usize = 2;

/// Run the sink (Parquet or PostgreSQL). Blocking: call it from a blocking
/// task.
pub fn run(
    kafka: &KafkaConfig,
    config: &SinkConfig,
    metrics: &Metrics,
    until: Until,
    stop: &AtomicBool,
) -> Result<Progress, SinkError> {
    config.build()?;
    let integration = if config.pupil_register.files.is_empty() {
        None
    } else {
        let key = config.pupil_register.pseudonym_key_file.as_deref();
        let pseudonymiser = Pseudonymiser::from_config(key)
            .map_err(|e| SinkError::Config(format!("the pseudonym key: {e}")))?;
        Some(Integration {
            files: config.pupil_register.files.clone(),
            pseudonymiser,
        })
    };
    let (mut output, done, mut checkpoint): (Box<dyn Output>, _, _) = match config.output {
        OutputKind::Parquet => {
            let (registers, done) =
                Registers::open(&config.out_dir, config.zstd_level, integration)?;
            let registers = registers.with_yearly_range_rows(config.yearly_range_rows);
            let checkpoint = Checkpoint::load(&config.out_dir)?;
            (Box::new(registers), done, checkpoint)
        }
        OutputKind::Postgres => {
            let url = std::env::var(&config.postgres.url_env).map_err(|_| {
                SinkError::Config(format!(
                    "{} is not set: it holds the PostgreSQL connection string",
                    config.postgres.url_env
                ))
            })?;
            let topics = Table::ALL
                .into_iter()
                .map(|table| (table, read::topic_of(config, table)))
                .collect();
            let (postgres, done, checkpoint) =
                Postgres::open(&url, &config.postgres, topics, integration)?;
            (Box::new(postgres), done, checkpoint)
        }
    };
    // Each table's reading thread knows the revisions of its own table.
    let mut known: BTreeMap<Table, HashMap<BlockId, i32>> = BTreeMap::new();
    for (id, revision) in done {
        known.entry(id.table).or_default().insert(id, revision);
    }
    let mut inputs = Vec::new();
    for table in Table::ALL {
        inputs.push(Input::open(kafka, config, table, &checkpoint)?);
    }
    let consumers: Vec<(String, Arc<BaseConsumer<StageContext>>)> = inputs
        .iter()
        .map(|i| (i.topic.clone(), Arc::clone(&i.consumer)))
        .collect();
    let topics: BTreeMap<Table, String> =
        inputs.iter().map(|i| (i.table, i.topic.clone())).collect();
    tracing::info!(
        output = ?output,
        topics = ?topics.values().collect::<Vec<_>>(),
        "sink started"
    );
    let (sender, reports) = sync_channel(IN_TRANSIT);
    let quit = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let mut readers = Vec::new();
        let mut spawned = Ok(());
        for input in inputs {
            let assembler = Assembler::new(known.remove(&input.table).unwrap_or_default());
            let (sender, quit) = (sender.clone(), &quit);
            let reader = std::thread::Builder::new()
                .name(format!("sink-read-{}", input.table.name()))
                .spawn_scoped(scope, move || {
                    read::read(input, assembler, &sender, metrics, quit)
                });
            match reader {
                Ok(r) => readers.push(r),
                Err(e) => {
                    spawned = Err(SinkError::Worker(e.to_string()));
                    break;
                }
            }
        }
        drop(sender);
        let written = spawned.and_then(|()| {
            write(
                &reports,
                &mut *output,
                &mut checkpoint,
                &topics,
                &consumers,
                config,
                metrics,
                until,
                stop,
            )
        });
        // A reading thread may wait on a full channel (also when the other
        // could not be started): empty it until every thread has seen the
        // flag and gone.
        quit.store(true, Ordering::Relaxed);
        while reports.recv().is_ok() {}
        for reader in readers {
            reader
                .join()
                .map_err(|_| SinkError::Worker("a reading thread panicked".into()))?;
        }
        written
    })
}

/// The writing loop: stage what the reading threads report whole, write
/// it when due, then record the positions reported after it.
#[allow(clippy::too_many_arguments)]
fn write(
    reports: &Receiver<Report>,
    output: &mut dyn Output,
    checkpoint: &mut Checkpoint,
    topics: &BTreeMap<Table, String>,
    consumers: &[(String, Arc<BaseConsumer<StageContext>>)],
    config: &SinkConfig,
    metrics: &Metrics,
    until: Until,
    stop: &AtomicBool,
) -> Result<Progress, SinkError> {
    let mut progress = Progress::default();
    // The latest position of each table's thread.
    let mut positions: BTreeMap<Table, read::Read> = BTreeMap::new();
    // Revisions staged since the last commit, and when the first was.
    let mut staged = 0usize;
    let mut first_staged: Option<Instant> = None;
    let flush_interval = Duration::from_millis(config.flush_interval_ms);
    let mut last_report = Instant::now();
    let started = Instant::now();
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        // Wait a little for the first report, then take those waiting
        // until enough is whole to write.
        let mut next = match reports.recv_timeout(Duration::from_millis(10)) {
            Ok(report) => Some(report),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(SinkError::Worker("the reading threads stopped".into()))
            }
        };
        while let Some(report) = next.take() {
            match report {
                Report::Completed(table, c) => {
                    let kind = if c.content.is_some() {
                        progress.revisions += 1;
                        "new"
                    } else {
                        progress.redelivered += 1;
                        "redelivered"
                    };
                    metrics
                        .revisions
                        .with_label_values(&[table.name(), kind])
                        .inc();
                    output.stage(c, &topics[&table])?;
                    staged += 1;
                    first_staged.get_or_insert_with(Instant::now);
                }
                Report::Read(read) => {
                    progress.records += read.records;
                    progress.bad_records += read.bad_records;
                    positions.insert(read.table, read);
                }
            }
            if output.staged_bytes() >= config.flush_bytes {
                // Enough is whole: write it before taking more.
                break;
            }
            next = reports.try_recv().ok();
        }
        let incomplete: usize = positions.values().map(|r| r.incomplete).sum();
        metrics.incomplete.set(incomplete as i64);
        let caught_up = Table::ALL
            .iter()
            .all(|t| positions.get(t).is_some_and(|r| r.caught_up));
        let settled = caught_up || stopping;
        // During a backlog the sink writes when its memory budget is
        // reached (each week once per commit); once caught up, at once; and
        // no revision waits longer than the interval.
        let due = output.staged_bytes() >= config.flush_bytes
            || (staged > 0
                && (settled || first_staged.is_some_and(|t| t.elapsed() >= flush_interval)))
            || (settled && output.behind());
        if due {
            let timer = metrics.flush_seconds.start_timer();
            staged = 0;
            first_staged = None;
            for (table, read) in &positions {
                let offsets = checkpoint.offsets.entry(topics[table].clone()).or_default();
                offsets.extend(&read.resume);
            }
            let applied = output.commit(checkpoint, settled)?;
            timer.observe_duration();
            for (topic, consumer) in consumers {
                read::commit_positions(consumer, topic, checkpoint);
            }
            progress.flushes += 1;
            tracing::debug!(
                weekly = applied.weekly_files,
                yearly = applied.yearly_files,
                rows = applied.rows,
                "flushed"
            );
            progress.weekly_files += applied.weekly_files as u64;
            progress.yearly_files += applied.yearly_files as u64;
            progress.rows_written += applied.rows as u64;
            metrics
                .rows
                .with_label_values(&["all"])
                .inc_by(applied.rows as u64);
            metrics
                .files
                .with_label_values(&["weekly"])
                .inc_by(applied.weekly_files as u64);
            metrics
                .files
                .with_label_values(&["yearly"])
                .inc_by(applied.yearly_files as u64);
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            tracing::info!(
                records = progress.records,
                revisions = progress.revisions,
                weekly_files = progress.weekly_files,
                yearly_files = progress.yearly_files,
                incomplete,
                elapsed_s = started.elapsed().as_secs(),
                "sink progress"
            );
        }
        if staged == 0
            && !(settled && output.behind())
            && (stopping || (until == Until::CaughtUp && caught_up))
        {
            if incomplete > 0 {
                tracing::warn!(
                    incomplete,
                    "stopping with revisions not yet whole: a restart reads them again"
                );
            }
            break;
        }
    }
    tracing::info!(
        ?progress,
        seconds = started.elapsed().as_secs_f64(),
        "sink stopped"
    );
    Ok(progress)
}

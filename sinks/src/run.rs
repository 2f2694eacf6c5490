//! The sink's loop: read both snapshot topics, assemble whole
//! revisions, write them, then record the offsets they cover.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError as ClientError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use skolflode_kafka::eos::StageContext;
use skolflode_kafka::KafkaConfig;
use skolflode_schemas::catalogue;

use crate::assemble::{Assembler, At, Decoder, Offered};
use crate::checkpoint::Checkpoint;
use crate::config::OutputKind;
use crate::metrics::Metrics;
use crate::output::Output;
use crate::postgres::Postgres;
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

/// The snapshot topic a table is read from.
pub fn topic_of(config: &SinkConfig, table: Table) -> String {
    config.topic(match table {
        Table::TeacherStudent => catalogue::SNAPSHOT_TEACHER_STUDENT,
        Table::Attendance => catalogue::SNAPSHOT_ATTENDANCE,
    })
}

/// One table's topic: its consumer, and per partition the next offset and
/// whether its end was reached.
struct Input {
    table: Table,
    topic: String,
    consumer: BaseConsumer<StageContext>,
    next: BTreeMap<i32, i64>,
    at_end: HashSet<i32>,
    /// Partitions assigned, fixed at open.
    partitions: usize,
}

impl Input {
    fn open(
        kafka: &KafkaConfig,
        config: &SinkConfig,
        table: Table,
        checkpoint: &Checkpoint,
    ) -> Result<Input, SinkError> {
        let topic = topic_of(config, table);
        let mut client = kafka.consumer(&config.application_id)?;
        client.set("enable.partition.eof", "true");
        // End-of-partition events are how the sink knows it has caught up,
        // not errors to log.
        let consumer: BaseConsumer<StageContext> = client.create_with_context(StageContext)?;
        let metadata = consumer
            .fetch_metadata(Some(&topic), kafka.request_timeout())
            .map_err(|e| SinkError::Unreachable {
                bootstrap: kafka.bootstrap_servers.clone(),
                seconds: kafka.request_timeout().as_secs(),
                cause: e
                    .rdkafka_error_code()
                    .map_or_else(|| e.to_string(), |c| c.to_string()),
            })?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Err(SinkError::Config(format!(
                "topic {topic} does not exist: the processor creates it (skolflode process)"
            )));
        }
        let mut assignment = TopicPartitionList::new();
        let mut next = BTreeMap::new();
        let count = partitions.len();
        for p in partitions {
            let offset = match checkpoint.get(&topic, p) {
                Some(o) => {
                    next.insert(p, o);
                    Offset::Offset(o)
                }
                None => Offset::Beginning,
            };
            assignment.add_partition_offset(&topic, p, offset)?;
        }
        consumer.assign(&assignment)?;
        Ok(Input {
            table,
            topic,
            consumer,
            next,
            at_end: HashSet::new(),
            partitions: count,
        })
    }

    fn caught_up(&self) -> bool {
        self.at_end.len() == self.partitions
    }
}

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
            let (postgres, done, checkpoint) =
                Postgres::open(&url, &config.postgres.schema, integration)?;
            (Box::new(postgres), done, checkpoint)
        }
    };
    let mut assembler = Assembler::new(done);
    let mut inputs = Vec::new();
    for table in Table::ALL {
        inputs.push(Input::open(kafka, config, table, &checkpoint)?);
    }
    let topics: BTreeMap<Table, String> =
        inputs.iter().map(|i| (i.table, i.topic.clone())).collect();
    tracing::info!(
        output = ?output,
        topics = ?topics.values().collect::<Vec<_>>(),
        "sink started"
    );
    let mut progress = Progress::default();
    let mut decoder = Decoder::default();
    // Revisions staged since the last commit, and when the first was.
    let mut staged = 0usize;
    let mut first_staged: Option<Instant> = None;
    let flush_interval = Duration::from_millis(config.flush_interval_ms);
    let mut last_report = Instant::now();
    let started = Instant::now();
    let mut idle = false;
    // Records by table (teacher_student, attendance) and outcome.
    let mut outcomes = [[0u64; 4]; 2];
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        let mut read_any = false;
        'inputs: for input in &mut inputs {
            for n in 0..4096 {
                // When the last round found nothing, wait a little for
                // input rather than spin.
                let wait = if idle && n == 0 {
                    Duration::from_millis(10)
                } else {
                    Duration::ZERO
                };
                let Some(message) = input.consumer.poll(wait) else {
                    break;
                };
                read_any = true;
                let message = match message {
                    Ok(m) => m,
                    Err(ClientError::PartitionEOF(p)) => {
                        input.at_end.insert(p);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(topic = %input.topic, error = %e, "reading");
                        continue;
                    }
                };
                let (partition, offset) = (message.partition(), message.offset());
                input.at_end.remove(&partition);
                input.next.insert(partition, offset + 1);
                progress.records += 1;
                let table = input.table;
                let read = decoder.read(table, message.payload());
                let outcome = match (read, decoder.header(table)) {
                    (Err(reason), _) => {
                        // No payload in the log: a broken record may hold anything.
                        tracing::warn!(topic = %input.topic, partition, offset, %reason, "snapshot record skipped");
                        progress.bad_records += 1;
                        BAD
                    }
                    (Ok(()), None) => BAD,
                    (Ok(()), Some(header)) => {
                        match assembler.offer(table, header, At { partition, offset }, &decoder) {
                            Offered::Held => HELD,
                            Offered::Stale => STALE,
                            Offered::Unusable(reason) => {
                                tracing::error!(topic = %input.topic, partition, offset, %reason, "a whole revision could not be used");
                                progress.bad_records += 1;
                                BAD
                            }
                            Offered::Completed(c) => {
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
                                output.stage(c, &input.topic)?;
                                staged += 1;
                                first_staged.get_or_insert_with(Instant::now);
                                COMPLETED
                            }
                        }
                    }
                };
                let t = usize::from(table == Table::Attendance);
                outcomes[t][outcome] += 1;
                if output.staged_bytes() >= config.flush_bytes {
                    // Enough is whole: write it before reading on.
                    break 'inputs;
                }
            }
        }
        // Counted per record, reported per round: a labelled counter's
        // lookup costs more than reading a record.
        for (table, counts) in Table::ALL.into_iter().zip(&mut outcomes) {
            for (name, n) in OUTCOMES.iter().zip(counts.iter_mut()) {
                if *n > 0 {
                    metrics
                        .records
                        .with_label_values(&[table.name(), name])
                        .inc_by(*n);
                    *n = 0;
                }
            }
        }
        metrics.incomplete.set(assembler.incomplete() as i64);
        let caught_up = inputs.iter().all(Input::caught_up);
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
            for input in &inputs {
                let offsets = checkpoint.offsets.entry(input.topic.clone()).or_default();
                for (&p, &next) in &input.next {
                    let from = assembler
                        .needs_from(input.table, p)
                        .map_or(next, |n| n.min(next));
                    offsets.insert(p, from);
                }
            }
            let applied = output.commit(&checkpoint, settled)?;
            timer.observe_duration();
            commit_positions(&inputs, &checkpoint);
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
                incomplete = assembler.incomplete(),
                elapsed_s = started.elapsed().as_secs(),
                "sink progress"
            );
        }
        if staged == 0
            && !(settled && output.behind())
            && (stopping || (until == Until::CaughtUp && caught_up))
        {
            if assembler.incomplete() > 0 {
                tracing::warn!(
                    incomplete = assembler.incomplete(),
                    "stopping with revisions not yet whole: a restart reads them again"
                );
            }
            break;
        }
        idle = !read_any;
    }
    tracing::info!(
        ?progress,
        seconds = started.elapsed().as_secs_f64(),
        "sink stopped"
    );
    Ok(progress)
}

/// Outcomes of a snapshot record, as the `records` metric labels them.
const OUTCOMES: [&str; 4] = ["held", "completed", "stale", "bad"];
const HELD: usize = 0;
const COMPLETED: usize = 1;
const STALE: usize = 2;
const BAD: usize = 3;

/// Report the checkpoint to the consumer group, for lag monitoring. The
/// checkpoint file is what the sink resumes from; this may fail harmlessly.
fn commit_positions(inputs: &[Input], checkpoint: &Checkpoint) {
    for input in inputs {
        let mut list = TopicPartitionList::new();
        if let Some(offsets) = checkpoint.offsets.get(&input.topic) {
            for (&p, &o) in offsets {
                let _ = list.add_partition_offset(&input.topic, p, Offset::Offset(o));
            }
        }
        if list.count() > 0 {
            if let Err(e) = input.consumer.commit(&list, CommitMode::Async) {
                tracing::debug!(error = %e, "reporting positions to the consumer group");
            }
        }
    }
}

//! The processor on Kafka: [`Stage`] (consume, produce and commit offsets in
//! one transaction) around the pure [`Operator`].
//!
//! Heartbeats are the clock. A producer commits a connection's heartbeat
//! after the change events of that poll, so once the processor has read a
//! heartbeat, every change of that connection recorded by the heartbeat's
//! server time is at or below the current end of each change partition.
//! The processor notes those ends, reads on until its position has reached
//! every one of them, and only then advances the connection's clock. That
//! barrier makes the closing of weeks independent of how fast each input
//! partition happened to be read.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use rdkafka::error::KafkaError as ClientError;
use rdkafka::message::Message;
use skolflode_kafka::{
    classify, partition_for, read_partitions_to_end, Admin, Delivery, FanOut, FanOutHandle,
    KafkaConfig, KafkaError, Offsets, Record, Stage, Tagged, TopicSpec, TxnErrorClass,
};
use skolflode_schemas::catalogue::{self, Cleanup, Topic, HISTORY_OF, PROCESS_PARTITIONS, TOPICS};
use skolflode_schemas::processed::ProcessorState;
use skolflode_schemas::records::{DeadLetter, Heartbeat};
use skolflode_schemas::wire::{self, Decoder};
use skolflode_schemas::{Bytes, EntityKey, SchemaError, TimestampMillis};

use super::config::{ConfigError, ProcessConfig};
use super::input::{decoder, Decoders};
use super::metrics::Metrics;
use super::model::Kind;
use super::operator::{Applied, Emit, Operator, Output, RestoreError, STATE_FORMAT};
use super::store::{Disk, StoreError};

/// Why the processor stopped.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("restoring the state")]
    Restore(#[from] RestoreError),
    #[error("encoding the state")]
    Encode(#[from] postcard::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Counts of one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub records: u64,
    pub kept: u64,
    pub repeats: u64,
    pub dead_letters: u64,
    pub heartbeats: u64,
    pub snapshots: u64,
    pub restored: u64,
    pub aborts: u64,
}

impl Progress {
    fn add(&mut self, other: &Progress) {
        self.records += other.records;
        self.kept += other.kept;
        self.repeats += other.repeats;
        self.dead_letters += other.dead_letters;
        self.heartbeats += other.heartbeats;
        self.snapshots += other.snapshots;
        self.restored += other.restored;
        self.aborts += other.aborts;
    }
}

/// The topics a run writes: the catalogue's, or a replay's copies of them
/// (`<topic>.<suffix>`), so that a replay can be compared with the
/// original byte for byte.
#[derive(Clone, Debug, Default)]
pub struct Outputs {
    pub suffix: Option<String>,
}

impl Outputs {
    /// The changelog of an application's state store: its own, so that
    /// runs under other application ids (replays) do not share state.
    pub fn changelog(&self, application_id: &str) -> String {
        format!("{}.{application_id}", catalogue::PROCESS_CHANGELOG)
    }

    pub fn name(&self, topic: &str) -> String {
        match &self.suffix {
            None => topic.to_owned(),
            Some(s) => format!("{topic}.{s}"),
        }
    }

    /// Every topic this run writes, with its catalogue entry.
    fn specs(&self) -> Vec<TopicSpec> {
        let written: Vec<&str> = HISTORY_OF
            .iter()
            .map(|(_, h)| *h)
            .chain([
                catalogue::SNAPSHOT_TEACHER_STUDENT,
                catalogue::SNAPSHOT_ATTENDANCE,
                catalogue::DEAD_LETTERS,
                catalogue::QUALITY_FINDINGS,
                catalogue::QUALITY_COVERAGE,
            ])
            .collect();
        TOPICS
            .iter()
            .filter(|t| written.contains(&t.name))
            .map(|t| spec(t, self.name(t.name)))
            .collect()
    }
}

/// How to create a catalogued topic under `name`.
fn spec(topic: &Topic, name: String) -> TopicSpec {
    let mut spec = TopicSpec::new(name, topic.partitions);
    for (k, v) in topic.configs() {
        spec = spec.with_config(k, v);
    }
    if topic.cleanup == Cleanup::Compact {
        spec = spec.with_config("min.compaction.lag.ms", "60000");
    }
    spec
}

/// Create the input and output topics that do not exist yet.
pub async fn ensure_topics(
    kafka: &KafkaConfig,
    config: &ProcessConfig,
    outputs: &Outputs,
) -> Result<(), KafkaError> {
    let admin = Admin::new(kafka, Duration::from_secs(30))?;
    admin.probe().await?;
    let mut specs = outputs.specs();
    if let Some(t) = catalogue::topic(catalogue::PROCESS_CHANGELOG) {
        specs.push(spec(t, outputs.changelog(&config.application_id)));
    }
    for t in TOPICS
        .iter()
        .filter(|t| HISTORY_OF.iter().any(|(c, _)| *c == t.name) || t.name == catalogue::HEARTBEATS)
    {
        specs.push(spec(t, t.name.to_owned()));
    }
    admin.ensure_topics(&specs).await
}

/// When to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Until {
    /// When asked to (SIGTERM).
    Stopped,
    /// When every input has been read to its end and every heartbeat read
    /// has been applied (replays, tests, benchmarks).
    CaughtUp,
}

/// The entity kind of a change topic. `HISTORY_OF` lists the change
/// topics in the order of `Kind::ALL` (a test holds them to it).
fn kind_of(topic: &str) -> Option<Kind> {
    HISTORY_OF
        .iter()
        .position(|(c, _)| *c == topic)
        .and_then(|i| Kind::ALL.get(i).copied())
}

fn change_topic(kind: Kind) -> &'static str {
    HISTORY_OF.get(kind.index()).map_or("", |(c, _)| *c)
}

fn history_of(kind: Kind) -> &'static str {
    HISTORY_OF.get(kind.index()).map_or("", |(_, h)| *h)
}

/// What a poll of the task's queue gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Polled {
    Nothing,
    Record,
    /// New positions: a barrier may be passed.
    Positions,
}

/// What one input record asks for.
enum Step {
    Heartbeat(Heartbeat),
    Change(Kind, EntityKey, super::input::Incoming),
    Bad {
        topic: &'static str,
        connection: String,
        entity_id: Option<String>,
        reason: String,
    },
    Unknown,
}

fn schema_id(subject: &str) -> u32 {
    catalogue::local_schema_id(subject).unwrap_or(0)
}

/// The end offset of each input partition at an instant.
type Ends = BTreeMap<(String, i32), i64>;

/// Heartbeats waiting for the barrier, and the input ends that will let
/// the first `covers` of them through.
#[derive(Debug, Default)]
struct Barrier {
    /// Connection, its vendor's clock, and where the heartbeat was read.
    waiting: VecDeque<(String, i64, i32, i64)>,
    ends: Option<(Ends, usize)>,
}

/// Everything one run holds.
struct Process<'a> {
    config: &'a ProcessConfig,
    kafka: &'a KafkaConfig,
    outputs: &'a Outputs,
    stage: Stage,
    /// The instance's shared reader, this task's records from it, and the
    /// join they belong to.
    reader: FanOutHandle,
    deliveries: Receiver<Tagged>,
    epoch: u64,
    /// How far this task has read each input partition.
    positions: Offsets,
    operator: Operator,
    decoders: Decoders,
    heartbeat: Decoder<Heartbeat>,
    barrier: Barrier,
    consumed: usize,
    aborts_in_a_row: u32,
    progress: Progress,
    /// The partition this task owns, of the heartbeats and of every output.
    task: i32,
    metrics: Arc<Metrics>,
    label: String,
}

/// Sends the operator's outputs, keyed by connection, to the task's
/// partition of each output topic as they are made; the first failure is
/// kept (the transaction will abort) and the rest are dropped.
struct Emitter<'s> {
    stage: &'s mut Stage,
    outputs: &'s Outputs,
    task: i32,
    metrics: &'s Metrics,
    label: &'s str,
    snapshots: &'s mut u64,
    failed: Option<ClientError>,
}

impl Emit for Emitter<'_> {
    fn emit(&mut self, output: Output) {
        if self.failed.is_none() {
            if let Err(e) = self.send(output) {
                self.failed = Some(e);
            }
        }
    }
}

impl Emitter<'_> {
    fn send(&mut self, output: Output) -> Result<(), ClientError> {
        match output {
            Output::History(kind, h) => {
                let topic = self.outputs.name(history_of(kind));
                let key = wire::encode(schema_id("StringKey"), &h.connection);
                let value = wire::encode(schema_id("HistoryVersion"), &h);
                self.stage.send(&topic, Some(self.task), &key, &value)
            }
            Output::Snapshot(s) => {
                *self.snapshots += 1;
                let kind = if s.revision == 1 { "first" } else { "revision" };
                self.metrics
                    .snapshots
                    .with_label_values(&[self.label, kind])
                    .inc();
                let key = wire::encode(schema_id("StringKey"), &s.connection);
                let ts = self.outputs.name(catalogue::SNAPSHOT_TEACHER_STUDENT);
                let att = self.outputs.name(catalogue::SNAPSHOT_ATTENDANCE);
                for row in &s.teacher_student {
                    let value = wire::encode(schema_id("TeacherStudentRow"), row);
                    self.stage.send(&ts, Some(self.task), &key, &value)?;
                }
                for row in &s.attendance {
                    let value = wire::encode(schema_id("AttendanceRow"), row);
                    self.stage.send(&att, Some(self.task), &key, &value)?;
                }
                let coverage = self.outputs.name(catalogue::QUALITY_COVERAGE);
                for row in &s.coverage {
                    let value = wire::encode(schema_id("UnitWeekCoverage"), row);
                    self.stage.send(&coverage, Some(self.task), &key, &value)?;
                }
                Ok(())
            }
            Output::Finding(f) => {
                let key = wire::encode(schema_id("StringKey"), &f.connection);
                let value = wire::encode(schema_id("QualityFinding"), &f);
                let topic = self.outputs.name(catalogue::QUALITY_FINDINGS);
                self.stage.send(&topic, None, &key, &value)
            }
        }
    }
}

/// Whether an error means another instance took the task over.
fn fenced(e: &ProcessError) -> bool {
    let code = match e {
        ProcessError::Client(c) => c.rdkafka_error_code(),
        ProcessError::Kafka(KafkaError::Client(c)) => c.rdkafka_error_code(),
        _ => None,
    };
    matches!(
        code,
        Some(
            RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
        )
    )
}

/// Notes the group's assignment of heartbeat partitions on each rebalance.
#[derive(Default)]
struct Membership {
    assigned: Mutex<Option<Vec<i32>>>,
}

impl ClientContext for Membership {}

impl ConsumerContext for Membership {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = match rebalance {
            Rebalance::Assign(list) => list.elements().iter().map(|e| e.partition()).collect(),
            Rebalance::Revoke(_) | Rebalance::Error(_) => Vec::new(),
        };
        if let Ok(mut assigned) = self.assigned.lock() {
            *assigned = Some(partitions);
        }
    }
}

/// Run the processor until `until`, or until `stop` is set: join the
/// consumer group `application_id` on the heartbeats topic and run one task
/// per heartbeat partition assigned to this instance, on a thread each. A
/// rebalance stops the tasks of the partitions taken away and starts those
/// of the partitions given; a task started elsewhere fences this one's.
pub fn run(
    kafka: &KafkaConfig,
    config: &ProcessConfig,
    outputs: &Outputs,
    metrics: &Arc<Metrics>,
    until: Until,
    stop: &AtomicBool,
) -> Result<Progress, ProcessError> {
    config.build()?;
    let membership: BaseConsumer<Membership> = kafka
        .consumer(&config.application_id)?
        .create_with_context(Membership::default())?;
    // Tasks are the heartbeat partitions that exist (the catalogue's count
    // unless the topic was created otherwise).
    let tasks = membership
        .fetch_metadata(Some(catalogue::HEARTBEATS), kafka.request_timeout())?
        .topics()
        .first()
        .map_or(PROCESS_PARTITIONS, |t| t.partitions().len() as i32)
        .max(1);
    if tasks != PROCESS_PARTITIONS {
        tracing::warn!(
            tasks,
            expected = PROCESS_PARTITIONS,
            "the heartbeats topic does not have the catalogue's partition count: outputs are not co-partitioned with it"
        );
    }
    membership.subscribe(&[catalogue::HEARTBEATS])?;
    let reader = FanOut::start(
        kafka,
        &format!("{}-reader", config.application_id),
        RECORDS_PER_TASK_QUEUE,
        router(config, tasks)?,
    )?;
    let mut running: BTreeMap<i32, Running> = BTreeMap::new();
    // Tasks that ended: caught up, or taken over by another instance.
    let mut done: BTreeSet<i32> = BTreeSet::new();
    let mut assigned: Option<Vec<i32>> = None;
    let mut total = Progress::default();
    let result = loop {
        // Serves the group (rebalances); the heartbeats themselves are read
        // by the tasks.
        if let Some(Err(e)) = membership.poll(Duration::from_millis(100)) {
            tracing::warn!(error = %e, "consumer group");
        }
        if let Some(now) = membership
            .context()
            .assigned
            .lock()
            .ok()
            .and_then(|mut a| a.take())
        {
            tracing::info!(partitions = ?now, "heartbeat partitions assigned to this instance");
            let mut gone: Vec<i32> = running
                .keys()
                .copied()
                .filter(|p| !now.contains(p))
                .collect();
            gone.extend(done.iter().copied().filter(|p| !now.contains(p)));
            for p in gone {
                done.remove(&p);
                if let Some((flag, handle)) = running.remove(&p) {
                    flag.store(true, Ordering::Relaxed);
                    if let Ok(Ok(progress)) = handle.join() {
                        total.add(&progress);
                    }
                }
            }
            for p in now.iter().copied() {
                if running.contains_key(&p) || done.contains(&p) {
                    continue;
                }
                let flag = Arc::new(AtomicBool::new(false));
                let (kafka, config, outputs, task_flag, metrics, handle) = (
                    kafka.clone(),
                    config.clone(),
                    outputs.clone(),
                    Arc::clone(&flag),
                    Arc::clone(metrics),
                    reader.handle(),
                );
                let handle = std::thread::Builder::new()
                    .name(format!("process-{p}"))
                    .spawn(move || {
                        let task = Task {
                            number: p,
                            reader: handle,
                        };
                        let result =
                            run_task(&kafka, &config, &outputs, metrics, &task, until, &task_flag);
                        task.reader.leave(p);
                        result
                    })
                    .map_err(|e| {
                        ProcessError::Kafka(KafkaError::InvalidConfig(format!(
                            "cannot start a task thread: {e}"
                        )))
                    })?;
                running.insert(p, (flag, handle));
            }
            assigned = Some(now);
        }
        let finished: Vec<i32> = running
            .iter()
            .filter(|(_, (_, h))| h.is_finished())
            .map(|(p, _)| *p)
            .collect();
        for p in finished {
            let Some((_, handle)) = running.remove(&p) else {
                continue;
            };
            match handle.join() {
                Ok(Ok(progress)) => {
                    total.add(&progress);
                    done.insert(p);
                }
                Ok(Err(e)) if fenced(&e) => {
                    tracing::info!(task = p, "task taken over by another instance");
                    done.insert(p);
                }
                Ok(Err(e)) => {
                    stop_all(&mut running);
                    return Err(e);
                }
                Err(_) => {
                    stop_all(&mut running);
                    return Err(ProcessError::Kafka(KafkaError::InvalidConfig(format!(
                        "task {p} panicked"
                    ))));
                }
            }
        }
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        if reader.is_finished() {
            stop_all(&mut running);
            return reader
                .stop()
                .map_err(ProcessError::from)
                .and(Err(ProcessError::Kafka(KafkaError::InvalidConfig(
                    "the shared reader stopped".to_owned(),
                ))));
        }
        if until == Until::CaughtUp
            && assigned
                .as_ref()
                .is_some_and(|a| a.iter().all(|p| done.contains(p)))
        {
            break Ok(());
        }
    };
    for (_, (flag, handle)) in std::mem::take(&mut running) {
        flag.store(true, Ordering::Relaxed);
        if let Ok(Ok(progress)) = handle.join() {
            total.add(&progress);
        }
    }
    reader.stop()?;
    result.map(|()| total)
}

/// Aborted transactions in a row after which a task gives up.
const MAX_ABORTS_IN_A_ROW: u32 = 5;

/// A queue no reader feeds: a task's before it joins the shared reader.
fn detached() -> Receiver<Tagged> {
    std::sync::mpsc::sync_channel(0).1
}

/// Records a task's queue holds before the shared reader waits for it.
const RECORDS_PER_TASK_QUEUE: usize = 8192;

/// Which task an input record is for: a heartbeat, the task of its
/// partition; a change event, the task of its connection (read from the
/// key alone); a record whose key cannot be read, one task chosen by its
/// bytes, which dead-letters it.
fn router(config: &ProcessConfig, tasks: i32) -> Result<skolflode_kafka::Route, ProcessError> {
    let settings = config.build()?;
    let keys: Decoder<EntityKey> = decoder("EntityKey")?;
    let mut owners: HashMap<String, Option<i32>> = HashMap::new();
    Ok(Box::new(move |topic, partition, key| {
        if topic == catalogue::HEARTBEATS {
            return Some(partition);
        }
        let Some(key) = key else {
            return Some(partition.rem_euclid(tasks));
        };
        let Ok(k) = keys.decode(key) else {
            return Some(partition_for(key, tasks));
        };
        if let Some(owner) = owners.get(&k.connection) {
            return *owner;
        }
        let owner = (settings.connections.is_empty()
            || settings.connections.contains(&k.connection))
        .then(|| task_of(&k.connection, tasks));
        owners.insert(k.connection, owner);
        owner
    }))
}

type Running = (
    Arc<AtomicBool>,
    std::thread::JoinHandle<Result<Progress, ProcessError>>,
);

/// Stop every task and wait for it.
fn stop_all(running: &mut BTreeMap<i32, Running>) {
    for (_, (flag, handle)) in std::mem::take(running) {
        flag.store(true, Ordering::Relaxed);
        let _ = handle.join();
    }
}

/// A task: heartbeat partition `number`, and the instance's shared reader
/// it takes its records from.
#[derive(Clone, Debug)]
struct Task {
    number: i32,
    reader: FanOutHandle,
}

/// One task: the connections whose heartbeats land in partition `task`.
/// It is given their change events and its heartbeat partition by the
/// shared reader, and writes partition `task` of every output.
fn run_task(
    kafka: &KafkaConfig,
    config: &ProcessConfig,
    outputs: &Outputs,
    metrics: Arc<Metrics>,
    task: &Task,
    until: Until,
    stop: &AtomicBool,
) -> Result<Progress, ProcessError> {
    let Task {
        number: task,
        reader,
    } = task;
    let task = *task;
    let settings = config.build()?;
    let mut inputs: Vec<(&str, Option<i32>)> = HISTORY_OF.iter().map(|(c, _)| (*c, None)).collect();
    inputs.push((catalogue::HEARTBEATS, Some(task)));
    let id = format!("{}-{task}", config.application_id);
    let stage = Stage::start(kafka, &id, &id, &inputs)?;
    let heartbeat = decoder("Heartbeat")?;
    let mut process = Process {
        config,
        kafka,
        outputs,
        stage,
        reader: reader.clone(),
        deliveries: detached(),
        epoch: 0,
        positions: Offsets::new(),
        operator: Operator::new(settings),
        decoders: Decoders::new()?,
        heartbeat,
        barrier: Barrier::default(),
        consumed: 0,
        aborts_in_a_row: 0,
        progress: Progress::default(),
        task,
        metrics,
        label: task.to_string(),
    };
    // Records are taken only once the state is back, so that the shared
    // reader never waits on a task that is restoring.
    process.restore()?;
    process.rejoin()?;
    process.run(until, stop)?;
    Ok(process.progress)
}

/// The heartbeat partition (and so the task) of a connection, of `tasks`.
pub fn task_of(connection: &str, tasks: i32) -> i32 {
    let key = wire::encode(schema_id("StringKey"), &connection.to_owned());
    partition_for(&key, tasks)
}

impl Process<'_> {
    fn state_metrics(&self) {
        let label = [self.label.as_str()];
        self.metrics
            .state_entities
            .with_label_values(&label)
            .set(self.operator.entities() as i64);
        self.metrics
            .state_memory_bytes
            .with_label_values(&label)
            .set(self.operator.memory_bytes() as i64);
        self.metrics
            .state_disk_bytes
            .with_label_values(&label)
            .set(self.operator.disk_bytes() as i64);
        for ((rule, vendor), open) in self.operator.open_findings() {
            let severity = skolflode_schemas::rules::rule(rule).map_or("", |r| r.severity.as_str());
            self.metrics
                .open_findings
                .with_label_values(&[self.label.as_str(), rule, severity, &vendor])
                .set(open);
        }
    }

    /// A fresh operator, with a new disk store unless everything is to
    /// stay in memory.
    fn fresh_operator(&self) -> Result<Operator, ProcessError> {
        let settings = self.config.build()?;
        let budget = self.config.memory_per_task_mib;
        if budget == 0 {
            return Ok(Operator::new(settings));
        }
        let name = format!("{}-{}", self.config.application_id, self.task);
        // A quarter of the budget, and at least 32 MiB, for the disk
        // store's block cache: with less, looking up each new entity read
        // its tables' filters from the file again.
        let cache = ((budget as u64) << 18).max(32 << 20);
        let disk = Disk::create(&self.config.state_dir(), &name, cache)?;
        Ok(Operator::with_disk(settings, disk, budget << 20))
    }

    /// Read the changelog into a fresh operator, entry by entry (a key's
    /// later entry replaces its earlier one).
    fn restore(&mut self) -> Result<(), ProcessError> {
        let started = Instant::now();
        // The old disk store (and its directory) goes before the new one.
        self.operator = Operator::default();
        let mut operator = self.fresh_operator()?;
        let values: Decoder<ProcessorState> = decoder("ProcessorState")?;
        let keys: Decoder<String> = decoder("StringKey")?;
        let mut entries = 0u64;
        let client = self
            .kafka
            .consumer(&format!("{}-restore", self.config.application_id))?;
        let topic = self.outputs.changelog(&self.config.application_id);
        let task = self.task;
        read_partitions_to_end::<ProcessError>(
            client,
            &topic,
            |p| p.partition == task,
            Duration::from_secs(600),
            |m| {
                let (Some(key), Some(value)) = (m.key(), m.payload()) else {
                    return Ok(());
                };
                let key = keys
                    .decode(key)
                    .map_err(|e| RestoreError::Key(e.to_string()))?;
                let value = values
                    .decode(value)
                    .map_err(|e| RestoreError::Key(e.to_string()))?;
                operator.restore(&key, &value.format, &value.body.0)?;
                entries += 1;
                Ok(())
            },
        )?;
        self.progress.restored = entries;
        operator.restored()?;
        self.operator = operator;
        self.metrics
            .restore_milliseconds
            .with_label_values(&[&self.label])
            .set(started.elapsed().as_millis() as i64);
        self.state_metrics();
        tracing::info!(
            task = self.task,
            entries,
            entities = self.operator.entities(),
            seconds = started.elapsed().as_secs_f64(),
            "state restored from the changelog"
        );
        Ok(())
    }

    fn run(&mut self, until: Until, stop: &AtomicBool) -> Result<(), ProcessError> {
        let mut last_commit = Instant::now();
        let mut idle_polls = 0u32;
        let mut last_report = Instant::now();
        let mut last_caught_up_check = Instant::now();
        loop {
            if stop.load(Ordering::Relaxed) {
                self.commit_or_reset()?;
                return Ok(());
            }
            let polled = match self.poll_one() {
                Ok(p) => p,
                Err(e) => {
                    self.recover(e)?;
                    continue;
                }
            };
            idle_polls = if polled == Polled::Nothing {
                idle_polls + 1
            } else {
                0
            };
            if polled != Polled::Record {
                if let Err(e) = self.pass_barrier() {
                    self.recover(e)?;
                    continue;
                }
            }
            let polled = polled != Polled::Nothing;
            let due = self.consumed >= self.config.commit_every_records
                || (self.consumed > 0 || self.stage.sent() > 0)
                    && (last_commit.elapsed() >= self.config.commit_interval() || !polled);
            if due {
                self.commit_or_reset()?;
                last_commit = Instant::now();
            }
            if last_report.elapsed() >= Duration::from_secs(10) {
                last_report = Instant::now();
                tracing::info!(
                    task = self.task,
                    records = self.progress.records,
                    kept = self.progress.kept,
                    repeats = self.progress.repeats,
                    snapshots = self.progress.snapshots,
                    entities = self.operator.entities(),
                    "processing"
                );
            }
            if until == Until::CaughtUp
                && idle_polls >= 3
                && last_caught_up_check.elapsed() >= Duration::from_millis(500)
            {
                last_caught_up_check = Instant::now();
                if self.caught_up()? {
                    self.commit_or_reset()?;
                    return Ok(());
                }
            }
        }
    }

    /// Every input at its end, no heartbeat waiting.
    fn caught_up(&mut self) -> Result<bool, ProcessError> {
        if !self.barrier.waiting.is_empty() {
            return Ok(false);
        }
        let ends = self.stage.ends("")?;
        let lag: i64 = ends
            .iter()
            .map(|(tp, end)| (end - self.positions.get(tp).copied().unwrap_or(0)).max(0))
            .sum();
        self.metrics.lag.with_label_values(&[&self.label]).set(lag);
        self.reached(&ends)
    }

    fn reached(&self, ends: &Offsets) -> Result<bool, ProcessError> {
        let positions = &self.positions;
        let behind = ends
            .iter()
            .find(|(tp, end)| **end > 0 && positions.get(*tp).is_none_or(|p| *p < **end));
        if let Some(((topic, partition), end)) = behind {
            tracing::debug!(topic, partition, end, position = ?positions.get(&(topic.clone(), *partition)), "behind");
        }
        Ok(behind.is_none())
    }

    /// Advance the clocks of the heartbeats whose barrier is passed; note
    /// the ends for the next ones.
    fn pass_barrier(&mut self) -> Result<(), ProcessError> {
        if let Some((ends, covers)) = &self.barrier.ends {
            if !self.reached(ends)? {
                return Ok(());
            }
            let covers = *covers;
            self.barrier.ends = None;
            for _ in 0..covers {
                // Applied one by one and taken off the queue only then, so
                // that a commit in between holds back the rest.
                let Some((connection, at, _, _)) = self.barrier.waiting.front().cloned() else {
                    break;
                };
                let mut emitter = Emitter {
                    stage: &mut self.stage,
                    outputs: self.outputs,
                    task: self.task,
                    metrics: &self.metrics,
                    label: &self.label,
                    snapshots: &mut self.progress.snapshots,
                    failed: None,
                };
                self.operator.advance(&connection, at, &mut emitter);
                if let Some(e) = emitter.failed {
                    return Err(e.into());
                }
                self.barrier.waiting.pop_front();
                self.metrics
                    .watermark_seconds
                    .with_label_values(&[&self.label])
                    .set(at / 1000);
                // Many clock steps at once (a backlog read ahead) must not
                // make one transaction outlive the broker's timeout.
                if self.stage.sent() >= self.config.commit_every_records
                    || self.stage.age() >= self.config.commit_interval()
                {
                    let aborts = self.progress.aborts;
                    self.commit_or_reset()?;
                    if self.progress.aborts != aborts {
                        return Ok(());
                    }
                }
            }
        }
        if self.barrier.ends.is_none() && !self.barrier.waiting.is_empty() {
            let ends = self.stage.ends(catalogue::HEARTBEATS)?;
            self.barrier.ends = Some((ends, self.barrier.waiting.len()));
        }
        Ok(())
    }

    /// Take one delivery from the shared reader and act on it.
    fn poll_one(&mut self) -> Result<Polled, ProcessError> {
        let tagged = match self.deliveries.recv_timeout(Duration::from_millis(50)) {
            Ok(t) => t,
            Err(RecvTimeoutError::Timeout) => return Ok(Polled::Nothing),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(ProcessError::Kafka(KafkaError::InvalidConfig(
                    "the shared reader stopped".to_owned(),
                )))
            }
        };
        // Left over from before a rewind.
        if tagged.epoch != self.epoch {
            return Ok(Polled::Record);
        }
        let record = match tagged.delivery {
            Delivery::Positions(p) => {
                self.positions = p;
                return Ok(Polled::Positions);
            }
            Delivery::Record(r) => r,
        };
        let (partition, offset) = (record.partition, record.offset);
        // A partition's records reach the task in order: once this one is
        // acted on, the task has had everything of its own below it.
        let position = self
            .positions
            .entry((record.topic.to_string(), partition))
            .or_insert(offset + 1);
        *position = (*position).max(offset + 1);
        let step = self.step(&record);
        drop(record);
        self.consumed += 1;
        self.progress.records += 1;
        match step {
            Step::Unknown => {}
            Step::Heartbeat(h) => {
                self.progress.heartbeats += 1;
                self.count(catalogue::HEARTBEATS, "heartbeat");
                // Only the vendor's clock: a poll that failed before any
                // answer carries none, and the producer's clock is another.
                if let (false, Some(at)) = (h.connection.is_empty(), h.server_time) {
                    self.barrier
                        .waiting
                        .push_back((h.connection, at.0, partition, offset));
                }
            }
            Step::Bad {
                topic,
                connection,
                entity_id,
                reason,
            } => self.dead_letter(
                topic,
                partition,
                offset,
                &connection,
                entity_id.as_deref(),
                &reason,
            )?,
            Step::Change(kind, key, incoming) => {
                let topic = change_topic(kind);
                match self
                    .operator
                    .apply(kind, &key.connection, &key.entity_id, incoming)?
                {
                    Applied::Kept => {
                        self.progress.kept += 1;
                        self.count(topic, "kept");
                    }
                    Applied::Repeat(_) => {
                        self.progress.repeats += 1;
                        self.count(topic, "repeat");
                    }
                    Applied::Skipped => self.count(topic, "not_processed"),
                }
            }
        }
        Ok(Polled::Record)
    }

    /// What a record asks for.
    fn step(&self, record: &Record) -> Step {
        if &*record.topic == catalogue::HEARTBEATS {
            return match record.payload.as_deref().map(|p| self.heartbeat.decode(p)) {
                Some(Ok(h)) if self.operator.wants(&h.connection) => Step::Heartbeat(h),
                // A connection not processed: counted, not applied.
                Some(Ok(_)) | None => Step::Heartbeat(Heartbeat::default()),
                Some(Err(e)) => Step::Bad {
                    topic: catalogue::HEARTBEATS,
                    connection: String::new(),
                    entity_id: None,
                    reason: e.to_string(),
                },
            };
        }
        let Some(kind) = kind_of(&record.topic) else {
            return Step::Unknown;
        };
        let topic = change_topic(kind);
        let (Some(key), Some(payload)) = (record.key.as_deref(), record.payload.as_deref()) else {
            return Step::Bad {
                topic,
                connection: String::new(),
                entity_id: None,
                reason: "record without key or value".to_owned(),
            };
        };
        match self.decoders.key(key) {
            Err(e) => Step::Bad {
                topic,
                connection: String::new(),
                entity_id: None,
                reason: format!("key: {e}"),
            },
            Ok(k) => match self.decoders.change(kind, payload) {
                Ok(incoming) => Step::Change(kind, k, incoming),
                Err(e) => Step::Bad {
                    topic,
                    connection: k.connection,
                    entity_id: Some(k.entity_id),
                    reason: e.to_string(),
                },
            },
        }
    }

    fn count(&self, topic: &str, outcome: &str) {
        self.metrics
            .records
            .with_label_values(&[topic, outcome])
            .inc();
    }

    fn dead_letter(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        connection: &str,
        entity_id: Option<&str>,
        reason: &str,
    ) -> Result<(), ProcessError> {
        self.progress.dead_letters += 1;
        self.count(topic, "dead_letter");
        tracing::warn!(
            topic,
            partition,
            offset,
            reason,
            "input record sent to the dead-letter topic"
        );
        let letter = DeadLetter {
            connection: connection.to_owned(),
            endpoint: format!("{topic}/{partition}/{offset}"),
            reason: reason.to_owned(),
            entity_id: entity_id.map(str::to_owned),
            // The change topics hold no personal data in clear; where the
            // record is can be read again from its topic.
            raw: Bytes(Vec::new()),
            observed_at: TimestampMillis(0),
            redacted: None,
            raw_encryption: None,
        };
        let key = wire::encode(schema_id("StringKey"), &connection.to_owned());
        let value = wire::encode(schema_id("DeadLetter"), &letter);
        let topic = self.outputs.name(catalogue::DEAD_LETTERS);
        self.stage.send(&topic, None, &key, &value)?;
        Ok(())
    }

    /// Write the changed state and commit with the consumed offsets; on an
    /// abortable failure, go back to the last commit.
    fn commit_or_reset(&mut self) -> Result<(), ProcessError> {
        match self.commit() {
            Ok(()) => {
                self.aborts_in_a_row = 0;
                Ok(())
            }
            Err(e) => self.recover(e),
        }
    }

    /// After a failed send or commit: abort, go back to the last commit
    /// (state from the changelog, input from the committed offsets) and go
    /// on, unless the error is fatal or the same trouble keeps coming back
    /// (a record the broker refuses every time): then stop, and say why.
    fn recover(&mut self, error: ProcessError) -> Result<(), ProcessError> {
        let ProcessError::Client(e) = &error else {
            return Err(error);
        };
        if classify(e) == TxnErrorClass::Fatal || self.aborts_in_a_row >= MAX_ABORTS_IN_A_ROW {
            return Err(error);
        }
        self.aborts_in_a_row += 1;
        tracing::warn!(task = self.task, error = %e, "transaction aborted; going back to the last commit");
        self.metrics
            .transactions
            .with_label_values(&[&self.label, "aborted"])
            .inc();
        self.progress.aborts += 1;
        self.stage.abort()?;
        self.barrier = Barrier::default();
        // Stop taking records first: a full queue nobody reads would hold
        // up the shared reader, and every other task, while restoring.
        self.deliveries = detached();
        self.restore()?;
        self.rejoin()
    }

    /// Read again from the committed offsets, dropping what is queued.
    fn rejoin(&mut self) -> Result<(), ProcessError> {
        self.epoch += 1;
        self.positions = self.stage.committed()?;
        self.deliveries = self
            .reader
            .join(self.task, self.epoch, self.positions.clone())?;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), ProcessError> {
        let started = Instant::now();
        // A disk read that failed left something out: stop before any of
        // it is committed (the open transaction is aborted when the task's
        // producer goes).
        if let Some(failure) = self.operator.take_failure() {
            return Err(failure.into());
        }
        let changelog = self.outputs.changelog(&self.config.application_id);
        for (key, body) in self.operator.take_changed()? {
            let key = wire::encode(schema_id("StringKey"), &key);
            let value = wire::encode(
                schema_id("ProcessorState"),
                &ProcessorState {
                    format: STATE_FORMAT.to_owned(),
                    body: Bytes(body),
                },
            );
            self.stage.send(&changelog, Some(self.task), &key, &value)?;
        }
        // Heartbeats read but not yet applied are read again after a
        // restart: their offsets are not committed.
        let hold: Vec<(&str, i32, i64)> = self
            .barrier
            .waiting
            .front()
            .map(|(_, _, partition, offset)| (catalogue::HEARTBEATS, *partition, *offset))
            .into_iter()
            .collect();
        self.stage.commit_offsets(&self.positions, &hold)?;
        self.consumed = 0;
        self.metrics
            .transactions
            .with_label_values(&[&self.label, "committed"])
            .inc();
        self.metrics
            .transaction_seconds
            .with_label_values(&[&self.label])
            .observe(started.elapsed().as_secs_f64());
        if self.operator.trim()? {
            tracing::debug!(
                task = self.task,
                "state beyond the memory budget written to the disk store"
            );
        }
        self.state_metrics();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_change_topics_are_listed_in_the_order_of_the_kinds() {
        for kind in Kind::ALL {
            let word = match kind {
                Kind::Organisation => ".organisation.",
                Kind::Person => ".person.",
                Kind::Duty => ".duty.",
                Kind::Group => ".group.",
                Kind::Activity => ".activity.",
                Kind::Lesson => ".calendar-event.",
                Kind::Attendance => ".attendance.",
                Kind::Syllabus => ".syllabus.",
            };
            assert!(change_topic(kind).contains(word), "{kind:?}");
            assert_eq!(kind_of(change_topic(kind)), Some(kind));
            assert_eq!(
                history_of(kind),
                format!("skolflode.history{word}").trim_end_matches('.')
            );
        }
    }
}

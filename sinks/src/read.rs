//! Reading a snapshot topic: one thread per table, each with its own
//! consumer, decoder and assembler, so that decoding the two tables'
//! records takes both cores while the writing loop ([`crate::run`])
//! stages, encodes and writes what is whole.
//!
//! A thread tells the writing loop what it found through one channel, in
//! the order it happened: every whole revision, and after each batch of
//! records where a restart would resume. A position therefore arrives
//! after every revision it covers, and the writing loop may record it
//! with them.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use skolflode_kafka::batch::{Batch, Taken};
use skolflode_kafka::eos::StageContext;
use skolflode_kafka::KafkaConfig;

use crate::assemble::{Assembler, At, Completed, Decoder, Offered};
use crate::checkpoint::Checkpoint;
use crate::metrics::Metrics;
use crate::table::Table;
use crate::{SinkConfig, SinkError};

/// Records taken from the queue at a time; a thread reports where it
/// stands after each take.
const BATCH: usize = 4096;

/// Outcomes of a snapshot record, as the `records` metric labels them.
const OUTCOMES: [&str; 4] = ["held", "completed", "stale", "bad"];
const HELD: usize = 0;
const COMPLETED: usize = 1;
const STALE: usize = 2;
const BAD: usize = 3;

/// What a reading thread tells the writing loop.
#[derive(Debug)]
pub enum Report {
    /// A revision with all its rows (or a re-delivery, without them).
    Completed(Table, Completed),
    /// Where the thread stands after a batch.
    Read(Read),
}

/// Where a reading thread stands: sent after the revisions it covers.
#[derive(Clone, Debug)]
pub struct Read {
    pub table: Table,
    /// Per partition, the offset a restart reads from: every record before
    /// it belongs to a revision already reported whole, or was unusable.
    pub resume: BTreeMap<i32, i64>,
    /// Every partition read to its end.
    pub caught_up: bool,
    /// Revisions of which some rows have been read.
    pub incomplete: usize,
    /// Records read since the last report, and of those the unusable.
    pub records: u64,
    pub bad_records: u64,
}

/// The snapshot topic a table is read from.
pub fn topic_of(config: &SinkConfig, table: Table) -> String {
    config.topic(match table {
        Table::TeacherStudent => skolflode_schemas::catalogue::SNAPSHOT_TEACHER_STUDENT,
        Table::Attendance => skolflode_schemas::catalogue::SNAPSHOT_ATTENDANCE,
    })
}

/// One table's topic: its consumer, and per partition the next offset and
/// whether its end was reached.
pub struct Input {
    pub table: Table,
    pub topic: String,
    /// Shared with the writing loop, which reports the checkpoint to the
    /// consumer group.
    pub consumer: Arc<BaseConsumer<StageContext>>,
    next: BTreeMap<i32, i64>,
    at_end: HashSet<i32>,
    /// Partitions assigned, fixed at open.
    partitions: usize,
}

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Input")
            .field("topic", &self.topic)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Input {
    /// The consumer of `table`'s topic, assigned every partition from where
    /// `checkpoint` says (the beginning for a partition it does not name).
    pub fn open(
        kafka: &KafkaConfig,
        config: &SinkConfig,
        table: Table,
        checkpoint: &Checkpoint,
    ) -> Result<Input, SinkError> {
        let topic = topic_of(config, table);
        let mut client = kafka.consumer(&config.application_id)?;
        // End-of-partition events are how the sink knows it has caught up,
        // not errors to log.
        client.set("enable.partition.eof", "true");
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
            consumer: Arc::new(consumer),
            next,
            at_end: HashSet::new(),
            partitions: count,
        })
    }

    fn caught_up(&self) -> bool {
        self.at_end.len() == self.partitions
    }
}

/// Read `input` until `quit` is raised or the writing loop is gone,
/// assembling whole revisions with `assembler` and reporting them and
/// where the thread stands to `reports`.
pub fn read(
    mut input: Input,
    mut assembler: Assembler,
    reports: &SyncSender<Report>,
    metrics: &Metrics,
    quit: &AtomicBool,
) {
    let table = input.table;
    let mut decoder = Decoder::default();
    let mut outcomes = [0u64; 4];
    let mut idle = false;
    let consumer = Arc::clone(&input.consumer);
    let mut batch = match Batch::new(&consumer, BATCH) {
        Ok(batch) => batch,
        Err(e) => {
            // The writing loop sees the thread gone and stops.
            tracing::error!(topic = %input.topic, error = %e, "reading");
            return;
        }
    };
    while !quit.load(Ordering::Relaxed) {
        let (mut records, mut bad_records) = (0u64, 0u64);
        // When the last batch found nothing, wait a little for input
        // rather than spin.
        let wait = if idle {
            Duration::from_millis(10)
        } else {
            Duration::ZERO
        };
        let polled = batch.take(wait) > 0;
        for taken in batch.messages() {
            let (partition, offset, payload) = match taken {
                Taken::Message {
                    partition,
                    offset,
                    payload,
                    ..
                } => (partition, offset, payload),
                Taken::End { partition } => {
                    input.at_end.insert(partition);
                    continue;
                }
                Taken::Error { partition, error } => {
                    tracing::warn!(topic = %input.topic, partition, %error, "reading");
                    continue;
                }
            };
            input.at_end.remove(&partition);
            input.next.insert(partition, offset + 1);
            records += 1;
            let outcome = match decoder.read(table, payload) {
                Err(reason) => {
                    // No payload in the log: a broken record may hold anything.
                    tracing::warn!(topic = %input.topic, partition, offset, %reason, "snapshot record skipped");
                    bad_records += 1;
                    BAD
                }
                Ok(record) => match assembler.offer(&record, At { partition, offset }) {
                    Offered::Held => HELD,
                    Offered::Stale => STALE,
                    Offered::Unusable(reason) => {
                        tracing::error!(topic = %input.topic, partition, offset, %reason, "a whole revision could not be used");
                        bad_records += 1;
                        BAD
                    }
                    Offered::Completed(c) => {
                        if reports.send(Report::Completed(table, c)).is_err() {
                            return;
                        }
                        COMPLETED
                    }
                },
            };
            outcomes[outcome] += 1;
        }
        idle = !polled;
        if !polled {
            continue;
        }
        // Counted per record, reported per batch: a labelled counter's
        // lookup costs more than reading a record.
        for (name, n) in OUTCOMES.iter().zip(outcomes.iter_mut()) {
            if *n > 0 {
                metrics
                    .records
                    .with_label_values(&[table.name(), name])
                    .inc_by(*n);
                *n = 0;
            }
        }
        let resume = input
            .next
            .iter()
            .map(|(&p, &next)| {
                let from = assembler.needs_from(table, p).map_or(next, |n| n.min(next));
                (p, from)
            })
            .collect();
        let read = Read {
            table,
            resume,
            caught_up: input.caught_up(),
            incomplete: assembler.incomplete(),
            records,
            bad_records,
        };
        if reports.send(Report::Read(read)).is_err() {
            return;
        }
    }
}

/// Report the checkpoint to the consumer group, for lag monitoring. The
/// checkpoint is what the sink resumes from; this may fail harmlessly.
pub fn commit_positions(
    consumer: &BaseConsumer<StageContext>,
    topic: &str,
    checkpoint: &Checkpoint,
) {
    let mut list = TopicPartitionList::new();
    if let Some(offsets) = checkpoint.offsets.get(topic) {
        for (&p, &o) in offsets {
            let _ = list.add_partition_offset(topic, p, Offset::Offset(o));
        }
    }
    if list.count() > 0 {
        if let Err(e) = consumer.commit(&list, CommitMode::Async) {
            tracing::debug!(error = %e, "reporting positions to the consumer group");
        }
    }
}

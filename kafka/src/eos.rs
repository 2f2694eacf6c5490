//! The consume → process → produce loop's Kafka side, for every stage that
//! turns topics into topics exactly once: a read-committed consumer of the
//! inputs and a transactional producer of the outputs, whose transaction
//! also carries the consumed offsets (`send_offsets_to_transaction`). The
//! records themselves come from a [`crate::FanOut`]; on an abort the caller
//! rewinds it to the committed offsets and drops what it derived since
//! (rust-rdkafka's `examples/transactions.rs` pattern).
//!
//! Blocking (librdkafka's base clients): run it on a thread of its own.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError as ClientError;
use rdkafka::producer::BaseRecord;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::{KafkaConfig, KafkaError, TransactionalWriter};

/// Silences end-of-partition events, which a stage asks for to know when
/// it has caught up.
#[derive(Debug, Default)]
pub struct StageContext;

impl ClientContext for StageContext {
    fn error(&self, error: ClientError, reason: &str) {
        match error {
            ClientError::Global(RDKafkaErrorCode::PartitionEOF) | ClientError::PartitionEOF(_) => {}
            other => tracing::warn!(error = %other, reason, "librdkafka reported an error"),
        }
    }
}

impl ConsumerContext for StageContext {}

/// A stage's consumer and transactional producer.
pub struct Stage {
    consumer: BaseConsumer<StageContext>,
    writer: TransactionalWriter,
    inputs: Vec<(String, i32)>,
    began: Option<Instant>,
    sent: usize,
    timeout: Duration,
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stage")
            .field("inputs", &self.inputs)
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

impl Stage {
    /// Connect: the producer with `transactional_id` fences any earlier
    /// instance and aborts what that left open. The records come from
    /// elsewhere (a [`crate::FanOut`] shared by several stages), and the
    /// stage commits the offsets it is given ([`Stage::commit_offsets`]) as
    /// consumer group `group`'s; the input partitions (every partition of a
    /// topic given with `None`) are resolved for [`Stage::committed`] and
    /// [`Stage::ends`].
    pub fn start(
        config: &KafkaConfig,
        group: &str,
        transactional_id: &str,
        inputs: &[(&str, Option<i32>)],
    ) -> Result<Self, KafkaError> {
        let timeout = config.request_timeout();
        let mut consumer_config = config.consumer(group)?;
        // A stage's consumer is assigned many partitions; librdkafka's
        // default prefetch (64 MiB) per consumer is more than a stage needs
        // to keep its loop busy, and an instance runs several stages.
        consumer_config
            .set("enable.partition.eof", "true")
            .set("queued.max.messages.kbytes", "16384");
        let consumer: BaseConsumer<StageContext> =
            consumer_config.create_with_context(StageContext)?;
        let writer = TransactionalWriter::create(
            config
                .transactional_producer(transactional_id)?
                .set("linger.ms", "5"),
            timeout,
        )?;
        writer.init_blocking()?;
        let mut all = Vec::new();
        for (topic, only) in inputs {
            if let Some(p) = only {
                all.push(((*topic).to_owned(), *p));
                continue;
            }
            let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
            let count = metadata
                .topics()
                .first()
                .map_or(0, |t| t.partitions().len() as i32);
            if count == 0 {
                return Err(KafkaError::InvalidConfig(format!(
                    "input topic {topic} does not exist"
                )));
            }
            all.extend((0..count).map(|p| ((*topic).to_owned(), p)));
        }
        Ok(Self {
            consumer,
            writer,
            inputs: all,
            began: None,
            sent: 0,
            timeout,
        })
    }

    /// The group's committed offset of every input partition; where it has
    /// none, the partition's beginning.
    pub fn committed(&self) -> Result<BTreeMap<(String, i32), i64>, KafkaError> {
        let mut wanted = TopicPartitionList::new();
        for (topic, partition) in &self.inputs {
            wanted.add_partition(topic, *partition);
        }
        let committed = self.consumer.committed_offsets(wanted, self.timeout)?;
        let mut out = BTreeMap::new();
        for e in committed.elements() {
            let offset = match e.offset() {
                Offset::Offset(o) => o,
                _ => {
                    self.consumer
                        .fetch_watermarks(e.topic(), e.partition(), self.timeout)?
                        .0
                }
            };
            out.insert((e.topic().to_owned(), e.partition()), offset);
        }
        Ok(out)
    }

    /// The end of every input partition except those of `skip`, in one
    /// request per broker: the last stable offset, since the consumer reads
    /// committed records only (ListOffsets for the latest offset, which a
    /// read-committed client is answered with the LSO).
    pub fn ends(&self, skip: &str) -> Result<BTreeMap<(String, i32), i64>, KafkaError> {
        let mut wanted = TopicPartitionList::new();
        for (topic, partition) in self.inputs.iter().filter(|(t, _)| t != skip) {
            wanted.add_partition_offset(topic, *partition, Offset::End)?;
        }
        let found = self.consumer.offsets_for_times(wanted, self.timeout)?;
        let mut out = BTreeMap::new();
        for e in found.elements() {
            if let Offset::Offset(o) = e.offset() {
                out.insert((e.topic().to_owned(), e.partition()), o);
            }
        }
        Ok(out)
    }

    /// Records sent in the open transaction.
    pub fn sent(&self) -> usize {
        self.sent
    }

    /// How long the open transaction has been open.
    pub fn age(&self) -> Duration {
        self.began.map_or(Duration::ZERO, |b| b.elapsed())
    }

    /// Send one record in the transaction, beginning it if need be.
    /// `partition`: where it must go (`None`: by the key, murmur2 as Java).
    pub fn send(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), ClientError> {
        if self.began.is_none() {
            self.writer.begin()?;
            self.began = Some(Instant::now());
        }
        let mut record = BaseRecord::to(topic).key(key).payload(value);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        self.writer.send_blocking(record)?;
        self.sent += 1;
        Ok(())
    }

    /// Commit the open transaction with `offsets` as the group's, except
    /// where `hold` names an earlier offset.
    pub fn commit_offsets(
        &mut self,
        offsets: &BTreeMap<(String, i32), i64>,
        hold: &[(&str, i32, i64)],
    ) -> Result<(), ClientError> {
        if self.began.is_none() {
            self.writer.begin()?;
            self.began = Some(Instant::now());
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), o) in offsets {
            let held = hold
                .iter()
                .find(|(t, p, _)| t == topic && p == partition)
                .map_or(*o, |(_, _, h)| (*h).min(*o));
            list.add_partition_offset(topic, *partition, Offset::Offset(held))?;
        }
        let offsets = list;
        let metadata = self
            .consumer
            .group_metadata()
            .ok_or(ClientError::ConsumerCommit(
                RDKafkaErrorCode::InvalidGroupId,
            ))?;
        self.writer.send_offsets_blocking(&offsets, &metadata)?;
        self.writer.commit_blocking()?;
        self.began = None;
        self.sent = 0;
        Ok(())
    }

    /// Abort the open transaction; the caller rewinds its reader to
    /// [`Stage::committed`] and drops what it derived since its last commit.
    pub fn abort(&mut self) -> Result<(), KafkaError> {
        if self.began.take().is_some() {
            self.writer.abort_blocking()?;
        }
        self.sent = 0;
        Ok(())
    }
}

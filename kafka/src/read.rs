//! Reading a topic from its beginning to its end, as it stands when the
//! read starts: how a producer rebuilds its state and how tests check what
//! was written.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError as ClientError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::KafkaError;

/// The reader's client context. A partition's end is how a read knows it
/// is done, not an error: rust-rdkafka's default context logs every
/// consumer error event at ERROR, end of partition included, so a
/// normal start would print an error line per partition.
#[derive(Debug, Default)]
struct ReadContext;

impl ClientContext for ReadContext {
    fn error(&self, error: ClientError, reason: &str) {
        match error {
            ClientError::Global(RDKafkaErrorCode::PartitionEOF) | ClientError::PartitionEOF(_) => {}
            other => {
                tracing::warn!(error = %other, reason, "librdkafka reported an error while reading to the end")
            }
        }
    }
}

impl ConsumerContext for ReadContext {}

/// A partition of a topic with `count` partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partitions {
    pub partition: i32,
    pub count: i32,
}

/// Read every partition of `topic` from the beginning until each has
/// reported its end, calling `each` for every record, within `timeout`.
/// The consumer's isolation level decides whether aborted records are
/// seen. Blocking: call it from a blocking task. Returns the records read.
pub fn read_to_end<E: From<KafkaError>>(
    client: ClientConfig,
    topic: &str,
    timeout: Duration,
    each: impl FnMut(&BorrowedMessage<'_>) -> Result<(), E>,
) -> Result<usize, E> {
    read_partitions_to_end(client, topic, |_| true, timeout, each)
}

/// [`read_to_end`] for the partitions `wanted` accepts (it is asked about
/// each partition, with the topic's partition count).
pub fn read_partitions_to_end<E: From<KafkaError>>(
    mut client: ClientConfig,
    topic: &str,
    wanted: impl Fn(Partitions) -> bool,
    timeout: Duration,
    mut each: impl FnMut(&BorrowedMessage<'_>) -> Result<(), E>,
) -> Result<usize, E> {
    let deadline = Instant::now() + timeout;
    // An empty partition's end is known only from a fetch answered
    // empty, which the broker holds back for `fetch.wait.max.ms` (500 ms
    // by default) hoping for records: every stage's start waited that
    // long for an empty changelog or state partition.
    client
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10");
    let consumer: BaseConsumer<ReadContext> = client
        .create_with_context(ReadContext)
        .map_err(KafkaError::from)?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(KafkaError::from)?;
    let all: Vec<i32> = metadata
        .topics()
        .first()
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    let count = all.len() as i32;
    let partitions: Vec<i32> = all
        .into_iter()
        .filter(|p| {
            wanted(Partitions {
                partition: *p,
                count,
            })
        })
        .collect();
    if partitions.is_empty() {
        return Ok(0);
    }
    let mut assignment = TopicPartitionList::new();
    for p in &partitions {
        assignment
            .add_partition_offset(topic, *p, Offset::Beginning)
            .map_err(KafkaError::from)?;
    }
    consumer.assign(&assignment).map_err(KafkaError::from)?;
    let mut at_end: HashSet<i32> = HashSet::new();
    let mut read = 0;
    while at_end.len() < partitions.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(KafkaError::Timeout(format!(
                "reading {topic} to its end: {read} records, {} of {} partitions done in {timeout:?}",
                at_end.len(),
                partitions.len()
            ))
            .into());
        }
        match consumer.poll(left.min(Duration::from_millis(500))) {
            None => {}
            Some(Err(ClientError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => return Err(KafkaError::from(e).into()),
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                read += 1;
                each(&m)?;
            }
        }
    }
    Ok(read)
}

//! A transactional writer: the producing half of every exactly-once stage.
//!
//! Records are handed to librdkafka as they come, so that compression and
//! network overlap the work on the next ones; a commit then waits only for
//! the tail and the commit marker. Whether a record was delivered is
//! librdkafka's to track: `commit_transaction` fails (abortably) if any
//! record of the transaction failed, so no per-record future is needed;
//! failures are counted. Both an async face (the producers, on tokio) and a
//! blocking one (stages on threads of their own) are offered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::KafkaError as ClientError;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, NoCustomPartitioner, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};

/// Counts records librdkafka could not deliver (their transaction fails to
/// commit). Only failures are reported (`delivery.report.only.error`): a
/// report per record cost the polling thread about 6 % of a producer's CPU.
#[derive(Debug, Default)]
pub struct Deliveries {
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "a record was not delivered; its transaction will abort");
        }
    }
}

/// Why a writer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("a blocking Kafka call's task failed")]
    Task(#[from] tokio::task::JoinError),
}

/// A transactional producer and the operations of its transactions.
#[derive(Clone)]
pub struct TransactionalWriter {
    producer: ThreadedProducer<Deliveries, NoCustomPartitioner>,
    timeout: Duration,
}

impl std::fmt::Debug for TransactionalWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionalWriter")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl TransactionalWriter {
    /// A writer from a transactional producer's config
    /// ([`crate::KafkaConfig::transactional_producer`]); `timeout` bounds
    /// each blocking transaction call.
    pub fn create(config: &ClientConfig, timeout: Duration) -> Result<Self, ClientError> {
        Ok(Self {
            producer: config.create_with_context(Deliveries::default())?,
            timeout,
        })
    }

    /// Fence a predecessor with the same transactional id and abort what
    /// it left open (blocking).
    pub fn init_blocking(&self) -> Result<(), ClientError> {
        self.producer.init_transactions(self.timeout)
    }

    /// [`Self::init_blocking`] off the async runtime.
    pub async fn init(&self) -> Result<(), WriteError> {
        let w = self.clone();
        tokio::task::spawn_blocking(move || w.init_blocking()).await??;
        Ok(())
    }

    pub fn begin(&self) -> Result<(), ClientError> {
        self.producer.begin_transaction()
    }

    /// Hand one record over, waiting (async) while librdkafka's queue is
    /// full: its own thread drains it.
    pub async fn send(&self, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<(), ClientError> {
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((ClientError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// [`Self::send`], blocking the thread while the queue is full.
    pub fn send_blocking(&self, mut record: BaseRecord<'_, [u8], [u8]>) -> Result<(), ClientError> {
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((ClientError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Wait until librdkafka holds no record of ours: each is acknowledged
    /// (or failed) and freed. `commit_transaction` flushes too, but a flush
    /// that finds work left sleeps in steps of the polling thread's interval
    /// (100 ms in about a third of a producer's commits, measured); polling
    /// the count every millisecond wakes as soon as the tail is in.
    pub async fn delivered(&self) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        while self.producer.in_flight_count() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::Flush(RDKafkaErrorCode::MessageTimedOut));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    /// Add a consumer's offsets to the open transaction.
    pub fn send_offsets_blocking(
        &self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), ClientError> {
        self.producer
            .send_offsets_to_transaction(offsets, group, self.timeout)
    }

    pub fn commit_blocking(&self) -> Result<(), ClientError> {
        self.producer.commit_transaction(self.timeout)
    }

    /// Wait for the tail, then commit.
    pub async fn commit(&self) -> Result<(), WriteError> {
        self.delivered().await?;
        let w = self.clone();
        tokio::task::spawn_blocking(move || w.commit_blocking()).await??;
        Ok(())
    }

    /// Abort the open transaction, after its records were answered.
    ///
    /// An abort sent while the transaction's first records are still in
    /// flight can reach the coordinator before it registered their
    /// partitions; the coordinator then sees no transaction to end and
    /// answers INVALID_TXN_STATE, which librdkafka makes fatal
    /// (librdkafka#4849). Once a record is answered its partition is
    /// registered, so waiting for the answers first avoids that; the
    /// records are written as part of the aborted transaction, which
    /// read-committed consumers never see. A wait that runs out (a broker
    /// down) is no reason not to try the abort.
    pub fn abort_blocking(&self) -> Result<(), ClientError> {
        let _ = self.producer.flush(self.timeout);
        self.producer.abort_transaction(self.timeout)
    }

    pub async fn abort(&self) -> Result<(), WriteError> {
        let _ = self.delivered().await;
        let w = self.clone();
        tokio::task::spawn_blocking(move || w.abort_blocking()).await??;
        Ok(())
    }

    /// Records that could not be delivered since the start.
    pub fn failed_deliveries(&self) -> u64 {
        self.producer.context().failed.load(Ordering::Relaxed)
    }
}

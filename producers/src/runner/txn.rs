//! The connection's Kafka transactions.
//!
//! Records are handed to librdkafka page by page while the read goes on, so
//! that compression and network overlap the mapping of the next pages; a
//! commit then waits only for the tail and the commit marker. Whether a
//! record was delivered is librdkafka's to track: `commit_transaction`
//! flushes and fails (abortably) if any record of the transaction failed,
//! so no per-record future is needed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use foldhash::HashMap;
use rdkafka::error::KafkaError as ClientError;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, NoCustomPartitioner, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientConfig, ClientContext};
use skolflode_kafka::{classify, TxnErrorClass};
use skolflode_schemas::catalogue;
use skolflode_schemas::records::Cursor;

use super::id_map::{IdMap, Key};
use super::RunError;
use crate::detect::Held;
use crate::endpoint::Endpoint;

pub(super) const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// A transaction older than this commits at the next page, whatever its
/// size: half the producer's default `transaction.timeout.ms` (60 s), so
/// that a slow vendor cannot keep one open until Kafka aborts it.
pub(super) const TXN_MAX_AGE: Duration = Duration::from_secs(30);

/// A record to send: topic, framed key, framed value (`None`: tombstone).
pub(super) type Record = (&'static str, Vec<u8>, Option<Vec<u8>>);

/// One transaction: records not yet handed over, and the state, cursors
/// and published dialect findings it leaves behind once committed.
#[derive(Default)]
pub(super) struct Txn {
    pending: Vec<Record>,
    sent: usize,
    began: Option<Instant>,
    /// endpoint → entity id → new state (`None`: deleted).
    pub(super) state: HashMap<Endpoint, IdMap<Option<Held>>>,
    pub(super) cursors: HashMap<String, Cursor>,
    /// Dialect findings published by this transaction.
    pub(super) dialects: Vec<super::DialectKey>,
}

impl Txn {
    pub(super) fn push(&mut self, record: Record) {
        self.pending.push(record);
    }

    /// How long the transaction has been open (zero before it begins).
    pub(super) fn age(&self) -> Duration {
        self.began.map_or(Duration::ZERO, |b| b.elapsed())
    }

    /// Records in the transaction, handed over or not.
    pub(super) fn len(&self) -> usize {
        self.sent + self.pending.len()
    }

    /// The state this transaction gives an entity, if it touches it:
    /// `Some(None)` means deleted.
    pub(super) fn state_of(&self, endpoint: Endpoint, key: Key<'_>) -> Option<Option<&Held>> {
        self.state
            .get(&endpoint)
            .and_then(|m| m.get(key))
            .map(Option::as_ref)
    }

    /// The pending state of an entity this transaction gives a new
    /// version.
    pub(super) fn pending_mut(&mut self, endpoint: Endpoint, key: Key<'_>) -> Option<&mut Held> {
        self.state
            .get_mut(&endpoint)
            .and_then(|m| m.get_mut(key))
            .and_then(Option::as_mut)
    }

    pub(super) fn set_state(&mut self, endpoint: Endpoint, key: Key<'_>, state: Option<Held>) {
        self.state.entry(endpoint).or_default().insert(key, state);
    }
}

/// Counts records librdkafka could not deliver (the transaction they
/// belong to fails to commit). Only failures are reported
/// (`delivery.report.only.error`): a report per record cost the polling
/// thread about 6 % of the producer's CPU, for a count nobody needs.
#[derive(Default)]
pub(super) struct Deliveries {
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

/// The transactional producer of one connection.
pub(super) struct Transactions {
    producer: ThreadedProducer<Deliveries, NoCustomPartitioner>,
    /// The connection's partition of the state topic.
    state_partition: i32,
}

impl Transactions {
    pub(super) fn create(config: &ClientConfig, state_partition: i32) -> Result<Self, RunError> {
        Ok(Self {
            producer: config.create_with_context(Deliveries::default())?,
            state_partition,
        })
    }

    /// Fence a predecessor with the same transactional id and abort what
    /// it left open.
    pub(super) async fn init(&self) -> Result<(), RunError> {
        let p = self.producer.clone();
        tokio::task::spawn_blocking(move || p.init_transactions(TXN_TIMEOUT)).await??;
        Ok(())
    }

    /// Hand the pending records to librdkafka, beginning the transaction
    /// first if need be. On failure the transaction is aborted.
    pub(super) async fn send(&self, txn: &mut Txn) -> Result<(), RunError> {
        if txn.pending.is_empty() {
            return Ok(());
        }
        if txn.began.is_none() {
            self.producer
                .begin_transaction()
                .map_err(|e| match classify(&e) {
                    TxnErrorClass::Fatal => RunError::Fatal(e),
                    _ => RunError::Aborted(e),
                })?;
            txn.began = Some(Instant::now());
        }
        let records = std::mem::take(&mut txn.pending);
        for (topic, key, value) in &records {
            let mut record = BaseRecord::to(topic).key(key);
            if *topic == catalogue::PRODUCER_STATE {
                record = record.partition(self.state_partition);
            }
            if let Some(v) = value {
                record = record.payload(v);
            }
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((
                        ClientError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        back,
                    )) => {
                        // The producer's own thread drains the queue.
                        record = back;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err((e, _)) => return Err(self.abort(txn, e).await),
                }
            }
        }
        txn.sent += records.len();
        Ok(())
    }

    /// Wait until librdkafka holds no record of ours: each is acknowledged
    /// (or failed) and freed. `commit_transaction` flushes too, but a
    /// flush that finds work left sleeps in steps of the polling thread's
    /// interval (100 ms in about a third of the commits, measured); polling
    /// the count every millisecond (tokio's timer granularity) wakes as
    /// soon as the tail is acknowledged.
    async fn delivered(&self) -> Result<(), ClientError> {
        let deadline = tokio::time::Instant::now() + TXN_TIMEOUT;
        while self.producer.in_flight_count() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::Flush(
                    rdkafka::types::RDKafkaErrorCode::MessageTimedOut,
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    /// Send what is pending and commit. Returns how long the transaction
    /// was open, or `None` if it held nothing.
    pub(super) async fn commit(&self, txn: &mut Txn) -> Result<Option<Duration>, RunError> {
        self.send(txn).await?;
        let Some(began) = txn.began else {
            return Ok(None);
        };
        if let Err(e) = self.delivered().await {
            return Err(self.abort(txn, e).await);
        }
        let p = self.producer.clone();
        let committed =
            tokio::task::spawn_blocking(move || p.commit_transaction(TXN_TIMEOUT)).await?;
        if let Err(e) = committed {
            return Err(self.abort(txn, e).await);
        }
        txn.began = None;
        txn.sent = 0;
        Ok(Some(began.elapsed()))
    }

    /// Abort after `e`; the transaction's records and state are dropped.
    pub(super) async fn abort(&self, txn: &mut Txn, e: ClientError) -> RunError {
        txn.pending.clear();
        txn.state.clear();
        txn.cursors.clear();
        txn.dialects.clear();
        txn.sent = 0;
        let was_open = txn.began.take().is_some();
        if classify(&e) == TxnErrorClass::Fatal {
            return RunError::Fatal(e);
        }
        if !was_open {
            return RunError::Aborted(e);
        }
        let p = self.producer.clone();
        let aborted = tokio::task::spawn_blocking(move || p.abort_transaction(TXN_TIMEOUT)).await;
        match aborted {
            Ok(Ok(())) => RunError::Aborted(e),
            Ok(Err(abort)) => RunError::AbortFailed {
                cause: Box::new(e),
                abort: Box::new(abort),
            },
            Err(join) => RunError::Task(join),
        }
    }

    /// Records that could not be delivered since the start.
    pub(super) fn failed_deliveries(&self) -> u64 {
        self.producer.context().failed.load(Ordering::Relaxed)
    }
}

//! The connection's Kafka transactions: what each holds (records, and the
//! state, cursors and findings it leaves behind once committed), written
//! through the shared [`TransactionalWriter`] page by page while the read
//! goes on, so that a commit waits only for the tail.

use std::time::{Duration, Instant};

use foldhash::HashMap;
use rdkafka::error::KafkaError as ClientError;
use rdkafka::producer::BaseRecord;
use rdkafka::ClientConfig;
use skolflode_kafka::{classify, TransactionalWriter, TxnErrorClass, WriteError};
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
    /// Files it ingests: (endpoint, SHA-256).
    pub(super) delivered: Vec<(Endpoint, String)>,
    /// What it publishes, counted into the stats and metrics only when it
    /// commits: an aborted transaction published nothing.
    pub(super) tally: Tally,
}

/// What a transaction publishes, for the stats and metrics.
#[derive(Default)]
pub(super) struct Tally {
    /// Change events by `Op` (its index in `Op::SYMBOLS`).
    pub(super) events: [u64; 8],
    pub(super) event_bytes: u64,
    /// Findings by kind.
    pub(super) findings: Vec<(String, u64)>,
    pub(super) dead_letters: u64,
    /// Entities retired, by endpoint.
    pub(super) retired: Vec<(Endpoint, u64)>,
}

impl Tally {
    pub(super) fn retire(&mut self, endpoint: Endpoint) {
        match self.retired.iter_mut().find(|(e, _)| *e == endpoint) {
            Some((_, n)) => *n += 1,
            None => self.retired.push((endpoint, 1)),
        }
    }

    pub(super) fn finding(&mut self, kind: &str) {
        match self.findings.iter_mut().find(|(k, _)| k == kind) {
            Some((_, n)) => *n += 1,
            None => self.findings.push((kind.to_owned(), 1)),
        }
    }
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

/// The transactional producer of one connection: the shared
/// [`TransactionalWriter`], and where the state records go.
pub(super) struct Transactions {
    writer: TransactionalWriter,
    /// The connection's partition of the state topic.
    state_partition: i32,
}

fn client(e: WriteError) -> RunError {
    match e {
        WriteError::Client(e) => RunError::Client(e),
        WriteError::Task(e) => RunError::Task(e),
    }
}

impl Transactions {
    pub(super) fn create(config: &ClientConfig, state_partition: i32) -> Result<Self, RunError> {
        Ok(Self {
            writer: TransactionalWriter::create(config, TXN_TIMEOUT)?,
            state_partition,
        })
    }

    /// Fence a predecessor with the same transactional id and abort what
    /// it left open.
    pub(super) async fn init(&self) -> Result<(), RunError> {
        self.writer.init().await.map_err(client)
    }

    /// Hand the pending records to librdkafka, beginning the transaction
    /// first if need be. On failure the transaction is aborted.
    pub(super) async fn send(&self, txn: &mut Txn) -> Result<(), RunError> {
        if txn.pending.is_empty() {
            return Ok(());
        }
        if txn.began.is_none() {
            self.writer.begin().map_err(|e| match classify(&e) {
                TxnErrorClass::Fatal => RunError::Fatal(e),
                _ => RunError::Aborted(e),
            })?;
            txn.began = Some(Instant::now());
        }
        let records = std::mem::take(&mut txn.pending);
        for (topic, key, value) in &records {
            let mut record = BaseRecord::to(topic).key(key.as_slice());
            if *topic == catalogue::PRODUCER_STATE {
                record = record.partition(self.state_partition);
            }
            if let Some(v) = value {
                record = record.payload(v.as_slice());
            }
            if let Err(e) = self.writer.send(record).await {
                return Err(self.abort(txn, e).await);
            }
        }
        txn.sent += records.len();
        Ok(())
    }

    /// Send what is pending and commit. Returns how long the transaction
    /// was open, or `None` if it held nothing.
    pub(super) async fn commit(&self, txn: &mut Txn) -> Result<Option<Duration>, RunError> {
        self.send(txn).await?;
        let Some(began) = txn.began else {
            return Ok(None);
        };
        match self.writer.commit().await {
            Ok(()) => {}
            Err(WriteError::Client(e)) => return Err(self.abort(txn, e).await),
            Err(WriteError::Task(e)) => return Err(RunError::Task(e)),
        }
        txn.began = None;
        txn.sent = 0;
        Ok(Some(began.elapsed()))
    }

    /// Abort whatever transaction the producer has open: after a poll was
    /// cancelled with its transaction.
    pub(super) async fn abort_open(&self) -> Result<(), RunError> {
        self.writer.abort().await.map_err(client)
    }

    /// Drop what the transaction holds, and abort it if it began: for a
    /// read that must leave nothing behind. Whether there was one to
    /// abort; a failed abort is fatal, as in [`Transactions::abort`].
    pub(super) async fn discard(&self, txn: &mut Txn) -> Result<bool, RunError> {
        if !Self::clear(txn) {
            return Ok(false);
        }
        match self.writer.abort().await {
            Ok(()) => Ok(true),
            Err(WriteError::Client(e)) => Err(RunError::Fatal(e)),
            Err(WriteError::Task(join)) => Err(RunError::Task(join)),
        }
    }

    /// Empty `txn`; whether it had begun.
    fn clear(txn: &mut Txn) -> bool {
        txn.pending.clear();
        txn.state.clear();
        txn.cursors.clear();
        txn.dialects.clear();
        txn.delivered.clear();
        txn.tally = Tally::default();
        txn.sent = 0;
        txn.began.take().is_some()
    }

    /// Abort after `e`; the transaction's records and state are dropped.
    pub(super) async fn abort(&self, txn: &mut Txn, e: ClientError) -> RunError {
        let was_open = Self::clear(txn);
        if classify(&e) == TxnErrorClass::Fatal {
            return RunError::Fatal(e);
        }
        if !was_open {
            return RunError::Aborted(e);
        }
        match self.writer.abort().await {
            Ok(()) => RunError::Aborted(e),
            Err(WriteError::Client(abort)) => RunError::AbortFailed {
                cause: Box::new(e),
                abort: Box::new(abort),
            },
            Err(WriteError::Task(join)) => RunError::Task(join),
        }
    }

    /// Records that could not be delivered since the start.
    pub(super) fn failed_deliveries(&self) -> u64 {
        self.writer.failed_deliveries()
    }
}

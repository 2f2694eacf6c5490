//! One vendor connection, read continuously and published exactly once.
//!
//! Lifecycle: [`Runner::start`] fences any earlier instance (Kafka
//! transactional id per connection) and rebuilds the state from the
//! compacted state topic — no local file is the source of truth; then
//! [`Runner::poll`] reads every endpoint (a full read the first time and
//! every `full_read_every` polls, incremental reads with
//! `meta.modified.after` in between) and the deletion feed.
//!
//! A Kafka transaction spans pages until it holds enough records: their
//! change events, the state records that explain them, dead letters and
//! quality findings, and — on an endpoint's last page — the new cursor and
//! the deletions a full read revealed. The in-memory state follows only
//! after a commit. A producer killed at any point restarts from the last
//! committed cursor; what it reads again is absorbed by the content hashes.
//!
//! Modules: [`prepare`] fetches and maps pages ahead on other threads;
//! [`txn`] hands records to librdkafka as pages are processed and commits;
//! [`id_map`] holds what is known of each entity, keyed by id, with the
//! id's hash kept so that it is computed once.

mod id_map;
mod prepare;
mod txn;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError as ClientError;
use rdkafka::message::Message;
use serde::Deserialize;
use skolflode_kafka::{Admin, KafkaConfig, TopicSpec};
use skolflode_schemas::catalogue::{self, Cleanup, TOPICS};
use skolflode_schemas::codec::{write_long, write_str};
use skolflode_schemas::envelope::Entity;
use skolflode_schemas::records::{Cursor, DeadLetter, Heartbeat, ProducerState, QualityFinding};
use skolflode_schemas::{wire, AvroType, Bytes, Op, Source, TimestampMillis};

use crate::detect::{self, Held, Version};
use crate::metrics::Metrics;
use crate::pseudonym::Pseudonymiser;
use crate::ss12000::client::{ClientConfig, FetchError, Ss12000Client};
use crate::ss12000::map::{Finding, FindingKind};
use crate::ss12000::time;
use id_map::{IdMap, Key};
use prepare::{fetch_ahead, now_millis, Prepared};
use txn::{Record, Transactions, Txn};

/// The state topic, dead-letter topic and findings topic.
pub const STATE_TOPIC: &str = "skolflode.producer.state";
pub const DEAD_LETTER_TOPIC: &str = "skolflode.deadletter";
pub const FINDINGS_TOPIC: &str = "skolflode.quality.findings";
pub const HEARTBEAT_TOPIC: &str = "skolflode.heartbeats";

/// Records after which a transaction is committed before the read goes on
/// (the default of `max_transaction_records`). A commit waits for the
/// broker to acknowledge the transaction's tail, and the connection's loop
/// idles meanwhile (20–150 ms a commit, measured): 8 000 gave 29 k
/// events/s in `scripts/bench-produce`, 24 000 gave 38 k, 60 000 no more
/// than that. About 12 000 events per transaction.
const MAX_TXN_RECORDS: usize = 24_000;

/// librdkafka settings the producer starts from; any of them given in
/// `[kafka.properties]` is used instead.
const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("transaction.timeout.ms", "60000"),
    ("linger.ms", "5"),
    ("compression.type", "lz4"),
    // The committer polls librdkafka's in-flight count instead of
    // counting a report per record (`txn.rs`).
    ("delivery.report.only.error", "true"),
];

/// Every SS 12000 endpoint the producer can read.
pub const ENDPOINTS: &[&str] = &[
    "organisations",
    "persons",
    "duties",
    "groups",
    "syllabuses",
    "activities",
    "calendarEvents",
    "attendances",
];

fn default_endpoints() -> Vec<String> {
    ENDPOINTS.iter().map(|e| (*e).to_owned()).collect()
}

/// One vendor connection.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionConfig {
    /// The connection's name: `source.connection` of its events, part of
    /// every key, and of the fallback person keys. Never change it.
    pub name: String,
    /// Endpoints to read (default: all of them).
    #[serde(default = "default_endpoints")]
    pub endpoints: Vec<String>,
    /// Seconds between polls (default 300).
    #[serde(default = "ConnectionConfig::default_poll")]
    pub poll_interval_secs: u64,
    /// Every this many polls an endpoint is read in full and compared with
    /// what is held, to find deletions and changes the vendor did not
    /// announce (default 12).
    #[serde(default = "ConnectionConfig::default_full")]
    pub full_read_every: i64,
    /// Incremental reads start this many seconds before the newest
    /// `meta.modified` seen, for clock skew and equal timestamps (default
    /// 300).
    #[serde(default = "ConnectionConfig::default_overlap")]
    pub overlap_secs: i64,
    /// Read `/deletedEntities` (default true).
    #[serde(default = "ConnectionConfig::default_true")]
    pub deletion_feed: bool,
    /// Records after which a transaction is committed before the read
    /// goes on (default 24 000, at least 100). Larger means fewer commits
    /// and more memory; a transaction must commit within librdkafka's
    /// `transaction.timeout.ms`.
    #[serde(default = "ConnectionConfig::default_txn_records")]
    pub max_transaction_records: usize,
    pub client: ClientConfig,
}

impl ConnectionConfig {
    fn default_poll() -> u64 {
        300
    }
    fn default_full() -> i64 {
        12
    }
    fn default_overlap() -> i64 {
        300
    }
    fn default_true() -> bool {
        true
    }
    fn default_txn_records() -> usize {
        MAX_TXN_RECORDS
    }
}

/// Why a runner stopped or a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Kafka(#[from] skolflode_kafka::KafkaError),
    #[error("Kafka: {0}")]
    Client(#[from] ClientError),
    #[error("the transaction was aborted and will be redone: {0}")]
    Aborted(String),
    #[error("fatal Kafka error, the producer must restart: {0}")]
    Fatal(String),
    #[error("reading the vendor failed: {0}")]
    Fetch(#[from] FetchError),
    #[error("the state topic holds a record that cannot be read: {0}")]
    State(String),
}

/// What a runner has done.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    pub polls: u64,
    pub pages: u64,
    pub items: u64,
    pub events: HashMap<&'static str, u64>,
    pub dead_letters: u64,
    pub findings: u64,
    pub transactions: u64,
    pub aborted: u64,
    /// Bytes of change-event values published.
    pub event_bytes: u64,
    /// Records committed: change events, state records, cursors, dead
    /// letters, findings and heartbeats.
    pub records: u64,
    /// Time the runner waited for the next page to be fetched and prepared.
    pub waited_for_pages: Duration,
    /// Time the runner waited for commits.
    pub waited_for_kafka: Duration,
    /// Time spent handing records to librdkafka: copying them into its
    /// queue, and waiting when the queue is full.
    pub handing_over: Duration,
}

/// The schema ids used in the Confluent framing.
fn schema_id(subject: &str) -> u32 {
    catalogue::local_schema_id(subject).unwrap_or(0)
}

/// The ids framed on every event's key and state record, looked up once
/// rather than searched for in the catalogue three times per event.
#[derive(Clone, Copy, Debug)]
struct HotIds {
    entity_key: u32,
    string_key: u32,
    producer_state: u32,
}

impl HotIds {
    fn new() -> Self {
        Self {
            entity_key: schema_id("EntityKey"),
            string_key: schema_id("StringKey"),
            producer_state: schema_id("ProducerState"),
        }
    }
}

fn rfc3339(millis: i64) -> String {
    let (y, m, d) = time::civil_from_days(millis.div_euclid(86_400_000));
    let ms = millis.rem_euclid(86_400_000);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60
    )
}

fn finding_kind(kind: FindingKind) -> &'static str {
    match kind {
        FindingKind::ZoneAssumed => "ZONE_ASSUMED",
        FindingKind::TimeCutFromDate => "TIME_CUT_FROM_DATE",
        FindingKind::NumberFromString => "NUMBER_FROM_STRING",
        FindingKind::UnusableOptional => "UNUSABLE_OPTIONAL",
        FindingKind::InvalidCivicNumber => "INVALID_CIVIC_NUMBER",
    }
}

/// Create every catalogued topic that does not exist yet.
pub async fn ensure_topics(kafka: &KafkaConfig) -> Result<(), RunError> {
    let admin = Admin::new(kafka, Duration::from_secs(30))?;
    admin.probe().await?;
    let specs: Vec<TopicSpec> = TOPICS
        .iter()
        .map(|t| {
            let mut spec = TopicSpec::new(t.name, t.partitions);
            for (k, v) in t.configs() {
                spec = spec.with_config(k, v);
            }
            if t.cleanup == Cleanup::Compact {
                spec = spec.with_config("min.compaction.lag.ms", "60000");
            }
            spec
        })
        .collect();
    admin.ensure_topics(&specs).await?;
    Ok(())
}

/// The state topic's partition count, which must never change: a
/// connection's state records all go to one partition, chosen from its
/// name, so that a restart reads that partition, not every connection's
/// state.
fn state_partitions() -> Result<i32, RunError> {
    TOPICS
        .iter()
        .find(|t| t.name == STATE_TOPIC)
        .map(|t| t.partitions)
        .ok_or_else(|| RunError::Config(format!("{STATE_TOPIC} is not in the catalogue")))
}

/// The partition of the state topic that holds a connection's state: the
/// first four bytes of SHA-256 of its name, modulo the partition count.
pub fn state_partition(connection: &str) -> Result<i32, RunError> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(connection.as_bytes());
    let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    Ok((n % state_partitions()?.unsigned_abs()) as i32)
}

/// What is held of an entity: the state a pending transaction gives it,
/// else the committed state.
fn held<'a>(
    state: &'a foldhash::HashMap<String, IdMap<Held>>,
    txn: &'a Txn,
    endpoint: &str,
    key: Key<'_>,
) -> Option<&'a Held> {
    match txn.state_of(endpoint, key) {
        Some(pending) => pending,
        None => state.get(endpoint).and_then(|m| m.get(key)),
    }
}

/// What a connection's loop waits on (the `on` label of
/// `skolflode_producer_wait_seconds_total`).
#[derive(Clone, Copy, Debug)]
enum Wait {
    /// The next page, fetched and prepared.
    Pages,
    /// A commit.
    Commit,
    /// librdkafka taking records into its queue.
    HandingOver,
}

/// Where an endpoint's change events go.
#[derive(Clone, Copy, Debug)]
struct Target {
    topic: &'static str,
    schema_id: u32,
}

fn target(endpoint: &str) -> Option<Target> {
    crate::with_entity!(endpoint, E => catalogue::change_topic::<E>().map(|t| Target {
        topic: t.name,
        schema_id: schema_id(E::CHANGE_SUBJECT),
    }))
}

/// A running connection.
pub struct Runner {
    config: ConnectionConfig,
    client: Arc<Ss12000Client>,
    txns: Transactions,
    pseudonymiser: Arc<Pseudonymiser>,
    /// endpoint → entity id → what was last seen.
    state: foldhash::HashMap<String, IdMap<Held>>,
    cursors: HashMap<String, Cursor>,
    targets: HashMap<String, Target>,
    ids: HotIds,
    stats: RunStats,
    metrics: Arc<Metrics>,
    /// `metrics.events` by op, resolved once (labels are hashed per lookup).
    event_counters: foldhash::HashMap<&'static str, prometheus::IntCounter>,
    client_seen: crate::ss12000::client::Stats,
    /// The vendor's clock at its last answer.
    last_server_time: Option<i64>,
    /// Full reads begun since the start.
    full_reads: u32,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("connection", &self.config.name)
            .finish_non_exhaustive()
    }
}

/// Where a read stands while its pages are processed.
struct Read<'a> {
    endpoint: &'a str,
    target: Target,
    /// The first full read: new entities are snapshot reads.
    initial: bool,
    /// A full read: its number, marked on every entity it sees, for
    /// reconciliation (`None` for incremental reads).
    full: Option<u32>,
    /// The newest `meta.modified` seen.
    newest: Option<i64>,
}

impl Runner {
    /// Fence earlier instances of this connection, then rebuild the state
    /// from the state topic.
    pub async fn start(
        config: ConnectionConfig,
        kafka: &KafkaConfig,
        pseudonymiser: Arc<Pseudonymiser>,
    ) -> Result<Self, RunError> {
        if config.name.is_empty() || config.name.contains('/') {
            return Err(RunError::Config(
                "a connection needs a name without '/'".into(),
            ));
        }
        if let Some(bad) = config
            .endpoints
            .iter()
            .find(|e| !ENDPOINTS.contains(&e.as_str()))
        {
            return Err(RunError::Config(format!("unknown endpoint {bad:?}")));
        }
        if config.max_transaction_records < 100 {
            return Err(RunError::Config(
                "max_transaction_records must be at least 100".into(),
            ));
        }
        if config.full_read_every < 1 {
            return Err(RunError::Config(
                "full_read_every must be at least 1".into(),
            ));
        }
        let mut targets = HashMap::new();
        for endpoint in ENDPOINTS {
            let t = target(endpoint).ok_or_else(|| {
                RunError::Config(format!("no change topic for {endpoint} in the catalogue"))
            })?;
            targets.insert((*endpoint).to_owned(), t);
        }
        let client = Arc::new(Ss12000Client::new(config.client.clone())?);
        let mut producer_config =
            kafka.transactional_producer(&format!("skolflode-produce-{}", config.name))?;
        // Tuning defaults; an operator's `[kafka.properties]` wins.
        for (key, value) in PRODUCER_DEFAULTS {
            if !kafka.properties.contains_key(*key) {
                producer_config.set(*key, *value);
            }
        }
        let txns = Transactions::create(&producer_config, state_partition(&config.name)?)?;
        // Fences a predecessor and aborts what it left open, so that the
        // state topic's end can be read under read_committed.
        txns.init().await?;
        let mut runner = Self {
            config,
            client,
            txns,
            pseudonymiser,
            state: Default::default(),
            cursors: HashMap::new(),
            targets,
            ids: HotIds::new(),
            stats: RunStats::default(),
            metrics: Arc::new(Metrics::new().map_err(|e| RunError::Config(e.to_string()))?),
            event_counters: Default::default(),
            client_seen: Default::default(),
            last_server_time: None,
            full_reads: 0,
        };
        runner.load_state(kafka).await?;
        Ok(runner)
    }

    /// Count into these metrics (shared by every connection of a process).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self.event_counters.clear();
        self
    }

    /// What the runner has done.
    pub fn stats(&self) -> &RunStats {
        &self.stats
    }

    /// Entities held for an endpoint.
    pub fn held(&self, endpoint: &str) -> usize {
        self.state.get(endpoint).map_or(0, |m| m.len())
    }

    async fn load_state(&mut self, kafka: &KafkaConfig) -> Result<(), RunError> {
        let mut client = kafka.build()?;
        client
            .set(
                "group.id",
                format!("skolflode-produce-{}-state-load", self.config.name),
            )
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .set("auto.offset.reset", "earliest");
        let prefix = format!("{}/", self.config.name);
        let partition = state_partition(&self.config.name)?;
        let expected = state_partitions()?;
        let loaded =
            tokio::task::spawn_blocking(move || read_state(client, &prefix, partition, expected))
                .await
                .map_err(|e| RunError::Fatal(e.to_string()))??;
        for (key, value) in loaded {
            let mut parts = key.splitn(3, '/');
            let (_, Some(endpoint), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            match value {
                None => {
                    if let Some(m) = self.state.get_mut(endpoint) {
                        m.remove(Key::new(id));
                    }
                }
                Some(ProducerState {
                    entity: Some(e), ..
                }) => {
                    let held =
                        Held::from_state(e).map_err(|e| RunError::State(format!("{key}: {e}")))?;
                    self.state
                        .entry(endpoint.to_owned())
                        .or_default()
                        .insert(Key::new(id), held);
                }
                Some(ProducerState {
                    cursor: Some(c), ..
                }) => {
                    self.cursors.insert(endpoint.to_owned(), c);
                }
                Some(_) => {}
            }
        }
        tracing::info!(
            connection = %self.config.name,
            entities = self.state.values().map(|m| m.len()).sum::<usize>(),
            cursors = self.cursors.len(),
            "state loaded"
        );
        Ok(())
    }

    /// Run polls until `stop` resolves.
    pub async fn run(
        mut self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<RunStats, RunError> {
        loop {
            match self.poll().await {
                Ok(()) => {}
                Err(RunError::Fatal(e)) => return Err(RunError::Fatal(e)),
                Err(e) => {
                    tracing::warn!(connection = %self.config.name, error = %e, "poll failed; retrying at the next poll")
                }
            }
            let wait = Duration::from_secs(self.config.poll_interval_secs);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => return Ok(self.stats),
            }
            if *stop.borrow() {
                return Ok(self.stats);
            }
        }
    }

    /// One poll: every endpoint, then the deletion feed.
    pub async fn poll(&mut self) -> Result<(), RunError> {
        let endpoints = self.config.endpoints.clone();
        let events_before: u64 = self.stats.events.values().sum();
        let mut first_error = None;
        for endpoint in &endpoints {
            if let Err(e) = self.read_endpoint(endpoint).await {
                if matches!(e, RunError::Fatal(_)) {
                    return Err(e);
                }
                tracing::warn!(connection = %self.config.name, endpoint, error = %e, "endpoint read failed");
                first_error.get_or_insert(e);
            }
        }
        if self.config.deletion_feed {
            if let Err(e) = self.read_deletions().await {
                if matches!(e, RunError::Fatal(_)) {
                    return Err(e);
                }
                first_error.get_or_insert(e);
            }
        }
        self.stats.polls += 1;
        // The heartbeat says the connection is alive even when nothing
        // changed, and whether its reads succeeded.
        let heartbeat = Heartbeat {
            connection: self.config.name.clone(),
            vendor: "ss12000".into(),
            at: TimestampMillis(now_millis()),
            server_time: self.last_server_time.map(TimestampMillis),
            ok: first_error.is_none(),
            polls: self.stats.polls as i64,
            events: (self.stats.events.values().sum::<u64>() - events_before) as i64,
        };
        let mut txn = Txn::default();
        txn.push((
            HEARTBEAT_TOPIC,
            wire::encode(schema_id("StringKey"), &self.config.name),
            Some(wire::encode(schema_id("Heartbeat"), &heartbeat)),
        ));
        if let Err(e) = self.commit(&mut txn).await {
            if matches!(e, RunError::Fatal(_)) {
                return Err(e);
            }
            first_error.get_or_insert(e);
        }
        let name = self.config.name.as_str();
        let outcome = if first_error.is_none() {
            "ok"
        } else {
            "failed"
        };
        self.metrics.polls.with_label_values(&[name, outcome]).inc();
        let now = self.client.stats();
        self.metrics.client_stats(name, &now, &self.client_seen);
        self.client_seen = now;
        for (endpoint, held) in &self.state {
            self.metrics
                .held_entities
                .with_label_values(&[name, endpoint])
                .set(held.len() as i64);
        }
        let failed = self.txns.failed_deliveries();
        if failed > 0 {
            tracing::warn!(connection = %name, failed, "records not delivered since start (their transactions aborted)");
        }
        first_error.map_or(Ok(()), Err)
    }

    fn source(&self, endpoint: &str, cursor: Option<&str>, server_time: Option<i64>) -> Source {
        Source {
            vendor: "ss12000".into(),
            connection: self.config.name.clone(),
            endpoint: format!("/{endpoint}"),
            cursor: cursor.map(str::to_owned),
            server_time: server_time.map(TimestampMillis),
        }
    }

    /// Read an endpoint; whatever was read before a failure is committed
    /// with its state (the cursor moves only when a read completes, so the
    /// next poll reads it again and the hashes absorb the repeats).
    async fn read_endpoint(&mut self, endpoint: &str) -> Result<(), RunError> {
        let mut txn = Txn::default();
        let read = self.read_pages(endpoint, &mut txn).await;
        if matches!(read, Err(RunError::Fatal(_))) {
            return read;
        }
        let committed = self.commit(&mut txn).await;
        read.and(committed)
    }

    async fn read_pages(&mut self, endpoint: &str, txn: &mut Txn) -> Result<(), RunError> {
        let cursor = self.cursors.get(endpoint).cloned();
        let polls = cursor.as_ref().map_or(0, |c| c.polls);
        let full = cursor
            .as_ref()
            .is_none_or(|c| c.modified_after.is_none() || polls % self.config.full_read_every == 0);
        let modified_after = if full {
            None
        } else {
            cursor.as_ref().and_then(|c| c.modified_after.clone())
        };
        let target = *self
            .targets
            .get(endpoint)
            .ok_or_else(|| RunError::Config(format!("unknown endpoint {endpoint:?}")))?;
        let mut read = Read {
            endpoint,
            target,
            initial: cursor.as_ref().is_none_or(|c| c.full_reads == 0),
            full: full.then(|| {
                self.full_reads += 1;
                self.full_reads
            }),
            newest: None,
        };
        let mut pages = fetch_ahead(
            Arc::clone(&self.client),
            Arc::clone(&self.pseudonymiser),
            self.config.name.clone(),
            endpoint.to_owned(),
            modified_after.clone(),
        );
        loop {
            let waiting = Instant::now();
            let Some((token, fetched)) = pages.recv().await else {
                return Err(RunError::Fatal("the page fetcher stopped".into()));
            };
            let fetched = match fetched {
                Ok(job) => Ok(job.await.map_err(|e| RunError::Fatal(e.to_string()))?),
                Err(e) => Err(e),
            };
            self.waited(Wait::Pages, waiting);
            let page = match fetched {
                Ok(page) => page,
                Err(FetchError::Malformed {
                    url, reason, raw, ..
                }) => {
                    // Nothing is lost: the page goes to the dead-letter topic
                    // and the read starts over at the next poll.
                    self.dead_letter(txn, &url, &reason, None, raw);
                    return Err(RunError::Fetch(FetchError::Malformed {
                        url,
                        reason,
                        raw: Vec::new(),
                        attempts: 0,
                    }));
                }
                Err(e) => return Err(e.into()),
            };
            self.stats.pages += 1;
            if page.server_time.is_some() {
                self.last_server_time = page.server_time;
            }
            let name = self.config.name.as_str();
            self.metrics
                .pages
                .with_label_values(&[name, endpoint])
                .inc();
            self.metrics
                .items
                .with_label_values(&[name, endpoint])
                .inc_by(page.items.len() as u64);
            if let (Some(server), Some(n)) = (page.server_time, read.newest) {
                self.metrics
                    .lag_seconds
                    .with_label_values(&[name, endpoint])
                    .set((server - n) / 1000);
            }
            let observed_at = TimestampMillis(now_millis());
            let source = self.source(
                endpoint,
                token.as_deref().or(modified_after.as_deref()),
                page.server_time,
            );
            self.stats.items += page.items.len() as u64;
            for item in page.items {
                match item {
                    Prepared::Version(version, findings) => {
                        self.version(&mut read, version, findings, &source, observed_at, txn)
                    }
                    Prepared::Rejected { id, reason, raw } => {
                        self.dead_letter(txn, &source.endpoint, &reason, id, raw)
                    }
                }
            }
            if !page.more {
                if let Some(number) = read.full {
                    self.reconcile(endpoint, number, &source, observed_at, txn);
                }
                let previous = cursor.as_ref().and_then(|c| c.modified_after.clone());
                let modified_after = read
                    .newest
                    .map(|n| rfc3339(n - self.config.overlap_secs * 1000))
                    .or(previous);
                txn.cursors.insert(
                    endpoint.to_owned(),
                    Cursor {
                        modified_after,
                        full_reads: cursor.as_ref().map_or(0, |c| c.full_reads) + i64::from(full),
                        polls: polls + 1,
                        updated_at: observed_at,
                    },
                );
                return Ok(());
            }
            if txn.len() >= self.config.max_transaction_records {
                self.commit(txn).await?;
            } else {
                self.send(txn).await?;
            }
        }
    }

    /// One version the vendor shows: an event if it is new.
    fn version(
        &mut self,
        read: &mut Read<'_>,
        version: Version,
        findings: Vec<Finding>,
        source: &Source,
        observed_at: TimestampMillis,
        txn: &mut Txn,
    ) {
        for f in findings {
            self.finding(txn, read.endpoint, &version.id, f, observed_at);
        }
        if let Some(m) = version.modified {
            read.newest = Some(read.newest.map_or(m, |n| n.max(m)));
        }
        let key = Key::new(&version.id);
        let known = held(&self.state, txn, read.endpoint, key);
        let Some(op) = detect::classify(known, &version.hash, read.initial) else {
            if let Some(number) = read.full {
                self.mark_seen(txn, read.endpoint, key, number);
            }
            return;
        };
        let mut value = Vec::with_capacity(version.image.len() * 2 + 256);
        wire::header_into(read.target.schema_id, &mut value);
        detect::encode_change(&mut value, op, known, &version, source, observed_at);
        let held = Held {
            hash: version.hash,
            image: version.image.into_boxed_slice(),
            observed_at: observed_at.0,
            seen_in: read.full.unwrap_or(0),
        };
        self.emit(read.endpoint, read.target, key, op, value, Some(held), txn);
    }

    fn finding(
        &mut self,
        txn: &mut Txn,
        endpoint: &str,
        id: &str,
        f: Finding,
        observed_at: TimestampMillis,
    ) {
        self.stats.findings += 1;
        self.metrics
            .findings
            .with_label_values(&[&self.config.name, finding_kind(f.kind)])
            .inc();
        let finding = QualityFinding {
            connection: self.config.name.clone(),
            endpoint: format!("/{endpoint}"),
            entity_id: id.to_owned(),
            field: f.field,
            kind: finding_kind(f.kind).to_owned(),
            observed_at,
        };
        txn.push((
            FINDINGS_TOPIC,
            wire::encode(schema_id("StringKey"), &self.config.name),
            Some(wire::encode(schema_id("QualityFinding"), &finding)),
        ));
    }

    /// Queue a change event (framed `value`) and the state record that
    /// explains it.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        endpoint: &str,
        target: Target,
        key: Key<'_>,
        op: Op,
        value: Vec<u8>,
        state: Option<Held>,
        txn: &mut Txn,
    ) {
        let id = key.id();
        *self.stats.events.entry(op.symbol()).or_default() += 1;
        let counter = match self.event_counters.get(op.symbol()) {
            Some(c) => c,
            None => self.event_counters.entry(op.symbol()).or_insert(
                self.metrics
                    .events
                    .with_label_values(&[&self.config.name, op.symbol()]),
            ),
        };
        counter.inc();
        self.stats.event_bytes += value.len() as u64;
        // EntityKey { connection, entity_id }, framed.
        let mut event_key = Vec::with_capacity(self.config.name.len() + id.len() + 8);
        wire::header_into(self.ids.entity_key, &mut event_key);
        write_str(&mut event_key, &self.config.name);
        write_str(&mut event_key, id);
        txn.push((target.topic, event_key, Some(value)));
        // StringKey "<connection>/<endpoint>/<id>", framed.
        let len = self.config.name.len() + endpoint.len() + id.len() + 2;
        let mut state_key = Vec::with_capacity(len + 16);
        wire::header_into(self.ids.string_key, &mut state_key);
        write_long(&mut state_key, len as i64);
        for part in [
            self.config.name.as_bytes(),
            b"/",
            endpoint.as_bytes(),
            b"/",
            id.as_bytes(),
        ] {
            state_key.extend_from_slice(part);
        }
        let state_value = state.as_ref().map(|s| {
            let mut out = Vec::with_capacity(s.image.len() + 96);
            wire::header_into(self.ids.producer_state, &mut out);
            s.encode_state(&mut out);
            out
        });
        txn.push((STATE_TOPIC, state_key, state_value));
        txn.set_state(endpoint, key, state);
    }

    fn dead_letter(
        &mut self,
        txn: &mut Txn,
        endpoint: &str,
        reason: &str,
        entity_id: Option<String>,
        raw: Vec<u8>,
    ) {
        self.stats.dead_letters += 1;
        self.metrics
            .dead_letters
            .with_label_values(&[&self.config.name])
            .inc();
        tracing::warn!(connection = %self.config.name, endpoint, reason, "dead letter");
        let letter = DeadLetter {
            connection: self.config.name.clone(),
            endpoint: endpoint.to_owned(),
            reason: reason.to_owned(),
            entity_id,
            raw: Bytes(raw),
            observed_at: TimestampMillis(now_millis()),
        };
        txn.push((
            DEAD_LETTER_TOPIC,
            wire::encode(schema_id("StringKey"), &self.config.name),
            Some(wire::encode(schema_id("DeadLetter"), &letter)),
        ));
    }

    /// An unchanged entity seen by full read `number`.
    fn mark_seen(&mut self, txn: &mut Txn, endpoint: &str, key: Key<'_>, number: u32) {
        if let Some(pending) = txn.pending_mut(endpoint, key) {
            pending.seen_in = number;
        } else if let Some(held) = self.state.get_mut(endpoint).and_then(|m| m.get_mut(key)) {
            held.seen_in = number;
        }
    }

    /// After full read `number`: whatever is held but was not seen is gone.
    fn reconcile(
        &mut self,
        endpoint: &str,
        number: u32,
        source: &Source,
        observed_at: TimestampMillis,
        txn: &mut Txn,
    ) {
        // What this read changed is pending in `txn` (or committed by it,
        // marked); what it left alone is marked in the committed state.
        let gone: Vec<String> = self
            .state
            .get(endpoint)
            .map(|m| {
                m.iter()
                    .filter(|(id, held)| match txn.state_of(endpoint, Key::new(id)) {
                        Some(Some(pending)) => pending.seen_in != number,
                        Some(None) => false,
                        None => held.seen_in != number,
                    })
                    .map(|(id, _)| id.to_owned())
                    .collect()
            })
            .unwrap_or_default();
        for id in gone {
            self.delete(endpoint, &id, source, observed_at, txn);
        }
    }

    fn delete(
        &mut self,
        endpoint: &str,
        id: &str,
        source: &Source,
        observed_at: TimestampMillis,
        txn: &mut Txn,
    ) {
        let Some(&target) = self.targets.get(endpoint) else {
            return;
        };
        let key = Key::new(id);
        let Some(known) = held(&self.state, txn, endpoint, key) else {
            return;
        };
        let mut value = Vec::with_capacity(known.image.len() + 256);
        wire::header_into(target.schema_id, &mut value);
        detect::encode_delete(&mut value, known, id, source, observed_at);
        self.emit(endpoint, target, key, Op::Delete, value, None, txn);
    }

    async fn read_deletions(&mut self) -> Result<(), RunError> {
        const FEED: &str = "#deletedEntities";
        let cursor = self.cursors.get(FEED).cloned();
        let after = cursor.as_ref().and_then(|c| c.modified_after.clone());
        let (deleted, server_time) = self.client.deleted_entities(after.as_deref()).await?;
        let observed_at = TimestampMillis(now_millis());
        let mut txn = Txn::default();
        let source = self.source("deletedEntities", after.as_deref(), None);
        for (kind, ids) in deleted {
            if !self.config.endpoints.contains(&kind) {
                continue;
            }
            for id in ids {
                self.delete(&kind, &id, &source, observed_at, &mut txn);
            }
        }
        txn.cursors.insert(
            FEED.to_owned(),
            Cursor {
                // The vendor's clock, not ours: deletions carry its times.
                modified_after: server_time
                    .map(|t| rfc3339(t - self.config.overlap_secs * 1000))
                    .or(after),
                full_reads: 0,
                polls: cursor.map_or(0, |c| c.polls) + 1,
                updated_at: observed_at,
            },
        );
        self.commit(&mut txn).await
    }

    /// Hand what is queued to librdkafka.
    async fn send(&mut self, txn: &mut Txn) -> Result<(), RunError> {
        let waiting = Instant::now();
        let sent = self.txns.send(txn).await;
        self.waited(Wait::HandingOver, waiting);
        if sent.is_err() {
            self.aborted();
        }
        sent
    }

    /// Commit the transaction with its cursors; the in-memory state
    /// follows only if it commits.
    async fn commit(&mut self, txn: &mut Txn) -> Result<(), RunError> {
        let cursors: Vec<Record> = txn
            .cursors
            .iter()
            .map(|(endpoint, cursor)| {
                let key = format!("{}/{endpoint}/#cursor", self.config.name);
                let value = ProducerState {
                    entity: None,
                    cursor: Some(cursor.clone()),
                };
                (
                    STATE_TOPIC,
                    wire::encode(schema_id("StringKey"), &key),
                    Some(wire::encode(schema_id("ProducerState"), &value)),
                )
            })
            .collect();
        for record in cursors {
            txn.push(record);
        }
        let records = txn.len() as u64;
        let waiting = Instant::now();
        let committed = self.txns.commit(txn).await;
        self.waited(Wait::Commit, waiting);
        match committed {
            Ok(None) => {}
            Ok(Some(open)) => {
                self.stats.transactions += 1;
                self.stats.records += records;
                self.metrics
                    .transactions
                    .with_label_values(&[&self.config.name, "committed"])
                    .inc();
                self.metrics
                    .transaction_seconds
                    .with_label_values(&[&self.config.name])
                    .observe(open.as_secs_f64());
            }
            Err(e) => {
                self.aborted();
                return Err(e);
            }
        }
        for (endpoint, mut states) in txn.state.drain() {
            states.apply_to(self.state.entry(endpoint).or_default());
        }
        self.cursors.extend(txn.cursors.drain());
        Ok(())
    }

    /// Count the time since `since` as waiting on `on`.
    fn waited(&mut self, on: Wait, since: Instant) {
        let waited = since.elapsed();
        let (total, label) = match on {
            Wait::Pages => (&mut self.stats.waited_for_pages, "pages"),
            Wait::Commit => (&mut self.stats.waited_for_kafka, "commit"),
            Wait::HandingOver => (&mut self.stats.handing_over, "handing_over"),
        };
        *total += waited;
        self.metrics
            .wait_seconds
            .with_label_values(&[&self.config.name, label])
            .inc_by(waited.as_secs_f64());
    }

    fn aborted(&mut self) {
        self.stats.aborted += 1;
        self.metrics
            .transactions
            .with_label_values(&[&self.config.name, "aborted"])
            .inc();
    }
}

/// Read the state topic to its end: every record whose key starts with
/// `prefix`, newest last.
fn read_state(
    client: rdkafka::ClientConfig,
    prefix: &str,
    partition: i32,
    expected: i32,
) -> Result<Vec<(String, Option<ProducerState>)>, RunError> {
    let mut out = Vec::new();
    let found = std::cell::Cell::new(expected);
    let wanted = |p: skolflode_kafka::Partitions| {
        found.set(p.count);
        p.count == expected && p.partition == partition
    };
    skolflode_kafka::read_partitions_to_end(
        client,
        STATE_TOPIC,
        wanted,
        Duration::from_secs(600),
        |m| {
            let Some(key) = m.key() else { return Ok(()) };
            let (_, key_body) = wire::split(key).map_err(|e| RunError::State(e.to_string()))?;
            let key = String::decode_all(key_body).map_err(|e| RunError::State(e.to_string()))?;
            if !key.starts_with(prefix) {
                return Ok(());
            }
            let value = match m.payload() {
                None => None,
                Some(bytes) => {
                    let (_, body) =
                        wire::split(bytes).map_err(|e| RunError::State(e.to_string()))?;
                    Some(
                        ProducerState::decode_all(body)
                            .map_err(|e| RunError::State(e.to_string()))?,
                    )
                }
            };
            out.push((key, value));
            Ok::<(), RunError>(())
        },
    )?;
    if found.get() != expected {
        return Err(RunError::State(format!(
            "{STATE_TOPIC} has {} partitions, skolflode expects {expected}: a connection's state \
             lives in the partition its name hashes to, so the count must never change",
            found.get()
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_s_state_has_one_stable_partition() {
        // SHA-256("kommun-0180-admin") begins 0x882a3a68 (computed with
        // Python's hashlib); 0x882a3a68 mod 6 = 4. The value is a contract
        // with the state already written, so it is pinned here.
        assert_eq!(state_partition("kommun-0180-admin").ok(), Some(4));
        let spread: std::collections::HashSet<i32> = (0..60)
            .filter_map(|i| state_partition(&format!("kommun-{i:04}")).ok())
            .collect();
        assert_eq!(spread.len(), 6, "names spread over every partition");
    }

    #[test]
    fn rfc3339_of_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_756_677_600_000), "2025-08-31T22:00:00Z");
        assert_eq!(prepare::civil_today(1_756_677_600_000), (2025, 8, 31));
    }
}

//! One vendor connection, read continuously and published exactly once.
//!
//! Lifecycle: [`Runner::start`] fences any earlier instance (Kafka
//! transactional id per connection) and rebuilds the state from the
//! compacted state topic — no local file is the source of truth; then
//! [`Runner::poll`] reads every endpoint (a full read the first time and
//! every `full_read_every` polls, incremental reads with
//! `meta.modified.after` in between) and the deletion feed.
//!
//! Each page is one Kafka transaction holding its change events, the state
//! records that explain them, dead letters and quality findings, and — on an
//! endpoint's last page — the new cursor and the deletions a full read
//! revealed. The in-memory state follows only after a commit. A producer
//! killed at any point restarts from the last committed cursor; what it
//! reads again is absorbed by the content hashes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError as ClientError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::Deserialize;
use serde_json::Value;
use skolflode_kafka::{classify, Admin, KafkaConfig, TopicSpec, TxnErrorClass};
use skolflode_schemas::catalogue::{self, Cleanup, TOPICS};
use skolflode_schemas::envelope::Entity;
use skolflode_schemas::records::{
    Cursor, DeadLetter, EntityState, Heartbeat, ProducerState, QualityFinding,
};
use skolflode_schemas::{wire, AvroType, Bytes, ChangeEvent, EntityKey, Source, TimestampMillis};

use crate::detect::{self, Outcome};
use crate::metrics::Metrics;
use crate::pseudonym::Pseudonymiser;
use crate::ss12000::client::{ClientConfig, FetchError, Ss12000Client};
use crate::ss12000::map::{Context, FindingKind, MapError, Mapped, Ss12000Entity};
use crate::ss12000::time;

/// The state topic, dead-letter topic and findings topic.
pub const STATE_TOPIC: &str = "skolflode.producer.state";
pub const DEAD_LETTER_TOPIC: &str = "skolflode.deadletter";
pub const FINDINGS_TOPIC: &str = "skolflode.quality.findings";
pub const HEARTBEAT_TOPIC: &str = "skolflode.heartbeats";

const TXN_TIMEOUT: Duration = Duration::from_secs(30);

/// Records after which a transaction is committed before the read goes on.
const MAX_TXN_RECORDS: usize = 8_000;

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
}

/// A record to send: topic, framed key, framed value (`None`: tombstone).
type Record = (&'static str, Vec<u8>, Option<Vec<u8>>);

/// Records of one transaction, and the state they leave behind.
#[derive(Default)]
struct Txn {
    records: Vec<Record>,
    state: HashMap<(String, String), Option<EntityState>>,
    cursors: HashMap<String, Cursor>,
}

/// The schema ids used in the Confluent framing.
fn schema_id(subject: &str) -> u32 {
    catalogue::local_schema_id(subject).unwrap_or(0)
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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

/// The UTC date of an instant, for reading 10-digit civic numbers.
fn civil_today(millis: i64) -> (i32, u32, u32) {
    let (y, m, d) = time::civil_from_days(millis.div_euclid(86_400_000));
    (y as i32, m as u32, d as u32)
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

/// A running connection.
pub struct Runner {
    config: ConnectionConfig,
    client: Arc<Ss12000Client>,
    producer: FutureProducer,
    pseudonymiser: Arc<Pseudonymiser>,
    state: HashMap<String, HashMap<String, EntityState>>,
    cursors: HashMap<String, Cursor>,
    stats: RunStats,
    metrics: Arc<Metrics>,
    client_seen: crate::ss12000::client::Stats,
    /// The vendor's clock at its last answer.
    last_server_time: Option<i64>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("connection", &self.config.name)
            .finish_non_exhaustive()
    }
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
        if config.full_read_every < 1 {
            return Err(RunError::Config(
                "full_read_every must be at least 1".into(),
            ));
        }
        let client = Arc::new(Ss12000Client::new(config.client.clone())?);
        let mut producer_config =
            kafka.transactional_producer(&format!("skolflode-produce-{}", config.name))?;
        producer_config
            .set("transaction.timeout.ms", "60000")
            .set("linger.ms", "5")
            .set("compression.type", "lz4");
        let producer: FutureProducer = producer_config.create()?;
        // Fences a predecessor and aborts what it left open, so that the
        // state topic's end can be read under read_committed.
        let p = producer.clone();
        tokio::task::spawn_blocking(move || p.init_transactions(TXN_TIMEOUT))
            .await
            .map_err(|e| RunError::Fatal(e.to_string()))??;
        let mut runner = Self {
            config,
            client,
            producer,
            pseudonymiser,
            state: HashMap::new(),
            cursors: HashMap::new(),
            stats: RunStats::default(),
            metrics: Arc::new(Metrics::new().map_err(|e| RunError::Config(e.to_string()))?),
            client_seen: Default::default(),
            last_server_time: None,
        };
        runner.load_state(kafka).await?;
        Ok(runner)
    }

    /// What the runner has done.
    /// Count into these metrics (shared by every connection of a process).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn stats(&self) -> &RunStats {
        &self.stats
    }

    /// Entities held for an endpoint.
    pub fn held(&self, endpoint: &str) -> usize {
        self.state.get(endpoint).map_or(0, HashMap::len)
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
        let loaded = tokio::task::spawn_blocking(move || read_state(client, &prefix))
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
                        m.remove(id);
                    }
                }
                Some(ProducerState {
                    entity: Some(e), ..
                }) => {
                    self.state
                        .entry(endpoint.to_owned())
                        .or_default()
                        .insert(id.to_owned(), e);
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
            entities = self.state.values().map(HashMap::len).sum::<usize>(),
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
        txn.records.push((
            HEARTBEAT_TOPIC,
            wire::encode(schema_id("StringKey"), &self.config.name),
            Some(wire::encode(schema_id("Heartbeat"), &heartbeat)),
        ));
        if let Err(e) = self.commit(txn).await {
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

    async fn read_endpoint(&mut self, endpoint: &str) -> Result<(), RunError> {
        let cursor = self.cursors.get(endpoint).cloned();
        let polls = cursor.as_ref().map_or(0, |c| c.polls);
        let full = cursor
            .as_ref()
            .is_none_or(|c| c.modified_after.is_none() || polls % self.config.full_read_every == 0);
        let initial = cursor.as_ref().is_none_or(|c| c.full_reads == 0);
        let modified_after = if full {
            None
        } else {
            cursor.as_ref().and_then(|c| c.modified_after.clone())
        };
        let mut seen: HashSet<String> = HashSet::new();
        let mut newest: Option<i64> = None;
        // Pages are fetched ahead while earlier ones are processed and
        // committed; fetching touches no state.
        let mut pages = fetch_ahead(
            Arc::clone(&self.client),
            endpoint.to_owned(),
            modified_after.clone(),
        );
        // A transaction spans pages until it holds enough records: fewer
        // commits, same guarantees (a crash redoes the uncommitted pages).
        let mut txn = Txn::default();
        loop {
            let Some((token, fetched)) = pages.recv().await else {
                return Err(RunError::Fatal("the page fetcher stopped".into()));
            };
            let page = match fetched {
                Ok(page) => page,
                Err(FetchError::Malformed {
                    url, reason, raw, ..
                }) => {
                    // Nothing is lost: the page goes to the dead-letter topic
                    // and the read starts over at the next poll.
                    self.dead_letter(&mut txn, &url, &reason, None, raw);
                    self.commit(txn).await?;
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
            self.metrics
                .pages
                .with_label_values(&[&self.config.name, endpoint])
                .inc();
            self.metrics
                .items
                .with_label_values(&[&self.config.name, endpoint])
                .inc_by(page.items.len() as u64);
            if let (Some(server), Some(n)) = (page.server_time, newest) {
                self.metrics
                    .lag_seconds
                    .with_label_values(&[&self.config.name, endpoint])
                    .set((server - n) / 1000);
            }
            let observed_at = TimestampMillis(now_millis());
            let source = self.source(
                endpoint,
                token.as_deref().or(modified_after.as_deref()),
                page.server_time,
            );
            let today = civil_today(page.server_time.unwrap_or(observed_at.0));
            for item in &page.items {
                self.stats.items += 1;
                self.item(
                    endpoint,
                    item,
                    initial,
                    &source,
                    observed_at,
                    today,
                    &mut txn,
                    &mut seen,
                    &mut newest,
                );
            }
            let last = page.next.is_none();
            if last {
                if full {
                    self.reconcile(endpoint, &seen, &source, observed_at, &mut txn);
                }
                let previous = cursor.as_ref().and_then(|c| c.modified_after.clone());
                let modified_after = newest
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
            }
            if last {
                return self.commit(txn).await;
            }
            if txn.records.len() >= MAX_TXN_RECORDS {
                self.commit(std::mem::take(&mut txn)).await?;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn item(
        &mut self,
        endpoint: &str,
        item: &Value,
        initial: bool,
        source: &Source,
        observed_at: TimestampMillis,
        today: (i32, u32, u32),
        txn: &mut Txn,
        seen: &mut HashSet<String>,
        newest: &mut Option<i64>,
    ) {
        let cx = Context {
            pseudonymiser: &self.pseudonymiser,
            source: &self.config.name,
            today,
        };
        crate::with_entity!(endpoint, E => {
            let mapped = E::map(item, &cx);
            self.observe::<E>(endpoint, item, mapped, initial, source, observed_at, txn, seen, newest)
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn observe<E: Entity>(
        &mut self,
        endpoint: &str,
        item: &Value,
        mapped: Result<Mapped<E>, MapError>,
        initial: bool,
        source: &Source,
        observed_at: TimestampMillis,
        txn: &mut Txn,
        seen: &mut HashSet<String>,
        newest: &mut Option<i64>,
    ) {
        let mapped = match mapped {
            Ok(m) => m,
            Err(e) => {
                let id = item.get("id").and_then(Value::as_str).map(str::to_owned);
                let raw = item.to_string().into_bytes();
                self.dead_letter(txn, &format!("/{endpoint}"), &e.to_string(), id, raw);
                return;
            }
        };
        let mut entity = mapped.entity;
        let id = entity.id().to_owned();
        for f in mapped.findings {
            self.stats.findings += 1;
            self.metrics
                .findings
                .with_label_values(&[&self.config.name, finding_kind(f.kind)])
                .inc();
            let finding = QualityFinding {
                connection: self.config.name.clone(),
                endpoint: format!("/{endpoint}"),
                entity_id: id.clone(),
                field: f.field,
                kind: finding_kind(f.kind).to_owned(),
                observed_at,
            };
            txn.records.push((
                FINDINGS_TOPIC,
                wire::encode(schema_id("StringKey"), &self.config.name),
                Some(wire::encode(schema_id("QualityFinding"), &finding)),
            ));
        }
        if let Some(m) = entity.meta_mut().as_ref().and_then(|m| m.modified) {
            *newest = Some(newest.map_or(m.0, |n| n.max(m.0)));
        }
        seen.insert(id.clone());
        let key = (endpoint.to_owned(), id.clone());
        let known = match txn.state.get(&key) {
            Some(pending) => pending.as_ref(),
            None => self.state.get(endpoint).and_then(|m| m.get(&id)),
        };
        if let Outcome::Changed(event, state) =
            detect::observe(known, entity, initial, source, observed_at)
        {
            self.emit(endpoint, &id, *event, Some(state), txn);
        }
    }

    fn emit<E: Entity>(
        &mut self,
        endpoint: &str,
        id: &str,
        event: ChangeEvent<E>,
        state: Option<EntityState>,
        txn: &mut Txn,
    ) {
        let Some(topic) = catalogue::change_topic::<E>() else {
            return;
        };
        *self.stats.events.entry(event.op.symbol()).or_default() += 1;
        self.metrics
            .events
            .with_label_values(&[&self.config.name, event.op.symbol()])
            .inc();
        let key = EntityKey {
            connection: self.config.name.clone(),
            entity_id: id.to_owned(),
        };
        let value = wire::encode(schema_id(E::CHANGE_SUBJECT), &event);
        self.stats.event_bytes += value.len() as u64;
        txn.records.push((
            topic.name,
            wire::encode(schema_id("EntityKey"), &key),
            Some(value),
        ));
        let state_key = format!("{}/{endpoint}/{id}", self.config.name);
        let value = state.as_ref().map(|s| {
            wire::encode(
                schema_id("ProducerState"),
                &ProducerState {
                    entity: Some(s.clone()),
                    cursor: None,
                },
            )
        });
        txn.records.push((
            STATE_TOPIC,
            wire::encode(schema_id("StringKey"), &state_key),
            value,
        ));
        txn.state
            .insert((endpoint.to_owned(), id.to_owned()), state);
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
        txn.records.push((
            DEAD_LETTER_TOPIC,
            wire::encode(schema_id("StringKey"), &self.config.name),
            Some(wire::encode(schema_id("DeadLetter"), &letter)),
        ));
    }

    /// After a full read: whatever is held but was not seen is gone.
    fn reconcile(
        &mut self,
        endpoint: &str,
        seen: &HashSet<String>,
        source: &Source,
        observed_at: TimestampMillis,
        txn: &mut Txn,
    ) {
        let gone: Vec<String> = self
            .state
            .get(endpoint)
            .map(|m| m.keys().filter(|id| !seen.contains(*id)).cloned().collect())
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
        let key = (endpoint.to_owned(), id.to_owned());
        let known = match txn.state.get(&key) {
            Some(pending) => pending.clone(),
            None => self.state.get(endpoint).and_then(|m| m.get(id)).cloned(),
        };
        let Some(known) = known else { return };
        crate::with_entity!(endpoint, E => {
            let event = detect::deleted::<E>(&known, id, source, observed_at);
            self.emit(endpoint, id, event, None, txn)
        })
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
        self.commit(txn).await
    }

    /// Publish one transaction; the in-memory state follows only if it
    /// commits.
    async fn commit(&mut self, mut txn: Txn) -> Result<(), RunError> {
        for (endpoint, cursor) in &txn.cursors {
            let key = format!("{}/{endpoint}/#cursor", self.config.name);
            let value = ProducerState {
                entity: None,
                cursor: Some(cursor.clone()),
            };
            txn.records.push((
                STATE_TOPIC,
                wire::encode(schema_id("StringKey"), &key),
                Some(wire::encode(schema_id("ProducerState"), &value)),
            ));
        }
        if txn.records.is_empty() {
            return Ok(());
        }
        let producer = self.producer.clone();
        let began = std::time::Instant::now();
        producer.begin_transaction().map_err(|e| self.failed(e))?;
        let mut deliveries = Vec::with_capacity(txn.records.len());
        for (topic, key, value) in &txn.records {
            let mut record = FutureRecord::to(topic).key(key);
            if let Some(v) = value {
                record = record.payload(v);
            }
            loop {
                match producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((
                        ClientError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                        back,
                    )) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => return Err(self.abort(e).await),
                }
            }
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(self.abort(e).await),
                Err(_) => return Err(self.abort(ClientError::Canceled).await),
            }
        }
        let p = producer.clone();
        let committed = tokio::task::spawn_blocking(move || p.commit_transaction(TXN_TIMEOUT))
            .await
            .map_err(|e| RunError::Fatal(e.to_string()))?;
        if let Err(e) = committed {
            return Err(self.abort(e).await);
        }
        self.stats.transactions += 1;
        self.metrics
            .transactions
            .with_label_values(&[&self.config.name, "committed"])
            .inc();
        self.metrics
            .transaction_seconds
            .with_label_values(&[&self.config.name])
            .observe(began.elapsed().as_secs_f64());
        for ((endpoint, id), state) in txn.state {
            let held = self.state.entry(endpoint).or_default();
            match state {
                Some(s) => {
                    held.insert(id, s);
                }
                None => {
                    held.remove(&id);
                }
            }
        }
        self.cursors.extend(txn.cursors);
        Ok(())
    }

    fn failed(&self, e: ClientError) -> RunError {
        match classify(&e) {
            TxnErrorClass::Fatal => RunError::Fatal(e.to_string()),
            _ => RunError::Aborted(e.to_string()),
        }
    }

    async fn abort(&mut self, e: ClientError) -> RunError {
        self.stats.aborted += 1;
        self.metrics
            .transactions
            .with_label_values(&[&self.config.name, "aborted"])
            .inc();
        if classify(&e) == TxnErrorClass::Fatal {
            return RunError::Fatal(e.to_string());
        }
        let p = self.producer.clone();
        let aborted = tokio::task::spawn_blocking(move || p.abort_transaction(TXN_TIMEOUT)).await;
        match aborted {
            Ok(Ok(())) => RunError::Aborted(e.to_string()),
            Ok(Err(abort_error)) => {
                RunError::Fatal(format!("{e}; then aborting failed: {abort_error}"))
            }
            Err(join) => RunError::Fatal(join.to_string()),
        }
    }
}

/// Fetch the pages of one read in a task of their own, at most two ahead
/// of their processing. Each comes with the page token that fetched it.
fn fetch_ahead(
    client: Arc<Ss12000Client>,
    endpoint: String,
    modified_after: Option<String>,
) -> tokio::sync::mpsc::Receiver<(
    Option<String>,
    Result<crate::ss12000::client::Page, FetchError>,
)> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        let mut token: Option<String> = None;
        loop {
            let fetched = client
                .page(&endpoint, token.as_deref(), modified_after.as_deref())
                .await;
            let next = fetched.as_ref().ok().and_then(|p| p.next.clone());
            // A closed channel means the reader gave up: stop fetching.
            if tx.send((token, fetched)).await.is_err() {
                return;
            }
            match next {
                Some(n) => token = Some(n),
                None => return,
            }
        }
    });
    rx
}

/// Read the state topic to its end: every record whose key starts with
/// `prefix`, newest last.
fn read_state(
    client: rdkafka::ClientConfig,
    prefix: &str,
) -> Result<Vec<(String, Option<ProducerState>)>, RunError> {
    let mut out = Vec::new();
    skolflode_kafka::read_to_end(client, STATE_TOPIC, Duration::from_secs(600), |m| {
        let Some(key) = m.key() else { return Ok(()) };
        let (_, key_body) = wire::split(key).map_err(|e| RunError::State(e.to_string()))?;
        let key = String::decode_all(key_body).map_err(|e| RunError::State(e.to_string()))?;
        if !key.starts_with(prefix) {
            return Ok(());
        }
        let value = match m.payload() {
            None => None,
            Some(bytes) => {
                let (_, body) = wire::split(bytes).map_err(|e| RunError::State(e.to_string()))?;
                Some(ProducerState::decode_all(body).map_err(|e| RunError::State(e.to_string()))?)
            }
        };
        out.push((key, value));
        Ok::<(), RunError>(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_756_677_600_000), "2025-08-31T22:00:00Z");
        assert_eq!(civil_today(1_756_677_600_000), (2025, 8, 31));
    }
}

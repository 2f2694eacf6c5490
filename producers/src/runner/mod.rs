//! One vendor connection, read continuously and published exactly once.
//!
//! Lifecycle: [`Runner::start`] fences any earlier instance (Kafka
//! transactional id per connection) and rebuilds the state from the
//! compacted state topic — no local file is the source of truth; then
//! [`Runner::poll`] reads every endpoint (a full read the first time and
//! every `full_read_every` polls, incremental reads with
//! `meta.modified.after` in between; calendar events in `startTime` slices
//! of a window around the vendor's today, as the standard requires) and the
//! deletion feed. One endpoint's failure does not stop the others; a poll's
//! error lists them all.
//!
//! What the producer reports besides events is reported once per cause:
//! an item's findings and dead letter again only when they change (their
//! digest is held with the entity), and a vendor's dialect — zone-less
//! times, teachers as persons, a flat deletion list, an endpoint it does not
//! serve — once per connection (held in the state topic too). An item that
//! cannot be understood still counts as served: a full read never takes it
//! for deleted.
//!
//! A Kafka transaction spans pages until it holds enough records: their
//! change events, the state records that explain them, dead letters and
//! quality findings, and — on an endpoint's last page — the new cursor and
//! the deletions a full read revealed. The in-memory state follows only
//! after a commit. A producer killed at any point restarts from the last
//! committed cursor; what it reads again is absorbed by the content hashes.
//!
//! Memory is bounded by what is live, not by history: lessons that started
//! and attendance records created before the read window (`past_weeks`)
//! are final for the producer. They are retired — forgotten, their state
//! records tombstoned, no event published — and one older than the window
//! that is not held is not published when a vendor shows it again. What is
//! held stays in memory as a compact entry; images live on disk.
//!
//! Modules: [`config`] is a connection's configuration; [`prepare`]
//! fetches and maps pages ahead on other threads; [`txn`] hands records to
//! librdkafka as pages are processed and commits; [`state`] rebuilds the
//! state from the state topic; [`holding`] keeps what is held of each
//! entity, compactly in memory and on disk; [`id_map`] keys entities by
//! id, with the id's hash kept so that it is computed once.

mod config;
mod files;
mod holding;
mod id_map;
mod prepare;
mod state;
mod txn;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError as ClientError;
use skolflode_kafka::{Admin, KafkaConfig, SideStore, TopicSpec};
use skolflode_schemas::catalogue::{
    self, Cleanup, DEAD_LETTERS, HEARTBEATS, PRODUCER_STATE, QUALITY_FINDINGS, TOPICS,
};
use skolflode_schemas::codec::write_str;
use skolflode_schemas::entities::Duty;
use skolflode_schemas::envelope::Entity;
use skolflode_schemas::records::{Cursor, DeadLetter, Heartbeat, ProducerState, QualityFinding};
use skolflode_schemas::state_key::{self, StateKey};
use skolflode_schemas::{wire, AvroType, Bytes, Op, Source, TimestampMillis};

use crate::detect::{self, age_days, report_digest, Held, Version};
use crate::endpoint::Endpoint;
use crate::metrics::Metrics;
use crate::pseudonym::Pseudonymiser;
use crate::seal::{Sealed, Sealer};
use crate::ss12000::client::{FetchError, Filters, Ss12000Client};
use crate::ss12000::map::{field_shape, DutyIndex, Finding, FindingKind, Ss12000Entity};
use crate::ss12000::time;
use holding::{seen_by, Entry, Holding};
use id_map::{CompactId, IdMap, Key};
use prepare::{fetch_ahead, now_millis, Prepared, Preparer};
use txn::{Record, Tally, Transactions, Txn};

pub use config::{CalendarWindow, ConnectionConfig};
pub use state::state_partition;

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

/// The deletion feed's name among cursors and findings.
const FEED: &str = "deletedEntities";

/// State records restored before their images are written to the side
/// store in one commit.
const RESTORE_BATCH: usize = 20_000;

/// Why a runner stopped or a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Kafka(#[from] skolflode_kafka::KafkaError),
    #[error("Kafka")]
    Client(#[from] ClientError),
    #[error("the transaction was aborted and will be redone")]
    Aborted(#[source] ClientError),
    #[error("fatal Kafka error, the connection must restart")]
    Fatal(#[source] ClientError),
    #[error("the transaction failed ({cause}) and aborting it failed too")]
    AbortFailed {
        cause: Box<ClientError>,
        #[source]
        abort: Box<ClientError>,
    },
    #[error("a task of the producer failed")]
    Task(#[from] tokio::task::JoinError),
    #[error("{endpoint}")]
    Fetch {
        endpoint: String,
        #[source]
        source: FetchError,
    },
    #[error("{endpoint}: the vendor does not serve it")]
    Unsupported {
        endpoint: String,
        #[source]
        source: FetchError,
    },
    #[error("the state topic holds a record that cannot be read ({key}): {reason}")]
    State { key: String, reason: String },
    #[error("the side store of entity images: {0}")]
    Store(String),
    #[error(transparent)]
    SideStore(#[from] skolflode_kafka::StoreError),
    #[error("{} of the poll failed: {}", .0.len(), summary(.0))]
    Partial(Vec<RunError>),
    #[error("the delivered file {file}: {reason}")]
    Files { file: String, reason: String },
}

impl RunError {
    /// Whether the connection cannot go on with this producer instance.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            Self::Fatal(_)
                | Self::AbortFailed { .. }
                | Self::Task(_)
                | Self::State { .. }
                | Self::Store(_)
                | Self::SideStore(_)
        )
    }

    /// Whether a read was stopped because it went round in circles.
    pub fn is_runaway(&self) -> bool {
        matches!(
            self,
            Self::Fetch {
                source: FetchError::Runaway { .. },
                ..
            }
        )
    }

    /// The error and its causes, as one line.
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        text
    }
}

fn summary(errors: &[RunError]) -> String {
    errors
        .iter()
        .map(RunError::chain)
        .collect::<Vec<_>>()
        .join("; ")
}

/// How a poll that may be stopped ended.
#[derive(Debug)]
pub enum Polled {
    Done(Result<(), RunError>),
    /// Stopped before or during the poll.
    Stopped,
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
    /// Time the start took to rebuild the state from the state topic.
    pub restore: Duration,
    /// Entities restored from the state topic at the start.
    pub restored: u64,
    /// Lessons and attendance records retired: they left the read window.
    pub retired: u64,
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

/// A dialect finding, published once per connection: the endpoint, the
/// finding's kind and the field's shape (indices left out).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct DialectKey {
    endpoint: String,
    kind: String,
    field: String,
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

/// What is held of an entity: the state a pending transaction gives it,
/// else the committed entry.
#[derive(Clone, Copy, Debug)]
enum Known<'a> {
    Pending(&'a Held),
    Committed(&'a Entry),
}

impl Known<'_> {
    /// The held version's fingerprint, unless this is a placeholder.
    fn fingerprint(&self) -> Option<u64> {
        match self {
            Self::Pending(h) => h.fingerprint(),
            Self::Committed(e) => e.fingerprint(),
        }
    }

    fn is_placeholder(&self) -> bool {
        match self {
            Self::Pending(h) => h.is_placeholder(),
            Self::Committed(e) => e.is_placeholder(),
        }
    }
}

fn known<'a>(
    holding: &'a Holding,
    txn: &'a Txn,
    endpoint: Endpoint,
    key: &Key<'_>,
) -> Option<Known<'a>> {
    match txn.state_of(endpoint, *key) {
        Some(pending) => pending.map(Known::Pending),
        None => holding
            .get(endpoint, key.hash(), key.compact())
            .map(Known::Committed),
    }
}

/// The digest of the findings published for what is held (0: none); read
/// from disk only for an entity that has some.
fn known_report(holding: &Holding, known: Option<Known<'_>>) -> Result<u64, RunError> {
    Ok(match known {
        None => 0,
        Some(Known::Pending(h)) => h.report,
        Some(Known::Committed(e)) if e.reported() => holding.load(e)?.1.report,
        Some(Known::Committed(_)) => 0,
    })
}

/// Everything held of an entity, from disk for a committed one.
fn full(holding: &Holding, known: Known<'_>) -> Result<Held, RunError> {
    match known {
        Known::Pending(h) => Ok(h.clone()),
        Known::Committed(e) => Ok(holding.load(e)?.1),
    }
}

/// The instant by which a restored entity leaves the read window; only
/// lessons and attendance records have one.
fn window_time(endpoint: Endpoint, image: &[u8]) -> Option<i64> {
    use skolflode_schemas::entities::{Attendance, CalendarEvent};
    match endpoint {
        Endpoint::CalendarEvents => CalendarEvent::decode_all(image)
            .ok()
            .and_then(|e| e.window_time()),
        Endpoint::Attendances => Attendance::decode_all(image)
            .ok()
            .and_then(|e| e.window_time()),
        _ => None,
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

fn target(endpoint: Endpoint) -> Result<Target, RunError> {
    crate::with_entity!(endpoint, E => catalogue::change_topic::<E>().map(|t| Target {
        topic: t.name,
        schema_id: schema_id(E::CHANGE_SUBJECT),
    }))
    .ok_or_else(|| RunError::Config(format!("no change topic for {endpoint} in the catalogue")))
}

/// A running connection.
pub struct Runner {
    config: ConnectionConfig,
    /// The vendor's API; `None` for a connection fed by files.
    client: Option<Arc<Ss12000Client>>,
    txns: Transactions,
    pseudonymiser: Arc<Pseudonymiser>,
    sealer: Arc<Sealer>,
    /// Endpoint → entity → what was last seen.
    holding: Holding,
    /// Endpoint name (or the deletion feed's) → where reading stands.
    cursors: HashMap<String, Cursor>,
    /// Dialect findings already published.
    dialects: HashSet<DialectKey>,
    /// Files ingested, by endpoint and SHA-256.
    delivered: HashSet<(Endpoint, String)>,
    /// Endpoints (and the deletion feed) the vendor said it does not serve,
    /// with the poll that found it; asked again after `full_read_every`
    /// polls, in case the 404 was passing.
    unsupported: HashMap<String, u64>,
    /// The vendor's need for filters beside page tokens was reported.
    filters_reported: bool,
    /// The vendor refused `meta.created.after` on attendance records: the
    /// producer reads them all and leaves out the old ones itself.
    created_after_refused: bool,
    /// Entities held per endpoint after its last read that ended: what a
    /// runaway read is measured against, so that the part of one committed
    /// on its way does not raise the bound of the next.
    held_after_read: HashMap<Endpoint, usize>,
    /// A poll was cancelled: its commit may still have landed in Kafka
    /// without reaching memory, so this runner must not poll again.
    cancelled: bool,
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
struct Read {
    endpoint: Endpoint,
    target: Target,
    /// The first full read: new entities are snapshot reads.
    initial: bool,
    /// A full read: its number, marked on every entity it sees, for
    /// reconciliation (`None` for incremental reads).
    full: Option<u32>,
    /// The newest `meta.modified` seen.
    newest: Option<i64>,
    /// The span of lesson start times read, for calendar events: a full
    /// read reconciles only what starts inside it.
    window: Option<(i64, i64)>,
    /// For lessons and attendance records: the read window's start, as an
    /// age ([`detect::age_days`]). One older that is not held is not
    /// published.
    retire_before: Option<u16>,
    /// Dialect findings (kind, field as found) already handled in this
    /// read: a zone-less vendor repeats the same few on every item, and a
    /// short scan spares building a key for each of them.
    dialects_seen: Vec<(FindingKind, String)>,
    /// Items read so far, and how many make the read runaway (`None`:
    /// unbounded, for a first read).
    items: u64,
    max_items: Option<u64>,
}

impl Runner {
    /// Fence earlier instances of this connection, then rebuild the state
    /// from the state topic. Dead letters keep no raw bytes.
    pub async fn start(
        config: ConnectionConfig,
        kafka: &KafkaConfig,
        pseudonymiser: Arc<Pseudonymiser>,
    ) -> Result<Self, RunError> {
        Self::start_sealed(
            config,
            kafka,
            pseudonymiser,
            Arc::new(Sealer::redact_only()),
        )
        .await
    }

    /// [`Runner::start`], sealing dead letters with `sealer`.
    pub async fn start_sealed(
        config: ConnectionConfig,
        kafka: &KafkaConfig,
        pseudonymiser: Arc<Pseudonymiser>,
        sealer: Arc<Sealer>,
    ) -> Result<Self, RunError> {
        config.validate()?;
        // librdkafka's default `message.max.bytes`.
        let record_limit = kafka
            .properties
            .get("message.max.bytes")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1_000_000);
        if config
            .max_item_bytes
            .saturating_mul(2)
            .saturating_add(64 << 10)
            > record_limit
        {
            return Err(RunError::Config(format!(
                "connection {:?}: max_item_bytes = {} does not fit a change event (before and \
                 after image) into message.max.bytes = {record_limit}: lower it, or raise \
                 message.max.bytes in [kafka.properties] and on the broker",
                config.name, config.max_item_bytes
            )));
        }
        for endpoint in Endpoint::ALL {
            target(endpoint)?;
        }
        let misconfigured = |source: FetchError| {
            RunError::Config(format!("connection {:?}: {source}", config.name))
        };
        let client = match &config.files {
            Some(drop) => {
                files::prepare_dirs(drop)
                    .map_err(|e| RunError::Config(format!("connection {:?}: {e}", config.name)))?;
                None
            }
            None => {
                let client =
                    Arc::new(Ss12000Client::new(config.client.clone()).map_err(misconfigured)?);
                client.probe().await.map_err(misconfigured)?;
                Some(client)
            }
        };
        let mut producer_config =
            kafka.transactional_producer(&format!("skolflode-produce-{}", config.name))?;
        // Tuning defaults; an operator's `[kafka.properties]` wins.
        for (key, value) in PRODUCER_DEFAULTS {
            if !kafka.properties.contains_key(*key) {
                producer_config.set(*key, *value);
            }
        }
        let txns = Transactions::create(&producer_config, state_partition(&config.name)?)?;
        let store_dir = config.state_dir.clone().unwrap_or_else(std::env::temp_dir);
        let store = SideStore::create(&store_dir, &config.name)?;
        // Fences a predecessor and aborts what it left open, so that the
        // state topic's end can be read under read_committed.
        txns.init().await?;
        let mut runner = Self {
            config,
            client,
            txns,
            pseudonymiser,
            sealer,
            holding: Holding::new(store),
            cursors: HashMap::new(),
            dialects: HashSet::new(),
            delivered: HashSet::new(),
            unsupported: HashMap::new(),
            filters_reported: false,
            created_after_refused: false,
            held_after_read: HashMap::new(),
            cancelled: false,
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

    /// The connection's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// What the runner has done.
    pub fn stats(&self) -> &RunStats {
        &self.stats
    }

    /// Entities held for an endpoint.
    pub fn held(&self, endpoint: Endpoint) -> usize {
        self.holding.len(endpoint)
    }

    async fn load_state(&mut self, kafka: &KafkaConfig) -> Result<(), RunError> {
        let began = Instant::now();
        let connection = self.config.name.clone();
        let mut pending: foldhash::HashMap<Endpoint, IdMap<Option<Held>>> = Default::default();
        let mut count = 0;
        state::load(kafka, &connection, |records| {
            for (text, value) in records {
                self.restore(&text, value, &mut pending)?;
                count += 1;
                if count % RESTORE_BATCH == 0 {
                    self.holding.apply(&mut pending)?;
                }
            }
            Ok(())
        })
        .await?;
        self.holding.apply(&mut pending)?;
        self.stats.restore = began.elapsed();
        self.stats.restored = self.holding.total() as u64;
        tracing::info!(
            connection = %self.config.name,
            entities = self.holding.total(),
            records = count,
            cursors = self.cursors.len(),
            dialect_findings = self.dialects.len(),
            seconds = self.stats.restore.as_secs_f64(),
            "state loaded"
        );
        Ok(())
    }

    /// One record of the state topic, in order: an entity's state goes to
    /// `pending` (applied to the holding in batches), cursors and dialect
    /// findings to their maps.
    fn restore(
        &mut self,
        text: &str,
        value: Option<ProducerState>,
        pending: &mut foldhash::HashMap<Endpoint, IdMap<Option<Held>>>,
    ) -> Result<(), RunError> {
        let Some(key) = StateKey::parse(text) else {
            return Ok(());
        };
        match key {
            StateKey::Entity { endpoint, id, .. } => {
                let Some(endpoint) = Endpoint::from_name(endpoint) else {
                    return Ok(());
                };
                let state = match value.and_then(|v| v.entity) {
                    None => None,
                    Some(e) => {
                        let mut held = Held::from_state(e).map_err(|reason| RunError::State {
                            key: text.to_owned(),
                            reason,
                        })?;
                        held.age = age_days(window_time(endpoint, &held.image));
                        Some(held)
                    }
                };
                pending
                    .entry(endpoint)
                    .or_default()
                    .insert(Key::new(id), state);
            }
            StateKey::Cursor { endpoint, .. } => {
                if let Some(cursor) = value.and_then(|v| v.cursor) {
                    // Cursors written before the deletion feed had its
                    // own endpoint name were keyed `#deletedEntities`.
                    let endpoint = endpoint.trim_start_matches('#');
                    self.cursors.insert(endpoint.to_owned(), cursor);
                }
            }
            StateKey::Finding {
                endpoint,
                kind,
                field,
                ..
            } => {
                let dialect = DialectKey {
                    endpoint: endpoint.to_owned(),
                    kind: kind.to_owned(),
                    field: field.to_owned(),
                };
                match value {
                    Some(_) => self.dialects.insert(dialect),
                    None => self.dialects.remove(&dialect),
                };
            }
            StateKey::Delivery {
                endpoint, checksum, ..
            } => {
                if let Some(endpoint) = Endpoint::from_name(endpoint) {
                    let delivery = (endpoint, checksum.to_owned());
                    match value {
                        Some(_) => self.delivered.insert(delivery),
                        None => self.delivered.remove(&delivery),
                    };
                }
            }
        }
        Ok(())
    }

    /// Run polls until `stop` is raised, which also cancels a poll under
    /// way. A fatal error ends the run; the caller logs it and may start
    /// the connection again.
    pub async fn run(
        mut self,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<RunStats, RunError> {
        loop {
            match self.poll_or_stop(&mut stop).await {
                Polled::Stopped => return Ok(self.stats),
                Polled::Done(Err(e)) if e.is_fatal() => return Err(e),
                // Each other failure was logged when it happened.
                Polled::Done(_) => {}
            }
            let wait = Duration::from_secs(self.config.poll_interval_secs);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|stopping| *stopping) => return Ok(self.stats),
            }
        }
    }

    /// One poll, unless `stop` is raised first: then the poll is dropped
    /// where it stands — its requests cancelled, its open transaction
    /// aborted, nothing of it kept in memory (state follows commits only).
    /// What it had committed stays; the next start reads on from there.
    /// A commit under way may still land without reaching memory, so the
    /// runner polls no more after a stop: start the connection again.
    pub async fn poll_or_stop(&mut self, stop: &mut tokio::sync::watch::Receiver<bool>) -> Polled {
        if *stop.borrow() || self.cancelled {
            return Polled::Stopped;
        }
        let polled = tokio::select! {
            polled = self.poll() => Some(polled),
            _ = stop.wait_for(|stopping| *stopping) => None,
        };
        match polled {
            Some(result) => Polled::Done(result),
            None => {
                self.cancelled = true;
                // Aborting with no transaction open is refused, harmlessly.
                match self.txns.abort_open().await {
                    Ok(()) => {
                        tracing::info!(connection = %self.config.name, "stopped during a poll; its open transaction was aborted")
                    }
                    Err(e) => {
                        tracing::debug!(connection = %self.config.name, error = %e.chain(), "stopped during a poll; no transaction to abort")
                    }
                }
                Polled::Stopped
            }
        }
    }

    /// Log a failed read once, with what to change.
    fn failed(&self, what: &str, e: &RunError) {
        tracing::warn!(
            connection = %self.config.name,
            endpoint = what,
            error = %e.chain(),
            "reading failed; the next poll reads it again"
        );
    }

    /// One poll: every endpoint, then the deletion feed. Every endpoint is
    /// read even when others fail; the error lists every failure.
    pub async fn poll(&mut self) -> Result<(), RunError> {
        if self.cancelled {
            return Err(RunError::Config(
                "a poll of this runner was cancelled: start the connection again".into(),
            ));
        }
        let endpoints = self.config.endpoints.clone();
        let events_before: u64 = self.stats.events.values().sum();
        let mut failures = Vec::new();
        if let Some(drop) = self.config.files.clone() {
            let waiting = files::waiting(&drop).map_err(|e| RunError::Files {
                file: drop.dir.display().to_string(),
                reason: format!("listing the directory: {}", e.kind()),
            });
            match waiting {
                Ok(deliveries) => {
                    // A later delivery of an endpoint waits for an earlier
                    // one that failed or was left for later: ingested
                    // first, it would be taken back by the earlier one.
                    let mut held_back: HashSet<Endpoint> = HashSet::new();
                    for delivery in deliveries {
                        if let Some(endpoint) = delivery.endpoint {
                            if held_back.contains(&endpoint) {
                                continue;
                            }
                        }
                        let (name, endpoint) = (files::shown(&delivery.name), delivery.endpoint);
                        let read = self.ingest(&drop, delivery).await;
                        if !matches!(read, Ok(true)) {
                            held_back.extend(endpoint);
                        }
                        self.outcome(&name, read.map(|_| ()), &mut failures).await?;
                    }
                }
                Err(e) => {
                    self.failed("files", &e);
                    failures.push(e);
                }
            }
        } else {
            for endpoint in endpoints {
                if self.skipped(endpoint.name()) {
                    continue;
                }
                let read = self.read_endpoint(endpoint).await;
                self.outcome(endpoint.name(), read, &mut failures).await?;
            }
            if self.config.deletion_feed && !self.skipped(FEED) {
                let read = self.read_deletions().await;
                self.outcome(FEED, read, &mut failures).await?;
            }
        }
        let served = self.config.files.is_some()
            || self
                .config
                .endpoints
                .iter()
                .any(|e| !self.unsupported.contains_key(e.name()));
        if !served {
            // A vendor serving none of the endpoints is a wrong base_url
            // more likely than a dialect.
            let e = RunError::Config(format!(
                "every endpoint answered 404: check base_url {:?}",
                self.config.client.base_url
            ));
            self.failed("all", &e);
            failures.push(e);
        }
        self.stats.polls += 1;
        // The heartbeat says the connection is alive even when nothing
        // changed, and whether its reads succeeded.
        let at = now_millis();
        // Files carry no vendor clock: their events are recorded on the
        // producer's, which the heartbeat then vouches for — only after a
        // poll that read the drop whole, so that a drop out of reach does
        // not close the weeks its files would have filled.
        if self.config.files.is_some() && failures.is_empty() {
            self.last_server_time = Some(at);
        }
        let server_time = self.last_server_time;
        let heartbeat = Heartbeat {
            connection: self.config.name.clone(),
            vendor: "ss12000".into(),
            at: TimestampMillis(at),
            server_time: server_time.map(TimestampMillis),
            ok: failures.is_empty(),
            polls: self.stats.polls as i64,
            events: (self.stats.events.values().sum::<u64>() - events_before) as i64,
        };
        let mut txn = Txn::default();
        txn.push((
            HEARTBEATS,
            wire::encode(self.ids.string_key, &self.config.name),
            Some(wire::encode(schema_id("Heartbeat"), &heartbeat)),
        ));
        if let Err(e) = self.commit(&mut txn).await {
            if e.is_fatal() {
                return Err(e);
            }
            self.failed("heartbeat", &e);
            failures.push(e);
        }
        // The poll's last images are on disk before it ends, and a failure
        // to write them is this poll's.
        self.holding.settle().await?;
        let name = self.config.name.as_str();
        let outcome = if failures.is_empty() { "ok" } else { "failed" };
        self.metrics.polls.with_label_values(&[name, outcome]).inc();
        if let Some(client) = &self.client {
            let now = client.stats();
            self.metrics.client_stats(name, &now, &self.client_seen);
            self.client_seen = now;
        }
        for (endpoint, held) in self.holding.endpoints() {
            self.metrics
                .held_entities
                .with_label_values(&[name, endpoint.name()])
                .set(held as i64);
        }
        let failed = self.txns.failed_deliveries();
        if failed > 0 {
            tracing::warn!(connection = %name, failed, "records not delivered since start (their transactions aborted)");
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(RunError::Partial(failures))
        }
    }

    /// What a read's result means for the poll: a fatal error ends it, an
    /// endpoint the vendor does not serve is noted, any other failure is
    /// logged and listed.
    async fn outcome(
        &mut self,
        what: &str,
        read: Result<(), RunError>,
        failures: &mut Vec<RunError>,
    ) -> Result<(), RunError> {
        match read {
            Ok(()) => Ok(()),
            Err(e) if e.is_fatal() => Err(e),
            Err(RunError::Unsupported {
                endpoint: name,
                source,
            }) => self.unsupported_endpoint(&name, &source).await,
            Err(e) => {
                self.failed(what, &e);
                failures.push(e);
                Ok(())
            }
        }
    }

    /// Whether an endpoint the vendor said it does not serve is still
    /// left alone: it is asked again every `full_read_every` polls.
    fn skipped(&self, name: &str) -> bool {
        self.unsupported.get(name).is_some_and(|since| {
            self.stats.polls.saturating_sub(*since) < self.config.full_read_every.unsigned_abs()
        })
    }

    /// A vendor that answers 404 (or 405, 501) to an endpoint's first
    /// request does not serve it: logged, recorded once as a dialect
    /// finding, and asked again only every `full_read_every` polls. Full
    /// reads still find deletions when the deletion feed is the one
    /// missing.
    async fn unsupported_endpoint(
        &mut self,
        name: &str,
        source: &FetchError,
    ) -> Result<(), RunError> {
        tracing::warn!(
            connection = %self.config.name,
            endpoint = name,
            error = %source,
            "the vendor does not serve this endpoint; it is asked again every full_read_every polls \
             (remove it from the connection's endpoints, or set deletion_feed = false, to silence this)"
        );
        self.unsupported.insert(name.to_owned(), self.stats.polls);
        let mut txn = Txn::default();
        self.dialect(
            &mut txn,
            name,
            "UNSUPPORTED_ENDPOINT",
            "",
            TimestampMillis(now_millis()),
        );
        match self.commit(&mut txn).await {
            Err(e) if e.is_fatal() => Err(e),
            _ => Ok(()),
        }
    }

    /// The vendor's API, for what only a connection with one reads.
    fn api(&self) -> Result<&Arc<Ss12000Client>, RunError> {
        self.client.as_ref().ok_or_else(|| {
            RunError::Config(format!(
                "connection {:?} is fed by files: it has no API to read",
                self.config.name
            ))
        })
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
    async fn read_endpoint(&mut self, endpoint: Endpoint) -> Result<(), RunError> {
        let mut txn = Txn::default();
        let retire_before = match endpoint {
            Endpoint::CalendarEvents | Endpoint::Attendances => {
                let now = self.vendor_now().await;
                let before = age_days(Some(self.config.calendar_events.start(now)));
                self.retire(endpoint, before, &mut txn).await?;
                Some(before)
            }
            _ => None,
        };
        let refused = self.created_after_refused;
        let mut read = self.read_pages(endpoint, retire_before, &mut txn).await;
        if self.created_after_refused && !refused && read.is_err() {
            // Asked again without the filter the vendor refused.
            read = self.read_pages(endpoint, retire_before, &mut txn).await;
        }
        if read.as_ref().is_err_and(RunError::is_fatal) {
            return read;
        }
        if read.as_ref().is_err_and(RunError::is_runaway) {
            // A read gone round in circles: what its open transaction
            // holds is not the vendor's data.
            match self.txns.discard(&mut txn).await {
                Ok(false) => {}
                Ok(true) => self.aborted(),
                Err(e) => {
                    self.aborted();
                    return Err(e);
                }
            }
            return read;
        }
        let committed = self.commit(&mut txn).await;
        if read.is_ok() && committed.is_ok() {
            self.held_after_read.insert(endpoint, self.held(endpoint));
        }
        read.and(committed)
    }

    /// Forget the entities of `endpoint` older than `before` (an age):
    /// they left the read window and are final. Their state records become
    /// tombstones, so that the state topic — and a restart — stop growing
    /// with history; no event is published, for nothing was deleted.
    async fn retire(
        &mut self,
        endpoint: Endpoint,
        before: u16,
        txn: &mut Txn,
    ) -> Result<(), RunError> {
        let old: Vec<Entry> = self
            .holding
            .entries(endpoint)
            .filter(|e| e.age < before)
            .copied()
            .collect();
        if old.is_empty() {
            return Ok(());
        }
        let ids = {
            let loader = self.holding.reader()?;
            old.iter()
                .map(|e| loader.load(e).map(|(id, _)| id))
                .collect::<Result<Vec<String>, RunError>>()?
        };
        drop(old);
        for id in &ids {
            self.put_state(endpoint, Key::new(id), None, txn);
            txn.tally.retire(endpoint);
            if txn.len() >= self.config.max_transaction_records {
                self.commit(txn).await?;
            }
        }
        tracing::info!(
            connection = %self.config.name,
            endpoint = endpoint.name(),
            retired = ids.len(),
            "entities older than the read window retired"
        );
        Ok(())
    }

    /// The vendor's clock: from its last answer, else asked for.
    async fn vendor_now(&mut self) -> i64 {
        if let Some(t) = self.last_server_time {
            return t;
        }
        let Some(client) = &self.client else {
            return now_millis();
        };
        match client.server_time().await {
            Some(t) => {
                self.last_server_time = Some(t);
                t
            }
            None => now_millis(),
        }
    }

    /// The duties held, indexed by person and organisation, for activities
    /// whose teachers are given as persons.
    fn duty_index(&self) -> Result<DutyIndex, RunError> {
        let loader = self.holding.reader()?;
        let mut duties = Vec::new();
        for entry in self.holding.entries(Endpoint::Duties) {
            if entry.is_placeholder() {
                continue;
            }
            if let Ok(duty) = Duty::decode_all(&loader.load(entry)?.1.image) {
                duties.push(duty);
            }
        }
        Ok(DutyIndex::new(&duties))
    }

    /// The queries of one read: the filters of each, in order. Calendar
    /// events are read in `startTime` slices of the configured window.
    async fn queries(
        &mut self,
        endpoint: Endpoint,
        modified_after: Option<String>,
        retire_before: Option<u16>,
    ) -> (Vec<Filters>, Option<(i64, i64)>) {
        if endpoint != Endpoint::CalendarEvents {
            // Attendance records created before the window are final: not
            // asked for (`meta.created.after` is exclusive, to the second).
            let created_after = retire_before
                .filter(|_| endpoint == Endpoint::Attendances && !self.created_after_refused)
                .map(|day| rfc3339(i64::from(day) * 86_400_000 - 1000));
            return (
                vec![Filters {
                    modified_after,
                    created_after,
                    start_time: None,
                }],
                None,
            );
        }
        let now = self.vendor_now().await;
        let slices = self.config.calendar_events.slices(now);
        let window = slices.first().map(|s| s.0).zip(slices.last().map(|s| s.1));
        let filters = slices
            .into_iter()
            .map(|(from, to)| Filters {
                modified_after: modified_after.clone(),
                created_after: None,
                // onOrBefore is inclusive: the last second of the slice.
                start_time: Some((rfc3339(from), rfc3339(to - 1000))),
            })
            .collect();
        (filters, window)
    }

    async fn read_pages(
        &mut self,
        endpoint: Endpoint,
        retire_before: Option<u16>,
        txn: &mut Txn,
    ) -> Result<(), RunError> {
        let cursor = self.cursors.get(endpoint.name()).cloned();
        let polls = cursor.as_ref().map_or(0, |c| c.polls);
        let full = cursor
            .as_ref()
            .is_none_or(|c| c.modified_after.is_none() || polls % self.config.full_read_every == 0);
        let modified_after = if full {
            None
        } else {
            cursor.as_ref().and_then(|c| c.modified_after.clone())
        };
        let (queries, window) = self
            .queries(endpoint, modified_after.clone(), retire_before)
            .await;
        // Attendance records are read from the window's start on, by
        // creation: a full read reconciles only those whose creation is
        // known to lie inside it.
        let window = match endpoint {
            Endpoint::Attendances => {
                retire_before.map(|day| (i64::from(day) * 86_400_000, i64::MAX))
            }
            _ => window,
        };
        let initial = cursor.as_ref().is_none_or(|c| c.full_reads == 0);
        let mut read = Read {
            endpoint,
            target: target(endpoint)?,
            initial,
            full: full.then(|| {
                self.full_reads += 1;
                self.full_reads
            }),
            newest: None,
            window,
            retire_before,
            dialects_seen: Vec::new(),
            items: 0,
            max_items: (!initial).then(|| {
                let baseline = self
                    .held_after_read
                    .get(&endpoint)
                    .copied()
                    .unwrap_or_else(|| self.held(endpoint));
                u64::from(self.config.max_read_factor)
                    .saturating_mul((baseline as u64).max(self.config.max_read_floor))
            }),
        };
        let preparer = self.preparer(endpoint)?;
        let last_query = queries.len().saturating_sub(1);
        for (q, filters) in queries.into_iter().enumerate() {
            let mut pages = fetch_ahead(
                Arc::clone(self.api()?),
                preparer.clone(),
                endpoint,
                filters.clone(),
            );
            let mut first_page = true;
            loop {
                let waiting = Instant::now();
                let Some((token, fetched)) = pages.recv().await else {
                    return Err(RunError::Fetch {
                        endpoint: endpoint.name().into(),
                        source: FetchError::Config("the page fetcher stopped".into()),
                    });
                };
                let fetched = match fetched {
                    Ok(job) => Ok(job.await?),
                    Err(e) => Err(e),
                };
                self.waited(Wait::Pages, waiting);
                let page = match fetched {
                    Ok(page) => page,
                    Err(FetchError::Malformed {
                        url,
                        reason,
                        raw,
                        attempts,
                    }) => {
                        // Nothing is lost: the page goes to the dead-letter
                        // topic and the read starts over at the next poll.
                        self.page_dead_letter(txn, endpoint, &url, &reason, &raw);
                        return Err(RunError::Fetch {
                            endpoint: endpoint.name().into(),
                            source: FetchError::Malformed {
                                url,
                                reason,
                                raw: Vec::new(),
                                attempts,
                            },
                        });
                    }
                    Err(FetchError::TooLarge { url, limit, head }) => {
                        // Its start goes to the dead-letter topic, for the
                        // vendor to be told; what follows it cannot be
                        // found without reading it whole.
                        let reason = format!("an answer longer than max_page_bytes = {limit}");
                        self.page_dead_letter(txn, endpoint, &url, &reason, &head);
                        return Err(RunError::Fetch {
                            endpoint: endpoint.name().into(),
                            source: FetchError::TooLarge {
                                url,
                                limit,
                                head: Vec::new(),
                            },
                        });
                    }
                    Err(FetchError::Status { status: 400, .. })
                        if first_page && filters.created_after.is_some() =>
                    {
                        // A vendor that does not filter by creation: read
                        // in full, old records left out by the producer.
                        self.created_after_refused = true;
                        self.dialect(
                            txn,
                            endpoint.name(),
                            "CREATED_AFTER_REFUSED",
                            "meta.created.after",
                            TimestampMillis(now_millis()),
                        );
                        return Err(RunError::Fetch {
                            endpoint: endpoint.name().into(),
                            source: FetchError::Config(
                                "the vendor refused meta.created.after".into(),
                            ),
                        });
                    }
                    Err(source) if first_page && q == 0 && source.is_unsupported() => {
                        return Err(RunError::Unsupported {
                            endpoint: endpoint.name().into(),
                            source,
                        })
                    }
                    Err(source) => {
                        return Err(RunError::Fetch {
                            endpoint: endpoint.name().into(),
                            source,
                        })
                    }
                };
                first_page = false;
                self.stats.pages += 1;
                if page.server_time.is_some() {
                    self.last_server_time = page.server_time;
                }
                let name = self.config.name.as_str();
                self.metrics
                    .pages
                    .with_label_values(&[name, endpoint.name()])
                    .inc();
                self.metrics
                    .items
                    .with_label_values(&[name, endpoint.name()])
                    .inc_by(page.items.len() as u64);
                if let (Some(server), Some(n)) = (page.server_time, read.newest) {
                    self.metrics
                        .lag_seconds
                        .with_label_values(&[name, endpoint.name()])
                        .set((server - n) / 1000);
                }
                let observed_at = TimestampMillis(now_millis());
                let source = self.source(
                    endpoint.name(),
                    token.as_deref().or(filters.modified_after.as_deref()),
                    page.server_time,
                );
                self.stats.items += page.items.len() as u64;
                read.items += page.items.len() as u64;
                if let Some(max) = read.max_items.filter(|&max| read.items > max) {
                    return Err(RunError::Fetch {
                        endpoint: endpoint.name().into(),
                        source: FetchError::Runaway {
                            endpoint: endpoint.name().into(),
                            reason: format!(
                                "{} items read, more than {max} ({} times the entities held, \
                                 at least {}): the vendor's paging does not end, or the vendor \
                                 grew that much at once (then raise max_read_factor)",
                                read.items, self.config.max_read_factor, self.config.max_read_floor,
                            ),
                        },
                    });
                }
                self.prepared(&mut read, page.items, &source, observed_at, txn)?;
                if self.client.as_ref().is_some_and(|c| c.repeats_filters())
                    && !self.filters_reported
                {
                    // A property of the vendor, noticed on this endpoint:
                    // reported once for the connection.
                    self.filters_reported = true;
                    self.dialect(
                        txn,
                        endpoint.name(),
                        "FILTERS_WITH_PAGE_TOKEN",
                        "pageToken",
                        observed_at,
                    );
                }
                if page.more || q < last_query {
                    // A transaction commits when it is large, or old enough
                    // that a slow read could outlive Kafka's transaction
                    // timeout.
                    if txn.len() >= self.config.max_transaction_records
                        || txn.age() > txn::TXN_MAX_AGE
                    {
                        self.commit(txn).await?;
                    } else {
                        self.send(txn).await?;
                    }
                }
                if page.more {
                    continue;
                }
                if q < last_query {
                    break;
                }
                if let Some(number) = read.full {
                    self.reconcile(&read, number, &source, observed_at, txn)?;
                }
                let previous = cursor.as_ref().and_then(|c| c.modified_after.clone());
                let modified_after = read
                    .newest
                    .map(|n| rfc3339(n - self.config.overlap_secs * 1000))
                    .or(previous);
                txn.cursors.insert(
                    endpoint.name().to_owned(),
                    Cursor {
                        modified_after,
                        full_reads: cursor.as_ref().map_or(0, |c| c.full_reads) + i64::from(full),
                        polls: polls + 1,
                        updated_at: observed_at,
                    },
                );
                return Ok(());
            }
        }
        Ok(())
    }

    /// What preparing a read's items gives for `endpoint`.
    fn preparer(&self, endpoint: Endpoint) -> Result<Preparer, RunError> {
        Ok(Preparer {
            pseudonymiser: Arc::clone(&self.pseudonymiser),
            sealer: Arc::clone(&self.sealer),
            connection: Arc::from(self.config.name.as_str()),
            zone: self.config.timestamps_without_zone,
            duties: match endpoint {
                Endpoint::Activities => Some(Arc::new(self.duty_index()?)),
                _ => None,
            },
            max_item_bytes: self.config.max_item_bytes,
        })
    }

    /// A read's prepared items, in order: versions and dead letters.
    fn prepared(
        &mut self,
        read: &mut Read,
        items: Vec<Prepared>,
        source: &Source,
        observed_at: TimestampMillis,
        txn: &mut Txn,
    ) -> Result<(), RunError> {
        for item in items {
            match item {
                Prepared::Version(version, findings) => {
                    self.version(read, version, findings, source, observed_at, txn)?
                }
                Prepared::Rejected {
                    id,
                    reason,
                    digest,
                    sealed,
                } => self.rejected(read, id, &reason, digest, sealed, observed_at, txn)?,
            }
        }
        Ok(())
    }

    /// One version the vendor shows: an event if it is new; its findings
    /// if they are new.
    fn version(
        &mut self,
        read: &mut Read,
        version: Version,
        findings: Vec<Finding>,
        source: &Source,
        observed_at: TimestampMillis,
        txn: &mut Txn,
    ) -> Result<(), RunError> {
        let endpoint = read.endpoint;
        if let Some(m) = version.modified {
            read.newest = Some(read.newest.map_or(m, |n| n.max(m)));
        }
        let key = Key::new(&version.id);
        let k = known(&self.holding, txn, endpoint, &key);
        if k.is_none()
            && read
                .retire_before
                .is_some_and(|before| version.age < before)
        {
            // Older than the read window and not held: retired, or never
            // inside the window while the producer read. Final either way.
            return Ok(());
        }
        let op = detect::classify(k.and_then(|k| k.fingerprint()), &version.hash, read.initial);
        let report_was = known_report(&self.holding, k)?;
        let mut item_findings = Vec::new();
        for f in findings {
            if f.kind.is_dialect() {
                let seen = read
                    .dialects_seen
                    .iter()
                    .any(|(kind, field)| *kind == f.kind && *field == f.field);
                if !seen {
                    self.dialect(
                        txn,
                        endpoint.name(),
                        f.kind.name(),
                        &field_shape(&f.field),
                        observed_at,
                    );
                    read.dialects_seen.push((f.kind, f.field));
                }
            } else {
                item_findings.push(f);
            }
        }
        let report = if item_findings.is_empty() {
            0
        } else {
            report_digest(
                item_findings
                    .iter()
                    .flat_map(|f| [f.kind.name().as_bytes(), f.field.as_bytes()]),
            )
        };
        let report_changed = report_was != report;
        if report_changed && report != 0 {
            for f in item_findings {
                self.finding(
                    txn,
                    endpoint.name(),
                    &version.id,
                    &f.field,
                    f.kind.name(),
                    observed_at,
                );
            }
        }
        let Some(op) = op else {
            // Loaded only in the rare case that the findings changed.
            let k = match report_changed {
                true => known(&self.holding, txn, endpoint, &key)
                    .map(|k| full(&self.holding, k))
                    .transpose()?,
                false => None,
            };
            match k {
                Some(k) => {
                    // The same version with other findings: only the state
                    // changes.
                    let seen_in = read.full.unwrap_or(k.seen_in);
                    let held = Held {
                        report,
                        seen_in,
                        ..k
                    };
                    self.put_state(endpoint, key, Some(held), txn);
                }
                _ => {
                    if let Some(number) = read.full {
                        self.mark_seen(txn, endpoint, key, number);
                    }
                }
            }
            return Ok(());
        };
        let mut value = Vec::with_capacity(version.image.len() * 2 + 256);
        wire::header_into(read.target.schema_id, &mut value);
        {
            // Only an update has a before image: the held version, from
            // the pending transaction or from disk.
            let loaded;
            let before = match known(&self.holding, txn, endpoint, &key) {
                Some(Known::Pending(h)) => h.version().map(|h| &*h.image),
                Some(Known::Committed(e)) if !e.is_placeholder() => {
                    loaded = self.holding.load(e)?.1;
                    Some(&*loaded.image)
                }
                _ => None,
            };
            detect::encode_change(&mut value, op, before, &version, source, observed_at);
        }
        let held = Held {
            hash: version.hash,
            image: version.image.into_boxed_slice(),
            observed_at: observed_at.0,
            report,
            seen_in: read.full.unwrap_or(0),
            age: version.age,
        };
        self.emit(read.target, key, op, value, txn);
        self.put_state(endpoint, key, Some(held), txn);
        Ok(())
    }

    /// An item that could not be understood: a dead letter, unless the same
    /// one was published for it before. It still counts as served, so a
    /// full read does not take it for deleted.
    #[allow(clippy::too_many_arguments)]
    fn rejected(
        &mut self,
        read: &Read,
        id: Option<String>,
        reason: &str,
        digest: u64,
        sealed: Sealed,
        observed_at: TimestampMillis,
        txn: &mut Txn,
    ) -> Result<(), RunError> {
        let endpoint = read.endpoint;
        let Some(id) = id else {
            self.dead_letter_once(
                txn,
                endpoint,
                &format!("/{endpoint}"),
                reason,
                digest,
                sealed,
            );
            return Ok(());
        };
        let key = Key::new(&id);
        let k = known(&self.holding, txn, endpoint, &key);
        if k.is_some() && known_report(&self.holding, k)? == digest {
            if let Some(number) = read.full {
                self.mark_seen(txn, endpoint, key, number);
            }
            return Ok(());
        }
        let seen_in = read.full.unwrap_or(0);
        let state = match k {
            Some(k) => {
                let k = full(&self.holding, k)?;
                Held {
                    report: digest,
                    seen_in: read.full.unwrap_or(k.seen_in),
                    ..k
                }
            }
            None => Held::placeholder(observed_at.0, digest, seen_in),
        };
        self.dead_letter(
            txn,
            &format!("/{endpoint}"),
            reason,
            Some(id.clone()),
            sealed,
        );
        self.put_state(endpoint, key, Some(state), txn);
        Ok(())
    }

    /// Whether `key` is new to the connection; if so it is recorded, in
    /// this transaction, in the state topic.
    fn once(&mut self, txn: &mut Txn, key: DialectKey) -> bool {
        if self.dialects.contains(&key) || txn.dialects.contains(&key) {
            return false;
        }
        let state_key = StateKey::Finding {
            connection: &self.config.name,
            endpoint: &key.endpoint,
            kind: &key.kind,
            field: &key.field,
        };
        let record = ProducerState {
            entity: None,
            cursor: None,
        };
        txn.push((
            PRODUCER_STATE,
            state_key.encode(self.ids.string_key),
            Some(wire::encode(self.ids.producer_state, &record)),
        ));
        txn.dialects.push(key);
        true
    }

    /// Publish a dialect finding unless it was published before.
    fn dialect(
        &mut self,
        txn: &mut Txn,
        endpoint: &str,
        kind: &str,
        field: &str,
        observed_at: TimestampMillis,
    ) {
        let key = DialectKey {
            endpoint: endpoint.to_owned(),
            kind: kind.to_owned(),
            field: field.to_owned(),
        };
        if !self.once(txn, key) {
            return;
        }
        tracing::info!(connection = %self.config.name, endpoint, kind, field, "the vendor deviates from SS 12000; read leniently (recorded once as a finding)");
        self.finding(txn, endpoint, "", field, kind, observed_at);
    }

    fn finding(
        &mut self,
        txn: &mut Txn,
        endpoint: &str,
        id: &str,
        field: &str,
        kind: &str,
        observed_at: TimestampMillis,
    ) {
        txn.tally.finding(kind);
        // A repair that is also a validation rule (an invalid or missing
        // civic number) says so, for the quality report.
        let rule = skolflode_schemas::rules::rule(kind);
        let finding = QualityFinding {
            connection: self.config.name.clone(),
            endpoint: format!("/{endpoint}"),
            entity_id: id.to_owned(),
            field: field.to_owned(),
            kind: kind.to_owned(),
            observed_at,
            rule: rule.map(|r| r.id.to_owned()),
            severity: rule.map(|r| r.severity.as_str().to_owned()),
            first_seen: rule.map(|_| observed_at),
            ..QualityFinding::default()
        };
        txn.push((
            QUALITY_FINDINGS,
            wire::encode(self.ids.string_key, &self.config.name),
            Some(wire::encode(schema_id("QualityFinding"), &finding)),
        ));
    }

    /// Queue a change event (framed `value`); [`Self::put_state`] queues
    /// the state record that explains it.
    fn emit(&mut self, target: Target, key: Key<'_>, op: Op, value: Vec<u8>, txn: &mut Txn) {
        let id = key.id();
        if let Some(n) = txn.tally.events.get_mut(op as usize) {
            *n += 1;
        }
        txn.tally.event_bytes += value.len() as u64;
        // EntityKey { connection, entity_id }, framed.
        let mut event_key = Vec::with_capacity(self.config.name.len() + id.len() + 8);
        wire::header_into(self.ids.entity_key, &mut event_key);
        write_str(&mut event_key, &self.config.name);
        write_str(&mut event_key, id);
        txn.push((target.topic, event_key, Some(value)));
    }

    /// Queue an entity's new state (`None`: forgotten) and its record.
    fn put_state(&mut self, endpoint: Endpoint, key: Key<'_>, state: Option<Held>, txn: &mut Txn) {
        let state_key = state_key::encode_entity(
            self.ids.string_key,
            &self.config.name,
            endpoint.name(),
            key.id(),
        );
        let state_value = state.as_ref().map(|s| {
            let mut out = Vec::with_capacity(s.image.len() + 104);
            wire::header_into(self.ids.producer_state, &mut out);
            s.encode_state(&mut out);
            out
        });
        txn.push((PRODUCER_STATE, state_key, state_value));
        txn.set_state(endpoint, key, state);
    }

    fn dead_letter(
        &mut self,
        txn: &mut Txn,
        endpoint: &str,
        reason: &str,
        entity_id: Option<String>,
        sealed: Sealed,
    ) {
        txn.tally.dead_letters += 1;
        tracing::warn!(connection = %self.config.name, endpoint, entity_id = entity_id.as_deref().unwrap_or(""), reason, "dead letter");
        let letter = DeadLetter {
            connection: self.config.name.clone(),
            endpoint: endpoint.to_owned(),
            reason: reason.to_owned(),
            entity_id,
            raw: Bytes(sealed.raw),
            observed_at: TimestampMillis(now_millis()),
            redacted: sealed.redacted,
            raw_encryption: sealed.encryption.map(str::to_owned),
        };
        txn.push((
            DEAD_LETTERS,
            wire::encode(self.ids.string_key, &self.config.name),
            Some(wire::encode(schema_id("DeadLetter"), &letter)),
        ));
    }

    /// A page that cannot be read, as a dead letter: once per content.
    fn page_dead_letter(
        &mut self,
        txn: &mut Txn,
        endpoint: Endpoint,
        url: &str,
        reason: &str,
        raw: &[u8],
    ) {
        let (digest, reason, sealed) = prepare::seal(&self.sealer, reason, raw);
        self.dead_letter_once(txn, endpoint, url, &reason, digest, sealed);
    }

    /// A dead letter without an entity, published once per `digest`: no
    /// entity holds the digest, so the connection remembers it like a
    /// dialect finding.
    fn dead_letter_once(
        &mut self,
        txn: &mut Txn,
        endpoint: Endpoint,
        url: &str,
        reason: &str,
        digest: u64,
        sealed: Sealed,
    ) {
        let key = DialectKey {
            endpoint: endpoint.name().to_owned(),
            kind: "DEAD_LETTER".to_owned(),
            field: format!("{digest:016x}"),
        };
        if self.once(txn, key) {
            self.dead_letter(txn, url, reason, None, sealed);
        }
    }

    /// An unchanged entity seen by full read `number`.
    fn mark_seen(&mut self, txn: &mut Txn, endpoint: Endpoint, key: Key<'_>, number: u32) {
        if let Some(pending) = txn.pending_mut(endpoint, key) {
            pending.seen_in = number;
        } else if let Some(entry) = self.holding.get_mut(endpoint, key.hash(), key.compact()) {
            entry.mark_seen(number);
        }
    }

    /// After full read `number`: whatever is held but was not seen is gone
    /// — for calendar events, of what starts inside the window read.
    fn reconcile(
        &mut self,
        read: &Read,
        number: u32,
        source: &Source,
        observed_at: TimestampMillis,
        txn: &mut Txn,
    ) -> Result<(), RunError> {
        let endpoint = read.endpoint;
        // A placeholder is no lesson anyone was told of: forgetting it is
        // harmless. (The window's ends are UTC midnights, whole minutes.)
        let window = read
            .window
            .map(|(from, to)| (age_days(Some(from)), age_days(Some(to))));
        let in_window = |e: &Entry| match window {
            None => true,
            Some((from, to)) => e.is_placeholder() || (from..to).contains(&e.age),
        };
        // What this read changed is pending in `txn` (or committed by it,
        // marked); what it left alone is marked in the committed state.
        let pending: foldhash::HashMap<CompactId, Option<u32>> = txn
            .state
            .get(&endpoint)
            .map(|m| {
                m.iter()
                    .map(|(id, s)| (*Key::new(id).compact(), s.as_ref().map(|h| h.seen_in)))
                    .collect()
            })
            .unwrap_or_default();
        let gone: Vec<Entry> = self
            .holding
            .entries(endpoint)
            .filter(|e| match pending.get(e.id()) {
                Some(Some(seen_in)) => !seen_by(*seen_in, number),
                Some(None) => false,
                None => !seen_by(u32::from(e.seen_in()), number),
            })
            .filter(|e| in_window(e))
            .copied()
            .collect();
        let ids = {
            let loader = self.holding.reader()?;
            gone.iter()
                .map(|e| loader.load(e).map(|(id, _)| id))
                .collect::<Result<Vec<String>, RunError>>()?
        };
        for id in ids {
            self.delete(endpoint, &id, source, observed_at, txn)?;
        }
        Ok(())
    }

    /// The entity is gone: a delete event with its last image, or, for an
    /// item that was never understood, only its state is dropped.
    fn delete(
        &mut self,
        endpoint: Endpoint,
        id: &str,
        source: &Source,
        observed_at: TimestampMillis,
        txn: &mut Txn,
    ) -> Result<(), RunError> {
        let key = Key::new(id);
        let Some(k) = known(&self.holding, txn, endpoint, &key) else {
            return Ok(());
        };
        if k.is_placeholder() {
            self.put_state(endpoint, key, None, txn);
            return Ok(());
        }
        let known = full(&self.holding, k)?;
        let target = target(endpoint)?;
        let mut value = Vec::with_capacity(known.image.len() + 256);
        wire::header_into(target.schema_id, &mut value);
        detect::encode_delete(&mut value, &known, id, source, observed_at);
        self.emit(target, key, Op::Delete, value, txn);
        self.put_state(endpoint, key, None, txn);
        Ok(())
    }

    async fn read_deletions(&mut self) -> Result<(), RunError> {
        let cursor = self.cursors.get(FEED).cloned();
        let after = cursor.as_ref().and_then(|c| c.modified_after.clone());
        let deletions = match self.api()?.deleted_entities(after.as_deref()).await {
            Ok(d) => d,
            Err(source) if source.is_unsupported() => {
                return Err(RunError::Unsupported {
                    endpoint: FEED.into(),
                    source,
                })
            }
            Err(source) => {
                return Err(RunError::Fetch {
                    endpoint: FEED.into(),
                    source,
                })
            }
        };
        if deletions.server_time.is_some() {
            self.last_server_time = deletions.server_time;
        }
        let observed_at = TimestampMillis(now_millis());
        let mut txn = Txn::default();
        if deletions.flat {
            self.dialect(&mut txn, FEED, "FLAT_DELETION_LIST", "", observed_at);
        }
        let source = self.source(FEED, after.as_deref(), deletions.server_time);
        for (kind, ids) in deletions.deleted {
            let Some(endpoint) = Endpoint::from_any_name(&kind) else {
                continue;
            };
            if !self.config.endpoints.contains(&endpoint) {
                continue;
            }
            for id in ids {
                self.delete(endpoint, &id, &source, observed_at, &mut txn)?;
            }
        }
        txn.cursors.insert(
            FEED.to_owned(),
            Cursor {
                // The vendor's clock, not ours: deletions carry its times.
                modified_after: deletions
                    .server_time
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
                let key = StateKey::Cursor {
                    connection: &self.config.name,
                    endpoint,
                };
                let value = ProducerState {
                    entity: None,
                    cursor: Some(cursor.clone()),
                };
                (
                    PRODUCER_STATE,
                    key.encode(self.ids.string_key),
                    Some(wire::encode(self.ids.producer_state, &value)),
                )
            })
            .collect();
        for record in cursors {
            txn.push(record);
        }
        let records = txn.len() as u64;
        // The images go to the side store behind the loop, through Kafka's
        // commit and the next transaction's work (the last commit's write
        // is done first); the entries follow only a commit.
        let (writes, updates) = self.holding.stage(&mut txn.state)?;
        let waiting = Instant::now();
        self.holding.settle().await?;
        self.holding.write_behind(writes);
        let committed = self.txns.commit(txn).await;
        self.waited(Wait::Commit, waiting);
        if committed.is_err() {
            self.holding.discard(updates);
        } else {
            self.holding.commit(updates);
        }
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
        self.count_committed(std::mem::take(&mut txn.tally));
        self.cursors.extend(txn.cursors.drain());
        self.dialects.extend(txn.dialects.drain(..));
        self.delivered.extend(txn.delivered.drain(..));
        Ok(())
    }

    /// Count what a committed transaction published.
    fn count_committed(&mut self, tally: Tally) {
        let name = self.config.name.as_str();
        for (op, &n) in Op::SYMBOLS.iter().zip(&tally.events) {
            if n == 0 {
                continue;
            }
            *self.stats.events.entry(op).or_default() += n;
            let counter = match self.event_counters.get(op) {
                Some(c) => c,
                None => self
                    .event_counters
                    .entry(op)
                    .or_insert(self.metrics.events.with_label_values(&[name, op])),
            };
            counter.inc_by(n);
        }
        self.stats.event_bytes += tally.event_bytes;
        for (kind, n) in &tally.findings {
            self.stats.findings += n;
            self.metrics
                .findings
                .with_label_values(&[name, kind])
                .inc_by(*n);
        }
        for (endpoint, n) in &tally.retired {
            self.stats.retired += n;
            self.metrics
                .retired
                .with_label_values(&[name, endpoint.name()])
                .inc_by(*n);
        }
        if tally.dead_letters > 0 {
            self.stats.dead_letters += tally.dead_letters;
            self.metrics
                .dead_letters
                .with_label_values(&[name])
                .inc_by(tally.dead_letters);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_756_677_600_000), "2025-08-31T22:00:00Z");
        assert_eq!(prepare::civil_today(1_756_677_600_000), (2025, 8, 31));
    }

    #[test]
    fn errors_keep_their_causes_and_a_poll_lists_every_failure() {
        let failure = |endpoint: &str, status| RunError::Fetch {
            endpoint: endpoint.into(),
            source: FetchError::Status {
                url: format!("http://vendor/{endpoint}"),
                status,
                body: "no".into(),
            },
        };
        let partial = RunError::Partial(vec![failure("persons", 400), failure("groups", 403)]);
        let text = partial.chain();
        assert!(
            text.contains("persons") && text.contains("groups"),
            "{text}"
        );
        assert!(text.contains("answered 400"), "{text}");
        assert!(text.contains("client_secret"), "{text}");
        assert!(!partial.is_fatal());
    }
}

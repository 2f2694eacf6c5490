//! The real Kafka broker, as seen by a test.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use skolflode_kafka::{Admin, KafkaConfig, TopicSpec};

use crate::{names, HarnessError};

/// How long a test waits for the broker to answer before it gives up.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(15);

/// Which records a reader sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// Only records of committed transactions (and non-transactional ones).
    ReadCommitted,
    /// Everything in the log, aborted transactions included.
    ReadUncommitted,
}

/// A record as compared: partition, key, value.
pub type Raw = (i32, Option<Vec<u8>>, Option<Vec<u8>>);

/// One record read back from a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

/// A reachable Kafka broker plus the topics this test created on it.
pub struct TestKafka {
    config: KafkaConfig,
    admin: Admin,
    created: Mutex<Vec<String>>,
}

impl std::fmt::Debug for TestKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestKafka")
            .field("bootstrap", &self.config.bootstrap_servers)
            .finish()
    }
}

impl TestKafka {
    /// Reach the broker named by `KAFKA_BOOTSTRAP` (default
    /// `127.0.0.1:9092`), failing within [`PROBE_TIMEOUT`] if it does not
    /// answer.
    pub async fn connect() -> Result<Self, HarnessError> {
        Self::connect_to(KafkaConfig::from_env(), PROBE_TIMEOUT).await
    }

    /// Reach a given broker, failing within `timeout` if it does not answer.
    pub async fn connect_to(config: KafkaConfig, timeout: Duration) -> Result<Self, HarnessError> {
        let admin = Admin::new(&config, timeout)?;
        admin.probe().await?;
        Ok(Self {
            config,
            admin,
            created: Mutex::new(Vec::new()),
        })
    }

    /// The connection settings, for building clients under test.
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// Create a fresh topic with a unique name; it is deleted by
    /// [`TestKafka::cleanup`].
    pub async fn topic(&self, prefix: &str, partitions: i32) -> Result<String, HarnessError> {
        let name = names::unique(prefix);
        self.admin
            .ensure_topics(&[TopicSpec::new(&name, partitions)])
            .await?;
        if let Ok(mut created) = self.created.lock() {
            created.push(name.clone());
        }
        self.wait_for_leaders(&name, partitions).await?;
        Ok(name)
    }

    /// A unique consumer-group id.
    pub fn group(&self, prefix: &str) -> String {
        names::unique(&format!("{prefix}-group"))
    }

    /// A unique transactional id.
    pub fn transactional_id(&self, prefix: &str) -> String {
        names::unique(&format!("{prefix}-txn"))
    }

    /// Every committed record of `connection` on one of skolflode's own
    /// topics keyed by connection (dead letters, findings, heartbeats),
    /// decoded, in order; tombstones left out.
    pub async fn committed<T: skolflode_schemas::AvroType>(
        &self,
        topic: &str,
        connection: &str,
    ) -> Result<Vec<T>, HarnessError> {
        use skolflode_schemas::{wire, AvroType};
        let bad = |e: skolflode_schemas::DecodeError| {
            HarnessError::Environment(format!("{topic}: a record that cannot be read: {e}"))
        };
        let mut out = Vec::new();
        for r in self
            .drain_keyed(
                topic,
                Isolation::ReadCommitted,
                Duration::from_secs(60),
                connection,
            )
            .await?
        {
            let (Some(key), Some(payload)) = (r.key, r.payload) else {
                continue;
            };
            let (_, key) = wire::split(&key).map_err(bad)?;
            if String::decode_all(key).map_err(bad)? != connection {
                continue;
            }
            let (_, body) = wire::split(&payload).map_err(bad)?;
            out.push(T::decode_all(body).map_err(bad)?);
        }
        Ok(out)
    }

    /// Every committed record of `topic` as (partition, key, value), the
    /// partitions one after another, each in its order: what two runs that
    /// must write the same bytes are compared by.
    pub async fn partitions(&self, topic: &str) -> Result<Vec<Raw>, HarnessError> {
        let mut records: Vec<Raw> = self
            .drain(topic, Isolation::ReadCommitted, Duration::from_secs(60))
            .await?
            .into_iter()
            .map(|r| (r.partition, r.key, r.payload))
            .collect();
        records.sort_by_key(|r| r.0);
        Ok(records)
    }

    /// Read every record of `topic` from the beginning up to its end as it
    /// stands when this is called, within `timeout`.
    pub async fn drain(
        &self,
        topic: &str,
        isolation: Isolation,
        timeout: Duration,
    ) -> Result<Vec<Record>, HarnessError> {
        self.drain_filtered(topic, isolation, timeout, None).await
    }

    /// [`Self::drain`], keeping only the records whose key contains
    /// `needle` (every skolflode key names its connection): a test holds
    /// what its connection wrote, not what every earlier run on the same
    /// broker left in a shared topic (a benchmark's millions of records
    /// held in memory got test processes killed). Callers still compare
    /// the decoded key exactly.
    pub async fn drain_keyed(
        &self,
        topic: &str,
        isolation: Isolation,
        timeout: Duration,
        needle: &str,
    ) -> Result<Vec<Record>, HarnessError> {
        self.drain_filtered(topic, isolation, timeout, Some(needle.as_bytes().to_vec()))
            .await
    }

    async fn drain_filtered(
        &self,
        topic: &str,
        isolation: Isolation,
        timeout: Duration,
        needle: Option<Vec<u8>>,
    ) -> Result<Vec<Record>, HarnessError> {
        // skolflode's own consumer settings (the short fetch-queue backoff
        // among them: librdkafka's default of 1 s made draining a large
        // topic take minutes), at the isolation level asked for.
        let mut client = self.config.consumer(&names::unique("drain"))?;
        if isolation == Isolation::ReadUncommitted {
            client.set("isolation.level", "read_uncommitted");
        }
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || drain_blocking(client, &topic, timeout, needle))
            .await
            .map_err(|e| HarnessError::Environment(format!("drain task failed: {e}")))?
    }

    /// Delete the topics this test created.
    pub async fn cleanup(self) -> Result<(), HarnessError> {
        let created = self.created.lock().map(|c| c.clone()).unwrap_or_default();
        let names: Vec<&str> = created.iter().map(String::as_str).collect();
        self.admin.delete_topics(&names).await?;
        Ok(())
    }

    async fn wait_for_leaders(&self, topic: &str, partitions: i32) -> Result<(), HarnessError> {
        let client: BaseConsumer = self.config.build()?.create()?;
        let topic_owned = topic.to_owned();
        let timeout = PROBE_TIMEOUT;
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + timeout;
            loop {
                let ready = client
                    .fetch_metadata(Some(&topic_owned), Duration::from_secs(2))
                    .ok()
                    .and_then(|m| {
                        m.topics().first().map(|t| {
                            t.error().is_none()
                                && t.partitions().len() == partitions as usize
                                && t.partitions().iter().all(|p| p.leader() >= 0)
                        })
                    })
                    .unwrap_or(false);
                if ready {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(HarnessError::Timeout {
                        what: format!("waiting for the partitions of {topic_owned} to get leaders"),
                        waited: timeout,
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .await
        .map_err(|e| HarnessError::Environment(format!("metadata task failed: {e}")))?
    }
}

fn drain_blocking(
    client: rdkafka::ClientConfig,
    topic: &str,
    timeout: Duration,
    needle: Option<Vec<u8>>,
) -> Result<Vec<Record>, HarnessError> {
    let mut records = Vec::new();
    skolflode_kafka::read_to_end(client, topic, timeout, |m| {
        if let Some(needle) = &needle {
            let keyed = m
                .key()
                .is_some_and(|k| k.windows(needle.len()).any(|w| w == needle.as_slice()));
            if !keyed {
                return Ok(());
            }
        }
        records.push(Record {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
        });
        Ok::<(), HarnessError>(())
    })?;
    Ok(records)
}

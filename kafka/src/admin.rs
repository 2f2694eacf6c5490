//! Reachability probe and topic administration, every call bounded in time.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::FromClientConfig;
use rdkafka::types::RDKafkaErrorCode;

use crate::{KafkaConfig, KafkaError};

/// A topic to create: name, partition count and topic-level configs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub replication: i32,
    pub configs: Vec<(String, String)>,
}

impl TopicSpec {
    /// A topic with `partitions` partitions and replication factor 1.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication: 1,
            configs: Vec::new(),
        }
    }

    /// Add a topic-level config such as `cleanup.policy=compact`.
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.push((key.into(), value.into()));
        self
    }
}

/// A Kafka admin client whose every operation has a deadline.
pub struct Admin {
    client: Arc<AdminClient<DefaultClientContext>>,
    bootstrap: String,
    timeout: Duration,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("bootstrap", &self.bootstrap)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Admin {
    /// Build an admin client. This does not contact the broker; call
    /// [`Admin::probe`] for that.
    pub fn new(config: &KafkaConfig, timeout: Duration) -> Result<Self, KafkaError> {
        let client = Arc::new(AdminClient::from_config(&config.build()?)?);
        Ok(Self {
            client,
            bootstrap: config.bootstrap_servers.clone(),
            timeout,
        })
    }

    /// Ask the cluster for its metadata; fail with
    /// [`KafkaError::Unreachable`] if no broker answers within the timeout.
    /// Returns the number of brokers that the cluster reports.
    pub async fn probe(&self) -> Result<usize, KafkaError> {
        let timeout = self.timeout;
        // librdkafka's metadata call blocks its thread; keep it off the
        // async workers.
        let client = Arc::clone(&self.client);
        let result = tokio::task::spawn_blocking(move || {
            client
                .inner()
                .fetch_metadata(None, timeout)
                .map(|m| m.brokers().len())
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|join| Err(format!("metadata task failed: {join}")));
        result.map_err(|cause| KafkaError::Unreachable {
            bootstrap: self.bootstrap.clone(),
            timeout,
            cause,
        })
    }

    /// Create the topics that do not exist yet. A topic that exists already
    /// is left as it is (its partition count is not changed).
    pub async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<(), KafkaError> {
        let new_topics: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| {
                let mut topic = NewTopic::new(
                    &t.name,
                    t.partitions,
                    TopicReplication::Fixed(t.replication),
                );
                for (k, v) in &t.configs {
                    topic = topic.set(k, v);
                }
                topic
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(self.timeout));
        let results = self
            .bounded(self.client.create_topics(&new_topics, &options))
            .await?;
        check_results(results, "create", RDKafkaErrorCode::TopicAlreadyExists)
    }

    /// Delete topics; a topic that does not exist is not an error.
    pub async fn delete_topics(&self, names: &[&str]) -> Result<(), KafkaError> {
        if names.is_empty() {
            return Ok(());
        }
        let options = AdminOptions::new().operation_timeout(Some(self.timeout));
        let results = self
            .bounded(self.client.delete_topics(names, &options))
            .await?;
        check_results(results, "delete", RDKafkaErrorCode::UnknownTopicOrPartition)
    }

    async fn bounded<T>(
        &self,
        future: impl std::future::Future<Output = rdkafka::error::KafkaResult<T>>,
    ) -> Result<T, KafkaError> {
        // The admin request's own timeout applies once a broker is known; the
        // outer one covers the case where no broker was ever reached.
        match tokio::time::timeout(self.timeout + Duration::from_secs(1), future).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(KafkaError::Unreachable {
                bootstrap: self.bootstrap.clone(),
                timeout: self.timeout,
                cause: "admin request timed out".to_owned(),
            }),
        }
    }
}

/// The first per-topic failure of an admin call, treating `harmless` (the
/// topic already is as asked) as success.
fn check_results(
    results: Vec<rdkafka::admin::TopicResult>,
    operation: &'static str,
    harmless: RDKafkaErrorCode,
) -> Result<(), KafkaError> {
    for result in results {
        match result {
            Ok(_) => {}
            Err((_, code)) if code == harmless => {}
            Err((topic, code)) => {
                return Err(KafkaError::Admin {
                    operation,
                    topic,
                    cause: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

use std::time::Duration;

/// Errors from skolflode's Kafka plumbing.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// The configuration does not make sense; nothing was attempted.
    #[error("invalid Kafka configuration: {0}")]
    InvalidConfig(String),

    /// No broker answered a metadata request in time. The usual causes are a
    /// broker that is not running or a wrong bootstrap address.
    #[error(
        "Kafka at {bootstrap} did not answer a metadata request within {timeout:?}: {cause}. \
         Is the broker running (scripts/kafka status) and is KAFKA_BOOTSTRAP right?"
    )]
    Unreachable {
        bootstrap: String,
        timeout: Duration,
        cause: String,
    },

    /// An admin operation (create or delete topics) failed for one topic.
    #[error("admin operation {operation} on topic {topic} failed: {cause}")]
    Admin {
        operation: &'static str,
        topic: String,
        cause: String,
    },

    /// A bounded wait ran out.
    #[error("timed out: {0}")]
    Timeout(String),

    /// An error reported by librdkafka.
    #[error(transparent)]
    Client(#[from] rdkafka::error::KafkaError),
}

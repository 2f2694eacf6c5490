//! The sinks' errors.

/// What can go wrong in a sink.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("kafka: {0}")]
    Kafka(#[from] skolflode_kafka::KafkaError),
    #[error("kafka client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("no answer from Kafka at {bootstrap} within {seconds} s ({cause}): is the broker running and is kafka.bootstrap_servers right?")]
    Unreachable {
        bootstrap: String,
        seconds: u64,
        cause: String,
    },
    #[error("{path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("parquet {path}: {cause}")]
    Parquet {
        path: String,
        cause: ::parquet::errors::ParquetError,
    },
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("{path}: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("another sink holds {0}: one sink per register directory")]
    Locked(String),
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    #[error("a worker thread of the sink failed: {0}")]
    Worker(String),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

impl SinkError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
        move |cause| SinkError::Io {
            path: path.display().to_string(),
            cause,
        }
    }

    pub(crate) fn parquet(
        path: &std::path::Path,
    ) -> impl FnOnce(::parquet::errors::ParquetError) -> SinkError + '_ {
        move |cause| SinkError::Parquet {
            path: path.display().to_string(),
            cause,
        }
    }

    pub(crate) fn corrupt(path: &std::path::Path, reason: impl Into<String>) -> SinkError {
        SinkError::Corrupt {
            path: path.display().to_string(),
            reason: reason.into(),
        }
    }
}

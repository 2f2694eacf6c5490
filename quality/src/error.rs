//! What can go wrong building a report.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Kafka(#[from] skolflode_kafka::KafkaError),
    #[error(transparent)]
    Schema(#[from] skolflode_schemas::SchemaError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: {reason}")]
    Register { path: PathBuf, reason: String },
    #[error("no organiser {0:?} among the vendors' organisations (give its organisation number, id or name)")]
    UnknownOrganiser(String),
    #[error("encoding the report: {0}")]
    Json(#[from] serde_json::Error),
}

impl QualityError {
    pub fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_owned(),
            source,
        }
    }
}

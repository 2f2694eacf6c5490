//! Test support for skolflode's integration tests.
//!
//! Integration tests talk to the real services that `scripts/kafka start`
//! and `scripts/postgres start` run (or to any other Kafka and PostgreSQL
//! named by `KAFKA_BOOTSTRAP` and `DATABASE_URL`). Nothing here mocks them.
//!
//! - [`names`]: unique topic, group and transactional ids per test, so tests
//!   run in parallel against one broker without seeing each other.
//! - [`kafka`]: [`TestKafka`], which probes the broker with a hard timeout
//!   (a wrong address fails in seconds with a clear message), creates topics
//!   and deletes them again, and drains topics with bounded waits.
//! - [`pipeline`]: the simulator's API in-process, and replaying change
//!   topics to compare with what the vendor shows.
//! - [`postgres`]: [`TestDatabase`], a connection plus a private schema that
//!   is dropped on cleanup.
//! - [`scratch`]: [`Scratch`], a directory of the test's own, deleted with
//!   it (child processes get it as `TMPDIR`).
//! - [`term`]: a lively simulated term and a connection that polls it.
//!
//! Every wait in here has a deadline; a test never hangs on a broken
//! service.

pub mod kafka;
pub mod names;
pub mod pipeline;
pub mod postgres;
pub mod scratch;
pub mod term;

pub use kafka::{Record, TestKafka};
pub use names::unique;
pub use postgres::TestDatabase;
pub use scratch::Scratch;

/// Why a test could not use a service.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(transparent)]
    Kafka(#[from] skolflode_kafka::KafkaError),
    #[error("Kafka client error: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    Postgres(String),
    #[error("timed out after {waited:?} while {what}")]
    Timeout {
        what: String,
        waited: std::time::Duration,
    },
    #[error("{0}")]
    Environment(String),
}

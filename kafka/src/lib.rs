//! Kafka plumbing shared by every skolflode job.
//!
//! Kafka is skolflode's backbone: topics are the replayable history,
//! partitions and consumer groups scale the processors, and transactions give
//! exactly-once. This crate keeps the few pieces every job needs in one place:
//!
//! - [`config`]: [`KafkaConfig`], the connection settings (serde,
//!   `deny_unknown_fields`, documented defaults) and its `build()` into
//!   librdkafka client configs for consumers, plain producers and
//!   transactional producers.
//! - [`admin`]: a reachability probe with a hard timeout and idempotent topic
//!   creation, so that a wrong address fails fast with a clear message.
//! - [`batch`]: [`batch::Batch`], the messages waiting in a consumer's
//!   queue taken many at a time, for readers of large topics.
//! - [`eos`]: [`Stage`], the consume → process → produce loop's Kafka side:
//!   outputs and consumed offsets in one transaction.
//! - [`fanout`]: [`FanOut`], one read of the input partitions shared by
//!   the stages of an instance, each with its own offsets.
//! - [`partition`]: Kafka's default partitioner (murmur2), as Java computes it.
//! - [`read`]: reading a topic to its end (state rebuilds, checks).
//! - [`store`]: [`SideStore`], a disk-backed slot store for state that
//!   is restored from a topic but too large to hold in memory.
//! - [`writer`]: [`TransactionalWriter`], the producing half of every
//!   exactly-once stage (async and blocking), with delivery-failure counts.
//! - [`txn`]: classification of transaction errors into retriable,
//!   abort-the-transaction and fatal, following librdkafka's rules.
//! - [`error`]: this crate's error enum.

pub mod admin;
// The one place with `unsafe`: calls into librdkafka that rust-rdkafka
// does not wrap, each with its reason it is sound.
#[allow(unsafe_code)]
pub mod batch;
pub mod config;
pub mod eos;
pub mod error;
pub mod fanout;
pub mod partition;
pub mod read;
pub mod store;
pub mod txn;
pub mod writer;

pub use admin::{Admin, TopicSpec};
pub use config::KafkaConfig;
pub use eos::Stage;
pub use error::KafkaError;
pub use fanout::{Delivery, FanOut, FanOutHandle, Offsets, Record, Route, Tagged};
pub use partition::partition_for;
pub use read::{read_partitions_to_end, read_to_end, Partitions};
pub use store::{unique_name, Puts, SideStore, StoreError, StoreReader};
pub use txn::{classify, TxnErrorClass};
pub use writer::{TransactionalWriter, WriteError};

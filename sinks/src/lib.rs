//! Sinks: the weekly and yearly registers, built from the processors'
//! snapshot topics.
//!
//! The Parquet sink (`parquet`) reads each snapshot topic on a thread of
//! its own ([`read`]), assembles each connection's revisions of a week
//! ([`assemble`]), and in one writing loop ([`run`]) writes them into the
//! register directory ([`registers`]) — every file written whole under a
//! temporary name and renamed into place, with a manifest per partition —
//! aggregates the weeks of a school year into the yearly register
//! ([`yearly`]), and only then records the input offsets it has covered
//! ([`checkpoint`]), so that a restarted sink knows what is done. The
//! PostgreSQL sink ([`postgres`]) writes the same tables, with the offsets
//! in the same database transaction as the rows.

pub mod assemble;
pub mod block;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod metrics;
pub mod output;
pub mod parquet;
pub mod period;
pub mod postgres;
pub mod pupil_register;
pub mod read;
pub mod registers;
pub mod run;
pub mod table;
pub mod yearly;

pub use config::SinkConfig;
pub use error::SinkError;

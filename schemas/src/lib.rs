//! skolflode's topic contracts.
//!
//! The change topics are the most durable thing skolflode ships: platform
//! teams consume them with their own tools, and every register is rebuilt
//! from them years later. This crate holds everything that defines them:
//!
//! - `avro/<Subject>/v<N>.avsc`: the checked-in Avro schemas, every version
//!   kept. Entities are derived from SS 12000 v2 (field names and meanings
//!   kept; see `docs/schemas.md` for the field-by-field mapping) and wrapped
//!   in a Debezium-style change envelope.
//! - [`codec`]: a compact Avro binary codec: the [`AvroType`] trait, its
//!   implementations for Avro's primitive and logical types, and the
//!   `avro_record!`/`avro_enum!` macros that define a Rust struct and its
//!   encoding in one place. Decoding never panics on arbitrary bytes.
//! - [`entities`]: the SS 12000 entity types; [`envelope`]: [`ChangeEvent`],
//!   [`Op`], [`Source`] and [`EntityKey`].
//! - [`records`]: the producer's state, dead letters and quality findings.
//! - [`state_key`]: the keys of the producer's state topic.
//! - [`catalogue`]: every subject with all its schema versions, and every
//!   topic with its key and value schema, retention and writer (mirrored in
//!   `asyncapi.yaml`).
//! - [`wire`]: the Confluent wire format (magic byte, schema id, Avro body),
//!   with per-writer-schema decoding plans resolved once.
//! - [`compat`]: the compatibility gate (FULL_TRANSITIVE over all kept
//!   versions: every version reads every other's data).
//! - [`registry`]: a client for the Confluent-compatible schema-registry
//!   REST API, with caching.

pub mod catalogue;
pub mod codec;
pub mod compat;
pub mod entities;
pub mod envelope;
pub mod error;
pub mod processed;
pub mod records;
pub mod registry;
pub mod rules;
pub mod state_key;
pub mod wire;

pub use codec::{AvroRecord, AvroType, Bytes, Date, TimestampMillis};
pub use envelope::{ChangeEvent, EntityKey, Op, Source};
pub use error::{DecodeError, SchemaError};

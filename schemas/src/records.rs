//! The records of skolflode's own topics: the producer's state, the
//! dead-letter topic and quality findings.

use crate::avro_record;
use crate::codec::{Bytes, TimestampMillis};

avro_record! {
    /// The last version of an entity the producer saw.
    pub struct EntityState = "se.skolflode.producer.EntityState" {
        content_hash: String = "content_hash",
        /// Empty: the item was never understood (only a dead letter).
        image: Bytes = "image",
        observed_at: TimestampMillis = "observed_at",
        /// Digest of the findings or dead letter last published for it.
        report: i64 = "report",
    }
}

avro_record! {
    /// Where reading an endpoint stands.
    pub struct Cursor = "se.skolflode.producer.Cursor" {
        modified_after: Option<String> = "modified_after",
        full_reads: i64 = "full_reads",
        polls: i64 = "polls",
        updated_at: TimestampMillis = "updated_at",
    }
}

avro_record! {
    /// A record of the producer's state topic: an entity or a cursor.
    pub struct ProducerState = "se.skolflode.producer.ProducerState" {
        entity: Option<EntityState> = "entity",
        cursor: Option<Cursor> = "cursor",
    }
}

/// Version 1 of the producer's state records, as written before entity
/// states carried `report`; read on start, never written.
pub mod v1 {
    use super::{Bytes, Cursor, TimestampMillis};
    use crate::avro_record;

    avro_record! {
        /// `EntityState` version 1.
        pub struct EntityState = "se.skolflode.producer.EntityState" {
            content_hash: String = "content_hash",
            image: Bytes = "image",
            observed_at: TimestampMillis = "observed_at",
        }
    }

    avro_record! {
        /// `ProducerState` version 1.
        pub struct ProducerState = "se.skolflode.producer.ProducerState" {
            entity: Option<EntityState> = "entity",
            cursor: Option<Cursor> = "cursor",
        }
    }

    impl From<ProducerState> for super::ProducerState {
        fn from(old: ProducerState) -> Self {
            Self {
                entity: old.entity.map(|e| super::EntityState {
                    content_hash: e.content_hash,
                    image: e.image,
                    observed_at: e.observed_at,
                    report: 0,
                }),
                cursor: old.cursor,
            }
        }
    }
}

avro_record! {
    /// Input that could not be understood: redacted, and its raw bytes
    /// encrypted to the operators (or not kept).
    pub struct DeadLetter = "se.skolflode.envelope.DeadLetter" {
        connection: String = "connection",
        endpoint: String = "endpoint",
        reason: String = "reason",
        entity_id: Option<String> = "entity_id",
        /// Encrypted as `raw_encryption` says; empty when not kept.
        raw: Bytes = "raw",
        observed_at: TimestampMillis = "observed_at",
        /// The item with personal values replaced by `<redacted>`.
        redacted: Option<String> = "redacted",
        /// `age`, or `None` for version 1 records (raw in clear).
        raw_encryption: Option<String> = "raw_encryption",
    }
}

avro_record! {
    /// Something that had to be repaired to be understood, or a broken
    /// validation rule (`rule` set; [`crate::rules`]).
    pub struct QualityFinding = "se.skolflode.envelope.QualityFinding" {
        connection: String = "connection",
        endpoint: String = "endpoint",
        entity_id: String = "entity_id",
        field: String = "field",
        kind: String = "kind",
        observed_at: TimestampMillis = "observed_at",
        rule: Option<String> = "rule",
        severity: Option<String> = "severity",
        school_unit_code: Option<String> = "school_unit_code",
        vendor: Option<String> = "vendor",
        week: Option<String> = "week",
        first_seen: Option<TimestampMillis> = "first_seen",
        /// `None` while the finding holds.
        resolved_at: Option<TimestampMillis> = "resolved_at",
    }
}

avro_record! {
    /// One poll of a connection.
    pub struct Heartbeat = "se.skolflode.envelope.Heartbeat" {
        connection: String = "connection",
        vendor: String = "vendor",
        at: TimestampMillis = "at",
        server_time: Option<TimestampMillis> = "server_time",
        ok: bool = "ok",
        polls: i64 = "polls",
        events: i64 = "events",
    }
}

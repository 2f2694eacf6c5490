//! The change envelope, modelled on Debezium's: what happened (`op`), the
//! entity before and after, where it was read (`source`) and when
//! (`observed_at`). Differences from Debezium are listed in
//! `docs/schemas.md`.

use crate::codec::{AvroRecord, AvroType, Reader, TimestampMillis};
use crate::entities::{
    Activity, Attendance, CalendarEvent, Duty, Group, Organisation, Person, Syllabus,
};
use crate::{avro_enum, avro_record, DecodeError};

avro_enum! {
    /// What happened to the entity.
    pub enum Op {
        Unknown = "UNKNOWN",
        Create = "CREATE",
        Update = "UPDATE",
        Delete = "DELETE",
        SnapshotRead = "SNAPSHOT_READ",
    }
}

avro_record! {
    /// Where and when the vendor showed this version.
    pub struct Source = "se.skolflode.envelope.Source" {
        vendor: String = "vendor",
        connection: String = "connection",
        endpoint: String = "endpoint",
        cursor: Option<String> = "cursor",
        server_time: Option<TimestampMillis> = "serverTime",
    }
}

avro_record! {
    /// The key of every change topic: all versions of one entity of one
    /// connection land in one partition, in order.
    pub struct EntityKey = "se.skolflode.envelope.EntityKey" {
        connection: String = "connection",
        entity_id: String = "entity_id",
    }
}

/// An SS 12000 entity that has a change topic.
pub trait Entity: AvroRecord + Clone + std::fmt::Debug + PartialEq {
    /// The catalogue subject of its change events, e.g. `ActivityChange`.
    const CHANGE_SUBJECT: &'static str;
    /// The SS 12000 endpoint it is read from, e.g. `activities`.
    const ENDPOINT: &'static str;
    /// Its id.
    fn id(&self) -> &str;
    /// Its `meta` block, which is not part of its content.
    fn meta_mut(&mut self) -> &mut Option<crate::entities::Meta>;
}

macro_rules! entity {
    ($ty:ty, $subject:literal, $endpoint:literal) => {
        impl Entity for $ty {
            const CHANGE_SUBJECT: &'static str = $subject;
            const ENDPOINT: &'static str = $endpoint;
            fn id(&self) -> &str {
                &self.id
            }
            fn meta_mut(&mut self) -> &mut Option<crate::entities::Meta> {
                &mut self.meta
            }
        }
    };
}

entity!(Organisation, "OrganisationChange", "organisations");
entity!(Person, "PersonChange", "persons");
entity!(Duty, "DutyChange", "duties");
entity!(Group, "GroupChange", "groups");
entity!(Activity, "ActivityChange", "activities");
entity!(CalendarEvent, "CalendarEventChange", "calendarEvents");
entity!(Attendance, "AttendanceChange", "attendances");
entity!(Syllabus, "SyllabusChange", "syllabuses");

/// A change to one entity: `ChangeEvent<Activity>` is the Avro record
/// `se.skolflode.envelope.ActivityChange`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeEvent<T> {
    /// Unique id of this event: a hash of connection, entity id, operation,
    /// content hash and observation time (a version seen again, e.g. a
    /// teacher put back, is a new event with a new id).
    pub event_id: String,
    pub op: Op,
    /// The version seen before; `None` for creates and snapshot reads.
    pub before: Option<T>,
    /// The version seen now; `None` for deletes.
    pub after: Option<T>,
    pub source: Source,
    /// When the producer observed the change (recorded time).
    pub observed_at: TimestampMillis,
    /// Lowercase hex SHA-256 of the canonical `after` image.
    pub content_hash: Option<String>,
}

/// The envelope's field names in schema order.
pub const ENVELOPE_FIELDS: &[&str] = &[
    "event_id",
    "op",
    "before",
    "after",
    "source",
    "observed_at",
    "content_hash",
];

impl<T: AvroType> AvroType for ChangeEvent<T> {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        self.event_id.encode(out);
        self.op.encode(out);
        self.before.encode(out);
        self.after.encode(out);
        self.source.encode(out);
        self.observed_at.encode(out);
        self.content_hash.encode(out);
    }
    #[inline]
    fn decode(input: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            event_id: AvroType::decode(input)?,
            op: AvroType::decode(input)?,
            before: AvroType::decode(input)?,
            after: AvroType::decode(input)?,
            source: AvroType::decode(input)?,
            observed_at: AvroType::decode(input)?,
            content_hash: AvroType::decode(input)?,
        })
    }
    #[inline]
    fn decode_into(&mut self, input: &mut Reader<'_>) -> Result<(), DecodeError> {
        self.event_id.decode_into(input)?;
        self.op.decode_into(input)?;
        self.before.decode_into(input)?;
        self.after.decode_into(input)?;
        self.source.decode_into(input)?;
        self.observed_at.decode_into(input)?;
        self.content_hash.decode_into(input)
    }
}

/// A change event whose entity images are already Avro-encoded: it writes
/// exactly the bytes of the [`ChangeEvent`] it stands for, without decoding
/// and re-encoding images a producer holds as bytes anyway (the before
/// image comes from its state, the after image is what it hashed).
#[derive(Clone, Copy, Debug)]
pub struct EncodedChange<'a> {
    pub event_id: &'a str,
    pub op: Op,
    /// The encoded `before` entity.
    pub before: Option<&'a [u8]>,
    /// The encoded `after` entity.
    pub after: Option<&'a [u8]>,
    pub source: &'a Source,
    pub observed_at: TimestampMillis,
    pub content_hash: Option<&'a str>,
}

impl EncodedChange<'_> {
    /// Append the Avro body to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        fn image(image: Option<&[u8]>, out: &mut Vec<u8>) {
            match image {
                None => out.push(0),
                Some(bytes) => {
                    // Union branch 1 (the record), zig-zag encoded.
                    out.push(2);
                    out.extend_from_slice(bytes);
                }
            }
        }
        crate::codec::write_str(out, self.event_id);
        self.op.encode(out);
        image(self.before, out);
        image(self.after, out);
        self.source.encode(out);
        self.observed_at.encode(out);
        match self.content_hash {
            None => out.push(0),
            Some(hash) => {
                out.push(2);
                crate::codec::write_str(out, hash);
            }
        }
    }
}

#[cfg(feature = "sample")]
impl<T: crate::codec::sample::Sample> crate::codec::sample::Sample for ChangeEvent<T> {
    fn sample<R: rand::Rng>(rng: &mut R) -> Self {
        use crate::codec::sample::Sample;
        Self {
            event_id: Sample::sample(rng),
            op: Sample::sample(rng),
            before: Sample::sample(rng),
            after: Sample::sample(rng),
            source: Sample::sample(rng),
            observed_at: Sample::sample(rng),
            content_hash: Sample::sample(rng),
        }
    }
}

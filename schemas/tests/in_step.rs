//! The Rust types and the checked-in `.avsc` files describe the same bytes.
//!
//! For random instances of every change event, our encoding must be exactly
//! what apache-avro reads with the schema file and writes back; and the
//! field names must match the schema's, in order.

// A test fails by panicking; helpers outside #[test] functions may too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use apache_avro::schema::{RecordSchema, Schema};
use rand::rngs::StdRng;
use rand::SeedableRng;
use skolflode_schemas::catalogue::{self, SUBJECTS};
use skolflode_schemas::codec::sample::Sample;
use skolflode_schemas::codec::AvroRecord;
use skolflode_schemas::entities::*;
use skolflode_schemas::envelope::{EncodedChange, Entity, ENVELOPE_FIELDS};
use skolflode_schemas::{AvroType, ChangeEvent, EntityKey};

const SAMPLES: usize = 400;

fn record(schema: &Schema) -> &RecordSchema {
    match schema {
        Schema::Record(r) => r,
        other => panic!("expected a record, found {other:?}"),
    }
}

fn field_names(r: &RecordSchema) -> Vec<&str> {
    r.fields.iter().map(|f| f.name.as_str()).collect()
}

/// The entity record, defined in the `["null", Record]` union of the
/// envelope's `before` (`after` refers to it by name).
fn entity_record(envelope: &RecordSchema) -> &RecordSchema {
    let before = envelope
        .fields
        .iter()
        .find(|f| f.name == "before")
        .map(|f| &f.schema);
    let Some(Schema::Union(union)) = before else {
        panic!("before is not a union: {before:?}");
    };
    match union.variants() {
        [Schema::Null, Schema::Record(r)] => r,
        other => panic!("before is not [null, record]: {other:?}"),
    }
}

fn check_bytes<T: AvroType + Sample + PartialEq + std::fmt::Debug>(schema: &Schema, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut reused = T::sample(&mut rng);
    for i in 0..SAMPLES {
        let value = T::sample(&mut rng);
        let ours = value.to_avro_bytes();
        let mut cursor = &ours[..];
        let generic = apache_avro::from_avro_datum(schema, &mut cursor, None).unwrap_or_else(|e| {
            panic!("sample {i}: apache-avro cannot read our bytes: {e}\n{value:?}")
        });
        assert!(
            cursor.is_empty(),
            "sample {i}: apache-avro left {} bytes",
            cursor.len()
        );
        let theirs = apache_avro::to_avro_datum(schema, generic)
            .unwrap_or_else(|e| panic!("sample {i}: apache-avro cannot write it back: {e}"));
        assert_eq!(ours, theirs, "sample {i}: encodings differ for {value:?}");
        assert_eq!(T::decode_all(&theirs).as_ref(), Ok(&value), "sample {i}");
        // Decoding into a value that held the previous sample gives the same.
        let mut reader = skolflode_schemas::codec::Reader::new(&theirs);
        reused.decode_into(&mut reader).expect("decode_into");
        assert_eq!(reader.remaining(), 0);
        assert_eq!(reused, value, "sample {i}: decode_into differs");
    }
}

fn check_entity<E: Entity + Sample + std::fmt::Debug>(seed: u64) {
    let subject = catalogue::subject(E::CHANGE_SUBJECT).expect("subject in catalogue");
    let schema = subject.parse_latest().expect("schema parses");
    let envelope = record(&schema);
    assert_eq!(
        field_names(envelope),
        ENVELOPE_FIELDS,
        "{}",
        E::CHANGE_SUBJECT
    );
    let entity = entity_record(envelope);
    assert_eq!(entity.name.fullname(None), E::AVRO_NAME);
    assert_eq!(field_names(entity), E::FIELDS, "{}", E::AVRO_NAME);
    check_bytes::<ChangeEvent<E>>(&schema, seed);
    check_encoded_change::<E>(seed);
}

/// A change written from encoded images is byte for byte the typed one.
fn check_encoded_change<E: Entity + Sample + std::fmt::Debug>(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    for i in 0..SAMPLES {
        let event = ChangeEvent::<E>::sample(&mut rng);
        let before = event.before.as_ref().map(AvroType::to_avro_bytes);
        let after = event.after.as_ref().map(AvroType::to_avro_bytes);
        let encoded = EncodedChange {
            event_id: &event.event_id,
            op: event.op,
            before: before.as_deref(),
            after: after.as_deref(),
            source: &event.source,
            observed_at: event.observed_at,
            content_hash: event.content_hash.as_deref(),
        };
        let mut ours = Vec::new();
        encoded.encode(&mut ours);
        assert_eq!(ours, event.to_avro_bytes(), "sample {i}: {event:?}");
    }
}

#[test]
fn organisation_change_in_step() {
    check_entity::<Organisation>(1);
}

#[test]
fn person_change_in_step() {
    check_entity::<Person>(2);
}

#[test]
fn duty_change_in_step() {
    check_entity::<Duty>(3);
}

#[test]
fn group_change_in_step() {
    check_entity::<Group>(4);
}

#[test]
fn activity_change_in_step() {
    check_entity::<Activity>(5);
}

#[test]
fn calendar_event_change_in_step() {
    check_entity::<CalendarEvent>(6);
}

#[test]
fn attendance_change_in_step() {
    check_entity::<Attendance>(7);
}

#[test]
fn syllabus_change_in_step() {
    check_entity::<Syllabus>(8);
}

#[test]
fn entity_key_in_step() {
    let schema = catalogue::subject("EntityKey")
        .expect("subject")
        .parse_latest()
        .expect("parses");
    assert_eq!(field_names(record(&schema)), EntityKey::FIELDS);
    check_bytes::<EntityKey>(&schema, 9);
}

fn check_record<T: AvroRecord + Sample + PartialEq + std::fmt::Debug>(subject: &str, seed: u64) {
    let schema = catalogue::subject(subject)
        .expect("subject")
        .parse_latest()
        .expect("parses");
    assert_eq!(field_names(record(&schema)), T::FIELDS, "{subject}");
    assert_eq!(record(&schema).name.fullname(None), T::AVRO_NAME);
    check_bytes::<T>(&schema, seed);
}

#[test]
fn own_records_in_step() {
    use skolflode_schemas::records::*;
    check_record::<ProducerState>("ProducerState", 10);
    check_record::<DeadLetter>("DeadLetter", 11);
    check_record::<QualityFinding>("QualityFinding", 12);
    check_record::<Heartbeat>("Heartbeat", 14);
    let string_key = catalogue::subject("StringKey")
        .expect("subject")
        .parse_latest()
        .expect("parses");
    check_bytes::<String>(&string_key, 13);
}

#[test]
fn processed_records_in_step() {
    use skolflode_schemas::processed::*;
    check_record::<HistoryVersion>("HistoryVersion", 15);
    check_record::<TeacherStudentRow>("TeacherStudentRow", 16);
    check_record::<AttendanceRow>("AttendanceRow", 17);
    check_record::<ProcessorState>("ProcessorState", 18);
    check_record::<UnitWeekCoverage>("UnitWeekCoverage", 19);
}

#[test]
fn every_subject_has_a_rust_type_checked_here() {
    let checked = [
        "OrganisationChange",
        "PersonChange",
        "DutyChange",
        "GroupChange",
        "ActivityChange",
        "CalendarEventChange",
        "AttendanceChange",
        "SyllabusChange",
        "EntityKey",
        "StringKey",
        "ProducerState",
        "DeadLetter",
        "QualityFinding",
        "Heartbeat",
        "HistoryVersion",
        "TeacherStudentRow",
        "AttendanceRow",
        "ProcessorState",
        "UnitWeekCoverage",
    ];
    let names: Vec<&str> = SUBJECTS.iter().map(|s| s.name).collect();
    assert_eq!(names, checked);
}

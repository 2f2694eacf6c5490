//! The compatibility gate, and reading data written with another version.

// A test fails by panicking; helpers outside #[test] functions may too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use apache_avro::types::Value;
use apache_avro::Schema;
use serde_json::Value as Json;
use skolflode_schemas::catalogue::{self, SUBJECTS};
use skolflode_schemas::compat;
use skolflode_schemas::entities::{Activity, ObjectReference};
use skolflode_schemas::wire::{self, Decoder};
use skolflode_schemas::{ChangeEvent, Date, Op, SchemaError};

fn activity_change_json() -> Json {
    let text = catalogue::subject("ActivityChange")
        .expect("subject")
        .latest();
    serde_json::from_str(text).expect("json")
}

/// The Activity record's field list inside the envelope's `before` union.
fn activity_fields(schema: &mut Json) -> &mut Vec<Json> {
    schema["fields"][2]["type"][1]["fields"]
        .as_array_mut()
        .expect("Activity fields")
}

fn parse(json: &Json) -> Schema {
    Schema::parse_str(&json.to_string()).expect("parses")
}

#[test]
fn every_checked_in_subject_passes_the_gate() {
    let reports = compat::check_all();
    assert_eq!(reports.len(), SUBJECTS.len());
    for report in reports {
        assert!(report.versions >= 1);
        assert!(
            report.problems.is_empty(),
            "{}: {:?}",
            report.subject,
            report.problems
        );
    }
}

#[test]
fn adding_an_optional_field_passes() {
    let old = activity_change_json();
    let mut new = old.clone();
    activity_fields(&mut new).push(serde_json::json!({
        "name": "room", "type": ["null", "string"], "default": null
    }));
    let problems = compat::check_versions("ActivityChange", &[(1, parse(&old)), (2, parse(&new))]);
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn removing_a_required_field_fails() {
    let old = activity_change_json();
    let mut new = old.clone();
    activity_fields(&mut new).retain(|f| f["name"] != "calendarEventsRequired");
    let problems = compat::check_versions("ActivityChange", &[(1, parse(&old)), (2, parse(&new))]);
    // Consumers still on v1 cannot read v2 data: the field has no default.
    assert!(
        problems.iter().any(|p| matches!(
            p,
            SchemaError::Incompatible {
                writer: 2,
                reader: 1,
                ..
            }
        )),
        "{problems:?}"
    );
}

#[test]
fn adding_a_required_field_fails() {
    let old = activity_change_json();
    let mut new = old.clone();
    activity_fields(&mut new).push(serde_json::json!({ "name": "room", "type": "string" }));
    let problems = compat::check_versions("ActivityChange", &[(1, parse(&old)), (2, parse(&new))]);
    // v2 cannot replay v1 data: nothing to fill the new field with.
    assert!(
        problems.iter().any(|p| matches!(
            p,
            SchemaError::Incompatible {
                writer: 1,
                reader: 2,
                ..
            }
        )),
        "{problems:?}"
    );
}

#[test]
fn the_gate_is_transitive() {
    // v2 adds an optional field, v3 makes it required: v3 reads v2 (the
    // field is there) but not v1.
    let v1 = activity_change_json();
    let mut v2 = v1.clone();
    activity_fields(&mut v2).push(serde_json::json!({
        "name": "room", "type": ["null", "string"], "default": null
    }));
    let mut v3 = v1.clone();
    activity_fields(&mut v3).push(serde_json::json!({ "name": "room", "type": "string" }));
    let problems = compat::check_versions(
        "ActivityChange",
        &[(1, parse(&v1)), (2, parse(&v2)), (3, parse(&v3))],
    );
    assert!(problems.iter().any(|p| matches!(
        p,
        SchemaError::Incompatible {
            writer: 1,
            reader: 3,
            ..
        }
    )));
}

#[test]
fn changing_a_field_type_fails() {
    let old = activity_change_json();
    let mut new = old.clone();
    for field in activity_fields(&mut new).iter_mut() {
        if field["name"] == "calendarEventsRequired" {
            field["type"] = Json::String("string".into());
        }
    }
    let problems = compat::check_versions("ActivityChange", &[(1, parse(&old)), (2, parse(&new))]);
    assert!(!problems.is_empty());
}

#[test]
fn data_from_an_older_writer_is_resolved_once_and_decoded() {
    // An older writer that lacked the optional `parentActivity`.
    let mut older = activity_change_json();
    activity_fields(&mut older).retain(|f| f["name"] != "parentActivity");
    let older = parse(&older);
    let reader = catalogue::subject("ActivityChange")
        .expect("subject")
        .parse_latest()
        .expect("parses");

    let activity = Activity {
        id: "e4e4e4e4-0000-4000-8000-000000000004".into(),
        display_name: "Engelska 9A".into(),
        calendar_events_required: true,
        start_date: Date(20_000),
        groups: vec![ObjectReference::new("g1")],
        organisation: ObjectReference::new("o1"),
        ..Activity::default()
    };
    let event = ChangeEvent {
        event_id: "e1".into(),
        op: Op::Create,
        after: Some(activity.clone()),
        ..ChangeEvent::default()
    };
    // Write with the older schema through apache-avro: our v-latest bytes,
    // read as Value, minus the field the old writer did not have.
    let mut latest_body = &wire::encode(0, &event)[5..];
    let value = apache_avro::from_avro_datum(&reader, &mut latest_body, None).expect("value");
    let value = drop_field(value, "parentActivity");
    let old_body = apache_avro::to_avro_datum(&older, value).expect("older writer");
    let mut framed = vec![0, 0, 0, 0, 7];
    framed.extend_from_slice(&old_body);

    let mut decoder: Decoder<ChangeEvent<Activity>> = Decoder::new(reader.clone());
    assert!(matches!(
        decoder.decode(&framed),
        Err(skolflode_schemas::DecodeError::UnknownSchemaId(7))
    ));
    decoder.add_writer(7, &older).expect("compatible");
    decoder.add_writer(8, &reader).expect("native");
    assert_eq!(decoder.decode(&framed), Ok(event.clone()));
    assert_eq!(decoder.decode(&wire::encode(8, &event)), Ok(event));
}

#[test]
fn an_incompatible_writer_is_refused_up_front() {
    let mut other = activity_change_json();
    for field in activity_fields(&mut other).iter_mut() {
        if field["name"] == "displayName" {
            field["type"] = Json::String("long".into());
        }
    }
    let reader = catalogue::subject("ActivityChange")
        .expect("subject")
        .parse_latest()
        .expect("parses");
    let mut decoder: Decoder<ChangeEvent<Activity>> = Decoder::new(reader);
    assert!(decoder.add_writer(9, &parse(&other)).is_err());
}

fn drop_field(value: Value, name: &str) -> Value {
    match value {
        Value::Record(fields) => Value::Record(
            fields
                .into_iter()
                .filter(|(n, _)| n != name)
                .map(|(n, v)| (n, drop_field(v, name)))
                .collect(),
        ),
        Value::Union(i, inner) => Value::Union(i, Box::new(drop_field(*inner, name))),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| drop_field(v, name)).collect())
        }
        other => other,
    }
}

//! SS 12000 JSON as the simulator serves it, and as sloppy vendors send
//! it, mapped to skolflode's entities.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use map::{Context, Finding, FindingKind, MapError};
use serde_json::{json, Value};
use skolflode_producers::pseudonym::Pseudonymiser;
use skolflode_schemas::entities::CivicNoValidity;
use skolflode_schemas::AvroType;
use skolflode_simulator::sim::Simulation;
use skolflode_simulator::ss12000::ENDPOINTS;
use skolflode_simulator::SimConfig;

/// The mappings, over `serde_json::Value`s as these tests build them.
mod map {
    use serde_json::Value;
    use skolflode_producers::ss12000::json::Json;
    use skolflode_producers::ss12000::map as m;
    pub use skolflode_producers::ss12000::map::{Context, Finding, FindingKind, MapError, Mapped};
    use skolflode_schemas::entities::*;

    macro_rules! over_values {
        ($($name:ident -> $ty:ty),*) => {$(
            pub fn $name(item: &Value) -> Result<Mapped<$ty>, MapError> {
                let pseudonymiser = super::pseudonymiser();
                m::$name(&Json::from(item), &Context::new(&pseudonymiser, "kommun-test", (2025, 9, 10)))
            }
        )*};
    }
    over_values!(
        organisation -> Organisation,
        duty -> Duty,
        group -> Group,
        syllabus -> Syllabus,
        activity -> Activity,
        calendar_event -> CalendarEvent,
        attendance -> Attendance
    );

    pub fn person(item: &Value, cx: &Context<'_>) -> Result<Mapped<Person>, MapError> {
        m::person(&Json::from(item), cx)
    }
}

const SECRET: &[u8] = b"a test key that is long enough for the contract";

fn pseudonymiser() -> Pseudonymiser {
    Pseudonymiser::new(SECRET).unwrap()
}

#[test]
fn everything_the_simulator_serves_maps_cleanly_and_without_personal_data() {
    let mut sim = Simulation::new(SimConfig::default(), None).unwrap();
    sim.advance_to(chrono::NaiveDate::from_ymd_opt(2025, 9, 10).unwrap())
        .unwrap();
    let pseudonymiser = Pseudonymiser::new(SECRET).unwrap();
    let cx = Context::new(&pseudonymiser, "kommun-test", (2025, 9, 10));
    let mut counts = std::collections::BTreeMap::new();
    for endpoint in ENDPOINTS {
        for i in 0..sim.storage_len(endpoint).unwrap() {
            let Some((_, item)) = sim.render(endpoint, i) else {
                continue;
            };
            let findings = match *endpoint {
                "organisations" => map::organisation(&item).map(|m| m.findings),
                "persons" => {
                    let m = map::person(&item, &cx).unwrap();
                    // Nothing personal survives: no name, no civic number.
                    let bytes = m.entity.to_avro_bytes();
                    for field in ["givenName", "familyName"] {
                        let name = item[field].as_str().unwrap();
                        assert!(!contains(&bytes, name.as_bytes()), "{field} leaked");
                    }
                    if let Some(civic) = item["civicNo"]["value"].as_str() {
                        assert!(
                            !contains(&bytes, civic.as_bytes())
                                && !contains(&bytes, &civic.as_bytes()[2..])
                        );
                        let expected = pseudonymiser.person(
                            Some(civic),
                            cx.today,
                            cx.source,
                            item["id"].as_str().unwrap(),
                        );
                        assert_eq!(m.entity.person_key, expected.key);
                    } else {
                        assert_eq!(m.entity.civic_no_validity, CivicNoValidity::Missing);
                    }
                    let email = item["emails"][0]["value"].as_str().unwrap();
                    assert!(!contains(&bytes, email.as_bytes()));
                    Ok(m.findings
                        .into_iter()
                        .filter(|f| {
                            !matches!(
                                f.kind,
                                FindingKind::InvalidCivicNumber | FindingKind::MissingCivicNumber
                            )
                        })
                        .collect())
                }
                "duties" => map::duty(&item).map(|m| m.findings),
                "groups" => map::group(&item).map(|m| m.findings),
                "syllabuses" => map::syllabus(&item).map(|m| m.findings),
                "activities" => map::activity(&item).map(|m| m.findings),
                "calendarEvents" => map::calendar_event(&item).map(|m| m.findings),
                _ => map::attendance(&item).map(|m| m.findings),
            };
            let findings = findings.unwrap_or_else(|e| panic!("{endpoint}: {e}: {item}"));
            assert!(findings.is_empty(), "{endpoint}: {findings:?}");
            *counts.entry(*endpoint).or_insert(0) += 1;
        }
    }
    assert_eq!(counts.len(), ENDPOINTS.len(), "{counts:?}");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn lesson(overrides: Value) -> Value {
    let mut base = json!({
        "id": "l1",
        "meta": { "created": "2025-09-01T06:00:00+02:00", "modified": "2025-09-01T06:00:00+02:00" },
        "activity": { "id": "a1" },
        "startTime": "2025-09-08T08:10:00+02:00",
        "endTime": "2025-09-08T09:10:00+02:00",
    });
    if let (Value::Object(b), Value::Object(o)) = (&mut base, overrides) {
        b.extend(o);
    }
    base
}

#[test]
fn sloppy_but_understandable_items_are_repaired_and_reported() {
    let m = map::calendar_event(&lesson(json!({
        "startTime": "2025-09-08T08:10:00",
        "teachingLengthStudent": "60",
        "cancelled": "maybe",
    })))
    .unwrap();
    assert_eq!(
        m.entity.start_time.0, 1_757_311_800_000,
        "08:10 Swedish summer time"
    );
    assert_eq!(m.entity.teaching_length_student, Some(60));
    assert_eq!(m.entity.cancelled, None);
    let kinds: Vec<(String, FindingKind)> =
        m.findings.into_iter().map(|f| (f.field, f.kind)).collect();
    assert_eq!(
        kinds,
        vec![
            ("startTime".into(), FindingKind::ZoneAssumed),
            ("cancelled".into(), FindingKind::UnusableOptional),
            (
                "teachingLengthStudent".into(),
                FindingKind::NumberFromString
            ),
        ]
    );

    let group = map::group(&json!({
        "id": "g1", "displayName": "7A", "groupType": "Klass", "startDate": "2025-08-20T00:00:00",
        "organisation": { "id": "o1" },
        "groupMemberships": [{ "person": { "id": "p1" }, "startDate": "2025-08-20", "endDate": "not a date" }],
    }))
    .unwrap();
    assert_eq!(group.entity.group_memberships[0].end_date, None);
    let fields: Vec<String> = group.findings.iter().map(|f| f.field.clone()).collect();
    assert_eq!(fields, vec!["startDate", "groupMemberships[0].endDate"]);
}

#[test]
fn items_that_cannot_be_understood_say_why() {
    assert_eq!(map::activity(&json!([1, 2])), Err(MapError::NotAnObject));
    assert_eq!(
        map::calendar_event(&lesson(json!({ "activity": null }))),
        Err(MapError::Missing("activity".into()))
    );
    assert_eq!(
        map::calendar_event(&lesson(json!({ "endTime": "half past eight" }))),
        Err(MapError::WrongType {
            field: "endTime".into(),
            expected: "an RFC 3339 date-time"
        })
    );
    // A broken element is left out and reported; the item is kept.
    let activity = map::activity(&json!({
        "id": "a1", "displayName": "MA", "calendarEventsRequired": true, "startDate": "2025-08-20",
        "organisation": { "id": "o1" }, "groups": [{ "id": "g1" }],
        "teachers": [{ "grader": true }, { "duty": { "id": "d1" } }],
    }))
    .unwrap();
    assert_eq!(activity.entity.teachers.len(), 1);
    assert_eq!(activity.entity.teachers[0].duty.id, "d1");
    assert_eq!(
        activity.findings,
        vec![Finding {
            field: "teachers[0]".into(),
            kind: FindingKind::ElementDropped
        }]
    );
    assert_eq!(
        map::attendance(&json!({
            "id": "x", "calendarEvent": { "id": "l1" }, "student": { "id": "p1" },
            "isReported": true, "attendanceMinutes": 1e12,
        })),
        Err(MapError::WrongType {
            field: "attendanceMinutes".into(),
            expected: "a 32-bit integer"
        })
    );
}

#[test]
fn invalid_civic_numbers_get_fallback_keys_and_a_finding() {
    let pseudonymiser = Pseudonymiser::new(SECRET).unwrap();
    let cx = Context::new(&pseudonymiser, "kommun-test", (2025, 9, 10));
    let item = json!({
        "id": "p9", "givenName": "Alva", "familyName": "Berg",
        "civicNo": { "value": "20120304-1235" }, "birthDate": "2012-03-04",
    });
    let m = map::person(&item, &cx).unwrap();
    assert_eq!(m.entity.civic_no_validity, CivicNoValidity::Invalid);
    assert_eq!(
        m.entity.person_key,
        pseudonymiser.fallback_key("kommun-test", "p9")
    );
    assert_eq!(m.entity.birth_year, Some(2012));
    assert_eq!(m.findings.len(), 1);
    assert_eq!(m.findings[0].kind, FindingKind::InvalidCivicNumber);
}

fn kinds(findings: &[Finding]) -> Vec<(&str, FindingKind)> {
    findings
        .iter()
        .map(|f| (f.field.as_str(), f.kind))
        .collect()
}

#[test]
fn zone_less_times_are_read_in_the_connection_s_zone() {
    use skolflode_producers::ss12000::json::Json;
    use skolflode_producers::ss12000::map as m;
    use skolflode_producers::ss12000::time::Zone;
    let p = pseudonymiser();
    let item = lesson(json!({ "startTime": "2025-09-08T06:10:00" }));
    let mut cx = Context::new(&p, "kommun-test", (2025, 9, 10));
    cx.zone = Zone::Utc;
    let utc = m::calendar_event(&Json::from(&item), &cx).unwrap();
    let local =
        map::calendar_event(&lesson(json!({ "startTime": "2025-09-08T08:10:00" }))).unwrap();
    assert_eq!(utc.entity.start_time, local.entity.start_time);
    assert_eq!(
        kinds(&utc.findings),
        vec![("startTime", FindingKind::ZoneAssumed)]
    );
}

#[test]
fn vendor_dialects_are_understood_and_reported() {
    use skolflode_producers::ss12000::json::Json;
    use skolflode_producers::ss12000::map::{self as m, DutyIndex};
    use skolflode_schemas::entities::{Duty, ObjectReference};
    let p = pseudonymiser();
    let duty = |id: &str, person: &str, unit: &str| Duty {
        id: id.into(),
        person: Some(ObjectReference { id: person.into() }),
        duty_at: ObjectReference { id: unit.into() },
        ..Duty::default()
    };
    // Person t1 has one duty at o1; t2 has two there; t3 none.
    let duties = DutyIndex::new(&[
        duty("d1", "t1", "o1"),
        duty("d9", "t1", "o2"),
        duty("d2", "t2", "o1"),
        duty("d3", "t2", "o1"),
    ]);
    let mut cx = Context::new(&p, "kommun-test", (2025, 9, 10));
    cx.duties = Some(&duties);
    let item = json!({
        "id": "a1", "displayName": "Matematik Anna Andersson", "startDate": "2025-08-20",
        "organisation": { "id": "o1" }, "groups": [{ "id": "g1" }],
        "teachers": [
            { "person": { "id": "t1" }, "grader": true },
            { "person": { "id": "t2" } },
            { "person": { "id": "t3" } },
        ],
        "subject": { "id": "s1" },
    });
    let a = m::activity(&Json::from(&item), &cx).unwrap();
    let teachers: Vec<&str> = a
        .entity
        .teachers
        .iter()
        .map(|t| t.duty.id.as_str())
        .collect();
    assert_eq!(
        teachers,
        vec!["d1"],
        "ambiguous and unknown persons are left out, never guessed"
    );
    assert_eq!(
        a.entity.syllabus.as_ref().map(|s| s.id.as_str()),
        Some("s1")
    );
    assert!(!a.entity.calendar_events_required);
    assert_eq!(
        kinds(&a.findings),
        vec![
            ("subject", FindingKind::SubjectForSyllabus),
            ("calendarEventsRequired", FindingKind::MissingField),
            ("teachers[0].person", FindingKind::TeacherAsPerson),
            ("teachers[1].person", FindingKind::TeacherUnresolved),
            ("teachers[2].person", FindingKind::TeacherUnresolved),
        ]
    );
    // The display name is a keyed hash, not the teacher's name.
    assert_eq!(
        a.entity.display_name,
        p.name_key("matematik anna andersson")
    );
    assert!(!a
        .entity
        .to_avro_bytes()
        .windows(8)
        .any(|w| w == b"Andersso"));
}

#[test]
fn a_missing_field_the_registers_do_not_need_is_a_finding_not_a_dead_letter() {
    let p = pseudonymiser();
    let cx = Context::new(&p, "kommun-test", (2025, 9, 10));
    // An enrolment without its start date: the person is kept, the
    // enrolment left out and reported.
    let person = map::person(
        &json!({
            "id": "p1", "civicNo": { "value": "811218-9876" },
            "enrolments": [
                { "enroledAt": { "id": "o1" }, "schoolType": "GR", "schoolYear": 7 },
                { "enroledAt": { "id": "o2" }, "schoolType": "GR", "startDate": "2025-08-20" },
            ],
        }),
        &cx,
    )
    .unwrap();
    assert_eq!(person.entity.enrolments.len(), 1);
    assert_eq!(person.entity.enrolments[0].enroled_at.id, "o2");
    assert_eq!(
        kinds(&person.findings),
        vec![("enrolments[0]", FindingKind::ElementDropped)]
    );
    let syllabus = map::syllabus(&json!({
        "id": "s1", "schoolType": "GR", "subjectCode": "MA",
    }))
    .unwrap();
    assert!(!syllabus.entity.official);
    assert_eq!(
        kinds(&syllabus.findings),
        vec![("official", FindingKind::MissingField)]
    );
    let duty = map::duty(&json!({
        "id": "d1", "dutyAt": { "id": "o1" }, "startDate": "2025-08-01",
    }))
    .unwrap();
    assert_eq!(duty.entity.duty_role, "");
    assert_eq!(
        kinds(&duty.findings),
        vec![("dutyRole", FindingKind::MissingField)]
    );
}

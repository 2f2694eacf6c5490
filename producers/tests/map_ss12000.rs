//! SS 12000 JSON as the simulator serves it, and as sloppy vendors send
//! it, mapped to skolflode's entities.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use map::{Context, FindingKind, MapError};
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
    pub use skolflode_producers::ss12000::map::{Context, FindingKind, MapError, Mapped};
    use skolflode_schemas::entities::*;

    macro_rules! over_values {
        ($($name:ident -> $ty:ty),*) => {$(
            pub fn $name(item: &Value) -> Result<Mapped<$ty>, MapError> {
                m::$name(&Json::from(item))
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

#[test]
fn everything_the_simulator_serves_maps_cleanly_and_without_personal_data() {
    let mut sim = Simulation::new(SimConfig::default(), None).unwrap();
    sim.advance_to(chrono::NaiveDate::from_ymd_opt(2025, 9, 10).unwrap())
        .unwrap();
    let pseudonymiser = Pseudonymiser::new(SECRET).unwrap();
    let cx = Context {
        pseudonymiser: &pseudonymiser,
        source: "kommun-test",
        today: (2025, 9, 10),
    };
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
                        .filter(|f| f.kind != FindingKind::InvalidCivicNumber)
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
    assert_eq!(
        map::activity(&json!({
            "id": "a1", "displayName": "MA", "calendarEventsRequired": true, "startDate": "2025-08-20",
            "organisation": { "id": "o1" }, "groups": [{ "id": "g1" }],
            "teachers": [{ "grader": true }],
        })),
        Err(MapError::Missing("teachers[0].duty".into()))
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
    let cx = Context {
        pseudonymiser: &pseudonymiser,
        source: "kommun-test",
        today: (2025, 9, 10),
    };
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

//! A realistic instance of every change event survives the wire format,
//! and a stock Avro reader (apache-avro, with the registered schema) reads
//! the same values.

// A test fails by panicking; helpers outside #[test] functions may too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use apache_avro::types::Value;
use skolflode_schemas::catalogue;
use skolflode_schemas::entities::*;
use skolflode_schemas::envelope::Entity;
use skolflode_schemas::wire::{self, Decoder};
use skolflode_schemas::{ChangeEvent, Date, Op, Source, TimestampMillis};

fn r(id: &str) -> ObjectReference {
    ObjectReference::new(id)
}

fn d(y: i32, m: u32, day: u32) -> Date {
    Date::from_ymd(y, m, day).expect("valid date")
}

fn meta() -> Option<Meta> {
    Some(Meta {
        created: Some(TimestampMillis(1_723_449_600_000)),
        modified: Some(TimestampMillis(1_739_520_000_000)),
    })
}

fn event<E>(op: Op, before: Option<E>, after: Option<E>, endpoint: &str) -> ChangeEvent<E> {
    ChangeEvent {
        event_id: "b0f7c3a4-6d0e-5b43-9f1e-0c6a1f3e2d11".into(),
        op,
        before,
        after,
        source: Source {
            vendor: "ss12000".into(),
            connection: "kommun-0180-admin".into(),
            endpoint: endpoint.into(),
            cursor: Some("eyJwYWdlIjozfQ".into()),
            server_time: Some(TimestampMillis(1_739_520_001_000)),
        },
        observed_at: TimestampMillis(1_739_520_002_345),
        content_hash: Some(
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
        ),
    }
}

fn round_trip<E: Entity>(value: ChangeEvent<E>) {
    let subject = catalogue::subject(E::CHANGE_SUBJECT).expect("subject");
    let schema = subject.parse_latest().expect("schema");
    let mut decoder = Decoder::new(schema.clone());
    decoder.add_writer(42, &schema).expect("plan");
    let bytes = wire::encode(42, &value);
    assert_eq!(decoder.decode(&bytes), Ok(value.clone()));

    let (id, mut body) = wire::split(&bytes).expect("framed");
    assert_eq!(id, 42);
    let generic = apache_avro::from_avro_datum(&schema, &mut body, None).expect("stock reader");
    let Value::Record(fields) = generic else {
        panic!("not a record")
    };
    assert_eq!(
        fields[0],
        ("event_id".to_owned(), Value::String(value.event_id.clone()))
    );
    assert_eq!(
        fields[1],
        (
            "op".to_owned(),
            Value::Enum(value.op as u32, value.op.symbol().to_owned())
        )
    );
    assert_eq!(
        fields[5],
        (
            "observed_at".to_owned(),
            Value::TimestampMillis(value.observed_at.0)
        )
    );
}

#[test]
fn organisation() {
    let unit = Organisation {
        id: "2b0d2b6e-7e71-4c1a-9c61-5d1f0e8f0a01".into(),
        meta: meta(),
        display_name: "Ekbackeskolan".into(),
        organisation_code: Some("EKB".into()),
        organisation_type: "Skolenhet".into(),
        organisation_number: None,
        parent_organisation: Some(r("7c1e2a90-1f1b-4cde-8a1e-1d2c3b4a5f60")),
        school_unit_code: Some("12345678".into()),
        school_types: vec!["GR".into(), "FKLASS".into()],
        municipality_code: Some("0180".into()),
        start_date: Some(d(2010, 7, 1)),
        end_date: None,
    };
    round_trip(event(Op::SnapshotRead, None, Some(unit), "/organisations"));
}

#[test]
fn person() {
    let pupil = Person {
        id: "a1a1a1a1-0000-4000-8000-000000000001".into(),
        meta: meta(),
        person_key: "5d41402abc4b2a76b9719d911017c592aa5b2c1f0d9e8c7b6a5f4e3d2c1b0a99".into(),
        civic_no_validity: CivicNoValidity::Valid,
        birth_year: Some(2012),
        sex: Some("Kvinna".into()),
        security_marking: Some("Ingen".into()),
        person_status: Some("Aktiv".into()),
        enrolments: vec![Enrolment {
            enroled_at: r("2b0d2b6e-7e71-4c1a-9c61-5d1f0e8f0a01"),
            school_year: Some(7),
            school_type: "GR".into(),
            start_date: d(2024, 8, 19),
            end_date: None,
            cancelled: None,
            education_code: None,
            programme: None,
        }],
    };
    round_trip(event(Op::Create, None, Some(pupil), "/persons"));
}

#[test]
fn duty() {
    let teacher = Duty {
        id: "d0d0d0d0-0000-4000-8000-000000000007".into(),
        meta: meta(),
        person: Some(r("b2b2b2b2-0000-4000-8000-000000000002")),
        assignment_role: vec![AssignmentRole {
            group: r("c3c3c3c3-0000-4000-8000-000000000003"),
            assignment_role_type: "Mentor".into(),
            start_date: d(2024, 8, 19),
            end_date: Some(d(2025, 6, 13)),
        }],
        duty_at: r("2b0d2b6e-7e71-4c1a-9c61-5d1f0e8f0a01"),
        duty_role: "Lärare".into(),
        signature: Some("NJN".into()),
        duty_percent: Some(100),
        hours_per_year: Some(1767),
        start_date: d(2019, 8, 1),
        end_date: None,
    };
    round_trip(event(Op::SnapshotRead, None, Some(teacher), "/duties"));
}

#[test]
fn group_with_a_membership_moved() {
    let mut before = Group {
        id: "c3c3c3c3-0000-4000-8000-000000000003".into(),
        meta: meta(),
        display_name: "SVA 8".into(),
        start_date: d(2024, 8, 19),
        end_date: Some(d(2025, 6, 13)),
        group_type: "Undervisning".into(),
        school_type: Some("GR".into()),
        organisation: r("2b0d2b6e-7e71-4c1a-9c61-5d1f0e8f0a01"),
        group_memberships: vec![GroupMembership {
            person: r("a1a1a1a1-0000-4000-8000-000000000001"),
            start_date: Some(d(2024, 8, 19)),
            end_date: None,
        }],
        assignment_roles: vec![],
    };
    let mut after = before.clone();
    after.group_memberships[0].end_date = Some(d(2025, 2, 14));
    before.meta = None;
    round_trip(event(Op::Update, Some(before), Some(after), "/groups"));
}

#[test]
fn activity_with_overwritten_teacher() {
    let before = Activity {
        id: "e4e4e4e4-0000-4000-8000-000000000004".into(),
        meta: meta(),
        display_name: "Matematik 8B".into(),
        calendar_events_required: true,
        start_date: d(2024, 8, 19),
        end_date: Some(d(2025, 6, 13)),
        activity_type: Some("Undervisning".into()),
        minutes_planned: Some(5400),
        groups: vec![r("c3c3c3c3-0000-4000-8000-000000000003")],
        teachers: vec![DutyAssignment {
            duty: r("d0d0d0d0-0000-4000-8000-000000000007"),
            start_date: None,
            end_date: None,
            minutes_planned: Some(5400),
            grader: Some(true),
        }],
        syllabus: Some(r("f5f5f5f5-0000-4000-8000-000000000005")),
        organisation: r("2b0d2b6e-7e71-4c1a-9c61-5d1f0e8f0a01"),
        parent_activity: None,
    };
    let mut after = before.clone();
    after.teachers[0].duty = r("d0d0d0d0-0000-4000-8000-000000000008");
    round_trip(event(Op::Update, Some(before), Some(after), "/activities"));
}

#[test]
fn calendar_event_cancelled() {
    let lesson = CalendarEvent {
        id: "11111111-0000-4000-8000-000000000009".into(),
        meta: meta(),
        activity: r("e4e4e4e4-0000-4000-8000-000000000004"),
        start_time: TimestampMillis(1_739_519_400_000),
        end_time: TimestampMillis(1_739_522_100_000),
        cancelled: Some(true),
        teaching_length_teacher: Some(45),
        teaching_length_student: Some(45),
        student_exceptions: vec![StudentException {
            student: r("a1a1a1a1-0000-4000-8000-000000000001"),
            participates: false,
            start_time: None,
            end_time: None,
            teaching_length: None,
        }],
        teacher_exceptions: vec![TeacherException {
            duty: r("d0d0d0d0-0000-4000-8000-000000000008"),
            participates: true,
            start_time: Some(TimestampMillis(1_739_519_400_000)),
            end_time: Some(TimestampMillis(1_739_521_200_000)),
            teaching_length: Some(30),
        }],
        rooms: vec![r("22222222-0000-4000-8000-00000000000a")],
    };
    round_trip(event(Op::Update, None, Some(lesson), "/calendarEvents"));
}

#[test]
fn attendance_corrected_invalid_to_valid() {
    let before = Attendance {
        id: "33333333-0000-4000-8000-00000000000b".into(),
        meta: meta(),
        calendar_event: r("11111111-0000-4000-8000-000000000009"),
        student: r("a1a1a1a1-0000-4000-8000-000000000001"),
        reporter: Some(r("b2b2b2b2-0000-4000-8000-000000000002")),
        is_reported: true,
        attendance_minutes: 30,
        valid_absence_minutes: Some(0),
        invalid_absence_minutes: Some(15),
        other_attendance_minutes: None,
        reported_timestamp: Some(TimestampMillis(1_739_522_200_000)),
    };
    let mut after = before.clone();
    after.valid_absence_minutes = Some(15);
    after.invalid_absence_minutes = Some(0);
    round_trip(event(Op::Update, Some(before), Some(after), "/attendances"));
}

#[test]
fn syllabus_deleted() {
    let course = Syllabus {
        id: "f5f5f5f5-0000-4000-8000-000000000005".into(),
        meta: meta(),
        school_type: "GY".into(),
        subject_code: "MAT".into(),
        subject_name: Some("Matematik".into()),
        subject_designation: Some("MA".into()),
        course_code: Some("MATMAT01a".into()),
        course_name: Some("Matematik 1a".into()),
        start_school_year: None,
        end_school_year: None,
        points: Some(100),
        curriculum: Some("GY2011".into()),
        language_code: None,
        official: true,
    };
    let mut deleted = event(Op::Delete, Some(course), None, "/syllabuses");
    deleted.content_hash = None;
    round_trip(deleted);
}

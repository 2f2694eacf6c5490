//! Change events in, facts out: the decoding of every change topic the
//! processor reads, through the catalogue's schemas (any kept version).

use skolflode_schemas::entities::{
    Activity, Attendance, CalendarEvent, Duty, Group, Meta, Organisation, Person, Syllabus,
};
use skolflode_schemas::envelope::Entity;
use skolflode_schemas::wire::Decoder;
use skolflode_schemas::{ChangeEvent, DecodeError, EntityKey, Op, SchemaError};

use super::model::{Enrolled, Fact, Kind, Member, Teacher};

/// Why a change event could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("a {0:?} change event without its after image")]
    NoAfterImage(Op),
}

/// One decoded change event, reduced to what the processor keeps.
#[derive(Clone, Debug, PartialEq)]
pub struct Incoming {
    pub event_id: String,
    /// `None` for a delete.
    pub fact: Option<Fact>,
    pub content_hash: Option<String>,
    /// The vendor's clock when it showed the change, else the producer's.
    pub recorded: i64,
    /// The vendor's `meta.modified`, if it gave one.
    pub modified: Option<i64>,
    /// The producer's adapter (`ss12000`, …).
    pub vendor: String,
}

/// The decoders of every change topic.
#[derive(Debug)]
pub struct Decoders {
    organisation: Decoder<ChangeEvent<Organisation>>,
    person: Decoder<ChangeEvent<Person>>,
    duty: Decoder<ChangeEvent<Duty>>,
    group: Decoder<ChangeEvent<Group>>,
    activity: Decoder<ChangeEvent<Activity>>,
    lesson: Decoder<ChangeEvent<CalendarEvent>>,
    attendance: Decoder<ChangeEvent<Attendance>>,
    syllabus: Decoder<ChangeEvent<Syllabus>>,
    key: Decoder<EntityKey>,
}

pub(super) use skolflode_schemas::catalogue::decoder;

fn meta_modified(meta: &Option<Meta>) -> Option<i64> {
    meta.as_ref().and_then(|m| m.modified).map(|t| t.0)
}

impl Decoders {
    pub fn new() -> Result<Self, SchemaError> {
        Ok(Self {
            organisation: decoder(Organisation::CHANGE_SUBJECT)?,
            person: decoder(Person::CHANGE_SUBJECT)?,
            duty: decoder(Duty::CHANGE_SUBJECT)?,
            group: decoder(Group::CHANGE_SUBJECT)?,
            activity: decoder(Activity::CHANGE_SUBJECT)?,
            lesson: decoder(CalendarEvent::CHANGE_SUBJECT)?,
            attendance: decoder(Attendance::CHANGE_SUBJECT)?,
            syllabus: decoder(Syllabus::CHANGE_SUBJECT)?,
            key: decoder("EntityKey")?,
        })
    }

    /// Decode a change topic's key.
    pub fn key(&self, bytes: &[u8]) -> Result<EntityKey, DecodeError> {
        self.key.decode(bytes)
    }

    /// Decode a change event of `kind`.
    pub fn change(&self, kind: Kind, bytes: &[u8]) -> Result<Incoming, InputError> {
        match kind {
            Kind::Organisation => {
                incoming(self.organisation.decode(bytes)?, |o| Fact::Organisation {
                    school_unit_code: o.school_unit_code.clone(),
                })
            }
            Kind::Person => incoming(self.person.decode(bytes)?, |p| Fact::Person {
                person_key: p.person_key.clone(),
                birth_year: p.birth_year,
                enrolments: p
                    .enrolments
                    .iter()
                    .map(|e| Enrolled {
                        organisation: e.enroled_at.id.clone(),
                        school_type: e.school_type.clone(),
                        school_year: e.school_year,
                        start: Some(e.start_date.0),
                        end: e.end_date.map(|d| d.0),
                        cancelled: e.cancelled.unwrap_or(false),
                    })
                    .collect(),
            }),
            Kind::Duty => incoming(self.duty.decode(bytes)?, |d| Fact::Duty {
                person: d.person.as_ref().map(|p| p.id.clone()),
                duty_at: d.duty_at.id.clone(),
            }),
            Kind::Group => incoming(self.group.decode(bytes)?, |g| Fact::Group {
                members: g
                    .group_memberships
                    .iter()
                    .map(|m| Member {
                        person: m.person.id.clone(),
                        start: m.start_date.map(|d| d.0),
                        end: m.end_date.map(|d| d.0),
                    })
                    .collect(),
            }),
            Kind::Activity => incoming(self.activity.decode(bytes)?, |a| Fact::Activity {
                organisation: a.organisation.id.clone(),
                start: Some(a.start_date.0),
                end: a.end_date.map(|d| d.0),
                syllabus: a.syllabus.as_ref().map(|s| s.id.clone()),
                groups: a.groups.iter().map(|g| g.id.clone()).collect(),
                teachers: a
                    .teachers
                    .iter()
                    .map(|t| Teacher {
                        duty: t.duty.id.clone(),
                        start: t.start_date.map(|d| d.0),
                        end: t.end_date.map(|d| d.0),
                        grader: t.grader.unwrap_or(false),
                    })
                    .collect(),
            }),
            Kind::Lesson => incoming(self.lesson.decode(bytes)?, |l| Fact::Lesson {
                activity: l.activity.id.clone(),
                start: l.start_time.0,
                end: l.end_time.0,
                cancelled: l.cancelled.unwrap_or(false),
                minutes: l.teaching_length_student.unwrap_or_else(|| {
                    i32::try_from((l.end_time.0 - l.start_time.0).max(0) / 60_000)
                        .unwrap_or(i32::MAX)
                }),
                absent: l
                    .student_exceptions
                    .iter()
                    .filter(|e| !e.participates)
                    .map(|e| e.student.id.clone())
                    .collect(),
            }),
            Kind::Attendance => incoming(self.attendance.decode(bytes)?, |a| Fact::Attendance {
                lesson: a.calendar_event.id.clone(),
                student: a.student.id.clone(),
                reported: a.is_reported,
                present: a.attendance_minutes,
                valid_absence: a.valid_absence_minutes.unwrap_or(0),
                invalid_absence: a.invalid_absence_minutes.unwrap_or(0),
            }),
            Kind::Syllabus => incoming(self.syllabus.decode(bytes)?, |s| Fact::Syllabus {
                subject_code: s
                    .course_code
                    .clone()
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| s.subject_code.clone()),
            }),
        }
    }
}

fn incoming<T: Entity>(
    mut change: ChangeEvent<T>,
    fact: impl Fn(&T) -> Fact,
) -> Result<Incoming, InputError> {
    let mut after = match change.op {
        Op::Delete => None,
        op => Some(change.after.take().ok_or(InputError::NoAfterImage(op))?),
    };
    let modified = after.as_mut().and_then(|a| meta_modified(a.meta_mut()));
    Ok(Incoming {
        fact: after.as_ref().map(fact),
        modified,
        event_id: change.event_id,
        content_hash: match change.op {
            Op::Delete => None,
            _ => change.content_hash,
        },
        recorded: change
            .source
            .server_time
            .map_or(change.observed_at.0, |t| t.0),
        vendor: change.source.vendor,
    })
}

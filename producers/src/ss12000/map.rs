//! SS 12000 JSON → skolflode entities.

use std::borrow::Cow;
use std::fmt::Write as _;

use skolflode_schemas::entities::*;
use skolflode_schemas::envelope::Entity;
use skolflode_schemas::{Date, TimestampMillis};

use super::json::{self, Json};
use super::time;
use crate::pseudonym::{Pseudonymiser, Validity};

/// Something that had to be repaired to be understood. Carries no personal
/// data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// JSON path of the field, e.g. `enrolments[0].startDate`.
    pub field: String,
    pub kind: FindingKind,
}

/// The kinds of repairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FindingKind {
    /// A date-time without a zone, read in the zone configured for the
    /// connection (`timestamps_without_zone`).
    ZoneAssumed,
    /// A date with a time part, cut to the date.
    TimeCutFromDate,
    /// A number sent as a string.
    NumberFromString,
    /// An optional field with an unusable value, left out.
    UnusableOptional,
    /// A civic number that is not valid; the person got a fallback key.
    InvalidCivicNumber,
    /// A person without any civic number: a fallback key.
    MissingCivicNumber,
    /// A field the standard requires and the registers do not need is
    /// missing; an empty value (`""`, `false`) stands in.
    MissingField,
    /// An element of an array could not be read and was left out; the
    /// rest of the item was kept.
    ElementDropped,
    /// `subject` sent where the standard has `syllabus`; read as it.
    SubjectForSyllabus,
    /// An activity's teacher given as a person, not a duty; resolved to
    /// the person's only duty at the activity's organisation.
    TeacherAsPerson,
    /// An activity's teacher given as a person with no duty, or several,
    /// at the activity's organisation: left out rather than guessed.
    TeacherUnresolved,
}

impl FindingKind {
    /// The name on the findings topic and in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::ZoneAssumed => "ZONE_ASSUMED",
            Self::TimeCutFromDate => "TIME_CUT_FROM_DATE",
            Self::NumberFromString => "NUMBER_FROM_STRING",
            Self::UnusableOptional => "UNUSABLE_OPTIONAL",
            Self::InvalidCivicNumber => "INVALID_CIVIC_NUMBER",
            Self::MissingCivicNumber => "MISSING_CIVIC_NUMBER",
            Self::MissingField => "MISSING_FIELD",
            Self::ElementDropped => "ELEMENT_DROPPED",
            Self::SubjectForSyllabus => "SUBJECT_FOR_SYLLABUS",
            Self::TeacherAsPerson => "TEACHER_AS_PERSON",
            Self::TeacherUnresolved => "TEACHER_UNRESOLVED",
        }
    }

    /// Whether the repair describes the vendor's dialect (the same for
    /// every item it sends, recorded once per connection, endpoint and
    /// field) rather than one item's content (recorded per item, again
    /// only when the item changes).
    pub const fn is_dialect(self) -> bool {
        matches!(
            self,
            Self::ZoneAssumed
                | Self::TimeCutFromDate
                | Self::NumberFromString
                | Self::MissingField
                | Self::SubjectForSyllabus
                | Self::TeacherAsPerson
        )
    }
}

/// A field path with array indices left out (`enrolments[].startDate`):
/// what a dialect finding is recorded once for.
pub fn field_shape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut in_index = false;
    for c in field.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

/// Why an item cannot be mapped: it goes to the dead-letter topic.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error("the item is not a JSON object")]
    NotAnObject,
    #[error("required field {0} is missing")]
    Missing(String),
    #[error("field {field} should be {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
    },
}

/// What a mapping needs besides the item.
#[derive(Debug)]
pub struct Context<'a> {
    pub pseudonymiser: &'a Pseudonymiser,
    /// The connection's name: the `<source>` of fallback person keys.
    pub source: &'a str,
    /// The day the item was read (for 10-digit civic numbers' century).
    pub today: (i32, u32, u32),
    /// The zone of date-times sent without one.
    pub zone: time::Zone,
    /// The connection's duties, for teachers given as persons.
    pub duties: Option<&'a DutyIndex>,
}

impl<'a> Context<'a> {
    /// A context with the defaults: Swedish local time, no duties known.
    pub fn new(pseudonymiser: &'a Pseudonymiser, source: &'a str, today: (i32, u32, u32)) -> Self {
        Self {
            pseudonymiser,
            source,
            today,
            zone: time::Zone::default(),
            duties: None,
        }
    }
}

/// Which duties each person holds at each organisation: how a teacher
/// given as a person becomes a duty reference.
#[derive(Clone, Debug, Default)]
pub struct DutyIndex {
    /// (person id, organisation id) → duty ids.
    by_person: std::collections::HashMap<(String, String), Vec<String>>,
}

impl DutyIndex {
    /// Index duties.
    pub fn new<'d>(duties: impl IntoIterator<Item = &'d Duty>) -> Self {
        let mut by_person: std::collections::HashMap<(String, String), Vec<String>> =
            Default::default();
        for d in duties {
            if let Some(person) = &d.person {
                by_person
                    .entry((person.id.clone(), d.duty_at.id.clone()))
                    .or_default()
                    .push(d.id.clone());
            }
        }
        Self { by_person }
    }

    /// The person's only duty at the organisation, if there is exactly one.
    pub fn only_duty(&self, person: &str, organisation: &str) -> Option<&str> {
        match self
            .by_person
            .get(&(person.to_owned(), organisation.to_owned()))
            .map(Vec::as_slice)
        {
            Some([one]) => Some(one),
            _ => None,
        }
    }
}

/// A mapped entity and what had to be repaired.
#[derive(Clone, Debug, PartialEq)]
pub struct Mapped<T> {
    pub entity: T,
    pub findings: Vec<Finding>,
}

type Fields<'a> = [(Cow<'a, str>, Json<'a>)];

/// Field access with paths for messages and findings.
///
/// An object and its children share one path buffer: a child appends its
/// name and cuts it off again when dropped, so that paths cost nothing
/// until a message or finding needs one.
struct Obj<'a, 'b> {
    fields: &'a Fields<'a>,
    path: &'b mut String,
    /// The length of the parent's path.
    base: usize,
    findings: &'b mut Vec<Finding>,
    zone: time::Zone,
}

impl Drop for Obj<'_, '_> {
    fn drop(&mut self) {
        self.path.truncate(self.base);
    }
}

impl<'a> Obj<'a, '_> {
    fn field(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    fn finding(&mut self, name: &str, kind: FindingKind) {
        let field = self.field(name);
        self.findings.push(Finding { field, kind });
    }

    fn present(&self, name: &str) -> Option<&'a Json<'a>> {
        json::field(self.fields, name).filter(|v| !v.is_null())
    }

    /// Append `name` to the shared path; returns the length to cut back to.
    fn enter(&mut self, name: &str) -> usize {
        let base = self.path.len();
        if base > 0 {
            self.path.push('.');
        }
        self.path.push_str(name);
        base
    }

    fn string(&mut self, name: &str) -> Result<String, MapError> {
        match self.present(name) {
            None => Err(MapError::Missing(self.field(name))),
            Some(Json::String(s)) => Ok(s.to_string()),
            Some(Json::Number(n)) => {
                self.finding(name, FindingKind::NumberFromString);
                Ok(n.to_string())
            }
            Some(_) => Err(MapError::WrongType {
                field: self.field(name),
                expected: "a string",
            }),
        }
    }

    /// A required string the registers do not need: missing, it is empty
    /// and reported.
    fn string_or_empty(&mut self, name: &str) -> Result<String, MapError> {
        if self.present(name).is_none() {
            self.finding(name, FindingKind::MissingField);
            return Ok(String::new());
        }
        self.string(name)
    }

    /// A required boolean the registers do not need: missing, it is
    /// false and reported.
    fn bool_or_false(&mut self, name: &str) -> Result<bool, MapError> {
        if self.present(name).is_none() {
            self.finding(name, FindingKind::MissingField);
            return Ok(false);
        }
        self.boolean(name)
    }

    fn opt_string(&mut self, name: &str) -> Option<String> {
        match self.present(name) {
            None => None,
            Some(Json::String(s)) => Some(s.to_string()),
            Some(Json::Number(n)) => Some(n.to_string()),
            Some(_) => {
                self.finding(name, FindingKind::UnusableOptional);
                None
            }
        }
    }

    fn boolean(&mut self, name: &str) -> Result<bool, MapError> {
        match self.present(name) {
            None => Err(MapError::Missing(self.field(name))),
            Some(Json::Bool(b)) => Ok(*b),
            Some(Json::String(s)) if s == "true" || s == "false" => {
                self.finding(name, FindingKind::NumberFromString);
                Ok(s == "true")
            }
            Some(_) => Err(MapError::WrongType {
                field: self.field(name),
                expected: "a boolean",
            }),
        }
    }

    fn opt_bool(&mut self, name: &str) -> Option<bool> {
        match self.present(name) {
            None => None,
            Some(Json::Bool(b)) => Some(*b),
            Some(_) => {
                self.finding(name, FindingKind::UnusableOptional);
                None
            }
        }
    }

    fn int(&mut self, name: &str) -> Result<i32, MapError> {
        match self.present(name) {
            None => Err(MapError::Missing(self.field(name))),
            Some(Json::Number(n)) => {
                n.as_i64()
                    .and_then(|v| i32::try_from(v).ok())
                    .ok_or_else(|| MapError::WrongType {
                        field: self.field(name),
                        expected: "a 32-bit integer",
                    })
            }
            Some(Json::String(s)) => match s.trim().parse::<i32>() {
                Ok(v) => {
                    self.finding(name, FindingKind::NumberFromString);
                    Ok(v)
                }
                Err(_) => Err(MapError::WrongType {
                    field: self.field(name),
                    expected: "an integer",
                }),
            },
            Some(_) => Err(MapError::WrongType {
                field: self.field(name),
                expected: "an integer",
            }),
        }
    }

    fn opt_int(&mut self, name: &str) -> Option<i32> {
        self.present(name)?;
        match self.int(name) {
            Ok(v) => Some(v),
            Err(_) => {
                self.finding(name, FindingKind::UnusableOptional);
                None
            }
        }
    }

    fn date(&mut self, name: &str) -> Result<Date, MapError> {
        let text = self.string(name)?;
        match time::date_days(&text) {
            Some((days, repaired)) => {
                if repaired {
                    self.finding(name, FindingKind::TimeCutFromDate);
                }
                Ok(Date(days))
            }
            None => Err(MapError::WrongType {
                field: self.field(name),
                expected: "a date (YYYY-MM-DD)",
            }),
        }
    }

    fn opt_date(&mut self, name: &str) -> Option<Date> {
        self.present(name)?;
        match self.date(name) {
            Ok(d) => Some(d),
            Err(_) => {
                self.finding(name, FindingKind::UnusableOptional);
                None
            }
        }
    }

    fn instant(&mut self, name: &str) -> Result<TimestampMillis, MapError> {
        let text = self.string(name)?;
        match time::parse_instant_in(&text, self.zone) {
            Some(i) => {
                if i.zone_assumed {
                    self.finding(name, FindingKind::ZoneAssumed);
                }
                Ok(TimestampMillis(i.millis))
            }
            None => Err(MapError::WrongType {
                field: self.field(name),
                expected: "an RFC 3339 date-time",
            }),
        }
    }

    fn opt_instant(&mut self, name: &str) -> Option<TimestampMillis> {
        self.present(name)?;
        match self.instant(name) {
            Ok(t) => Some(t),
            Err(_) => {
                self.finding(name, FindingKind::UnusableOptional);
                None
            }
        }
    }

    fn child(&mut self, name: &str) -> Result<Obj<'a, '_>, MapError> {
        match self.present(name) {
            Some(Json::Object(fields)) => {
                let base = self.enter(name);
                Ok(Obj {
                    fields,
                    path: &mut *self.path,
                    base,
                    findings: &mut *self.findings,
                    zone: self.zone,
                })
            }
            Some(_) => Err(MapError::WrongType {
                field: self.field(name),
                expected: "an object",
            }),
            None => Err(MapError::Missing(self.field(name))),
        }
    }

    fn reference(&mut self, name: &str) -> Result<ObjectReference, MapError> {
        let mut child = self.child(name)?;
        Ok(ObjectReference {
            id: child.string("id")?,
        })
    }

    fn opt_reference(&mut self, name: &str) -> Option<ObjectReference> {
        self.present(name)?;
        match self.reference(name) {
            Ok(r) => Some(r),
            Err(_) => {
                self.finding(name, FindingKind::UnusableOptional);
                None
            }
        }
    }

    /// The elements of an array (absent: none), each mapped by `each`
    /// (`None`: left out, `each` reported why); an element that cannot be
    /// mapped is left out and reported, and the rest are kept.
    fn array<T>(
        &mut self,
        name: &str,
        mut each: impl FnMut(&mut Obj<'_, '_>) -> Result<Option<T>, MapError>,
    ) -> Result<Vec<T>, MapError> {
        let items = match self.present(name) {
            None => return Ok(Vec::new()),
            Some(Json::Array(items)) => items,
            Some(_) => {
                return Err(MapError::WrongType {
                    field: self.field(name),
                    expected: "an array",
                })
            }
        };
        let base = self.enter(name);
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let element = self.path.len();
            let _ = write!(self.path, "[{i}]");
            let mapped = match item {
                Json::Object(fields) => {
                    let mut obj = Obj {
                        fields,
                        path: &mut *self.path,
                        base: element,
                        findings: &mut *self.findings,
                        zone: self.zone,
                    };
                    each(&mut obj)
                }
                _ => Err(MapError::WrongType {
                    field: self.path.clone(),
                    expected: "an object",
                }),
            };
            match mapped {
                Ok(Some(v)) => out.push(v),
                Ok(None) => {}
                Err(_) => {
                    // The element's own object cut its index off the path.
                    self.path.truncate(element);
                    let field = format!("{}[{i}]", self.path);
                    self.findings.push(Finding {
                        field,
                        kind: FindingKind::ElementDropped,
                    });
                }
            }
            self.path.truncate(element);
        }
        self.path.truncate(base);
        Ok(out)
    }

    fn strings(&mut self, name: &str) -> Vec<String> {
        match self.present(name) {
            Some(Json::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(_) => {
                self.finding(name, FindingKind::UnusableOptional);
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    fn meta(&mut self) -> Option<Meta> {
        let mut meta = self.child("meta").ok()?;
        Some(Meta {
            created: meta.opt_instant("created"),
            modified: meta.opt_instant("modified"),
        })
    }
}

fn root<'a, 'b>(
    item: &'a Json<'a>,
    path: &'b mut String,
    findings: &'b mut Vec<Finding>,
    zone: time::Zone,
) -> Result<Obj<'a, 'b>, MapError> {
    match item {
        Json::Object(fields) => Ok(Obj {
            fields,
            path,
            base: 0,
            findings,
            zone,
        }),
        _ => Err(MapError::NotAnObject),
    }
}

fn mapped<T>(
    item: &Json<'_>,
    cx: &Context<'_>,
    build: impl FnOnce(&mut Obj<'_, '_>) -> Result<T, MapError>,
) -> Result<Mapped<T>, MapError> {
    let mut findings = Vec::new();
    let mut path = String::new();
    let entity = {
        let mut obj = root(item, &mut path, &mut findings, cx.zone)?;
        build(&mut obj)?
    };
    Ok(Mapped { entity, findings })
}

/// `Organisation`. Contact details are dropped.
pub fn organisation(item: &Json<'_>, cx: &Context<'_>) -> Result<Mapped<Organisation>, MapError> {
    mapped(item, cx, |o| {
        Ok(Organisation {
            id: o.string("id")?,
            meta: o.meta(),
            display_name: o.string_or_empty("displayName")?,
            organisation_code: o.opt_string("organisationCode"),
            organisation_type: o.string_or_empty("organisationType")?,
            organisation_number: o.opt_string("organisationNumber"),
            parent_organisation: o.opt_reference("parentOrganisation"),
            school_unit_code: o.opt_string("schoolUnitCode"),
            school_types: o.strings("schoolTypes"),
            municipality_code: o.opt_string("municipalityCode"),
            start_date: o.opt_date("startDate"),
            end_date: o.opt_date("endDate"),
        })
    })
}

/// `Person`, pseudonymised: names, civic number, contact details,
/// identifiers and relations do not leave this function.
pub fn person(item: &Json<'_>, cx: &Context<'_>) -> Result<Mapped<Person>, MapError> {
    mapped(item, cx, |o| {
        let id = o.string("id")?;
        let civic = o
            .child("civicNo")
            .ok()
            .and_then(|mut c| c.opt_string("value"));
        let key = cx
            .pseudonymiser
            .person(civic.as_deref(), cx.today, cx.source, &id);
        let validity = match key.validity {
            Validity::Valid => CivicNoValidity::Valid,
            Validity::ValidCoordination => CivicNoValidity::ValidCoordination,
            Validity::Invalid(_) => {
                o.finding("civicNo.value", FindingKind::InvalidCivicNumber);
                CivicNoValidity::Invalid
            }
            Validity::Missing => {
                o.finding("civicNo.value", FindingKind::MissingCivicNumber);
                CivicNoValidity::Missing
            }
        };
        let birth_year = key.birth_year.or_else(|| {
            o.opt_string("birthDate")
                .and_then(|t| time::parse_date(&t))
                .and_then(|(year, _, _)| i32::try_from(year).ok())
        });
        Ok(Person {
            meta: o.meta(),
            person_key: key.key,
            civic_no_validity: validity,
            birth_year,
            sex: o.opt_string("sex"),
            security_marking: o.opt_string("securityMarking"),
            person_status: o.opt_string("personStatus"),
            enrolments: o.array("enrolments", |e| {
                Ok(Some(Enrolment {
                    enroled_at: e.reference("enroledAt")?,
                    school_year: e.opt_int("schoolYear"),
                    school_type: e.string("schoolType")?,
                    start_date: e.date("startDate")?,
                    end_date: e.opt_date("endDate"),
                    cancelled: e.opt_bool("cancelled"),
                    education_code: e.opt_string("educationCode"),
                    programme: e.opt_reference("programme"),
                }))
            })?,
            id,
        })
    })
}

/// `Duty`.
pub fn duty(item: &Json<'_>, cx: &Context<'_>) -> Result<Mapped<Duty>, MapError> {
    mapped(item, cx, |o| {
        Ok(Duty {
            id: o.string("id")?,
            meta: o.meta(),
            person: o.opt_reference("person"),
            assignment_role: o.array("assignmentRole", |a| {
                Ok(Some(AssignmentRole {
                    group: a.reference("group")?,
                    assignment_role_type: a.string("assignmentRoleType")?,
                    start_date: a.date("startDate")?,
                    end_date: a.opt_date("endDate"),
                }))
            })?,
            duty_at: o.reference("dutyAt")?,
            duty_role: o.string_or_empty("dutyRole")?,
            signature: o.opt_string("signature"),
            duty_percent: o.opt_int("dutyPercent"),
            hours_per_year: o.opt_int("hoursPerYear"),
            start_date: o.date("startDate")?,
            end_date: o.opt_date("endDate"),
        })
    })
}

/// `Group` (with `_embedded.assignmentRoles` when expanded). The display
/// name, which often carries a teacher's name, becomes a keyed hash.
pub fn group(item: &Json<'_>, cx: &Context<'_>) -> Result<Mapped<Group>, MapError> {
    mapped(item, cx, |o| {
        let assignment_roles = match o.child("_embedded") {
            Ok(mut embedded) => embedded.array("assignmentRoles", |a| {
                Ok(Some(GroupAssignmentRole {
                    duty: a.reference("duty")?,
                    assignment_role_type: a.string("assignmentRoleType")?,
                    start_date: a.opt_date("startDate"),
                    end_date: a.opt_date("endDate"),
                }))
            })?,
            Err(_) => Vec::new(),
        };
        Ok(Group {
            id: o.string("id")?,
            meta: o.meta(),
            display_name: cx
                .pseudonymiser
                .name_key(&o.string_or_empty("displayName")?),
            start_date: o.date("startDate")?,
            end_date: o.opt_date("endDate"),
            group_type: o.string_or_empty("groupType")?,
            school_type: o.opt_string("schoolType"),
            organisation: o.reference("organisation")?,
            group_memberships: o.array("groupMemberships", |m| {
                Ok(Some(GroupMembership {
                    person: m.reference("person")?,
                    start_date: m.opt_date("startDate"),
                    end_date: m.opt_date("endDate"),
                }))
            })?,
            assignment_roles,
        })
    })
}

/// `Activity`. The free-text `comment` is dropped and the display name
/// becomes a keyed hash. Teachers given as persons are resolved to their
/// duty at the activity's organisation; `subject` is read as `syllabus`.
pub fn activity(item: &Json<'_>, cx: &Context<'_>) -> Result<Mapped<Activity>, MapError> {
    mapped(item, cx, |o| {
        let organisation = o.reference("organisation")?;
        let syllabus = match o.opt_reference("syllabus") {
            Some(s) => Some(s),
            None if o.present("subject").is_some() => {
                let subject = o.opt_reference("subject");
                if subject.is_some() {
                    o.finding("subject", FindingKind::SubjectForSyllabus);
                }
                subject
            }
            None => None,
        };
        Ok(Activity {
            id: o.string("id")?,
            meta: o.meta(),
            display_name: cx
                .pseudonymiser
                .name_key(&o.string_or_empty("displayName")?),
            calendar_events_required: o.bool_or_false("calendarEventsRequired")?,
            start_date: o.date("startDate")?,
            end_date: o.opt_date("endDate"),
            activity_type: o.opt_string("activityType"),
            minutes_planned: o.opt_int("minutesPlanned"),
            groups: o.array("groups", |g| {
                Ok(Some(ObjectReference {
                    id: g.string("id")?,
                }))
            })?,
            teachers: o.array("teachers", |t| {
                let duty = if t.present("duty").is_none() && t.present("person").is_some() {
                    let person = t.reference("person")?;
                    match cx
                        .duties
                        .and_then(|d| d.only_duty(&person.id, &organisation.id))
                    {
                        Some(duty) => {
                            t.finding("person", FindingKind::TeacherAsPerson);
                            ObjectReference {
                                id: duty.to_owned(),
                            }
                        }
                        None => {
                            t.finding("person", FindingKind::TeacherUnresolved);
                            return Ok(None);
                        }
                    }
                } else {
                    t.reference("duty")?
                };
                Ok(Some(DutyAssignment {
                    duty,
                    start_date: t.opt_date("startDate"),
                    end_date: t.opt_date("endDate"),
                    minutes_planned: t.opt_int("minutesPlanned"),
                    grader: t.opt_bool("grader"),
                }))
            })?,
            syllabus,
            organisation,
            parent_activity: o.opt_reference("parentActivity"),
        })
    })
}

/// `CalendarEvent`. The free-text `comment` is dropped.
pub fn calendar_event(
    item: &Json<'_>,
    cx: &Context<'_>,
) -> Result<Mapped<CalendarEvent>, MapError> {
    mapped(item, cx, |o| {
        Ok(CalendarEvent {
            id: o.string("id")?,
            meta: o.meta(),
            activity: o.reference("activity")?,
            start_time: o.instant("startTime")?,
            end_time: o.instant("endTime")?,
            cancelled: o.opt_bool("cancelled"),
            teaching_length_teacher: o.opt_int("teachingLengthTeacher"),
            teaching_length_student: o.opt_int("teachingLengthStudent"),
            student_exceptions: o.array("studentExceptions", |e| {
                Ok(Some(StudentException {
                    student: e.reference("student")?,
                    participates: e.boolean("participates")?,
                    start_time: e.opt_instant("startTime"),
                    end_time: e.opt_instant("endTime"),
                    teaching_length: e.opt_int("teachingLength"),
                }))
            })?,
            teacher_exceptions: o.array("teacherExceptions", |e| {
                Ok(Some(TeacherException {
                    duty: e.reference("duty")?,
                    participates: e.boolean("participates")?,
                    start_time: e.opt_instant("startTime"),
                    end_time: e.opt_instant("endTime"),
                    teaching_length: e.opt_int("teachingLength"),
                }))
            })?,
            rooms: o.array("rooms", |r| {
                Ok(Some(ObjectReference {
                    id: r.string("id")?,
                }))
            })?,
        })
    })
}

/// `Attendance`. The free-text `absenceReason` is dropped.
pub fn attendance(item: &Json<'_>, cx: &Context<'_>) -> Result<Mapped<Attendance>, MapError> {
    mapped(item, cx, |o| {
        Ok(Attendance {
            id: o.string("id")?,
            meta: o.meta(),
            calendar_event: o.reference("calendarEvent")?,
            student: o.reference("student")?,
            reporter: o.opt_reference("reporter"),
            is_reported: o.boolean("isReported")?,
            attendance_minutes: o.int("attendanceMinutes")?,
            valid_absence_minutes: o.opt_int("validAbsenceMinutes"),
            invalid_absence_minutes: o.opt_int("invalidAbsenceMinutes"),
            other_attendance_minutes: o.opt_int("otherAttendanceMinutes"),
            reported_timestamp: o.opt_instant("reportedTimestamp"),
        })
    })
}

/// `Syllabus`.
pub fn syllabus(item: &Json<'_>, cx: &Context<'_>) -> Result<Mapped<Syllabus>, MapError> {
    mapped(item, cx, |o| {
        Ok(Syllabus {
            id: o.string("id")?,
            meta: o.meta(),
            school_type: o.string_or_empty("schoolType")?,
            subject_code: o.string("subjectCode")?,
            subject_name: o.opt_string("subjectName"),
            subject_designation: o.opt_string("subjectDesignation"),
            course_code: o.opt_string("courseCode"),
            course_name: o.opt_string("courseName"),
            start_school_year: o.opt_int("startSchoolYear"),
            end_school_year: o.opt_int("endSchoolYear"),
            points: o.opt_int("points"),
            curriculum: o.opt_string("curriculum"),
            language_code: o.opt_string("languageCode"),
            official: o.bool_or_false("official")?,
        })
    })
}

/// An entity with an SS 12000 endpoint and a mapping from its JSON.
pub trait Ss12000Entity: Entity {
    /// Map one item of the endpoint.
    fn map(item: &Json<'_>, cx: &Context<'_>) -> Result<Mapped<Self>, MapError>;

    /// The instant (UTC milliseconds) by which the entity leaves the
    /// producer's read window: a lesson's start, an attendance record's
    /// creation (else its report). `None`: it never leaves.
    fn window_time(&self) -> Option<i64> {
        None
    }
}

macro_rules! ss12000_entity {
    ($ty:ty, $map:ident) => {
        impl Ss12000Entity for $ty {
            fn map(item: &Json<'_>, cx: &Context<'_>) -> Result<Mapped<Self>, MapError> {
                $map(item, cx)
            }
        }
    };
    ($ty:ty, $map:ident, |$e:ident| $time:expr) => {
        impl Ss12000Entity for $ty {
            fn map(item: &Json<'_>, cx: &Context<'_>) -> Result<Mapped<Self>, MapError> {
                $map(item, cx)
            }

            fn window_time(&self) -> Option<i64> {
                let $e = self;
                $time
            }
        }
    };
}

ss12000_entity!(Organisation, organisation);
ss12000_entity!(Person, person);
ss12000_entity!(Duty, duty);
ss12000_entity!(Group, group);
ss12000_entity!(Syllabus, syllabus);
ss12000_entity!(Activity, activity);
ss12000_entity!(CalendarEvent, calendar_event, |e| Some(e.start_time.0));
ss12000_entity!(Attendance, attendance, |e| e
    .meta
    .as_ref()
    .and_then(|m| m.created)
    .or(e.reported_timestamp)
    .map(|t| t.0));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_shapes_leave_out_indices() {
        assert_eq!(
            field_shape("enrolments[3].startDate"),
            "enrolments[].startDate"
        );
        assert_eq!(field_shape("meta.modified"), "meta.modified");
        assert_eq!(field_shape("a[1].b[22].c"), "a[].b[].c");
    }
}

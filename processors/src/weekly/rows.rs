//! A week's register rows, as known at an instant: every lesson of the
//! week as last recorded by then, taught by the teachers assigned at the
//! lesson's time, to the pupils in its groups at that time.

use std::collections::{BTreeMap, HashMap};

use super::model::{covers, Entity, Fact, Kind};
use super::operator::Tenant;
use super::time;

/// `(school unit code, teacher key, student key, activity, group, subject,
/// grader)`.
pub type TeacherStudentKey = (String, String, String, String, String, String, bool);
/// `(school unit code, student key, subject)`.
pub type AttendanceKey = (String, String, String);

/// The totals of one attendance row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttendanceTotals {
    pub lessons: i32,
    pub minutes_scheduled: i32,
    pub minutes_present: i32,
    pub minutes_valid_absence: i32,
    pub minutes_invalid_absence: i32,
    pub lessons_unreported: i32,
}

/// A reference that led nowhere: the entity holding it and the field.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dangling {
    pub kind: Kind,
    pub entity_id: String,
    pub field: &'static str,
}

/// A week's rows, in key order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WeekRows {
    pub teacher_student: BTreeMap<TeacherStudentKey, (i32, i32)>,
    pub attendance: BTreeMap<AttendanceKey, AttendanceTotals>,
    pub dangling: Vec<Dangling>,
}

fn lookup<'a>(tenant: &'a Tenant, kind: Kind, id: &str) -> Option<&'a Entity> {
    tenant.store().get(kind, id)
}

fn last_known<'a>(tenant: &'a Tenant, kind: Kind, id: &str, known: i64) -> Option<&'a Fact> {
    lookup(tenant, kind, id).and_then(|e| e.last_known(known))
}

impl WeekRows {
    fn dangling(&mut self, kind: Kind, entity_id: &str, field: &'static str) {
        let d = Dangling {
            kind,
            entity_id: entity_id.to_owned(),
            field,
        };
        if !self.dangling.contains(&d) {
            self.dangling.push(d);
        }
    }
}

/// The rows of `week` as known at `known`.
pub fn compute(tenant: &Tenant, week: &str, known: i64) -> WeekRows {
    let mut rows = WeekRows::default();
    let store = tenant.store();
    for lesson_id in &store.lessons_in(week) {
        // Lessons and reports grow with history: they are read without
        // being kept in memory.
        let Some(Some(Fact::Lesson {
            activity,
            start,
            cancelled,
            minutes,
            absent,
            ..
        })) = store.read(Kind::Lesson, lesson_id, |e| {
            e.as_of(known).and_then(|v| v.fact.clone())
        })
        else {
            continue;
        };
        let (activity, start, minutes, absent) = (&activity, &start, &minutes, &absent);
        if cancelled || time::week_of(*start).as_deref() != Some(week) {
            continue;
        }
        let Some(Fact::Activity {
            organisation,
            syllabus,
            groups,
            teachers,
        }) = lookup(tenant, Kind::Activity, activity).and_then(|e| e.valid_at(*start, known))
        else {
            rows.dangling(Kind::Lesson, lesson_id, "activity");
            continue;
        };
        let unit = match last_known(tenant, Kind::Organisation, organisation, known) {
            Some(Fact::Organisation { school_unit_code }) => {
                school_unit_code.clone().unwrap_or_default()
            }
            _ => {
                rows.dangling(Kind::Activity, activity, "organisation");
                String::new()
            }
        };
        let subject = match syllabus {
            None => String::new(),
            Some(s) => match last_known(tenant, Kind::Syllabus, s, known) {
                Some(Fact::Syllabus { subject_code }) => subject_code.clone(),
                _ => {
                    rows.dangling(Kind::Activity, activity, "syllabus");
                    String::new()
                }
            },
        };
        let Some(day) = time::local_date(*start).map(time::epoch_days) else {
            continue;
        };
        let mut teacher_keys: Vec<(String, bool)> = Vec::new();
        for t in teachers.iter().filter(|t| covers(t.start, t.end, day)) {
            let person = match last_known(tenant, Kind::Duty, &t.duty, known) {
                Some(Fact::Duty {
                    person: Some(person),
                    ..
                }) => person,
                _ => {
                    rows.dangling(Kind::Activity, activity, "teachers.duty");
                    continue;
                }
            };
            match last_known(tenant, Kind::Person, person, known) {
                Some(Fact::Person { person_key }) => {
                    teacher_keys.push((person_key.clone(), t.grader));
                }
                _ => rows.dangling(Kind::Duty, &t.duty, "person"),
            }
        }
        // The pupils by schedule, each through the first of the activity's
        // groups that has them.
        let mut pupils: Vec<(&str, &str)> = Vec::new();
        for g in groups {
            let Some(Fact::Group { members }) =
                lookup(tenant, Kind::Group, g).and_then(|e| e.valid_at(*start, known))
            else {
                rows.dangling(Kind::Activity, activity, "groups");
                continue;
            };
            for m in members.iter().filter(|m| covers(m.start, m.end, day)) {
                if !pupils.iter().any(|(p, _)| *p == m.person) && !absent.contains(&m.person) {
                    pupils.push((&m.person, g));
                }
            }
        }
        // A pupil's report: its minutes when reported. The last by id wins.
        let reports: HashMap<String, Option<(i32, i32, i32)>> = store
            .attendance_of(lesson_id)
            .iter()
            .filter_map(|id| {
                store
                    .read(Kind::Attendance, id, |e| {
                        match e.as_of(known).and_then(|v| v.fact.as_ref()) {
                            Some(Fact::Attendance {
                                student,
                                reported,
                                present,
                                valid_absence,
                                invalid_absence,
                                ..
                            }) => Some((
                                student.clone(),
                                reported.then_some((*present, *valid_absence, *invalid_absence)),
                            )),
                            _ => None,
                        }
                    })
                    .flatten()
            })
            .collect();
        for (pupil, group) in pupils {
            let student_key = match last_known(tenant, Kind::Person, pupil, known) {
                Some(Fact::Person { person_key }) => person_key.clone(),
                _ => {
                    rows.dangling(Kind::Group, group, "groupMemberships.person");
                    continue;
                }
            };
            for (teacher_key, grader) in &teacher_keys {
                let row = rows
                    .teacher_student
                    .entry((
                        unit.clone(),
                        teacher_key.clone(),
                        student_key.clone(),
                        activity.clone(),
                        group.to_owned(),
                        subject.clone(),
                        *grader,
                    ))
                    .or_default();
                row.0 += 1;
                row.1 += minutes;
            }
            let totals = rows
                .attendance
                .entry((unit.clone(), student_key, subject.clone()))
                .or_default();
            totals.lessons += 1;
            totals.minutes_scheduled += minutes;
            match reports.get(pupil) {
                Some(Some((present, valid_absence, invalid_absence))) => {
                    totals.minutes_present += present;
                    totals.minutes_valid_absence += valid_absence;
                    totals.minutes_invalid_absence += invalid_absence;
                }
                _ => totals.lessons_unreported += 1,
            }
        }
    }
    rows.dangling.sort();
    rows
}

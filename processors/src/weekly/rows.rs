//! A week's register rows, as known at an instant: every lesson of the
//! week as last recorded by then, taught by the teachers assigned at the
//! lesson's time, to the pupils in its groups at that time.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::Datelike;

use serde::{Deserialize, Serialize};
use skolflode_schemas::rules::{self, Rule};

use super::model::{covers, Enrolled, Entity, Fact, Kind};
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

/// Pupils' lessons on one weekday and what was reported for them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DayTotals {
    pub pupil_lessons: i32,
    pub minutes_scheduled: i32,
    pub minutes_present: i32,
    pub minutes_valid_absence: i32,
    pub minutes_invalid_absence: i32,
    pub pupil_lessons_unreported: i32,
}

impl DayTotals {
    fn add(&mut self, o: &DayTotals) {
        self.pupil_lessons = self.pupil_lessons.saturating_add(o.pupil_lessons);
        self.minutes_scheduled = self.minutes_scheduled.saturating_add(o.minutes_scheduled);
        self.minutes_present = self.minutes_present.saturating_add(o.minutes_present);
        self.minutes_valid_absence = self
            .minutes_valid_absence
            .saturating_add(o.minutes_valid_absence);
        self.minutes_invalid_absence = self
            .minutes_invalid_absence
            .saturating_add(o.minutes_invalid_absence);
        self.pupil_lessons_unreported = self
            .pupil_lessons_unreported
            .saturating_add(o.pupil_lessons_unreported);
    }
}

/// How much of a school unit's week the vendor's data cover.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitTotals {
    pub lessons: i32,
    pub lessons_with_teacher: i32,
    pub lessons_with_pupils: i32,
    pub lessons_reported: i32,
    /// By vendor id.
    pub pupils: BTreeSet<String>,
    pub pupil_lessons: i32,
    pub pupil_lessons_reported: i32,
    /// By ISO weekday, 1 for Monday.
    pub weekdays: BTreeMap<u32, DayTotals>,
}

/// A validation rule broken in a week: the rule, and the entity and field
/// it is about. The same entity breaking the same rule again in the week
/// is the same finding.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Found {
    pub rule: String,
    pub kind: Kind,
    pub entity_id: String,
    pub field: String,
}

/// A week's rows, in key order, and what the rules found in its lessons,
/// with the school-unit code each finding is about (empty when unknown).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WeekRows {
    pub teacher_student: BTreeMap<TeacherStudentKey, (i32, i32)>,
    pub attendance: BTreeMap<AttendanceKey, AttendanceTotals>,
    /// By school-unit code.
    pub coverage: BTreeMap<String, UnitTotals>,
    pub findings: BTreeMap<Found, String>,
}

fn lookup<'a>(tenant: &'a Tenant, kind: Kind, id: &str) -> Option<&'a Entity> {
    tenant.store().get(kind, id)
}

fn last_known<'a>(tenant: &'a Tenant, kind: Kind, id: &str, known: i64) -> Option<&'a Fact> {
    lookup(tenant, kind, id).and_then(|e| e.last_known(known))
}

impl WeekRows {
    fn found(&mut self, rule: &Rule, kind: Kind, entity_id: &str, field: &str, unit: &str) {
        let found = Found {
            rule: rule.id.to_owned(),
            kind,
            entity_id: entity_id.to_owned(),
            field: field.to_owned(),
        };
        // The first lesson to find it names the unit.
        self.findings
            .entry(found)
            .or_insert_with(|| unit.to_owned());
    }

    fn dangling(&mut self, kind: Kind, entity_id: &str, field: &str, unit: &str) {
        self.found(&rules::DANGLING_REFERENCE, kind, entity_id, field, unit);
    }
}

/// Whether a school-unit code has the form Skolverket gives them.
fn well_formed_unit_code(code: &str) -> bool {
    code.len() == 8 && code.bytes().all(|b| b.is_ascii_digit())
}

/// The rows of `week` as known at `known`, and what the rules find in
/// its lessons (`docs/quality.md`). The week is computed when it closes, so
/// a lesson without reports by then is `LESSON_NOT_REPORTED`.
pub fn compute(tenant: &Tenant, week: &str, known: i64) -> WeekRows {
    let mut rows = WeekRows::default();
    let store = tenant.store();
    // Who is in which lesson when.
    let mut teaching: Vec<Span> = Vec::new();
    let mut attending: Vec<Span> = Vec::new();
    for lesson_id in &store.lessons_in(week) {
        // Lessons and reports grow with history: they are read without
        // being kept in memory.
        let Some(Some(Fact::Lesson {
            activity,
            start,
            end,
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
        let end = end.max(*start);
        if cancelled || time::week_of(*start).as_deref() != Some(week) {
            continue;
        }
        let Some(Fact::Activity {
            organisation,
            syllabus,
            groups,
            teachers,
            ..
        }) = lookup(tenant, Kind::Activity, activity).and_then(|e| e.valid_at(*start, known))
        else {
            rows.dangling(Kind::Lesson, lesson_id, "activity", "");
            continue;
        };
        let unit = match last_known(tenant, Kind::Organisation, organisation, known) {
            Some(Fact::Organisation { school_unit_code }) => {
                let code = school_unit_code.clone().unwrap_or_default();
                if code.is_empty() {
                    rows.found(
                        &rules::MISSING_SCHOOL_UNIT_CODE,
                        Kind::Organisation,
                        organisation,
                        "schoolUnitCode",
                        "",
                    );
                } else if !well_formed_unit_code(&code) {
                    rows.found(
                        &rules::MALFORMED_SCHOOL_UNIT_CODE,
                        Kind::Organisation,
                        organisation,
                        "schoolUnitCode",
                        &code,
                    );
                }
                code
            }
            _ => {
                rows.dangling(Kind::Activity, activity, "organisation", "");
                String::new()
            }
        };
        let subject = match syllabus {
            None => String::new(),
            Some(s) => match last_known(tenant, Kind::Syllabus, s, known) {
                Some(Fact::Syllabus { subject_code }) => subject_code.clone(),
                _ => {
                    rows.dangling(Kind::Activity, activity, "syllabus", &unit);
                    String::new()
                }
            },
        };
        let Some(date) = time::local_date(*start) else {
            continue;
        };
        let day = time::epoch_days(date);
        let weekday = date.weekday().number_from_monday();
        // The activity's dates as last known, not as valid then: a
        // corrected end date corrects the lessons before it too.
        let dates = match last_known(tenant, Kind::Activity, activity, known) {
            Some(Fact::Activity { start, end, .. }) => (*start, *end),
            _ => (None, None),
        };
        if !covers(dates.0, dates.1, day) {
            rows.found(
                &rules::LESSON_OUTSIDE_ACTIVITY_DATES,
                Kind::Lesson,
                lesson_id,
                "startTime",
                &unit,
            );
        }
        let mut teacher_keys: Vec<(String, bool)> = Vec::new();
        let on_the_day = teachers.iter().filter(|t| covers(t.start, t.end, day));
        if teachers.is_empty() {
            rows.found(
                &rules::ACTIVITY_WITHOUT_TEACHER,
                Kind::Activity,
                activity,
                "teachers",
                &unit,
            );
        } else if on_the_day.clone().next().is_none() {
            rows.found(
                &rules::LESSON_WITHOUT_TEACHER,
                Kind::Lesson,
                lesson_id,
                "activity.teachers",
                &unit,
            );
        }
        for t in on_the_day {
            let person = match last_known(tenant, Kind::Duty, &t.duty, known) {
                Some(Fact::Duty {
                    person: Some(person),
                    ..
                }) => person,
                _ => {
                    rows.dangling(Kind::Activity, activity, "teachers.duty", &unit);
                    continue;
                }
            };
            match last_known(tenant, Kind::Person, person, known) {
                Some(Fact::Person { person_key, .. }) => {
                    teacher_keys.push((person_key.clone(), t.grader));
                    teaching.push((person.clone(), *start, end, unit.clone(), lesson_id.clone()));
                }
                _ => rows.dangling(Kind::Duty, &t.duty, "person", &unit),
            }
        }
        // The pupils by schedule, each through the first of the activity's
        // groups that has them.
        let mut pupils: Vec<(&str, &str)> = Vec::new();
        for g in groups {
            let Some(Fact::Group { members }) =
                lookup(tenant, Kind::Group, g).and_then(|e| e.valid_at(*start, known))
            else {
                rows.dangling(Kind::Activity, activity, "groups", &unit);
                continue;
            };
            let on_the_day = members.iter().filter(|m| covers(m.start, m.end, day));
            if on_the_day.clone().next().is_none() {
                rows.found(
                    &rules::GROUP_WITHOUT_MEMBERS,
                    Kind::Group,
                    g,
                    "groupMemberships",
                    &unit,
                );
            }
            for m in on_the_day {
                if !pupils.iter().any(|(p, _)| *p == m.person) && !absent.contains(&m.person) {
                    pupils.push((&m.person, g));
                }
            }
        }
        // A pupil's report: its minutes when reported. The last by id wins.
        let mut reports: HashMap<String, Option<(i32, i32, i32)>> = HashMap::new();
        for id in store.attendance_of(lesson_id).iter() {
            let report = store
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
                .flatten();
            let Some((student, minutes_reported)) = report else {
                continue;
            };
            if let Some((present, valid, invalid)) = minutes_reported {
                if i64::from(present) + i64::from(valid) + i64::from(invalid) > i64::from(*minutes)
                {
                    rows.found(
                        &rules::ATTENDANCE_EXCEEDS_LESSON,
                        Kind::Attendance,
                        id,
                        "attendanceMinutes",
                        &unit,
                    );
                }
            }
            reports.insert(student, minutes_reported);
        }
        if !pupils.is_empty() && !reports.values().any(Option::is_some) {
            rows.found(
                &rules::LESSON_NOT_REPORTED,
                Kind::Lesson,
                lesson_id,
                "attendance",
                &unit,
            );
        }
        // What the lesson adds to its unit's coverage, summed here and
        // added once: the pupils counted and their lessons on the day.
        let mut counted: Vec<&str> = Vec::with_capacity(pupils.len());
        let mut on_the_day = DayTotals::default();
        for (pupil, group) in pupils {
            let student_key = match last_known(tenant, Kind::Person, pupil, known) {
                Some(Fact::Person {
                    person_key,
                    birth_year,
                    enrolments,
                }) => {
                    enrolment_rules(&mut rows, pupil, *birth_year, enrolments, day, &unit);
                    attending.push((
                        pupil.to_owned(),
                        *start,
                        end,
                        unit.clone(),
                        lesson_id.clone(),
                    ));
                    person_key.clone()
                }
                _ => {
                    rows.dangling(Kind::Group, group, "groupMemberships.person", &unit);
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
                row.1 = row.1.saturating_add(*minutes);
            }
            let totals = rows
                .attendance
                .entry((unit.clone(), student_key, subject.clone()))
                .or_default();
            totals.lessons += 1;
            totals.minutes_scheduled = totals.minutes_scheduled.saturating_add(*minutes);
            counted.push(pupil);
            on_the_day.pupil_lessons += 1;
            on_the_day.minutes_scheduled = on_the_day.minutes_scheduled.saturating_add(*minutes);
            match reports.get(pupil) {
                Some(Some((present, valid_absence, invalid_absence))) => {
                    totals.minutes_present = totals.minutes_present.saturating_add(*present);
                    totals.minutes_valid_absence =
                        totals.minutes_valid_absence.saturating_add(*valid_absence);
                    totals.minutes_invalid_absence = totals
                        .minutes_invalid_absence
                        .saturating_add(*invalid_absence);
                    on_the_day.minutes_present =
                        on_the_day.minutes_present.saturating_add(*present);
                    on_the_day.minutes_valid_absence = on_the_day
                        .minutes_valid_absence
                        .saturating_add(*valid_absence);
                    on_the_day.minutes_invalid_absence = on_the_day
                        .minutes_invalid_absence
                        .saturating_add(*invalid_absence);
                }
                _ => {
                    totals.lessons_unreported += 1;
                    on_the_day.pupil_lessons_unreported += 1;
                }
            }
        }
        let covered = rows.coverage.entry(unit.clone()).or_default();
        covered.lessons += 1;
        covered.lessons_with_teacher += i32::from(!teacher_keys.is_empty());
        if !counted.is_empty() {
            covered.lessons_with_pupils += 1;
            covered.lessons_reported += i32::from(reports.values().any(Option::is_some));
            covered.pupil_lessons += on_the_day.pupil_lessons;
            covered.pupil_lessons_reported +=
                on_the_day.pupil_lessons - on_the_day.pupil_lessons_unreported;
            for pupil in counted {
                if !covered.pupils.contains(pupil) {
                    covered.pupils.insert(pupil.to_owned());
                }
            }
            covered
                .weekdays
                .entry(weekday)
                .or_default()
                .add(&on_the_day);
        }
    }
    double_booked(&mut rows, &rules::TEACHER_DOUBLE_BOOKED, teaching);
    double_booked(&mut rows, &rules::PUPIL_DOUBLE_BOOKED, attending);
    rows
}

/// The pupil rules on the enrolments in force on a lesson's day; a pupil
/// with none in force is not judged.
fn enrolment_rules(
    rows: &mut WeekRows,
    pupil: &str,
    birth_year: Option<i32>,
    enrolments: &[Enrolled],
    day: i32,
    unit: &str,
) {
    // Only enrolments in school types that count school years are judged.
    let in_force = || {
        enrolments.iter().filter(|e| {
            !e.cancelled && covers(e.start, e.end, day) && has_school_years(&e.school_type)
        })
    };
    if in_force().next().is_none() {
        return;
    }
    if in_force().all(|e| e.school_year.is_none()) {
        rows.found(
            &rules::PUPIL_WITHOUT_SCHOOL_YEAR,
            Kind::Person,
            pupil,
            "enrolments.schoolYear",
            unit,
        );
        return;
    }
    let (Some(born), Some(start_year)) = (birth_year, time::school_year_start(day)) else {
        return;
    };
    let age = i64::from(start_year) - i64::from(born);
    let implausible = in_force()
        .filter_map(|e| e.school_year.map(|y| (e, y)))
        .all(|(e, year)| match usual_age(&e.school_type, year) {
            Some(usual) => age < usual - 1 || age > usual + 3,
            // A school year no school form has.
            None => true,
        });
    if implausible {
        rows.found(
            &rules::IMPLAUSIBLE_AGE,
            Kind::Person,
            pupil,
            "enrolments.schoolYear",
            unit,
        );
    }
}

/// Whether a school type counts school years (`schoolYear`): those with a
/// usual age.
fn has_school_years(school_type: &str) -> bool {
    usual_age(school_type, 0).is_some()
}

/// The age a pupil of a school type and year usually turns in the
/// calendar year the school year starts; `None` for school types without
/// school years, and for years no school form has (outside 0–13).
pub fn usual_age(school_type: &str, school_year: i32) -> Option<i64> {
    if !(0..=13).contains(&school_year) {
        return None;
    }
    let year = i64::from(school_year);
    match school_type {
        "FKLASS" => Some(6),
        "GR" | "GRS" | "SP" | "SAM" => Some(6 + year),
        "GY" | "GYS" => Some(15 + year),
        _ => None,
    }
}

/// Changes of a week whose `meta.modified` did not move
/// (`MODIFIED_NOT_UPDATED`), each with the school unit its entity belongs
/// to as known at `known`.
pub fn silent_changes(tenant: &Tenant, week: &str, known: i64, rows: &mut WeekRows) {
    let Some(changed) = tenant.meta.silent.get(week) else {
        return;
    };
    for (kind, id) in changed {
        let organisation = match last_known(tenant, *kind, id, known) {
            Some(Fact::Person { enrolments, .. }) => enrolments
                .iter()
                .filter(|e| !e.cancelled)
                .max_by_key(|e| e.start)
                .map(|e| e.organisation.as_str()),
            Some(Fact::Activity { organisation, .. }) => Some(organisation.as_str()),
            Some(Fact::Duty { duty_at, .. }) => Some(duty_at.as_str()),
            _ if *kind == Kind::Organisation => Some(id.as_str()),
            _ => None,
        };
        let unit = match organisation.and_then(|o| last_known(tenant, Kind::Organisation, o, known))
        {
            Some(Fact::Organisation {
                school_unit_code: Some(code),
            }) => code.clone(),
            _ => String::new(),
        };
        rows.found(
            &rules::MODIFIED_NOT_UPDATED,
            *kind,
            id,
            "meta.modified",
            &unit,
        );
    }
}

/// A person in a lesson: (person id, start, end, school unit, lesson id).
type Span = (String, i64, i64, String, String);

/// A finding for each person with two lessons that overlap in time (one
/// ending when the next starts is no overlap; a lesson counts once however
/// many of the person's duties teach it); the unit is the later lesson's.
fn double_booked(rows: &mut WeekRows, rule: &Rule, mut spans: Vec<Span>) {
    spans.sort();
    spans.dedup_by(|a, b| a.0 == b.0 && a.4 == b.4);
    let mut current: Option<(&str, i64)> = None;
    let mut found: Vec<(&str, &str)> = Vec::new();
    for (person, start, end, unit, _) in &spans {
        match current {
            Some((p, until)) if p == person.as_str() => {
                if *start < until {
                    found.push((person, unit));
                }
                current = Some((p, until.max(*end)));
            }
            _ => current = Some((person, *end)),
        }
    }
    for (person, unit) in found {
        rows.found(rule, Kind::Person, person, "lessons", unit);
    }
}

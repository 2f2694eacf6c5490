//! Ground truth: for every ISO week, the rows the weekly registers must
//! hold, computed from the true history (who really taught each lesson, who
//! really was in each group), not from what the vendor shows afterwards.
//!
//! Civic numbers are written in clear text so that a checker can apply the
//! pseudonym key itself. Files:
//! `<dir>/weekly/week=2025-W07/teacher_student.csv` and `attendance.csv`,
//! and `<dir>/faults.csv`: every data-quality fault the simulation put in
//! what the SS 12000 vendor serves, by the validation rule that must find
//! it (`rule,entity_id,school_unit_code,week`; the week empty for faults
//! of persons, which are found as they are read). Vendor ids only.

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;

use chrono::{Datelike, Duration, NaiveDate};

use crate::calendar::iso_week_label;
use crate::config::Quality;
use crate::sim::{AttendanceRecord, Lesson};
use crate::world::World;

/// (unit, teacher duty, pupil, activity, group).
type TeacherStudentKey = (u32, u32, u32, u32, u32);
/// (unit, pupil, subject code).
type AttendanceKey = (u32, u32, &'static str);

#[derive(Debug, Default)]
struct Week {
    sunday: NaiveDate,
    lessons: Range<u32>,
    teacher_student: BTreeMap<TeacherStudentKey, (u32, u32)>,
}

/// Totals of one attendance row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttendanceTotals {
    pub lessons: u32,
    pub minutes_scheduled: u32,
    pub minutes_present: u32,
    pub minutes_valid_absence: u32,
    pub minutes_invalid_absence: u32,
    pub lessons_unreported: u32,
}

/// What a finished week holds, for tests and writers.
#[derive(Debug, Default)]
pub struct WeekRows {
    pub week: String,
    pub teacher_student: BTreeMap<TeacherStudentKey, (u32, u32)>,
    pub attendance: BTreeMap<AttendanceKey, AttendanceTotals>,
}

/// The ground truth being built.
#[derive(Debug)]
pub struct Truth {
    dir: Option<PathBuf>,
    /// `source` of units served by the SS 12000 vendor and by the
    /// Skola24-style vendor.
    sources: (String, String),
    open: BTreeMap<String, Week>,
    /// Finished weeks kept for inspection when nothing is written to disk.
    pub finished: Vec<WeekRows>,
    /// Faults listed so far, when nothing is written to disk.
    pub faults: Vec<Fault>,
    /// Persons whose faults are listed (persons are only ever appended).
    persons_listed: usize,
    /// The faults that are drawn when rendering.
    quality: Quality,
}

/// A data-quality fault in what the vendor serves, and the validation
/// rule (`docs/quality.md`) that must find it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fault {
    pub rule: &'static str,
    pub entity_id: String,
    pub school_unit_code: String,
    /// Empty for faults not tied to a week.
    pub week: String,
}

pub const FAULTS_HEADER: &str = "rule,entity_id,school_unit_code,week";

pub const TEACHER_STUDENT_HEADER: &str = "week,school_unit_code,teacher_civic,teacher_id,student_civic,student_id,activity_id,group_id,subject_code,lessons,minutes,is_grader,source";
pub const ATTENDANCE_HEADER: &str = "week,school_unit_code,student_civic,student_id,subject_code,lessons,minutes_scheduled,minutes_present,minutes_valid_absence,minutes_invalid_absence,lessons_unreported,source";

impl Truth {
    pub fn new(dir: Option<PathBuf>, sources: (String, String), quality: Quality) -> Self {
        Self {
            quality,
            dir,
            sources,
            open: BTreeMap::new(),
            finished: Vec::new(),
            faults: Vec::new(),
            persons_listed: 0,
        }
    }

    /// A lesson was published; lessons are published in date order.
    pub fn lesson_published(&mut self, day: NaiveDate, n: u32) {
        let label = iso_week_label(day);
        let sunday = day + Duration::days(6 - i64::from(day.weekday().num_days_from_monday()));
        let week = self.open.entry(label).or_insert_with(|| Week {
            sunday,
            lessons: n..n,
            ..Week::default()
        });
        week.lessons.end = n + 1;
    }

    /// The lessons published for a week that is still open.
    pub fn lessons_on(&self, week: &str) -> Option<Range<u32>> {
        self.open.get(week).map(|w| w.lessons.clone())
    }

    /// A lesson took place: every teacher assigned at that moment taught
    /// every pupil in its groups at that moment.
    pub fn lesson_held(&mut self, world: &World, lessons: &[Lesson], n: u32) {
        let lesson = &lessons[n as usize];
        let Some(week) = self.open.get_mut(&iso_week_label(lesson.date)) else {
            return;
        };
        let activity = &world.activities[lesson.activity as usize];
        let teachers = world.teachers_on(activity, lesson.date);
        for (pupil, group) in world.participants(activity, lesson.date) {
            for teacher in &teachers {
                let entry = week
                    .teacher_student
                    .entry((activity.unit, *teacher, pupil, lesson.activity, group))
                    .or_default();
                entry.0 += 1;
                entry.1 += u32::from(lesson.len);
            }
        }
    }

    /// Finish every open week whose Sunday is before `day`.
    pub fn finalize_before(
        &mut self,
        day: NaiveDate,
        world: &World,
        lessons: &[Lesson],
        records: &[AttendanceRecord],
    ) -> std::io::Result<()> {
        // Persons as of today: the vendor serves them from today on.
        let persons = self.person_faults(world);
        self.list_faults(persons)?;
        let due: Vec<String> = self
            .open
            .iter()
            .filter(|(_, w)| w.sunday < day)
            .map(|(k, _)| k.clone())
            .collect();
        for label in due {
            if let Some(week) = self.open.remove(&label) {
                self.finalize(label, week, world, lessons, records)?;
            }
        }
        Ok(())
    }

    /// Finish every open week.
    pub fn finalize_all(
        &mut self,
        world: &World,
        lessons: &[Lesson],
        records: &[AttendanceRecord],
    ) -> std::io::Result<()> {
        let persons = self.person_faults(world);
        self.list_faults(persons)?;
        let open = std::mem::take(&mut self.open);
        for (label, week) in open {
            self.finalize(label, week, world, lessons, records)?;
        }
        Ok(())
    }

    fn finalize(
        &mut self,
        label: String,
        week: Week,
        world: &World,
        lessons: &[Lesson],
        records: &[AttendanceRecord],
    ) -> std::io::Result<()> {
        let mut attendance: BTreeMap<AttendanceKey, AttendanceTotals> = BTreeMap::new();
        for n in week.lessons.clone() {
            let lesson = &lessons[n as usize];
            if lesson.cancelled {
                continue;
            }
            let activity = &world.activities[lesson.activity as usize];
            let subject = world.subject_code_of(activity);
            let reported = lesson
                .records
                .map(|(a, b)| &records[a as usize..b as usize]);
            for (pupil, _) in world.participants(activity, lesson.date) {
                let t = attendance
                    .entry((activity.unit, pupil, subject))
                    .or_default();
                t.lessons += 1;
                t.minutes_scheduled += u32::from(lesson.len);
                match reported.and_then(|rs| rs.iter().find(|r| r.pupil == pupil)) {
                    Some(r) => {
                        t.minutes_present += u32::from(r.present);
                        t.minutes_valid_absence += u32::from(r.valid);
                        t.minutes_invalid_absence += u32::from(r.invalid);
                    }
                    None => t.lessons_unreported += 1,
                }
            }
        }
        let faults = week_faults(&label, &week, world, &self.quality, lessons, records);
        self.list_faults(faults)?;
        let rows = WeekRows {
            week: label,
            teacher_student: week.teacher_student,
            attendance,
        };
        match &self.dir {
            Some(dir) => write_week(dir, &self.sources, world, &rows),
            None => {
                self.finished.push(rows);
                Ok(())
            }
        }
    }
}

impl Truth {
    /// A change the vendor made without moving `meta.modified`
    /// (`MODIFIED_NOT_UPDATED`), made on `day`.
    pub fn silent_change(
        &mut self,
        entity_id: &str,
        school_unit_code: &str,
        day: NaiveDate,
    ) -> std::io::Result<()> {
        self.list_faults(vec![Fault {
            rule: "MODIFIED_NOT_UPDATED",
            entity_id: entity_id.to_owned(),
            school_unit_code: school_unit_code.to_owned(),
            week: iso_week_label(day),
        }])
    }

    /// Civic numbers missing or invalid, of persons not listed yet.
    fn person_faults(&mut self, world: &World) -> Vec<Fault> {
        let mut faults = Vec::new();
        for p in &world.persons[self.persons_listed.min(world.persons.len())..] {
            let rule = match p.civic.as_deref() {
                None => "MISSING_CIVIC_NUMBER",
                Some(c) if !check_digit_holds(c) => "INVALID_CIVIC_NUMBER",
                Some(_) => continue,
            };
            faults.push(Fault {
                rule,
                entity_id: p.id.clone(),
                school_unit_code: String::new(),
                week: String::new(),
            });
        }
        self.persons_listed = world.persons.len();
        faults
    }

    fn list_faults(&mut self, mut faults: Vec<Fault>) -> std::io::Result<()> {
        faults.sort();
        faults.dedup();
        let Some(dir) = &self.dir else {
            self.faults.extend(faults);
            return Ok(());
        };
        std::fs::create_dir_all(dir)?;
        let path = dir.join("faults.csv");
        let new = !path.exists();
        let mut out = std::io::BufWriter::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        );
        if new {
            writeln!(out, "{FAULTS_HEADER}")?;
        }
        for f in &faults {
            writeln!(
                out,
                "{},{},{},{}",
                f.rule, f.entity_id, f.school_unit_code, f.week
            )?;
        }
        out.flush()
    }
}

/// Whether a 12-digit number's last digit is the Luhn digit of the nine
/// before it.
fn check_digit_holds(civic: &str) -> bool {
    let digits: Vec<u8> = civic.bytes().map(|b| b.wrapping_sub(b'0')).collect();
    if digits.len() != 12 || digits.iter().any(|d| *d > 9) {
        return false;
    }
    let mut nine = [0u8; 9];
    nine.copy_from_slice(&digits[2..11]);
    crate::civic::check_digit(&nine) == digits[11]
}

/// What the rules evaluated per week must find in its lessons served
/// through SS 12000 (not cancelled; the Skola24-style vendor's are not).
fn week_faults(
    label: &str,
    week: &Week,
    world: &World,
    quality: &Quality,
    lessons: &[Lesson],
    records: &[AttendanceRecord],
) -> Vec<Fault> {
    let mut faults = Vec::new();
    let mut fault = |rule: &'static str, entity_id: &str, unit: &str| {
        faults.push(Fault {
            rule,
            entity_id: entity_id.to_owned(),
            school_unit_code: unit.to_owned(),
            week: label.to_owned(),
        });
    };
    // (person, date, start, end, lesson) of teachers and of pupils.
    let mut teaching: Vec<(u32, NaiveDate, u32, u32, u32)> = Vec::new();
    let mut attending: Vec<(u32, NaiveDate, u32, u32, u32)> = Vec::new();
    for n in week.lessons.clone() {
        let lesson = &lessons[n as usize];
        let activity = &world.activities[lesson.activity as usize];
        if lesson.cancelled || world.is_skola24(activity.unit) {
            continue;
        }
        let span = |person: u32| {
            let start = u32::from(lesson.start);
            (person, lesson.date, start, start + u32::from(lesson.len), n)
        };
        for duty in world.teachers_on(activity, lesson.date) {
            teaching.push(span(world.duties[duty as usize].person));
        }
        let unit = world.unit_code(activity.unit).unwrap_or("");
        for (pupil, _) in world.participants(activity, lesson.date) {
            attending.push(span(pupil));
            let person = &world.persons[pupil as usize];
            let in_force = person
                .enrolments
                .iter()
                .find(|e| e.start <= lesson.date && e.end.is_none_or(|end| lesson.date <= end));
            let Some(enrolment) = in_force else {
                continue;
            };
            if quality.without_school_year(world.seed, pupil as usize) {
                fault("PUPIL_WITHOUT_SCHOOL_YEAR", &person.id, unit);
            } else if quality.implausible_school_year(world.seed, pupil as usize)
                && crate::world::implausible_school_year(enrolment) != enrolment.school_year
            {
                fault("IMPLAUSIBLE_AGE", &person.id, unit);
            }
        }
        if quality.ending_early(world.seed, lesson.activity as usize)
            && lesson.date > crate::world::early_end(activity)
        {
            fault("LESSON_OUTSIDE_ACTIVITY_DATES", &lesson.id, unit);
        }
        let organisation = &world.organisations[activity.unit as usize].id;
        if unit.is_empty() {
            fault("MISSING_SCHOOL_UNIT_CODE", organisation, "");
        } else if unit.len() != 8 || !unit.bytes().all(|b| b.is_ascii_digit()) {
            fault("MALFORMED_SCHOOL_UNIT_CODE", organisation, unit);
        }
        if activity.teachers.is_empty() {
            fault("ACTIVITY_WITHOUT_TEACHER", &activity.id, unit);
        } else if world.teachers_on(activity, lesson.date).is_empty() {
            fault("LESSON_WITHOUT_TEACHER", &lesson.id, unit);
        }
        if activity.dangling_group.is_some() {
            fault("DANGLING_REFERENCE", &activity.id, unit);
        }
        for g in &activity.groups {
            let group = &world.groups[*g as usize];
            if !group.members.iter().any(|m| m.covers(lesson.date)) {
                fault("GROUP_WITHOUT_MEMBERS", &group.id, unit);
            }
        }
        let reported = lesson
            .records
            .map_or(&[][..], |(a, b)| &records[a as usize..b as usize]);
        for r in reported {
            if u32::from(r.present) + u32::from(r.valid) + u32::from(r.invalid)
                > u32::from(lesson.len)
            {
                fault("ATTENDANCE_EXCEEDS_LESSON", &r.id(world.seed), unit);
            }
        }
        if lesson.records.is_none() && !world.participants(activity, lesson.date).is_empty() {
            fault("LESSON_NOT_REPORTED", &lesson.id, unit);
        }
    }
    for (rule, mut spans) in [
        ("TEACHER_DOUBLE_BOOKED", teaching),
        ("PUPIL_DOUBLE_BOOKED", attending),
    ] {
        spans.sort_unstable();
        spans.dedup_by(|a, b| a.0 == b.0 && a.4 == b.4);
        for pair in spans.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            // Sorted by start within a person and day: the next lesson
            // starts before this one ends. (Lessons within a day never
            // span midnight.)
            if a.0 == b.0 && a.1 == b.1 && b.2 < a.3 {
                let unit = world
                    .unit_code(world.activities[lessons[b.4 as usize].activity as usize].unit)
                    .unwrap_or("");
                fault(rule, &world.persons[a.0 as usize].id, unit);
            }
        }
    }
    faults
}

fn write_week(
    dir: &std::path::Path,
    sources: &(String, String),
    world: &World,
    rows: &WeekRows,
) -> std::io::Result<()> {
    let week_dir = dir.join("weekly").join(format!("week={}", rows.week));
    std::fs::create_dir_all(&week_dir)?;
    let civic = |p: u32| world.persons[p as usize].civic.clone().unwrap_or_default();
    let unit_code = |u: u32| world.unit_code(u).unwrap_or("").to_owned();
    let source = |u: u32| {
        if world.is_skola24(u) {
            &sources.1
        } else {
            &sources.0
        }
    };

    let mut out =
        std::io::BufWriter::new(std::fs::File::create(week_dir.join("teacher_student.csv"))?);
    writeln!(out, "{TEACHER_STUDENT_HEADER}")?;
    for ((unit, duty, pupil, activity, group), (lessons, minutes)) in &rows.teacher_student {
        let teacher = world.duties[*duty as usize].person;
        let act = &world.activities[*activity as usize];
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},true,{}",
            rows.week,
            unit_code(*unit),
            civic(teacher),
            world.persons[teacher as usize].id,
            civic(*pupil),
            world.persons[*pupil as usize].id,
            act.id,
            world.groups[*group as usize].id,
            world.subject_code_of(act),
            lessons,
            minutes,
            source(*unit)
        )?;
    }
    out.flush()?;

    let mut out = std::io::BufWriter::new(std::fs::File::create(week_dir.join("attendance.csv"))?);
    writeln!(out, "{ATTENDANCE_HEADER}")?;
    for ((unit, pupil, subject), t) in &rows.attendance {
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{}",
            rows.week,
            unit_code(*unit),
            civic(*pupil),
            world.persons[*pupil as usize].id,
            subject,
            t.lessons,
            t.minutes_scheduled,
            t.minutes_present,
            t.minutes_valid_absence,
            t.minutes_invalid_absence,
            t.lessons_unreported,
            source(*unit)
        )?;
    }
    out.flush()
}

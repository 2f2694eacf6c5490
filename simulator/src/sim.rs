//! The simulation over time: lessons are published a week ahead and held,
//! attendance is reported (on time, late, corrected, or never), teachers
//! are replaced and pupils move — and the vendor overwrites what it showed
//! before. Time advances only when asked, one school day at a time.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use chrono::{Datelike, Duration, NaiveDate, NaiveDateTime};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::calendar::{iso_week_label, local_to_epoch_millis};
use crate::config::SimConfig;
use crate::ids::{self, entity_id, Kind};
use crate::truth::Truth;
use crate::world::{weekday_index, Assignment, Enrolment, Membership, Taught, World};

/// One lesson: a calendar event.
#[derive(Clone, Debug)]
pub struct Lesson {
    pub id: String,
    pub activity: u32,
    pub date: NaiveDate,
    /// Minutes after midnight, local time.
    pub start: u16,
    pub len: u16,
    pub cancelled: bool,
    pub created: i64,
    pub modified: i64,
    /// The attendance records of the lesson, once reported: a range in
    /// `Simulation::records`.
    pub records: Option<(u32, u32)>,
}

impl Lesson {
    pub fn start_local(&self) -> NaiveDateTime {
        self.date
            .and_hms_opt(u32::from(self.start / 60), u32::from(self.start % 60), 0)
            .unwrap_or_default()
    }

    pub fn end_local(&self) -> NaiveDateTime {
        self.start_local() + Duration::minutes(i64::from(self.len))
    }
}

/// One pupil's attendance at one lesson.
#[derive(Clone, Debug)]
pub struct AttendanceRecord {
    pub lesson: u32,
    pub pupil: u32,
    pub present: u16,
    pub valid: u16,
    pub invalid: u16,
    /// The teacher (duty) who reported it.
    pub reporter: Option<u32>,
    pub reported: i64,
    pub modified: i64,
}

impl AttendanceRecord {
    pub fn id(&self, seed: u64) -> String {
        entity_id(
            seed,
            Kind::Attendance,
            (u64::from(self.lesson) << 24) ^ u64::from(self.pupil),
        )
    }
}

/// A deletion, as the deletion feed announces it.
#[derive(Clone, Debug)]
pub struct Deletion {
    /// SS 12000 endpoint name of the entity type, e.g. `duties`.
    pub entity: &'static str,
    pub id: String,
    pub at: i64,
}

#[derive(Clone, Copy, Debug)]
enum Pending {
    Cancel { lesson: u32 },
    Report { lesson: u32 },
    Correct { record: u32 },
}

/// One line of the change log: an entity version the vendor started to
/// show, or an entity it stopped showing.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Change {
    pub seq: u64,
    /// RFC 3339, UTC.
    pub at: String,
    pub entity: &'static str,
    pub id: String,
    pub op: &'static str,
    pub reason: &'static str,
}

/// The running simulation.
#[derive(Debug)]
pub struct Simulation {
    pub config: SimConfig,
    pub world: World,
    pub lessons: Vec<Lesson>,
    pub records: Vec<AttendanceRecord>,
    pub deletions: Vec<Deletion>,
    /// Simulated now, milliseconds since the epoch.
    pub now: i64,
    /// The next day to simulate.
    pub day: NaiveDate,
    published_until: NaiveDate,
    pending: BTreeMap<(i64, u64), Pending>,
    pending_seq: u64,
    change_seq: u64,
    truth: Truth,
    change_log: Option<std::io::BufWriter<std::fs::File>>,
    /// Where the pupil register goes on its census day (the truth directory).
    register_dir: Option<PathBuf>,
}

const TERM_DAYS: f64 = 88.0;
const PUBLISH_AHEAD_DAYS: i64 = 7;

fn at(day: NaiveDate, h: u32, m: u32) -> i64 {
    local_to_epoch_millis(day.and_hms_opt(h, m, 0).unwrap_or_default())
}

/// RFC 3339 in UTC for a millisecond instant.
pub fn utc(millis: i64) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

impl Simulation {
    /// A new simulation on 1 July of the school year, writing ground truth
    /// and the change log under `truth_dir` when given.
    pub fn new(config: SimConfig, truth_dir: Option<PathBuf>) -> std::io::Result<Self> {
        let world = World::generate(&config);
        Self::from_world(config, world, truth_dir)
    }

    /// A simulation of a given world (e.g. one unit of a larger one).
    pub fn from_world(
        config: SimConfig,
        world: World,
        truth_dir: Option<PathBuf>,
    ) -> std::io::Result<Self> {
        let (first, _) = world.year.bounds();
        let now = crate::world::epoch_of(&world.year);
        let change_log = match &truth_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                Some(std::io::BufWriter::new(std::fs::File::create(
                    dir.join("changes.jsonl"),
                )?))
            }
            None => None,
        };
        let register_dir = truth_dir.clone();
        let truth = Truth::new(
            truth_dir,
            (config.vendor.name.clone(), config.skola24_name.clone()),
            config.quality.clone(),
        );
        let mut sim = Self {
            config,
            world,
            lessons: Vec::new(),
            records: Vec::new(),
            deletions: Vec::new(),
            now,
            day: first,
            published_until: first - Duration::days(1),
            pending: BTreeMap::new(),
            pending_seq: 0,
            change_seq: 0,
            truth,
            change_log,
            register_dir,
        };
        sim.log_initial_world()?;
        Ok(sim)
    }

    fn log_initial_world(&mut self) -> std::io::Result<()> {
        let now = self.now;
        let mut created: Vec<(&'static str, String)> = Vec::new();
        created.extend(
            self.world
                .organisations
                .iter()
                .map(|o| ("organisations", o.id.clone())),
        );
        created.extend(self.world.persons.iter().map(|p| ("persons", p.id.clone())));
        created.extend(self.world.duties.iter().map(|d| ("duties", d.id.clone())));
        created.extend(self.world.groups.iter().map(|g| ("groups", g.id.clone())));
        created.extend(
            self.world
                .syllabuses
                .iter()
                .map(|s| ("syllabuses", s.id.clone())),
        );
        created.extend(
            self.world
                .activities
                .iter()
                .map(|a| ("activities", a.id.clone())),
        );
        for (entity, id) in created {
            self.log(now, entity, id, "create", "initial")?;
        }
        Ok(())
    }

    fn log(
        &mut self,
        at: i64,
        entity: &'static str,
        id: String,
        op: &'static str,
        reason: &'static str,
    ) -> std::io::Result<()> {
        self.change_seq += 1;
        if let Some(out) = self.change_log.as_mut() {
            let change = Change {
                seq: self.change_seq,
                at: utc(at),
                entity,
                id,
                op,
                reason,
            };
            serde_json::to_writer(&mut *out, &change)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// The weeks finished so far, when no truth directory is written.
    pub fn truth_weeks(&self) -> &[crate::truth::WeekRows] {
        &self.truth.finished
    }

    /// Number of changes logged so far.
    pub fn changes_logged(&self) -> u64 {
        self.change_seq
    }

    /// Simulate `days` whole days.
    pub fn advance_days(&mut self, days: u32) -> std::io::Result<()> {
        for _ in 0..days {
            self.step_day()?;
        }
        Ok(())
    }

    /// Simulate until the start of `until` (local midnight).
    pub fn advance_to(&mut self, until: NaiveDate) -> std::io::Result<()> {
        while self.day < until {
            self.step_day()?;
        }
        Ok(())
    }

    /// Finish: write the ground truth of every week not yet written.
    pub fn finish(&mut self) -> std::io::Result<()> {
        self.truth
            .finalize_all(&self.world, &self.lessons, &self.records)?;
        if let Some(out) = self.change_log.as_mut() {
            out.flush()?;
        }
        Ok(())
    }

    fn rng_for(&self, parts: &[u64]) -> ChaCha8Rng {
        let mut all = vec![self.config.seed];
        all.extend_from_slice(parts);
        ChaCha8Rng::seed_from_u64(ids::hash(&all))
    }

    fn schedule(&mut self, due: i64, what: Pending) {
        self.pending_seq += 1;
        self.pending.insert((due, self.pending_seq), what);
    }

    fn step_day(&mut self) -> std::io::Result<()> {
        let day = self.day;
        let school_day = self.world.year.is_school_day(day);
        if school_day {
            self.evolve(day)?;
        }
        self.publish_until(day + Duration::days(PUBLISH_AHEAD_DAYS))?;
        let end_of_day = at(day + Duration::days(1), 0, 0);
        // Everything due today, in time order; lessons are held at 16:00 in
        // this order (after cancellations at 15:00 the day before).
        let held_at = at(day, 16, 0);
        let mut held = false;
        loop {
            let next = self.pending.keys().next().copied();
            if !held && next.is_none_or(|(due, _)| due >= held_at) {
                self.now = self.now.max(held_at);
                self.hold_lessons(day)?;
                held = true;
                continue;
            }
            match next {
                Some((due, seq)) if due < end_of_day => {
                    if let Some(what) = self.pending.remove(&(due, seq)) {
                        self.now = self.now.max(due);
                        self.run(what, due)?;
                    }
                }
                _ => break,
            }
        }
        self.now = end_of_day;
        self.day = day + Duration::days(1);
        // The pupil register counts who is enrolled on its census day, at
        // the day's end (after the day's moves).
        if day == crate::register::census_day(self.world.year.start_year) {
            if let Some(dir) = &self.register_dir {
                crate::register::write(&self.world, dir, &self.config.register, self.config.seed)?;
            }
        }
        // A week's attendance settles once late reports and corrections
        // are in: ten days after its Sunday.
        let settled_before = self.day - Duration::days(10);
        self.truth
            .finalize_before(settled_before, &self.world, &self.lessons, &self.records)?;
        if let Some(out) = self.change_log.as_mut() {
            out.flush()?;
        }
        Ok(())
    }

    /// Morning changes: replaced teachers, departures, moved pupils.
    fn evolve(&mut self, day: NaiveDate) -> std::io::Result<()> {
        let when = at(day, 6, 0);
        self.now = when;
        let e = self.config.evolution.clone();
        let mut rng = self.rng_for(&[0xe501, day.num_days_from_ce() as u64]);

        // Teachers leave: their duty is deleted and their activities go to
        // colleagues.
        for d in 0..self.world.duties.len() as u32 {
            if self.world.duties[d as usize].deleted.is_some() {
                continue;
            }
            if rng.random_bool((e.teacher_departures_per_term / TERM_DAYS).min(1.0)) {
                let taught: Vec<u32> = (0..self.world.activities.len() as u32)
                    .filter(|a| {
                        self.world.activities[*a as usize]
                            .teachers
                            .iter()
                            .any(|t| t.duty == d && t.end.is_none())
                    })
                    .collect();
                self.world.duties[d as usize].deleted = Some(when);
                self.world.duties[d as usize].modified = when;
                let id = self.world.duties[d as usize].id.clone();
                if self.config.vendor.deletion_feed {
                    self.deletions.push(Deletion {
                        entity: "duties",
                        id: id.clone(),
                        at: when,
                    });
                }
                self.log(when, "duties", id, "delete", "teacher_left")?;
                for a in taught {
                    self.replace_teacher(a, day, &mut rng, "teacher_left")?;
                }
            }
        }
        for a in 0..self.world.activities.len() as u32 {
            let act = &self.world.activities[a as usize];
            if act.teachers.is_empty() || day < act.start || day > act.end {
                continue;
            }
            if rng.random_bool((e.teacher_reassignments_per_activity_and_term / TERM_DAYS).min(1.0))
            {
                self.replace_teacher(a, day, &mut rng, "teacher_reassigned")?;
            }
        }
        for p in 0..self.world.persons.len() as u32 {
            let Some(enrolment) = self.world.persons[p as usize].enrolments.last().cloned() else {
                continue;
            };
            if enrolment.end.is_some() {
                continue;
            }
            if rng.random_bool((e.class_moves_per_pupil_and_term / TERM_DAYS).min(1.0)) {
                self.move_class(p, day, &mut rng)?;
            } else if rng.random_bool((e.school_moves_per_pupil_and_term / TERM_DAYS).min(1.0)) {
                self.move_school(p, &enrolment, day, &mut rng)?;
            }
        }
        Ok(())
    }

    fn replace_teacher(
        &mut self,
        a: u32,
        day: NaiveDate,
        rng: &mut ChaCha8Rng,
        reason: &'static str,
    ) -> std::io::Result<()> {
        let unit = self.world.activities[a as usize].unit;
        let current: Vec<u32> = self.world.activities[a as usize]
            .teachers
            .iter()
            .filter(|t| t.end.is_none())
            .map(|t| t.duty)
            .collect();
        let slots = self
            .world
            .slots_of(&self.world.activities[a as usize])
            .to_vec();
        let colleagues: Vec<u32> = (0..self.world.duties.len() as u32)
            .filter(|d| {
                let duty = &self.world.duties[*d as usize];
                duty.unit == unit && duty.deleted.is_none() && !current.contains(d)
            })
            .collect();
        // A teacher free at the activity's times: nobody is put in two
        // lessons at once, unless a departure leaves nobody free to cover
        // it (then a busy colleague does, double-booked).
        let free: Vec<u32> = colleagues
            .iter()
            .copied()
            .filter(|d| !self.world.busy(*d, &slots, day, a))
            .collect();
        // A reassignment waits for a free teacher; a departure is covered.
        let candidates = if free.is_empty() && reason == "teacher_left" {
            colleagues
        } else {
            free
        };
        if candidates.is_empty() {
            return Ok(());
        }
        let new = candidates[rng.random_range(0..candidates.len())];
        let when = self.now;
        let dated = self.config.vendor.dated_assignments;
        // With dated assignments, a reassignment may leave the activity
        // without a teacher for a few days (`quality.reassignment_gaps`).
        let gap = dated
            && reason == "teacher_reassigned"
            && crate::config::Quality::drawn(
                self.config.quality.reassignment_gaps,
                self.world.seed,
                0x6a95,
                u64::from(a) << 32 | u64::from(day.num_days_from_ce().unsigned_abs()),
            );
        let from = if gap { day + Duration::days(3) } else { day };
        let activity = &mut self.world.activities[a as usize];
        for t in activity.taught_by.iter_mut().filter(|t| t.to.is_none()) {
            t.to = Some(day - Duration::days(1));
        }
        activity.taught_by.push(Taught {
            duty: new,
            from,
            to: None,
        });
        if dated {
            for t in activity.teachers.iter_mut().filter(|t| t.end.is_none()) {
                t.end = Some(day - Duration::days(1));
            }
            activity.teachers.push(Assignment {
                duty: new,
                start: Some(from),
                end: None,
            });
        } else {
            // The vendor keeps no history: the old teacher is gone, and every
            // past lesson now appears to have been the new teacher's.
            activity.teachers = vec![Assignment {
                duty: new,
                start: None,
                end: None,
            }];
        }
        activity.modified = when;
        let id = activity.id.clone();
        self.log(when, "activities", id, "update", reason)
    }

    /// Groups of a cohort's class that a pupil belongs to by class: the
    /// class group and, unless the pupil takes SVA, the class's Swedish
    /// group.
    fn class_groups(&self, cohort: u32, class: usize, pupil: u32) -> Vec<u32> {
        let (class_group, swedish) = self.world.cohorts[cohort as usize].classes[class];
        let mut out = vec![class_group];
        if let Some(sv) = swedish {
            if !self.world.persons[pupil as usize].sva {
                out.push(sv);
            }
        }
        out
    }

    fn end_membership(&mut self, g: u32, p: u32, day: NaiveDate) -> std::io::Result<bool> {
        let hide = !self.config.vendor.end_date_memberships;
        let when = self.now;
        let group = &mut self.world.groups[g as usize];
        let mut changed = false;
        for m in group
            .members
            .iter_mut()
            .filter(|m| m.person == p && m.end.is_none())
        {
            m.end = Some(day - Duration::days(1));
            m.hidden = hide;
            changed = true;
        }
        if changed {
            group.modified = when;
            let id = group.id.clone();
            self.log(when, "groups", id, "update", "membership_ended")?;
        }
        Ok(changed)
    }

    fn add_membership(&mut self, g: u32, p: u32, day: NaiveDate) -> std::io::Result<()> {
        let when = self.now;
        let group = &mut self.world.groups[g as usize];
        group.members.push(Membership {
            person: p,
            start: day,
            end: None,
            hidden: false,
        });
        group.modified = when;
        let id = group.id.clone();
        self.log(when, "groups", id, "update", "membership_added")
    }

    fn current_class(&self, cohort: u32, p: u32) -> Option<usize> {
        self.world.cohorts[cohort as usize]
            .classes
            .iter()
            .position(|(class, _)| {
                self.world.groups[*class as usize]
                    .members
                    .iter()
                    .any(|m| m.person == p && m.end.is_none())
            })
    }

    fn cohort_of(&self, p: u32) -> Option<u32> {
        let enrolment = self.world.persons[p as usize].enrolments.last()?;
        (0..self.world.cohorts.len() as u32).find(|c| {
            let cohort = &self.world.cohorts[*c as usize];
            cohort.unit == enrolment.unit
                && cohort.year == enrolment.school_year
                && cohort.classes.iter().any(|(class, _)| {
                    self.world.groups[*class as usize]
                        .members
                        .iter()
                        .any(|m| m.person == p && m.end.is_none())
                })
        })
    }

    fn move_class(&mut self, p: u32, day: NaiveDate, rng: &mut ChaCha8Rng) -> std::io::Result<()> {
        let Some(cohort) = self.cohort_of(p) else {
            return Ok(());
        };
        let Some(from) = self.current_class(cohort, p) else {
            return Ok(());
        };
        let classes = self.world.cohorts[cohort as usize].classes.len();
        if classes < 2 {
            return Ok(());
        }
        let to = (from + 1 + rng.random_range(0..classes - 1)) % classes;
        for g in self.class_groups(cohort, from, p) {
            self.end_membership(g, p, day)?;
        }
        for g in self.class_groups(cohort, to, p) {
            self.add_membership(g, p, day)?;
        }
        Ok(())
    }

    fn move_school(
        &mut self,
        p: u32,
        enrolment: &Enrolment,
        day: NaiveDate,
        rng: &mut ChaCha8Rng,
    ) -> std::io::Result<()> {
        let Some(from_cohort) = self.cohort_of(p) else {
            return Ok(());
        };
        let (year, programme) = {
            let c = &self.world.cohorts[from_cohort as usize];
            (c.year, c.programme)
        };
        let targets: Vec<u32> = (0..self.world.cohorts.len() as u32)
            .filter(|c| {
                let cohort = &self.world.cohorts[*c as usize];
                *c != from_cohort
                    && cohort.year == year
                    && cohort.programme == programme
                    && cohort.unit != enrolment.unit
            })
            .collect();
        if targets.is_empty() {
            return Ok(());
        }
        let to_cohort = targets[rng.random_range(0..targets.len())];
        // Leave every group of the old school.
        let old_groups: Vec<u32> = (0..self.world.groups.len() as u32)
            .filter(|g| {
                let group = &self.world.groups[*g as usize];
                group.unit == enrolment.unit
                    && group
                        .members
                        .iter()
                        .any(|m| m.person == p && m.end.is_none())
            })
            .collect();
        for g in old_groups {
            self.end_membership(g, p, day)?;
        }
        let to_unit = self.world.cohorts[to_cohort as usize].unit;
        let classes = self.world.cohorts[to_cohort as usize].classes.len();
        let class = rng.random_range(0..classes);
        for g in self.class_groups(to_cohort, class, p) {
            self.add_membership(g, p, day)?;
        }
        let (sva_group, language_groups) = {
            let c = &self.world.cohorts[to_cohort as usize];
            (c.sva_group, c.language_groups.clone())
        };
        let person = &self.world.persons[p as usize];
        let (sva, language) = (person.sva, person.language);
        if sva {
            if let Some(g) = sva_group {
                self.add_membership(g, p, day)?;
            }
        }
        if let Some(l) = language {
            if let Some(g) = language_groups.get(l as usize) {
                self.add_membership(*g, p, day)?;
            }
        }
        let when = self.now;
        let person = &mut self.world.persons[p as usize];
        if let Some(last) = person.enrolments.last_mut() {
            last.end = Some(day - Duration::days(1));
        }
        person.enrolments.push(Enrolment {
            unit: to_unit,
            school_year: year,
            form: enrolment.form,
            start: day,
            end: None,
        });
        let silent = crate::config::Quality::drawn(
            self.config.quality.silent_school_moves,
            self.world.seed,
            0x5113,
            u64::from(p) << 32 | u64::from(day.num_days_from_ce().unsigned_abs()),
        );
        let id = person.id.clone();
        if silent {
            let unit = self.world.unit_code(to_unit).unwrap_or("").to_owned();
            self.truth.silent_change(&id, &unit, day)?;
        } else {
            self.world.persons[p as usize].modified = when;
        }
        self.log(when, "persons", id, "update", "school_move")
    }

    /// Publish the lessons of every day up to `last`.
    fn publish_until(&mut self, last: NaiveDate) -> std::io::Result<()> {
        while self.published_until < last {
            let day = self.published_until + Duration::days(1);
            self.published_until = day;
            if !self.world.year.is_school_day(day) {
                continue;
            }
            let weekday = weekday_index(day);
            let created = self.now;
            for a in 0..self.world.activities.len() as u32 {
                let act = &self.world.activities[a as usize];
                if day < act.start || day > act.end {
                    continue;
                }
                let slots: Vec<_> = self
                    .world
                    .slots_of(act)
                    .iter()
                    .filter(|s| s.weekday == weekday)
                    .copied()
                    .collect();
                for slot in slots {
                    let n = self.lessons.len() as u32;
                    let id = entity_id(
                        self.config.seed,
                        Kind::CalendarEvent,
                        ids::hash(&[
                            u64::from(a),
                            day.num_days_from_ce() as u64,
                            u64::from(slot.start),
                        ]),
                    );
                    self.lessons.push(Lesson {
                        id: id.clone(),
                        activity: a,
                        date: day,
                        start: slot.start,
                        len: slot.len,
                        cancelled: false,
                        created,
                        modified: created,
                        records: None,
                    });
                    self.truth.lesson_published(day, n);
                    self.log(created, "calendarEvents", id, "create", "published")?;
                    let mut rng = self.rng_for(&[0xca4c, u64::from(n)]);
                    if rng.random_bool(self.config.evolution.cancelled_lessons) {
                        self.schedule(
                            at(day - Duration::days(1), 15, 0),
                            Pending::Cancel { lesson: n },
                        );
                    }
                }
            }
        }
        Ok(())
    }

    fn run(&mut self, what: Pending, due: i64) -> std::io::Result<()> {
        match what {
            Pending::Cancel { lesson } => {
                let l = &mut self.lessons[lesson as usize];
                l.cancelled = true;
                l.modified = due;
                let id = l.id.clone();
                self.log(due, "calendarEvents", id, "update", "cancelled")
            }
            Pending::Report { lesson } => self.report(lesson, due),
            Pending::Correct { record } => {
                let r = &mut self.records[record as usize];
                r.valid += r.invalid;
                r.invalid = 0;
                r.modified = due;
                let id = r.id(self.config.seed);
                self.log(due, "attendances", id, "update", "corrected_to_valid")
            }
        }
    }

    /// Lessons held today: the ground truth of who taught whom, and the
    /// attendance reports that come in today or later (or never).
    fn hold_lessons(&mut self, day: NaiveDate) -> std::io::Result<()> {
        let Some(range) = self.truth.lessons_on(&iso_week_label(day)) else {
            return Ok(());
        };
        for n in range {
            let lesson = &self.lessons[n as usize];
            if lesson.date != day || lesson.cancelled {
                continue;
            }
            self.truth.lesson_held(&self.world, &self.lessons, n);
            let mut rng = self.rng_for(&[0x4e90, u64::from(n)]);
            let e = &self.config.evolution;
            let draw: f64 = rng.random();
            if draw < e.unreported_lessons {
                continue;
            }
            let due = if draw < e.unreported_lessons + e.late_reports {
                at(day + Duration::days(rng.random_range(1..=3)), 16, 30)
            } else {
                at(day, 16, 0) + rng.random_range(0..60) * 60_000
            };
            self.schedule(due, Pending::Report { lesson: n });
        }
        Ok(())
    }

    fn report(&mut self, n: u32, when: i64) -> std::io::Result<()> {
        let lesson = self.lessons[n as usize].clone();
        let activity = &self.world.activities[lesson.activity as usize];
        let reporter = self
            .world
            .teachers_on(activity, lesson.date)
            .first()
            .copied();
        let participants = self.world.participants(activity, lesson.date);
        let monday_or_friday = matches!(
            lesson.date.weekday(),
            chrono::Weekday::Mon | chrono::Weekday::Fri
        );
        let first = self.records.len() as u32;
        for (pupil, _) in participants {
            let mut rng = self.rng_for(&[0xa77e, u64::from(n), u64::from(pupil)]);
            let base = f64::from(self.world.persons[pupil as usize].absence);
            let p_absent = (base * if monday_or_friday { 1.4 } else { 1.0 }).min(0.95);
            let len = lesson.len;
            let (present, valid, invalid) = if rng.random_bool(p_absent) {
                if rng.random_bool(0.7) {
                    (0, len, 0)
                } else {
                    (0, 0, len)
                }
            } else if rng.random_bool(0.04) {
                let late = rng.random_range(5..=15).min(len);
                (len - late, 0, late)
            } else {
                (len, 0, 0)
            };
            // Its own generator: the rate does not change the other draws.
            let exceeding = self
                .rng_for(&[0xe8ce, u64::from(n), u64::from(pupil)])
                .random_bool(self.config.quality.attendance_exceeding_lesson);
            let present = if exceeding { present + 10 } else { present };
            let record = self.records.len() as u32;
            self.records.push(AttendanceRecord {
                lesson: n,
                pupil,
                present,
                valid,
                invalid,
                reporter,
                reported: when,
                modified: when,
            });
            let id = self.records[record as usize].id(self.config.seed);
            self.log(when, "attendances", id, "create", "reported")?;
            if invalid == len && rng.random_bool(self.config.evolution.corrections) {
                let later = lesson.date + Duration::days(rng.random_range(2..=5));
                self.schedule(at(later, 10, 0), Pending::Correct { record });
            }
        }
        self.lessons[n as usize].records = Some((first, self.records.len() as u32));
        Ok(())
    }
}

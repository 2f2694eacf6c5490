//! Coverage per school unit and week, and attendance by weekday, from the
//! processors' coverage topic (`skolflode.quality.coverage`): the latest
//! revision of each connection's week, reduced to the organiser's units.
//! Counts only; the topic names no person.

use std::collections::BTreeMap;

use serde::Serialize;
use skolflode_kafka::KafkaConfig;
use skolflode_schemas::processed::UnitWeekCoverage;

use crate::absence::{percent, Absence, Minutes};
use crate::organisations::Organiser;
use crate::QualityError;

/// One school unit's week, or (with an empty code) all of the organiser's
/// units in a week.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct UnitWeek {
    pub code: String,
    pub name: String,
    pub week: String,
    /// Lessons held (cancelled excluded).
    pub lessons: i64,
    /// Share of them with a teacher.
    pub with_teacher_percent: f64,
    /// Share of the lessons with pupils that have any attendance report.
    pub lessons_reported_percent: f64,
    /// Pupils' scheduled lessons, and the share of them reported.
    pub pupil_lessons: i64,
    pub pupil_lessons_reported_percent: f64,
    /// Pupils with lessons at the unit in the week.
    pub pupils: i64,
    /// Those pupils against the pupil register's count for the unit (a
    /// digital timetable), when the registers integrated one.
    pub with_timetable_percent: Option<f64>,
    #[serde(skip)]
    counts: Counts,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Counts {
    lessons: i64,
    with_teacher: i64,
    with_pupils: i64,
    reported: i64,
    pupils: i64,
    pupil_lessons: i64,
    pupil_lessons_reported: i64,
}

impl Counts {
    fn add(&mut self, c: &UnitWeekCoverage) {
        self.lessons += i64::from(c.lessons);
        self.with_teacher += i64::from(c.lessons_with_teacher);
        self.with_pupils += i64::from(c.lessons_with_pupils);
        self.reported += i64::from(c.lessons_reported);
        self.pupils += i64::from(c.pupils);
        self.pupil_lessons += i64::from(c.pupil_lessons);
        self.pupil_lessons_reported += i64::from(c.pupil_lessons_reported);
    }
}

/// Absence on one weekday, over the period and the organiser's units.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Weekday {
    /// ISO weekday, 1 for Monday.
    pub weekday: u32,
    pub name: String,
    pub minutes: Minutes,
}

/// Coverage of the period.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Coverage {
    /// Every unit's every week with lessons, by unit code then week.
    pub by_unit_week: Vec<UnitWeek>,
    /// All the organiser's units, week by week.
    pub by_week: Vec<UnitWeek>,
    /// Monday first; days without lessons left out.
    pub weekdays: Vec<Weekday>,
}

const WEEKDAYS: [&str; 7] = [
    "Monday / måndag",
    "Tuesday / tisdag",
    "Wednesday / onsdag",
    "Thursday / torsdag",
    "Friday / fredag",
    "Saturday / lördag",
    "Sunday / söndag",
];

/// The latest revision of every connection's week on `topics`, read
/// committed from the beginning to the end as they stand. Blocking.
pub fn read(kafka: &KafkaConfig, topics: &[String]) -> Result<Vec<UnitWeekCoverage>, QualityError> {
    let mut latest: BTreeMap<(String, String), Vec<UnitWeekCoverage>> = BTreeMap::new();
    crate::topics::read_all(kafka, topics, "UnitWeekCoverage", "coverage", |c| {
        keep_latest(&mut latest, c)
    })?;
    Ok(latest.into_values().flatten().collect())
}

/// A revision replaces the week's earlier ones whole.
fn keep_latest(
    latest: &mut BTreeMap<(String, String), Vec<UnitWeekCoverage>>,
    c: UnitWeekCoverage,
) {
    let rows = latest
        .entry((c.connection.clone(), c.week.clone()))
        .or_default();
    match rows.first().map(|r| r.revision) {
        Some(revision) if revision > c.revision => {}
        Some(revision) if revision < c.revision => *rows = vec![c],
        // The same revision read again (a producer's retry, a second
        // topic) replaces its unit's row rather than adding to it.
        _ => match rows
            .iter_mut()
            .find(|r| r.school_unit_code == c.school_unit_code)
        {
            Some(same) => *same = c,
            None => rows.push(c),
        },
    }
}

/// The coverage of `organiser`'s units in the weeks `from..=to`;
/// `absence` gives the pupil register's counts per unit, when there is one.
pub fn summarise(
    rows: &[UnitWeekCoverage],
    organiser: &Organiser,
    from: (i32, u32),
    to: (i32, u32),
    absence: Option<&Absence>,
) -> Coverage {
    let mut units: BTreeMap<(String, String), UnitWeek> = BTreeMap::new();
    let mut weeks: BTreeMap<String, UnitWeek> = BTreeMap::new();
    let mut days: BTreeMap<u32, Minutes> = BTreeMap::new();
    for c in rows {
        if !organiser.ids.contains_key(&c.connection) || !crate::weeks::within(&c.week, from, to) {
            continue;
        }
        let Some(unit) = organiser.unit_of(&c.connection, &c.school_unit_code, None) else {
            continue;
        };
        let row = units
            .entry((unit.code.clone(), c.week.clone()))
            .or_insert_with(|| UnitWeek {
                code: unit.code.clone(),
                name: unit.name.clone(),
                week: c.week.clone(),
                ..UnitWeek::default()
            });
        row.counts.add(c);
        weeks
            .entry(c.week.clone())
            .or_insert_with(|| UnitWeek {
                week: c.week.clone(),
                ..UnitWeek::default()
            })
            .counts
            .add(c);
        for d in &c.weekdays {
            let Ok(weekday) = u32::try_from(d.weekday) else {
                continue;
            };
            let m = days.entry(weekday).or_default();
            m.add(&Minutes {
                lessons: i64::from(d.pupil_lessons),
                scheduled: i64::from(d.minutes_scheduled),
                present: i64::from(d.minutes_present),
                valid_absence: i64::from(d.minutes_valid_absence),
                invalid_absence: i64::from(d.minutes_invalid_absence),
                lessons_unreported: i64::from(d.pupil_lessons_unreported),
            });
        }
    }
    let registered = |code: &str| -> Option<i64> {
        absence
            .and_then(|a| a.coverage.get(code))
            .and_then(|c| c.register_pupils)
    };
    let all_registered: Option<i64> = absence.and_then(|a| {
        let listed: Vec<i64> = a
            .coverage
            .values()
            .filter_map(|c| c.register_pupils)
            .collect();
        (!listed.is_empty()).then(|| listed.iter().sum())
    });
    let finish = |mut u: UnitWeek, register: Option<i64>| {
        let c = u.counts;
        u.lessons = c.lessons;
        u.with_teacher_percent = percent(c.with_teacher, c.lessons);
        u.lessons_reported_percent = percent(c.reported, c.with_pupils);
        u.pupil_lessons = c.pupil_lessons;
        u.pupil_lessons_reported_percent = percent(c.pupil_lessons_reported, c.pupil_lessons);
        u.pupils = c.pupils;
        u.with_timetable_percent = register.filter(|n| *n > 0).map(|n| percent(c.pupils, n));
        u
    };
    Coverage {
        by_unit_week: units
            .into_values()
            .map(|u| {
                let register = registered(&u.code);
                finish(u, register)
            })
            .collect(),
        by_week: weeks
            .into_values()
            .map(|u| finish(u, all_registered))
            .collect(),
        weekdays: days
            .into_iter()
            .map(|(weekday, minutes)| Weekday {
                weekday,
                name: WEEKDAYS
                    .get(weekday.saturating_sub(1) as usize)
                    .map_or_else(|| weekday.to_string(), |n| (*n).to_owned()),
                minutes,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skolflode_schemas::processed::WeekdayAttendance;

    fn row(week: &str, revision: i32, unit: &str, lessons: i32) -> UnitWeekCoverage {
        UnitWeekCoverage {
            connection: "c".into(),
            week: week.into(),
            revision,
            rows_in_revision: 1,
            school_unit_code: unit.into(),
            lessons,
            lessons_with_teacher: lessons - 1,
            lessons_with_pupils: lessons,
            lessons_reported: lessons / 2,
            pupils: 10,
            pupil_lessons: 10 * lessons,
            pupil_lessons_reported: 5 * lessons,
            source: "sim".into(),
            weekdays: vec![WeekdayAttendance {
                weekday: 3,
                pupil_lessons: 10 * lessons,
                minutes_scheduled: 600 * lessons,
                minutes_present: 500 * lessons,
                minutes_valid_absence: 60 * lessons,
                minutes_invalid_absence: 40 * lessons,
                pupil_lessons_unreported: 5 * lessons,
            }],
        }
    }

    fn organiser() -> Organiser {
        Organiser {
            name: "Kommunen".into(),
            ids: [("c".to_owned(), "org".to_owned())].into(),
            units: [(
                ("c".to_owned(), "u1".to_owned()),
                crate::organisations::Unit {
                    code: "12345678".into(),
                    name: "Skolan".into(),
                    form: "GR".into(),
                },
            )]
            .into(),
        }
    }

    #[test]
    fn a_later_revision_replaces_the_week_and_other_units_are_left_out() {
        let mut latest = BTreeMap::new();
        for r in [
            row("2025-W36", 1, "12345678", 4),
            row("2025-W36", 2, "12345678", 10),
            row("2025-W36", 1, "12345678", 7),
            row("2025-W36", 2, "87654321", 10),
            // Revision 2 read again.
            row("2025-W36", 2, "12345678", 10),
        ] {
            keep_latest(&mut latest, r);
        }
        let rows: Vec<UnitWeekCoverage> = latest.into_values().flatten().collect();
        assert_eq!(rows.len(), 2);
        let c = summarise(&rows, &organiser(), (2025, 36), (2025, 36), None);
        assert_eq!(c.by_unit_week.len(), 1);
        let u = &c.by_unit_week[0];
        assert_eq!((u.lessons, u.with_teacher_percent), (10, 90.0));
        assert_eq!(u.pupil_lessons_reported_percent, 50.0);
        assert_eq!(u.with_timetable_percent, None);
        assert_eq!(c.weekdays.len(), 1);
        assert_eq!(c.weekdays[0].minutes.valid_absence, 600);
        assert!(c.weekdays[0].name.starts_with("Wednesday"));
        let outside = summarise(&rows, &organiser(), (2025, 37), (2025, 40), None);
        assert!(outside.by_week.is_empty());
    }
}

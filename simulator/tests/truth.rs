//! The ground truth is internally consistent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};

use chrono::{Datelike, NaiveDate};
use skolflode_simulator::plan::Split;
use skolflode_simulator::sim::Simulation;
use skolflode_simulator::SimConfig;

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn tiny_year() -> Simulation {
    let config = SimConfig {
        evolution: skolflode_simulator::config::Evolution {
            teacher_reassignments_per_activity_and_term: 0.3,
            ..Default::default()
        },
        // Every report accounts for its whole lesson (below).
        quality: skolflode_simulator::config::Quality {
            attendance_exceeding_lesson: 0.0,
            ..Default::default()
        },
        ..SimConfig::default()
    };
    let mut sim = Simulation::new(config, None).unwrap();
    sim.advance_to(date(2026, 7, 1)).unwrap();
    sim.finish().unwrap();
    sim
}

#[test]
fn a_year_of_truth_adds_up() {
    let sim = tiny_year();
    let world = &sim.world;
    let weeks = sim.truth_weeks();
    assert!(weeks.len() >= 35, "{} weeks with lessons", weeks.len());

    // Every attendance record belongs to a held lesson, to a pupil who was
    // in one of its groups that day, and accounts for the whole lesson.
    for r in &sim.records {
        let lesson = &sim.lessons[r.lesson as usize];
        assert!(
            !lesson.cancelled,
            "attendance reported for a cancelled lesson"
        );
        let activity = &world.activities[lesson.activity as usize];
        assert!(world
            .participants(activity, lesson.date)
            .iter()
            .any(|(p, _)| *p == r.pupil));
        assert_eq!(r.present + r.valid + r.invalid, lesson.len);
    }

    // Reported rows account for every scheduled minute; absence is a few
    // percent of minutes.
    let mut scheduled = 0u64;
    let mut absent = 0u64;
    for week in weeks {
        for t in week.attendance.values() {
            assert!(t.lessons_unreported <= t.lessons);
            let accounted = t.minutes_present + t.minutes_valid_absence + t.minutes_invalid_absence;
            assert!(accounted <= t.minutes_scheduled);
            if t.lessons_unreported == 0 {
                assert_eq!(accounted, t.minutes_scheduled, "{}", week.week);
                scheduled += u64::from(t.minutes_scheduled);
                absent += u64::from(t.minutes_valid_absence + t.minutes_invalid_absence);
            }
        }
    }
    let share = absent as f64 / scheduled as f64;
    assert!((0.02..0.15).contains(&share), "absence share {share}");
}

#[test]
fn lesson_minutes_add_up_to_the_timetable() {
    let sim = tiny_year();
    let world = &sim.world;
    // A full week: five school days.
    let monday = date(2025, 9, 8);
    assert!((0..5).all(|i| world.year.is_school_day(monday + chrono::Duration::days(i))));
    let label = "2025-W37";
    let week = sim.truth_weeks().iter().find(|w| w.week == label).unwrap();
    let mut per_pupil: BTreeMap<u32, u32> = BTreeMap::new();
    for ((_, pupil, _), t) in &week.attendance {
        *per_pupil.entry(*pupil).or_default() += t.minutes_scheduled;
    }
    // Minutes of lessons cancelled that week, per pupil.
    let mut cancelled: BTreeMap<u32, u32> = BTreeMap::new();
    for l in sim
        .lessons
        .iter()
        .filter(|l| l.cancelled && l.date >= monday && l.date < monday + chrono::Duration::days(7))
    {
        let activity = &world.activities[l.activity as usize];
        for (p, _) in world.participants(activity, l.date) {
            *cancelled.entry(p).or_default() += u32::from(l.len);
        }
    }
    let mut checked = 0;
    for (pupil, minutes) in per_pupil {
        let person = &world.persons[pupil as usize];
        let enrolment = &person.enrolments[0];
        if person.enrolments.len() > 1 {
            continue;
        }
        let cohort = world
            .cohorts
            .iter()
            .find(|c| c.unit == enrolment.unit && c.year == enrolment.school_year)
            .unwrap();
        let planned: u32 = cohort
            .plan
            .iter()
            .filter(|i| i.split != Split::Language || person.language.is_some())
            .map(|i| i.weekly_minutes)
            .sum();
        assert_eq!(
            minutes + cancelled.get(&pupil).copied().unwrap_or(0),
            planned,
            "pupil {pupil}"
        );
        assert!((1200..=1420).contains(&planned));
        checked += 1;
    }
    assert!(checked > 80);
}

#[test]
fn overwritten_teachers_keep_their_weeks_in_the_truth() {
    let sim = tiny_year();
    let world = &sim.world;
    let mut checked = 0;
    for (a, activity) in world.activities.iter().enumerate() {
        if activity.taught_by.len() < 2 {
            continue;
        }
        let first = &activity.taught_by[0];
        let second = &activity.taught_by[1];
        // The vendor shows only the newest teacher (overwrite mode).
        assert_eq!(activity.teachers.len(), 1);
        assert_eq!(
            activity.teachers[0].duty,
            activity.taught_by.last().unwrap().duty
        );
        let switch = second.from;
        for week in sim.truth_weeks() {
            let monday =
                NaiveDate::parse_from_str(&format!("{}-1", week.week), "%G-W%V-%u").unwrap();
            let sunday = monday + chrono::Duration::days(6);
            let teachers: HashSet<u32> = week
                .teacher_student
                .keys()
                .filter(|(_, _, _, act, _)| *act == a as u32)
                .map(|(_, duty, _, _, _)| *duty)
                .collect();
            if teachers.is_empty() {
                continue;
            }
            if sunday < switch {
                assert_eq!(
                    teachers,
                    HashSet::from([first.duty]),
                    "{} before the switch",
                    week.week
                );
                checked += 1;
            } else if monday >= switch && activity.taught_by.len() == 2 {
                assert_eq!(
                    teachers,
                    HashSet::from([second.duty]),
                    "{} after the switch",
                    week.week
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 10, "only {checked} activity-weeks checked");
}

#[test]
fn weekdays_are_school_days_only() {
    let sim = tiny_year();
    for l in &sim.lessons {
        assert!(sim.world.year.is_school_day(l.date));
        assert!(l.date.weekday().num_days_from_monday() < 5);
    }
}

/// Every file under `dir`, by relative path, with its bytes.
fn files(dir: &std::path::Path) -> BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap().to_path_buf();
                out.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[test]
fn dialects_change_the_json_not_the_truth() {
    use skolflode_simulator::config::Dialect;
    let root = std::env::temp_dir().join(format!("skolflode-sim-dialects-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut truths = Vec::new();
    for on in [false, true] {
        let mut config = SimConfig::default();
        if on {
            config.vendor.dialect = Dialect::every(&["syllabuses", "deletedEntities"]);
            config.quality.enrolments_without_start_date = 0.5;
        }
        config.validate().unwrap();
        let dir = root.join(if on { "on" } else { "off" });
        let mut sim = Simulation::new(config, Some(dir.clone())).unwrap();
        sim.advance_to(date(2025, 9, 15)).unwrap();
        // Render everything once, as a server would.
        for endpoint in skolflode_simulator::ss12000::ENDPOINTS {
            for i in 0..sim.storage_len(endpoint).unwrap() {
                let _ = sim.render(endpoint, i);
            }
        }
        sim.finish().unwrap();
        truths.push(files(&dir));
    }
    let _ = std::fs::remove_dir_all(&root);
    assert!(truths[0].len() > 3, "{:?}", truths[0].keys());
    assert!(truths[0].keys().any(|k| k.ends_with("teacher_student.csv")));
    assert_eq!(
        truths[0].keys().collect::<Vec<_>>(),
        truths[1].keys().collect::<Vec<_>>()
    );
    for (path, bytes) in &truths[0] {
        assert!(truths[1][path] == *bytes, "{} differs", path.display());
    }
}

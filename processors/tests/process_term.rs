//! Producer → processor over a lively autumn term — six weeks of a small
//! school, and the whole term of a 10 000-pupil municipality — against two
//! simulated vendors — one with dated teacher assignments and end-dated
//! memberships, one that overwrites teacher lists and drops memberships —
//! with teacher reassignments and departures, class and school moves, late
//! attendance and API faults: the latest revision of every week the
//! simulator's ground truth has settled equals that truth row for row.
//! The expected rows come from the truth CSVs and the pseudonym contract
//! alone (HMAC-SHA256 of the civic number, else of "<connection>:<id>").
//!
//! The validation rules find every data-quality fault the simulator put
//! in (its `faults.csv`) and nothing else; with the faults switched off,
//! nothing at all.
//!
//! A replay of the six weeks under a new application id then writes
//! byte-identical snapshot, history and findings topics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use skolflode_processors::weekly::metrics::Metrics;
use skolflode_processors::weekly::run::{self, Outputs, Until};
use skolflode_processors::weekly::ProcessConfig;
use skolflode_producers::pseudonym::Pseudonymiser;
use skolflode_producers::runner;
use skolflode_schemas::catalogue;
use skolflode_schemas::processed::{
    AttendanceRow, TeacherStudentRow, UnitWeekCoverage, WeekdayAttendance,
};
use skolflode_schemas::records::QualityFinding;
use skolflode_schemas::{wire, AvroType};
use skolflode_simulator::config::Quality;
use skolflode_simulator::config::VendorBehaviour;
use skolflode_testkit::kafka::Isolation;
use skolflode_testkit::term::produce_days_with;
use skolflode_testkit::{unique, TestKafka};

const SECRET: &[u8] = b"the processor's term test pseudonym key";
const DAYS: u32 = 45;

fn key_of(civic: &str, connection: &str, id: &str) -> String {
    let digits: Vec<u32> = civic.chars().filter_map(|c| c.to_digit(10)).collect();
    // Luhn over the ten digits after the century, as the contract's civic
    // numbers are checked.
    let valid = digits.len() == 12 && {
        let sum: u32 = digits[2..]
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let v = if i % 2 == 0 { d * 2 } else { *d };
                v / 10 + v % 10
            })
            .sum();
        sum.is_multiple_of(10)
    };
    let input = if valid {
        digits
            .iter()
            .map(|d| char::from_digit(*d, 10).unwrap())
            .collect::<String>()
    } else {
        format!("{connection}:{id}")
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(input.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

type Rows = BTreeSet<Vec<String>>;

/// Truth rows per week, in the registers' columns.
fn truth(dir: &std::path::Path, connection: &str) -> BTreeMap<String, (Rows, Rows)> {
    let mut out = BTreeMap::new();
    let Ok(weeks) = std::fs::read_dir(dir.join("weekly")) else {
        return out;
    };
    for week in weeks.flatten() {
        let label = week.file_name().to_string_lossy().replace("week=", "");
        let read = |file: &str| -> Vec<Vec<String>> {
            std::fs::read_to_string(week.path().join(file))
                .unwrap()
                .lines()
                .skip(1)
                .map(|l| l.split(',').map(str::to_owned).collect())
                .collect()
        };
        // week,school_unit_code,teacher_civic,teacher_id,student_civic,student_id,activity_id,group_id,subject_code,lessons,minutes,is_grader,source
        let ts: Rows = read("teacher_student.csv")
            .into_iter()
            .map(|c| {
                vec![
                    c[1].clone(),
                    key_of(&c[2], connection, &c[3]),
                    key_of(&c[4], connection, &c[5]),
                    c[6].clone(),
                    c[7].clone(),
                    c[8].clone(),
                    c[9].clone(),
                    c[10].clone(),
                    c[11].clone(),
                    c[12].clone(),
                ]
            })
            .collect();
        // week,school_unit_code,student_civic,student_id,subject_code,lessons,minutes_scheduled,minutes_present,minutes_valid_absence,minutes_invalid_absence,lessons_unreported,source
        let att: Rows = read("attendance.csv")
            .into_iter()
            .map(|c| {
                let mut row = vec![c[1].clone(), key_of(&c[2], connection, &c[3])];
                row.extend(c[4..].iter().cloned());
                row
            })
            .collect();
        out.insert(label, (ts, att));
    }
    out
}

fn decode<T: AvroType>(payload: &[u8]) -> T {
    let (_, body) = wire::split(payload).unwrap();
    T::decode_all(body).unwrap()
}

/// The latest revision of each (connection, week), in register columns.
async fn published(
    kafka: &TestKafka,
    outputs: &Outputs,
) -> BTreeMap<(String, String), (i32, Rows, Rows)> {
    let mut out: BTreeMap<(String, String), (i32, Rows, Rows)> = BTreeMap::new();
    let ts_topic = outputs.name(catalogue::SNAPSHOT_TEACHER_STUDENT);
    for r in kafka
        .drain(
            &ts_topic,
            Isolation::ReadCommitted,
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap()
    {
        let row: TeacherStudentRow = decode(&r.payload.unwrap());
        let entry = out
            .entry((row.connection.clone(), row.week.clone()))
            .or_insert((row.revision, Rows::new(), Rows::new()));
        if row.revision > entry.0 {
            *entry = (row.revision, Rows::new(), Rows::new());
        }
        entry.1.insert(vec![
            row.school_unit_code,
            row.teacher_key,
            row.student_key,
            row.activity_id,
            row.group_id,
            row.subject_code,
            row.lessons.to_string(),
            row.minutes.to_string(),
            row.is_grader.to_string(),
            row.source,
        ]);
    }
    let att_topic = outputs.name(catalogue::SNAPSHOT_ATTENDANCE);
    for r in kafka
        .drain(
            &att_topic,
            Isolation::ReadCommitted,
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap()
    {
        let row: AttendanceRow = decode(&r.payload.unwrap());
        let entry = out
            .entry((row.connection.clone(), row.week.clone()))
            .or_insert((row.revision, Rows::new(), Rows::new()));
        if row.revision > entry.0 {
            *entry = (row.revision, Rows::new(), Rows::new());
        }
        if row.revision == entry.0 {
            entry.2.insert(vec![
                row.school_unit_code,
                row.student_key,
                row.subject_code,
                row.lessons.to_string(),
                row.minutes_scheduled.to_string(),
                row.minutes_present.to_string(),
                row.minutes_valid_absence.to_string(),
                row.minutes_invalid_absence.to_string(),
                row.lessons_unreported.to_string(),
                row.source,
            ]);
        }
    }
    out
}

/// The coverage of the latest revision of each (connection, week), by
/// school unit.
async fn coverage(
    kafka: &TestKafka,
    outputs: &Outputs,
) -> BTreeMap<(String, String), (i32, BTreeMap<String, UnitWeekCoverage>)> {
    let mut out: BTreeMap<(String, String), (i32, BTreeMap<String, UnitWeekCoverage>)> =
        BTreeMap::new();
    for r in kafka
        .drain(
            &outputs.name(catalogue::QUALITY_COVERAGE),
            Isolation::ReadCommitted,
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap()
    {
        let row: UnitWeekCoverage = decode(&r.payload.unwrap());
        let entry = out
            .entry((row.connection.clone(), row.week.clone()))
            .or_insert((row.revision, BTreeMap::new()));
        if row.revision > entry.0 {
            *entry = (row.revision, BTreeMap::new());
        }
        if row.revision == entry.0 {
            entry.1.insert(row.school_unit_code.clone(), row);
        }
    }
    out
}

/// A week's coverage agrees with the truth's attendance rows: per unit,
/// the pupils, their lessons, those reported and the minutes (summed
/// over the weekdays); the lesson counts are consistent.
fn compare_coverage(
    name: &str,
    week: &str,
    revision: i32,
    truth: &Rows,
    got: Option<&(i32, BTreeMap<String, UnitWeekCoverage>)>,
) {
    let Some((got_revision, units)) = got else {
        panic!("{name} {week}: no coverage published");
    };
    assert_eq!(*got_revision, revision, "{name} {week}: coverage revision");
    // [unit, student, subject, lessons, scheduled, present, valid, invalid, unreported, source]
    let mut expected: BTreeMap<&str, (BTreeSet<&str>, [i64; 6])> = BTreeMap::new();
    for row in truth {
        let e = expected.entry(row[0].as_str()).or_default();
        e.0.insert(row[1].as_str());
        let n = |i: usize| row[i].parse::<i64>().unwrap();
        e.1[0] += n(3);
        e.1[1] += n(3) - n(8);
        for (k, i) in [(2, 4), (3, 5), (4, 6), (5, 7)] {
            e.1[k] += n(i);
        }
    }
    for (unit, c) in units {
        let days = |f: fn(&WeekdayAttendance) -> i32| -> i64 {
            c.weekdays.iter().map(|d| i64::from(f(d))).sum()
        };
        let got = (
            c.pupils as usize,
            [
                i64::from(c.pupil_lessons),
                i64::from(c.pupil_lessons_reported),
                days(|d| d.minutes_scheduled),
                days(|d| d.minutes_present),
                days(|d| d.minutes_valid_absence),
                days(|d| d.minutes_invalid_absence),
            ],
        );
        let want = expected
            .get(unit.as_str())
            .map_or((0, [0; 6]), |(pupils, sums)| (pupils.len(), *sums));
        assert_eq!(got, want, "{name} {week} {unit}: coverage");
        assert_eq!(days(|d| d.pupil_lessons), i64::from(c.pupil_lessons));
        assert_eq!(
            days(|d| d.pupil_lessons_unreported),
            i64::from(c.pupil_lessons - c.pupil_lessons_reported)
        );
        assert!(
            c.lessons_with_teacher <= c.lessons
                && c.lessons_reported <= c.lessons_with_pupils
                && c.lessons_with_pupils <= c.lessons,
            "{name} {week} {unit}: {c:?}"
        );
    }
    for unit in expected.keys() {
        assert!(
            units.contains_key(*unit),
            "{name} {week} {unit}: no coverage"
        );
    }
}

/// A finding by rule, entity id and week (empty for rules not evaluated
/// per week).
type Finding = (String, String, String);

/// Every fault the simulator injected, from its `faults.csv`.
fn faults(truth: &std::path::Path) -> Vec<Finding> {
    let text = std::fs::read_to_string(truth.join("faults.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("rule,entity_id,school_unit_code,week"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_owned(), f[1].to_owned(), f[3].to_owned())
        })
        .collect()
}

/// The faults the simulator injected in the weeks given (and those of no
/// week).
fn injected(truth: &std::path::Path, weeks: &BTreeSet<String>) -> BTreeSet<Finding> {
    faults(truth)
        .into_iter()
        .filter(|(_, _, week)| week.is_empty() || weeks.contains(week))
        .collect()
}

/// `MODIFIED_NOT_UPDATED` is found in the week a full read saw the
/// change, up to a week after the simulator made it: compared by entity.
/// Every change made before the last settled week must be found, and
/// what is found must be a change the simulator made silently.
fn silent_by_entity(
    truth: &std::path::Path,
    weeks: &BTreeSet<String>,
    injected: &mut BTreeSet<Finding>,
    found: &mut BTreeSet<Finding>,
) {
    const RULE: &str = "MODIFIED_NOT_UPDATED";
    let last = weeks.last().cloned().unwrap_or_default();
    let of_rule = |set: &BTreeSet<Finding>| -> Vec<Finding> {
        set.iter().filter(|f| f.0 == RULE).cloned().collect()
    };
    for f in of_rule(found) {
        found.remove(&f);
        found.insert((f.0, f.1, String::new()));
    }
    for f in of_rule(injected) {
        injected.remove(&f);
    }
    for (rule, entity, week) in faults(truth) {
        let seen = found.contains(&(rule.clone(), entity.clone(), String::new()));
        if rule == RULE && (week < last || seen) {
            injected.insert((rule, entity, String::new()));
        }
    }
}

/// The rule findings of `connection` open at the end: the latest event
/// of each finding on the processor's findings topic (in `weeks`), and
/// every rule finding of the producer's.
async fn found(
    kafka: &TestKafka,
    outputs: &Outputs,
    connection: &str,
    weeks: &BTreeSet<String>,
) -> BTreeSet<Finding> {
    let mut latest: BTreeMap<(String, String, String, String, String), bool> = BTreeMap::new();
    for r in kafka
        .drain(
            &outputs.name(catalogue::QUALITY_FINDINGS),
            Isolation::ReadCommitted,
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap()
    {
        let f: QualityFinding = decode(&r.payload.unwrap());
        let (Some(rule), Some(week)) = (f.rule, f.week) else {
            panic!("a processor finding without rule or week");
        };
        if f.connection == connection && weeks.contains(&week) {
            assert!(f.first_seen.is_some() && f.severity.is_some() && f.vendor.is_some());
            latest.insert(
                (rule, f.endpoint, f.entity_id, f.field, week),
                f.resolved_at.is_none(),
            );
        }
    }
    let mut open: BTreeSet<Finding> = latest
        .into_iter()
        .filter(|(_, open)| *open)
        .map(|((rule, _, entity, _, week), _)| (rule, entity, week))
        .collect();
    for r in kafka
        .drain(
            catalogue::QUALITY_FINDINGS,
            Isolation::ReadCommitted,
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap()
    {
        let f: QualityFinding = decode(&r.payload.unwrap());
        if let (true, Some(rule)) = (f.connection == connection, f.rule) {
            open.insert((rule, f.entity_id, String::new()));
        }
    }
    open
}

/// Every fault the simulator injected is found by its rule, and nothing
/// else is found: per rule, the counts and the first differences.
fn compare_findings(name: &str, injected: &BTreeSet<Finding>, found: &BTreeSet<Finding>) {
    let rules: BTreeSet<&String> = injected.iter().chain(found).map(|f| &f.0).collect();
    for rule in rules {
        let of = |set: &BTreeSet<Finding>| -> BTreeSet<Finding> {
            set.iter().filter(|f| &f.0 == rule).cloned().collect()
        };
        let (i, f) = (of(injected), of(found));
        eprintln!("{name} {rule}: {} injected, {} found", i.len(), f.len());
        let missing: Vec<_> = i.difference(&f).take(5).collect();
        let extra: Vec<_> = f.difference(&i).take(5).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{name} {rule}: {} injected, {} found; not found {missing:?}; found but not injected {extra:?}",
            i.len(),
            f.len()
        );
    }
}

async fn process(kafka: &TestKafka, config: ProcessConfig, outputs: Outputs) -> run::Progress {
    run::ensure_topics(kafka.config(), &config, &outputs)
        .await
        .unwrap();
    let kafka = kafka.config().clone();
    tokio::task::spawn_blocking(move || {
        let metrics = Arc::new(Metrics::new().unwrap());
        run::run(
            &kafka,
            &config,
            &outputs,
            &metrics,
            Until::CaughtUp,
            &AtomicBool::new(false),
        )
    })
    .await
    .unwrap()
    .unwrap()
}

/// What a term test runs.
struct Term {
    /// Simulated days read, from two days before the term starts.
    days: u32,
    /// Pupils of the vendor with dated assignments and of the one that
    /// overwrites.
    pupils: [u32; 2],
    /// Weeks of each vendor the truth must have settled, at least.
    weeks: usize,
    /// Then replay and compare the outputs byte for byte.
    replay: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weekly_snapshots_equal_the_ground_truth_and_a_replay_is_byte_identical() {
    check(Term {
        days: DAYS,
        pupils: [150, 100],
        weeks: 4,
        replay: true,
    })
    .await;
}

/// A municipality of 10 000 pupils whose schools use the two vendors, half
/// each, through the whole autumn term (to the Christmas break and past
/// the last week's grace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_municipality_through_the_autumn_term_equals_the_ground_truth() {
    check(Term {
        days: 126,
        pupils: [5_000, 5_000],
        weeks: 15,
        replay: false,
    })
    .await;
}

/// With every data-quality fault of the simulator switched off (every late
/// report in before its week closes, and no teacher leaving mid-term), the
/// rules find nothing, in the producer or the processor, though the term
/// is as lively as above otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_free_data_gives_no_findings() {
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let pseudonymiser = Arc::new(Pseudonymiser::new(SECRET).unwrap());
    let term = produce_days_with(
        kafka.config(),
        &pseudonymiser,
        VendorBehaviour {
            name: "sim-clean".into(),
            dated_assignments: true,
            end_date_memberships: true,
            deletion_feed: true,
            ..VendorBehaviour::default()
        },
        23,
        300,
        DAYS,
        |config| {
            config.quality = Quality::fault_free();
            config.evolution.unreported_lessons = 0.0;
            // A departure nobody is free to cover double-books a colleague.
            config.evolution.teacher_departures_per_term = 0.0;
        },
    )
    .await
    .unwrap();
    let faults = std::fs::read_to_string(term.truth.join("faults.csv")).unwrap();
    assert_eq!(
        faults.lines().count(),
        1,
        "the simulator injected: {faults}"
    );
    let application_id = unique("process-clean");
    let config = ProcessConfig {
        application_id: application_id.clone(),
        sources: [(term.name.clone(), term.source.clone())].into(),
        connections: vec![term.name.clone()],
        ..ProcessConfig::default()
    };
    let outputs = Outputs {
        suffix: Some(application_id),
    };
    let progress = process(&kafka, config, outputs.clone()).await;
    assert!(progress.snapshots >= 3, "{progress:?}");
    let weeks: BTreeSet<String> = (30..=52).map(|w| format!("2025-W{w}")).collect();
    let findings = kafka
        .drain(
            &outputs.name(catalogue::QUALITY_FINDINGS),
            Isolation::ReadCommitted,
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap();
    let findings: Vec<QualityFinding> = findings
        .iter()
        .map(|r| decode(r.payload.as_deref().unwrap()))
        .collect();
    assert!(findings.is_empty(), "{findings:#?}");
    let found = found(&kafka, &outputs, &term.name, &weeks).await;
    assert!(found.is_empty(), "{found:?}");
}

async fn check(term: Term) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let pseudonymiser = Arc::new(Pseudonymiser::new(SECRET).unwrap());
    let started = std::time::Instant::now();
    let mut tenants = Vec::new();
    for (seed, dated, pupils) in [(21u64, true, term.pupils[0]), (22, false, term.pupils[1])] {
        let behaviour = VendorBehaviour {
            name: format!("sim-{seed}"),
            dated_assignments: dated,
            end_date_memberships: dated,
            deletion_feed: dated,
            ..VendorBehaviour::default()
        };
        let term = produce_days_with(
            kafka.config(),
            &pseudonymiser,
            behaviour,
            seed,
            pupils,
            term.days,
            |config| {
                // Rates at which a small term has some of every fault
                // these rules are about.
                let q = &mut config.quality;
                q.enrolments_without_school_year = 0.03;
                q.implausible_school_years = 0.03;
                q.activities_ending_early = 0.05;
                q.silent_school_moves = 1.0;
                q.reassignment_gaps = 1.0;
                q.pupils_in_two_classes = 0.01;
                config.evolution.school_moves_per_pupil_and_term = 0.1;
                config.evolution.teacher_reassignments_per_activity_and_term = 0.3;
            },
        )
        .await
        .unwrap();
        tenants.push((term.name, term.source, term.truth));
    }

    eprintln!(
        "produced {} connections in {:?}",
        tenants.len(),
        started.elapsed()
    );
    let application_id = unique("process-term");
    let config = ProcessConfig {
        application_id: application_id.clone(),
        // Short, so that late reports and corrections come as revisions.
        grace_hours: 6,
        sources: tenants
            .iter()
            .map(|(name, source, ..)| (name.clone(), source.clone()))
            .collect(),
        connections: tenants.iter().map(|(name, ..)| name.clone()).collect(),
        ..ProcessConfig::default()
    };
    let outputs = Outputs {
        suffix: Some(application_id.clone()),
    };
    let progress = process(&kafka, config.clone(), outputs.clone()).await;
    eprintln!("processed in {:?}", started.elapsed());
    assert!(progress.kept > 1000, "{progress:?}");
    assert_eq!(progress.dead_letters, 0, "{progress:?}");

    let published = published(&kafka, &outputs).await;
    let covered = coverage(&kafka, &outputs).await;
    let mut weeks_compared = 0;
    let (mut ts_rows, mut att_rows, mut revised, mut findings) = (0, 0, 0, 0);
    let mut injected_by_rule: BTreeMap<String, usize> = BTreeMap::new();
    for (name, _, truth_dir) in &tenants {
        let truth = truth(truth_dir.path(), name);
        assert!(
            truth.len() >= term.weeks,
            "{name}: {} settled weeks",
            truth.len()
        );
        for (week, (ts, att)) in &truth {
            let Some((revision, got_ts, got_att)) = published.get(&(name.clone(), week.clone()))
            else {
                panic!("{name} {week}: not published");
            };
            let missing: Vec<_> = ts.difference(got_ts).take(5).collect();
            let extra: Vec<_> = got_ts.difference(ts).take(5).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "{name} {week} rev {revision}: teacher_student: {} truth rows, {} published; missing {missing:#?}; extra {extra:#?}",
                ts.len(),
                got_ts.len()
            );
            let missing: Vec<_> = att.difference(got_att).take(5).collect();
            let extra: Vec<_> = got_att.difference(att).take(5).collect();
            assert!(
                missing.is_empty() && extra.is_empty(),
                "{name} {week} rev {revision}: attendance: missing {missing:#?}; extra {extra:#?}"
            );
            compare_coverage(
                name,
                week,
                *revision,
                att,
                covered.get(&(name.clone(), week.clone())),
            );
            weeks_compared += 1;
            ts_rows += ts.len();
            att_rows += att.len();
            revised += usize::from(*revision > 1);
        }
        let weeks: BTreeSet<String> = truth.keys().cloned().collect();
        let mut injected = injected(truth_dir.path(), &weeks);
        let mut found = found(&kafka, &outputs, name, &weeks).await;
        silent_by_entity(truth_dir.path(), &weeks, &mut injected, &mut found);
        for (rule, ..) in &injected {
            *injected_by_rule.entry(rule.clone()).or_insert(0usize) += 1;
        }
        compare_findings(name, &injected, &found);
        findings += found.len();
    }
    assert!(
        findings > 0,
        "no faults found: the test does not reach the rules"
    );
    let mut required = vec![
        "LESSON_OUTSIDE_ACTIVITY_DATES",
        "PUPIL_WITHOUT_SCHOOL_YEAR",
        "IMPLAUSIBLE_AGE",
        "LESSON_WITHOUT_TEACHER",
        "GROUP_WITHOUT_MEMBERS",
        "LESSON_NOT_REPORTED",
    ];
    // Pupils move school only where there are two schools of a kind, and
    // are in two classes only where a year has two.
    if term.pupils.iter().all(|p| *p >= 1_000) {
        required.extend(["MODIFIED_NOT_UPDATED", "PUPIL_DOUBLE_BOOKED"]);
    }
    for rule in required {
        assert!(
            injected_by_rule.get(rule).is_some_and(|n| *n > 0),
            "the simulator injected no {rule}: {injected_by_rule:?}"
        );
    }
    eprintln!(
        "{weeks_compared} weeks compared: {ts_rows} teacher_student rows, {att_rows} attendance rows, {revised} weeks revised; {progress:?}"
    );
    assert!(
        weeks_compared >= 2 * term.weeks,
        "{weeks_compared} weeks compared"
    );
    assert!(ts_rows > 1000 && att_rows > 1000, "{ts_rows} {att_rows}");
    assert!(
        revised > 0,
        "no week was revised: the test does not reach revisions"
    );

    if !term.replay {
        return;
    }
    // Replay: same input, a new application id, copies of the outputs,
    // and the state on disk rather than in memory.
    let replay_id = unique("process-replay");
    let replay_outputs = Outputs {
        suffix: Some(replay_id.clone()),
    };
    process(
        &kafka,
        ProcessConfig {
            application_id: replay_id,
            // Memory emptied to the disk store after nearly every commit:
            // the disk store gives the same bytes as memory.
            memory_per_task_mib: 1,
            commit_every_records: 20_000,
            ..config
        },
        replay_outputs.clone(),
    )
    .await;
    let topics = [
        catalogue::SNAPSHOT_TEACHER_STUDENT,
        catalogue::SNAPSHOT_ATTENDANCE,
        catalogue::QUALITY_FINDINGS,
        catalogue::QUALITY_COVERAGE,
    ]
    .into_iter()
    .chain(catalogue::HISTORY_OF.iter().map(|(_, h)| *h));
    for topic in topics {
        let original = kafka.partitions(&outputs.name(topic)).await.unwrap();
        let replayed = kafka.partitions(&replay_outputs.name(topic)).await.unwrap();
        assert!(
            original == replayed,
            "{topic}: {} records originally, {} replayed, first difference at {:?}",
            original.len(),
            replayed.len(),
            original.iter().zip(&replayed).position(|(a, b)| a != b)
        );
    }
}

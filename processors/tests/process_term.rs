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
//! A replay of the six weeks under a new application id then writes
//! byte-identical snapshot and history topics.

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
use skolflode_schemas::processed::{AttendanceRow, TeacherStudentRow};
use skolflode_schemas::{wire, AvroType};
use skolflode_simulator::config::VendorBehaviour;
use skolflode_testkit::kafka::Isolation;
use skolflode_testkit::term::produce_days;
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
        let term = produce_days(
            kafka.config(),
            &pseudonymiser,
            behaviour,
            seed,
            pupils,
            term.days,
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
    let mut weeks_compared = 0;
    let (mut ts_rows, mut att_rows, mut revised) = (0, 0, 0);
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
            weeks_compared += 1;
            ts_rows += ts.len();
            att_rows += att.len();
            revised += usize::from(*revision > 1);
        }
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

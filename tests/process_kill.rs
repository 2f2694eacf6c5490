//! `skolflode process` killed with SIGKILL at random points, twenty times,
//! with a second instance started while the first still runs (the group
//! rebalances), then run to the end: its snapshot topics are the same, byte
//! for byte, as those of an undisturbed run over the same input, and so are
//! its history topics — nothing lost, nothing duplicated, every week's
//! revision complete.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use skolflode_producers::pseudonym::Pseudonymiser;
use skolflode_producers::runner;
use skolflode_schemas::catalogue;
use skolflode_schemas::processed::TeacherStudentRow;
use skolflode_schemas::{wire, AvroType};
use skolflode_simulator::config::VendorBehaviour;
use skolflode_testkit::term::produce_days;
use skolflode_testkit::{unique, Scratch, TestKafka};

const KILLS: usize = 20;

fn replay(binary: &str, config: &std::path::Path, id: &str) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["replay", "--config"])
        .arg(config)
        .args(["--application-id", id])
        .env("RUST_LOG", "warn")
        // What a SIGKILL leaves (state stores) goes with the test's dir.
        .env("TMPDIR", config.parent().unwrap_or(config))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn kill(mut child: Child) {
    child.kill().unwrap(); // SIGKILL: no chance to commit, abort or flush.
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_a_takeover_give_the_same_bytes_as_an_undisturbed_run() {
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let pseudonymiser = Arc::new(
        Pseudonymiser::new(b"the processor kill test pseudonym key, long enough").unwrap(),
    );
    let term = produce_days(
        kafka.config(),
        &pseudonymiser,
        VendorBehaviour {
            name: "kill-sim".into(),
            dated_assignments: false,
            end_date_memberships: false,
            deletion_feed: false,
            ..VendorBehaviour::default()
        },
        31,
        100,
        30,
    )
    .await
    .unwrap();

    let dir = Scratch::new("process-kill").unwrap();
    let config = dir.join("process.toml");
    std::fs::write(
        &config,
        format!(
            r#"[kafka]
bootstrap_servers = "{bootstrap}"

[process]
grace_hours = 6
connections = ["{name}"]
# Small transactions: many commits for the kills to land between and in.
commit_every_records = 300
commit_interval_ms = 50
# Entities written to the disk store and memory emptied at most commits.
memory_per_task_mib = 1

[process.sources]
"{name}" = "{source}"
"#,
            bootstrap = kafka.config().bootstrap_servers,
            name = term.name,
            source = term.source,
        ),
    )
    .unwrap();
    let binary = env!("CARGO_BIN_EXE_skolflode");

    let calm = unique("calm");
    let started = std::time::Instant::now();
    let status = replay(binary, &config, &calm).status().unwrap();
    assert!(status.success(), "undisturbed run: {status}");
    let calm_time = started.elapsed();

    let killed = unique("killed");
    let mut rng = StdRng::seed_from_u64(12);
    let mut current = replay(binary, &config, &killed).spawn().unwrap();
    let mut landed = 0;
    for k in 0..KILLS {
        std::thread::sleep(Duration::from_millis(rng.random_range(300..2500)));
        if k == KILLS / 2 {
            // A second instance under the same application id: it fences
            // the first, which must stop without harm; then it is killed
            // in its turn.
            let second = replay(binary, &config, &killed).spawn().unwrap();
            std::thread::sleep(Duration::from_millis(rng.random_range(500..1500)));
            kill(current);
            landed += 1;
            current = second;
            continue;
        }
        if let Ok(Some(status)) = current.try_wait() {
            // Finished between kills: the remaining kills hit restarts.
            assert!(status.success(), "run {k}: {status}");
        } else {
            kill(current);
            landed += 1;
        }
        current = replay(binary, &config, &killed).spawn().unwrap();
    }
    let status = current.wait().unwrap();
    assert!(status.success(), "last run: {status}");
    eprintln!("undisturbed run {calm_time:?}; {landed} of {KILLS} kills hit a running processor");
    assert!(
        landed >= KILLS - 2,
        "only {landed} kills hit a running processor"
    );
    let status = replay(binary, &config, &killed).status().unwrap();
    assert!(status.success(), "a run after the end: {status}");

    let topics = [
        catalogue::SNAPSHOT_TEACHER_STUDENT,
        catalogue::SNAPSHOT_ATTENDANCE,
        catalogue::QUALITY_COVERAGE,
    ]
    .into_iter()
    .chain(catalogue::HISTORY_OF.iter().map(|(_, h)| *h));
    for topic in topics {
        let calm_records = kafka.partitions(&format!("{topic}.{calm}")).await.unwrap();
        let killed_records = kafka
            .partitions(&format!("{topic}.{killed}"))
            .await
            .unwrap();
        assert!(
            calm_records == killed_records,
            "{topic}: {} records undisturbed, {} with kills; first difference at {:?}",
            calm_records.len(),
            killed_records.len(),
            calm_records
                .iter()
                .zip(&killed_records)
                .position(|(a, b)| a != b)
        );
    }
    // Findings: each connection's in its task's partition, so the same
    // bytes in the same order too.
    let topic = catalogue::QUALITY_FINDINGS;
    assert_eq!(
        kafka.partitions(&format!("{topic}.{calm}")).await.unwrap(),
        kafka
            .partitions(&format!("{topic}.{killed}"))
            .await
            .unwrap()
    );

    // And each revision of each week is whole: as many rows as it says.
    let mut revisions: BTreeMap<(String, i32), (i32, usize)> = BTreeMap::new();
    let topic = format!("{}.{killed}", catalogue::SNAPSHOT_TEACHER_STUDENT);
    for (_, _, payload) in kafka.partitions(&topic).await.unwrap() {
        let (_, body) = wire::split(payload.as_deref().unwrap()).unwrap();
        let row = TeacherStudentRow::decode_all(body).unwrap();
        let entry = revisions
            .entry((row.week, row.revision))
            .or_insert((row.rows_in_revision, 0));
        entry.1 += 1;
    }
    assert!(revisions.len() >= 3, "{revisions:?}");
    for ((week, revision), (said, got)) in &revisions {
        assert_eq!(*said as usize, *got, "{week} revision {revision}");
    }
}

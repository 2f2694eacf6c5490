//! `skolflode produce` killed with SIGKILL at random points, twenty times,
//! then run to the end: nothing lost, nothing duplicated.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use skolflode_producers::pseudonym::Pseudonymiser;
use skolflode_producers::runner;
use skolflode_schemas::catalogue;
use skolflode_schemas::entities::Attendance;
use skolflode_simulator::config::Evolution;
use skolflode_simulator::sim::Simulation;
use skolflode_simulator::SimConfig;
use skolflode_testkit::kafka::Isolation;
use skolflode_testkit::pipeline::{differences, replay_all, Vendor};
use skolflode_testkit::{unique, Scratch, TestKafka};

const KILLS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_points_loses_and_duplicates_nothing() {
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let evolution = Evolution {
        teacher_reassignments_per_activity_and_term: 0.5,
        teacher_departures_per_term: 0.3,
        ..Evolution::default()
    };
    let mut sim = Simulation::new(
        SimConfig {
            evolution,
            ..SimConfig::default()
        },
        None,
    )
    .unwrap();
    sim.advance_to(chrono::NaiveDate::from_ymd_opt(2025, 9, 8).unwrap())
        .unwrap();
    let vendor = Vendor::serve(sim).await.unwrap();

    let dir = Scratch::new("produce-kill").unwrap();
    let key = "a pseudonym key for the kill test, long enough";
    std::fs::write(dir.join("key"), key).unwrap();
    let name = unique("kill");
    let config = format!(
        r#"pseudonym_key_file = "{key_file}"

[kafka]
bootstrap_servers = "{bootstrap}"

[[connections]]
name = "{name}"
poll_interval_secs = 1
full_read_every = 2
overlap_secs = 3600
# Small transactions: many commits for the kills to land between and in.
max_transaction_records = 300

[connections.client]
base_url = "{url}/ss12000/v2"
token_url = "{url}/oauth2/token"
client_id = "skolflode"
client_secret = "simulated-secret"
page_limit = 100
backoff_base_ms = 5
backoff_max_ms = 50
"#,
        key_file = dir.join("key").display(),
        bootstrap = kafka.config().bootstrap_servers,
        url = vendor.url,
    );
    let config_path = dir.join("produce.toml");
    std::fs::write(&config_path, config).unwrap();
    let binary = env!("CARGO_BIN_EXE_skolflode");
    let log = |round: usize| std::fs::File::create(dir.join(format!("round-{round}.log"))).unwrap();

    let mut rng = StdRng::seed_from_u64(20_261_127);
    for round in 0..KILLS {
        let mut child = Command::new(binary)
            .args(["produce", "--config"])
            .arg(&config_path)
            .env("KAFKA_BOOTSTRAP", &kafka.config().bootstrap_servers)
            // What a SIGKILL leaves (side stores) goes with the test's dir.
            .env("TMPDIR", dir.path())
            .stdout(Stdio::null())
            .stderr(log(round))
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(rng.random_range(800..4000))).await;
        child.kill().unwrap(); // SIGKILL: no chance to commit, abort or flush.
        child.wait().unwrap();
        if round % 4 == 3 {
            vendor.state.sim().advance_days(1).unwrap();
        }
    }
    let status = Command::new(binary)
        .args(["produce", "--once", "--config"])
        .arg(&config_path)
        .env("KAFKA_BOOTSTRAP", &kafka.config().bootstrap_servers)
        .env("TMPDIR", dir.path())
        .stdout(Stdio::null())
        .stderr(log(KILLS))
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the final run failed; logs in {}",
        dir.path().display()
    );

    let pseudonymiser = Pseudonymiser::new(key.as_bytes().to_vec()).unwrap();
    let (replayed, ids) = replay_all(&kafka, &name).await.unwrap();
    let diff = differences(&replayed, &vendor.view(&name, &pseudonymiser).unwrap());
    assert!(
        diff.is_empty(),
        "lost or stale after {KILLS} kills: {diff:?}"
    );
    // replay_all already fails on any repeated event (a second create, an
    // update whose before image is not the last version, a delete of what
    // is gone); unique ids say the same from the consumer's side.
    let unique_ids: HashSet<&String> = ids.iter().collect();
    assert_eq!(
        unique_ids.len(),
        ids.len(),
        "duplicated events after {KILLS} kills"
    );

    // The kills did land inside transactions: aborted records sit in the log.
    let topic = catalogue::change_topic::<Attendance>().unwrap().name;
    let raw = kafka
        .drain_keyed(
            topic,
            Isolation::ReadUncommitted,
            Duration::from_secs(120),
            &name,
        )
        .await
        .unwrap()
        .len();
    let committed = kafka
        .drain_keyed(
            topic,
            Isolation::ReadCommitted,
            Duration::from_secs(120),
            &name,
        )
        .await
        .unwrap()
        .len();
    eprintln!(
        "{KILLS} kills; {} events; attendance topic: {raw} records of this connection written, {committed} committed",
        ids.len()
    );
}

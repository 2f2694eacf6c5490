//! `skolflode produce` fed by files: SS 12000 exports dropped in a
//! directory while the producer is killed with SIGKILL at random points,
//! twenty times, then run to the end. Every delivery is ingested once: the
//! change topics end as the last delivery says, with no event repeated; a
//! file delivered again publishes nothing; a truncated file is quarantined
//! with its reason and one dead letter, and nothing of it is published.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use skolflode_producers::endpoint::Endpoint;
use skolflode_producers::pseudonym::Pseudonymiser;
use skolflode_producers::runner;
use skolflode_schemas::catalogue;
use skolflode_schemas::records::DeadLetter;
use skolflode_simulator::sim::Simulation;
use skolflode_simulator::SimConfig;
use skolflode_testkit::kafka::Isolation;
use skolflode_testkit::pipeline::{differences, replay_all, Vendor};
use skolflode_testkit::{unique, Scratch, TestKafka};

const KILLS: usize = 20;

/// Every endpoint's whole export as the simulated vendor stands, one file
/// each, `<endpoint>-<delivery>.json`; their paths.
fn deliver(sim: &Simulation, dir: &Path, delivery: usize) -> Vec<std::path::PathBuf> {
    let mut paths = Vec::new();
    for endpoint in Endpoint::ALL {
        let name = endpoint.name();
        let items: Vec<serde_json::Value> = (0..sim.storage_len(name).unwrap_or(0))
            .filter_map(|i| sim.render(name, i).map(|(_, item)| item))
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({ "data": items })).unwrap();
        // Written aside and renamed: the producer never sees half a file.
        let path = dir.join(format!("{name}-{delivery:03}.json"));
        let partial = dir.join(format!(".{name}-{delivery:03}.json.part"));
        std::fs::write(&partial, body).unwrap();
        std::fs::rename(&partial, &path).unwrap();
        paths.push(path);
    }
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_ingested_once_through_kills_and_broken_ones_quarantined() {
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let mut sim = Simulation::new(
        SimConfig {
            pupils: Some(1_000),
            ..SimConfig::default()
        },
        None,
    )
    .unwrap();
    sim.advance_to(chrono::NaiveDate::from_ymd_opt(2025, 9, 3).unwrap())
        .unwrap();
    let vendor = Vendor::serve(sim).await.unwrap();

    let dir = Scratch::new("produce-files").unwrap();
    let drop = dir.join("drop");
    std::fs::create_dir_all(&drop).unwrap();
    let key = "a pseudonym key for the file test, long enough";
    std::fs::write(dir.join("key"), key).unwrap();
    let name = unique("files");
    let config = format!(
        r#"pseudonym_key_file = "{key_file}"

[kafka]
bootstrap_servers = "{bootstrap}"

[[connections]]
name = "{name}"
poll_interval_secs = 1
deletion_feed = false
# Small transactions: many commits for the kills to land between and in.
max_transaction_records = 300

[connections.files]
dir = "{drop}"
settle_secs = 0
"#,
        key_file = dir.join("key").display(),
        bootstrap = kafka.config().bootstrap_servers,
        drop = drop.display(),
    );
    let config_path = dir.join("produce.toml");
    std::fs::write(&config_path, config).unwrap();
    let binary = env!("CARGO_BIN_EXE_skolflode");
    let log = |round: usize| std::fs::File::create(dir.join(format!("round-{round}.log"))).unwrap();

    let mut delivery = 1;
    let first = deliver(&vendor.state.sim(), &drop, delivery);
    // A delivery of persons cut in half: not JSON.
    let persons = std::fs::read(&first[1]).unwrap();
    let attendances = std::fs::read(&first[7]).unwrap();
    std::fs::write(
        drop.join("persons-000-cut.json"),
        &persons[..persons.len() / 2],
    )
    .unwrap();
    let mut rng = StdRng::seed_from_u64(20_261_208);
    for round in 0..KILLS {
        let mut child = Command::new(binary)
            .args(["produce", "--config"])
            .arg(&config_path)
            .env("KAFKA_BOOTSTRAP", &kafka.config().bootstrap_servers)
            .env("TMPDIR", dir.path())
            .stdout(Stdio::null())
            .env("RUST_LOG", "info")
            .stderr(log(round))
            .spawn()
            .unwrap();
        if round % 2 == 0 {
            // Just after a file is in: inside the next one's transactions.
            let log = dir.join(format!("round-{round}.log"));
            for _ in 0..200 {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains("file ingested") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..150))).await;
        } else {
            tokio::time::sleep(Duration::from_millis(rng.random_range(500..2500))).await;
        }
        child.kill().unwrap(); // SIGKILL: no chance to commit, abort or flush.
        child.wait().unwrap();
        if round % 2 == 1 {
            vendor.state.sim().advance_days(1).unwrap();
            delivery += 1;
            deliver(&vendor.state.sim(), &drop, delivery);
        }
    }
    // The first delivery of attendance records again, under another name,
    // after the last: ingested, it would delete every record reported
    // since the first day.
    let again = drop.join(format!("attendances-{:03}-again.json", delivery + 1));
    std::fs::write(&again, &attendances).unwrap();
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

    // Every delivery went: the broken one to quarantine, the rest done.
    let left: Vec<String> = std::fs::read_dir(&drop)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "not ingested: {left:?}");
    let reason =
        std::fs::read_to_string(drop.join("quarantine/persons-000-cut.json.reason.txt")).unwrap();
    assert!(
        reason.contains("not ingested") && reason.contains("JSON"),
        "{reason}"
    );
    assert!(drop.join("quarantine/persons-000-cut.json").is_file());
    let done = std::fs::read_dir(drop.join("done")).unwrap().count();
    assert_eq!(done, Endpoint::ALL.len() * delivery + 1);

    // The change topics say what the last delivery says, each change once.
    let pseudonymiser = Pseudonymiser::new(key.as_bytes().to_vec()).unwrap();
    let (replayed, ids) = replay_all(&kafka, &name).await.unwrap();
    let diff = differences(&replayed, &vendor.view(&name, &pseudonymiser).unwrap());
    assert!(
        diff.is_empty(),
        "lost, stale or taken back after {KILLS} kills: {diff:?}"
    );
    let unique_ids: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique_ids.len(), ids.len(), "duplicated events");
    assert!(ids.len() > 1_000, "{} events", ids.len());

    // The kills did land inside transactions: aborted records sit in the
    // log beside the committed ones.
    let (mut written, mut committed) = (0, 0);
    for topic in catalogue::TOPICS
        .iter()
        .filter(|t| t.value.ends_with("Change"))
    {
        for (isolation, count) in [
            (Isolation::ReadUncommitted, &mut written),
            (Isolation::ReadCommitted, &mut committed),
        ] {
            *count += kafka
                .drain_keyed(topic.name, isolation, Duration::from_secs(120), &name)
                .await
                .unwrap()
                .len();
        }
    }
    assert!(
        written > committed,
        "{written} written, {committed} committed"
    );

    // One dead letter for the broken file, whatever the kills did.
    let letters: Vec<DeadLetter> = kafka
        .drain_keyed(
            catalogue::DEAD_LETTERS,
            Isolation::ReadCommitted,
            Duration::from_secs(60),
            &name,
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let (_, body) = skolflode_schemas::wire::split(r.payload.as_deref().unwrap()).unwrap();
            <DeadLetter as skolflode_schemas::AvroType>::decode_all(body).unwrap()
        })
        .collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(letters[0].reason.contains("not ingested"), "{letters:?}");
    eprintln!(
        "{KILLS} kills, {delivery} deliveries of {} files; {} events; change topics: {written} records written, {committed} committed",
        Endpoint::ALL.len(),
        ids.len()
    );
}

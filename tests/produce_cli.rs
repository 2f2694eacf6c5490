//! `skolflode produce --once` as an operator runs it: with one vendor
//! misconfigured beside a good one, the good one is read, the run's summary
//! names the bad one and what to change, the exit status says partial
//! failure, and a normal start logs no error or configuration warning.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use skolflode_producers::runner;
use skolflode_simulator::sim::Simulation;
use skolflode_simulator::SimConfig;
use skolflode_testkit::pipeline::Vendor;
use skolflode_testkit::{unique, Scratch, TestKafka};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misconfigured_vendor_is_a_partial_failure_that_says_what_to_fix() {
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let mut sim = Simulation::new(SimConfig::default(), None).unwrap();
    sim.advance_to(chrono::NaiveDate::from_ymd_opt(2025, 9, 8).unwrap())
        .unwrap();
    let vendor = Vendor::serve(sim).await.unwrap();
    let dir = Scratch::new("produce-cli").unwrap();
    std::fs::write(
        dir.join("key"),
        "a pseudonym key for the CLI test, long enough",
    )
    .unwrap();
    let (good, bad) = (unique("cli-good"), unique("cli-bad"));
    let config = format!(
        r#"pseudonym_key_file = "{key}"

[kafka]
bootstrap_servers = "{bootstrap}"

[[connections]]
name = "{bad}"
[connections.client]
base_url = "{url}/ss12000/v1"
token_url = "{url}/oauth2/token"
client_id = "skolflode"
client_secret = "simulated-secret"

[[connections]]
name = "{good}"
[connections.client]
base_url = "{url}/ss12000/v2"
token_url = "{url}/oauth2/token"
client_id = "skolflode"
client_secret = "simulated-secret"
"#,
        key = dir.join("key").display(),
        bootstrap = kafka.config().bootstrap_servers,
        url = vendor.url,
    );
    std::fs::write(dir.join("produce.toml"), config).unwrap();
    let binary = env!("CARGO_BIN_EXE_skolflode");
    let run = || {
        let dir = dir.path().to_owned();
        tokio::task::spawn_blocking(move || {
            Command::new(binary)
                .args(["produce", "--once", "--config"])
                .arg(dir.join("produce.toml"))
                .env("RUST_LOG", "info")
                .env("TMPDIR", &dir)
                .env_remove("KAFKA_BOOTSTRAP")
                .output()
                .unwrap()
        })
    };
    let output = run().await.unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("connection={name} ")))
            .unwrap_or_else(|| panic!("no line for {name}: {stdout}"))
            .to_owned()
    };
    assert!(!line(&good).contains(" events=0 "), "{stdout}");
    assert!(line(&bad).contains(" events=0 "), "{stdout}");
    let summary: Vec<&str> = stderr
        .lines()
        .skip_while(|l| !l.starts_with("summary:"))
        .collect();
    assert!(
        summary
            .iter()
            .any(|l| l.contains(&bad) && l.contains("check base_url")),
        "{stderr}"
    );
    assert!(!summary.iter().any(|l| l.contains(&good)), "{stderr}");
    // Nothing alarming from a normal start: no ERROR line (librdkafka's
    // end-of-partition included), no warning about our own settings, no
    // colour codes in a log that goes to a file.
    for noise in [" ERROR ", "PartitionEOF", "CONFWARN", "\u{1b}["] {
        assert!(!stderr.contains(noise), "{noise:?} in {stderr}");
    }

    // Run again: the good connection's state is restored, nothing new.
    let again = run().await.unwrap();
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        stdout.contains(&format!("connection={good} events=0 ")),
        "{stdout}"
    );
}

//! `skolflode produce` as a service through what operators live with: a
//! SIGTERM while a vendor is stuck, and the broker gone for longer than a
//! transaction may stay open. Nothing lost, nothing duplicated, and no
//! restart of the process needed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use axum::routing::get;
use skolflode_kafka::KafkaConfig;
use skolflode_producers::pseudonym::Pseudonymiser;
use skolflode_producers::runner;
use skolflode_schemas::catalogue::HEARTBEATS;
use skolflode_schemas::records::Heartbeat;
use skolflode_simulator::sim::Simulation;
use skolflode_simulator::SimConfig;
use skolflode_testkit::pipeline::{differences, replay_all, serve_vendor, Vendor};
use skolflode_testkit::{unique, Scratch, TestKafka};

const KEY: &str = "a pseudonym key for the outage tests, long enough";

async fn simulator() -> Vendor {
    let mut sim = Simulation::new(SimConfig::default(), None).unwrap();
    sim.advance_to(chrono::NaiveDate::from_ymd_opt(2025, 9, 8).unwrap())
        .unwrap();
    Vendor::serve(sim).await.unwrap()
}

/// A vendor whose answers trickle in a byte a second for ten minutes.
async fn stuck_vendor() -> String {
    let app = axum::Router::new().fallback(get(|| async {
        let trickle = futures_util::stream::unfold(0u32, |n| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            (n < 600).then(|| (Ok::<_, std::io::Error>(vec![b' ']), n + 1))
        });
        (
            [("content-type", "application/json")],
            axum::body::Body::from_stream(trickle),
        )
            .into_response()
    }));
    serve_vendor(app).await.unwrap()
}

fn connection(name: &str, url: &str, request_timeout_ms: u64) -> String {
    format!(
        r#"
[[connections]]
name = "{name}"
poll_interval_secs = 1
full_read_every = 2
overlap_secs = 3600
max_transaction_records = 300

[connections.client]
base_url = "{url}/ss12000/v2"
token_url = "{url}/oauth2/token"
client_id = "skolflode"
client_secret = "simulated-secret"
page_limit = 100
backoff_base_ms = 5
backoff_max_ms = 50
request_timeout_ms = {request_timeout_ms}
"#
    )
}

fn write_config(dir: &Path, file: &str, bootstrap: &str, connections: &[String]) -> PathBuf {
    std::fs::write(dir.join("key"), KEY).unwrap();
    let text = format!(
        "pseudonym_key_file = \"{}\"\nshutdown_grace_secs = 10\n\n[kafka]\nbootstrap_servers = \"{bootstrap}\"\n{}",
        dir.join("key").display(),
        connections.concat()
    );
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

fn produce(config: &Path, bootstrap: &str, log: &Path, once: bool) -> Child {
    let mut args = vec!["produce"];
    if once {
        args.push("--once");
    }
    Command::new(env!("CARGO_BIN_EXE_skolflode"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("KAFKA_BOOTSTRAP", bootstrap)
        .env("RUST_LOG", "info")
        // What a SIGKILL leaves (side stores) goes with the test's dir.
        .env("TMPDIR", config.parent().unwrap_or(config))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Wait for the child to exit, at most `within`.
async fn exit_within(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > within {
            let _ = child.kill();
            panic!("the producer did not exit within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until connection `name` has committed `n` heartbeats.
async fn heartbeats(kafka: &TestKafka, name: &str, n: usize, within: Duration) {
    let started = Instant::now();
    loop {
        let beats: Vec<Heartbeat> = kafka.committed(HEARTBEATS, name).await.unwrap();
        if beats.len() >= n {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{name}: {} heartbeats after {within:?}",
            beats.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The topics replay to what the vendor shows, and no event repeats.
async fn check_published(kafka: &TestKafka, vendor: &Vendor, name: &str) -> Vec<String> {
    let pseudonymiser = Pseudonymiser::new(KEY.as_bytes().to_vec()).unwrap();
    let (replayed, ids) = replay_all(kafka, name).await.unwrap();
    let unique_ids: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique_ids.len(), ids.len(), "duplicated events");
    differences(&replayed, &vendor.view(name, &pseudonymiser).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_producer_stuck_on_a_slow_vendor_within_the_grace_period() {
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let vendor = simulator().await;
    let stuck = stuck_vendor().await;
    let dir = Scratch::new("produce-sigterm").unwrap();
    let bootstrap = kafka.config().bootstrap_servers.clone();
    let (good, slow) = (unique("sigterm-good"), unique("sigterm-stuck"));
    let good_connection = connection(&good, &vendor.url, 30_000);
    let both = write_config(
        dir.path(),
        "both.toml",
        &bootstrap,
        &[good_connection.clone(), connection(&slow, &stuck, 600_000)],
    );
    let mut child = produce(&both, &bootstrap, &dir.join("service.log"), false);
    // The good connection polls on while the other waits on its vendor.
    heartbeats(&kafka, &good, 2, Duration::from_secs(120)).await;
    vendor.state.sim().advance_days(1).unwrap();
    sigterm(&child);
    let stopped = Instant::now();
    let status = exit_within(&mut child, Duration::from_secs(20)).await;
    let log = std::fs::read_to_string(dir.join("service.log")).unwrap_or_default();
    assert!(status.success(), "{status}: {log}");
    assert!(
        stopped.elapsed() < Duration::from_secs(12),
        "stopped after {:?}, beyond the grace period of 10 s: {log}",
        stopped.elapsed()
    );

    // Started again, the good connection reads on to what the vendor
    // shows: nothing lost, nothing twice.
    let alone = write_config(dir.path(), "good.toml", &bootstrap, &[good_connection]);
    let mut again = produce(&alone, &bootstrap, &dir.join("once.log"), true);
    let status = exit_within(&mut again, Duration::from_secs(300)).await;
    assert!(status.success(), "{status}");
    let diff = check_published(&kafka, &vendor, &good).await;
    assert!(diff.is_empty(), "{diff:?}");
}

/// A broker of this test's own, on its own port and storage, that the test
/// stops and starts again with `scripts/kafka`.
struct OwnBroker {
    run: PathBuf,
    port: u16,
}

impl OwnBroker {
    fn script(&self, command: &str) {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let output = Command::new(repo.join("scripts/kafka"))
            .arg(command)
            .env("KAFKA_PORT", self.port.to_string())
            .env("SKOLFLODE_RUN", &self.run)
            .env("KAFKA_HEAP", "512m")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "scripts/kafka {command}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        self.script("purge");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_longer_than_a_transaction_may_stay_open_is_survived() {
    let broker = OwnBroker {
        run: std::env::temp_dir().join(unique("outage-broker")),
        port: 19_092,
    };
    broker.script("start");
    let config = KafkaConfig {
        bootstrap_servers: broker.bootstrap(),
        ..KafkaConfig::default()
    };
    let kafka = TestKafka::connect_to(config, Duration::from_secs(60))
        .await
        .unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let vendor = simulator().await;
    let dir = Scratch::new("produce-outage").unwrap();
    let name = unique("outage");
    let path = write_config(
        dir.path(),
        "produce.toml",
        &broker.bootstrap(),
        &[connection(&name, &vendor.url, 30_000)],
    );
    let mut child = produce(&path, &broker.bootstrap(), &dir.join("service.log"), false);
    heartbeats(&kafka, &name, 2, Duration::from_secs(120)).await;

    // The vendor changes while the broker is away for longer than the
    // producer's transactions may stay open (30 s).
    broker.script("stop");
    vendor.state.sim().advance_days(1).unwrap();
    tokio::time::sleep(Duration::from_secs(40)).await;
    vendor.state.sim().advance_days(1).unwrap();
    broker.script("resume");
    assert!(
        child.try_wait().unwrap().is_none(),
        "the producer exited during the outage"
    );

    // The same process catches up with the vendor.
    let started = Instant::now();
    loop {
        let diff = check_published(&kafka, &vendor, &name).await;
        if diff.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "not caught up after the outage: {diff:?}; log in {}",
            dir.path().display()
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    sigterm(&child);
    let status = exit_within(&mut child, Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(dir.join("service.log")).unwrap_or_default();
    eprintln!(
        "outage survived; restarts logged: {}",
        log.matches("restarting in").count()
    );
}

//! One `skolflode produce --once` process reading the simulator beside a
//! vendor that does everything wrong, one connection per misbehaviour:
//! the simulator's connection publishes what the vendor shows, exactly
//! once; every hostile connection ends in bounded time with a dead letter
//! or an error that says what happened; memory stays bounded; nothing
//! panics.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use skolflode_producers::pseudonym::Pseudonymiser;
use skolflode_producers::runner;
use skolflode_schemas::catalogue::DEAD_LETTERS;
use skolflode_schemas::records::DeadLetter;
use skolflode_simulator::sim::Simulation;
use skolflode_simulator::SimConfig;
use skolflode_testkit::pipeline::{differences, lesson, replay_all, serve_vendor, Vendor};
use skolflode_testkit::{unique, Scratch, TestKafka};

const KEY: &str = "a pseudonym key for the hostile-vendor test, long enough";
/// What the process may hold at its peak, with a 50 MB item among its
/// pages.
const PEAK_BOUND_KIB: u64 = 768 << 10;

fn json_body(body: impl Into<axum::body::Body>) -> Response {
    ([("content-type", "application/json")], body.into()).into_response()
}

/// Every misbehaviour of the table in the issue, each under its own base
/// (`/{behaviour}/ss12000/v2/calendarEvents`).
async fn hostile_vendor() -> String {
    let mut big = lesson("huge");
    big["description"] = json!("x".repeat(50 << 20));
    let huge = Arc::new(json!({ "data": [lesson("before"), big, lesson("after")] }).to_string());
    let app = axum::Router::new().route(
        "/{behaviour}/ss12000/v2/calendarEvents",
        get(
            move |Path(behaviour): Path<String>, Query(q): Query<HashMap<String, String>>| {
                let huge = Arc::clone(&huge);
                async move {
                    let token = q.get("pageToken").cloned();
                    match behaviour.as_str() {
                        "truncated" => json_body(r#"{"data":[{"id":"l1","meta":{"#),
                        "latin1" => json_body(b"{\"data\":[{\"id\":\"K\xf6k\"}]}".to_vec()),
                        "failing" => (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response(),
                        "huge" => json_body(huge.as_str().to_owned()),
                        "looping" => {
                            let n: u32 = token
                                .and_then(|t| t.trim_start_matches('t').parse().ok())
                                .unwrap_or(0);
                            let next = if n >= 3 { 2 } else { n + 1 };
                            let data: Vec<_> =
                                (0..50).map(|i| lesson(&format!("l{n}-{i}"))).collect();
                            json_body(
                                json!({ "data": data, "pageToken": format!("t{next}") })
                                    .to_string(),
                            )
                        }
                        "limiting" => (
                            StatusCode::TOO_MANY_REQUESTS,
                            [("retry-after", "999999")],
                            "slow down",
                        )
                            .into_response(),
                        "trickling" => {
                            let trickle = futures_util::stream::unfold(0u32, |n| async move {
                                tokio::time::sleep(Duration::from_millis(500)).await;
                                (n < 1200).then(|| (Ok::<_, std::io::Error>(vec![b' ']), n + 1))
                            });
                            json_body(axum::body::Body::from_stream(trickle))
                        }
                        _ => (StatusCode::NOT_FOUND, "no such behaviour").into_response(),
                    }
                }
            },
        ),
    );
    serve_vendor(app).await.unwrap()
}

fn connection(name: &str, base_url: &str, token_url: &str, hostile: bool) -> String {
    let limits = if hostile {
        "endpoints = [\"calendarEvents\"]\ndeletion_feed = false\n"
    } else {
        ""
    };
    let client_limits = if hostile {
        "max_retries = 3\nrequest_timeout_ms = 2000\nretry_after_max_secs = 2\nmax_request_secs = 10\n"
    } else {
        ""
    };
    format!(
        r#"
[[connections]]
name = "{name}"
full_read_every = 2
overlap_secs = 3600
max_transaction_records = 300
{limits}
[connections.client]
base_url = "{base_url}"
token_url = "{token_url}"
client_id = "skolflode"
client_secret = "simulated-secret"
page_limit = 100
backoff_base_ms = 5
backoff_max_ms = 50
{client_limits}"#
    )
}

/// The peak resident memory of a running process so far, in KiB.
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_vendor_beside_the_simulator_harms_nothing() {
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let mut sim = Simulation::new(SimConfig::default(), None).unwrap();
    sim.advance_to(chrono::NaiveDate::from_ymd_opt(2025, 9, 8).unwrap())
        .unwrap();
    let vendor = Vendor::serve(sim).await.unwrap();
    let hostile = hostile_vendor().await;
    let closed = {
        // A port nothing listens on.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let good = unique("beside-good");
    let token = format!("{hostile}/oauth2/token");
    // (behaviour, base URL, what its error or dead letter must say)
    let behaviours: Vec<(&str, String, &str)> = vec![
        (
            "truncated",
            format!("{hostile}/truncated/ss12000/v2"),
            "not JSON",
        ),
        (
            "latin1",
            format!("{hostile}/latin1/ss12000/v2"),
            "not UTF-8",
        ),
        ("failing", format!("{hostile}/failing/ss12000/v2"), "500"),
        (
            "huge",
            format!("{hostile}/huge/ss12000/v2"),
            "max_item_bytes",
        ),
        (
            "looping",
            format!("{hostile}/looping/ss12000/v2"),
            "page token",
        ),
        ("limiting", format!("{hostile}/limiting/ss12000/v2"), "429"),
        (
            "trickling",
            format!("{hostile}/trickling/ss12000/v2"),
            "timed out",
        ),
        (
            "refusing",
            format!("http://127.0.0.1:{closed}/ss12000/v2"),
            "refused",
        ),
        (
            "unresolvable",
            "http://no-such-vendor.invalid/ss12000/v2".to_owned(),
            "cannot be resolved",
        ),
        (
            "schemeless",
            "hostile.example/ss12000/v2".to_owned(),
            "not a URL",
        ),
        (
            "tls-to-http",
            format!("{}/ss12000/v2", hostile.replace("http://", "https://")),
            "https against http",
        ),
    ];
    let names: Vec<String> = behaviours
        .iter()
        .map(|(b, _, _)| unique(&format!("hostile-{b}")))
        .collect();
    let mut connections = vec![connection(
        &good,
        &format!("{}/ss12000/v2", vendor.url),
        &format!("{}/oauth2/token", vendor.url),
        false,
    )];
    for ((behaviour, url, _), name) in behaviours.iter().zip(&names) {
        let token = match *behaviour {
            // TLS spoken to the plain-HTTP token endpoint, too.
            "tls-to-http" => token.replace("http://", "https://"),
            _ => token.clone(),
        };
        connections.push(connection(name, url, &token, true));
    }
    let dir = Scratch::new("beside-hostile").unwrap();
    std::fs::write(dir.join("key"), KEY).unwrap();
    let config = format!(
        "pseudonym_key_file = \"{}\"\n\n[kafka]\nbootstrap_servers = \"{}\"\n{}",
        dir.join("key").display(),
        kafka.config().bootstrap_servers,
        connections.concat()
    );
    std::fs::write(dir.join("produce.toml"), config).unwrap();

    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_skolflode"))
        .args(["produce", "--once", "--config"])
        .arg(dir.join("produce.toml"))
        .env("KAFKA_BOOTSTRAP", &kafka.config().bootstrap_servers)
        .env("RUST_LOG", "info")
        .env("TMPDIR", dir.path())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("produce.log")).unwrap())
        .spawn()
        .unwrap();
    let mut peak = 0;
    let status = loop {
        if let Some(p) = peak_kib(child.id()) {
            peak = peak.max(p);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "the run did not end within 240 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    let log = std::fs::read_to_string(dir.join("produce.log")).unwrap();
    assert!(!log.contains("panicked"), "{log}");
    // Some connections failed, the run went on: exit status 2.
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(peak > 0 && peak < PEAK_BOUND_KIB, "peak {peak} KiB");

    // The simulator's connection: what the vendor shows, once.
    let pseudonymiser = Pseudonymiser::new(KEY.as_bytes().to_vec()).unwrap();
    let (replayed, ids) = replay_all(&kafka, &good).await.unwrap();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
    let diff = differences(&replayed, &vendor.view(&good, &pseudonymiser).unwrap());
    assert!(diff.is_empty(), "{diff:?}");

    // Each hostile connection: its dead letter or its error, said plainly.
    for ((behaviour, _, says), name) in behaviours.iter().zip(&names) {
        let letters: Vec<DeadLetter> = kafka.committed(DEAD_LETTERS, name).await.unwrap();
        let summary: Vec<&str> = log
            .lines()
            .filter(|l| l.trim_start().starts_with(&format!("{name}:")))
            .collect();
        let said = letters.iter().any(|l| l.reason.contains(says))
            || summary.iter().any(|l| l.contains(says));
        assert!(
            said,
            "{behaviour}: neither a dead letter nor an error says {says:?}: {letters:?} {summary:?}"
        );
    }
    eprintln!(
        "{} hostile connections beside the simulator: {seconds:.1} s, peak {} MiB",
        names.len(),
        peak / 1024
    );
}

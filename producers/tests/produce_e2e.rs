//! The producer against the simulator and the real Kafka broker: after
//! every poll, replaying the change topics gives exactly what the vendor
//! showed at that poll; faults and malformed pages lose nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;

use skolflode_producers::endpoint::Endpoint;
use skolflode_producers::metrics::Metrics;
use skolflode_producers::pseudonym::Pseudonymiser;
use skolflode_producers::runner::{self, ConnectionConfig, Runner};
use skolflode_producers::seal::{SealConfig, Sealer};
use skolflode_schemas::catalogue::{DEAD_LETTERS, HEARTBEATS};
use skolflode_schemas::records::{DeadLetter, Heartbeat};
use skolflode_simulator::config::{Evolution, Faults};
use skolflode_simulator::sim::Simulation;
use skolflode_simulator::SimConfig;
use skolflode_testkit::pipeline::{differences, replay_all, Vendor};
use skolflode_testkit::{unique, TestKafka};

const SECRET: &[u8] = b"the producer end-to-end test's pseudonym key";

async fn vendor(config: SimConfig) -> Vendor {
    let mut sim = Simulation::new(config, None).unwrap();
    sim.advance_to(chrono::NaiveDate::from_ymd_opt(2025, 8, 18).unwrap())
        .unwrap();
    Vendor::serve(sim).await.unwrap()
}

fn connection(name: &str, url: &str) -> ConnectionConfig {
    let client = skolflode_testkit::term::client(url, 200);
    ConnectionConfig {
        poll_interval_secs: 1,
        full_read_every: 3,
        overlap_secs: 3600,
        max_transaction_records: 500,
        ..ConnectionConfig::new(name, client)
    }
}

/// A sealer for dead letters, and the identity that opens them.
fn sealer() -> (Arc<Sealer>, age::x25519::Identity) {
    let identity = age::x25519::Identity::generate();
    let config = SealConfig {
        age_recipients: vec![identity.to_public().to_string()],
    };
    (Arc::new(config.build().unwrap()), identity)
}

/// A runner reading one endpoint, without the deletion feed, that gives
/// up on a bad page after one retry; dead letters sealed with `sealer`.
async fn one_endpoint_runner(
    kafka: &TestKafka,
    name: &str,
    url: &str,
    endpoint: Endpoint,
    sealer: Arc<Sealer>,
) -> Runner {
    let mut config = connection(name, url);
    config.client.max_retries = 1;
    config.endpoints = vec![endpoint];
    config.deletion_feed = false;
    let pseudonymiser = Arc::new(Pseudonymiser::new(SECRET).unwrap());
    Runner::start_sealed(config, kafka.config(), pseudonymiser, sealer)
        .await
        .unwrap()
}

/// The committed dead letters of connection `name`, in order.
async fn dead_letters(kafka: &TestKafka, name: &str) -> Vec<DeadLetter> {
    kafka.committed(DEAD_LETTERS, name).await.unwrap()
}

async fn check(kafka: &TestKafka, vendor: &Vendor, name: &str, p: &Pseudonymiser, when: &str) {
    let (replayed, ids) = replay_all(kafka, name).await.unwrap();
    let diff = differences(&replayed, &vendor.view(name, p).unwrap());
    assert!(diff.is_empty(), "{when}: {diff:?}");
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        ids.len(),
        "{when}: duplicated events"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_topics_gives_what_the_vendor_showed_at_each_poll() {
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let faults = Faults {
        server_errors: 0.05,
        rate_limited: 0.05,
        retry_after_secs: 0,
        repeated_items: 0.05,
        expired_tokens: 0.05,
        ..Faults::default()
    };
    let evolution = Evolution {
        teacher_reassignments_per_activity_and_term: 0.5,
        teacher_departures_per_term: 0.3,
        class_moves_per_pupil_and_term: 0.1,
        ..Default::default()
    };
    let vendor = vendor(SimConfig {
        faults,
        evolution,
        ..SimConfig::default()
    })
    .await;
    let name = unique("e2e");
    let pseudonymiser = Arc::new(Pseudonymiser::new(SECRET).unwrap());
    let metrics = Arc::new(Metrics::new().unwrap());
    let mut runner = Runner::start(
        connection(&name, &vendor.url),
        kafka.config(),
        Arc::clone(&pseudonymiser),
    )
    .await
    .unwrap()
    .with_metrics(Arc::clone(&metrics));
    for step in 0..6 {
        if step > 0 {
            vendor.state.sim().advance_days(4).unwrap();
        }
        runner.poll().await.unwrap();
        check(
            &kafka,
            &vendor,
            &name,
            &pseudonymiser,
            &format!("poll {step}"),
        )
        .await;
    }
    let stats = runner.stats().clone();
    let exposed = metrics.render();
    let snapshots = stats.events.get("SNAPSHOT_READ").copied().unwrap_or(0);
    assert!(
        exposed.contains(&format!("skolflode_producer_events_total{{connection=\"{name}\",op=\"SNAPSHOT_READ\"}} {snapshots}")),
        "{exposed}"
    );
    for metric in [
        "skolflode_producer_transactions_total",
        "skolflode_producer_requests_total",
        "skolflode_producer_polls_total",
        "skolflode_producer_held_entities",
        "skolflode_producer_transaction_duration_seconds_bucket",
        "skolflode_producer_wait_seconds_total{connection=",
    ] {
        assert!(exposed.contains(metric), "{metric} missing");
    }
    assert!(!exposed.contains("civic"), "metrics name no personal data");

    // One heartbeat per poll, each saying the reads succeeded.
    let beats: Vec<Heartbeat> = kafka.committed(HEARTBEATS, &name).await.unwrap();
    assert_eq!(beats.len(), 6);
    assert!(beats.iter().all(|h| h.ok && h.server_time.is_some()));
    assert_eq!(
        beats.iter().map(|h| h.events as u64).sum::<u64>(),
        stats.events.values().sum::<u64>()
    );
    for op in ["SNAPSHOT_READ", "CREATE", "UPDATE", "DELETE"] {
        assert!(
            stats.events.get(op).copied().unwrap_or(0) > 0,
            "no {op}: {stats:?}"
        );
    }

    // A restarted producer rebuilds its state from the state topic alone and
    // publishes nothing for what it already published.
    drop(runner);
    let mut again = Runner::start(
        connection(&name, &vendor.url),
        kafka.config(),
        Arc::clone(&pseudonymiser),
    )
    .await
    .unwrap();
    assert!(again.held(Endpoint::Attendances) > 0);
    again.poll().await.unwrap();
    assert_eq!(
        again.stats().events.values().sum::<u64>(),
        0,
        "{:?}",
        again.stats()
    );
    vendor.state.sim().advance_days(3).unwrap();
    again.poll().await.unwrap();
    check(&kafka, &vendor, &name, &pseudonymiser, "after the restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_pages_go_to_the_dead_letter_topic_and_nothing_is_lost() {
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let vendor = vendor(SimConfig {
        faults: Faults {
            truncated_json: 1.0,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await;
    let name = unique("dlq");
    let (sealer, identity) = sealer();
    let mut runner =
        one_endpoint_runner(&kafka, &name, &vendor.url, Endpoint::Groups, sealer).await;
    assert!(runner.poll().await.is_err());
    let letters = dead_letters(&kafka, &name).await;
    assert_eq!(letters.len(), 1);
    assert!(letters[0].reason.contains("JSON"), "{}", letters[0].reason);
    assert_eq!(letters[0].raw_encryption.as_deref(), Some("age"));
    let raw = age::decrypt(&identity, &letters[0].raw.0).unwrap();
    assert!(raw.starts_with(b"{\"data\":["));

    // The vendor recovers; the next poll reads everything.
    vendor.state.sim().config.faults = Faults::default();
    runner.poll().await.unwrap();
    let (replayed, _) = replay_all(&kafka, &name).await.unwrap();
    assert_eq!(
        replayed["groups"].len(),
        vendor.state.sim().world.groups.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_deletion_feed_full_reads_find_what_was_deleted() {
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let config = SimConfig {
        evolution: Evolution {
            teacher_departures_per_term: 3.0,
            ..Evolution::default()
        },
        vendor: skolflode_simulator::config::VendorBehaviour {
            deletion_feed: false,
            end_date_memberships: false,
            ..Default::default()
        },
        ..SimConfig::default()
    };
    let vendor = vendor(config).await;
    let name = unique("nofeed");
    let pseudonymiser = Arc::new(Pseudonymiser::new(SECRET).unwrap());
    let mut connection = connection(&name, &vendor.url);
    connection.endpoints = vec![Endpoint::Duties, Endpoint::Groups, Endpoint::Activities];
    connection.full_read_every = 2;
    let mut runner = Runner::start(connection, kafka.config(), Arc::clone(&pseudonymiser))
        .await
        .unwrap();
    runner.poll().await.unwrap();
    let held = runner.held(Endpoint::Duties);
    vendor.state.sim().advance_days(14).unwrap();
    let gone = vendor
        .state
        .sim()
        .world
        .duties
        .iter()
        .filter(|d| d.deleted.is_some())
        .count();
    assert!(gone > 0, "no teacher left");
    assert!(
        vendor.state.sim().deletions.is_empty(),
        "the vendor announces nothing"
    );
    // The incremental poll cannot see deletions; the full read after it does.
    runner.poll().await.unwrap();
    runner.poll().await.unwrap();
    assert_eq!(runner.held(Endpoint::Duties), held - gone);
    assert!(runner.stats().events.get("DELETE").copied().unwrap_or(0) >= gone as u64);
    let (replayed, _) = replay_all(&kafka, &name).await.unwrap();
    let expected = vendor.view(&name, &pseudonymiser).unwrap();
    for endpoint in ["duties", "groups", "activities"] {
        assert_eq!(replayed[endpoint], expected[endpoint], "{endpoint}");
    }
}

/// A vendor whose first page holds one good lesson and two items that
/// cannot be understood, and whose second page is not UTF-8 until it
/// recovers.
async fn broken_vendor(recovered: Arc<std::sync::atomic::AtomicBool>) -> String {
    use axum::extract::Query;
    use axum::response::IntoResponse;
    use axum::routing::get;
    use serde_json::json;
    use std::collections::HashMap;
    use std::sync::atomic::Ordering;

    let lesson = |id: &str, end: &str| {
        json!({
            "id": id,
            "meta": { "created": "2025-09-01T06:00:00+02:00", "modified": "2025-09-01T06:00:00+02:00" },
            "activity": { "id": "a1" },
            "startTime": "2025-09-08T08:10:00+02:00",
            "endTime": end,
        })
    };
    let first = json!({
        "data": [
            lesson("l1", "2025-09-08T09:10:00+02:00"),
            lesson("l2", "half past eight"),
            [1, 2],
        ],
        "pageToken": "p2",
    })
    .to_string();
    let second = json!({ "data": [lesson("l3", "2025-09-08T10:10:00+02:00")] }).to_string();
    let app = axum::Router::new().route(
        "/ss12000/v2/calendarEvents",
        get(move |Query(q): Query<HashMap<String, String>>| {
            let (first, second) = (first.clone(), second.clone());
            let recovered = Arc::clone(&recovered);
            async move {
                let body: Vec<u8> = match q.get("pageToken") {
                    None => first.into_bytes(),
                    Some(_) if recovered.load(Ordering::SeqCst) => second.into_bytes(),
                    // Latin-1 where UTF-8 belongs.
                    Some(_) => b"{\"data\":[{\"id\":\"l3\",\"note\":\"K\xf6k\"}]}".to_vec(),
                };
                ([("content-type", "application/json")], body).into_response()
            }
        }),
    );
    let url = skolflode_testkit::pipeline::serve_vendor(app)
        .await
        .unwrap();
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_and_invalid_utf8_go_to_the_dead_letter_topic_and_the_run_goes_on() {
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let recovered = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = broken_vendor(Arc::clone(&recovered)).await;
    let name = unique("broken");
    let (sealer, identity) = sealer();
    let mut runner =
        one_endpoint_runner(&kafka, &name, &url, Endpoint::CalendarEvents, sealer).await;

    // The page that is not UTF-8 fails the read; what came before it is
    // kept, and the bad items and the bad page are dead letters.
    let failed = runner.poll().await;
    assert!(failed.is_err());
    let letters = dead_letters(&kafka, &name).await;
    assert_eq!(letters.len(), 3, "{letters:?}");
    assert_eq!(letters[0].entity_id.as_deref(), Some("l2"));
    assert!(
        letters[0].reason.contains("endTime"),
        "{}",
        letters[0].reason
    );
    let open = |l: &DeadLetter| age::decrypt(&identity, &l.raw.0).unwrap();
    assert!(String::from_utf8_lossy(&open(&letters[0])).contains("half past eight"));
    // The redacted copy keeps the shape, ids and times; free text where a
    // time belongs is not kept.
    let redacted: serde_json::Value =
        serde_json::from_str(letters[0].redacted.as_deref().unwrap()).unwrap();
    assert_eq!(redacted["endTime"], "<redacted>");
    assert_eq!(redacted["startTime"], "2025-09-08T08:10:00+02:00");
    assert_eq!(redacted["activity"]["id"], "a1");
    assert!(
        letters[1].reason.contains("not a JSON object"),
        "{}",
        letters[1].reason
    );
    assert_eq!(open(&letters[1]), b"[1,2]");
    assert!(letters[2].reason.contains("UTF-8"), "{}", letters[2].reason);
    assert!(
        open(&letters[2]).ends_with(b"K\xf6k\"}]}"),
        "the page is kept byte for byte"
    );
    assert_eq!(letters[2].redacted, None, "not JSON: nothing to redact");
    let (replayed, _) = replay_all(&kafka, &name).await.unwrap();
    assert_eq!(
        replayed["calendarEvents"].keys().collect::<Vec<_>>(),
        vec!["l1"]
    );

    // The run goes on: once the vendor mends the page, the next poll reads it.
    recovered.store(true, std::sync::atomic::Ordering::SeqCst);
    runner.poll().await.unwrap();
    let (replayed, _) = replay_all(&kafka, &name).await.unwrap();
    let mut ids: Vec<&String> = replayed["calendarEvents"].keys().collect();
    ids.sort();
    assert_eq!(ids, vec!["l1", "l3"]);
    // The same broken items, served again (in every slice of the window,
    // by this vendor), are not dead-lettered again.
    runner.poll().await.unwrap();
    assert_eq!(dead_letters(&kafka, &name).await.len(), 3);
}

//! The producer against vendors that misbehave on purpose, served by small
//! in-process servers, with the real Kafka broker: reads that go round in
//! circles stop and publish nothing of the loop, waits are bounded,
//! timeouts are named, and a connection that cannot work says so at
//! start-up within seconds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Query;
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use skolflode_producers::endpoint::Endpoint;
use skolflode_producers::pseudonym::Pseudonymiser;
use skolflode_producers::runner::{self, ConnectionConfig, RunError, Runner};
use skolflode_producers::seal::SealConfig;
use skolflode_producers::ss12000::client::{ClientConfig, Filters, Secret, Ss12000Client};
use skolflode_simulator::sim::Simulation;
use skolflode_simulator::SimConfig;
use skolflode_testkit::kafka::Isolation;
use skolflode_testkit::pipeline::{lesson, serve_vendor, Vendor};
use skolflode_testkit::{unique, TestKafka};

const SECRET: &[u8] = b"the hostile-vendor test's pseudonym key";
const CALENDAR_CHANGES: &str = "skolflode.ss12000.calendar-event.changes";

/// A vendor of lessons whose paging never ends once `after` pages have
/// been read: the first `after` pages hold `per_page` fresh lessons each
/// and the last of them says there is no more, while `loops` is zero.
/// Then each read is served as `mode` says.
#[derive(Clone, Copy)]
enum Mode {
    /// Page tokens t1, t2, t3, then t2 again, for ever.
    RepeatedToken,
    /// A fresh token and fresh lessons on every page, for ever.
    Endless,
}

async fn looping_vendor(per_page: usize, mode: Mode, looping: Arc<AtomicUsize>) -> String {
    let served = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/ss12000/v2/calendarEvents",
        get(move |Query(q): Query<HashMap<String, String>>| {
            let (served, looping) = (Arc::clone(&served), Arc::clone(&looping));
            async move {
                let page: usize = q
                    .get("pageToken")
                    .and_then(|t| t.trim_start_matches('t').parse().ok())
                    .unwrap_or(0);
                let batch = served.fetch_add(1, Ordering::SeqCst);
                let ids: Vec<_> = (0..per_page)
                    .map(|i| lesson(&format!("l{batch}-{i}")))
                    .collect();
                let next = if looping.load(Ordering::SeqCst) == 0 {
                    None
                } else {
                    match mode {
                        Mode::RepeatedToken => Some(if page >= 3 { 2 } else { page + 1 }),
                        Mode::Endless => Some(page + 1),
                    }
                };
                let body = json!({ "data": ids, "pageToken": next.map(|n| format!("t{n}")) });
                ([("content-type", "application/json")], body.to_string()).into_response()
            }
        }),
    );
    serve_vendor(app).await.unwrap()
}

fn lessons_only(name: &str, url: &str) -> ConnectionConfig {
    lessons_at(name, url, "")
}

/// Lessons read from `{url}{prefix}/ss12000/v2`, the token from `url`.
fn lessons_at(name: &str, url: &str, prefix: &str) -> ConnectionConfig {
    let client = ClientConfig {
        base_url: format!("{url}{prefix}/ss12000/v2"),
        token_url: format!("{url}/oauth2/token"),
        client_id: "skolflode".into(),
        client_secret: Secret::new("any"),
        max_retries: 1,
        backoff_base_ms: 1,
        backoff_max_ms: 5,
        ..ClientConfig::default()
    };
    ConnectionConfig {
        endpoints: vec![Endpoint::CalendarEvents],
        deletion_feed: false,
        max_transaction_records: 100_000,
        // One slice: the whole window in one query.
        calendar_events: runner::CalendarWindow {
            past_weeks: 1,
            future_weeks: 1,
            slice_days: 28,
        },
        ..ConnectionConfig::new(name, client)
    }
}

/// Committed records of `topic` keyed by connection `name`.
async fn committed_of(kafka: &TestKafka, topic: &str, name: &str) -> usize {
    kafka
        .drain_keyed(
            topic,
            Isolation::ReadCommitted,
            Duration::from_secs(60),
            name,
        )
        .await
        .unwrap()
        .len()
}

async fn start(kafka: &TestKafka, config: ConnectionConfig) -> Result<Runner, RunError> {
    let pseudonymiser = Arc::new(Pseudonymiser::new(SECRET).unwrap());
    Runner::start(config, kafka.config(), pseudonymiser).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_token_seen_twice_stops_the_read_and_publishes_nothing_of_it() {
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let looping = Arc::new(AtomicUsize::new(1));
    let url = looping_vendor(5, Mode::RepeatedToken, Arc::clone(&looping)).await;
    let name = unique("token-loop");
    let mut runner = start(&kafka, lessons_only(&name, &url)).await.unwrap();

    let started = Instant::now();
    let failed = runner.poll().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(30));
    let text = failed.chain();
    assert!(text.contains("page token"), "{text}");
    assert!(text.contains("open transaction is aborted"), "{text}");
    assert_eq!(runner.held(Endpoint::CalendarEvents), 0);
    assert_eq!(runner.stats().events.values().sum::<u64>(), 0);
    assert_eq!(committed_of(&kafka, CALENDAR_CHANGES, &name).await, 0);

    // A vendor whose paging ends again is read as usual.
    looping.store(0, Ordering::SeqCst);
    runner.poll().await.unwrap();
    assert_eq!(runner.held(Endpoint::CalendarEvents), 5);
    assert_eq!(committed_of(&kafka, CALENDAR_CHANGES, &name).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_far_past_what_the_vendor_has_shown_is_stopped() {
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let looping = Arc::new(AtomicUsize::new(0));
    let url = looping_vendor(500, Mode::Endless, Arc::clone(&looping)).await;
    let name = unique("runaway");
    let mut config = lessons_only(&name, &url);
    config.max_read_factor = 3;
    config.max_read_floor = 1_000;
    let mut runner = start(&kafka, config).await.unwrap();
    // The first read shows 500 lessons.
    runner.poll().await.unwrap();
    assert_eq!(runner.held(Endpoint::CalendarEvents), 500);
    let before = committed_of(&kafka, CALENDAR_CHANGES, &name).await;
    assert_eq!(before, 500);

    // Then the pages never end: stopped past 3 × 1 000 items (the floor),
    // with nothing of that read published.
    looping.store(1, Ordering::SeqCst);
    let failed = runner.poll().await.unwrap_err();
    let text = failed.chain();
    assert!(text.contains("max_read_factor"), "{text}");
    assert!(text.contains("3500 items read"), "{text}");
    assert_eq!(runner.held(Endpoint::CalendarEvents), 500);
    assert_eq!(committed_of(&kafka, CALENDAR_CHANGES, &name).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_runaway_read_committed_on_its_way_does_not_raise_the_next_bound() {
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let looping = Arc::new(AtomicUsize::new(0));
    let url = looping_vendor(500, Mode::Endless, Arc::clone(&looping)).await;
    let name = unique("runaway-commits");
    let mut config = lessons_only(&name, &url);
    config.max_read_factor = 3;
    config.max_read_floor = 1_000;
    // Commits every few hundred items, inside the runaway read.
    config.max_transaction_records = 1_000;
    let mut runner = start(&kafka, config).await.unwrap();
    runner.poll().await.unwrap();
    assert_eq!(runner.held(Endpoint::CalendarEvents), 500);
    looping.store(1, Ordering::SeqCst);
    for _ in 0..3 {
        let text = runner.poll().await.unwrap_err().chain();
        // The same bound each time, though each read left more held.
        assert!(text.contains("3500 items read, more than 3000"), "{text}");
    }
    let held = runner.held(Endpoint::CalendarEvents);
    assert!(held > 500 && held <= 500 + 3 * 3_500, "{held}");
    assert_eq!(committed_of(&kafka, CALENDAR_CHANGES, &name).await, held);
}

/// A vendor that answers every request with 429 and `Retry-After`
/// 999999, or with a body that trickles a byte a second.
async fn stalling_vendor() -> String {
    use axum::body::Body;
    let app = axum::Router::new()
        .route(
            "/rate/persons",
            get(|| async {
                (
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "999999")],
                    "slow down",
                )
                    .into_response()
            }),
        )
        .route(
            "/slow/persons",
            get(|| async {
                let trickle = futures_util::stream::unfold(0u32, |n| async move {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    (n < 120).then(|| (Ok::<_, std::io::Error>(vec![b' ']), n + 1))
                });
                (
                    [("content-type", "application/json")],
                    Body::from_stream(trickle),
                )
                    .into_response()
            }),
        );
    serve_vendor(app).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_are_capped_and_timeouts_are_named() {
    let url = stalling_vendor().await;
    // Each request fails within 10 s; its error, as text.
    let fails = |path: &'static str| {
        let client = Ss12000Client::new(ClientConfig {
            base_url: format!("{url}/{path}"),
            max_retries: 2,
            retry_after_max_secs: 1,
            request_timeout_ms: 700,
            ..ClientConfig::default()
        })
        .unwrap();
        async move {
            let started = Instant::now();
            let error = client
                .page("persons", None, &Filters::default())
                .await
                .unwrap_err();
            let took = started.elapsed();
            assert!(took < Duration::from_secs(10), "{path}: {took:?}");
            error.to_string()
        }
    };

    // Asked to wait 999 999 s, the client waits the configured second,
    // twice, and gives up.
    let text = fails("rate").await;
    assert!(text.contains("429"), "{text}");
    assert!(text.contains("after 3 attempts"), "{text}");

    // A body that trickles ends as a timeout, named so.
    let text = fails("slow").await;
    assert!(text.contains("timed out"), "{text}");
    assert!(text.contains("request_timeout_ms = 700"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_cannot_work_says_what_to_fix_within_seconds() {
    let kafka = TestKafka::connect().await.unwrap();
    let mut sim = Simulation::new(SimConfig::default(), None).unwrap();
    sim.advance_to(chrono::NaiveDate::from_ymd_opt(2025, 9, 8).unwrap())
        .unwrap();
    let vendor = Vendor::serve(sim).await.unwrap();
    let good = skolflode_testkit::term::client(&vendor.url, 500);
    let port = vendor.url.rsplit(':').next().unwrap().to_owned();
    let cases: Vec<(&str, ClientConfig, &str)> = vec![
        (
            "no scheme",
            ClientConfig {
                base_url: "vendor.example/ss12000/v2".into(),
                ..good.clone()
            },
            "base_url",
        ),
        (
            "unknown host",
            ClientConfig {
                base_url: "http://no-such-vendor.invalid/ss12000/v2".into(),
                ..good.clone()
            },
            "cannot be resolved",
        ),
        (
            "wrong secret",
            ClientConfig {
                client_secret: Secret::new("not the secret"),
                ..good.clone()
            },
            "check client_id and client_secret",
        ),
        (
            "TLS to plain HTTP",
            ClientConfig {
                base_url: format!("https://127.0.0.1:{port}/ss12000/v2"),
                token_url: String::new(),
                ..good.clone()
            },
            "scheme",
        ),
    ];
    for (what, client, says) in cases {
        let name = unique("misconfigured");
        let started = Instant::now();
        let error = start(&kafka, ConnectionConfig::new(&name, client))
            .await
            .map(|_| ())
            .expect_err(what);
        let text = error.chain();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: {:?}",
            started.elapsed()
        );
        assert!(text.contains(&name), "{what}: {text}");
        assert!(text.contains(says), "{what}: {text}");
        assert!(!text.contains("not the secret"), "{what}: {text}");
    }
    // The right configuration starts.
    start(
        &kafka,
        ConnectionConfig::new(unique("well-configured"), good),
    )
    .await
    .unwrap();
}

/// A vendor with one lesson of 1 MB between two ordinary ones, and, at
/// another base, a page of 200 kB.
async fn bloated_vendor() -> String {
    let mut big = lesson("l2");
    big["description"] = json!("x".repeat(1 << 20));
    let items = json!({ "data": [lesson("l1"), big, lesson("l3")] }).to_string();
    let many: Vec<_> = (0..800).map(|i| lesson(&format!("p{i}"))).collect();
    let page = json!({ "data": many }).to_string();
    assert!(page.len() > 150_000);
    let app = axum::Router::new()
        .route(
            "/item/ss12000/v2/calendarEvents",
            get(move || {
                let items = items.clone();
                async move { ([("content-type", "application/json")], items).into_response() }
            }),
        )
        .route(
            "/page/ss12000/v2/calendarEvents",
            get(move || {
                let page = page.clone();
                async move { ([("content-type", "application/json")], page).into_response() }
            }),
        );
    serve_vendor(app).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_or_page_past_its_limit_is_a_cut_dead_letter_and_the_read_goes_on() {
    use skolflode_schemas::catalogue::DEAD_LETTERS;
    use skolflode_schemas::records::DeadLetter;
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let url = bloated_vendor().await;

    // The 1 MB item: a dead letter, cut, with its size and digest; the
    // lessons beside it are published.
    let name = unique("big-item");
    let identity = age::x25519::Identity::generate();
    let sealer = SealConfig {
        age_recipients: vec![identity.to_public().to_string()],
    }
    .build()
    .unwrap();
    let mut runner = Runner::start_sealed(
        lessons_at(&name, &url, "/item"),
        kafka.config(),
        Arc::new(Pseudonymiser::new(SECRET).unwrap()),
        Arc::new(sealer),
    )
    .await
    .unwrap();
    runner.poll().await.unwrap();
    // The big one is held as served, though nothing of it is published.
    assert_eq!(runner.held(Endpoint::CalendarEvents), 3);
    assert_eq!(committed_of(&kafka, CALENDAR_CHANGES, &name).await, 2);
    let letters: Vec<DeadLetter> = kafka.committed(DEAD_LETTERS, &name).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let reason = &letters[0].reason;
    assert!(reason.contains("max_item_bytes = 262144"), "{reason}");
    assert!(reason.contains("SHA-256"), "{reason}");
    let kept = age::decrypt(&identity, &letters[0].raw.0).unwrap();
    assert_eq!(kept.len(), 64 << 10);
    assert_eq!(letters[0].entity_id.as_deref(), Some("l2"));
    // Seen again, it is not published again.
    runner.poll().await.unwrap();
    let letters: Vec<DeadLetter> = kafka.committed(DEAD_LETTERS, &name).await.unwrap();
    assert_eq!(letters.len(), 1);

    // A page past max_page_bytes fails its read, its start a dead letter.
    let name = unique("big-page");
    let mut config = lessons_at(&name, &url, "/page");
    config.client.max_page_bytes = 100_000;
    let mut runner = start(&kafka, config).await.unwrap();
    let text = runner.poll().await.unwrap_err().chain();
    assert!(text.contains("max_page_bytes = 100000"), "{text}");
    assert_eq!(committed_of(&kafka, CALENDAR_CHANGES, &name).await, 0);
    let letters: Vec<DeadLetter> = kafka.committed(DEAD_LETTERS, &name).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(letters[0].reason.contains("longer than max_page_bytes"));
}

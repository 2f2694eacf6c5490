//! Items built to fail, from a vendor no one here wrote (a small server in
//! this test): for every entity type, a dead letter that says what failed
//! without a civic number, name or e-mail address in clear — in any topic
//! or log — and whose encrypted raw bytes open with the operator's key to
//! the item as served; a full read that cannot map an item does not take
//! it for deleted; and re-polling an unchanged vendor publishes nothing
//! again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use skolflode_producers::endpoint::Endpoint;
use skolflode_producers::pseudonym::Pseudonymiser;
use skolflode_producers::runner::{self, ConnectionConfig, Runner};
use skolflode_producers::seal::{SealConfig, Sealer};
use skolflode_producers::ss12000::client::{ClientConfig, Secret};
use skolflode_schemas::catalogue::{self, DEAD_LETTERS, QUALITY_FINDINGS};
use skolflode_schemas::records::{DeadLetter, QualityFinding};
use skolflode_testkit::kafka::Isolation;
use skolflode_testkit::pipeline::replay_all;
use skolflode_testkit::{unique, TestKafka};

const SECRET: &[u8] = b"the producer privacy test's pseudonym key, long enough";

/// The personal data the broken items carry: none of it may appear in any
/// topic or log, in any form.
const CIVIC: &str = "19811218-9876";
const CIVIC_FORMS: &[&str] = &["811218-9876", "198112189876", "8112189876", "19811218-9876"];
const GIVEN: &str = "Zebulonia";
const FAMILY: &str = "Quaxwright";
const EMAIL: &str = "zebulonia.quaxwright@example.se";
const TEACHER: &str = "Matematik Zebulonia Quaxwright";

/// Endpoint → the items it serves, all on one page.
type Served = Arc<Mutex<HashMap<&'static str, Vec<Value>>>>;

/// A vendor that serves what the test puts in `served`, whatever the
/// request's filters.
async fn vendor(served: Served) -> String {
    use axum::extract::Path;
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/ss12000/v2/{endpoint}",
        get(move |Path(endpoint): Path<String>| {
            let served = Arc::clone(&served);
            async move {
                let items = served
                    .lock()
                    .unwrap()
                    .get(endpoint.as_str())
                    .cloned()
                    .unwrap_or_default();
                axum::Json(json!({ "data": items, "pageToken": null }))
            }
        }),
    );
    let url = skolflode_testkit::pipeline::serve_vendor(app)
        .await
        .unwrap();
    url
}

fn meta() -> Value {
    json!({ "created": "2025-09-01T06:00:00+02:00", "modified": "2025-09-01T06:00:00+02:00" })
}

/// A person carrying every kind of personal data, mappable or not.
fn person(id: &str, enrolments: Value) -> Value {
    json!({
        "id": id, "meta": meta(),
        "givenName": GIVEN, "familyName": FAMILY,
        "civicNo": { "value": CIVIC, "nationality": "SE" },
        "emails": [{ "value": EMAIL, "type": "Privat" }],
        "phoneNumbers": [{ "value": "+46 70 123 45 67" }],
        "enrolments": enrolments,
    })
}

/// For every endpoint, one good item and one that cannot be mapped (with
/// the reason it fails), each carrying personal data where the type can.
fn items() -> HashMap<&'static str, Vec<Value>> {
    let good_enrolments =
        json!([{ "enroledAt": { "id": "o1" }, "schoolType": "GR", "startDate": "2025-08-20" }]);
    HashMap::from([
        (
            "organisations",
            vec![
                json!({ "id": "o1", "meta": meta(), "displayName": "Skolan", "organisationType": "Skolenhet" }),
                // An id that is not a string: cannot be keyed.
                json!({ "id": { "nested": EMAIL }, "displayName": TEACHER, "email": EMAIL }),
            ],
        ),
        (
            "persons",
            vec![
                person("p1", good_enrolments),
                person("p2", json!("every weekday")),
            ],
        ),
        (
            "duties",
            vec![
                json!({ "id": "d1", "meta": meta(), "person": { "id": "p1" }, "dutyAt": { "id": "o1" }, "dutyRole": "Lärare", "startDate": "2025-08-01", "signature": "ZEQU" }),
                json!({ "id": "d2", "meta": meta(), "person": { "id": "p2" }, "dutyRole": TEACHER, "startDate": "2025-08-01", "signature": "ZEQU", "email": EMAIL }),
            ],
        ),
        (
            "groups",
            vec![
                json!({ "id": "g1", "meta": meta(), "displayName": TEACHER, "groupType": "Undervisning", "startDate": "2025-08-20", "organisation": { "id": "o1" }, "groupMemberships": [{ "person": { "id": "p1" } }] }),
                json!({ "id": "g2", "meta": meta(), "displayName": TEACHER, "groupType": "Undervisning", "startDate": "2025-08-20", "groupMemberships": [] }),
            ],
        ),
        (
            "syllabuses",
            vec![
                json!({ "id": "s1", "meta": meta(), "schoolType": "GR", "subjectCode": "MA", "official": true }),
                json!({ "id": "s2", "meta": meta(), "schoolType": "GR", "subjectName": TEACHER, "official": true }),
            ],
        ),
        (
            "activities",
            vec![
                // Mappable, with a value that is left out and reported.
                json!({ "id": "a1", "meta": meta(), "displayName": TEACHER, "calendarEventsRequired": true, "startDate": "2025-08-20", "organisation": { "id": "o1" }, "groups": [{ "id": "g1" }], "teachers": [{ "duty": { "id": "d1" } }], "comment": EMAIL, "minutesPlanned": "lots" }),
                json!({ "id": "a2", "meta": meta(), "displayName": TEACHER, "startDate": "2025-08-20", "groups": [], "comment": EMAIL }),
            ],
        ),
        (
            "calendarEvents",
            vec![
                json!({ "id": "l1", "meta": meta(), "activity": { "id": "a1" }, "startTime": "2025-09-08T08:10:00+02:00", "endTime": "2025-09-08T09:10:00+02:00" }),
                json!({ "id": "l2", "meta": meta(), "activity": { "id": "a1" }, "startTime": "2025-09-08T08:10:00+02:00", "endTime": "half past nine", "comment": TEACHER }),
            ],
        ),
        (
            "attendances",
            vec![
                json!({ "id": "r1", "meta": meta(), "calendarEvent": { "id": "l1" }, "student": { "id": "p1" }, "isReported": true, "attendanceMinutes": 60 }),
                json!({ "id": "r2", "meta": meta(), "calendarEvent": { "id": "l1" }, "student": { "id": "p2" }, "isReported": true, "attendanceMinutes": "most of it", "absenceReason": GIVEN }),
            ],
        ),
    ])
}

/// Log lines, captured for scanning.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn connection(name: &str, url: &str) -> ConnectionConfig {
    let client = ClientConfig {
        base_url: format!("{url}/ss12000/v2"),
        token_url: format!("{url}/oauth2/token"),
        client_id: "skolflode".into(),
        client_secret: Secret::new("a secret the logs must not show"),
        max_retries: 1,
        backoff_base_ms: 1,
        backoff_max_ms: 5,
        ..ClientConfig::default()
    };
    ConnectionConfig {
        // Every poll a full read: reconciliation runs every time.
        full_read_every: 1,
        deletion_feed: false,
        ..ConnectionConfig::new(name, client)
    }
}

async fn start(
    kafka: &TestKafka,
    name: &str,
    url: &str,
    pseudonymiser: &Arc<Pseudonymiser>,
    sealer: &Arc<Sealer>,
) -> Runner {
    Runner::start_sealed(
        connection(name, url),
        kafka.config(),
        Arc::clone(pseudonymiser),
        Arc::clone(sealer),
    )
    .await
    .unwrap()
}

async fn findings_of(kafka: &TestKafka, name: &str) -> Vec<QualityFinding> {
    kafka.committed(QUALITY_FINDINGS, name).await.unwrap()
}

async fn letters_of(kafka: &TestKafka, name: &str) -> usize {
    kafka
        .committed::<DeadLetter>(DEAD_LETTERS, name)
        .await
        .unwrap()
        .len()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Every personal value the broken items carry that `bytes` shows.
fn leaks(bytes: &[u8]) -> Vec<&'static str> {
    let mut found: Vec<&'static str> = CIVIC_FORMS
        .iter()
        .copied()
        .filter(|c| contains(bytes, c))
        .collect();
    for secret in [
        GIVEN,
        FAMILY,
        EMAIL,
        "a secret the logs must not show",
        "+46 70 123",
    ] {
        if contains(bytes, secret) {
            found.push(secret);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_items_leak_nothing_are_not_deleted_and_are_reported_once() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter("debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let served: Served = Arc::new(Mutex::new(items()));
    let url = vendor(Arc::clone(&served)).await;
    let name = unique("privacy");
    let identity = age::x25519::Identity::generate();
    let sealer: Arc<Sealer> = Arc::new(
        SealConfig {
            age_recipients: vec![identity.to_public().to_string()],
        }
        .build()
        .unwrap(),
    );
    let pseudonymiser = Arc::new(Pseudonymiser::new(SECRET).unwrap());
    let mut runner = start(&kafka, &name, &url, &pseudonymiser, &sealer).await;
    runner.poll().await.unwrap();

    // One dead letter per entity type, each saying why, redacted, and
    // opening to the item as served.
    let letters: Vec<DeadLetter> = kafka.committed(DEAD_LETTERS, &name).await.unwrap();
    let served_items = items();
    assert_eq!(letters.len(), 8, "{letters:#?}");
    for letter in &letters {
        let endpoint = letter.endpoint.trim_start_matches('/');
        let broken = &served_items[endpoint][1];
        assert_eq!(letter.raw_encryption.as_deref(), Some("age"));
        let raw = age::decrypt(&identity, &letter.raw.0).unwrap();
        assert_eq!(raw, serde_json::to_vec(broken).unwrap(), "{endpoint}");
        assert!(!letter.reason.is_empty());
        let redacted: Value = serde_json::from_str(letter.redacted.as_deref().unwrap()).unwrap();
        assert_eq!(
            redacted.as_object().map(|o| o.len()),
            broken.as_object().map(|o| o.len()),
            "{endpoint}: the redacted copy keeps the item's shape"
        );
    }
    let person_letter = letters.iter().find(|l| l.endpoint == "/persons").unwrap();
    assert_eq!(person_letter.entity_id.as_deref(), Some("p2"));
    assert!(
        person_letter.reason.contains("enrolments"),
        "{}",
        person_letter.reason
    );

    // Nothing personal in clear anywhere: every record this connection
    // wrote to any topic (every key names the connection), aborted ones
    // included, and every log line.
    let mut topics: Vec<&str> = catalogue::TOPICS.iter().map(|t| t.name).collect();
    topics.sort();
    let mut scanned = 0;
    for topic in topics {
        for record in kafka
            .drain_keyed(
                topic,
                Isolation::ReadUncommitted,
                Duration::from_secs(60),
                &name,
            )
            .await
            .unwrap()
        {
            scanned += 1;
            for bytes in [record.key, record.payload].into_iter().flatten() {
                let found = leaks(&bytes);
                assert!(found.is_empty(), "{topic}: {found:?} in clear");
            }
        }
    }
    assert!(scanned > 40, "{scanned} records scanned");
    let logged = logs.0.lock().unwrap().clone();
    assert!(
        contains(&logged, "dead letter"),
        "the logs were captured: {}",
        String::from_utf8_lossy(&logged)
    );
    let found = leaks(&logged);
    assert!(found.is_empty(), "the logs show {found:?}");

    // The good items arrived; the broken ones are held as served, not
    // published.
    let (replayed, _) = replay_all(&kafka, &name).await.unwrap();
    for endpoint in Endpoint::ALL.map(Endpoint::name) {
        assert_eq!(replayed[endpoint].len(), 1, "{endpoint}");
    }

    // Re-polling the unchanged vendor: no event, dead letter or finding.
    let findings_before = findings_of(&kafka, &name).await.len();
    runner.poll().await.unwrap();
    runner.poll().await.unwrap();
    // A restarted producer remembers what it reported.
    drop(runner);
    let mut runner = start(&kafka, &name, &url, &pseudonymiser, &sealer).await;
    runner.poll().await.unwrap();
    assert_eq!(letters_of(&kafka, &name).await, 8, "no dead letter again");
    let findings_after = findings_of(&kafka, &name).await.len();
    assert_eq!(findings_after, findings_before, "no finding again");
    let a1: Vec<QualityFinding> = findings_of(&kafka, &name)
        .await
        .into_iter()
        .filter(|f| f.entity_id == "a1")
        .collect();
    assert_eq!(a1.len(), 1, "{a1:#?}");
    assert_eq!(
        (a1[0].kind.as_str(), a1[0].field.as_str()),
        ("UNUSABLE_OPTIONAL", "minutesPlanned")
    );
    assert_eq!(runner.stats().events.values().sum::<u64>(), 0);

    // The good person becomes unmappable: the full read publishes no
    // delete, only one dead letter.
    served.lock().unwrap().insert(
        "persons",
        vec![
            person("p1", json!("every weekday")),
            served_items["persons"][1].clone(),
        ],
    );
    runner.poll().await.unwrap();
    runner.poll().await.unwrap();
    assert_eq!(
        runner.stats().events.get("DELETE"),
        None,
        "{:?}",
        runner.stats()
    );
    assert_eq!(letters_of(&kafka, &name).await, 9);
    let (replayed, _) = replay_all(&kafka, &name).await.unwrap();
    assert!(replayed["persons"].contains_key("p1"), "p1 is still there");

    // Mended again: no event (the version is the one published before),
    // and nothing else either.
    served
        .lock()
        .unwrap()
        .insert("persons", items()["persons"].clone());
    runner.poll().await.unwrap();
    assert_eq!(runner.stats().events.values().sum::<u64>(), 0);

    // Gone for real: now it is deleted; the never-mapped p2 leaves no
    // event behind.
    served.lock().unwrap().insert("persons", Vec::new());
    runner.poll().await.unwrap();
    assert_eq!(runner.stats().events.get("DELETE").copied(), Some(1));
    let (replayed, _) = replay_all(&kafka, &name).await.unwrap();
    assert!(replayed["persons"].is_empty());
    assert_eq!(letters_of(&kafka, &name).await, 9);
}

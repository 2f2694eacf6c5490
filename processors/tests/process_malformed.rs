//! Input the processor cannot use does not stop it: an undecodable change
//! event and one with an unknown schema id go to the dead-letter topic with
//! the reason, a lesson whose activity was never seen is a quality finding
//! when its week closes, and the valid input around them is processed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use skolflode_processors::weekly::metrics::Metrics;
use skolflode_processors::weekly::run::{self, Outputs, Until};
use skolflode_processors::weekly::ProcessConfig;
use skolflode_producers::runner;
use skolflode_schemas::catalogue::{self, local_schema_id};
use skolflode_schemas::entities::{CalendarEvent, ObjectReference};
use skolflode_schemas::records::{DeadLetter, Heartbeat, QualityFinding};
use skolflode_schemas::{wire, ChangeEvent, EntityKey, Op, Source, TimestampMillis};
use skolflode_testkit::{unique, TestKafka};

/// 2025-09-03 10:00 UTC, a Wednesday.
const LESSON: i64 = 1_756_893_600_000;
const DAY: i64 = 86_400_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_reported_and_the_rest_goes_on() {
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let connection = unique("malformed");
    let id = |s: &str| local_schema_id(s).unwrap();
    let key = |entity: &str| {
        wire::encode(
            id("EntityKey"),
            &EntityKey {
                connection: connection.clone(),
                entity_id: entity.to_owned(),
            },
        )
    };
    let lesson = ChangeEvent {
        event_id: "e1".into(),
        op: Op::Create,
        before: None,
        after: Some(CalendarEvent {
            id: "lesson-1".into(),
            activity: ObjectReference::new("never-seen"),
            start_time: TimestampMillis(LESSON),
            end_time: TimestampMillis(LESSON + 3_600_000),
            teaching_length_student: Some(60),
            ..CalendarEvent::default()
        }),
        source: Source {
            vendor: "ss12000".into(),
            connection: connection.clone(),
            endpoint: "/calendarEvents".into(),
            cursor: None,
            server_time: Some(TimestampMillis(LESSON - DAY)),
        },
        observed_at: TimestampMillis(LESSON - DAY),
        content_hash: Some("h1".into()),
    };
    let lessons = "skolflode.ss12000.calendar-event.changes";
    let producer: BaseProducer = kafka.config().producer().unwrap().create().unwrap();
    let send = |topic: &str, key: Vec<u8>, value: Vec<u8>| {
        producer
            .send(BaseRecord::to(topic).key(&key).payload(&value))
            .map_err(|(e, _)| e)
            .unwrap();
    };
    let mut truncated = wire::encode(id("CalendarEventChange"), &lesson);
    truncated.truncate(truncated.len() / 2);
    send(lessons, key("lesson-0"), truncated);
    let mut unknown = wire::encode(id("CalendarEventChange"), &lesson);
    unknown[1..5].copy_from_slice(&999_999u32.to_be_bytes());
    send(lessons, key("lesson-9"), unknown);
    send(
        lessons,
        key("lesson-1"),
        wire::encode(id("CalendarEventChange"), &lesson),
    );
    // The vendor's clock a week later: the lesson's week has closed.
    send(
        catalogue::HEARTBEATS,
        wire::encode(id("StringKey"), &connection),
        wire::encode(
            id("Heartbeat"),
            &Heartbeat {
                connection: connection.clone(),
                vendor: "ss12000".into(),
                at: TimestampMillis(0),
                server_time: Some(TimestampMillis(LESSON + 7 * DAY)),
                ok: true,
                polls: 1,
                events: 1,
            },
        ),
    );
    producer.flush(Duration::from_secs(30)).unwrap();

    let application_id = unique("process-malformed");
    let config = ProcessConfig {
        application_id: application_id.clone(),
        grace_hours: 1,
        connections: vec![connection.clone()],
        ..ProcessConfig::default()
    };
    let outputs = Outputs {
        suffix: Some(application_id),
    };
    run::ensure_topics(kafka.config(), &config, &outputs)
        .await
        .unwrap();
    let (k, c, o) = (kafka.config().clone(), config.clone(), outputs.clone());
    let progress = tokio::task::spawn_blocking(move || {
        let metrics = Arc::new(Metrics::new().unwrap());
        run::run(
            &k,
            &c,
            &o,
            &metrics,
            Until::CaughtUp,
            &AtomicBool::new(false),
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(progress.kept, 1, "{progress:?}");

    let letters: Vec<DeadLetter> = kafka
        .committed(&outputs.name(catalogue::DEAD_LETTERS), &connection)
        .await
        .unwrap();
    let reasons: Vec<&str> = letters.iter().map(|l| l.reason.as_str()).collect();
    assert_eq!(letters.len(), 2, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("999999")), "{reasons:?}");
    assert!(
        letters.iter().all(|l| l.endpoint.starts_with(lessons)),
        "{letters:?}"
    );
    let findings: Vec<QualityFinding> = kafka
        .committed(&outputs.name(catalogue::QUALITY_FINDINGS), &connection)
        .await
        .unwrap();
    assert!(
        findings.iter().any(|f| f.kind == "DANGLING_REFERENCE"
            && f.entity_id == "lesson-1"
            && f.field == "activity"),
        "{findings:?}"
    );
}

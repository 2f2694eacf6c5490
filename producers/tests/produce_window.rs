//! What leaves the read window is retired: lessons that started, and
//! attendance records created, before it are forgotten — their state
//! records tombstoned, no event published — and are not published again
//! when the vendor still shows them. What is held keeps only a compact
//! entry in memory: an update after a restart still carries the right
//! before image, read back from disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use axum::extract::{RawQuery, State};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{json, Value};
use skolflode_producers::endpoint::Endpoint;
use skolflode_producers::pseudonym::Pseudonymiser;
use skolflode_producers::runner::{self, CalendarWindow, ConnectionConfig, Runner};
use skolflode_schemas::entities::{Attendance, CalendarEvent};
use skolflode_schemas::Op;
use skolflode_testkit::pipeline::change_events;
use skolflode_testkit::{unique, TestKafka};

const SECRET: &[u8] = b"the producer's read-window test pseudonym key";

/// A vendor whose clock and data the test sets.
#[derive(Default)]
struct Clocked {
    date: &'static str,
    lessons: Vec<Value>,
    attendance: Vec<Value>,
    attendance_queries: Vec<String>,
    /// Answer 400 to `meta.created.after`, as a vendor that does not
    /// filter by creation may.
    refuse_created_after: bool,
}

type Shared = Arc<Mutex<Clocked>>;

fn page(vendor: &Shared, data: Vec<Value>) -> axum::response::Response {
    let date = vendor.lock().unwrap().date;
    ([("date", date)], axum::Json(json!({ "data": data }))).into_response()
}

async fn serve(vendor: Shared) -> String {
    let app = axum::Router::new()
        .route(
            "/ss12000/v2/organisations",
            get(|State(v): State<Shared>| async move { page(&v, Vec::new()) }),
        )
        .route(
            "/ss12000/v2/calendarEvents",
            get(|State(v): State<Shared>| async move {
                let lessons = v.lock().unwrap().lessons.clone();
                page(&v, lessons)
            }),
        )
        .route(
            "/ss12000/v2/attendances",
            // A vendor that ignores `meta.created.after`: the producer
            // must leave out what is older than its window itself.
            get(
                |State(v): State<Shared>, RawQuery(q): RawQuery| async move {
                    let (records, refused) = {
                        let mut v = v.lock().unwrap();
                        let q = q.unwrap_or_default();
                        let refused = v.refuse_created_after && q.contains("meta.created.after");
                        v.attendance_queries.push(q);
                        (v.attendance.clone(), refused)
                    };
                    if refused {
                        let body = json!({ "code": "invalid_filter" });
                        return (axum::http::StatusCode::BAD_REQUEST, axum::Json(body))
                            .into_response();
                    }
                    page(&v, records)
                },
            ),
        )
        .with_state(vendor);
    skolflode_testkit::pipeline::serve_vendor(app)
        .await
        .unwrap()
}

fn lesson(id: &str, start: &str, end: &str) -> Value {
    json!({
        "id": id,
        "meta": { "created": "2025-08-01T06:00:00Z", "modified": "2025-08-01T06:00:00Z" },
        "activity": { "id": "a1" },
        "startTime": start,
        "endTime": end,
    })
}

fn attendance(id: &str, lesson: &str, created: &str) -> Value {
    json!({
        "id": id,
        "meta": { "created": created, "modified": created },
        "calendarEvent": { "id": lesson },
        "student": { "id": "5f0c8d1e-0000-4000-8000-000000000001" },
        "isReported": true,
        "attendanceMinutes": 40,
        "validAbsenceMinutes": 0,
        "invalidAbsenceMinutes": 0,
        "reportedTimestamp": created,
    })
}

async fn start(kafka: &TestKafka, name: &str, url: &str) -> Runner {
    let client = skolflode_testkit::term::client(url, 100);
    let config = ConnectionConfig {
        endpoints: vec![Endpoint::CalendarEvents, Endpoint::Attendances],
        deletion_feed: false,
        full_read_every: 1,
        calendar_events: CalendarWindow {
            past_weeks: 1,
            future_weeks: 1,
            slice_days: 7,
        },
        ..ConnectionConfig::new(name, client)
    };
    let pseudonymiser = Arc::new(Pseudonymiser::new(SECRET).unwrap());
    Runner::start(config, kafka.config(), pseudonymiser)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_leaves_the_window_is_retired_and_before_images_survive_a_restart() {
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    // Wednesday 10 September: the window starts at midnight UTC, 3 September.
    let vendor: Shared = Arc::new(Mutex::new(Clocked {
        date: "Wed, 10 Sep 2025 10:00:00 GMT",
        lessons: vec![
            lesson("l-old", "2025-08-27T08:00:00Z", "2025-08-27T09:00:00Z"),
            lesson("l1", "2025-09-08T08:00:00Z", "2025-09-08T09:00:00Z"),
        ],
        attendance: vec![
            attendance("a-old", "l-old", "2025-08-27T10:00:00Z"),
            attendance("a1", "l1", "2025-09-08T10:00:00Z"),
        ],
        ..Clocked::default()
    }));
    let url = serve(Arc::clone(&vendor)).await;
    let name = unique("window");

    let mut first = start(&kafka, &name, &url).await;
    first.poll().await.unwrap();
    assert_eq!(first.held(Endpoint::CalendarEvents), 1);
    assert_eq!(first.held(Endpoint::Attendances), 1);
    {
        let v = vendor.lock().unwrap();
        let query = v.attendance_queries.last().unwrap();
        assert!(
            query.contains("meta.created.after=2025-09-02T23%3A59%3A59Z"),
            "attendance is asked for from the window's start: {query}"
        );
    }
    drop(first);

    // The lesson moves; a restarted producer holds its image only on disk.
    vendor.lock().unwrap().lessons[1] =
        lesson("l1", "2025-09-08T08:00:00Z", "2025-09-08T09:30:00Z");
    let mut second = start(&kafka, &name, &url).await;
    assert_eq!(second.stats().restored, 2);
    second.poll().await.unwrap();
    let lessons = change_events::<CalendarEvent>(&kafka, &name).await.unwrap();
    let ops: Vec<(&str, Op)> = lessons.iter().map(|(id, e)| (id.as_str(), e.op)).collect();
    assert_eq!(ops, vec![("l1", Op::SnapshotRead), ("l1", Op::Update)]);
    let (shown, update) = (&lessons[0].1, &lessons[1].1);
    assert_eq!(
        update.before, shown.after,
        "the before image is the version published"
    );
    assert_eq!(
        update.after.as_ref().map(|l| l.end_time.0 - l.start_time.0),
        Some(90 * 60_000)
    );

    // Ten days on, the window starts on 13 September: both leave it. The
    // vendor's clock is read from its answers, so the poll after the one
    // that saw the new date retires the lessons too.
    vendor.lock().unwrap().date = "Sat, 20 Sep 2025 10:00:00 GMT";
    second.poll().await.unwrap();
    second.poll().await.unwrap();
    assert_eq!(second.held(Endpoint::CalendarEvents), 0);
    assert_eq!(second.held(Endpoint::Attendances), 0);
    assert_eq!(second.stats().retired, 2);
    drop(second);

    // Nothing was deleted, nothing published again though the vendor still
    // shows them, and the state topic holds nothing of them any more.
    let lessons = change_events::<CalendarEvent>(&kafka, &name).await.unwrap();
    assert_eq!(lessons.len(), 2);
    let records = change_events::<Attendance>(&kafka, &name).await.unwrap();
    let ops: Vec<(&str, Op)> = records.iter().map(|(id, e)| (id.as_str(), e.op)).collect();
    assert_eq!(ops, vec![("a1", Op::SnapshotRead)]);
    let third = start(&kafka, &name, &url).await;
    assert_eq!(third.stats().restored, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vendor_refusing_the_creation_filter_is_read_in_full_and_old_records_left_out() {
    let kafka = TestKafka::connect().await.unwrap();
    runner::ensure_topics(kafka.config()).await.unwrap();
    let vendor: Shared = Arc::new(Mutex::new(Clocked {
        date: "Wed, 10 Sep 2025 10:00:00 GMT",
        attendance: vec![
            attendance("a-old", "l-old", "2025-08-27T10:00:00Z"),
            attendance("a1", "l1", "2025-09-08T10:00:00Z"),
        ],
        refuse_created_after: true,
        ..Clocked::default()
    }));
    let url = serve(Arc::clone(&vendor)).await;
    let name = unique("window-refused");
    let mut runner = start(&kafka, &name, &url).await;
    runner.poll().await.unwrap();
    runner.poll().await.unwrap();
    let records = change_events::<Attendance>(&kafka, &name).await.unwrap();
    let ids: Vec<&str> = records.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, vec!["a1"]);
    let queries = vendor.lock().unwrap().attendance_queries.clone();
    assert_eq!(
        queries
            .iter()
            .filter(|q| q.contains("meta.created.after"))
            .count(),
        1,
        "asked once, then never again: {queries:?}"
    );
    let findings: Vec<skolflode_schemas::records::QualityFinding> = kafka
        .committed(skolflode_schemas::catalogue::QUALITY_FINDINGS, &name)
        .await
        .unwrap();
    assert!(
        findings.iter().any(|f| f.kind == "CREATED_AFTER_REFUSED"),
        "{findings:?}"
    );
}

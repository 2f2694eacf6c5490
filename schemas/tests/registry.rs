//! The schema-registry client against recorded answers of the Confluent
//! REST API (as documented by Confluent and served by Apicurio's ccompat
//! API). No registry could be run on this machine: see docs/schemas.md.
//!
//! A small HTTP server on 127.0.0.1 replays the answers in order and records
//! the requests, so the tests check both what the client sends and how it
//! reads the answers.

// A test fails by panicking; helpers outside #[test] functions may too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skolflode_schemas::catalogue;
use skolflode_schemas::registry::{Compatibility, RegistryClient};
use skolflode_schemas::SchemaError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone, Debug)]
struct Request {
    method: String,
    path: String,
    content_type: String,
    body: String,
}

struct Replay {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

/// Serve `answers` (status, JSON body) one per request, in order.
async fn replay(answers: Vec<(u16, String)>) -> Replay {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&requests);
    tokio::spawn(async move {
        for (status, body) in answers {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let request = loop {
                let Ok(n) = socket.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(r) = parse(&buf) {
                    break r;
                }
            };
            if let Ok(mut r) = seen.lock() {
                r.push(request);
            }
            let reason = if status == 200 { "OK" } else { "Error" };
            let response = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    Replay { url, requests }
}

/// A whole request, once its headers and announced body have arrived.
fn parse(buf: &[u8]) -> Option<Request> {
    let text = std::str::from_utf8(buf).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let mut length = 0;
    let mut content_type = String::new();
    for line in lines {
        let (name, value) = line.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "content-type" => content_type = value.trim().to_owned(),
            _ => {}
        }
    }
    (body.len() >= length).then(|| Request {
        method,
        path,
        content_type,
        body: body.to_owned(),
    })
}

fn client(url: &str) -> RegistryClient {
    RegistryClient::new(url, Duration::from_secs(3)).expect("client")
}

const SUBJECT: &str = "skolflode.ss12000.activity.changes-value";

fn activity_schema() -> &'static str {
    catalogue::subject("ActivityChange")
        .expect("subject")
        .latest()
}

#[tokio::test]
async fn registers_once_and_caches_the_id() {
    let server = replay(vec![(200, r#"{"id":21}"#.to_owned())]).await;
    let client = client(&server.url);
    assert_eq!(
        client.register(SUBJECT, activity_schema()).await.ok(),
        Some(21)
    );
    // The second call is answered from the cache: the server has no answer left.
    assert_eq!(
        client.register(SUBJECT, activity_schema()).await.ok(),
        Some(21)
    );

    let requests = server.requests.lock().expect("requests").clone();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, format!("/subjects/{SUBJECT}/versions"));
    assert_eq!(r.content_type, "application/vnd.schemaregistry.v1+json");
    let body: serde_json::Value = serde_json::from_str(&r.body).expect("json body");
    assert_eq!(body["schemaType"], "AVRO");
    let sent = body["schema"].as_str().expect("schema is a string");
    assert_eq!(sent, activity_schema());
}

#[tokio::test]
async fn fetches_a_schema_by_id_once() {
    let answer = serde_json::json!({ "schema": activity_schema() }).to_string();
    let server = replay(vec![(200, answer)]).await;
    let client = client(&server.url);
    let first = client.schema_by_id(21).await.expect("schema");
    let again = client.schema_by_id(21).await.expect("cached");
    assert!(Arc::ptr_eq(&first, &again));
    let expected = catalogue::subject("ActivityChange")
        .expect("subject")
        .parse_latest()
        .expect("parses");
    assert_eq!(first.canonical_form(), expected.canonical_form());
    let requests = server.requests.lock().expect("requests").clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path, "/schemas/ids/21");
}

#[tokio::test]
async fn compatibility_answers_and_missing_subjects() {
    let server = replay(vec![
        (200, r#"{"is_compatible":true}"#.to_owned()),
        (200, r#"{"is_compatible":false}"#.to_owned()),
        (
            404,
            r#"{"error_code":40401,"message":"Subject 'x-value' not found."}"#.to_owned(),
        ),
        (200, r#"{"compatibility":"FULL_TRANSITIVE"}"#.to_owned()),
    ])
    .await;
    let client = client(&server.url);
    assert_eq!(
        client.is_compatible(SUBJECT, activity_schema()).await.ok(),
        Some(true)
    );
    assert_eq!(
        client.is_compatible(SUBJECT, activity_schema()).await.ok(),
        Some(false)
    );
    // A subject nobody registered yet accepts any schema.
    assert_eq!(
        client
            .is_compatible("x-value", activity_schema())
            .await
            .ok(),
        Some(true)
    );
    client
        .set_compatibility(SUBJECT, Compatibility::FullTransitive)
        .await
        .expect("config");

    let requests = server.requests.lock().expect("requests").clone();
    assert_eq!(
        requests[0].path,
        format!("/compatibility/subjects/{SUBJECT}/versions/latest")
    );
    assert_eq!(requests[3].method, "PUT");
    assert_eq!(requests[3].path, format!("/config/{SUBJECT}"));
    assert_eq!(requests[3].body, r#"{"compatibility":"FULL_TRANSITIVE"}"#);
}

#[tokio::test]
async fn latest_version_and_its_absence() {
    let answer = serde_json::json!({
        "subject": SUBJECT, "version": 3, "id": 21, "schema": activity_schema()
    })
    .to_string();
    let server = replay(vec![
        (200, answer),
        (
            404,
            r#"{"error_code":40401,"message":"Subject not found."}"#.to_owned(),
        ),
    ])
    .await;
    let client = client(&server.url);
    let latest = client.latest(SUBJECT).await.expect("latest").expect("some");
    assert_eq!((latest.version, latest.id), (3, 21));
    assert_eq!(client.latest("nobody-value").await.ok(), Some(None));
}

#[tokio::test]
async fn errors_carry_status_and_message() {
    let server = replay(vec![(
        409,
        r#"{"error_code":409,"message":"Schema being registered is incompatible with an earlier schema"}"#.to_owned(),
    )])
    .await;
    let client = client(&server.url);
    match client.register(SUBJECT, activity_schema()).await {
        Err(SchemaError::RegistryStatus {
            status: 409, body, ..
        }) => {
            assert!(body.contains("incompatible"), "{body}");
        }
        other => panic!("expected a 409, got {other:?}"),
    }
}

#[tokio::test]
async fn a_silent_registry_times_out() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let client = RegistryClient::new(&url, Duration::from_millis(500)).expect("client");
    let started = Instant::now();
    let result = client.schema_by_id(1).await;
    assert!(
        matches!(result, Err(SchemaError::Registry { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn invalid_schemas_are_not_sent() {
    let client = client("http://127.0.0.1:9");
    assert!(client.register(SUBJECT, "{not avro").await.is_err());
}

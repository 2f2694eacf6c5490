//! A broken service gives a clear error quickly, never a hang.

use std::time::{Duration, Instant};

use skolflode_kafka::KafkaConfig;
use skolflode_testkit::{HarnessError, TestDatabase, TestKafka};

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(1)
}

#[tokio::test]
async fn wrong_kafka_port_fails_fast_with_a_clear_message() {
    let config = KafkaConfig {
        bootstrap_servers: format!("127.0.0.1:{}", closed_port()),
        ..KafkaConfig::default()
    };
    let started = Instant::now();
    let result = TestKafka::connect_to(config, Duration::from_secs(3)).await;
    let waited = started.elapsed();
    let message = match result {
        Ok(_) => panic!("connecting to a closed port succeeded"),
        Err(e) => e.to_string(),
    };
    assert!(waited < Duration::from_secs(10), "took {waited:?}");
    assert!(
        message.contains("did not answer a metadata request within 3s"),
        "{message}"
    );
    assert!(message.contains("scripts/kafka status"), "{message}");
}

#[tokio::test]
async fn wrong_postgres_port_fails_fast_with_a_clear_message() {
    let url = format!(
        "postgres://skolflode:secret-pw@127.0.0.1:{}/x",
        closed_port()
    );
    let started = Instant::now();
    let result = TestDatabase::connect_to(&url, Duration::from_secs(3)).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    match result {
        Ok(_) => panic!("connecting to a closed port succeeded"),
        Err(e @ (HarnessError::Postgres(_) | HarnessError::Timeout { .. })) => {
            let message = e.to_string();
            assert!(message.contains("127.0.0.1"), "{message}");
            assert!(
                !message.contains("secret-pw"),
                "the password leaked: {message}"
            );
        }
        Err(e) => panic!("unexpected error kind: {e}"),
    }
}

//! Rebuilding a connection's state from the compacted state topic: the
//! only source of truth for a restarted producer.

use std::time::Duration;

use rdkafka::message::Message;
use skolflode_kafka::KafkaConfig;
use skolflode_schemas::catalogue::{self, PRODUCER_STATE};
use skolflode_schemas::records::{v1, ProducerState};
use skolflode_schemas::state_key::StateKey;
use skolflode_schemas::{wire, AvroType};

use super::RunError;

/// The state topic's partition count, which must never change: a
/// connection's state records all go to one partition, chosen from its
/// name, so that a restart reads that partition, not every connection's
/// state.
fn state_partitions() -> Result<i32, RunError> {
    catalogue::topic(PRODUCER_STATE)
        .map(|t| t.partitions)
        .ok_or_else(|| RunError::Config(format!("{PRODUCER_STATE} is not in the catalogue")))
}

/// The partition of the state topic that holds a connection's state: the
/// first four bytes of SHA-256 of its name, modulo the partition count.
pub fn state_partition(connection: &str) -> Result<i32, RunError> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(connection.as_bytes());
    let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    Ok((n % state_partitions()?.unsigned_abs()) as i32)
}

/// One record of the connection's state, newest last: its key's text and
/// its value (`None`: a tombstone).
pub(super) type StateRecord = (String, Option<ProducerState>);

/// Records handed to the caller at a time while the state is read.
const BATCH: usize = 4096;

/// Read the connection's partition of the state topic to its end under
/// read_committed: every record of `connection`, in order, handed to
/// `apply` in batches as they are read (a city's state does not fit in
/// memory twice).
pub(super) async fn load(
    kafka: &KafkaConfig,
    connection: &str,
    mut apply: impl FnMut(Vec<StateRecord>) -> Result<(), RunError>,
) -> Result<(), RunError> {
    // A consumer like every stage's (read_committed, no commits, a short
    // fetch-queue backoff): with librdkafka's default backoff of 1 s, the
    // read idled each time its prefetch queue filled.
    let client = kafka.consumer(&format!("skolflode-produce-{connection}-state-load"))?;
    let partition = state_partition(connection)?;
    let expected = state_partitions()?;
    let connection = connection.to_owned();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let reader =
        tokio::task::spawn_blocking(move || read(client, &connection, partition, expected, tx));
    while let Some(batch) = rx.recv().await {
        // On failure the receiver is dropped, which stops the reader.
        apply(batch)?;
    }
    reader.await?
}

fn decode_state(key: &str, bytes: &[u8]) -> Result<ProducerState, RunError> {
    let bad = |reason: String| RunError::State {
        key: key.to_owned(),
        reason,
    };
    let (id, body) = wire::split(bytes).map_err(|e| bad(e.to_string()))?;
    // Records written before entity states carried `report` are read with
    // their own version's layout.
    let v1_id = catalogue::subject_of_local_id(id)
        .is_some_and(|(subject, version)| subject.name == "ProducerState" && version == 1);
    if v1_id {
        return v1::ProducerState::decode_all(body)
            .map(ProducerState::from)
            .map_err(|e| bad(e.to_string()));
    }
    ProducerState::decode_all(body).map_err(|e| bad(e.to_string()))
}

fn read(
    client: rdkafka::ClientConfig,
    connection: &str,
    partition: i32,
    expected: i32,
    tx: tokio::sync::mpsc::Sender<Vec<StateRecord>>,
) -> Result<(), RunError> {
    let stopped = || RunError::Config("the state's reader was stopped".into());
    let mut out = Vec::with_capacity(BATCH);
    let found = std::cell::Cell::new(expected);
    let wanted = |p: skolflode_kafka::Partitions| {
        found.set(p.count);
        p.count == expected && p.partition == partition
    };
    skolflode_kafka::read_partitions_to_end(
        client,
        PRODUCER_STATE,
        wanted,
        Duration::from_secs(600),
        |m| {
            let Some(key) = m.key() else { return Ok(()) };
            let (_, key_body) = wire::split(key).map_err(|e| RunError::State {
                key: String::new(),
                reason: e.to_string(),
            })?;
            let key = String::decode_all(key_body).map_err(|e| RunError::State {
                key: String::new(),
                reason: e.to_string(),
            })?;
            if StateKey::parse(&key).is_none_or(|k| k.connection() != connection) {
                return Ok(());
            }
            let value = match m.payload() {
                None => None,
                Some(bytes) => Some(decode_state(&key, bytes)?),
            };
            out.push((key, value));
            if out.len() >= BATCH {
                let batch = std::mem::replace(&mut out, Vec::with_capacity(BATCH));
                tx.blocking_send(batch).map_err(|_| stopped())?;
            }
            Ok::<(), RunError>(())
        },
    )?;
    if found.get() != expected {
        return Err(RunError::Config(format!(
            "{PRODUCER_STATE} has {} partitions, skolflode expects {expected}: a connection's \
             state lives in the partition its name hashes to, so the count must never change",
            found.get()
        )));
    }
    if !out.is_empty() {
        tx.blocking_send(out).map_err(|_| stopped())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use skolflode_schemas::records::{Cursor, EntityState};
    use skolflode_schemas::{Bytes, TimestampMillis};

    #[test]
    fn a_connection_s_state_has_one_stable_partition() {
        // SHA-256("kommun-0180-admin") begins 0x882a3a68 (computed with
        // Python's hashlib); 0x882a3a68 mod 6 = 4. The value is a contract
        // with the state already written, so it is pinned here.
        assert_eq!(state_partition("kommun-0180-admin").ok(), Some(4));
        let spread: std::collections::HashSet<i32> = (0..60)
            .filter_map(|i| state_partition(&format!("kommun-{i:04}")).ok())
            .collect();
        assert_eq!(spread.len(), 6, "names spread over every partition");
    }

    #[test]
    fn version_1_state_records_are_still_read() {
        let old = v1::ProducerState {
            entity: Some(v1::EntityState {
                content_hash: "ab".into(),
                image: Bytes(vec![1, 2, 3]),
                observed_at: TimestampMillis(9),
            }),
            cursor: None,
        };
        let id_v1 = catalogue::subject("ProducerState")
            .map(|_| 1000 * 11 + 1)
            .unwrap_or_default();
        assert_eq!(
            catalogue::subject_of_local_id(id_v1).map(|(s, v)| (s.name, v)),
            Some(("ProducerState", 1))
        );
        let read = decode_state("k", &wire::encode(id_v1, &old));
        assert!(
            matches!(read, Ok(ProducerState { entity: Some(EntityState { report: 0, ref image, .. }), .. }) if image.0 == [1, 2, 3])
        );
        let new = ProducerState {
            entity: None,
            cursor: Some(Cursor {
                polls: 3,
                ..Default::default()
            }),
        };
        let id_now = catalogue::local_schema_id("ProducerState").unwrap_or_default();
        assert_eq!(
            decode_state("k", &wire::encode(id_now, &new)).ok(),
            Some(new)
        );
    }
}

//! Change detection: compare what a vendor shows with the last version the
//! producer saw, and say what changed.
//!
//! A version is identified by its content hash: SHA-256 over the entity's
//! Avro encoding with `meta` removed, so that a vendor touching
//! `meta.modified` without changing anything produces no event, and the same
//! item read twice (page overlaps, incremental-read overlap windows,
//! restarts) is absorbed.

use sha2::{Digest, Sha256};
use skolflode_schemas::envelope::Entity;
use skolflode_schemas::records::EntityState;
use skolflode_schemas::{Bytes, ChangeEvent, Op, Source, TimestampMillis};

/// Lowercase hex SHA-256 of the entity's content (its encoding without
/// `meta`).
pub fn content_hash<E: Entity>(entity: &E) -> String {
    let mut content = entity.clone();
    *content.meta_mut() = None;
    hex::encode(Sha256::digest(content.to_avro_bytes()))
}

/// The event id: the same version of the same entity from the same
/// connection always gets the same id.
pub fn event_id(connection: &str, entity_id: &str, op: Op, version_hash: &str) -> String {
    let mut h = Sha256::new();
    for part in [connection, entity_id, op.symbol(), version_hash] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex::encode(&h.finalize()[..16])
}

/// What an observation amounts to.
#[derive(Debug)]
pub enum Outcome<E> {
    /// The same content as last time.
    Unchanged,
    /// A new version: the event to publish and the state to remember.
    Changed(Box<ChangeEvent<E>>, EntityState),
}

/// Compare an observed entity with the last state. `initial` marks the
/// first full read of an endpoint, whose new entities are snapshot reads
/// rather than creations.
pub fn observe<E: Entity>(
    known: Option<&EntityState>,
    entity: E,
    initial: bool,
    source: &Source,
    observed_at: TimestampMillis,
) -> Outcome<E> {
    let hash = content_hash(&entity);
    let before = match known {
        Some(state) if state.content_hash == hash => return Outcome::Unchanged,
        Some(state) => E::decode_all(&state.image.0).ok(),
        None => None,
    };
    let op = match (known, initial) {
        (Some(_), _) => Op::Update,
        (None, true) => Op::SnapshotRead,
        (None, false) => Op::Create,
    };
    let state = EntityState {
        content_hash: hash.clone(),
        image: Bytes(entity.to_avro_bytes()),
        observed_at,
    };
    let event = ChangeEvent {
        event_id: event_id(&source.connection, entity.id(), op, &hash),
        op,
        before,
        after: Some(entity),
        source: source.clone(),
        observed_at,
        content_hash: Some(hash),
    };
    Outcome::Changed(Box::new(event), state)
}

/// The event for an entity the vendor no longer shows.
pub fn deleted<E: Entity>(
    known: &EntityState,
    entity_id: &str,
    source: &Source,
    observed_at: TimestampMillis,
) -> ChangeEvent<E> {
    ChangeEvent {
        event_id: event_id(
            &source.connection,
            entity_id,
            Op::Delete,
            &known.content_hash,
        ),
        op: Op::Delete,
        before: E::decode_all(&known.image.0).ok(),
        after: None,
        source: source.clone(),
        observed_at,
        content_hash: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skolflode_schemas::entities::{Activity, DutyAssignment, Meta, ObjectReference};

    fn activity(teacher: &str, modified: i64) -> Activity {
        Activity {
            id: "a1".into(),
            meta: Some(Meta {
                created: None,
                modified: Some(TimestampMillis(modified)),
            }),
            display_name: "MA 7A".into(),
            teachers: vec![DutyAssignment {
                duty: ObjectReference::new(teacher),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn source() -> Source {
        Source {
            vendor: "ss12000".into(),
            connection: "c".into(),
            endpoint: "/activities".into(),
            ..Default::default()
        }
    }

    #[test]
    fn versions_create_update_and_absorb_repeats() {
        let first = observe(
            None,
            activity("d1", 1),
            true,
            &source(),
            TimestampMillis(10),
        );
        let Outcome::Changed(event, state) = first else {
            panic!("new entity unseen")
        };
        assert_eq!(event.op, Op::SnapshotRead);
        assert!(event.before.is_none());

        // Only meta changed: nothing happened.
        assert!(matches!(
            observe(
                Some(&state),
                activity("d1", 2),
                false,
                &source(),
                TimestampMillis(11)
            ),
            Outcome::Unchanged
        ));

        // The teacher list was overwritten: an update whose before image
        // holds the old teacher.
        let Outcome::Changed(update, newer) = observe(
            Some(&state),
            activity("d2", 3),
            false,
            &source(),
            TimestampMillis(12),
        ) else {
            panic!("overwrite unseen")
        };
        assert_eq!(update.op, Op::Update);
        assert_eq!(
            update
                .before
                .as_ref()
                .map(|b| b.teachers[0].duty.id.as_str()),
            Some("d1")
        );
        assert_eq!(
            update
                .after
                .as_ref()
                .map(|a| a.teachers[0].duty.id.as_str()),
            Some("d2")
        );
        assert_ne!(update.event_id, event.event_id);

        let gone: ChangeEvent<Activity> = deleted(&newer, "a1", &source(), TimestampMillis(13));
        assert_eq!(gone.op, Op::Delete);
        assert_eq!(
            gone.before.map(|b| b.teachers[0].duty.id.clone()),
            Some("d2".into())
        );
        assert!(gone.after.is_none() && gone.content_hash.is_none());
    }

    #[test]
    fn the_same_version_always_gets_the_same_event_id() {
        let a = observe(
            None,
            activity("d1", 1),
            false,
            &source(),
            TimestampMillis(10),
        );
        let b = observe(
            None,
            activity("d1", 5),
            false,
            &source(),
            TimestampMillis(99),
        );
        match (a, b) {
            (Outcome::Changed(a, _), Outcome::Changed(b, _)) => assert_eq!(a.event_id, b.event_id),
            _ => panic!("expected events"),
        }
    }
}

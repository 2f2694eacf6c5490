//! Change detection: compare what a vendor shows with the last version the
//! producer saw, and say what changed.
//!
//! A version is identified by its content hash: SHA-256 over the entity's
//! Avro encoding with `meta` removed, so that a vendor touching
//! `meta.modified` without changing anything produces no event, and the same
//! item read twice (page overlaps, incremental-read overlap windows,
//! restarts) is absorbed.
//!
//! Versions travel as encoded images: the producer hashes an entity once,
//! keeps its image as bytes, and splices held images into events as their
//! `before` — nothing is decoded and encoded again on the hot path.

use sha2::{Digest, Sha256};
use skolflode_schemas::codec::{write_long, write_str};
use skolflode_schemas::envelope::{EncodedChange, Entity};
use skolflode_schemas::records::EntityState;
use skolflode_schemas::{Op, Source, TimestampMillis};

/// A SHA-256 content hash.
pub type Hash = [u8; 32];

fn hash_without_meta<E: Entity>(mut entity: E) -> Hash {
    *entity.meta_mut() = None;
    Sha256::digest(entity.to_avro_bytes()).into()
}

/// Lowercase hex of a hash. Three per event: `hex::encode` goes through a
/// char iterator and showed in profiles.
pub fn hex32(hash: &Hash) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(64);
    for b in hash {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
    // Only ASCII digits were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Lowercase hex SHA-256 of the entity's content (its encoding without
/// `meta`).
pub fn content_hash<E: Entity>(entity: &E) -> String {
    hex32(&hash_without_meta(entity.clone()))
}

/// One version of an entity as a vendor showed it, ready to compare and
/// publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub id: String,
    /// The vendor's `meta.modified`, UTC milliseconds.
    pub modified: Option<i64>,
    pub hash: Hash,
    /// The entity's Avro encoding, `meta` included.
    pub image: Vec<u8>,
    /// The UTC day of the entity's time, in days since the epoch (see
    /// [`Version::aged`]); [`NEVER`] for entities that have none.
    pub age: u16,
}

impl Version {
    pub fn of<E: Entity>(mut entity: E) -> Self {
        let image = entity.to_avro_bytes();
        let id = entity.id().to_owned();
        let modified = entity
            .meta_mut()
            .as_ref()
            .and_then(|m| m.modified)
            .map(|m| m.0);
        Self {
            id,
            modified,
            hash: hash_without_meta(entity),
            image,
            age: NEVER,
        }
    }

    /// With the instant (UTC milliseconds) after which the entity leaves
    /// the producer's read window once it is older than the window: a
    /// lesson's start, an attendance record's creation.
    pub fn aged(mut self, at: Option<i64>) -> Self {
        self.age = age_days(at);
        self
    }

    /// The first eight bytes of the content hash: what the producer keeps
    /// in memory to compare versions.
    pub fn fingerprint(&self) -> u64 {
        fingerprint(&self.hash)
    }
}

/// An age for entities that never leave the read window.
pub const NEVER: u16 = u16::MAX;

/// The age kept for an instant (UTC milliseconds): its UTC day, in days
/// since the epoch (1970 to 2149), `None` meaning [`NEVER`]. The read
/// window's ends are UTC midnights, so a day says on which side of them an
/// instant lies.
pub fn age_days(millis: Option<i64>) -> u16 {
    millis.map_or(NEVER, |m| {
        m.div_euclid(86_400_000).clamp(0, i64::from(NEVER) - 1) as u16
    })
}

/// The first eight bytes of a content hash.
pub fn fingerprint(hash: &Hash) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(first)
}

/// What the producer holds of an entity: the last version's hash and
/// image, and when it was observed. An entity whose item the vendor serves
/// but that was never understood is held without image (a
/// [placeholder](Held::is_placeholder)): it is present for reconciliation,
/// yet no event was ever published for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub hash: Hash,
    pub image: Box<[u8]>,
    pub observed_at: i64,
    /// Digest of the findings or the dead letter last published for the
    /// item (0: none); see [`report_digest`].
    pub report: u64,
    /// The producer's number of the last full read that saw it (0: none
    /// since the start); not stored. Marking entries instead of collecting
    /// the ids a full read saw spares a set of every id per full read.
    pub seen_in: u32,
    /// [`Version::age`]; not stored (read again from the image).
    pub age: u16,
}

impl Held {
    /// An item seen but never understood: only its report is held.
    pub fn placeholder(observed_at: i64, report: u64, seen_in: u32) -> Self {
        Self {
            hash: [0; 32],
            image: Box::new([]),
            observed_at,
            report,
            seen_in,
            age: NEVER,
        }
    }

    /// Whether no version of the entity was ever published.
    pub fn is_placeholder(&self) -> bool {
        self.image.is_empty()
    }

    /// The held version, unless this is a placeholder.
    pub fn version(&self) -> Option<&Self> {
        (!self.is_placeholder()).then_some(self)
    }

    /// The held version's [`fingerprint`], unless this is a placeholder.
    pub fn fingerprint(&self) -> Option<u64> {
        self.version().map(|v| fingerprint(&v.hash))
    }

    /// From the state topic's record; its age is the caller's to set.
    pub fn from_state(state: EntityState) -> Result<Self, String> {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&state.content_hash, &mut hash)
            .map_err(|e| format!("content hash {:?}: {e}", state.content_hash))?;
        Ok(Self {
            hash,
            image: state.image.0.into_boxed_slice(),
            observed_at: state.observed_at.0,
            report: state.report as u64,
            seen_in: 0,
            age: NEVER,
        })
    }

    /// The state topic's record, as a `ProducerState` body with this
    /// entity and no cursor.
    pub fn encode_state(&self, out: &mut Vec<u8>) {
        out.push(2); // entity: the EntityState branch
        write_str(out, &hex32(&self.hash));
        write_long(out, self.image.len() as i64);
        out.extend_from_slice(&self.image);
        write_long(out, self.observed_at);
        write_long(out, self.report as i64);
        out.push(0); // cursor: null
    }
}

/// A 64-bit digest of what is published about an item besides its event
/// (its findings, or a dead letter's reason and bytes), never 0: a
/// finding or dead letter is published again only when it changes.
pub fn report_digest<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut h = Sha256::new();
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let digest: Hash = h.finalize().into();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first).max(1)
}

/// The event id: connection, entity, operation, version and the instant
/// of observation, hashed. The instant makes it unique per event: a vendor
/// that puts an old teacher back publishes a version seen before, and an
/// id made of the version alone would let consumers that drop repeated ids
/// drop the revert. (A page redone after an aborted transaction gets new
/// ids, but read_committed consumers never see the aborted records.)
pub fn event_id(
    connection: &str,
    entity_id: &str,
    op: Op,
    version_hash: &str,
    observed_at: TimestampMillis,
) -> String {
    let mut h = Sha256::new();
    for part in [connection, entity_id, op.symbol(), version_hash] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    h.update(observed_at.0.to_be_bytes());
    let digest: Hash = h.finalize().into();
    let mut id = hex32(&digest);
    id.truncate(32);
    id
}

/// What observing a version amounts to: `None` when it is the version
/// held (`known`: the held version's [`fingerprint`], none for a
/// placeholder or an entity not held), otherwise the operation. `initial`
/// marks the first full read of an endpoint, whose new entities are
/// snapshot reads, not creations.
///
/// Comparing 64 bits of SHA-256 instead of 256 takes a change for no
/// change with probability 2^-64 per update.
pub fn classify(known: Option<u64>, hash: &Hash, initial: bool) -> Option<Op> {
    match (known, initial) {
        (Some(held), _) if held == fingerprint(hash) => None,
        (Some(_), _) => Some(Op::Update),
        (None, true) => Some(Op::SnapshotRead),
        (None, false) => Some(Op::Create),
    }
}

/// Append the body of the change event for a new version: `before` is the
/// held image (for updates).
pub fn encode_change(
    out: &mut Vec<u8>,
    op: Op,
    before: Option<&[u8]>,
    after: &Version,
    source: &Source,
    observed_at: TimestampMillis,
) {
    let hash = hex32(&after.hash);
    EncodedChange {
        event_id: &event_id(&source.connection, &after.id, op, &hash, observed_at),
        op,
        before,
        after: Some(&after.image),
        source,
        observed_at,
        content_hash: Some(&hash),
    }
    .encode(out);
}

/// Append the body of the event for an entity the vendor no longer shows.
pub fn encode_delete(
    out: &mut Vec<u8>,
    known: &Held,
    entity_id: &str,
    source: &Source,
    observed_at: TimestampMillis,
) {
    EncodedChange {
        event_id: &event_id(
            &source.connection,
            entity_id,
            Op::Delete,
            &hex32(&known.hash),
            observed_at,
        ),
        op: Op::Delete,
        before: Some(&known.image),
        after: None,
        source,
        observed_at,
        content_hash: None,
    }
    .encode(out);
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use skolflode_schemas::entities::{Activity, DutyAssignment, Meta, ObjectReference};
    use skolflode_schemas::records::ProducerState;
    use skolflode_schemas::{AvroType, Bytes, ChangeEvent};

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

    fn held(version: &Version, at: i64) -> Held {
        Held {
            hash: version.hash,
            image: version.image.clone().into_boxed_slice(),
            observed_at: at,
            report: 0,
            seen_in: 0,
            age: NEVER,
        }
    }

    fn change(op: Op, before: Option<&Held>, after: &Version) -> ChangeEvent<Activity> {
        let mut out = Vec::new();
        let before = before.map(|b| &*b.image);
        encode_change(&mut out, op, before, after, &source(), TimestampMillis(7));
        ChangeEvent::decode_all(&out).expect("our own event decodes")
    }

    #[test]
    fn versions_create_update_and_absorb_repeats() {
        let first = Version::of(activity("d1", 1));
        assert_eq!(first.modified, Some(1));
        assert_eq!(hex::encode(first.hash), content_hash(&activity("d1", 1)));
        assert_eq!(hex32(&first.hash), hex::encode(first.hash));
        assert_eq!(classify(None, &first.hash, true), Some(Op::SnapshotRead));
        assert_eq!(classify(None, &first.hash, false), Some(Op::Create));
        let state = held(&first, 10);

        let event = change(Op::SnapshotRead, None, &first);
        assert!(event.before.is_none());
        assert_eq!(event.after, Some(activity("d1", 1)));
        assert_eq!(event.content_hash, Some(content_hash(&activity("d1", 1))));

        // Only meta changed: nothing happened.
        let touched = Version::of(activity("d1", 2));
        assert_eq!(classify(state.fingerprint(), &touched.hash, false), None);

        // The teacher list was overwritten: an update whose before image
        // holds the old teacher.
        let overwritten = Version::of(activity("d2", 3));
        assert_eq!(
            classify(state.fingerprint(), &overwritten.hash, false),
            Some(Op::Update)
        );
        let update = change(Op::Update, Some(&state), &overwritten);
        assert_eq!(update.before, Some(activity("d1", 1)));
        assert_eq!(update.after, Some(activity("d2", 3)));
        assert_ne!(update.event_id, event.event_id);

        let mut out = Vec::new();
        encode_delete(
            &mut out,
            &held(&overwritten, 12),
            "a1",
            &source(),
            TimestampMillis(13),
        );
        let gone = ChangeEvent::<Activity>::decode_all(&out).expect("decodes");
        assert_eq!(gone.op, Op::Delete);
        assert_eq!(gone.before, Some(activity("d2", 3)));
        assert!(gone.after.is_none() && gone.content_hash.is_none());
    }

    #[test]
    fn a_version_seen_again_is_a_new_event() {
        // d1 → d2 → d1 → d2: the second d1→d2 update has the same before
        // and after as the first, and still its own id.
        let (d1, d2) = (
            Version::of(activity("d1", 1)),
            Version::of(activity("d2", 2)),
        );
        let mut ids = std::collections::HashSet::new();
        for (at, (from, to)) in [(&d1, &d2), (&d2, &d1), (&d1, &d2)].into_iter().enumerate() {
            let mut out = Vec::new();
            let held = held(from, at as i64);
            encode_change(
                &mut out,
                Op::Update,
                Some(&held.image),
                to,
                &source(),
                TimestampMillis(at as i64 + 10),
            );
            let event = ChangeEvent::<Activity>::decode_all(&out).expect("decodes");
            assert!(ids.insert(event.event_id));
        }
        // The id is a function of what it says, nothing else.
        assert_eq!(
            event_id("c", "a1", Op::Create, "h", TimestampMillis(1)),
            event_id("c", "a1", Op::Create, "h", TimestampMillis(1))
        );
    }

    #[test]
    fn held_state_round_trips_through_the_state_record() {
        let version = Version::of(activity("d1", 1));
        let state = Held {
            report: 12_345,
            ..held(&version, 99)
        };
        let mut ours = Vec::new();
        state.encode_state(&mut ours);
        let typed = ProducerState {
            entity: Some(EntityState {
                content_hash: hex::encode(version.hash),
                image: Bytes(version.image.clone()),
                observed_at: TimestampMillis(99),
                report: 12_345,
            }),
            cursor: None,
        };
        assert_eq!(ours, typed.to_avro_bytes());
        let back = Held::from_state(typed.entity.expect("entity")).expect("valid");
        assert_eq!(back, state);
        assert!(Held::from_state(EntityState {
            content_hash: "zz".into(),
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn a_placeholder_is_not_a_version() {
        let version = Version::of(activity("d1", 1));
        let placeholder = Held::placeholder(5, 77, 1);
        assert!(placeholder.is_placeholder());
        assert_eq!(
            classify(placeholder.fingerprint(), &version.hash, false),
            Some(Op::Create)
        );
        assert_eq!(
            classify(placeholder.fingerprint(), &version.hash, true),
            Some(Op::SnapshotRead)
        );
        assert!(!held(&version, 1).is_placeholder());
    }

    #[test]
    fn report_digests_change_with_any_part_and_are_never_zero() {
        let a = report_digest([b"reason".as_slice(), b"raw"]);
        assert_ne!(a, 0);
        assert_eq!(a, report_digest([b"reason".as_slice(), b"raw"]));
        assert_ne!(a, report_digest([b"reason".as_slice(), b"raw2"]));
        // Parts are length-framed: moving a byte between them changes it.
        assert_ne!(a, report_digest([b"reaso".as_slice(), b"nraw"]));
    }
}

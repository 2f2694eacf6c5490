//! Maps from entity id to what is held of it, keeping each id's hash.
//!
//! A city's connection holds millions of entities. With a plain
//! `HashMap<String, _>` every resize hashes every id again, reading each
//! id's bytes from wherever they are on the heap, and moving a
//! transaction's state into the committed state hashes each id once more:
//! together a fifth of the connection loop's CPU in the producer
//! benchmark. Here an id is hashed once, into a [`Key`], when the runner
//! first looks it up; the same key serves the transaction's state and the
//! committed state ([`super::holding`]).
//!
//! The committed state keeps an id in 16 bytes, its [`CompactId`]: the
//! UUID itself when the id is one in canonical form (as the standard's ids
//! are), otherwise the first 16 bytes of the id's SHA-256.

use std::hash::BuildHasher;
use std::sync::OnceLock;

use hashbrown::HashTable;

/// An id in 16 bytes.
pub(super) type CompactId = [u8; 16];

/// Lowercase hex digits' values; 0x10 marks anything else.
const HEX: [u8; 256] = {
    let mut table = [0x10u8; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Where each byte's two digits begin in a canonical UUID.
const DIGITS_AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];

/// The UUID's bytes when `id` is one written in canonical form (lowercase,
/// hyphens at 8, 13, 18 and 23): only then does the same UUID have one
/// text, so that two distinct ids never share bytes.
fn canonical_uuid(id: &str) -> Option<CompactId> {
    let bytes: &[u8; 36] = id.as_bytes().try_into().ok()?;
    if bytes[8] != b'-' || bytes[13] != b'-' || bytes[18] != b'-' || bytes[23] != b'-' {
        return None;
    }
    let mut out = [0u8; 16];
    let mut invalid = 0u8;
    for (byte, &at) in out.iter_mut().zip(&DIGITS_AT) {
        let (high, low) = (HEX[usize::from(bytes[at])], HEX[usize::from(bytes[at + 1])]);
        invalid |= high | low;
        *byte = high << 4 | (low & 0xf);
    }
    (invalid & 0x10 == 0).then_some(out)
}

/// An id's [`CompactId`].
pub(super) fn compact_id(id: &str) -> CompactId {
    canonical_uuid(id).unwrap_or_else(|| {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(id.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        out
    })
}

/// An id with its hash, computed once where the id enters the runner
/// and passed to every map that is asked about it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Key<'a> {
    hash: u64,
    id: &'a str,
    compact: CompactId,
}

impl<'a> Key<'a> {
    pub(super) fn new(id: &'a str) -> Self {
        let compact = compact_id(id);
        Key {
            hash: Self::hash_compact(&compact),
            id,
            compact,
        }
    }

    /// The hash of a compact id. The seed is random per process, as
    /// `HashMap`'s is, so a vendor cannot choose ids that collide.
    pub(super) fn hash_compact(compact: &CompactId) -> u64 {
        static SEED: OnceLock<foldhash::fast::RandomState> = OnceLock::new();
        SEED.get_or_init(Default::default).hash_one(compact)
    }

    pub(super) fn id(&self) -> &'a str {
        self.id
    }

    pub(super) fn hash(&self) -> u64 {
        self.hash
    }

    pub(super) fn compact(&self) -> &CompactId {
        &self.compact
    }
}

struct Slot<V> {
    hash: u64,
    compact: CompactId,
    id: Box<str>,
    value: V,
}

/// Entity id → `V`.
pub(super) struct IdMap<V> {
    table: HashTable<Slot<V>>,
}

impl<V> Default for IdMap<V> {
    fn default() -> Self {
        Self {
            table: HashTable::new(),
        }
    }
}

impl<V> IdMap<V> {
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    pub(super) fn get(&self, key: Key<'_>) -> Option<&V> {
        self.table
            .find(key.hash, |s| &*s.id == key.id)
            .map(|s| &s.value)
    }

    pub(super) fn get_mut(&mut self, key: Key<'_>) -> Option<&mut V> {
        self.table
            .find_mut(key.hash, |s| &*s.id == key.id)
            .map(|s| &mut s.value)
    }

    /// Set the value of the key's id; the id is boxed only when it is new.
    pub(super) fn insert(&mut self, key: Key<'_>, value: V) {
        match self.table.find_mut(key.hash, |s| *s.id == *key.id) {
            Some(slot) => slot.value = value,
            None => {
                let slot = Slot {
                    hash: key.hash,
                    compact: key.compact,
                    id: key.id.into(),
                    value,
                };
                self.table.insert_unique(key.hash, slot, |s| s.hash);
            }
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.table.iter().map(|s| (&*s.id, &s.value))
    }

    /// Every id (with its hash and compact id) and value, leaving the map
    /// empty.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = (u64, CompactId, Box<str>, V)> + '_ {
        self.table
            .drain()
            .map(|s| (s.hash, s.compact, s.id, s.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_map() {
        let mut map: IdMap<Option<u32>> = IdMap::default();
        for n in 0..10_000_u32 {
            let id = format!("id-{n}");
            map.insert(Key::new(&id), Some(n));
        }
        map.insert(Key::new("id-7"), Some(70));
        assert_eq!(map.len(), 10_000);
        assert_eq!(map.get(Key::new("id-7")), Some(&Some(70)));
        if let Some(v) = map.get_mut(Key::new("id-8")) {
            *v = None;
        }
        assert_eq!(map.get(Key::new("id-8")), Some(&None));
        assert_eq!(map.get(Key::new("new")), None);
        assert_eq!(
            map.iter().filter(|(id, _)| id.starts_with("id-")).count(),
            10_000
        );
        let drained: Vec<_> = map.drain().collect();
        assert_eq!((drained.len(), map.len()), (10_000, 0));
        assert_eq!(Key::new("a").hash, Key::new("a").hash);
        assert_ne!(Key::new("a").hash, Key::new("b").hash);
    }

    #[test]
    fn compact_ids_are_uuids_in_canonical_form_else_hashes() {
        let uuid = "0123abcd-4567-89ab-cdef-0123456789ab";
        assert_eq!(
            compact_id(uuid),
            [
                0x01, 0x23, 0xab, 0xcd, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67,
                0x89, 0xab
            ]
        );
        // The same UUID in capitals is another id to the vendor: hashed.
        let upper = uuid.to_uppercase();
        assert_ne!(compact_id(&upper), compact_id(uuid));
        assert_eq!(compact_id(&upper), compact_id(&upper));
        assert_ne!(compact_id("a1"), compact_id("a2"));
        assert_eq!(canonical_uuid("0123abcd-4567-89ab-cdef-0123456789a"), None);
        assert_eq!(canonical_uuid("0123abcd_4567-89ab-cdef-0123456789ab"), None);
        assert_eq!(canonical_uuid("0123abcg-4567-89ab-cdef-0123456789ab"), None);
        assert_eq!(Key::new(uuid).compact(), &compact_id(uuid));
    }
}

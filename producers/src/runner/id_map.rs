//! Maps from entity id to what is held of it, keeping each id's hash.
//!
//! A city's connection holds millions of entities. With a plain
//! `HashMap<String, _>` every resize hashes every id again, reading each
//! id's bytes from wherever they are on the heap, and moving a
//! transaction's state into the committed state hashes each id once more:
//! together a fifth of the connection loop's CPU in the producer
//! benchmark. Here an id is hashed once when it enters a transaction's
//! state; the hash travels with it into the committed state and is what
//! every resize uses.

use std::hash::BuildHasher;
use std::sync::OnceLock;

use hashbrown::HashTable;

/// The hash of an id. The seed is random per process, as `HashMap`'s is,
/// so a vendor cannot choose ids that collide.
pub(super) fn id_hash(id: &str) -> u64 {
    static SEED: OnceLock<foldhash::fast::RandomState> = OnceLock::new();
    SEED.get_or_init(Default::default).hash_one(id)
}

struct Slot<V> {
    hash: u64,
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
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    pub(super) fn get(&self, hash: u64, id: &str) -> Option<&V> {
        self.table.find(hash, |s| &*s.id == id).map(|s| &s.value)
    }

    pub(super) fn get_mut(&mut self, hash: u64, id: &str) -> Option<&mut V> {
        self.table
            .find_mut(hash, |s| &*s.id == id)
            .map(|s| &mut s.value)
    }

    /// Set the value of `id` (whose hash is `hash`).
    pub(super) fn insert(&mut self, hash: u64, id: &str, value: V) {
        match self.table.find_mut(hash, |s| &*s.id == id) {
            Some(slot) => slot.value = value,
            None => {
                self.table.insert_unique(
                    hash,
                    Slot {
                        hash,
                        id: id.into(),
                        value,
                    },
                    |s| s.hash,
                );
            }
        }
    }

    /// [`Self::insert`] of an id already boxed, as it comes out of
    /// [`Self::drain`].
    fn insert_boxed(&mut self, hash: u64, id: Box<str>, value: V) {
        match self.table.find_mut(hash, |s| s.id == id) {
            Some(slot) => slot.value = value,
            None => {
                self.table
                    .insert_unique(hash, Slot { hash, id, value }, |s| s.hash);
            }
        }
    }

    pub(super) fn remove(&mut self, hash: u64, id: &str) -> Option<V> {
        self.table
            .find_entry(hash, |s| &*s.id == id)
            .ok()
            .map(|e| e.remove().0.value)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.table.iter().map(|s| (&*s.id, &s.value))
    }
}

impl<V> IdMap<Option<V>> {
    /// Apply a transaction's state: `Some` sets, `None` removes; the
    /// transaction's map is left empty.
    pub(super) fn apply_to(&mut self, committed: &mut IdMap<V>) {
        // No `reserve(self.len())`: most of an incremental read's entities
        // are held already, and reserving for them could double a city's
        // table (hundreds of MiB) for nothing.
        for Slot { hash, id, value } in self.table.drain() {
            match value {
                Some(v) => committed.insert_boxed(hash, id, v),
                None => {
                    committed.remove(hash, &id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_map() {
        let mut pending: IdMap<Option<u32>> = IdMap::default();
        let mut held: IdMap<u32> = IdMap::default();
        for n in 0..10_000_u32 {
            let id = format!("id-{n}");
            held.insert(id_hash(&id), &id, n);
        }
        held.insert(id_hash("id-7"), "id-7", 70);
        assert_eq!(held.len(), 10_000);
        assert_eq!(held.get(id_hash("id-7"), "id-7"), Some(&70));
        if let Some(v) = held.get_mut(id_hash("id-8"), "id-8") {
            *v = 80;
        }
        pending.insert(id_hash("id-8"), "id-8", None);
        pending.insert(id_hash("id-9"), "id-9", Some(90));
        pending.insert(id_hash("new"), "new", Some(1));
        pending.apply_to(&mut held);
        assert_eq!(pending.len(), 0);
        assert_eq!(held.len(), 10_000);
        assert_eq!(held.get(id_hash("id-8"), "id-8"), None);
        assert_eq!(held.get(id_hash("id-9"), "id-9"), Some(&90));
        assert_eq!(held.get(id_hash("new"), "new"), Some(&1));
        assert_eq!(held.remove(id_hash("new"), "new"), Some(1));
        assert_eq!(held.remove(id_hash("new"), "new"), None);
        assert_eq!(
            held.iter().filter(|(id, _)| id.starts_with("id-")).count(),
            9_999
        );
        assert_eq!(id_hash("a"), id_hash("a"));
        assert_ne!(id_hash("a"), id_hash("b"));
    }
}

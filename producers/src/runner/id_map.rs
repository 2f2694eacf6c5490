//! Maps from entity id to what is held of it, keeping each id's hash.
//!
//! A city's connection holds millions of entities. With a plain
//! `HashMap<String, _>` every resize hashes every id again, reading each
//! id's bytes from wherever they are on the heap, and moving a
//! transaction's state into the committed state hashes each id once more:
//! together a fifth of the connection loop's CPU in the producer
//! benchmark. Here an id is hashed once, into a [`Key`], when the runner
//! first looks it up; the same key serves the transaction's state and the
//! committed state, the hash travels with the id into the committed state
//! and is what every resize uses.

use std::hash::BuildHasher;
use std::sync::OnceLock;

use hashbrown::HashTable;

/// An id with its hash, computed once where the id enters the runner
/// and passed to every map that is asked about it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Key<'a> {
    hash: u64,
    id: &'a str,
}

impl<'a> Key<'a> {
    /// The seed is random per process, as `HashMap`'s is, so a vendor
    /// cannot choose ids that collide.
    pub(super) fn new(id: &'a str) -> Self {
        static SEED: OnceLock<foldhash::fast::RandomState> = OnceLock::new();
        Key {
            hash: SEED.get_or_init(Default::default).hash_one(id),
            id,
        }
    }

    pub(super) fn id(&self) -> &'a str {
        self.id
    }
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

    pub(super) fn insert(&mut self, key: Key<'_>, value: V) {
        self.put(key.hash, key.id, value);
    }

    /// Set the value of the id whose hash is `hash`; the id is boxed only
    /// when it is new (it comes boxed out of a transaction's map).
    fn put(&mut self, hash: u64, id: impl AsRef<str> + Into<Box<str>>, value: V) {
        match self.table.find_mut(hash, |s| *s.id == *id.as_ref()) {
            Some(slot) => slot.value = value,
            None => {
                let id = id.into();
                self.table
                    .insert_unique(hash, Slot { hash, id, value }, |s| s.hash);
            }
        }
    }

    pub(super) fn remove(&mut self, key: Key<'_>) -> Option<V> {
        self.table
            .find_entry(key.hash, |s| &*s.id == key.id)
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
                Some(v) => committed.put(hash, id, v),
                None => {
                    committed.remove(Key { hash, id: &id });
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
            held.insert(Key::new(&id), n);
        }
        held.insert(Key::new("id-7"), 70);
        assert_eq!(held.len(), 10_000);
        assert_eq!(held.get(Key::new("id-7")), Some(&70));
        if let Some(v) = held.get_mut(Key::new("id-8")) {
            *v = 80;
        }
        pending.insert(Key::new("id-8"), None);
        pending.insert(Key::new("id-9"), Some(90));
        pending.insert(Key::new("new"), Some(1));
        pending.apply_to(&mut held);
        assert_eq!(pending.len(), 0);
        assert_eq!(held.len(), 10_000);
        assert_eq!(held.get(Key::new("id-8")), None);
        assert_eq!(held.get(Key::new("id-9")), Some(&90));
        assert_eq!(held.get(Key::new("new")), Some(&1));
        assert_eq!(held.remove(Key::new("new")), Some(1));
        assert_eq!(held.remove(Key::new("new")), None);
        assert_eq!(
            held.iter().filter(|(id, _)| id.starts_with("id-")).count(),
            9_999
        );
        assert_eq!(Key::new("a").hash, Key::new("a").hash);
        assert_ne!(Key::new("a").hash, Key::new("b").hash);
    }
}

//! What a connection holds of the entities it has published, in memory
//! bounded by what is live rather than by history.
//!
//! Comparing what a vendor shows with what was published needs, per
//! entity, only its id and its version's fingerprint; that, with a few
//! small fields, is all that stays in memory (an [`Entry`], 40 bytes).
//! Everything else — the full content hash, the encoded image that becomes
//! the next event's `before`, the findings' digest, the id's text — lives
//! in a [`SideStore`] on disk, read only for an update, a delete or a
//! change of findings. The store is a cache of the state topic: rebuilt
//! from it at every start, written after every commit.
//!
//! Entries live in 64 hash tables chosen by the id's hash, so that a table
//! growing doubles one sixty-fourth of the memory, not all of it at once.

use hashbrown::HashTable;
use skolflode_kafka::{SideStore, StoreReader};

use super::id_map::{CompactId, IdMap, Key};
use super::RunError;
use crate::detect::{fingerprint, Held};
use crate::endpoint::Endpoint;

const SHARDS: usize = 64;
const PLACEHOLDER: u64 = 1 << 63;
const REPORTED: u64 = 1 << 62;
const SLOT: u64 = REPORTED - 1;

/// What stays in memory of one entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    id: CompactId,
    /// The first eight bytes of the version's content hash.
    fingerprint: u64,
    /// The side store's slot, with two flags above it: a placeholder (an
    /// item never understood, no version) and an entity with findings.
    slot: u64,
    /// Minutes since the epoch when the entity's time lies (a lesson's
    /// start, an attendance record's creation): what leaves the read
    /// window; [`crate::detect::NEVER`] for the rest.
    pub(super) age: i32,
    /// The last full read that saw it (not stored).
    pub(super) seen_in: u32,
}

impl Entry {
    pub(super) fn id(&self) -> &CompactId {
        &self.id
    }

    /// The held version's fingerprint, unless this is a placeholder.
    pub(super) fn fingerprint(&self) -> Option<u64> {
        (self.slot & PLACEHOLDER == 0).then_some(self.fingerprint)
    }

    pub(super) fn is_placeholder(&self) -> bool {
        self.slot & PLACEHOLDER != 0
    }

    /// Whether findings were published for the entity (their digest is
    /// on disk).
    pub(super) fn reported(&self) -> bool {
        self.slot & REPORTED != 0
    }

    fn slot(&self) -> u64 {
        self.slot & SLOT
    }
}

/// The side store's record of an entity: full hash, observation time,
/// findings' digest, id, image.
fn encode_record(id: &str, held: &Held, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&held.hash);
    out.extend_from_slice(&held.observed_at.to_le_bytes());
    out.extend_from_slice(&held.report.to_le_bytes());
    out.extend_from_slice(&(id.len() as u32).to_le_bytes());
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(&held.image);
}

fn decode_record(bytes: &[u8], entry: &Entry) -> Option<(String, Held)> {
    let hash: [u8; 32] = bytes.get(..32)?.try_into().ok()?;
    let observed_at = i64::from_le_bytes(bytes.get(32..40)?.try_into().ok()?);
    let report = u64::from_le_bytes(bytes.get(40..48)?.try_into().ok()?);
    let id_len = u32::from_le_bytes(bytes.get(48..52)?.try_into().ok()?) as usize;
    let id = std::str::from_utf8(bytes.get(52..52 + id_len)?).ok()?;
    let image = bytes.get(52 + id_len..)?;
    Some((
        id.to_owned(),
        Held {
            hash,
            image: image.into(),
            observed_at,
            report,
            seen_in: entry.seen_in,
            age: entry.age,
        },
    ))
}

/// The table hash of an id hash: the top six bits chose the shard, so the
/// table gets a mix in which every bit varies.
fn table_hash(hash: u64) -> u64 {
    hash.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

fn shard_of(hash: u64) -> usize {
    (hash >> 58) as usize
}

#[derive(Default)]
struct Table {
    shards: Vec<HashTable<Entry>>,
    len: usize,
}

impl Table {
    fn shard(&self, hash: u64) -> Option<&HashTable<Entry>> {
        self.shards.get(shard_of(hash))
    }

    fn shard_mut(&mut self, hash: u64) -> &mut HashTable<Entry> {
        if self.shards.is_empty() {
            self.shards = (0..SHARDS).map(|_| HashTable::new()).collect();
        }
        &mut self.shards[shard_of(hash)]
    }

    fn get(&self, key: &Key<'_>) -> Option<&Entry> {
        let id = key.compact();
        self.shard(key.hash())?
            .find(table_hash(key.hash()), |e| e.id == *id)
    }

    fn get_mut(&mut self, key: &Key<'_>) -> Option<&mut Entry> {
        let id = *key.compact();
        self.shard_mut(key.hash())
            .find_mut(table_hash(key.hash()), |e| e.id == id)
    }

    /// Set an entry; returns the one it replaced.
    fn put(&mut self, hash: u64, entry: Entry) -> Option<Entry> {
        let shard = self.shard_mut(hash);
        match shard.find_mut(table_hash(hash), |e| e.id == entry.id) {
            Some(old) => Some(std::mem::replace(old, entry)),
            None => {
                shard.insert_unique(table_hash(hash), entry, |e| {
                    table_hash(Key::hash_compact(&e.id))
                });
                self.len += 1;
                None
            }
        }
    }

    fn remove(&mut self, hash: u64, id: &CompactId) -> Option<Entry> {
        let removed = self
            .shard_mut(hash)
            .find_entry(table_hash(hash), |e| e.id == *id)
            .ok()
            .map(|e| e.remove().0);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.shards.iter().flat_map(HashTable::iter)
    }
}

/// Every endpoint's entries, and the side store behind them.
pub(super) struct Holding {
    tables: foldhash::HashMap<Endpoint, Table>,
    store: SideStore,
    next_slot: u64,
    /// Reused for encoding records.
    scratch: Vec<Vec<u8>>,
}

impl Holding {
    pub(super) fn new(store: SideStore) -> Self {
        Self {
            tables: Default::default(),
            store,
            next_slot: 0,
            scratch: Vec::new(),
        }
    }

    pub(super) fn len(&self, endpoint: Endpoint) -> usize {
        self.tables.get(&endpoint).map_or(0, |t| t.len)
    }

    pub(super) fn total(&self) -> usize {
        self.tables.values().map(|t| t.len).sum()
    }

    pub(super) fn endpoints(&self) -> impl Iterator<Item = (Endpoint, usize)> + '_ {
        self.tables.iter().map(|(e, t)| (*e, t.len))
    }

    pub(super) fn get(&self, endpoint: Endpoint, key: &Key<'_>) -> Option<&Entry> {
        self.tables.get(&endpoint)?.get(key)
    }

    pub(super) fn get_mut(&mut self, endpoint: Endpoint, key: &Key<'_>) -> Option<&mut Entry> {
        self.tables.get_mut(&endpoint)?.get_mut(key)
    }

    pub(super) fn entries(&self, endpoint: Endpoint) -> impl Iterator<Item = &Entry> {
        self.tables.get(&endpoint).into_iter().flat_map(Table::iter)
    }

    /// A reader of the entities' full records.
    pub(super) fn reader(&self) -> Result<Loader<'_>, RunError> {
        Ok(Loader(self.store.reader()?))
    }

    /// One entity's id and full state, from disk.
    pub(super) fn load(&self, entry: &Entry) -> Result<(String, Held), RunError> {
        self.reader()?.load(entry)
    }

    /// Apply a committed transaction's state of an endpoint: `Some` sets,
    /// `None` forgets; `pending` is left empty. The images go to disk in
    /// one commit of the side store.
    pub(super) fn apply(
        &mut self,
        endpoint: Endpoint,
        pending: &mut IdMap<Option<Held>>,
    ) -> Result<(), RunError> {
        let table = self.tables.entry(endpoint).or_default();
        let mut puts: Vec<(u64, usize)> = Vec::new();
        let mut removes = Vec::new();
        let mut used = 0;
        for (id, state) in pending.drain() {
            let key = Key::new(&id);
            match state {
                Some(held) => {
                    let placeholder = held.is_placeholder();
                    let mut entry = Entry {
                        id: *key.compact(),
                        fingerprint: fingerprint(&held.hash),
                        slot: 0,
                        age: held.age,
                        seen_in: held.seen_in,
                    };
                    let slot = match table.get(&key) {
                        Some(old) => old.slot(),
                        None => {
                            self.next_slot += 1;
                            self.next_slot
                        }
                    };
                    entry.slot = slot
                        | if placeholder { PLACEHOLDER } else { 0 }
                        | if held.report != 0 { REPORTED } else { 0 };
                    table.put(key.hash(), entry);
                    if self.scratch.len() <= used {
                        self.scratch.push(Vec::new());
                    }
                    encode_record(&id, &held, &mut self.scratch[used]);
                    puts.push((slot, used));
                    used += 1;
                }
                None => {
                    if let Some(old) = table.remove(key.hash(), key.compact()) {
                        removes.push(old.slot());
                    }
                }
            }
        }
        let scratch = &self.scratch;
        self.store.apply(
            puts.iter().map(|&(slot, i)| (slot, scratch[i].as_slice())),
            removes,
        )?;
        // A burst of large images should not stay allocated.
        self.scratch.truncate(1024);
        Ok(())
    }
}

/// Reads entities' full records from one snapshot of the side store.
pub(super) struct Loader<'s>(StoreReader<'s>);

impl Loader<'_> {
    pub(super) fn load(&self, entry: &Entry) -> Result<(String, Held), RunError> {
        let missing = |what: &str| RunError::Store(format!("slot {}: {what}", entry.slot()));
        let bytes = self
            .0
            .get(entry.slot())?
            .ok_or_else(|| missing("no record"))?;
        decode_record(&bytes, entry).ok_or_else(|| missing("a record that cannot be read"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::detect::{age_minutes, NEVER};

    fn held(n: u8, report: u64) -> Held {
        Held {
            hash: [n; 32],
            image: vec![n; 10 + usize::from(n)].into_boxed_slice(),
            observed_at: i64::from(n) * 1000,
            report,
            seen_in: 3,
            age: i32::from(n),
        }
    }

    #[test]
    fn holds_compactly_and_loads_what_was_applied() {
        assert_eq!(std::mem::size_of::<Entry>(), 40);
        let dir = std::env::temp_dir().join(format!("holding-test-{}", std::process::id()));
        let store = SideStore::create(&dir, "holding", 1 << 20).unwrap();
        let mut holding = Holding::new(store);
        let ids: Vec<String> = (0..1000)
            .map(|n| {
                if n % 2 == 0 {
                    format!("{n:08x}-1111-4222-8333-444455556666")
                } else {
                    format!("id {n}")
                }
            })
            .collect();
        let mut pending: IdMap<Option<Held>> = IdMap::default();
        for (n, id) in ids.iter().enumerate() {
            pending.insert(Key::new(id), Some(held((n % 200) as u8, (n % 3) as u64)));
        }
        holding.apply(Endpoint::Persons, &mut pending).unwrap();
        assert_eq!(pending.len(), 0);
        assert_eq!(holding.len(Endpoint::Persons), 1000);
        assert_eq!(holding.len(Endpoint::Groups), 0);
        let entry = *holding.get(Endpoint::Persons, &Key::new(&ids[7])).unwrap();
        assert_eq!(entry.fingerprint(), Some(fingerprint(&[7; 32])));
        assert!(entry.reported() && !entry.is_placeholder());
        let (id, back) = holding.load(&entry).unwrap();
        assert_eq!((id.as_str(), back), (ids[7].as_str(), held(7, 1)));

        // An update keeps the slot; a forgotten entity frees it.
        pending.insert(Key::new(&ids[7]), Some(held(9, 0)));
        pending.insert(Key::new(&ids[8]), None);
        pending.insert(Key::new(&ids[9]), Some(Held::placeholder(5, 77, 1)));
        holding.apply(Endpoint::Persons, &mut pending).unwrap();
        let updated = *holding.get(Endpoint::Persons, &Key::new(&ids[7])).unwrap();
        assert_eq!(updated.slot(), entry.slot());
        assert!(!updated.reported());
        assert_eq!(holding.load(&updated).unwrap().1, held(9, 0));
        assert!(holding.get(Endpoint::Persons, &Key::new(&ids[8])).is_none());
        assert_eq!(holding.len(Endpoint::Persons), 999);
        let placeholder = *holding.get(Endpoint::Persons, &Key::new(&ids[9])).unwrap();
        assert!(placeholder.is_placeholder() && placeholder.fingerprint().is_none());
        assert_eq!(holding.load(&placeholder).unwrap().1.report, 77);
        assert_eq!(holding.entries(Endpoint::Persons).count(), 999);
        if let Some(e) = holding.get_mut(Endpoint::Persons, &Key::new(&ids[0])) {
            e.seen_in = 42;
        }
        assert_eq!(
            holding
                .get(Endpoint::Persons, &Key::new(&ids[0]))
                .map(|e| e.seen_in),
            Some(42)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ages_are_minutes() {
        assert_eq!(age_minutes(None), NEVER);
        assert_eq!(age_minutes(Some(120_000)), 2);
        assert_eq!(age_minutes(Some(-1)), -1);
        assert!(age_minutes(Some(i64::MAX)) < NEVER);
    }
}

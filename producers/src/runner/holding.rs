//! What a connection holds of the entities it has published, in memory
//! bounded by what is live rather than by history.
//!
//! Comparing what a vendor shows with what was published needs, per
//! entity, only its id and its version's fingerprint; that, with a few
//! small fields, is all that stays in memory (an [`Entry`], 32 bytes).
//! Everything else — the full content hash, the encoded image that becomes
//! the next event's `before`, the findings' digest, the id's text — lives
//! in a [`SideStore`] on disk, read only for an update, a delete or a
//! change of findings. The store is a cache of the state topic: rebuilt
//! from it at every start, written with every commit.
//!
//! A commit's images are written to the store behind the connection's
//! loop ([`Holding::stage`], [`Holding::write_behind`], then
//! [`Holding::commit`] or [`Holding::discard`]): the write runs on a
//! blocking thread through Kafka's commit and the next transaction's work,
//! and until it is done the images are read from memory. One write at a
//! time: the next commit first waits for the last ([`Holding::settle`]).
//! Images go always to free slots, so that an image still referenced is
//! never overwritten before the commit is known; a slot is freed when its
//! entry no longer points at it, and written again only by a later write.
//!
//! Entries live in 64 hash tables chosen by the id's hash. A table growing
//! doubles one sixty-fourth of the memory, not all of it at once; and the
//! tables take shares of the ids from one to two sixty-fourths, so that
//! they grow at different sizes and the average load stays near 2/3
//! whatever the number of entities (equal shares would all sit at half
//! load just after growing together).

use std::sync::{Arc, OnceLock};

use hashbrown::HashTable;
use skolflode_kafka::{SideStore, StoreError, StoreReader};

use super::id_map::{CompactId, IdMap};
use super::RunError;
use crate::detect::{fingerprint, Held};
use crate::endpoint::Endpoint;

const SHARDS: usize = 64;
const PLACEHOLDER: u32 = 1 << 31;
const REPORTED: u32 = 1 << 30;
const SLOT: u32 = REPORTED - 1;

/// What stays in memory of one entity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    id: CompactId,
    /// The first eight bytes of the version's content hash.
    fingerprint: u64,
    /// The side store's slot, with two flags above it: a placeholder (an
    /// item never understood, no version) and an entity with findings.
    slot: u32,
    /// The UTC day of the entity's time (a lesson's start, an attendance
    /// record's creation): what leaves the read window;
    /// [`crate::detect::NEVER`] for the rest.
    pub(super) age: u16,
    /// The last full read that saw it, modulo 2^16 (not stored). Every
    /// full read marks or deletes what it covers, so an old number can
    /// only meet the current one again 65 536 full reads later.
    seen_in: u16,
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

    pub(super) fn seen_in(&self) -> u16 {
        self.seen_in
    }

    pub(super) fn mark_seen(&mut self, number: u32) {
        self.seen_in = number as u16;
    }

    fn slot(&self) -> u32 {
        self.slot & SLOT
    }
}

/// Whether full read `number` saw an entity marked `seen_in`.
pub(super) fn seen_by(seen_in: u32, number: u32) -> bool {
    seen_in as u16 == number as u16
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
            seen_in: u32::from(entry.seen_in),
            age: entry.age,
        },
    ))
}

/// The table hash of an id hash: the top bits chose the shard, so the
/// table gets a mix in which every bit varies.
fn table_hash(hash: u64) -> u64 {
    hash.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The shard of every value of an id hash's top 16 bits: shard `i` takes a
/// share proportional to 2^(i/64).
fn shard_of(hash: u64) -> usize {
    static MAP: OnceLock<Vec<u8>> = OnceLock::new();
    let map = MAP.get_or_init(|| {
        let weights: Vec<f64> = (0..SHARDS)
            .map(|i| (i as f64 / SHARDS as f64).exp2())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut map = Vec::with_capacity(1 << 16);
        let mut bound = 0.0;
        for (i, w) in weights.iter().enumerate() {
            bound += w / total * 65_536.0;
            while (map.len() as f64) < bound.round() && map.len() < 1 << 16 {
                map.push(i as u8);
            }
        }
        map.resize(1 << 16, (SHARDS - 1) as u8);
        map
    });
    usize::from(map[(hash >> 48) as usize])
}

fn hash_of(entry: &Entry) -> u64 {
    super::id_map::Key::hash_compact(&entry.id)
}

#[derive(Default)]
struct Table {
    shards: Vec<HashTable<Entry>>,
    len: usize,
}

impl Table {
    fn shard_mut(&mut self, hash: u64) -> &mut HashTable<Entry> {
        if self.shards.is_empty() {
            self.shards = (0..SHARDS).map(|_| HashTable::new()).collect();
        }
        &mut self.shards[shard_of(hash)]
    }

    fn get(&self, hash: u64, id: &CompactId) -> Option<&Entry> {
        self.shards
            .get(shard_of(hash))?
            .find(table_hash(hash), |e| e.id == *id)
    }

    fn get_mut(&mut self, hash: u64, id: &CompactId) -> Option<&mut Entry> {
        self.shard_mut(hash)
            .find_mut(table_hash(hash), |e| e.id == *id)
    }

    /// Set an entry; returns the one it replaced.
    fn put(&mut self, hash: u64, entry: Entry) -> Option<Entry> {
        let shard = self.shard_mut(hash);
        match shard.find_mut(table_hash(hash), |e| e.id == entry.id) {
            Some(old) => Some(std::mem::replace(old, entry)),
            None => {
                shard.insert_unique(table_hash(hash), entry, |e| table_hash(hash_of(e)));
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

/// Images to write to the side store: slot, id, state.
pub(super) type Writes = Vec<(u32, Box<str>, Held)>;

/// Entries to set (`Some`) or forget once the commit is known.
pub(super) struct Updates(Vec<(Endpoint, u64, CompactId, Option<Entry>)>);

/// Write staged images to the store: one commit of the side store.
fn write(store: &SideStore, writes: &Writes) -> Result<(), StoreError> {
    let mut record = Vec::new();
    store.write(|puts| {
        for (slot, id, held) in writes {
            encode_record(id, held, &mut record);
            puts.put(u64::from(*slot), &record)?;
        }
        Ok(())
    })
}

/// A commit's images on their way to the store, readable meanwhile.
struct InFlight {
    writes: Arc<Writes>,
    /// Slot → index in `writes`.
    slots: foldhash::HashMap<u32, usize>,
    writing: tokio::task::JoinHandle<Result<(), StoreError>>,
}

impl InFlight {
    fn get(&self, slot: u32) -> Option<&(u32, Box<str>, Held)> {
        self.slots.get(&slot).and_then(|&i| self.writes.get(i))
    }
}

/// Every endpoint's entries, and the side store behind them.
pub(super) struct Holding {
    tables: foldhash::HashMap<Endpoint, Table>,
    store: Arc<SideStore>,
    in_flight: Option<InFlight>,
    /// Slots never used so far begin here.
    next_slot: u32,
    /// Slots no entry points at.
    free: Vec<u32>,
}

impl Holding {
    pub(super) fn new(store: SideStore) -> Self {
        Self {
            tables: Default::default(),
            store: Arc::new(store),
            in_flight: None,
            next_slot: 0,
            free: Vec::new(),
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

    pub(super) fn get(&self, endpoint: Endpoint, hash: u64, id: &CompactId) -> Option<&Entry> {
        self.tables.get(&endpoint)?.get(hash, id)
    }

    pub(super) fn get_mut(
        &mut self,
        endpoint: Endpoint,
        hash: u64,
        id: &CompactId,
    ) -> Option<&mut Entry> {
        self.tables.get_mut(&endpoint)?.get_mut(hash, id)
    }

    pub(super) fn entries(&self, endpoint: Endpoint) -> impl Iterator<Item = &Entry> {
        self.tables.get(&endpoint).into_iter().flat_map(Table::iter)
    }

    /// A reader of the entities' full records.
    pub(super) fn reader(&self) -> Result<Loader<'_>, RunError> {
        Ok(Loader {
            store: self.store.reader()?,
            in_flight: self.in_flight.as_ref(),
        })
    }

    /// Start writing a staged commit's images behind the loop; they are
    /// read from memory until the write is done. The last write must be
    /// settled.
    pub(super) fn write_behind(&mut self, writes: Writes) {
        debug_assert!(self.in_flight.is_none());
        let writes = Arc::new(writes);
        let slots = writes
            .iter()
            .enumerate()
            .map(|(i, (slot, _, _))| (*slot, i))
            .collect();
        let store = Arc::clone(&self.store);
        let batch = Arc::clone(&writes);
        let writing = tokio::task::spawn_blocking(move || write(&store, &batch));
        self.in_flight = Some(InFlight {
            writes,
            slots,
            writing,
        });
    }

    /// Wait for the write in flight, if any. A failed write leaves the
    /// store behind what Kafka has: only a restart, which rebuilds it
    /// from Kafka, is sure to be right.
    pub(super) async fn settle(&mut self) -> Result<(), RunError> {
        if let Some(in_flight) = self.in_flight.as_mut() {
            let written = (&mut in_flight.writing).await;
            self.in_flight = None;
            written??;
        }
        Ok(())
    }

    /// One entity's id and full state, from disk.
    pub(super) fn load(&self, entry: &Entry) -> Result<(String, Held), RunError> {
        self.reader()?.load(entry)
    }

    fn take_slot(&mut self) -> Result<u32, RunError> {
        if let Some(slot) = self.free.pop() {
            return Ok(slot);
        }
        if self.next_slot >= SLOT {
            return Err(RunError::Store(format!(
                "more than {SLOT} entities held by one connection"
            )));
        }
        self.next_slot += 1;
        Ok(self.next_slot)
    }

    /// Take a transaction's states out of `pending`: the images to write
    /// (each to a free slot) and the entries to update once the
    /// transaction's fate is known.
    pub(super) fn stage(
        &mut self,
        pending: &mut foldhash::HashMap<Endpoint, IdMap<Option<Held>>>,
    ) -> Result<(Writes, Updates), RunError> {
        let mut writes = Vec::new();
        let mut updates = Vec::new();
        for (&endpoint, states) in pending.iter_mut() {
            for (hash, id, text, state) in states.drain() {
                let entry = match state {
                    Some(held) => {
                        let slot = self.take_slot()?;
                        let flags = if held.is_placeholder() {
                            PLACEHOLDER
                        } else {
                            0
                        } | if held.report != 0 { REPORTED } else { 0 };
                        let entry = Entry {
                            id,
                            fingerprint: fingerprint(&held.hash),
                            slot: slot | flags,
                            age: held.age,
                            seen_in: held.seen_in as u16,
                        };
                        writes.push((slot, text, held));
                        Some(entry)
                    }
                    None => None,
                };
                updates.push((endpoint, hash, id, entry));
            }
        }
        pending.clear();
        Ok((writes, Updates(updates)))
    }

    /// The transaction committed and its images were written: the entries
    /// point at them, and the slots they replace are free.
    pub(super) fn commit(&mut self, updates: Updates) {
        for (endpoint, hash, id, entry) in updates.0 {
            let table = self.tables.entry(endpoint).or_default();
            let old = match entry {
                Some(entry) => table.put(hash, entry),
                None => table.remove(hash, &id),
            };
            if let Some(old) = old {
                self.free.push(old.slot());
            }
        }
    }

    /// The transaction did not commit: the slots written for it are free.
    pub(super) fn discard(&mut self, updates: Updates) {
        self.free.extend(
            updates
                .0
                .iter()
                .filter_map(|(_, _, _, e)| e.map(|e| e.slot())),
        );
    }

    /// Stage, write and commit at once (restoring the state at start,
    /// with no write in flight).
    pub(super) fn apply(
        &mut self,
        pending: &mut foldhash::HashMap<Endpoint, IdMap<Option<Held>>>,
    ) -> Result<(), RunError> {
        debug_assert!(self.in_flight.is_none());
        let (writes, updates) = self.stage(pending)?;
        write(&self.store, &writes)?;
        self.commit(updates);
        Ok(())
    }
}

/// Reads entities' full records from the side store and the write in
/// flight (whose slots no entry on disk shares until it commits).
pub(super) struct Loader<'s> {
    store: StoreReader<'s>,
    in_flight: Option<&'s InFlight>,
}

impl Loader<'_> {
    pub(super) fn load(&self, entry: &Entry) -> Result<(String, Held), RunError> {
        if let Some((_, id, held)) = self.in_flight.and_then(|f| f.get(entry.slot())) {
            let mut held = held.clone();
            held.seen_in = u32::from(entry.seen_in);
            held.age = entry.age;
            return Ok((id.to_string(), held));
        }
        let missing = |what: &str| RunError::Store(format!("slot {}: {what}", entry.slot()));
        let bytes = self
            .store
            .get(u64::from(entry.slot()))?
            .ok_or_else(|| missing("no record"))?;
        decode_record(&bytes, entry).ok_or_else(|| missing("a record that cannot be read"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::id_map::Key;
    use super::*;

    fn held(n: u8, report: u64) -> Held {
        Held {
            hash: [n; 32],
            image: vec![n; 10 + usize::from(n)].into_boxed_slice(),
            observed_at: i64::from(n) * 1000,
            report,
            seen_in: 3,
            age: u16::from(n),
        }
    }

    fn get<'a>(holding: &'a Holding, id: &str) -> Option<&'a Entry> {
        let key = Key::new(id);
        holding.get(Endpoint::Persons, key.hash(), key.compact())
    }

    #[test]
    fn holds_compactly_and_loads_what_was_committed() {
        assert_eq!(std::mem::size_of::<Entry>(), 32);
        let dir = std::env::temp_dir().join(format!("holding-test-{}", std::process::id()));
        let store = SideStore::create(&dir, "holding").unwrap();
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
        let mut pending: foldhash::HashMap<Endpoint, IdMap<Option<Held>>> = Default::default();
        let persons = pending.entry(Endpoint::Persons).or_default();
        for (n, id) in ids.iter().enumerate() {
            persons.insert(Key::new(id), Some(held((n % 200) as u8, (n % 3) as u64)));
        }
        holding.apply(&mut pending).unwrap();
        assert!(pending.is_empty());
        assert_eq!(holding.len(Endpoint::Persons), 1000);
        assert_eq!(holding.len(Endpoint::Groups), 0);
        let entry = *get(&holding, &ids[7]).unwrap();
        assert_eq!(entry.fingerprint(), Some(fingerprint(&[7; 32])));
        assert!(entry.reported() && !entry.is_placeholder());
        let (id, back) = holding.load(&entry).unwrap();
        assert_eq!((id.as_str(), back), (ids[7].as_str(), held(7, 1)));

        // An update goes to another slot, and the old one is freed only
        // once the commit is known; a discarded stage frees its own.
        let stage = |holding: &mut Holding, n: u8| {
            let mut pending: foldhash::HashMap<Endpoint, IdMap<Option<Held>>> = Default::default();
            let persons = pending.entry(Endpoint::Persons).or_default();
            persons.insert(Key::new(&ids[7]), Some(held(n, 0)));
            persons.insert(Key::new(&ids[8]), None);
            persons.insert(Key::new(&ids[9]), Some(Held::placeholder(5, 77, 1)));
            holding.stage(&mut pending).unwrap()
        };
        let (writes, updates) = stage(&mut holding, 9);
        assert_eq!(writes.len(), 2);
        write(&holding.store, &writes).unwrap();
        holding.discard(updates);
        assert_eq!(get(&holding, &ids[7]), Some(&entry), "nothing changed");
        assert_eq!(holding.load(&entry).unwrap().1, held(7, 1));
        let (writes, updates) = stage(&mut holding, 9);
        assert!(writes.iter().all(|(slot, _, _)| *slot != entry.slot()));
        write(&holding.store, &writes).unwrap();
        holding.commit(updates);
        let updated = *get(&holding, &ids[7]).unwrap();
        assert!(!updated.reported());
        assert_eq!(holding.load(&updated).unwrap().1, held(9, 0));
        assert!(get(&holding, &ids[8]).is_none());
        assert_eq!(holding.len(Endpoint::Persons), 999);
        let placeholder = *get(&holding, &ids[9]).unwrap();
        assert!(placeholder.is_placeholder() && placeholder.fingerprint().is_none());
        assert_eq!(holding.load(&placeholder).unwrap().1.report, 77);
        assert_eq!(holding.entries(Endpoint::Persons).count(), 999);
        let key = Key::new(&ids[0]);
        if let Some(e) = holding.get_mut(Endpoint::Persons, key.hash(), key.compact()) {
            e.mark_seen(42);
        }
        assert_eq!(get(&holding, &ids[0]).map(Entry::seen_in), Some(42));
        assert!(seen_by(42 + 65_536, 42));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn images_written_behind_are_read_from_memory_until_on_disk() {
        let dir = std::env::temp_dir().join(format!("holding-behind-{}", std::process::id()));
        let store = SideStore::create(&dir, "holding").unwrap();
        let mut holding = Holding::new(store);
        let ids: Vec<String> = (0..300).map(|n| format!("id {n}")).collect();
        let commit = |holding: &mut Holding, n: u8| {
            let mut pending: foldhash::HashMap<Endpoint, IdMap<Option<Held>>> = Default::default();
            let persons = pending.entry(Endpoint::Persons).or_default();
            for id in &ids {
                persons.insert(Key::new(id), Some(held(n, 0)));
            }
            let (writes, updates) = holding.stage(&mut pending).unwrap();
            holding.write_behind(writes);
            holding.commit(updates);
        };
        for n in 1..=20u8 {
            if n > 1 {
                holding.settle().await.unwrap();
            }
            commit(&mut holding, n);
            // Whether or not the write is done, each entity reads as its
            // last commit left it, and the slots freed by the previous
            // commit were reused.
            let loader = holding.reader().unwrap();
            for id in &ids {
                let entry = get(&holding, id).unwrap();
                let (back, state) = loader.load(entry).unwrap();
                assert_eq!(
                    (back.as_str(), state.image),
                    (id.as_str(), held(n, 0).image)
                );
            }
            assert!(holding.next_slot <= 2 * ids.len() as u32);
        }
        holding.settle().await.unwrap();
        assert!(holding.in_flight.is_none());
        let entry = *get(&holding, &ids[5]).unwrap();
        assert_eq!(holding.load(&entry).unwrap().1.image, held(20, 0).image);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn shards_take_shares_from_one_to_two_sixty_fourths() {
        let mut counts = [0usize; SHARDS];
        for top in 0..(1u64 << 16) {
            counts[shard_of(top << 48)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 0));
        let (small, large) = (counts[0] as f64, counts[SHARDS - 1] as f64);
        assert!((1.9..2.1).contains(&(large / small)), "{small} {large}");
    }
}

//! Where a connection's entities and their indexes are kept: in memory up
//! to a budget, the rest in an embedded LSM tree on disk (fjall), so that a
//! task's memory is bounded whatever the length of the history.
//!
//! The disk store is a cache of the changelog topic, never the truth: it is
//! created empty when a task starts, filled while the task restores its
//! state, and dropped (its directory deleted) when the task stops or goes
//! back to its last commit. Nothing in it needs to survive a crash, so
//! nothing is synced.
//!
//! Memory holds the entities changed since they were last written to disk
//! and those read since. After a commit, once their estimated size passes
//! the budget, the changed ones and the new index entries are written to
//! disk in one batch and memory is emptied: a generational cache, which
//! costs nothing while a connection's state fits the budget.
//!
//! Reads that only look (a week's computation, history publishing) take
//! an entity from memory or, failing that, from disk into a read cache
//! that grows only by insertion ([`elsa::FrozenMap`]), so that they can
//! hand out references while holding `&self`. Lessons, attendance records
//! and the entities of history records, which grow with history, are read
//! without being cached. Until a task's first trim the disk holds nothing
//! of its connection and is not asked.

use std::cell::{Cell, OnceCell};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::model::{Entity, Fact, Kind, Version};
use super::time;

/// The separator of key parts (ids never hold it).
const SEP: u8 = 0x1f;

/// Why the disk store could not be used. The task's state is then
/// unusable: the transaction must abort and the state be restored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the state store at {path}")]
    Disk {
        path: PathBuf,
        #[source]
        source: fjall::Error,
    },
    #[error("the state store at {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the state store holds an entry that cannot be read: {0}")]
    Corrupt(String),
}

/// One task's disk store.
pub struct Disk {
    path: PathBuf,
    kv: fjall::Keyspace,
    // Held for its drop, after the keyspace's: it deletes the directory.
    _db: fjall::Database,
}

impl std::fmt::Debug for Disk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Disk")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Disk {
    /// An empty store in a new directory under `dir`, named after `name`,
    /// with a block cache of `cache_bytes`. The directory is deleted when
    /// the store is dropped.
    pub fn create(dir: &Path, name: &str, cache_bytes: u64) -> Result<Self, StoreError> {
        let path = dir.join(skolflode_kafka::unique_name(name, "state"));
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let disk = |source| StoreError::Disk {
            path: path.clone(),
            source,
        };
        // A directory left by a process that died under the same pid.
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(|source| StoreError::Io {
                path: path.clone(),
                source,
            })?;
        }
        let db = fjall::Database::builder(&path)
            .temporary(true)
            .manual_journal_persist(true)
            .cache_size(cache_bytes)
            .worker_threads(1)
            .open()
            .map_err(disk)?;
        let kv = db
            .keyspace("state", || {
                // Everything is written by ingestion (`trim`), nothing
                // through the write buffer.
                fjall::KeyspaceCreateOptions::default()
                    .manual_journal_persist(true)
                    .max_memtable_size(1 << 20)
            })
            .map_err(disk)?;
        Ok(Self { path, kv, _db: db })
    }

    fn error(&self, source: fjall::Error) -> StoreError {
        StoreError::Disk {
            path: self.path.clone(),
            source,
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<fjall::Slice>, StoreError> {
        self.kv.get(key).map_err(|e| self.error(e))
    }

    fn contains(&self, key: &[u8]) -> Result<bool, StoreError> {
        self.kv.contains_key(key).map_err(|e| self.error(e))
    }

    /// Write pairs given in ascending key order as a table of their own.
    fn ingest(
        &self,
        pairs: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), StoreError>>,
    ) -> Result<(), StoreError> {
        let mut pairs = pairs.peekable();
        if pairs.peek().is_none() {
            return Ok(());
        }
        let mut ingestion = self.kv.start_ingestion().map_err(|e| self.error(e))?;
        for pair in pairs {
            let (key, value) = pair?;
            ingestion.write(key, value).map_err(|e| self.error(e))?;
        }
        ingestion.finish().map_err(|e| self.error(e))
    }

    /// Every key and value under `prefix`, in key order.
    fn scan(&self, prefix: &[u8]) -> impl Iterator<Item = Result<fjall::KvPair, StoreError>> + '_ {
        self.kv
            .prefix(prefix)
            .map(|g| g.into_inner().map_err(|e| self.error(e)))
    }

    /// Bytes on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.kv.disk_space()
    }
}

fn kind_tag(kind: Kind) -> u8 {
    b'0' + kind.index() as u8
}

/// `e SEP connection SEP kind SEP id`
fn entity_key(connection: &str, kind: Kind, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(connection.len() + id.len() + 5);
    k.push(b'e');
    k.push(SEP);
    k.extend_from_slice(connection.as_bytes());
    k.push(SEP);
    k.push(kind_tag(kind));
    k.push(SEP);
    k.extend_from_slice(id.as_bytes());
    k
}

/// `tag SEP connection SEP parent SEP child`: an index entry.
fn index_key(tag: u8, connection: &str, parent: &str, child: &str) -> Vec<u8> {
    let mut key = index_prefix(tag, connection, parent);
    key.extend_from_slice(child.as_bytes());
    key
}

/// `tag SEP connection SEP parent SEP` (the prefix of an index's entries).
fn index_prefix(tag: u8, connection: &str, parent: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(connection.len() + parent.len() + 48);
    k.push(tag);
    k.push(SEP);
    k.extend_from_slice(connection.as_bytes());
    k.push(SEP);
    k.extend_from_slice(parent.as_bytes());
    k.push(SEP);
    k
}

const WEEK_INDEX: u8 = b'w';
const LESSON_INDEX: u8 = b'a';

/// Which entities a trim leaves in memory.
pub type Keep<'a> = dyn Fn(Kind, &str) -> bool + 'a;

/// An index entry of a version.
#[derive(Debug)]
pub enum Indexed {
    Week(String),
    Lesson(String),
}

/// The lessons of one ISO week.
#[derive(Debug, Default)]
pub struct Week {
    /// The earliest first recording of any of its lessons: the week is
    /// known once the clock has passed it.
    pub first_recorded: i64,
    /// Lessons indexed under the week and not yet on disk.
    lessons: BTreeSet<String>,
}

/// A connection's entities.
#[derive(Default)]
pub struct Entities {
    connection: String,
    disk: Option<Arc<Disk>>,
    /// Changed since memory was last emptied (or, without a disk, all).
    hot: [FxHashMap<String, Entity>; 8],
    /// Read from disk by a look-only read since memory was last emptied.
    loaded: elsa::FrozenMap<(Kind, String), Box<Entity>, rustc_hash::FxBuildHasher>,
    weeks: BTreeMap<String, Week>,
    /// Attendance records by lesson, not yet on disk.
    attendance_by_lesson: FxHashMap<String, BTreeSet<String>>,
    /// Estimated bytes of `hot` and the indexes in memory.
    bytes: usize,
    /// Estimated bytes of `loaded`.
    loaded_bytes: Cell<usize>,
    /// Entities on disk and not in `hot`.
    on_disk: usize,
    /// Something of this connection is on disk (a trim or a restore wrote
    /// it): until then a miss in memory is a miss.
    spilled: bool,
    /// Encodings made for the changelog at the last commit, for a trim
    /// right after it, in kind and id order.
    stash: Vec<(Kind, String, Vec<u8>)>,
    /// The first disk failure of a look-only read, which treated the
    /// entity as missing: the transaction must not commit.
    failure: OnceCell<StoreError>,
}

/// A rough size of a version in memory, for the budget.
pub fn weight(v: &Version) -> usize {
    let fact = match &v.fact {
        None => 0,
        Some(Fact::Organisation { school_unit_code }) => {
            school_unit_code.as_ref().map_or(0, String::len)
        }
        Some(Fact::Person {
            person_key,
            enrolments,
            ..
        }) => {
            person_key.len()
                + enrolments
                    .iter()
                    .map(|e| 40 + e.organisation.len() + e.school_type.len())
                    .sum::<usize>()
        }
        Some(Fact::Duty { person, duty_at }) => {
            person.as_ref().map_or(0, String::len) + duty_at.len()
        }
        Some(Fact::Group { members }) => members.iter().map(|m| 48 + m.person.len()).sum(),
        Some(Fact::Activity {
            organisation,
            syllabus,
            groups,
            teachers,
            ..
        }) => {
            organisation.len()
                + syllabus.as_ref().map_or(0, String::len)
                + groups.iter().map(|g| 24 + g.len()).sum::<usize>()
                + teachers.iter().map(|t| 48 + t.duty.len()).sum::<usize>()
        }
        Some(Fact::Lesson {
            activity, absent, ..
        }) => activity.len() + absent.iter().map(|a| 24 + a.len()).sum::<usize>(),
        Some(Fact::Attendance {
            lesson, student, ..
        }) => lesson.len() + student.len(),
        Some(Fact::Syllabus { subject_code }) => subject_code.len(),
    };
    std::mem::size_of::<Version>()
        + v.event_id.len()
        + v.content_hash.as_ref().map_or(0, String::len)
        + fact
}

fn entity_weight(id: &str, entity: &Entity) -> usize {
    // The map's slot, the id and the vector's header.
    96 + id.len() + entity.versions.iter().map(weight).sum::<usize>()
}

fn decode(bytes: &[u8]) -> Result<Entity, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn encode(entity: &Entity) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(entity).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl Entities {
    pub fn new(connection: &str, disk: Option<Arc<Disk>>) -> Self {
        Self {
            connection: connection.to_owned(),
            disk,
            ..Self::default()
        }
    }

    /// Entities held, in memory and on disk.
    pub fn count(&self) -> usize {
        self.on_disk + self.hot.iter().map(FxHashMap::len).sum::<usize>()
    }

    /// Entities in memory (changed or kept since the last trim).
    pub fn count_in_memory(&self) -> usize {
        self.hot.iter().map(FxHashMap::len).sum()
    }

    /// Estimated bytes in memory.
    pub fn bytes(&self) -> usize {
        self.bytes + self.loaded_bytes.get()
    }

    /// Whether a look-only read failed.
    #[cfg(test)]
    pub fn failed(&self) -> bool {
        self.failure.get().is_some()
    }

    /// Why a look-only read failed, if one did.
    pub fn take_failure(&mut self) -> Option<StoreError> {
        self.failure.take()
    }

    fn fail(&self, error: StoreError) {
        // The first failure is the one to report.
        let _ = self.failure.set(error);
    }

    fn read_disk(&self, kind: Kind, id: &str) -> Result<Option<Entity>, StoreError> {
        let Some(disk) = self.disk.as_ref().filter(|_| self.spilled) else {
            return Ok(None);
        };
        match disk.get(&entity_key(&self.connection, kind, id))? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    /// An entity, for looking only; read from disk into the read cache
    /// when not in memory.
    pub fn get(&self, kind: Kind, id: &str) -> Option<&Entity> {
        if let Some(entity) = self.hot[kind.index()].get(id) {
            return Some(entity);
        }
        if !self.spilled {
            return None;
        }
        let key = (kind, id.to_owned());
        if let Some(e) = self.loaded.get(&key) {
            return Some(e);
        }
        match self.read_disk(kind, id) {
            Ok(Some(entity)) => {
                self.loaded_bytes
                    .set(self.loaded_bytes.get() + entity_weight(id, &entity));
                Some(self.loaded.insert(key, Box::new(entity)))
            }
            Ok(None) => None,
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    /// Look at an entity without caching it when it comes from disk.
    pub fn read<R>(&self, kind: Kind, id: &str, f: impl FnOnce(&Entity) -> R) -> Option<R> {
        if let Some(entity) = self.hot[kind.index()].get(id) {
            return Some(f(entity));
        }
        if !self.spilled {
            return None;
        }
        if let Some(e) = self.loaded.get(&(kind, id.to_owned())) {
            return Some(f(e));
        }
        match self.read_disk(kind, id) {
            Ok(Some(entity)) => Some(f(&entity)),
            Ok(None) => None,
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    /// An entity in memory, for changing: from disk when it is there, new
    /// when it is nowhere. It counts as changed.
    pub fn entry(&mut self, kind: Kind, id: &str) -> Result<&mut Entity, StoreError> {
        let map = kind.index();
        if !self.hot[map].contains_key(id) {
            let entity = if self.spilled {
                match self.loaded.as_mut().remove(&(kind, id.to_owned())) {
                    Some(e) => Some(*e),
                    None => self.read_disk(kind, id)?,
                }
            } else {
                None
            };
            let entity = match entity {
                Some(e) => {
                    self.on_disk -= 1;
                    e
                }
                None => Entity::default(),
            };
            self.bytes += entity_weight(id, &entity);
            self.hot[map].insert(id.to_owned(), entity);
        }
        self.hot[map]
            .get_mut(id)
            .ok_or_else(|| StoreError::Corrupt(format!("entity {id} vanished")))
    }

    /// Count a version of `weight` bytes added to an entity.
    pub fn grew(&mut self, weight: usize) {
        self.bytes += weight;
    }

    /// An entity in memory that changed (what the changelog gets).
    pub fn changed(&self, kind: Kind, id: &str) -> Option<&Entity> {
        self.hot[kind.index()].get(id)
    }

    /// Where a version is indexed: a lesson under its week, a report
    /// under its lesson.
    pub fn indexed(kind: Kind, fact: Option<&Fact>) -> Option<Indexed> {
        match (kind, fact) {
            (Kind::Lesson, Some(Fact::Lesson { start, .. })) => {
                time::week_of(*start).map(Indexed::Week)
            }
            (Kind::Attendance, Some(Fact::Attendance { lesson, .. })) => {
                Some(Indexed::Lesson(lesson.clone()))
            }
            _ => None,
        }
    }

    /// Index a version of an entity whose first recording was `first`.
    pub fn index(&mut self, indexed: Option<Indexed>, id: &str, first: i64) {
        match indexed {
            Some(Indexed::Week(week)) => {
                let entry = self.weeks.entry(week).or_insert_with(|| Week {
                    first_recorded: first,
                    lessons: BTreeSet::new(),
                });
                entry.first_recorded = entry.first_recorded.min(first);
                if entry.lessons.insert(id.to_owned()) {
                    self.bytes += 64 + id.len();
                }
            }
            Some(Indexed::Lesson(lesson)) => {
                let extra = 64 + id.len() + lesson.len();
                if self
                    .attendance_by_lesson
                    .entry(lesson)
                    .or_default()
                    .insert(id.to_owned())
                {
                    self.bytes += extra;
                }
            }
            None => {}
        }
    }

    /// The weeks that have lessons, with their first recording.
    pub fn weeks(&self) -> impl Iterator<Item = (&String, i64)> {
        self.weeks.iter().map(|(w, e)| (w, e.first_recorded))
    }

    fn children(&self, tag: u8, parent: &str, hot: Option<&BTreeSet<String>>) -> Vec<String> {
        let Some(disk) = self.disk.as_ref().filter(|_| self.spilled) else {
            return hot.into_iter().flatten().cloned().collect();
        };
        let mut out: BTreeSet<String> = hot.cloned().unwrap_or_default();
        let prefix = index_prefix(tag, &self.connection, parent);
        for item in disk.scan(&prefix) {
            match item {
                Ok((key, _)) => match key.get(prefix.len()..).map(std::str::from_utf8) {
                    Some(Ok(child)) => {
                        out.insert(child.to_owned());
                    }
                    _ => self.fail(StoreError::Corrupt("an index key that is not UTF-8".into())),
                },
                Err(e) => {
                    self.fail(e);
                    break;
                }
            }
        }
        out.into_iter().collect()
    }

    /// Every lesson ever recorded in `week`, by id.
    pub fn lessons_in(&self, week: &str) -> Vec<String> {
        self.children(WEEK_INDEX, week, self.weeks.get(week).map(|w| &w.lessons))
    }

    /// Every attendance record ever recorded for a lesson, by id.
    pub fn attendance_of(&self, lesson: &str) -> Vec<String> {
        self.children(LESSON_INDEX, lesson, self.attendance_by_lesson.get(lesson))
    }

    /// Put back an entity from the changelog: on disk when there is one,
    /// else in memory.
    pub fn restore(&mut self, kind: Kind, id: &str, entity: Entity) -> Result<(), StoreError> {
        let first = entity.versions.first().map_or(i64::MAX, |v| v.recorded);
        if let Some(disk) = self.disk.as_ref().filter(|_| self.spilled) {
            // An earlier entry of the same key, already trimmed to disk:
            // it comes back into memory.
            if !self.hot[kind.index()].contains_key(id)
                && disk.contains(&entity_key(&self.connection, kind, id))?
            {
                self.on_disk -= 1;
            }
        }
        for v in &entity.versions {
            self.index(Self::indexed(kind, v.fact.as_ref()), id, first);
        }
        self.bytes += entity_weight(id, &entity);
        self.hot[kind.index()].insert(id.to_owned(), entity);
        Ok(())
    }

    /// Every entity, in memory or on disk, each once.
    pub fn for_each(&self, mut f: impl FnMut(Kind, &str, &Entity)) -> Result<(), StoreError> {
        for kind in Kind::ALL {
            for (id, entity) in &self.hot[kind.index()] {
                f(kind, id, entity);
            }
        }
        let Some(disk) = &self.disk else {
            return Ok(());
        };
        let mut prefix = vec![b'e', SEP];
        prefix.extend_from_slice(self.connection.as_bytes());
        prefix.push(SEP);
        for item in disk.scan(&prefix) {
            let (key, value) = item?;
            let rest = key.get(prefix.len()..).unwrap_or_default();
            let (Some(&tag), Some(id)) = (rest.first(), rest.get(2..)) else {
                return Err(StoreError::Corrupt("a short entity key".into()));
            };
            let Some(kind) = Kind::ALL.into_iter().find(|k| kind_tag(*k) == tag) else {
                return Err(StoreError::Corrupt("an entity key of no kind".into()));
            };
            let id = std::str::from_utf8(id)
                .map_err(|_| StoreError::Corrupt("an entity id that is not UTF-8".into()))?;
            if self.hot[kind.index()].contains_key(id) {
                continue;
            }
            f(kind, id, &decode(&value)?);
        }
        Ok(())
    }

    /// After a commit: once memory is over `budget` bytes, write what
    /// changed to disk and empty memory, but for the entities `keep`
    /// names (those soon needed again). Only when nothing is waiting for
    /// the changelog (the caller's changed set is empty).
    pub fn trim(&mut self, budget: usize, keep: Option<&Keep<'_>>) -> Result<bool, StoreError> {
        let Some(disk) = self.disk.clone() else {
            return Ok(false);
        };
        if let Some(failure) = self.take_failure() {
            return Err(failure);
        }
        let stash = std::mem::take(&mut self.stash);
        if self.bytes() <= budget {
            return Ok(false);
        }
        let mut kept_bytes = 0;
        let mut going: Vec<(Kind, String, Entity)> = Vec::with_capacity(self.count_in_memory());
        for kind in Kind::ALL {
            let map = &mut self.hot[kind.index()];
            match keep {
                None => going.extend(std::mem::take(map).into_iter().map(|(id, e)| (kind, id, e))),
                Some(keep) => {
                    for (id, entity) in map.extract_if(|id, _| !keep(kind, id)) {
                        going.push((kind, id, entity));
                    }
                    kept_bytes += map
                        .iter()
                        .map(|(id, e)| entity_weight(id, e))
                        .sum::<usize>();
                }
            }
        }
        self.on_disk += going.len();
        // In one tenant every entity key starts alike and then orders by
        // kind and id: sorting those is sorting the keys.
        going.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        let mut reports: Vec<Vec<u8>> = Vec::new();
        for (lesson, records) in std::mem::take(&mut self.attendance_by_lesson) {
            for record in records {
                reports.push(index_key(LESSON_INDEX, &self.connection, &lesson, &record));
            }
        }
        let mut lessons: Vec<Vec<u8>> = Vec::new();
        for (week, entry) in &mut self.weeks {
            for lesson in std::mem::take(&mut entry.lessons) {
                lessons.push(index_key(WEEK_INDEX, &self.connection, week, &lesson));
            }
        }
        reports.sort_unstable();
        lessons.sort_unstable();
        // The entities' values as the changelog got them at the commit
        // just made, when the transaction encoded them (`stash`), else
        // encoded now; both lists are in kind and id order.
        let mut stash = stash.into_iter().peekable();
        let connection = self.connection.clone();
        let entities = going.iter().map(move |(kind, id, entity)| {
            while stash
                .peek()
                .is_some_and(|(k, i, _)| (*k, i.as_str()) < (*kind, id.as_str()))
            {
                stash.next();
            }
            let value = match stash.next_if(|(k, i, _)| *k == *kind && i == id) {
                Some((_, _, bytes)) => bytes,
                None => encode(entity)?,
            };
            Ok((entity_key(&connection, *kind, id), value))
        });
        // Written as one sorted run straight into a table of the tree: no
        // journal, no write buffer. Key order: reports (`a`), entities
        // (`e`), lessons (`w`).
        let index = |keys: Vec<Vec<u8>>| keys.into_iter().map(|k| Ok((k, Vec::new())));
        disk.ingest(index(reports).chain(entities).chain(index(lessons)))?;
        self.spilled = true;
        self.loaded = elsa::FrozenMap::default();
        self.loaded_bytes.set(0);
        self.bytes = self.weeks.len() * 96 + kept_bytes;
        Ok(true)
    }

    /// Keep an entity's encoding, made for the changelog, for a trim that
    /// follows the commit (given in kind and id order).
    pub fn stash(&mut self, kind: Kind, id: &str, value: &[u8]) {
        self.stash.push((kind, id.to_owned(), value.to_vec()));
    }

    /// Forget the encodings kept for a trim.
    pub fn clear_stash(&mut self) {
        self.stash = Vec::new();
    }
}

impl std::fmt::Debug for Entities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entities")
            .field("connection", &self.connection)
            .field("count", &self.count())
            .field("bytes", &self.bytes())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn version(recorded: i64, fact: Fact) -> Version {
        Version {
            recorded,
            valid_from: recorded,
            event_id: format!("e{recorded}"),
            modified: None,
            content_hash: Some(format!("h{recorded}")),
            fact: Some(fact),
        }
    }

    fn attendance(lesson: &str) -> Fact {
        Fact::Attendance {
            lesson: lesson.into(),
            student: "s".into(),
            reported: true,
            present: 40,
            valid_absence: 0,
            invalid_absence: 0,
        }
    }

    #[test]
    fn what_was_trimmed_to_disk_is_read_back_and_changed_again() {
        let dir = std::env::temp_dir().join("skolflode-store-test");
        let disk = Arc::new(Disk::create(&dir, "t", 1 << 20).unwrap());
        let mut store = Entities::new("c", Some(disk));
        for i in 0..100 {
            let id = format!("a{i}");
            let v = version(i, attendance(&format!("l{}", i % 3)));
            store.index(Entities::indexed(Kind::Attendance, v.fact.as_ref()), &id, i);
            store.grew(weight(&v));
            store.entry(Kind::Attendance, &id).unwrap().versions.push(v);
        }
        assert!(!store.trim(usize::MAX, None).unwrap());
        assert!(store.trim(0, Some(&|_, id| id == "a9")).unwrap());
        assert_eq!(store.count(), 100);
        assert_eq!(store.count_in_memory(), 1);
        assert!(store.trim(0, None).unwrap());
        assert_eq!(store.count(), 100);
        assert_eq!(store.attendance_of("l1").len(), 33);
        assert_eq!(store.get(Kind::Attendance, "a7").unwrap().versions.len(), 1);
        let v = version(500, attendance("l2"));
        store.index(
            Entities::indexed(Kind::Attendance, v.fact.as_ref()),
            "a7",
            7,
        );
        store
            .entry(Kind::Attendance, "a7")
            .unwrap()
            .versions
            .push(v);
        assert_eq!(store.count(), 100);
        assert_eq!(store.attendance_of("l2").len(), 34);
        // A stashed encoding is what goes to disk.
        let stashed = encode(store.changed(Kind::Attendance, "a7").unwrap()).unwrap();
        store.stash(Kind::Attendance, "a0", b"stale, for another entity");
        store.stash(Kind::Attendance, "a7", &stashed);
        assert!(store.trim(0, None).unwrap());
        assert_eq!(
            store.read(Kind::Attendance, "a7", |e| e.versions.len()),
            Some(2)
        );
        let mut seen = 0;
        store.for_each(|_, _, _| seen += 1).unwrap();
        assert_eq!(seen, 100);
        assert!(store.get(Kind::Attendance, "nowhere").is_none());
        assert!(!store.failed());
    }
}

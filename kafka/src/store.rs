//! A disk-backed side store for state whose source of truth is a Kafka
//! topic: values too large or too many to keep in memory, keyed by a slot
//! number that the caller keeps in its own (compact) in-memory index.
//!
//! The store is a cache, never the truth. It is created empty when a stage
//! starts, filled while the stage restores its state from the compacted
//! topic, written after each Kafka commit, and deleted when the stage
//! stops. So nothing in it needs to survive a crash: commits are not
//! synced to disk (`Durability::None`), except every
//! [`DURABLE_EVERY`]th, which lets redb reuse the pages that earlier
//! commits freed instead of growing the file.
//!
//! redb keeps its page cache within the configured size; the operating
//! system's page cache does the rest, and it does not count towards the
//! process's resident memory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use redb::{Database, Durability, ReadableDatabase, TableDefinition};

const VALUES: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("values");

/// One commit in this many is durable: redb frees the pages that
/// non-durable commits replaced only at a durable one.
pub const DURABLE_EVERY: u32 = 32;

/// A failure of the side store. The caller's state is then unusable: the
/// stage must restart and restore it from Kafka.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the side store at {path}: {source}")]
    Db {
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    #[error("the side store at {path} could not be prepared: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Slot → bytes, on disk, for one stage instance. Writes may run on
/// another thread than reads (redb readers see the last commit).
pub struct SideStore {
    db: Database,
    path: PathBuf,
    commits: AtomicU32,
}

impl std::fmt::Debug for SideStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SideStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// File names are unique per process and store, so that a stage restarted
/// in the same process, or two instances in one test, never share a file.
fn unique_name(name: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    format!(
        "skolflode-{safe}-{}-{}.redb",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl SideStore {
    /// An empty store in a new file in `dir` (created if missing), named
    /// after `name`, with at most `cache_bytes` of redb's page cache. The
    /// file is removed when the store is dropped.
    pub fn create(dir: &Path, name: &str, cache_bytes: usize) -> Result<Self, StoreError> {
        let path = dir.join(unique_name(name));
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|e| Self::failed(&path, e))?;
        let store = Self {
            db,
            path,
            commits: AtomicU32::new(0),
        };
        // The table exists from the start, so that reads never meet its
        // absence.
        store.write(|_| Ok(()))?;
        Ok(store)
    }

    fn failed(path: &Path, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Db {
            path: path.to_owned(),
            source: Box::new(e.into()),
        }
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Put and remove values in one commit.
    pub fn apply<'a>(
        &self,
        puts: impl IntoIterator<Item = (u64, &'a [u8])>,
        removes: impl IntoIterator<Item = u64>,
    ) -> Result<(), StoreError> {
        self.write(|w| {
            for slot in removes {
                w.remove(slot)?;
            }
            for (slot, value) in puts {
                w.put(slot, value)?;
            }
            Ok(())
        })
    }

    /// One commit of whatever `fill` puts and removes.
    pub fn write(
        &self,
        fill: impl FnOnce(&mut Puts<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let fail = |e: redb::Error| Self::failed(&self.path, e);
        let mut txn = self.db.begin_write().map_err(|e| fail(e.into()))?;
        let commits = self.commits.fetch_add(1, Ordering::Relaxed);
        let durability = if commits.is_multiple_of(DURABLE_EVERY) {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability).map_err(|e| fail(e.into()))?;
        {
            let table = txn.open_table(VALUES).map_err(|e| fail(e.into()))?;
            let mut puts = Puts {
                table,
                path: &self.path,
            };
            fill(&mut puts)?;
        }
        txn.commit().map_err(|e| fail(e.into()))
    }

    /// A consistent view for reading many values.
    pub fn reader(&self) -> Result<StoreReader<'_>, StoreError> {
        let fail = |e: redb::Error| Self::failed(&self.path, e);
        let txn = self.db.begin_read().map_err(|e| fail(e.into()))?;
        let table = txn.open_table(VALUES).map_err(|e| fail(e.into()))?;
        Ok(StoreReader { table, store: self })
    }

    /// One value.
    pub fn get(&self, slot: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.reader()?.get(slot)
    }
}

impl Drop for SideStore {
    fn drop(&mut self) {
        // Best effort: the file is a cache, and a leftover one is only
        // disk space in a temporary directory.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What one commit of a [`SideStore`] changes.
#[allow(missing_debug_implementations)]
pub struct Puts<'t> {
    table: redb::Table<'t, u64, &'static [u8]>,
    path: &'t Path,
}

impl Puts<'_> {
    /// Set a slot's value.
    pub fn put(&mut self, slot: u64, value: &[u8]) -> Result<(), StoreError> {
        self.table
            .insert(slot, value)
            .map(|_| ())
            .map_err(|e| SideStore::failed(self.path, e))
    }

    /// Empty a slot.
    pub fn remove(&mut self, slot: u64) -> Result<(), StoreError> {
        self.table
            .remove(slot)
            .map(|_| ())
            .map_err(|e| SideStore::failed(self.path, e))
    }
}

/// Reads from one snapshot of a [`SideStore`].
#[allow(missing_debug_implementations)]
pub struct StoreReader<'s> {
    table: redb::ReadOnlyTable<u64, &'static [u8]>,
    store: &'s SideStore,
}

impl StoreReader<'_> {
    /// The value in `slot`, if any.
    pub fn get(&self, slot: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.table
            .get(slot)
            .map(|v| v.map(|v| v.value().to_vec()))
            .map_err(|e| SideStore::failed(&self.store.path, e))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn puts_removes_and_reads_back_and_cleans_up() {
        let dir = std::env::temp_dir().join(format!("side-store-test-{}", std::process::id()));
        let store = SideStore::create(&dir, "a/b c", 1 << 20).unwrap();
        let path = store.path().to_owned();
        assert!(path.exists());
        assert!(path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("skolflode-a_b_c-"));
        let big = vec![7u8; 100_000];
        for round in 0..(DURABLE_EVERY as u64 * 2 + 3) {
            store
                .apply(
                    [(round, big.as_slice()), (1_000 + round, b"x".as_slice())],
                    (round > 0).then(|| 1_000 + round - 1),
                )
                .unwrap();
        }
        assert_eq!(store.get(5).unwrap().as_deref(), Some(big.as_slice()));
        let reader = store.reader().unwrap();
        assert_eq!(reader.get(1_000).unwrap(), None);
        assert_eq!(
            reader.get(1_000 + DURABLE_EVERY as u64 * 2 + 2).unwrap(),
            Some(b"x".to_vec())
        );
        drop(reader);
        // A second store of the same name in the same process is its own.
        let other = SideStore::create(&dir, "a/b c", 1 << 20).unwrap();
        assert_ne!(other.path(), path);
        assert_eq!(other.get(5).unwrap(), None);
        drop(store);
        assert!(!path.exists());
        drop(other);
        let _ = std::fs::remove_dir(&dir);
    }
}

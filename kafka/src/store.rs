//! A disk-backed side store for state whose source of truth is a Kafka
//! topic: values too large or too many to keep in memory, keyed by a slot
//! number that the caller keeps in its own (compact) in-memory index.
//!
//! The store is a cache, never the truth. It is created empty when a stage
//! starts, filled while the stage restores its state from the compacted
//! topic, written after each Kafka commit, and deleted when the stage
//! stops. So nothing in it needs to survive a crash, and nothing is synced
//! to disk.
//!
//! It is a log: each write appends its values to one file, in one system
//! call per megabyte, and an index in memory (8 bytes a slot) says where
//! each slot's value lies. A value written again, or removed, leaves its
//! old bytes behind; once those outweigh the live values (and the file is
//! past [`COMPACT_FROM`]), the next write copies the live values into a
//! new file. A B-tree (redb) did the same job at three times the CPU a
//! value, which on a city's first read was an eighth of the producer's
//! CPU (`docs/performance.md`); the caller's slots are dense, which is
//! what lets a plain array index them.
//!
//! The operating system's page cache keeps what is read often; it does
//! not count towards the process's resident memory.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// A log smaller than this is never compacted.
pub const COMPACT_FROM: u64 = 64 << 20;

/// Bytes gathered before they are written.
const WRITE_CHUNK: usize = 1 << 20;

/// Each value is preceded by its length.
const HEADER: u64 = 4;

/// An index entry: the value's offset in the log (40 bits) and its
/// length (24 bits, saturated: the header has the real one); 0 is empty.
const LEN_BITS: u32 = 24;
const LEN_MASK: u64 = (1 << LEN_BITS) - 1;

/// Why the store could not be used. The caller's state is then unusable:
/// the stage must restart and restore it from Kafka.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Its cause is the source, which error chains print after it.
    #[error("the side store at {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the side store at {path} is corrupt: {what}")]
    Corrupt { path: PathBuf, what: String },
}

/// Slot → bytes, on disk, for one stage instance. Writes may run on
/// another thread than reads; a reader sees every write that returned.
pub struct SideStore {
    path: PathBuf,
    /// One writer at a time: appends and compaction.
    writer: Mutex<Writer>,
    shared: RwLock<Shared>,
}

/// What readers need.
struct Shared {
    file: Arc<File>,
    index: Index,
}

/// Slot → entry (see [`LEN_BITS`]), in chunks: growing never copies
/// the index (only a compaction builds a second one).
#[derive(Default)]
struct Index {
    chunks: Vec<Box<[u64]>>,
}

const CHUNK: usize = 1 << 16;

impl Index {
    fn get(&self, slot: u64) -> u64 {
        let Ok(i) = usize::try_from(slot) else {
            return 0;
        };
        self.chunks
            .get(i / CHUNK)
            .map_or(0, |c| c.get(i % CHUNK).copied().unwrap_or(0))
    }

    /// Set a slot's entry, growing the index for a non-empty one;
    /// returns the entry it had.
    fn set(&mut self, slot: u64, new: u64) -> u64 {
        let Ok(i) = usize::try_from(slot) else {
            return 0;
        };
        if new != 0 {
            while self.chunks.len() <= i / CHUNK {
                self.chunks.push(vec![0; CHUNK].into_boxed_slice());
            }
        }
        self.chunks
            .get_mut(i / CHUNK)
            .and_then(|c| c.get_mut(i % CHUNK))
            .map_or(0, |e| std::mem::replace(e, new))
    }

    fn entries(&self) -> impl Iterator<Item = u64> + '_ {
        self.chunks.iter().flat_map(|c| c.iter().copied())
    }
}

struct Writer {
    /// Bytes in the log.
    end: u64,
    /// Bytes of values the index points at, headers included.
    live: u64,
    /// No compaction before the log is this long: after one failed, it
    /// is tried again once the log has grown by a quarter.
    compact_after: u64,
    buf: Vec<u8>,
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
/// `extension` ends the name (`log` for a side store).
pub fn unique_name(name: &str, extension: &str) -> String {
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
        "skolflode-{safe}-{}-{}.{extension}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn entry(offset: u64, len: usize) -> u64 {
    (offset << LEN_BITS) | (len as u64).min(LEN_MASK)
}

/// The bytes an entry's value takes in the log, header included (capped
/// with the length), for the count of live bytes.
fn footprint(e: u64) -> u64 {
    if e == 0 {
        0
    } else {
        (e & LEN_MASK) + HEADER
    }
}

fn open_new(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

impl SideStore {
    /// An empty store in a new file in `dir` (created if missing), named
    /// after `name`. The file is removed when the store is dropped.
    pub fn create(dir: &Path, name: &str) -> Result<Self, StoreError> {
        let path = dir.join(unique_name(name, "log"));
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let file = open_new(&path).map_err(io)?;
        // Offset 0 marks an empty entry: the log starts with a byte of
        // its own.
        if let Err(e) = file.write_all_at(&[0], 0) {
            let _ = std::fs::remove_file(&path);
            return Err(io(e));
        }
        Ok(Self {
            writer: Mutex::new(Writer {
                end: 1,
                live: 0,
                compact_after: COMPACT_FROM,
                buf: Vec::new(),
            }),
            shared: RwLock::new(Shared {
                file: Arc::new(file),
                index: Index::default(),
            }),
            path,
        })
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Where the store lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Put values in slots and empty others, in one write.
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

    /// One write of whatever `fill` puts and removes. Readers see all of
    /// it once it returns, none of it before; a failed write leaves the
    /// slots it touched as they were.
    pub fn write(
        &self,
        fill: impl FnOnce(&mut Puts<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let file = Arc::clone(
            &self
                .shared
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .file,
        );
        let mut puts = Puts {
            log: Appender {
                store: self,
                file: &file,
                buf: std::mem::take(&mut writer.buf),
                end: writer.end,
            },
            changes: Vec::new(),
        };
        let filled = fill(&mut puts).and_then(|()| puts.log.flush());
        let Puts { log, changes } = puts;
        let Appender { mut buf, end, .. } = log;
        buf.clear();
        if buf.capacity() > WRITE_CHUNK * 2 {
            buf.shrink_to(WRITE_CHUNK * 2);
        }
        writer.buf = buf;
        // What was appended before a failure is left as garbage.
        writer.end = end;
        filled?;
        {
            let mut shared = self.shared.write().unwrap_or_else(PoisonError::into_inner);
            for (slot, new) in changes {
                let old = shared.index.set(slot, new);
                writer.live = writer.live.saturating_sub(footprint(old)) + footprint(new);
            }
        }
        if writer.end > writer.compact_after && writer.end > 2 * writer.live.max(1) {
            // The write has taken effect: a failed compaction leaves the
            // log as it was, to be compacted later.
            if let Err(e) = self.compact(&mut writer) {
                writer.compact_after = writer.end + writer.end / 4;
                let cause = std::error::Error::source(&e).map(ToString::to_string);
                tracing::warn!(error = %e, cause = cause.as_deref().unwrap_or(""), "the side store could not be compacted; it goes on in the longer log");
            }
        }
        Ok(())
    }

    /// Copy the live values into a new log and put it in the old one's
    /// place. Readers go on reading the old file until the swap.
    fn compact(&self, writer: &mut Writer) -> Result<(), StoreError> {
        let fresh = self.path.with_extension("compacting");
        let copied = self.copy_live(&fresh);
        let (out, moved, end) = match copied {
            Ok(done) => done,
            Err(e) => {
                let _ = std::fs::remove_file(&fresh);
                return Err(e);
            }
        };
        let old = {
            let mut shared = self.shared.write().unwrap_or_else(PoisonError::into_inner);
            let old_file = std::mem::replace(&mut shared.file, Arc::new(out));
            let old_index = std::mem::replace(&mut shared.index, moved);
            (old_file, old_index)
        };
        // Freed (and the old file closed) outside the lock.
        drop(old);
        writer.end = end;
        writer.live = end - 1;
        writer.compact_after = COMPACT_FROM;
        Ok(())
    }

    /// The live values copied into a new log at `fresh`, renamed over the
    /// store's file; the new file, its index and its length.
    fn copy_live(&self, fresh: &Path) -> Result<(File, Index, u64), StoreError> {
        let out = open_new(fresh).map_err(|e| self.io(e))?;
        // Only this writer changes `shared`: reading under its lock keeps
        // readers going and spares a copy of the index.
        let current = self.shared.read().unwrap_or_else(PoisonError::into_inner);
        let mut moved = Index::default();
        // The new log starts with its own empty-marking byte too.
        let mut log = Appender {
            store: self,
            file: &out,
            buf: vec![0],
            end: 0,
        };
        let mut value = Vec::new();
        for (slot, e) in current.index.entries().enumerate() {
            if e == 0 {
                continue;
            }
            self.read_value(&current.file, e, &mut value)?;
            moved.set(slot as u64, log.append(&value)?);
        }
        log.flush()?;
        let end = log.end;
        drop(current);
        std::fs::rename(fresh, &self.path).map_err(|e| self.io(e))?;
        Ok((out, moved, end))
    }

    /// The value at index entry `e` of `file`, into `out`.
    fn read_value(&self, file: &File, e: u64, out: &mut Vec<u8>) -> Result<(), StoreError> {
        let offset = e >> LEN_BITS;
        let mut len = (e & LEN_MASK) as usize;
        let mut header = [0u8; HEADER as usize];
        if len == LEN_MASK as usize {
            file.read_exact_at(&mut header, offset)
                .map_err(|e| self.io(e))?;
            len = u32::from_le_bytes(header) as usize;
            if len < LEN_MASK as usize {
                return Err(StoreError::Corrupt {
                    path: self.path.clone(),
                    what: format!("the value at offset {offset} is only {len} bytes long"),
                });
            }
        }
        out.clear();
        out.resize(len, 0);
        file.read_exact_at(out, offset + HEADER)
            .map_err(|e| self.io(e))?;
        if len < LEN_MASK as usize {
            file.read_exact_at(&mut header, offset)
                .map_err(|e| self.io(e))?;
            if u32::from_le_bytes(header) as usize != len {
                return Err(StoreError::Corrupt {
                    path: self.path.clone(),
                    what: format!("the value at offset {offset} is not {len} bytes long"),
                });
            }
        }
        Ok(())
    }

    /// A reader of what has been written.
    pub fn reader(&self) -> Result<StoreReader<'_>, StoreError> {
        Ok(StoreReader { store: self })
    }

    /// The value in `slot`, if any.
    pub fn get(&self, slot: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.reader()?.get(slot)
    }
}

impl Drop for SideStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(self.path.with_extension("compacting"));
    }
}

/// Values appended to a log, gathered and written a chunk at a time.
struct Appender<'t> {
    store: &'t SideStore,
    file: &'t File,
    buf: Vec<u8>,
    /// Where `buf` goes in the log: the bytes written so far.
    end: u64,
}

impl Appender<'_> {
    /// Append `value` with its header; its index entry.
    fn append(&mut self, value: &[u8]) -> Result<u64, StoreError> {
        let corrupt = |what: String| StoreError::Corrupt {
            path: self.store.path.clone(),
            what,
        };
        let len = u32::try_from(value.len())
            .map_err(|_| corrupt(format!("a value of {} bytes, more than 4 GiB", value.len())))?;
        let offset = self.end + self.buf.len() as u64;
        if offset >= 1 << (64 - LEN_BITS) {
            return Err(corrupt(format!(
                "the log is {offset} bytes long, more than its index can point into"
            )));
        }
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(value);
        if self.buf.len() >= WRITE_CHUNK {
            self.flush()?;
        }
        Ok(entry(offset, value.len()))
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all_at(&self.buf, self.end)
            .map_err(|e| self.store.io(e))?;
        self.end += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }
}

/// The puts and removes of one [`SideStore::write`].
#[allow(missing_debug_implementations)]
pub struct Puts<'t> {
    log: Appender<'t>,
    /// Slot → new index entry, applied when the write is whole.
    changes: Vec<(u64, u64)>,
}

impl Puts<'_> {
    /// Put `value` in `slot`.
    pub fn put(&mut self, slot: u64, value: &[u8]) -> Result<(), StoreError> {
        let e = self.log.append(value)?;
        self.changes.push((slot, e));
        Ok(())
    }

    /// Empty a slot.
    pub fn remove(&mut self, slot: u64) -> Result<(), StoreError> {
        self.changes.push((slot, 0));
        Ok(())
    }
}

/// Reads what a [`SideStore`] holds.
#[allow(missing_debug_implementations)]
pub struct StoreReader<'s> {
    store: &'s SideStore,
}

impl StoreReader<'_> {
    /// The value in `slot`, if any.
    pub fn get(&self, slot: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let (file, e) = {
            let shared = self
                .store
                .shared
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let e = shared.index.get(slot);
            if e == 0 {
                return Ok(None);
            }
            (Arc::clone(&shared.file), e)
        };
        let mut out = Vec::new();
        self.store.read_value(&file, e, &mut out)?;
        Ok(Some(out))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn dir(test: &str) -> PathBuf {
        std::env::temp_dir().join(format!("side-store-test-{}-{test}", std::process::id()))
    }

    #[test]
    fn puts_removes_and_reads_back_and_cleans_up() {
        let dir = dir("basic");
        let store = SideStore::create(&dir, "a/b c").unwrap();
        let path = store.path().to_owned();
        assert!(path.exists());
        assert!(path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("skolflode-a_b_c-"));
        let big = vec![7u8; 100_000];
        for round in 0..40u64 {
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
        assert_eq!(reader.get(1_039).unwrap(), Some(b"x".to_vec()));
        assert_eq!(reader.get(99_999_999).unwrap(), None);
        // An empty value is a value.
        store.apply([(7, b"".as_slice())], []).unwrap();
        assert_eq!(store.get(7).unwrap(), Some(Vec::new()));
        // A second store of the same name in the same process is its own.
        let other = SideStore::create(&dir, "a/b c").unwrap();
        assert_ne!(other.path(), path);
        assert_eq!(other.get(5).unwrap(), None);
        drop(store);
        assert!(!path.exists());
        drop(other);
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn values_longer_than_the_index_can_say_are_read_whole() {
        let store = SideStore::create(&dir("long"), "long").unwrap();
        let long: Vec<u8> = (0..(LEN_MASK as usize + 10)).map(|i| i as u8).collect();
        store.apply([(3, long.as_slice())], []).unwrap();
        assert_eq!(store.get(3).unwrap().as_deref(), Some(long.as_slice()));
    }

    #[test]
    fn a_failed_write_changes_no_slot() {
        let store = SideStore::create(&dir("failed"), "failed").unwrap();
        store.apply([(1, b"one".as_slice())], []).unwrap();
        let failed = store.write(|w| {
            w.put(1, b"uno")?;
            w.put(2, b"two")?;
            Err(StoreError::Corrupt {
                path: PathBuf::new(),
                what: "stopped".into(),
            })
        });
        assert!(failed.is_err());
        assert_eq!(store.get(1).unwrap(), Some(b"one".to_vec()));
        assert_eq!(store.get(2).unwrap(), None);
        store.apply([(2, b"two".as_slice())], []).unwrap();
        assert_eq!(store.get(2).unwrap(), Some(b"two".to_vec()));
    }

    #[test]
    fn overwritten_values_are_compacted_away_and_the_rest_kept() {
        let store = SideStore::create(&dir("compact"), "compact").unwrap();
        let value = |slot: u64, round: u64| -> Vec<u8> {
            let mut v = vec![(slot + round) as u8; 1_000 + (slot % 7) as usize];
            v.extend_from_slice(&round.to_le_bytes());
            v
        };
        // 1 000 slots of about 1 kB written 100 times: 100 MB written,
        // 1 MB live.
        for round in 0..100u64 {
            let values: Vec<(u64, Vec<u8>)> = (0..1_000).map(|s| (s, value(s, round))).collect();
            store
                .apply(values.iter().map(|(s, v)| (*s, v.as_slice())), [])
                .unwrap();
            // A reader keeps working across compactions.
            assert_eq!(store.get(17).unwrap(), Some(value(17, round)));
        }
        let len = std::fs::metadata(store.path()).unwrap().len();
        assert!(len < COMPACT_FROM + (2 << 20), "the log is {len} bytes");
        for s in 0..1_000 {
            assert_eq!(store.get(s).unwrap(), Some(value(s, 99)), "slot {s}");
        }
        store.apply([], [5]).unwrap();
        assert_eq!(store.get(5).unwrap(), None);
        assert_eq!(store.get(6).unwrap(), Some(value(6, 99)));
    }

    /// 10 slots rewritten 200 times with values of `len` bytes on one
    /// thread, read on this one meanwhile: each value read must be one
    /// whole write. The store, and how many values were read.
    fn write_while_reading(name: &str, len: usize) -> (Arc<SideStore>, usize) {
        let store = Arc::new(SideStore::create(&dir(name), name).unwrap());
        let writer = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for round in 0..200u64 {
                    let v = vec![round as u8; len];
                    store.apply([(round % 10, v.as_slice())], []).unwrap();
                }
            })
        };
        let mut reads = 0;
        while !writer.is_finished() {
            for s in 0..10 {
                if let Some(v) = store.get(s).unwrap() {
                    assert_eq!(v.len(), len);
                    assert!(v.iter().all(|&b| b == v[0]));
                    assert_eq!(u64::from(v[0]) % 10, s);
                    reads += 1;
                }
            }
        }
        writer.join().unwrap();
        (store, reads)
    }

    #[test]
    fn reads_on_another_thread_see_each_write_whole() {
        write_while_reading("threads", 50_000);
    }

    #[test]
    fn readers_during_compactions_see_whole_values() {
        // 1 MB values: 200 MB through a log compacted from 64 MB on.
        let (store, reads) = write_while_reading("compacting", 1 << 20);
        assert!(reads > 0);
        let len = std::fs::metadata(store.path()).unwrap().len();
        assert!(len < COMPACT_FROM + (4 << 20), "the log is {len} bytes");
    }

    #[test]
    fn a_failed_compaction_fails_no_write_and_is_tried_again_later() {
        let store = SideStore::create(&dir("blocked"), "blocked").unwrap();
        // A directory where the compaction's new file would go.
        let blocker = store.path().with_extension("compacting");
        std::fs::create_dir_all(&blocker).unwrap();
        let value = |round: u64| vec![round as u8; 1 << 20];
        for round in 0..80u64 {
            store
                .apply([(round % 4, value(round).as_slice())], [])
                .unwrap();
        }
        let long = std::fs::metadata(store.path()).unwrap().len();
        assert!(
            long > COMPACT_FROM,
            "no compaction could happen: {long} bytes"
        );
        for slot in 0..4 {
            assert_eq!(store.get(slot).unwrap(), Some(value(76 + slot)));
        }
        std::fs::remove_dir(&blocker).unwrap();
        for round in 80..120u64 {
            store
                .apply([(round % 4, value(round).as_slice())], [])
                .unwrap();
        }
        let len = std::fs::metadata(store.path()).unwrap().len();
        assert!(len < long, "not compacted: {len} bytes");
        for slot in 0..4 {
            assert_eq!(store.get(slot).unwrap(), Some(value(116 + slot)));
        }
    }
}

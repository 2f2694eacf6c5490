//! The register directory: weekly and yearly partitions, their manifests,
//! and what a restarted sink reads back to know what is done.
//!
//! ```text
//! <out>/weekly/week=2025-W07/teacher_student.parquet
//! <out>/weekly/week=2025-W07/attendance.parquet
//! <out>/weekly/week=2025-W07/_manifest.json
//! <out>/yearly/school_year=2025-26/{teacher_student,attendance}.parquet, _manifest.json
//! <out>/_sink/                      the sink's lock and checkpoint
//! ```
//!
//! A weekly file holds, per connection, the rows of the newest revision of
//! the week the sink has whole: blocks in connection order, each sorted.
//! The blocks (connection, revision, rows, the input offsets they came
//! from) are in the file's own key-value metadata (`skolflode.blocks`), so
//! that a file says what it holds even if the sink stopped between
//! renaming it into place and writing the manifest. The manifest lists the
//! files with their row counts and checksums and every revision seen.
//!
//! A whole revision is encoded as soon as it arrives ([`Registers::stage`])
//! and held, compressed, until the next commit, which writes each week
//! touched once: the blocks it keeps are copied from the file as it stood,
//! row group by row group, without decoding, and the new ones from their
//! encoding. A yearly file is rebuilt from the weekly files of its school
//! year when the sink has caught up with its input and one of them has
//! changed; a sink stopped before that rebuilds it when it starts again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::cast::AsArray;
use arrow_array::ArrayRef;

use serde::{Deserialize, Serialize};

use crate::assemble::{BlockId, Completed};
use crate::block::Block;
use crate::checkpoint::Checkpoint;
use crate::output::{Applied, Output};
use crate::parquet::{self, ByUnit, Encoded, Existing, Part, Period};
use crate::period::Week;
use crate::pupil_register::{self, PupilsByUnit};
use crate::table::{Cell, Kind, Row, Table};
use crate::{yearly, SinkError};
use skolflode_producers::pseudonym::Pseudonymiser;

const BLOCKS: &str = "skolflode.blocks";
const WEEKS: &str = "skolflode.weeks";
const MANIFEST: &str = "_manifest.json";
const MANIFEST_FORMAT: &str = "skolflode.manifest/1";

/// A revision of a connection's week in one table, and where it was read.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Revision {
    pub table: Table,
    pub connection: String,
    pub revision: i32,
    pub rows: usize,
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
}

impl Revision {
    /// A whole revision as read from `topic`.
    pub fn read(completed: &Completed, topic: &str) -> Revision {
        Revision {
            table: completed.id.table,
            connection: completed.id.connection.clone(),
            revision: completed.revision,
            rows: completed.rows,
            topic: topic.to_owned(),
            partition: completed.partition,
            first_offset: completed.first_offset,
            last_offset: completed.last_offset,
        }
    }
}

/// A file of a partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub file: String,
    pub rows: usize,
    pub sha256: String,
}

/// `_manifest.json` of a weekly partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeekManifest {
    pub format: String,
    pub week: String,
    pub school_year: String,
    /// The files as they stand.
    pub files: Vec<FileEntry>,
    /// The revision each file holds per connection.
    pub current: Vec<Revision>,
    /// Every whole revision the sink has read, replaced ones included.
    pub revisions: Vec<Revision>,
}

/// A weekly file a yearly one was built from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub week: String,
    pub file: String,
    pub sha256: String,
}

/// `_manifest.json` of a yearly partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct YearManifest {
    pub format: String,
    pub school_year: String,
    pub files: Vec<FileEntry>,
    /// The weekly files summed, with the checksums they had.
    pub weeks: Vec<Source>,
    /// The pupil register the yearly files were integrated with.
    #[serde(default)]
    pub register: Option<RegisterSource>,
}

/// A pupil register read into a yearly partition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterSource {
    pub file: String,
    pub sha256: String,
    /// Lines used.
    pub pupils: usize,
    /// Lines left out, each reported with its reason.
    pub findings: usize,
}

/// The yearly integration with the pupil register: a register file per
/// school year, read with the deployment's pseudonym key.
#[derive(Debug)]
pub struct Integration {
    pub files: BTreeMap<String, PathBuf>,
    pub pseudonymiser: Pseudonymiser,
}

/// What is read but not written yet, of one week.
#[derive(Debug, Default)]
struct Staged {
    /// Every whole revision read, re-deliveries included.
    revisions: Vec<Revision>,
    /// The newest revision with rows per table and connection, encoded.
    blocks: BTreeMap<(Table, String), (Revision, Encoded)>,
}

/// A block being encoded on its own thread while the next is read.
#[derive(Debug)]
struct InFlight {
    week: Week,
    key: (Table, String),
    revision: Revision,
    /// Its columns' memory, counted as staged until it is encoded.
    raw_bytes: usize,
    encoding: std::thread::JoinHandle<Result<Encoded, SinkError>>,
}

/// The register directory, held by one sink at a time.
#[derive(Debug)]
pub struct Registers {
    root: PathBuf,
    zstd_level: i32,
    /// Weekly rows summed at a time per table in a yearly rebuild.
    yearly_range_rows: usize,
    integration: Option<Integration>,
    staged: BTreeMap<Week, Staged>,
    staged_bytes: usize,
    /// At most one block is encoded at a time, beside the reading: two
    /// cores' worth of work, and memory for one more block.
    in_flight: Option<InFlight>,
    /// School years whose weeks changed since their yearly files were
    /// built.
    stale_years: BTreeSet<String>,
    _lock: File,
}

/// Write `value` as JSON to `path`, atomically.
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), SinkError> {
    let temporary = parquet::temporary(path);
    let mut text = serde_json::to_vec_pretty(value)
        .map_err(|e| SinkError::corrupt(path, format!("serialising: {e}")))?;
    text.push(b'\n');
    std::fs::write(&temporary, &text).map_err(SinkError::io(&temporary))?;
    File::open(&temporary)
        .and_then(|f| f.sync_all())
        .map_err(SinkError::io(&temporary))?;
    std::fs::rename(&temporary, path).map_err(SinkError::io(path))?;
    match path.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, SinkError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| SinkError::corrupt(path, e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SinkError::io(path)(e)),
    }
}

/// The blocks a weekly partition's files hold, both tables, from the
/// files' own metadata.
fn current_blocks(dir: &Path) -> Result<Vec<Revision>, SinkError> {
    let mut current = Vec::new();
    for table in Table::ALL {
        let path = dir.join(table.file_name());
        if path.exists() {
            current.extend(blocks_of(&parquet::metadata(&path)?, &path)?);
        }
    }
    Ok(current)
}

/// Create a partition directory durably: its entry in the parent is
/// synced before anything that depends on it (the checkpoint) is written.
fn create_partition(dir: &Path) -> Result<(), SinkError> {
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(SinkError::io(dir))?;
    match dir.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<(), SinkError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(SinkError::io(dir))
}

fn sha256_of(path: &Path) -> Result<String, SinkError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = File::open(path).map_err(SinkError::io(path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buffer).map_err(SinkError::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn blocks_of(metadata: &BTreeMap<String, String>, path: &Path) -> Result<Vec<Revision>, SinkError> {
    match metadata.get(BLOCKS) {
        Some(text) => serde_json::from_str(text)
            .map_err(|e| SinkError::corrupt(path, format!("{BLOCKS}: {e}"))),
        None => Err(SinkError::corrupt(
            path,
            format!("no {BLOCKS} metadata: not written by this sink"),
        )),
    }
}

impl Registers {
    /// Open (or create) the register directory at `root`: take its lock,
    /// remove temporary files a stopped sink left, make every manifest
    /// agree with its files, rebuild yearly files whose weeks changed
    /// since (or whose pupil register did), and return the newest revision
    /// held per block.
    pub fn open(
        root: &Path,
        zstd_level: i32,
        integration: Option<Integration>,
    ) -> Result<(Registers, HashMap<BlockId, i32>), SinkError> {
        for dir in ["weekly", "yearly", "_sink"] {
            let dir = root.join(dir);
            std::fs::create_dir_all(&dir).map_err(SinkError::io(&dir))?;
        }
        let lock_path = root.join("_sink").join("lock");
        let lock = File::create(&lock_path).map_err(SinkError::io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(SinkError::Locked(root.display().to_string()))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(SinkError::io(&lock_path)(e)),
        }
        let mut registers = Registers {
            root: root.to_path_buf(),
            zstd_level,
            yearly_range_rows: DEFAULT_YEARLY_RANGE_ROWS,
            integration,
            staged: BTreeMap::new(),
            staged_bytes: 0,
            in_flight: None,
            stale_years: BTreeSet::new(),
            _lock: lock,
        };
        let mut done = HashMap::new();
        let weeks = registers.weeks()?;
        for week in &weeks {
            registers.clean(&registers.week_dir(*week))?;
            for block in registers.reconcile_week(*week)? {
                done.insert(
                    BlockId {
                        table: block.table,
                        week: *week,
                        connection: block.connection,
                    },
                    block.revision,
                );
            }
        }
        let years: BTreeSet<String> = weeks.iter().map(|w| w.school_year()).collect();
        for year in years.iter().chain(registers.years()?.iter()) {
            registers.clean(&registers.year_dir(year))?;
            let manifest = registers.year_manifest(year)?;
            let register = manifest.register.as_ref().map(|r| r.sha256.clone());
            if registers.year_sources(year)? != manifest.weeks
                || registers.register_sha(year)? != register
            {
                tracing::info!(school_year = %year, "its weeks changed since it was written: to be rebuilt");
                registers.stale_years.insert(year.clone());
            }
        }
        Ok((registers, done))
    }

    /// Sum yearly files `rows` weekly rows at a time per table (at least 1).
    pub fn with_yearly_range_rows(mut self, rows: usize) -> Self {
        self.yearly_range_rows = rows.max(1);
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn week_dir(&self, week: Week) -> PathBuf {
        self.root
            .join("weekly")
            .join(format!("week={}", week.label()))
    }

    fn year_dir(&self, year: &str) -> PathBuf {
        self.root.join("yearly").join(format!("school_year={year}"))
    }

    /// The weeks with a partition directory, in order.
    fn weeks(&self) -> Result<Vec<Week>, SinkError> {
        let dir = self.root.join("weekly");
        let mut weeks: Vec<Week> = std::fs::read_dir(&dir)
            .map_err(SinkError::io(&dir))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("week=").and_then(Week::parse)
            })
            .collect();
        weeks.sort();
        Ok(weeks)
    }

    fn years(&self) -> Result<Vec<String>, SinkError> {
        let dir = self.root.join("yearly");
        Ok(std::fs::read_dir(&dir)
            .map_err(SinkError::io(&dir))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("school_year=").map(str::to_owned)
            })
            .collect())
    }

    /// Remove the temporary files of writes that did not finish.
    fn clean(&self, dir: &Path) -> Result<(), SinkError> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(".tmp") {
                std::fs::remove_file(entry.path()).map_err(SinkError::io(&entry.path()))?;
            }
        }
        Ok(())
    }

    fn week_manifest(&self, week: Week) -> Result<WeekManifest, SinkError> {
        let path = self.week_dir(week).join(MANIFEST);
        Ok(read_json(&path)?.unwrap_or_else(|| WeekManifest {
            format: MANIFEST_FORMAT.to_owned(),
            week: week.label(),
            school_year: week.school_year(),
            ..WeekManifest::default()
        }))
    }

    fn year_manifest(&self, year: &str) -> Result<YearManifest, SinkError> {
        let path = self.year_dir(year).join(MANIFEST);
        Ok(read_json(&path)?.unwrap_or_else(|| YearManifest {
            format: MANIFEST_FORMAT.to_owned(),
            school_year: year.to_owned(),
            ..YearManifest::default()
        }))
    }

    /// The blocks of a week's files; the manifest rewritten if it does not
    /// describe them (the sink stopped between the two).
    fn reconcile_week(&self, week: Week) -> Result<Vec<Revision>, SinkError> {
        let dir = self.week_dir(week);
        let current = current_blocks(&dir)?;
        let mut manifest = self.week_manifest(week)?;
        if manifest.current != current {
            tracing::info!(week = %week.label(), "manifest behind its files: rewriting it");
            let mut files = Vec::new();
            for table in Table::ALL {
                let path = dir.join(table.file_name());
                if path.exists() {
                    files.push(FileEntry {
                        file: table.file_name(),
                        rows: current
                            .iter()
                            .filter(|b| b.table == table)
                            .map(|b| b.rows)
                            .sum(),
                        sha256: sha256_of(&path)?,
                    });
                }
            }
            manifest.files = files;
            manifest.current = current.clone();
            let mut revisions: BTreeSet<Revision> = manifest.revisions.drain(..).collect();
            revisions.extend(current.iter().cloned());
            manifest.revisions = revisions.into_iter().collect();
            write_json(&dir.join(MANIFEST), &manifest)?;
        }
        Ok(current)
    }

    /// Take a whole revision, read from `topic`: a new one is encoded
    /// now and written at the next [`Registers::commit`].
    pub fn stage(&mut self, completed: Completed, topic: &str) -> Result<(), SinkError> {
        let revision = Revision::read(&completed, topic);
        let week = completed.id.week;
        // The block in flight first: it may be the same block's older
        // revision.
        self.land_in_flight()?;
        let staged = self.staged.entry(week).or_default();
        staged.revisions.push(revision.clone());
        if let Some(block) = completed.content {
            let key = (completed.id.table, completed.id.connection);
            let newer = staged
                .blocks
                .get(&key)
                .is_none_or(|(held, _)| held.revision < revision.revision);
            if newer {
                let raw_bytes = block
                    .columns
                    .iter()
                    .map(|c| c.get_array_memory_size())
                    .sum();
                let (table, label, level) = (key.0, week.label(), self.zstd_level);
                let encoding = std::thread::Builder::new()
                    .name("sink-encode".into())
                    .spawn(move || parquet::encode_block(table, &label, &block, level))
                    .map_err(|e| SinkError::Worker(e.to_string()))?;
                self.staged_bytes += raw_bytes;
                self.in_flight = Some(InFlight {
                    week,
                    key,
                    revision,
                    raw_bytes,
                    encoding,
                });
            }
        }
        Ok(())
    }

    /// Wait for the block in flight, if any, and stage it encoded.
    fn land_in_flight(&mut self) -> Result<(), SinkError> {
        let Some(flight) = self.in_flight.take() else {
            return Ok(());
        };
        let encoded = flight
            .encoding
            .join()
            .map_err(|_| SinkError::Worker("encoding a block panicked".into()))??;
        self.staged_bytes = self.staged_bytes - flight.raw_bytes + encoded.bytes();
        let staged = self.staged.entry(flight.week).or_default();
        if let Some((_, replaced)) = staged.blocks.insert(flight.key, (flight.revision, encoded)) {
            self.staged_bytes -= replaced.bytes();
        }
        Ok(())
    }

    /// Memory held by revisions staged and not written.
    pub fn staged_bytes(&self) -> usize {
        self.staged_bytes
    }

    /// Write every week staged, each once; then, if `settled` (the input
    /// is caught up, or the sink stops), rebuild the yearly files whose
    /// weeks changed.
    pub fn commit(&mut self, settled: bool) -> Result<Applied, SinkError> {
        self.land_in_flight()?;
        let mut applied = Applied::default();
        for (week, staged) in std::mem::take(&mut self.staged) {
            let (files, rows) = self.write_week(week, staged)?;
            if files > 0 {
                self.stale_years.insert(week.school_year());
            }
            applied.weekly_files += files;
            applied.rows += rows;
        }
        self.staged_bytes = 0;
        if settled {
            for year in std::mem::take(&mut self.stale_years) {
                applied.yearly_files += self.rebuild_year(&year)?;
            }
        }
        Ok(applied)
    }

    /// Whether anything waits to be written: staged revisions, or yearly
    /// files behind their weeks.
    pub fn behind(&self) -> bool {
        !self.staged.is_empty() || self.in_flight.is_some() || !self.stale_years.is_empty()
    }

    fn write_week(&self, week: Week, staged: Staged) -> Result<(usize, usize), SinkError> {
        let dir = self.week_dir(week);
        create_partition(&dir)?;
        let mut manifest = self.week_manifest(week)?;
        let mut revisions: BTreeSet<Revision> = manifest.revisions.drain(..).collect();
        let before = revisions.len();
        revisions.extend(staged.revisions);
        let mut by_table: BTreeMap<Table, BTreeMap<String, (Revision, Encoded)>> = BTreeMap::new();
        for ((table, connection), block) in staged.blocks {
            by_table.entry(table).or_default().insert(connection, block);
        }
        let (mut files, mut rows_written) = (0, 0);
        let mut written: BTreeMap<String, FileEntry> = BTreeMap::new();
        for (table, replacing) in by_table {
            let path = dir.join(table.file_name());
            let existing = if path.exists() {
                Some(Existing::open(&path)?)
            } else {
                None
            };
            // The blocks the file holds, each with its row groups.
            let mut blocks: BTreeMap<String, (Revision, Option<std::ops::Range<usize>>)> =
                BTreeMap::new();
            // Blocks of a file whose row groups they share, encoded again.
            let mut reencoded: BTreeMap<String, Encoded> = BTreeMap::new();
            if let Some(existing) = &existing {
                let held = blocks_of(&existing.key_values(), &path)?;
                match row_groups_of_blocks(&existing.row_group_rows(), &held) {
                    Some(ranges) => {
                        for (block, range) in held.into_iter().zip(ranges) {
                            blocks.insert(block.connection.clone(), (block, Some(range)));
                        }
                    }
                    None => {
                        // Written by a version that let blocks share row
                        // groups: decoded once, each block encoded on its
                        // own as this version writes it.
                        let (columns, _) = parquet::read(&path, table, Period::Week)?;
                        let total = columns.first().map_or(0, |c| c.len());
                        let mut offset = 0;
                        for block in held {
                            if offset + block.rows > total {
                                return Err(SinkError::corrupt(
                                    &path,
                                    "its blocks hold more rows than the file",
                                ));
                            }
                            let rows = Block {
                                table,
                                columns: columns
                                    .iter()
                                    .map(|c| c.slice(offset, block.rows))
                                    .collect(),
                            };
                            offset += block.rows;
                            let encoded = parquet::encode_block(
                                table,
                                &week.label(),
                                &rows,
                                self.zstd_level,
                            )?;
                            reencoded.insert(block.connection.clone(), encoded);
                            blocks.insert(block.connection.clone(), (block, None));
                        }
                        if offset != total {
                            return Err(SinkError::corrupt(
                                &path,
                                "its blocks do not account for its rows",
                            ));
                        }
                    }
                }
            }
            let mut new: BTreeMap<String, Encoded> = BTreeMap::new();
            for (connection, (revision, encoded)) in replacing {
                let newer = blocks
                    .get(&connection)
                    .is_none_or(|(held, _)| held.revision < revision.revision);
                if newer {
                    rows_written += encoded.rows;
                    blocks.insert(connection.clone(), (revision, None));
                    new.insert(connection, encoded);
                }
            }
            if new.is_empty() {
                continue;
            }
            let mut parts = Vec::with_capacity(blocks.len());
            for (connection, (_, groups)) in &blocks {
                match (
                    groups,
                    &existing,
                    new.get(connection).or_else(|| reencoded.get(connection)),
                ) {
                    (_, _, Some(encoded)) => parts.push(Part::New(encoded)),
                    (Some(range), Some(existing), None) => {
                        parts.push(Part::Existing(existing, range.clone()))
                    }
                    _ => return Err(SinkError::corrupt(&path, "a block without its rows")),
                }
            }
            let metas: Vec<&Revision> = blocks.values().map(|(b, _)| b).collect();
            let metadata = [(
                BLOCKS,
                serde_json::to_string(&metas)
                    .map_err(|e| SinkError::corrupt(&path, e.to_string()))?,
            )];
            let result = parquet::write_week(&path, table, &parts, &metadata, self.zstd_level)?;
            files += 1;
            written.insert(
                table.file_name(),
                FileEntry {
                    file: table.file_name(),
                    rows: result.rows,
                    sha256: result.sha256,
                },
            );
        }
        if files == 0 && revisions.len() == before {
            return Ok((0, 0));
        }
        sync_dir(&dir)?;
        for entry in &manifest.files {
            written
                .entry(entry.file.clone())
                .or_insert_with(|| entry.clone());
        }
        manifest.files = Table::ALL
            .iter()
            .filter_map(|t| written.remove(&t.file_name()))
            .collect();
        manifest.current = current_blocks(&dir)?;
        manifest.revisions = revisions.into_iter().collect();
        write_json(&dir.join(MANIFEST), &manifest)?;
        sync_dir(&dir)?;
        Ok((files, rows_written))
    }

    /// The weekly files of `year`, with their checksums as the manifests
    /// give them.
    fn year_sources(&self, year: &str) -> Result<Vec<Source>, SinkError> {
        let mut sources = Vec::new();
        for week in self.weeks()? {
            if week.school_year() != year {
                continue;
            }
            for file in self.week_manifest(week)?.files {
                sources.push(Source {
                    week: week.label(),
                    file: file.file,
                    sha256: file.sha256,
                });
            }
        }
        Ok(sources)
    }

    /// Rebuild the yearly files of `year` from its weekly files. Returns
    /// the files written.
    fn rebuild_year(&self, year: &str) -> Result<usize, SinkError> {
        let dir = self.year_dir(year);
        create_partition(&dir)?;
        let weeks: Vec<Week> = self
            .weeks()?
            .into_iter()
            .filter(|w| w.school_year() == year)
            .collect();
        let sources = self.year_sources(year)?;
        let mut opened: Vec<(Table, Vec<(Week, ByUnit)>)> = Vec::new();
        for table in Table::ALL {
            let mut files = Vec::new();
            for week in &weeks {
                let path = self.week_dir(*week).join(table.file_name());
                if path.exists() {
                    files.push((*week, ByUnit::open(&path, table, Period::Week)?));
                }
            }
            opened.push((table, files));
        }
        let register = match &self.integration {
            Some(integration) => match integration.files.get(year) {
                Some(path) => {
                    let mut known = BTreeSet::new();
                    for (_, files) in &opened {
                        for (_, file) in files {
                            known.append(&mut file.units()?);
                        }
                    }
                    Some((
                        path,
                        pupil_register::read(
                            path,
                            pupil_register::census(year),
                            &integration.pseudonymiser,
                            &known,
                        )?,
                    ))
                }
                None => None,
            },
            None => None,
        };
        let annotations = register.as_ref().map(|(_, r)| &r.pupils);
        let settings = YearlySettings {
            zstd_level: self.zstd_level,
            range_rows: self.yearly_range_rows,
        };
        // The two tables are independent: one thread each.
        let written = std::thread::scope(|scope| {
            let handles: Vec<_> = opened
                .iter()
                .map(|(table, files)| {
                    let path = dir.join(table.file_name());
                    let covered: Vec<&Source> = sources
                        .iter()
                        .filter(|s| s.file == table.file_name())
                        .collect();
                    scope.spawn(move || {
                        write_yearly(&path, *table, year, files, annotations, &covered, settings)
                    })
                })
                .collect();
            joined(handles)
        })?;
        let mut files: Vec<FileEntry> = Vec::new();
        let mut pipeline: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (entry, pupils) in written {
            files.extend(entry);
            for (unit, mut keys) in pupils {
                pipeline.entry(unit).or_default().append(&mut keys);
            }
        }
        let mut register_source = None;
        if let Some((path, register)) = &register {
            let coverage: Vec<Row> = pupil_register::coverage(&pipeline, register)
                .into_iter()
                .map(|c| {
                    let n = |x: usize| Cell::Int(x as i64);
                    vec![
                        Cell::Text(year.to_owned()),
                        Cell::Text(c.school_unit_code),
                        n(c.register_pupils),
                        n(c.pipeline_pupils),
                        n(c.in_both),
                        n(c.only_in_register),
                        n(c.only_in_pipeline),
                        n(c.registered_elsewhere),
                    ]
                })
                .collect();
            let file = dir.join(COVERAGE);
            let written =
                parquet::write_rows(&file, &COVERAGE_COLUMNS, &coverage, &[], self.zstd_level)?;
            files.push(FileEntry {
                file: COVERAGE.to_owned(),
                rows: written.rows,
                sha256: written.sha256,
            });
            let findings: Vec<Row> = register
                .findings
                .iter()
                .map(|f| {
                    vec![
                        Cell::Text(year.to_owned()),
                        Cell::Int(f.line as i64),
                        Cell::Text(f.reason.clone()),
                    ]
                })
                .collect();
            let file = dir.join(FINDINGS);
            let written =
                parquet::write_rows(&file, &FINDINGS_COLUMNS, &findings, &[], self.zstd_level)?;
            files.push(FileEntry {
                file: FINDINGS.to_owned(),
                rows: written.rows,
                sha256: written.sha256,
            });
            pupil_register::log_findings(year, register, "register_findings.parquet");
            register_source = Some(RegisterSource {
                file: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                sha256: register.sha256.clone(),
                pupils: register.pupils.len(),
                findings: register.findings.len(),
            });
        } else {
            // Integrated before, not now: what came of the register goes.
            for name in [COVERAGE, FINDINGS] {
                let file = dir.join(name);
                if file.exists() {
                    std::fs::remove_file(&file).map_err(SinkError::io(&file))?;
                }
            }
        }
        sync_dir(&dir)?;
        let count = files.len();
        let manifest = YearManifest {
            format: MANIFEST_FORMAT.to_owned(),
            school_year: year.to_owned(),
            files,
            weeks: sources,
            register: register_source,
        };
        write_json(&dir.join(MANIFEST), &manifest)?;
        sync_dir(&dir)?;
        Ok(count)
    }

    /// The checksum of the pupil register configured for `year`, if any.
    fn register_sha(&self, year: &str) -> Result<Option<String>, SinkError> {
        let Some(path) = self.integration.as_ref().and_then(|i| i.files.get(year)) else {
            return Ok(None);
        };
        pupil_register::file_sha256(path).map(Some)
    }
}

/// The row groups of each of a weekly file's blocks, in order, if every
/// block is whole row groups (as this version writes them).
fn row_groups_of_blocks(
    groups: &[usize],
    blocks: &[Revision],
) -> Option<Vec<std::ops::Range<usize>>> {
    let mut ranges = Vec::with_capacity(blocks.len());
    let mut next = 0;
    for block in blocks {
        let start = next;
        let mut rows = 0;
        while rows < block.rows && next < groups.len() {
            rows += groups[next];
            next += 1;
        }
        if rows != block.rows {
            return None;
        }
        ranges.push(start..next);
    }
    (next == groups.len()).then_some(ranges)
}

/// Each thread's result, in order; a panicked thread is an error.
fn joined<T>(
    handles: Vec<std::thread::ScopedJoinHandle<'_, Result<T, SinkError>>>,
) -> Result<Vec<T>, SinkError> {
    handles
        .into_iter()
        .map(|h| {
            h.join()
                .map_err(|_| SinkError::Worker("a yearly table's thread panicked".into()))?
        })
        .collect()
}

/// Weekly rows summed at a time per table in a yearly rebuild, unless
/// configured: what bounds its memory (a few hundred bytes a row),
/// whatever the size of the school year.
const DEFAULT_YEARLY_RANGE_ROWS: usize = 1 << 18;

/// How yearly files are written.
#[derive(Clone, Copy, Debug)]
struct YearlySettings {
    zstd_level: i32,
    /// Weekly rows summed at a time per table.
    range_rows: usize,
}

/// Write one yearly table from its weekly `files`, a range of school units
/// at a time, annotated with the pupil register where given; an empty
/// table removes its file. With a register, also returns the pupils of
/// the rows by unit, for the coverage.
fn write_yearly(
    path: &Path,
    table: Table,
    year: &str,
    files: &[(Week, ByUnit)],
    register: Option<&BTreeMap<String, pupil_register::Registered>>,
    covered: &[&Source],
    settings: YearlySettings,
) -> Result<(Option<FileEntry>, PupilsByUnit), SinkError> {
    let YearlySettings {
        zstd_level,
        range_rows,
    } = settings;
    let mut pupils = PupilsByUnit::new();
    let pages = files.iter().flat_map(|(_, file)| {
        file.pages().iter().map(|page| {
            (
                page.units
                    .as_ref()
                    .map(|(min, max)| (min.as_slice(), max.as_slice())),
                page.rows.len(),
            )
        })
    });
    let ranges = yearly::plan(pages, range_rows);
    tracing::debug!(
        school_year = %year,
        table = table.name(),
        files = files.len(),
        ranges = ranges.len(),
        "summing a school year by ranges of school units"
    );
    let out = parquet::Streaming::create(path, table, Period::SchoolYear, year, zstd_level)?;
    // Summing a range and encoding the one before run on two threads: with
    // the other table's pair, both cores stay busy until the larger table
    // is done. The encoder takes the ranges in order, so the file is the
    // same bytes as when one thread did both.
    let out = std::thread::scope(|scope| -> Result<parquet::Streaming, SinkError> {
        let (sums, summed) = std::sync::mpsc::sync_channel::<Vec<ArrayRef>>(0);
        let encoder = std::thread::Builder::new()
            .name("sink-yearly-encode".into())
            .spawn_scoped(scope, move || -> Result<parquet::Streaming, SinkError> {
                let mut out = out;
                for columns in summed {
                    out.write(&columns)?;
                }
                Ok(out)
            })
            .map_err(|e| SinkError::Worker(e.to_string()))?;
        let summing = (|| -> Result<(), SinkError> {
            for range in &ranges {
                let mut weeks_read = Vec::new();
                for (week, file) in files {
                    let columns = file.read(range)?;
                    if columns.first().is_some_and(|c| !c.is_empty()) {
                        weeks_read.push((*week, columns));
                    }
                }
                if weeks_read.is_empty() {
                    continue;
                }
                let mut columns = yearly::aggregate(table, weeks_read)?;
                if register.is_some() {
                    add_pupils(&mut pupils, table, &columns);
                }
                annotate(table, &mut columns, register);
                if sums.send(columns).is_err() {
                    // The encoder failed: its error is the one to report.
                    break;
                }
            }
            Ok(())
        })();
        drop(sums);
        let encoded = encoder
            .join()
            .map_err(|_| SinkError::Worker("encoding a yearly table panicked".into()))?;
        summing?;
        encoded
    })?;
    if out.rows() == 0 {
        drop(out);
        if path.exists() {
            std::fs::remove_file(path).map_err(SinkError::io(path))?;
        }
        return Ok((None, pupils));
    }
    let metadata = [(
        WEEKS,
        serde_json::to_string(covered).map_err(|e| SinkError::corrupt(path, e.to_string()))?,
    )];
    let written = out.finish(&metadata)?;
    Ok((
        Some(FileEntry {
            file: table.file_name(),
            rows: written.rows,
            sha256: written.sha256,
        }),
        pupils,
    ))
}

/// Add the register's school unit and grade of each row's pupil, empty
/// where the register has none.
fn annotate(
    table: Table,
    columns: &mut Vec<ArrayRef>,
    register: Option<&BTreeMap<String, pupil_register::Registered>>,
) {
    let rows = columns.first().map_or(0, |c| c.len());
    let mut unit = StringBuilder::with_capacity(rows, rows * 8);
    let mut grade = StringBuilder::with_capacity(rows, rows * 2);
    for key in columns[student_column(table)].as_string::<i32>().iter() {
        let found = match (register, key) {
            (Some(r), Some(key)) => r.get(key),
            _ => None,
        };
        unit.append_value(found.map_or("", |p| p.school_unit_code.as_str()));
        grade.append_value(found.map_or("", |p| p.grade.as_str()));
    }
    columns.push(Arc::new(unit.finish()) as ArrayRef);
    columns.push(Arc::new(grade.finish()) as ArrayRef);
}

fn student_column(table: Table) -> usize {
    table.position("student_key")
}

/// Add the pupils of yearly rows of `table` to `out`, by school unit.
fn add_pupils(out: &mut PupilsByUnit, table: Table, columns: &[ArrayRef]) {
    let (Some(units), Some(students)) = (
        columns.get(parquet::unit_column(table)),
        columns.get(student_column(table)),
    ) else {
        return;
    };
    for (unit, key) in units
        .as_string::<i32>()
        .iter()
        .zip(students.as_string::<i32>().iter())
    {
        if let (Some(unit), Some(key)) = (unit, key) {
            match out.get_mut(unit) {
                Some(keys) => {
                    if !keys.contains(key) {
                        keys.insert(key.to_owned());
                    }
                }
                None => {
                    out.insert(unit.to_owned(), BTreeSet::from([key.to_owned()]));
                }
            }
        }
    }
}

const COVERAGE: &str = "coverage.parquet";
const FINDINGS: &str = "register_findings.parquet";

const COVERAGE_COLUMNS: [(&str, Kind); 8] = [
    ("school_year", Kind::Text),
    ("school_unit_code", Kind::Text),
    ("register_pupils", Kind::Int),
    ("pipeline_pupils", Kind::Int),
    ("in_both", Kind::Int),
    ("only_in_register", Kind::Int),
    ("only_in_pipeline", Kind::Int),
    ("registered_elsewhere", Kind::Int),
];

const FINDINGS_COLUMNS: [(&str, Kind); 3] = [
    ("school_year", Kind::Text),
    ("line", Kind::Int),
    ("reason", Kind::Text),
];

impl Output for Registers {
    fn stage(&mut self, completed: Completed, topic: &str) -> Result<(), SinkError> {
        Registers::stage(self, completed, topic)
    }

    fn staged_bytes(&self) -> usize {
        self.staged_bytes
    }

    fn behind(&self) -> bool {
        Registers::behind(self)
    }

    /// The files first, then the checkpoint: a sink stopped in between
    /// reads some records again and finds their revisions written.
    fn commit(&mut self, checkpoint: &Checkpoint, settled: bool) -> Result<Applied, SinkError> {
        let applied = Registers::commit(self, settled)?;
        checkpoint.save(&self.root)?;
        Ok(applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::RowsBuilder;
    use skolflode_schemas::processed::AttendanceRow;

    fn rows(connection: &str, n: i32, lessons: i32) -> Result<Block, SinkError> {
        let mut builder = RowsBuilder::new(Table::Attendance, n as usize);
        for i in 0..n {
            builder.push_attendance(&AttendanceRow {
                connection: connection.into(),
                week: "2025-W36".into(),
                revision: 1,
                rows_in_revision: n,
                school_unit_code: format!("{:08}", 10_000_000 + i / 50),
                student_key: format!("{connection}{i:063x}"),
                subject_code: "MA".into(),
                lessons,
                minutes_scheduled: 40 * lessons,
                minutes_present: 30,
                minutes_valid_absence: 5,
                minutes_invalid_absence: 5,
                lessons_unreported: 0,
                source: "ss12000-sim".into(),
            });
        }
        Ok(builder.finish()?)
    }

    fn revision(connection: &str, revision: i32, rows: usize, first_offset: i64) -> Revision {
        Revision {
            table: Table::Attendance,
            connection: connection.into(),
            revision,
            rows,
            topic: "t".into(),
            partition: 0,
            first_offset,
            last_offset: first_offset + rows as i64 - 1,
        }
    }

    fn completed(r: &Revision, week: Week, block: Block) -> Completed {
        Completed {
            id: BlockId {
                table: r.table,
                week,
                connection: r.connection.clone(),
            },
            revision: r.revision,
            rows: r.rows,
            partition: r.partition,
            first_offset: r.first_offset,
            last_offset: r.last_offset,
            content: Some(block),
        }
    }

    /// Weekly files of an earlier version held several blocks in one row
    /// group; the next revision of one block rewrites such a file as this
    /// version writes it, byte for byte.
    #[test]
    fn a_file_whose_blocks_share_row_groups_is_rewritten_whole() -> Result<(), SinkError> {
        let week = Week::parse("2025-W36").ok_or(SinkError::Config("week".into()))?;
        let (a1, b1, b2) = (
            revision("a", 1, 300, 0),
            revision("b", 1, 200, 300),
            revision("b", 2, 200, 500),
        );
        let fresh_dir = tempfile::tempdir().map_err(SinkError::io(Path::new("tempdir")))?;
        let (mut fresh, _) = Registers::open(fresh_dir.path(), 3, None)?;
        fresh.stage(completed(&a1, week, rows("a", 300, 1)?), "t")?;
        fresh.stage(completed(&b2, week, rows("b", 200, 2)?), "t")?;
        fresh.commit(true)?;

        let old_dir = tempfile::tempdir().map_err(SinkError::io(Path::new("tempdir")))?;
        let partition = old_dir.path().join("weekly/week=2025-W36");
        std::fs::create_dir_all(&partition).map_err(SinkError::io(&partition))?;
        let (a, b) = (rows("a", 300, 1)?, rows("b", 200, 1)?);
        let columns: Vec<ArrayRef> = a
            .columns
            .iter()
            .zip(&b.columns)
            .map(|(x, y)| arrow_select::concat::concat(&[x.as_ref(), y.as_ref()]))
            .collect::<Result<_, _>>()?;
        let blocks =
            serde_json::to_string(&[&a1, &b1]).map_err(|e| SinkError::Config(e.to_string()))?;
        let path = partition.join(Table::Attendance.file_name());
        parquet::write(
            &path,
            Table::Attendance,
            Period::Week,
            "2025-W36",
            &columns,
            &[(BLOCKS, blocks)],
            3,
        )?;
        assert_eq!(Existing::open(&path)?.row_group_rows(), vec![500]);
        let (mut old, done) = Registers::open(old_dir.path(), 3, None)?;
        assert_eq!(done.len(), 2);
        old.stage(completed(&b2, week, rows("b", 200, 2)?), "t")?;
        old.commit(true)?;

        let name = format!("weekly/week=2025-W36/{}", Table::Attendance.file_name());
        let read =
            |root: &Path| std::fs::read(root.join(&name)).map_err(SinkError::io(&root.join(&name)));
        assert_eq!(read(fresh_dir.path())?, read(old_dir.path())?);
        assert_eq!(
            Existing::open(&old_dir.path().join(&name))?.row_group_rows(),
            vec![300, 200]
        );
        Ok(())
    }
}

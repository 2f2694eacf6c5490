//! Register files: Parquet, zstd-compressed, with column statistics, each
//! written whole under a hidden temporary name, synced, and renamed into
//! place, so that no reader ever sees a partial file.
//!
//! A file is a pure function of its rows, its metadata and how its rows
//! were handed to the writer (page boundaries depend on the batches):
//! a block is encoded from one batch, a weekly file copies its blocks' row
//! groups, and a yearly file is written range by range as its weekly
//! files' page index and `yearly_range_rows` cut it. Nothing time- or
//! host-dependent is written, so the same input and settings give the
//! same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::Array;
use arrow_array::{ArrayRef, BooleanArray, Int32Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::arrow::ProjectionMask;
use parquet::arrow::{add_encoded_arrow_schema_to_metadata, ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Compression, ZstdLevel};
use parquet::column::writer::ColumnCloseResult;
use parquet::file::metadata::{KeyValue, PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::ChunkReader;
use parquet::file::writer::SerializedFileWriter;
use sha2::{Digest, Sha256};

use crate::block::Block;
use crate::table::{Cell, Kind, Row, Table};
use crate::yearly::UnitRange;
use crate::SinkError;

/// The period a register is cut by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    Week,
    SchoolYear,
}

impl Period {
    /// The period column, first in every file.
    pub fn column(self) -> &'static str {
        match self {
            Period::Week => "week",
            Period::SchoolYear => "school_year",
        }
    }

    /// The columns this period adds after the table's own.
    pub fn extra(self) -> &'static [(&'static str, Kind)] {
        match self {
            Period::Week => &[],
            Period::SchoolYear => &[
                ("first_week", Kind::Text),
                ("last_week", Kind::Text),
                ("weeks", Kind::Int),
                ("register_school_unit_code", Kind::Text),
                ("register_grade", Kind::Text),
            ],
        }
    }
}

/// The cells after the period column: the table's columns, then the
/// period's extra ones.
fn cells(table: Table, period: Period) -> Vec<(&'static str, Kind)> {
    table
        .columns()
        .iter()
        .map(|c| (c.name, c.kind))
        .chain(period.extra().iter().copied())
        .collect()
}

/// The Arrow schema of a register file.
pub fn schema(table: Table, period: Period) -> SchemaRef {
    let mut columns = vec![(period.column(), Kind::Text)];
    columns.extend(cells(table, period));
    schema_of(&columns)
}

/// The Arrow type of a column of `kind`.
pub fn data_type(kind: Kind) -> DataType {
    match kind {
        Kind::Text => DataType::Utf8,
        Kind::Int => DataType::Int32,
        Kind::Flag => DataType::Boolean,
    }
}

/// The Arrow schema of columns of these names and kinds, none null.
pub fn schema_of(columns: &[(&str, Kind)]) -> SchemaRef {
    let fields: Vec<Field> = columns
        .iter()
        .map(|&(name, kind)| Field::new(name, data_type(kind), false))
        .collect();
    Arc::new(Schema::new(fields))
}

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub rows: usize,
    /// Lowercase hex SHA-256 of the file's bytes.
    pub sha256: String,
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The hidden name a file is written under before it is renamed into place.
pub fn temporary(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

fn column(rows: &[Row], index: usize, kind: Kind) -> Result<ArrayRef, SinkError> {
    let bad = || SinkError::Config(format!("column {index} does not hold {kind:?}"));
    Ok(match kind {
        Kind::Text => {
            let mut values = Vec::with_capacity(rows.len());
            for row in rows {
                match row.get(index) {
                    Some(Cell::Text(s)) => values.push(s.as_str()),
                    _ => return Err(bad()),
                }
            }
            Arc::new(StringArray::from(values))
        }
        Kind::Int => {
            let mut values = Vec::with_capacity(rows.len());
            for row in rows {
                match row.get(index) {
                    Some(Cell::Int(n)) => values.push(
                        i32::try_from(*n)
                            .map_err(|_| SinkError::Config(format!("{n} exceeds 32 bits")))?,
                    ),
                    _ => return Err(bad()),
                }
            }
            Arc::new(Int32Array::from(values))
        }
        Kind::Flag => {
            let mut values = Vec::with_capacity(rows.len());
            for row in rows {
                match row.get(index) {
                    Some(Cell::Flag(b)) => values.push(*b),
                    _ => return Err(bad()),
                }
            }
            Arc::new(BooleanArray::from(values))
        }
    })
}

/// How every register file is written. Row groups of at most 2^20 rows:
/// a block of a weekly file is one row group or more, never part of one.
fn properties(zstd_level: i32) -> Result<WriterProperties, SinkError> {
    let level = ZstdLevel::try_new(zstd_level)
        .map_err(|e| SinkError::Config(format!("zstd level {zstd_level}: {e}")))?;
    Ok(WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_size(1 << 20)
        .build())
}

/// The period column followed by `columns`.
fn with_period(period_value: &str, rows: usize, columns: &[ArrayRef]) -> Vec<ArrayRef> {
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(columns.len() + 1);
    arrays.push(Arc::new(StringArray::from(vec![period_value; rows])));
    arrays.extend(columns.iter().cloned());
    arrays
}

/// A block encoded as a Parquet file in memory, the way it will stand in
/// its weekly file: its row groups are copied there without decoding.
#[derive(Clone, Debug)]
pub struct Encoded {
    pub rows: usize,
    bytes: Bytes,
    metadata: Arc<ParquetMetaData>,
}

impl Encoded {
    /// Memory held.
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }
}

/// Encode `block` of `table` as rows of week `week_label`.
pub fn encode_block(
    table: Table,
    week_label: &str,
    block: &Block,
    zstd_level: i32,
) -> Result<Encoded, SinkError> {
    let rows = block.rows();
    let schema = schema(table, Period::Week);
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        with_period(week_label, rows, &block.columns),
    )?;
    let here = Path::new("(a block in memory)");
    let mut writer = ArrowWriter::try_new(Vec::new(), schema, Some(properties(zstd_level)?))
        .map_err(SinkError::parquet(here))?;
    writer.write(&batch).map_err(SinkError::parquet(here))?;
    let bytes = Bytes::from(writer.into_inner().map_err(SinkError::parquet(here))?);
    let metadata = with_page_index(&bytes, here)?;
    Ok(Encoded {
        rows,
        bytes,
        metadata,
    })
}

/// A file's metadata with its page indexes, which copying its row groups
/// needs.
fn with_page_index<R: ChunkReader>(
    reader: &R,
    path: &Path,
) -> Result<Arc<ParquetMetaData>, SinkError> {
    ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Required)
        .parse_and_finish(reader)
        .map(Arc::new)
        .map_err(SinkError::parquet(path))
}

/// A weekly file as it stands: its metadata with page indexes, read once
/// so that its row groups can be copied into the next version of it.
#[derive(Debug)]
pub struct Existing {
    file: File,
    metadata: Arc<ParquetMetaData>,
}

impl Existing {
    pub fn open(path: &Path) -> Result<Existing, SinkError> {
        let file = File::open(path).map_err(SinkError::io(path))?;
        let metadata = with_page_index(&file, path)?;
        Ok(Existing { file, metadata })
    }

    /// Its key-value metadata.
    pub fn key_values(&self) -> BTreeMap<String, String> {
        kv_map(self.metadata.file_metadata().key_value_metadata())
    }

    /// Rows per row group, in order.
    pub fn row_group_rows(&self) -> Vec<usize> {
        self.metadata
            .row_groups()
            .iter()
            .map(|rg| usize::try_from(rg.num_rows()).unwrap_or(0))
            .collect()
    }
}

/// Row groups of a weekly file's next version, copied as they are.
#[derive(Debug)]
pub enum Part<'a> {
    /// Row groups of the file as it stands.
    Existing(&'a Existing, Range<usize>),
    /// A block encoded since.
    New(&'a Encoded),
}

fn copy_row_groups<W: Write + Send, R: ChunkReader>(
    writer: &mut SerializedFileWriter<W>,
    reader: &R,
    metadata: &ParquetMetaData,
    row_groups: Range<usize>,
) -> parquet::errors::Result<()> {
    for index in row_groups {
        let group = metadata.row_group(index);
        let mut out = writer.next_row_group()?;
        for (c, column) in group.columns().iter().enumerate() {
            out.append_column(
                reader,
                ColumnCloseResult {
                    bytes_written: column.compressed_size() as u64,
                    rows_written: group.num_rows() as u64,
                    metadata: column.clone(),
                    bloom_filter: None,
                    column_index: metadata
                        .column_index()
                        .and_then(|i| i.get(index))
                        .and_then(|g| g.get(c))
                        .cloned(),
                    offset_index: metadata
                        .offset_index()
                        .and_then(|i| i.get(index))
                        .and_then(|g| g.get(c))
                        .cloned(),
                },
            )?;
        }
        out.close()?;
    }
    Ok(())
}

/// Write a weekly file of `table` from `parts`, in order, atomically. The
/// row groups are copied without decoding, so a file's bytes depend only
/// on the blocks it holds, never on when each was encoded.
pub fn write_week(
    path: &Path,
    table: Table,
    parts: &[Part<'_>],
    metadata: &[(&str, String)],
    zstd_level: i32,
) -> Result<Written, SinkError> {
    let schema = schema(table, Period::Week);
    let mut props = properties(zstd_level)?;
    add_encoded_arrow_schema_to_metadata(&schema, &mut props);
    let descriptor = ArrowSchemaConverter::new()
        .with_coerce_types(props.coerce_types())
        .convert(&schema)
        .map_err(SinkError::parquet(path))?;
    let rows = parts
        .iter()
        .map(|p| match p {
            Part::Existing(e, range) => range
                .clone()
                .map(|i| usize::try_from(e.metadata.row_group(i).num_rows()).unwrap_or(0))
                .sum(),
            Part::New(e) => e.rows,
        })
        .sum();
    atomically(path, |out| {
        let mut writer =
            SerializedFileWriter::new(out, descriptor.root_schema_ptr(), Arc::new(props))?;
        for part in parts {
            match part {
                Part::Existing(e, range) => {
                    copy_row_groups(&mut writer, &e.file, &e.metadata, range.clone())?
                }
                Part::New(e) => copy_row_groups(
                    &mut writer,
                    &e.bytes,
                    &e.metadata,
                    0..e.metadata.num_row_groups(),
                )?,
            }
        }
        for (key, value) in metadata {
            writer.append_key_value_metadata(KeyValue::new((*key).to_owned(), value.clone()));
        }
        writer.into_inner()
    })
    .map(|sha256| Written { rows, sha256 })
}

/// Write a file through `write` under the hidden temporary name, sync it,
/// and rename it into place. Returns its SHA-256.
fn atomically(
    path: &Path,
    write: impl FnOnce(Hashing<BufWriter<File>>) -> parquet::errors::Result<Hashing<BufWriter<File>>>,
) -> Result<String, SinkError> {
    let hashing = hashing_file(path)?;
    let hashing = write(hashing).map_err(SinkError::parquet(path))?;
    rename_into_place(path, hashing)
}

/// The temporary file of `path`, created, behind a hashing buffer.
fn hashing_file(path: &Path) -> Result<Hashing<BufWriter<File>>, SinkError> {
    let temporary = temporary(path);
    let file = File::create(&temporary).map_err(SinkError::io(&temporary))?;
    Ok(Hashing {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
    })
}

/// Flush and sync the temporary file of `path` and rename it into place.
/// Returns its SHA-256.
fn rename_into_place(
    path: &Path,
    mut hashing: Hashing<BufWriter<File>>,
) -> Result<String, SinkError> {
    let temporary = temporary(path);
    hashing.flush().map_err(SinkError::io(&temporary))?;
    let sha256 = hex::encode(hashing.hasher.finalize());
    let file = hashing
        .inner
        .into_inner()
        .map_err(|e| SinkError::io(&temporary)(e.into_error()))?;
    file.sync_all().map_err(SinkError::io(&temporary))?;
    std::fs::rename(&temporary, path).map_err(SinkError::io(path))?;
    Ok(sha256)
}

/// A register file written batch by batch, under its temporary name until
/// [`Streaming::finish`] renames it into place; dropped unfinished, the
/// temporary file is removed.
pub struct Streaming {
    path: PathBuf,
    schema: SchemaRef,
    period_value: String,
    writer: Option<ArrowWriter<Hashing<BufWriter<File>>>>,
    rows: usize,
}

impl std::fmt::Debug for Streaming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streaming")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl Streaming {
    /// Start a file of `table` cut by `period`, every row's period column
    /// being `period_value`.
    pub fn create(
        path: &Path,
        table: Table,
        period: Period,
        period_value: &str,
        zstd_level: i32,
    ) -> Result<Streaming, SinkError> {
        let schema = schema(table, period);
        let props = properties(zstd_level)?;
        let hashing = hashing_file(path)?;
        let writer = ArrowWriter::try_new(hashing, Arc::clone(&schema), Some(props))
            .map_err(SinkError::parquet(path))?;
        Ok(Streaming {
            path: path.to_owned(),
            schema,
            period_value: period_value.to_owned(),
            writer: Some(writer),
            rows: 0,
        })
    }

    /// Append rows: `columns` after the period column. Row groups are cut
    /// at the same row counts however the rows are split into calls.
    pub fn write(&mut self, columns: &[ArrayRef]) -> Result<(), SinkError> {
        let rows = columns.first().map_or(0, |c| c.len());
        if rows == 0 {
            return Ok(());
        }
        let batch = RecordBatch::try_new(
            Arc::clone(&self.schema),
            with_period(&self.period_value, rows, columns),
        )?;
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| SinkError::corrupt(&self.path, "written after it was finished"))?;
        writer
            .write(&batch)
            .map_err(SinkError::parquet(&self.path))?;
        self.rows += rows;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Add `metadata`, close the file and rename it into place.
    pub fn finish(mut self, metadata: &[(&str, String)]) -> Result<Written, SinkError> {
        let mut writer = self
            .writer
            .take()
            .ok_or_else(|| SinkError::corrupt(&self.path, "finished twice"))?;
        for (key, value) in metadata {
            writer.append_key_value_metadata(KeyValue::new((*key).to_owned(), value.clone()));
        }
        let hashing = writer
            .into_inner()
            .map_err(SinkError::parquet(&self.path))?;
        let sha256 = rename_into_place(&self.path, hashing)?;
        Ok(Written {
            rows: self.rows,
            sha256,
        })
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            // Unfinished: nothing of it may be seen. A failure to remove
            // is left to the next start's cleaning of temporary files.
            let _ = std::fs::remove_file(temporary(&self.path));
        }
    }
}

/// Write `columns` (after the period column, which is `period_value` in
/// every row) of a `table` file cut by `period` to `path`, atomically.
pub fn write(
    path: &Path,
    table: Table,
    period: Period,
    period_value: &str,
    columns: &[ArrayRef],
    metadata: &[(&str, String)],
    zstd_level: i32,
) -> Result<Written, SinkError> {
    let rows = columns.first().map_or(0, |c| c.len());
    write_arrays(
        path,
        schema(table, period),
        with_period(period_value, rows, columns),
        metadata,
        zstd_level,
    )
}

/// Write `rows` (every cell, in `columns`' order) to `path`, atomically.
pub fn write_rows(
    path: &Path,
    columns: &[(&str, Kind)],
    rows: &[Row],
    metadata: &[(&str, String)],
    zstd_level: i32,
) -> Result<Written, SinkError> {
    let mut arrays = Vec::with_capacity(columns.len());
    for (index, (_, kind)) in columns.iter().enumerate() {
        arrays.push(column(rows, index, *kind)?);
    }
    write_arrays(path, schema_of(columns), arrays, metadata, zstd_level)
}

fn write_arrays(
    path: &Path,
    schema: SchemaRef,
    arrays: Vec<ArrayRef>,
    metadata: &[(&str, String)],
    zstd_level: i32,
) -> Result<Written, SinkError> {
    let batch = RecordBatch::try_new(Arc::clone(&schema), arrays)?;
    let props = properties(zstd_level)?;
    let rows = batch.num_rows();
    atomically(path, |out| {
        let mut writer = ArrowWriter::try_new(out, schema, Some(props))?;
        writer.write(&batch)?;
        for (key, value) in metadata {
            writer.append_key_value_metadata(KeyValue::new((*key).to_owned(), value.clone()));
        }
        writer.into_inner()
    })
    .map(|sha256| Written { rows, sha256 })
}

/// The key-value metadata of a register file.
pub fn metadata(path: &Path) -> Result<BTreeMap<String, String>, SinkError> {
    let file = File::open(path).map_err(SinkError::io(path))?;
    let metadata = ParquetMetaDataReader::new()
        .parse_and_finish(&file)
        .map_err(SinkError::parquet(path))?;
    Ok(kv_map(metadata.file_metadata().key_value_metadata()))
}

fn kv_map(kvs: Option<&Vec<KeyValue>>) -> BTreeMap<String, String> {
    kvs.map(|kvs| {
        kvs.iter()
            .filter_map(|kv| kv.value.clone().map(|v| (kv.key.clone(), v)))
            .collect()
    })
    .unwrap_or_default()
}

/// The columns of a register file of `table` (without the period
/// column), each in one array, and its key-value metadata.
pub fn read(
    path: &Path,
    table: Table,
    period: Period,
) -> Result<(Vec<ArrayRef>, BTreeMap<String, String>), SinkError> {
    let file = ByUnit::open(path, table, period)?;
    let metadata = kv_map(
        file.metadata
            .metadata()
            .file_metadata()
            .key_value_metadata(),
    );
    Ok((file.read(&UnitRange::default())?, metadata))
}

/// A page of a file's school-unit column: its row group, its rows within
/// that, and the least and greatest unit in it (`None` where the file has
/// no page statistics: the page may hold any unit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitPage {
    pub row_group: usize,
    pub rows: Range<usize>,
    pub units: Option<(Vec<u8>, Vec<u8>)>,
}

/// A register file read by ranges of school units: its page index says
/// which pages can hold a range, and only those are decoded.
pub struct ByUnit {
    path: PathBuf,
    table: Table,
    metadata: ArrowReaderMetadata,
    pages: Vec<UnitPage>,
}

impl std::fmt::Debug for ByUnit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ByUnit")
            .field("path", &self.path)
            .field("pages", &self.pages.len())
            .finish_non_exhaustive()
    }
}

/// The position of `school_unit_code` among a table's columns.
pub fn unit_column(table: Table) -> usize {
    table.position("school_unit_code")
}

impl ByUnit {
    pub fn open(path: &Path, table: Table, period: Period) -> Result<ByUnit, SinkError> {
        let file = File::open(path).map_err(SinkError::io(path))?;
        let metadata =
            ArrowReaderMetadata::load(&file, ArrowReaderOptions::new().with_page_index(true))
                .map_err(SinkError::parquet(path))?;
        if metadata.schema().fields() != schema(table, period).fields() {
            return Err(SinkError::corrupt(
                path,
                "columns differ from the register's",
            ));
        }
        // The period column comes first in the file.
        let leaf = 1 + unit_column(table);
        let meta = Arc::clone(metadata.metadata());
        let mut pages = Vec::new();
        for (g, group) in meta.row_groups().iter().enumerate() {
            let rows = usize::try_from(group.num_rows()).unwrap_or(0);
            let locations = meta
                .offset_index()
                .and_then(|o| o.get(g))
                .and_then(|c| c.get(leaf))
                .map(|o| o.page_locations());
            let index = meta
                .column_index()
                .and_then(|i| i.get(g))
                .and_then(|c| c.get(leaf));
            match (locations, index) {
                (Some(locations), Some(ColumnIndexMetaData::BYTE_ARRAY(index)))
                    if index.num_pages() == locations.len() as u64 =>
                {
                    for (p, location) in locations.iter().enumerate() {
                        let start = usize::try_from(location.first_row_index).unwrap_or(0);
                        let end = locations
                            .get(p + 1)
                            .map_or(rows, |l| usize::try_from(l.first_row_index).unwrap_or(rows));
                        pages.push(UnitPage {
                            row_group: g,
                            rows: start..end,
                            units: index
                                .min_value(p)
                                .zip(index.max_value(p))
                                .map(|(min, max)| (min.to_vec(), max.to_vec())),
                        });
                    }
                }
                _ => pages.push(UnitPage {
                    row_group: g,
                    rows: 0..rows,
                    units: None,
                }),
            }
        }
        Ok(ByUnit {
            path: path.to_owned(),
            table,
            metadata,
            pages,
        })
    }

    pub fn pages(&self) -> &[UnitPage] {
        &self.pages
    }

    /// The rows whose school unit is in `range`, in file order: the
    /// columns after the period column, each in one array.
    pub fn read(&self, range: &UnitRange) -> Result<Vec<ArrayRef>, SinkError> {
        let fields: Vec<usize> = (1..=self.table.columns().len()).collect();
        let unit = unit_column(self.table);
        let columns = self.read_selected(range, &fields, |batch| {
            if !range.bounded() {
                return Ok(batch);
            }
            let units = batch.column(unit).as_string::<i32>();
            let keep: BooleanArray = units
                .iter()
                .map(|u| Some(u.is_some_and(|u| range.contains(u.as_bytes()))))
                .collect();
            if keep.true_count() == batch.num_rows() {
                Ok(batch)
            } else {
                Ok(arrow_select::filter::filter_record_batch(&batch, &keep)?)
            }
        })?;
        Ok(columns)
    }

    /// Every school unit in the file.
    pub fn units(&self) -> Result<BTreeSet<String>, SinkError> {
        let columns =
            self.read_selected(&UnitRange::default(), &[1 + unit_column(self.table)], Ok)?;
        let mut out = BTreeSet::new();
        if let Some(units) = columns.first() {
            let mut previous: Option<&str> = None;
            for unit in units.as_string::<i32>().iter().flatten() {
                // Rows come sorted by unit within each block: most repeat.
                if previous != Some(unit) {
                    if !out.contains(unit) {
                        out.insert(unit.to_owned());
                    }
                    previous = Some(unit);
                }
            }
        }
        Ok(out)
    }

    /// The file's columns `fields` (in order) of the pages that can hold
    /// `range`, each batch passed through `keep`, joined into one array
    /// per column.
    fn read_selected(
        &self,
        range: &UnitRange,
        fields: &[usize],
        mut keep: impl FnMut(RecordBatch) -> Result<RecordBatch, SinkError>,
    ) -> Result<Vec<ArrayRef>, SinkError> {
        let path = &self.path;
        let meta = self.metadata.metadata();
        let mut groups: Vec<usize> = Vec::new();
        let mut selected: Vec<Range<usize>> = Vec::new();
        // Rows of the chosen row groups before the current one.
        let mut before = 0;
        // `pages` are in row-group order: one pass over them, not one per
        // row group (a national week's file has hundreds of each).
        let mut pages = self.pages.iter().peekable();
        for (g, group) in meta.row_groups().iter().enumerate() {
            let rows = usize::try_from(group.num_rows()).unwrap_or(0);
            let mut any = false;
            while let Some(page) = pages.next_if(|p| p.row_group == g) {
                let overlaps = page
                    .units
                    .as_ref()
                    .is_none_or(|(min, max)| range.overlaps(min, max));
                if overlaps {
                    any = true;
                    selected.push(before + page.rows.start..before + page.rows.end);
                }
            }
            if any {
                groups.push(g);
                before += rows;
            }
        }
        let mut parts: Vec<Vec<ArrayRef>> = vec![Vec::new(); fields.len()];
        if !groups.is_empty() {
            let mask =
                ProjectionMask::roots(self.metadata.parquet_schema(), fields.iter().copied());
            let file = File::open(path).map_err(SinkError::io(path))?;
            let reader =
                ParquetRecordBatchReaderBuilder::new_with_metadata(file, self.metadata.clone())
                    .with_row_groups(groups)
                    .with_row_selection(RowSelection::from_consecutive_ranges(
                        selected.into_iter(),
                        before,
                    ))
                    .with_projection(mask)
                    .with_batch_size(1 << 16)
                    .build()
                    .map_err(SinkError::parquet(path))?;
            for batch in reader {
                let batch = keep(batch?)?;
                if batch.num_rows() == 0 {
                    continue;
                }
                for (part, column) in parts.iter_mut().zip(batch.columns()) {
                    part.push(Arc::clone(column));
                }
            }
        }
        let schema = self.metadata.schema();
        let mut columns = Vec::with_capacity(fields.len());
        for (part, &field) in parts.iter().zip(fields) {
            let refs: Vec<&dyn arrow_array::Array> = part.iter().map(|a| a.as_ref()).collect();
            columns.push(match refs.len() {
                0 => arrow_array::new_empty_array(schema.field(field).data_type()),
                1 => Arc::clone(&part[0]),
                _ => arrow_select::concat::concat(&refs)?,
            });
        }
        Ok(columns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(from: i64, n: i64) -> Result<Block, SinkError> {
        let rows: Vec<Row> = (from..from + n)
            .map(|i| {
                vec![
                    Cell::Text(format!("unit{}", i % 7)),
                    Cell::Text(format!("{i:064x}")),
                    Cell::Text("MA".into()),
                    Cell::Int(i % 40),
                    Cell::Int(i % 400),
                    Cell::Int(i % 300),
                    Cell::Int(i % 5),
                    Cell::Int(i % 5),
                    Cell::Int(i % 2),
                    Cell::Text("ss12000-sim".into()),
                ]
            })
            .collect();
        let columns = Table::Attendance
            .columns()
            .iter()
            .enumerate()
            .map(|(i, c)| column(&rows, i, c.kind))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Block::sorted(Table::Attendance, columns)?)
    }

    #[test]
    fn a_weekly_file_is_the_same_bytes_however_its_blocks_came() -> Result<(), SinkError> {
        let dir = tempfile::tempdir().map_err(SinkError::io(Path::new("tempdir")))?;
        let (a, b) = (block(0, 3000)?, block(3000, 500)?);
        let t = Table::Attendance;
        let ea = encode_block(t, "2025-W36", &a, 3)?;
        let eb = encode_block(t, "2025-W36", &b, 3)?;
        let meta = [("skolflode.blocks", "[]".to_owned())];
        let first = dir.path().join("first.parquet");
        write_week(&first, t, &[Part::New(&ea)], &meta, 3)?;
        // Both blocks at once, and the second added to the first's file.
        let whole = dir.path().join("whole.parquet");
        let w1 = write_week(&whole, t, &[Part::New(&ea), Part::New(&eb)], &meta, 3)?;
        let existing = Existing::open(&first)?;
        assert_eq!(existing.row_group_rows(), vec![3000]);
        let grown = dir.path().join("grown.parquet");
        let w2 = write_week(
            &grown,
            t,
            &[Part::Existing(&existing, 0..1), Part::New(&eb)],
            &meta,
            3,
        )?;
        assert_eq!(w1, w2);
        assert_eq!(w1.rows, 3500);
        let bytes = std::fs::read(&whole).map_err(SinkError::io(&whole))?;
        assert_eq!(bytes, std::fs::read(&grown).map_err(SinkError::io(&grown))?);
        assert_eq!(hex::encode(Sha256::digest(&bytes)), w1.sha256);
        assert!(!temporary(&whole).exists());
        // It reads back as the two blocks, with its page indexes and metadata.
        let (columns, kv) = read(&grown, t, Period::Week)?;
        for (i, column) in columns.iter().enumerate() {
            let expected =
                arrow_select::concat::concat(&[a.columns[i].as_ref(), b.columns[i].as_ref()])?;
            assert_eq!(column, &expected);
        }
        assert_eq!(kv.get("skolflode.blocks").map(String::as_str), Some("[]"));
        assert!(kv.contains_key("ARROW:schema"));
        assert_eq!(Existing::open(&grown)?.row_group_rows(), vec![3000, 500]);
        // Read as the wrong table: refused, not misread.
        assert!(read(&grown, Table::TeacherStudent, Period::Week).is_err());
        Ok(())
    }

    #[test]
    fn the_same_columns_give_the_same_bytes() -> Result<(), SinkError> {
        let dir = tempfile::tempdir().map_err(SinkError::io(Path::new("tempdir")))?;
        let rows = block(0, 2000)?;
        let written: Vec<Written> = ["a", "b"]
            .iter()
            .map(|name| {
                write(
                    &dir.path().join(name),
                    Table::Attendance,
                    Period::Week,
                    "2025-W36",
                    &rows.columns,
                    &[],
                    3,
                )
            })
            .collect::<Result<_, _>>()?;
        assert_eq!(written[0], written[1]);
        Ok(())
    }
}

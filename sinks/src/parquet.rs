//! Register files: Parquet, zstd-compressed, with column statistics, each
//! written whole under a hidden temporary name, synced, and renamed into
//! place, so that no reader ever sees a partial file.
//!
//! A file is a pure function of its rows and metadata: the rows go to the
//! writer as one batch (page and row-group boundaries depend on how rows
//! are batched), and nothing time- or host-dependent is written, so the
//! same rows give the same bytes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_array::{ArrayRef, BooleanArray, Int32Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use sha2::{Digest, Sha256};

use crate::table::{Cell, Kind, Row, Table};
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

/// The Arrow schema of columns of these names and kinds, none null.
pub fn schema_of(columns: &[(&str, Kind)]) -> SchemaRef {
    let fields: Vec<Field> = columns
        .iter()
        .map(|&(name, kind)| {
            let data_type = match kind {
                Kind::Text => DataType::Utf8,
                Kind::Int => DataType::Int32,
                Kind::Flag => DataType::Boolean,
            };
            Field::new(name, data_type, false)
        })
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

fn column(rows: &[Row], index: usize, kind: Kind, path: &Path) -> Result<ArrayRef, SinkError> {
    let bad = || SinkError::corrupt(path, format!("column {index} does not hold {kind:?}"));
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
                    Some(Cell::Int(n)) => values.push(i32::try_from(*n).map_err(|_| {
                        SinkError::corrupt(path, format!("{n} in column {index} exceeds 32 bits"))
                    })?),
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

/// Write `rows` of `table` for `period_value` to `path`, atomically, with
/// `metadata` in the file's key-value metadata.
pub fn write(
    path: &Path,
    table: Table,
    period: Period,
    period_value: &str,
    rows: &[Row],
    metadata: &[(&str, String)],
    zstd_level: i32,
) -> Result<Written, SinkError> {
    let mut arrays: Vec<ArrayRef> =
        vec![Arc::new(StringArray::from(vec![period_value; rows.len()]))];
    for (index, (_, kind)) in cells(table, period).into_iter().enumerate() {
        arrays.push(column(rows, index, kind, path)?);
    }
    write_arrays(
        path,
        schema(table, period),
        arrays,
        rows.len(),
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
        arrays.push(column(rows, index, *kind, path)?);
    }
    write_arrays(
        path,
        schema_of(columns),
        arrays,
        rows.len(),
        metadata,
        zstd_level,
    )
}

fn write_arrays(
    path: &Path,
    schema: SchemaRef,
    arrays: Vec<ArrayRef>,
    rows: usize,
    metadata: &[(&str, String)],
    zstd_level: i32,
) -> Result<Written, SinkError> {
    let batch = RecordBatch::try_new(Arc::clone(&schema), arrays)?;
    let level = ZstdLevel::try_new(zstd_level).map_err(SinkError::parquet(path))?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_size(1 << 20)
        .build();
    let temporary = temporary(path);
    let file = File::create(&temporary).map_err(SinkError::io(&temporary))?;
    let hashing = Hashing {
        inner: std::io::BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
    };
    let mut writer = ArrowWriter::try_new(hashing, schema, Some(properties))
        .map_err(SinkError::parquet(path))?;
    writer.write(&batch).map_err(SinkError::parquet(path))?;
    for (key, value) in metadata {
        writer.append_key_value_metadata(KeyValue::new((*key).to_owned(), value.clone()));
    }
    let mut hashing = writer.into_inner().map_err(SinkError::parquet(path))?;
    hashing.flush().map_err(SinkError::io(&temporary))?;
    let sha256 = hex::encode(hashing.hasher.finalize());
    let file = hashing
        .inner
        .into_inner()
        .map_err(|e| SinkError::io(&temporary)(e.into_error()))?;
    file.sync_all().map_err(SinkError::io(&temporary))?;
    std::fs::rename(&temporary, path).map_err(SinkError::io(path))?;
    Ok(Written { rows, sha256 })
}

/// The key-value metadata of a register file.
pub fn metadata(path: &Path) -> Result<BTreeMap<String, String>, SinkError> {
    let file = File::open(path).map_err(SinkError::io(path))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(SinkError::parquet(path))?;
    Ok(key_values(&builder))
}

fn key_values(builder: &ParquetRecordBatchReaderBuilder<File>) -> BTreeMap<String, String> {
    builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .map(|kvs| {
            kvs.iter()
                .filter_map(|kv| kv.value.clone().map(|v| (kv.key.clone(), v)))
                .collect()
        })
        .unwrap_or_default()
}

/// The rows of a register file of `table` (without the period column),
/// and its key-value metadata.
pub fn read(
    path: &Path,
    table: Table,
    period: Period,
) -> Result<(Vec<Row>, BTreeMap<String, String>), SinkError> {
    let file = File::open(path).map_err(SinkError::io(path))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(SinkError::parquet(path))?;
    let metadata = key_values(&builder);
    let expected = schema(table, period);
    if builder.schema().fields() != expected.fields() {
        return Err(SinkError::corrupt(
            path,
            "columns differ from the register's",
        ));
    }
    let kinds = cells(table, period);
    let mut rows = Vec::new();
    for batch in builder.build().map_err(SinkError::parquet(path))? {
        let batch = batch?;
        let start = rows.len();
        rows.extend((0..batch.num_rows()).map(|_| Vec::with_capacity(kinds.len())));
        for (index, (_, kind)) in kinds.iter().enumerate() {
            let array = batch.column(index + 1);
            let out = &mut rows[start..];
            match kind {
                Kind::Text => {
                    for (row, value) in out.iter_mut().zip(array.as_string::<i32>().iter()) {
                        row.push(Cell::Text(value.unwrap_or_default().to_owned()));
                    }
                }
                Kind::Int => {
                    for (row, value) in out.iter_mut().zip(array.as_primitive::<Int32Type>().iter())
                    {
                        row.push(Cell::Int(i64::from(value.unwrap_or_default())));
                    }
                }
                Kind::Flag => {
                    for (row, value) in out.iter_mut().zip(array.as_boolean().iter()) {
                        row.push(Cell::Flag(value.unwrap_or_default()));
                    }
                }
            }
        }
    }
    Ok((rows, metadata))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Row> {
        (0..3000)
            .map(|i| {
                vec![
                    Cell::Text(format!("unit{}", i % 7)),
                    Cell::Text(format!("{i:064x}")),
                    Cell::Text("MA".into()),
                    Cell::Int(i),
                    Cell::Int(i * 40),
                    Cell::Int(i * 30),
                    Cell::Int(i * 5),
                    Cell::Int(i * 5),
                    Cell::Int(i % 2),
                    Cell::Text("ss12000-sim".into()),
                ]
            })
            .collect()
    }

    #[test]
    fn the_same_rows_give_the_same_bytes_and_read_back() -> Result<(), SinkError> {
        let dir = tempfile::tempdir().map_err(SinkError::io(Path::new("tempdir")))?;
        let a = dir.path().join("a.parquet");
        let b = dir.path().join("b.parquet");
        let meta = [("skolflode.blocks", "[]".to_owned())];
        let rows = rows();
        let wa = write(
            &a,
            Table::Attendance,
            Period::Week,
            "2025-W36",
            &rows,
            &meta,
            3,
        )?;
        let wb = write(
            &b,
            Table::Attendance,
            Period::Week,
            "2025-W36",
            &rows,
            &meta,
            3,
        )?;
        assert_eq!(wa, wb);
        let bytes = std::fs::read(&a).map_err(SinkError::io(&a))?;
        assert_eq!(bytes, std::fs::read(&b).map_err(SinkError::io(&b))?);
        assert_eq!(hex::encode(Sha256::digest(&bytes)), wa.sha256);
        assert!(!temporary(&a).exists());
        let (back, kv) = read(&a, Table::Attendance, Period::Week)?;
        assert_eq!(back, rows);
        assert_eq!(kv.get("skolflode.blocks").map(String::as_str), Some("[]"));
        // Read as the wrong table: refused, not misread.
        assert!(read(&a, Table::TeacherStudent, Period::Week).is_err());
        Ok(())
    }
}

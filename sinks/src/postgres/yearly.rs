//! A school year's yearly rows, summed by the sink rather than by the
//! server: `INSERT … SELECT … GROUP BY` inserts row by row through the
//! executor, and took almost twice as long (docs/performance.md).
//!
//! A connection per table streams the year's weekly rows, ordered by
//! school unit, out of the server in `COPY`'s binary format; each unit's
//! rows are summed in a hash table (every row of a yearly key has one
//! unit, so a unit is whole when the next begins) and streamed back, in
//! key order, into the transaction's `COPY` of the yearly table. The
//! memory is one school unit's yearly rows; the server's sort spills to
//! disk.

use std::collections::HashMap;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio_postgres::{Client, CopyOutStream, Transaction};

use super::{db, year_bounds, COPY_HEADER};
use crate::period::Week;
use crate::pupil_register::{PupilRegister, PupilsByUnit};
use crate::table::{Kind, Role, Table};
use crate::SinkError;

/// Output is fed to the server in pieces of about this many bytes.
const FEED_BYTES: usize = 1 << 20;

/// Room for a row's counts without an allocation per row: attendance has
/// six.
const MAX_SUMS: usize = 8;

/// A yearly key's counts and the weeks it has rows in.
#[derive(Default)]
struct Sums {
    sums: [i64; MAX_SUMS],
    /// Bit `i`: the week `i` weeks after the school year's first possible
    /// one.
    weeks: u64,
}

/// What the rebuild needs of a table's columns.
struct Shape {
    table: Table,
    /// Per column of the table: its kind and role.
    columns: Vec<(Kind, Role)>,
    /// Among the key columns, the pupil's.
    student: usize,
}

impl Shape {
    fn new(table: Table) -> Result<Shape, SinkError> {
        let columns: Vec<(Kind, Role)> = table.columns().iter().map(|c| (c.kind, c.role)).collect();
        let keys: Vec<&str> = table
            .columns()
            .iter()
            .filter(|c| c.role == Role::Key)
            .map(|c| c.name)
            .collect();
        let sums = columns.iter().filter(|(_, r)| *r == Role::Sum).count();
        let student = keys.iter().position(|k| *k == "student_key");
        // The unit is read as the first column.
        let first = table.columns().first().map(|c| (c.name, c.role));
        match (first, student) {
            (Some(("school_unit_code", Role::Key)), Some(student)) if sums <= MAX_SUMS => {
                Ok(Shape {
                    table,
                    columns,
                    student,
                })
            }
            _ => Err(SinkError::Postgres(format!(
                "table {} cannot be summed by school unit",
                table.name()
            ))),
        }
    }
}

/// The school year's weeks, as bits: ISO weeks of a school year (1 July –
/// 30 June, by their Thursdays) run from week 26 of its first calendar
/// year to week 26 of the next, 54 values of `year * 53 + week` at most.
struct Weeks {
    year: String,
    base: i64,
    labels: Vec<Option<String>>,
    /// Labels seen, and their bits: a unit's rows come in any week order.
    seen: HashMap<Vec<u8>, u64, foldhash::fast::RandomState>,
}

impl Weeks {
    fn new(year: &str) -> Result<Weeks, SinkError> {
        let start: i64 = year
            .get(..4)
            .and_then(|y| y.parse().ok())
            .ok_or_else(|| SinkError::Postgres(format!("not a school year: {year:?}")))?;
        Ok(Weeks {
            year: year.to_owned(),
            base: start * 53 + 26,
            labels: vec![None; 64],
            seen: HashMap::default(),
        })
    }

    fn bit(&mut self, label: &[u8]) -> Result<u64, SinkError> {
        if let Some(bit) = self.seen.get(label) {
            return Ok(*bit);
        }
        let week = std::str::from_utf8(label)
            .ok()
            .and_then(Week::parse)
            .ok_or_else(|| SinkError::Postgres(format!("weekly row of week {label:?}")))?;
        let index = i64::from(week.year) * 53 + i64::from(week.week) - self.base;
        let index = usize::try_from(index)
            .ok()
            .filter(|i| *i < 64 && week.school_year() == self.year)
            .ok_or_else(|| {
                SinkError::Postgres(format!(
                    "week {} is not in school year {}",
                    week.label(),
                    self.year
                ))
            })?;
        self.labels[index] = Some(week.label());
        self.seen.insert(label.to_vec(), 1 << index);
        Ok(1 << index)
    }

    fn label(&self, index: u32) -> &str {
        self.labels
            .get(index as usize)
            .and_then(|l| l.as_deref())
            .unwrap_or_default()
    }
}

/// Reads `COPY … TO STDOUT (FORMAT binary)` tuples out of the chunks the
/// server sends, however they are cut.
struct TupleReader {
    buf: BytesMut,
    header: bool,
    done: bool,
}

impl TupleReader {
    fn new() -> TupleReader {
        TupleReader {
            buf: BytesMut::new(),
            header: false,
            done: false,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole tuple, with its fields' places in it (`None` for
    /// SQL NULL) in `fields`; `None` until more bytes arrive or after the
    /// trailer.
    fn next(
        &mut self,
        fields: &mut Vec<Option<(usize, usize)>>,
    ) -> Result<Option<Bytes>, SinkError> {
        if !self.header {
            if self.buf.len() < COPY_HEADER.len() {
                return Ok(None);
            }
            if self.buf[..11] != COPY_HEADER[..11] {
                return Err(SinkError::Postgres(
                    "COPY output without its signature".into(),
                ));
            }
            let extension =
                u32::from_be_bytes([self.buf[15], self.buf[16], self.buf[17], self.buf[18]]);
            let total = COPY_HEADER.len() + extension as usize;
            if self.buf.len() < total {
                return Ok(None);
            }
            self.buf.advance(total);
            self.header = true;
        }
        if self.done || self.buf.len() < 2 {
            return Ok(None);
        }
        let count = i16::from_be_bytes([self.buf[0], self.buf[1]]);
        if count == -1 {
            self.done = true;
            return Ok(None);
        }
        // Walk the tuple before taking it: it may not be whole yet.
        fields.clear();
        let mut at = 2;
        for _ in 0..count {
            let Some(len) = self.buf.get(at..at + 4) else {
                return Ok(None);
            };
            let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
            at += 4;
            if len < 0 {
                fields.push(None);
                continue;
            }
            let len = len as usize;
            if self.buf.len() < at + len {
                return Ok(None);
            }
            fields.push(Some((at, at + len)));
            at += len;
        }
        Ok(Some(self.buf.split_to(at).freeze()))
    }
}

/// One school unit's yearly rows, being summed.
struct Unit {
    code: Vec<u8>,
    rows: RowMap,
}

/// Yearly keys (their columns' bytes, each text ended by a NUL) and their
/// sums.
type RowMap = HashMap<Vec<u8>, Sums, foldhash::fast::RandomState>;

/// Where the yearly rows of `year` of `table` go, and what they are
/// annotated and counted with.
pub(super) struct Target<'a> {
    pub year: &'a str,
    pub register: Option<&'a PupilRegister>,
    /// The pupils each unit's yearly rows name, where a register needs
    /// them.
    pub pipeline: Option<&'a mut PupilsByUnit>,
}

/// Start streaming `year`'s weekly rows of `table` out of the server, a
/// school unit after another. The server scans and sorts them while the
/// sink sums what it read before.
pub(super) async fn read_weeks(
    read: &Client,
    s: &str,
    table: Table,
    year: &str,
) -> Result<CopyOutStream, SinkError> {
    let names: Vec<&str> = table.columns().iter().map(|c| c.name).collect();
    let (lo, hi) = year_bounds(year)?;
    // `COPY` takes no parameters; the labels are the sink's own, quoted
    // all the same.
    let quote = |text: &str| format!("'{}'", text.replace('\'', "''"));
    read.copy_out(&format!(
        "COPY (SELECT week, {names} FROM {s}.weekly_{name} \
         WHERE week BETWEEN {lo} AND {hi} AND school_year = {year} \
         ORDER BY school_unit_code COLLATE \"C\") TO STDOUT (FORMAT binary)",
        names = names.join(", "),
        name = table.name(),
        lo = quote(&lo),
        hi = quote(&hi),
        year = quote(year),
    ))
    .await
    .map_err(db)
}

/// Replace `year`'s yearly rows of `table` (in `tx`) with the sums of its
/// weekly rows, streamed from `input` (`read_weeks`). Returns the rows
/// written.
pub(super) async fn rebuild(
    input: CopyOutStream,
    tx: &Transaction<'_>,
    s: &str,
    table: Table,
    mut target: Target<'_>,
) -> Result<u64, SinkError> {
    let shape = Shape::new(table)?;
    let names: Vec<&str> = table.columns().iter().map(|c| c.name).collect();
    let name = table.name();
    let year = target.year;
    tx.execute(
        &format!("DELETE FROM {s}.yearly_{name} WHERE school_year = $1"),
        &[&year],
    )
    .await
    .map_err(db)?;
    let output = tx
        .copy_in::<_, Bytes>(&format!(
            "COPY {s}.yearly_{name} (school_year, {names}, first_week, last_week, weeks, \
             register_school_unit_code, register_grade) FROM STDIN BINARY",
            names = names.join(", "),
        ))
        .await
        .map_err(db)?;
    let mut input = std::pin::pin!(input);
    let mut output = std::pin::pin!(output);
    output
        .feed(Bytes::from_static(COPY_HEADER))
        .await
        .map_err(db)?;
    let mut weeks = Weeks::new(year)?;
    let mut reader = TupleReader::new();
    let mut unit: Option<Unit> = None;
    let mut out = BytesMut::with_capacity(FEED_BYTES * 2);
    let mut written = 0u64;
    let mut key = Vec::with_capacity(256);
    let mut fields = Vec::with_capacity(1 + shape.columns.len());
    while let Some(chunk) = input.next().await {
        reader.push(&chunk.map_err(db)?);
        while let Some(tuple) = reader.next(&mut fields)? {
            if fields.len() != 1 + shape.columns.len() {
                return Err(SinkError::Postgres(format!(
                    "weekly row of {} fields",
                    fields.len()
                )));
            }
            let field = |i: usize| -> Result<&[u8], SinkError> {
                fields[i]
                    .map(|(from, to)| &tuple[from..to])
                    .ok_or_else(|| SinkError::Postgres("NULL in a weekly row".into()))
            };
            let bit = weeks.bit(field(0)?)?;
            let code = field(1)?;
            if unit.as_ref().is_none_or(|u| u.code != code) {
                if let Some(done) = unit.take() {
                    written += emit(&shape, &weeks, &mut target, done, &mut out)?;
                    if out.len() >= FEED_BYTES {
                        output.feed(out.split().freeze()).await.map_err(db)?;
                    }
                }
                unit = Some(Unit {
                    code: code.to_vec(),
                    rows: RowMap::default(),
                });
            }
            key.clear();
            let mut sums = [0i64; MAX_SUMS];
            let mut n = 0;
            for (i, (kind, role)) in shape.columns.iter().enumerate() {
                let value = field(i + 1)?;
                match (role, kind) {
                    (Role::Key, Kind::Text) => {
                        key.extend_from_slice(value);
                        // Text holds no NUL: keys compare as their columns.
                        key.push(0);
                    }
                    (Role::Key, kind) => {
                        if value.len() != width(*kind) {
                            return Err(SinkError::Postgres(format!(
                                "a key of {} bytes where {} were due",
                                value.len(),
                                width(*kind)
                            )));
                        }
                        key.extend_from_slice(value);
                    }
                    (Role::Sum, _) => {
                        let v: [u8; 4] = value[..].try_into().map_err(|_| {
                            SinkError::Postgres("a count that is not an integer".into())
                        })?;
                        sums[n] = i64::from(i32::from_be_bytes(v));
                        n += 1;
                    }
                }
            }
            if let Some(unit) = unit.as_mut() {
                let row = match unit.rows.get_mut(key.as_slice()) {
                    Some(row) => row,
                    None => unit.rows.entry(key.clone()).or_default(),
                };
                for (total, v) in row.sums.iter_mut().zip(&sums[..n]) {
                    *total += v;
                }
                row.weeks |= bit;
            }
        }
    }
    if let Some(done) = unit.take() {
        written += emit(&shape, &weeks, &mut target, done, &mut out)?;
    }
    if !reader.done {
        return Err(SinkError::Postgres(
            "the weekly rows' COPY ended without its trailer".into(),
        ));
    }
    out.put_i16(-1);
    output.feed(out.freeze()).await.map_err(db)?;
    output.as_mut().finish().await.map_err(db)?;
    Ok(written)
}

/// The bytes of a key value of `kind` that is not text, in `COPY`'s
/// binary format.
fn width(kind: Kind) -> usize {
    match kind {
        Kind::Int => 4,
        Kind::Flag | Kind::Text => 1,
    }
}

/// Append `unit`'s yearly rows, in key order, as `COPY` binary tuples.
fn emit(
    shape: &Shape,
    weeks: &Weeks,
    target: &mut Target<'_>,
    unit: Unit,
    out: &mut BytesMut,
) -> Result<u64, SinkError> {
    let mut rows: Vec<(Vec<u8>, Sums)> = unit.rows.into_iter().collect();
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let fields = (1 + shape.columns.len() + 5) as i16;
    let register = target.register;
    let mut pupils = target.pipeline.as_deref_mut().map(|p| {
        p.entry(String::from_utf8_lossy(&unit.code).into_owned())
            .or_default()
    });
    let text = |out: &mut BytesMut, v: &[u8]| {
        out.put_i32(v.len() as i32);
        out.put_slice(v);
    };
    for (key, sums) in &rows {
        out.put_i16(fields);
        text(out, target.year.as_bytes());
        let mut rest = key.as_slice();
        let (mut n, mut k) = (0, 0);
        let mut student: &[u8] = &[];
        for (kind, role) in &shape.columns {
            match (role, kind) {
                (Role::Key, Kind::Text) => {
                    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
                    let value = &rest[..end];
                    if k == shape.student {
                        student = value;
                    }
                    text(out, value);
                    rest = rest.get(end + 1..).unwrap_or_default();
                    k += 1;
                }
                (Role::Key, kind) => {
                    let (value, tail) = rest.split_at(rest.len().min(width(*kind)));
                    text(out, value);
                    rest = tail;
                    k += 1;
                }
                (Role::Sum, _) => {
                    let sum = sums.sums[n];
                    let sum = i32::try_from(sum).map_err(|_| {
                        SinkError::Postgres(format!(
                            "a yearly sum of {sum} in {} exceeds 32 bits",
                            shape.table.name()
                        ))
                    })?;
                    out.put_i32(4);
                    out.put_i32(sum);
                    n += 1;
                }
            }
        }
        if sums.weeks == 0 {
            return Err(SinkError::Postgres("a yearly row without a week".into()));
        }
        text(out, weeks.label(sums.weeks.trailing_zeros()).as_bytes());
        text(out, weeks.label(63 - sums.weeks.leading_zeros()).as_bytes());
        out.put_i32(4);
        out.put_i32(sums.weeks.count_ones() as i32);
        let student = String::from_utf8_lossy(student);
        let registered = register.and_then(|r| r.pupils.get(student.as_ref()));
        text(
            out,
            registered
                .map_or("", |p| p.school_unit_code.as_str())
                .as_bytes(),
        );
        text(out, registered.map_or("", |p| p.grade.as_str()).as_bytes());
        if let Some(pupils) = pupils.as_mut() {
            if !pupils.contains(student.as_ref()) {
                pupils.insert(student.into_owned());
            }
        }
    }
    Ok(rows.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(fields: &[Option<&[u8]>]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(fields.len() as i16).to_be_bytes());
        for f in fields {
            match f {
                Some(v) => {
                    out.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    out.extend_from_slice(v);
                }
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        out
    }

    #[test]
    fn tuples_are_read_however_the_bytes_are_cut() -> Result<(), SinkError> {
        let mut stream = COPY_HEADER.to_vec();
        stream.extend(tuple(&[Some(b"2025-W36"), Some(b"U1"), None]));
        stream.extend(tuple(&[Some(b""), Some(&7i32.to_be_bytes())]));
        stream.extend_from_slice(&(-1i16).to_be_bytes());
        for cut in 1..stream.len() {
            let mut reader = TupleReader::new();
            let mut seen = Vec::new();
            let mut fields = Vec::new();
            for piece in stream.chunks(cut) {
                reader.push(piece);
                while let Some(t) = reader.next(&mut fields)? {
                    let get = |i: usize| fields[i].map(|(a, b): (usize, usize)| t[a..b].to_vec());
                    seen.push((0..fields.len()).map(get).collect::<Vec<_>>());
                }
            }
            assert!(reader.done, "cut {cut}");
            assert_eq!(seen.len(), 2, "cut {cut}");
            assert_eq!(seen[0][1].as_deref(), Some(&b"U1"[..]));
            assert_eq!(seen[0][2], None);
            assert_eq!(seen[1][1].as_deref(), Some(&7i32.to_be_bytes()[..]));
        }
        Ok(())
    }

    #[test]
    fn a_school_years_weeks_fit_its_bits() -> Result<(), SinkError> {
        // 2020 has a week 53: 2020-W27 … 2021-W25 is the 2020-21 year.
        let mut weeks = Weeks::new("2020-21")?;
        let first = weeks.bit(b"2020-W27")?;
        let w53 = weeks.bit(b"2020-W53")?;
        let last = weeks.bit(b"2021-W25")?;
        assert!(first < w53 && w53 < last);
        assert_eq!(weeks.bit(b"2020-W53")?, w53);
        assert_eq!(weeks.label(last.trailing_zeros()), "2021-W25");
        // 2021-W26's Thursday is 1 July: the next school year's.
        assert!(weeks.bit(b"2021-W26").is_err());
        assert!(weeks.bit(b"2020-W26").is_err());
        assert!(weeks.bit(b"not a week").is_err());
        assert!(weeks.bit(b"").is_err());
        assert!(Weeks::new("").is_err());
        // The widest: 2025-W27 … 2026-W26, the last at bit 53.
        let mut weeks = Weeks::new("2025-26")?;
        assert_eq!(weeks.bit(b"2026-W26")?, 1 << 53);
        assert!(weeks.bit(b"2025-W27")? > 1);
        Ok(())
    }
}
